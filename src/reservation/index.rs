//! The unique index of the global partition, typed: `_unique` (value key → [`Entry`]),
//! `_inflight` (`[txn u128 BE][value key]`, one row per entry a txn holds in flight) and
//! `_tombstones` (same key shape, one row per tombstone still to be dropped).
//!
//! Every write of the index goes through [`IndexWrite`], so the three tables cannot drift:
//! an entry put in flight always has its `_inflight` row, a new tombstone always has its
//! `_tombstones` row. Reserve, Confirm, checkpoint, recovery, forfeit and the reads
//! of `Db` and `audit` all use this one module.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::{Error, Result};
use crate::partition::global::{split_txn_key, txn_key};
use crate::partition::{At, Partition};
use crate::reservation::state::{Change, Entry, State};
use crate::schema::{INFLIGHT, TOMBSTONES, UNIQUE};
use crate::types::TxnId;

/// Decodes a stored entry; an undecodable one is damage of the global partition.
pub(crate) fn decode_entry(global: &Partition, bytes: &[u8]) -> Result<Entry> {
    Entry::decode(bytes).ok_or_else(|| Error::corrupt(&global.name, "undecodable unique entry"))
}

pub(crate) fn get_in(
    global: &Partition,
    unique: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Entry>> {
    match unique.get(key).at(global)? {
        Some(g) => decode_entry(global, g.value()).map(Some),
        None => Ok(None),
    }
}

/// A row of `_inflight`: the txn and value key it names, or `None` for a row too short to
/// name one (damage; recovery removes it). `raw` is the row's key, to remove it.
pub(crate) struct InflightRow {
    pub raw: Vec<u8>,
    pub parsed: Option<(TxnId, Vec<u8>)>,
}

/// The unique index as a read snapshot sees it.
pub(crate) struct IndexRead<'g> {
    global: &'g Partition,
    unique: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

impl<'g> IndexRead<'g> {
    /// The index in `txn`, a read snapshot of `global` (empty if never written).
    pub fn open(global: &'g Partition, txn: &ReadTransaction) -> Result<Self> {
        Ok(IndexRead {
            global,
            unique: global.read_table(txn, UNIQUE)?,
        })
    }

    /// The index over `unique`, a `_unique` table the caller opened (the audit opens it
    /// leniently: a table of the wrong type is a finding there, and reads as `None`).
    pub fn from_table(
        global: &'g Partition,
        unique: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    ) -> Self {
        IndexRead { global, unique }
    }

    /// The entry of value key `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        match &self.unique {
            Some(t) => get_in(self.global, t, key),
            None => Ok(None),
        }
    }

    /// The entry of `key` without failing on damage: `Some(None)` if it does not decode
    /// (for the audit, which reports it and goes on).
    pub fn get_lenient(&self, key: &[u8]) -> Result<Option<Option<Entry>>> {
        match &self.unique {
            Some(t) => Ok(t
                .get(key)
                .at(self.global)?
                .map(|g| Entry::decode(g.value()))),
            None => Ok(None),
        }
    }

    /// The `_unique` table, to walk it.
    pub fn table(&self) -> Option<&redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
        self.unique.as_ref()
    }
}

/// The unique index inside one global write transaction.
pub(crate) struct IndexWrite<'t> {
    global: &'t Partition,
    unique: redb::Table<'t, &'static [u8], &'static [u8]>,
    inflight: redb::Table<'t, &'static [u8], ()>,
    tombstones: redb::Table<'t, &'static [u8], ()>,
}

impl<'t> IndexWrite<'t> {
    /// Opens the three tables in `w`, a write transaction of `global`.
    pub fn open(global: &'t Partition, w: &'t WriteTransaction) -> Result<Self> {
        Ok(IndexWrite {
            global,
            unique: w.open_table(UNIQUE).at(global)?,
            inflight: w.open_table(INFLIGHT).at(global)?,
            tombstones: w.open_table(TOMBSTONES).at(global)?,
        })
    }

