//! Recovery at open: rebuild the global unique index from the regions' applied markers.
//!
//! The global partition is at its last synced commit (a checkpoint). Every region's
//! markers are replayed in TxnId order (idempotent: entries carry their last-change txn),
//! in-flight entries whose txn left no marker are rolled back, the epoch is bumped, and the
//! result is synced. Only then are the markers deleted, and only after that (and only when
//! every region's markers were visible) are tombstones dropped. A crash at any point of
//! this leaves a state the next recovery handles the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::ReadableTable;

use crate::db::Region;
use crate::error::{Error, Result};
use crate::partition::Partition;
use crate::partition::global::{put_u64, split_txn_key, txn_key, unique_key};
use crate::partition::region::Marker;
use crate::reservation::coordinator::drop_tombstones;
use crate::reservation::state::{self, Change, Entry, Loc, State};
use crate::schema::{INFLIGHT, MARKERS, META, META_EPOCH, TOMBSTONES, UNIQUE};
use crate::types::TxnId;

/// What recovery did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Markers found in the regions.
    pub markers: usize,
    /// In-flight entries rolled back because their txn left no marker.
    pub rolled_back: usize,
    /// In-flight entries left alone because their region is disabled.
    pub left_in_flight: usize,
}

fn apply(
    global: &Partition,
    unique: &mut redb::Table<&'static [u8], &'static [u8]>,
    tombstones: &mut redb::Table<&'static [u8], ()>,
    key: &[u8],
    change: Change,
) -> Result<()> {
    match change {
        Change::Keep => {}
        Change::Delete => {
            unique.remove(key).map_err(|e| global.err(e))?;
        }
        Change::Put(e) => {
            if e.state == State::Tombstone {
                tombstones
                    .insert(txn_key(e.txn.to_u128(), key).as_slice(), ())
                    .map_err(|e| global.err(e))?;
            }
            unique
                .insert(key, e.encode().as_slice())
                .map_err(|e| global.err(e))?;
        }
    }
    Ok(())
}

/// Runs recovery. `all_regions_open`: every catalog region is open (none disabled), so
/// tombstones can be dropped once the markers are gone. Returns the new epoch.
pub(crate) fn recover(
    global: &Partition,
    regions: &[Arc<Region>],
    old_epoch: u64,
    all_regions_open: bool,
) -> Result<(u64, RecoveryReport)> {
    let mut report = RecoveryReport::default();
    // 1. Collect the markers of every open region.
    let mut markers: BTreeMap<TxnId, (u16, Marker)> = BTreeMap::new();
    for r in regions {
        let txn = r.part.begin_read()?;
        let table = match txn.open_table(MARKERS) {
            Ok(t) => t,
            Err(e) if crate::partition::missing_table(&e) => continue,
            Err(e) => return Err(r.part.err(e)),
        };
        for row in table.iter().map_err(|e| r.part.err(e))? {
            let (k, v) = row.map_err(|e| r.part.err(e))?;
            let t = TxnId::from_u128(k.value());
            let m = Marker::decode(v.value()).ok_or_else(|| {
                Error::corrupt(&r.part.name, format!("undecodable applied marker {t}"))
            })?;
            markers.insert(t, (r.id.0, m));
        }
    }
    report.markers = markers.len();
    let open: Vec<u16> = regions.iter().map(|r| r.id.0).collect();
    let new_epoch = old_epoch
        .checked_add(1)
        .ok_or_else(|| Error::corrupt(&global.name, "epoch counter exhausted"))?;

    // 2. Replay, roll back, bump the epoch: one synced global commit.
    let w = global.begin_write()?;
    {
        let mut unique = w.open_table(UNIQUE).map_err(|e| global.err(e))?;
        let mut tombstones = w.open_table(TOMBSTONES).map_err(|e| global.err(e))?;
        let get = |unique: &redb::Table<&'static [u8], &'static [u8]>,
                   k: &[u8]|
         -> Result<Option<Entry>> {
            match unique.get(k).map_err(|e| global.err(e))? {
                Some(g) => Entry::decode(g.value())
                    .map(Some)
                    .ok_or_else(|| Error::corrupt(&global.name, "undecodable unique entry")),
                None => Ok(None),
            }
        };
        for (&txn, (region, m)) in &markers {
            for c in &m.claims {
                let k = unique_key(&c.ns, &c.digest);
                let cur = get(&unique, &k)?;
                let loc = Loc {
                    account: m.account,
                    region: *region,
                    table: c.table.clone(),
                    key: c.key.clone(),
                };
                let change = state::replay_claim(cur.as_ref(), txn, loc);
                apply(global, &mut unique, &mut tombstones, &k, change)?;
            }
            for (ns, d) in &m.releases {
                let k = unique_key(ns, d);
                let cur = get(&unique, &k)?;
                let change = state::replay_release(cur.as_ref(), txn);
                apply(global, &mut unique, &mut tombstones, &k, change)?;
            }
        }
        let mut inflight = w.open_table(INFLIGHT).map_err(|e| global.err(e))?;
        let mut rows = Vec::new();
        for row in inflight.iter().map_err(|e| global.err(e))? {
            let (k, _) = row.map_err(|e| global.err(e))?;
            rows.push(k.value().to_vec());
        }
        for row in rows {
            let Some((t, ukey)) = split_txn_key(&row) else {
                inflight.remove(row.as_slice()).map_err(|e| global.err(e))?;
                continue;
            };
            let t = TxnId::from_u128(t);
            let cur = get(&unique, ukey)?;
            match &cur {
                Some(e) if e.txn == t && e.state.in_flight() => {
                    if !open.contains(&e.loc.region) {
                        // Its region is disabled: its marker cannot be seen, so its
                        // outcome cannot be settled yet. Keep it until the region returns.
                        report.left_in_flight += 1;
                        continue;
                    }
                    // Replay settled every txn that has a marker; this one has none.
                    let change = state::rollback(cur.as_ref(), t);
                    apply(global, &mut unique, &mut tombstones, ukey, change)?;
                    report.rolled_back += 1;
                }
                _ => {}
            }
            inflight.remove(row.as_slice()).map_err(|e| global.err(e))?;
        }
        let mut meta = w.open_table(META).map_err(|e| global.err(e))?;
        put_u64(&mut meta, META_EPOCH, new_epoch).map_err(|e| global.err(e))?;
    }
    global.commit(w)?;

    // 3. The global state now covers every marker: delete them, durably.
    for r in regions {
        let has = markers.values().any(|(id, _)| *id == r.id.0);
        if !has {
            continue;
        }
        let w = r.part.begin_write()?;
        {
            let mut t = w.open_table(MARKERS).map_err(|e| r.part.err(e))?;
            t.retain(|_, _| false).map_err(|e| r.part.err(e))?;
        }
        r.part.commit(w)?;
    }

    // 4. No marker is left anywhere: every tombstone has done its job.
    if all_regions_open {
        let w = global.begin_write_unsynced()?;
        drop_tombstones(global, &w, None)?;
        global.commit(w)?;
    }
    Ok((new_epoch, report))
}
