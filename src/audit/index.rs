//! The only reads of the unique index of the global partition (`_unique`, `_inflight`,
//! `_tombstones`) the audit makes: each decodes the rows of one table and reports the rows
//! that do not decode, so the checks built on them see only decoded rows.

use redb::{ReadTransaction, TableHandle};

use super::hex16;
use super::scan::{Auditor, Row};
use crate::error::Result;
use crate::partition::Partition;
use crate::partition::global::{split_txn_key, split_unique_key};
use crate::reservation::index::IndexRead;
use crate::reservation::state::Entry;
use crate::schema::{INFLIGHT, TOMBSTONES, UNIQUE};
use crate::types::TxnId;

/// `value in namespace `ns` (digest …)`: how findings name a unique value (never by its
/// plaintext).
pub(super) fn value_of(ns: &str, digest: &[u8; 16]) -> String {
    format!("value in namespace `{ns}` (digest {})", hex16(digest))
}

/// The `_unique` table of the global snapshot, kept open for the whole audit: scanned once,
/// and read by key for every value a record owns. The engine's typed index
/// ([`IndexRead`]), opened leniently.
pub(super) struct Index<'p> {
    /// The global partition.
    part: &'p Partition,
    /// Over its `_unique` table (empty if absent or of the wrong type).
    index: IndexRead<'p>,
}

impl<'p> Index<'p> {
    /// Opens `_unique` of the global snapshot `txn` (absent, or of the wrong type, it reads
    /// as empty).
    pub(super) fn open(
        a: &mut Auditor,
        part: &'p Partition,
        txn: &ReadTransaction,
    ) -> Result<Self> {
        let unique = a.open(part, txn, UNIQUE)?;
        Ok(Index {
            part,
            index: IndexRead::from_table(part, unique),
        })
    }

    /// The entry of the unique key `ukey`: `Ok(None)` if it has none, `Some(None)` if its
    /// entry does not decode (reported by [`Index::for_each_entry`]).
    pub(super) fn get(&self, ukey: &[u8]) -> Result<Option<Option<Entry>>> {
        self.index.get_lenient(ukey)
    }

    /// Hands every entry to `f` as (raw key, namespace, digest, entry), in key order; a
    /// malformed key or an undecodable entry is an `Undecodable` finding instead.
    pub(super) fn for_each_entry(
        &self,
        a: &mut Auditor,
        mut f: impl FnMut(&mut Auditor, &[u8], &str, [u8; 16], Entry) -> Result<()>,
    ) -> Result<()> {
        let Some(t) = self.index.table() else {
            return Ok(());
        };
        a.scan(self.part, UNIQUE.name(), t, |a, ukey, v| {
            let Some((ns, digest)) = split_unique_key(ukey) else {
                return Ok(Row::undecodable(ukey, "unique key malformed"));
            };
            let Some(e) = Entry::decode(v) else {
                let what = value_of(ns, &digest);
                return Ok(Row::undecodable(
                    ukey,
                    format!("entry of {what} undecodable"),
                ));
            };
            f(a, ukey, ns, digest, e)?;
            Ok(Row::Read)
        })
    }
}

/// Hands every `_inflight` row of the global snapshot to `f` as (raw key, txn, unique key),
/// in key order; a malformed key is an `Undecodable` finding instead.
pub(super) fn for_each_in_flight(
    a: &mut Auditor,
    part: &Partition,
    txn: &ReadTransaction,
    mut f: impl FnMut(&mut Auditor, &[u8], TxnId, &[u8]) -> Result<()>,
) -> Result<()> {
    a.scan_table(part, txn, INFLIGHT, |a, key, ()| {
        let Some((txn, ukey)) = split_txn_key(key) else {
            return Ok(Row::undecodable(key, "in-flight key malformed"));
        };
        f(a, key, TxnId::from_u128(txn), ukey)?;
        Ok(Row::Read)
    })
}

/// Checks that every `_tombstones` row of the global snapshot has a well-formed key (txn ++
/// unique key); the rows carry nothing else to check.
pub(super) fn check_tombstone_keys(
    a: &mut Auditor,
    part: &Partition,
    txn: &ReadTransaction,
) -> Result<()> {
    a.scan_table(part, txn, TOMBSTONES, |_, key, ()| {
        Ok(match split_txn_key(key) {
            Some(_) => Row::Read,
            None => Row::undecodable(key, "tombstone key malformed"),
        })
    })
}
