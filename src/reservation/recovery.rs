//! Recovery at open: rebuild the global unique index from the regions' applied markers.
//!
//! The global partition is at its last synced commit (a checkpoint, or a dirty-marking
//! Reserve). In-flight entries whose txn left no marker are rolled back, then every open
//! region's markers are replayed in TxnId order (idempotent: entries carry their
//! last-change txn), the dirty rows of the open regions are cleared, the epoch is bumped, and the
//! result is synced. Only then are the markers deleted, and only after that (and only when
//! every region's markers were visible) are tombstones dropped. A crash at any point of
//! this leaves a state the next recovery handles the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::ReadableTable;

use crate::error::{Error, Result};
use crate::partition::At;
use crate::partition::Partition;
use crate::partition::global::{put_u64, unique_key};
use crate::partition::region::{Marker, MarkerClaim, decode_owned, encode_owned, owned_key};
use crate::partition::set::Region;
use crate::reservation::coordinator::raise_seen;
use crate::reservation::index::{IndexRead, IndexWrite};
use crate::reservation::state::{self, Loc, State};
use crate::schema::{DIRTY, MARKERS, META, META_CLEAN_CLOSE, META_EPOCH, OWNED};
use crate::types::TxnId;

/// What recovery did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Markers found in the regions.
    pub markers: usize,
    /// In-flight entries rolled back because their txn left no marker.
    pub rolled_back: usize,
    /// In-flight entries left alone because their region is disabled: their values stay
    /// held (claims of them return `Error::RegionUnsettled`) until the region returns or
    /// is forfeited.
    pub left_in_flight: usize,
    /// The disabled regions those entries belong to.
    pub left_in_flight_regions: Vec<String>,
    /// Disabled regions that may hold claims a crash left unsettled (their markers could
    /// not be read): until each is enabled again or forfeited
    /// ([`Db::forfeit_unsettled`](crate::Db::forfeit_unsettled)), no unique value can be
    /// claimed or reported free.
    pub unsettled: Vec<String>,
    /// Claims replayed from a region's markers that another record owns by now (possible
    /// only after an operator forfeited that region's unsettled claims): the region's
    /// record no longer owns the value. (region, table, record key, namespace).
    pub claims_lost: Vec<LostClaim>,
}

/// A claim a returning region lost to another owner; see [`RecoveryReport::claims_lost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostClaim {
    /// The region of the record that lost the value.
    pub region: String,
    /// The record's account.
    pub account: crate::AccountId,
    /// The record's table.
    pub table: String,
    /// The record's key.
    pub key: Vec<u8>,
    /// The namespace of the value (the value itself stays in the region's `_owned` row
    /// no longer: it was removed from it).
    pub namespace: String,
}

/// What recovery returns to the open sequence.
pub(crate) struct Recovered {
    pub epoch: u64,
    pub report: RecoveryReport,
    /// Disabled regions with a dirty row: (id, name).
    pub unsettled: Vec<(u16, String)>,
}

/// Runs recovery. `all_regions_open`: every catalog region is open (none disabled), so
/// tombstones can be dropped once the markers are gone. `region_name` names a region id
/// for the report.
pub(crate) fn recover(
    global: &Partition,
    regions: &[Arc<Region>],
    old_epoch: u64,
    all_regions_open: bool,
    region_name: impl Fn(u16) -> String,
) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    // 1. Collect the markers of every open region.
    let markers = collect_markers(regions)?;
    report.markers = markers.len();
    let new_epoch = old_epoch
        .checked_add(1)
        .ok_or_else(|| Error::corrupt(&global.name, "epoch counter exhausted"))?;

    // 2. Roll back, replay, clear the open regions' dirty rows, bump the epoch: one synced
    //    global commit.
    let open: Vec<u16> = regions.iter().map(|r| r.id.0).collect();
    let unsettled = rebuild_index(
        global,
        &markers,
        &open,
        new_epoch,
        &region_name,
        &mut report,
    )?;
    report.unsettled = unsettled.iter().map(|(_, n)| n.clone()).collect();

    // 3. The global state now covers every marker: delete them, durably.
    delete_markers(global, regions, &markers, &mut report)?;

    // 4. No marker is left anywhere: every tombstone has done its job.
    if all_regions_open {
        let w = global.begin_write_unsynced()?;
        IndexWrite::open(global, &w)?.drop_tombstones(None)?;
        global.commit(w)?;
    }
    Ok(Recovered {
        epoch: new_epoch,
        report,
        unsettled,
    })
}

