//! Checks of the global partition: the account and region catalogs, and the unique index
//! read from the entry side (every committed entry names an existing record that owns its
//! value, and nothing of the reservation protocol is left in flight).

use std::collections::HashMap;

use redb::{ReadTransaction, TableHandle};

use super::index::{check_tombstone_keys, for_each_in_flight, value_of};
use super::region::Snaps;
use super::scan::{Auditor, Row};
use super::{Ctx, FindingKind, show_loc};
use crate::account::Account;
use crate::error::Result;
use crate::partition::Partition;
use crate::partition::global::CatalogEntry;
use crate::partition::region::{data_key, owned_key};
use crate::reservation::state::{Entry, State};
use crate::schema::{ACCOUNTS, INFLIGHT, REGIONS, UNIQUE};
use crate::types::AccountId;

/// The Pending and Releasing entries of the unique index, by unique key: the in-flight rows
/// of their txn are leftovers unless the region they wait for is disabled.
pub(super) type InFlight = HashMap<Vec<u8>, Entry>;

/// Decodes every account (`_accounts`): the accounts the data rows and entries are checked
/// against. A row that does not decode is a finding, and its account reads as unknown.
pub(super) fn accounts(
    a: &mut Auditor,
    global: &Partition,
    txn: &ReadTransaction,
) -> Result<HashMap<u64, Account>> {
    let mut accounts = HashMap::new();
    a.scan_table(global, txn, ACCOUNTS, |_, id, v| {
        Ok(match Account::decode(AccountId(id), v) {
            Some(acc) => {
                accounts.insert(id, acc);
                Row::Read
            }
            None => Row::undecodable(&id.to_be_bytes(), format!("account #{id}: row undecodable")),
        })
    })?;
    Ok(accounts)
}

/// Checks that every row of the region catalog (`_regions`) decodes.
pub(super) fn catalog(a: &mut Auditor, global: &Partition, txn: &ReadTransaction) -> Result<()> {
    a.scan_table(global, txn, REGIONS, |_, name, v| {
        Ok(match CatalogEntry::decode(v) {
            Some(_) => Row::Read,
            None => Row::undecodable(
                name.as_bytes(),
                format!("region catalog row `{name}` undecodable"),
            ),
        })
    })
}

/// The entry side of I2 and the in-flight leftovers of `_unique`: every committed entry
/// must name an existing record that owns its value ([`committed_entry`]); a Pending or
/// Releasing entry after the checkpoint is a leftover. Entries naming a disabled region
/// are only counted as unchecked. Returns the in-flight entries, for [`leftovers`].
pub(super) fn entries(a: &mut Auditor, ctx: &Ctx<'_>, snaps: &mut Snaps) -> Result<InFlight> {
    let mut in_flight = InFlight::new();
    ctx.index.for_each_entry(a, |a, ukey, ns, digest, e| {
        if e.state != State::Tombstone && ctx.regions.is_disabled(e.loc.region) {
            a.report.unchecked += 1;
            if e.state.in_flight() {
                in_flight.insert(ukey.to_vec(), e);
            }
            return Ok(());
        }
        a.report.entries += 1;
        match e.state {
            State::Tombstone => {}
            State::Pending | State::Releasing => {
                in_flight_entry(a, ctx, ukey, &value_of(ns, &digest), &e);
                in_flight.insert(ukey.to_vec(), e);
            }
            State::Committed => committed_entry(a, ctx, snaps, ukey, (ns, digest), &e)?,
        }
        Ok(())
    })?;
    Ok(in_flight)
}

/// A Pending or Releasing entry (of `what`, at `ukey`) left after a checkpoint.
fn in_flight_entry(a: &mut Auditor, ctx: &Ctx<'_>, ukey: &[u8], what: &str, e: &Entry) {
    a.find(
        FindingKind::InFlight,
        &ctx.global().name,
        Some(UNIQUE.name()),
        Some(ukey),
        format!(
            "{what} is {} by txn {} for {} after a checkpoint",
            if e.state == State::Pending {
                "being claimed"
            } else {
                "being released"
            },
            e.txn,
            show_loc(&e.loc, &ctx.regions.name(e.loc.region))
        ),
    );
}

/// I2, entry side, for one committed entry of the value `(ns, digest)`: its account must
/// exist, and the record it names must exist in an open region and list the value among
/// those it owns.
fn committed_entry(
    a: &mut Auditor,
    ctx: &Ctx<'_>,
    snaps: &mut Snaps,
    ukey: &[u8],
    (ns, digest): (&str, [u8; 16]),
    e: &Entry,
) -> Result<()> {
    let global = &ctx.global().name;
    let loc = &e.loc;
    let what = value_of(ns, &digest);
    let rname = ctx.regions.name(loc.region);
    let orphan = |a: &mut Auditor, why: &str| {
        a.find(
            FindingKind::OrphanEntry,
            global,
            Some(UNIQUE.name()),
            Some(ukey),
            format!(
                "committed entry of {what} (txn {}) names {}: {why}",
                e.txn,
                show_loc(loc, &rname)
            ),
        )
    };
    if !ctx.accounts.contains_key(&loc.account) {
        a.find(
            FindingKind::UnknownAccount,
            global,
            Some(UNIQUE.name()),
            Some(ukey),
            format!(
                "committed entry of {what} names account #{}, which does not exist",
                loc.account
            ),
        );
    }
    let Some(s) = snaps.get_mut(&loc.region) else {
        orphan(a, "no such region");
        return Ok(());
    };
    if !s.data_row_exists(&loc.table, &data_key(loc.account, &loc.key))? {
        orphan(a, "the record does not exist");
        return Ok(());
    }
    match s.owned_list(&owned_key(&loc.table, loc.account, &loc.key))? {
        // Reported by the region scan.
        Some(None) => {}
        Some(Some(l)) if l.iter().any(|o| o.ns == ns && o.digest == digest) => {}
        _ => orphan(a, "the record does not own this value"),
    }
    Ok(())
}

/// Leftovers of the reservation protocol in the rest of the index: an `_inflight` row after
/// the checkpoint is a finding, unless its txn waits for a disabled region (a note: recovery
/// settles it when the region returns); `_tombstones` keys must be well-formed.
pub(super) fn leftovers(
    a: &mut Auditor,
    ctx: &Ctx<'_>,
    txn: &ReadTransaction,
    in_flight: &InFlight,
) -> Result<()> {
    let global = ctx.global();
    for_each_in_flight(a, global, txn, |a, key, txn, ukey| {
        let held = in_flight
            .get(ukey)
            .filter(|e| e.txn == txn && e.state.in_flight());
        if let Some(e) = held
            && ctx.regions.is_disabled(e.loc.region)
        {
            a.note(format!(
                "txn {txn} is in flight in disabled region `{}`; settled when it is enabled \
                 again",
                ctx.regions.name(e.loc.region)
            ));
            return Ok(());
        }
        a.find(
            FindingKind::InFlight,
            &global.name,
            Some(INFLIGHT.name()),
            Some(key),
            format!("txn {txn} still has an in-flight row after a checkpoint"),
        );
        Ok(())
    })?;
    check_tombstone_keys(a, global, txn)
}