    /// The entry of value key `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        get_in(self.global, &self.unique, key)
    }

    /// Stores `entry`, which `txn` now holds in flight (a Reserve's claim or release),
    /// with its `_inflight` row.
    pub fn put_in_flight(&mut self, key: &[u8], txn: TxnId, entry: &Entry) -> Result<()> {
        self.unique
            .insert(key, entry.encode().as_slice())
            .at(self.global)?;
        self.inflight
            .insert(txn_key(txn.to_u128(), key).as_slice(), ())
            .at(self.global)?;
        Ok(())
    }

    /// Applies one state-machine change to the entry of `key`, with the tombstone row a
    /// new tombstone needs: the one write of a settled entry, shared by Confirm,
    /// recovery (rollback) and forfeit.
    pub fn apply(&mut self, key: &[u8], change: Change) -> Result<()> {
        match change {
            Change::Keep => {}
            Change::Delete => {
                self.unique.remove(key).at(self.global)?;
            }
            Change::Put(e) => {
                if e.state == State::Tombstone {
                    self.tombstones
                        .insert(txn_key(e.txn.to_u128(), key).as_slice(), ())
                        .at(self.global)?;
                }
                self.unique
                    .insert(key, e.encode().as_slice())
                    .at(self.global)?;
            }
        }
        Ok(())
    }

    /// Settles `txn`'s hold on `key`: applies `step` (confirm or rollback) to the current
    /// entry and removes the `_inflight` row.
    pub fn settle(
        &mut self,
        key: &[u8],
        txn: TxnId,
        step: fn(Option<&Entry>, TxnId) -> Change,
    ) -> Result<()> {
        let cur = self.get(key)?;
        self.apply(key, step(cur.as_ref(), txn))?;
        self.remove_inflight(&txn_key(txn.to_u128(), key))
    }

    /// Every `_inflight` row, copied out so the tables can change while they are walked.
    pub fn inflight_rows(&self) -> Result<Vec<InflightRow>> {
        let mut rows = Vec::new();
        for row in self.inflight.iter().at(self.global)? {
            let raw = row.at(self.global)?.0.value().to_vec();
            let parsed = split_txn_key(&raw).map(|(t, k)| (TxnId::from_u128(t), k.to_vec()));
            rows.push(InflightRow { raw, parsed });
        }
        Ok(rows)
    }

    /// Removes one `_inflight` row by its raw key.
    pub fn remove_inflight(&mut self, raw: &[u8]) -> Result<()> {
        self.inflight.remove(raw).at(self.global)?;
        Ok(())
    }

    /// Drops tombstones whose txn is older than `low` (every tombstone if `None`): their
    /// `_tombstones` row, and their entry if it is still that tombstone. Returns the unique
    /// keys whose entry it removed.
    pub fn drop_tombstones(&mut self, low: Option<TxnId>) -> Result<Vec<Vec<u8>>> {
        let upper = low.map(|t| t.to_u128().to_be_bytes().to_vec());
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut removed = Vec::new();
        {
            let range = match &upper {
                Some(u) => self.tombstones.range::<&[u8]>(..u.as_slice()),
                None => self.tombstones.range::<&[u8]>(..),
            }
            .at(self.global)?;
            for row in range {
                let (k, _) = row.at(self.global)?;
                doomed.push(k.value().to_vec());
            }
        }
        for row in doomed {
            self.tombstones.remove(row.as_slice()).at(self.global)?;
            let Some((txn, ukey)) = split_txn_key(&row) else {
                continue;
            };
            // An undecodable entry is not this tombstone: left for audit to report.
            let still = match self.unique.get(ukey).at(self.global)? {
                Some(g) => Entry::decode(g.value())
                    .is_some_and(|e| e.state == State::Tombstone && e.txn.to_u128() == txn),
                None => false,
            };
            if still {
                self.unique.remove(ukey).at(self.global)?;
                removed.push(ukey.to_vec());
            }
        }
        Ok(removed)
    }
}