/// The applied markers of every open region, in TxnId order: (region, marker).
type Markers = BTreeMap<TxnId, (u16, Marker)>;

fn collect_markers(regions: &[Arc<Region>]) -> Result<Markers> {
    let mut markers = Markers::new();
    for r in regions {
        let txn = r.part.begin_read()?;
        let Some(table) = r.part.read_table(&txn, MARKERS)? else {
            continue;
        };
        for row in table.iter().at(&r.part)? {
            let (k, v) = row.at(&r.part)?;
            let t = TxnId::from_u128(k.value());
            let m = Marker::decode(v.value()).ok_or_else(|| {
                Error::corrupt(&r.part.name, format!("undecodable applied marker {t}"))
            })?;
            markers.insert(t, (r.id.0, m));
        }
    }
    Ok(markers)
}

/// Step 2, in one synced global commit: rolls back in-flight entries of open regions that
/// left no marker, replays every marker, clears the dirty rows of the open regions, bumps
/// the epoch and marks the store open. Returns the disabled regions with a dirty row.
fn rebuild_index(
    global: &Partition,
    markers: &Markers,
    open: &[u16],
    new_epoch: u64,
    region_name: &impl Fn(u16) -> String,
    report: &mut RecoveryReport,
) -> Result<Vec<(u16, String)>> {
    let w = global.begin_write()?;
    let unsettled;
    {
        let mut index = IndexWrite::open(global, &w)?;
        // Roll back first: an in-flight entry whose txn left no marker did not happen,
        // and what it replaced must be visible to the replay below (a marker older than
        // it would otherwise be masked by an entry that is about to disappear).
        roll_back_unmarked(&mut index, markers, open, region_name, report)?;
        for (&txn, (region, m)) in markers {
            replay(&mut index, txn, *region, m)?;
        }
        unsettled = clear_dirty(global, &w, open, region_name)?;
        let mut meta = w.open_table(META).at(global)?;
        put_u64(&mut meta, META_EPOCH, new_epoch).at(global)?;
        // Open until `Db::close` says otherwise.
        meta.insert(META_CLEAN_CLOSE, [0u8].as_slice()).at(global)?;
    }
    raise_seen(global, &w, markers.iter().map(|(t, (r, _))| (*r, *t)))?;
    global.commit(w)?;
    Ok(unsettled)
}

/// Rolls back every in-flight entry of an open region whose txn left no marker, and
/// removes the `_inflight` rows of everything this recovery settles. Entries of disabled
/// regions stay in flight (their markers cannot be seen), counted in the report.
fn roll_back_unmarked(
    index: &mut IndexWrite<'_>,
    markers: &Markers,
    open: &[u16],
    region_name: &impl Fn(u16) -> String,
    report: &mut RecoveryReport,
) -> Result<()> {
    for row in index.inflight_rows()? {
        let Some((t, ukey)) = &row.parsed else {
            index.remove_inflight(&row.raw)?;
            continue;
        };
        let t = *t;
        let cur = index.get(ukey)?;
        match &cur {
            Some(e) if e.txn == t && e.state.in_flight() => {
                if !open.contains(&e.loc.region) {
                    // Its region is disabled: its marker cannot be seen, so its
                    // outcome cannot be settled yet. Keep it until the region returns.
                    report.left_in_flight += 1;
                    let name = region_name(e.loc.region);
                    if !report.left_in_flight_regions.contains(&name) {
                        report.left_in_flight_regions.push(name);
                    }
                    continue;
                }
                if !markers.contains_key(&t) {
                    index.apply(ukey, state::rollback(cur.as_ref(), t))?;
                    report.rolled_back += 1;
                }
                // With a marker, the replay settles it.
            }
            _ => {}
        }
        index.remove_inflight(&row.raw)?;
    }
    Ok(())
}

/// Replays one applied marker of `region` (idempotent: entries carry their last txn).
fn replay(index: &mut IndexWrite<'_>, txn: TxnId, region: u16, m: &Marker) -> Result<()> {
    for c in &m.claims {
        let k = unique_key(&c.ns, &c.digest);
        let cur = index.get(&k)?;
        let loc = Loc {
            account: m.account,
            region,
            table: c.table.clone(),
            key: c.key.clone(),
        };
        index.apply(&k, state::replay_claim(cur.as_ref(), txn, loc))?;
    }
    for (ns, d) in &m.releases {
        let k = unique_key(ns, d);
        let cur = index.get(&k)?;
        index.apply(
            &k,
            state::replay_release(cur.as_ref(), txn, m.account, region),
        )?;
    }
    Ok(())
}

/// Removes the dirty rows of the open regions (their markers were replayed); returns the
/// disabled regions that still have one: (id, name).
fn clear_dirty(
    global: &Partition,
    w: &redb::WriteTransaction,
    open: &[u16],
    region_name: &impl Fn(u16) -> String,
) -> Result<Vec<(u16, String)>> {
    let mut unsettled = Vec::new();
    let mut dirty = w.open_table(DIRTY).at(global)?;
    let mut rows = Vec::new();
    for row in dirty.iter().at(global)? {
        rows.push(row.at(global)?.0.value());
    }
    for r in rows {
        if open.contains(&r) {
            dirty.remove(r).at(global)?;
        } else {
            unsettled.push((r, region_name(r)));
        }
    }
    Ok(unsettled)
}

/// Step 3: deletes every region's markers, durably, one commit per region. In the same
/// region commit, a replayed claim whose value another record owns by now is taken off
/// its record's owned values (a forfeited region's claim that lost the value) and listed
/// in `report.claims_lost`.
fn delete_markers(
    global: &Partition,
    regions: &[Arc<Region>],
    markers: &Markers,
    report: &mut RecoveryReport,
) -> Result<()> {
    let settled = global.begin_read()?;
    let index = IndexRead::open(global, &settled)?;
    for r in regions {
        let mine: Vec<&Marker> = markers
            .values()
            .filter(|(id, _)| *id == r.id.0)
            .map(|(_, m)| m)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let w = r.part.begin_write()?;
        {
            let mut owned = w.open_table(OWNED).at(&r.part)?;
            for m in &mine {
                for c in &m.claims {
                    if let Some(lost) = drop_lost_claim(&index, &mut owned, r, m.account, c)? {
                        report.claims_lost.push(lost);
                    }
                }
            }
            let mut t = w.open_table(MARKERS).at(&r.part)?;
            t.retain(|_, _| false).at(&r.part)?;
        }
        r.part.commit(w)?;
    }
    Ok(())
}

/// If the settled entry of claim `c` (replayed from a marker of region `r`) no longer
/// names the record that made it, takes the value off that record's `_owned` row and
/// returns what was lost.
fn drop_lost_claim(
    index: &IndexRead<'_>,
    owned: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    r: &Region,
    account: u64,
    c: &MarkerClaim,
) -> Result<Option<LostClaim>> {
    let entry = index.get(&unique_key(&c.ns, &c.digest))?;
    // Only an entry that names this very record keeps the value with it (an in-flight
    // entry left by a disabled region names its own record: it was claimed elsewhere
    // after this region's claims were forfeited).
    let names_record = entry.as_ref().is_some_and(|e| {
        e.state != State::Tombstone
            && e.loc.account == account
            && e.loc.region == r.id.0
            && e.loc.table == c.table
            && e.loc.key == c.key
    });
    if names_record {
        return Ok(None);
    }
    let okey = owned_key(&c.table, account, &c.key);
    let Some(list) = owned
        .get(okey.as_slice())
        .at(&r.part)?
        .and_then(|g| decode_owned(g.value()))
    else {
        return Ok(None);
    };
    let before = list.len();
    let kept: Vec<_> = list
        .into_iter()
        .filter(|o| !(o.ns == c.ns && o.digest == c.digest))
        .collect();
    if kept.len() == before {
        return Ok(None);
    }
    if kept.is_empty() {
        owned.remove(okey.as_slice()).at(&r.part)?;
    } else {
        owned
            .insert(okey.as_slice(), encode_owned(&kept).as_slice())
            .at(&r.part)?;
    }
    Ok(Some(LostClaim {
        region: r.part.name.clone(),
        account: crate::AccountId::from_raw(account),
        table: c.table.clone(),
        key: c.key.clone(),
        namespace: c.ns.clone(),
    }))
}
