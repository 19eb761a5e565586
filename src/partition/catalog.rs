//! The catalog and counters of the global partition: reading them at open
//! ([`read_global`]), the catalog's writes (one synced commit each: region rows, the
//! default, frozen record counts of disabled regions, doubtful marks), the clean-close
//! flag and the account-id counter. The open sequence and the running store both use
//! these; nothing else writes these tables.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;

use crate::error::{Error, Result};
use crate::partition::global::{CatalogEntry, get_u64, put_u64};
use crate::partition::region::AccountCounts;
use crate::partition::{self, At, Partition};
use crate::schema::*;

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::corrupt("global", what.to_string())
}

/// The catalog and counters of the global partition.
pub(crate) struct GlobalState {
    pub uuid: [u8; 16],
    pub digest_key: [u8; 32],
    pub epoch: u64,
    pub next_region: u16,
    pub catalog: HashMap<String, CatalogEntry>,
    pub default_region: Option<String>,
    /// Record counts of disabled regions, per (region, account), recorded when they were
    /// disabled.
    pub frozen: HashMap<(u16, u64), u64>,
    /// The disabled regions whose counts were recorded.
    pub frozen_known: HashSet<u16>,
    /// The newest unique write of each region the global partition reflects.
    pub seen: HashMap<u16, u128>,
    /// Regions with a commit of unknown outcome not yet made durable by a later open.
    pub doubtful: HashSet<u16>,
    /// Whether the last process closed the store cleanly (true for stores that predate
    /// the flag).
    pub clean_close: bool,
}

/// Reads the catalog and counters of the global partition from a snapshot (read-only or
/// read-write open alike).
pub(crate) fn read_global(txn: &redb::ReadTransaction) -> Result<GlobalState> {
    let meta = txn.open_table(META).map_err(corrupt)?;
    let get = |k: &str| -> Result<Option<Vec<u8>>> {
        Ok(meta.get(k).map_err(corrupt)?.map(|v| v.value().to_vec()))
    };
    let uuid = get(META_DB_UUID)?
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| corrupt("store id missing"))?;
    let digest_key = get(META_DIGEST_KEY)?
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| corrupt("digest key missing"))?;
    let epoch = get_u64(&meta, META_EPOCH)?;
    let next_region = get(META_NEXT_REGION)?
        .and_then(|v| <[u8; 2]>::try_from(v.as_slice()).ok())
        .map(u16::from_le_bytes)
        .unwrap_or(1);
    let default_region = get(META_DEFAULT_REGION)?.and_then(|v| String::from_utf8(v).ok());
    let clean_close = get(META_CLEAN_CLOSE)?.is_none_or(|v| v != [0]);
    let mut catalog = HashMap::new();
    if let Some(t) = partition::table_if_exists(txn, REGIONS).map_err(corrupt)? {
        for row in t.iter().map_err(corrupt)? {
            let (k, v) = row.map_err(corrupt)?;
            let entry = CatalogEntry::decode(v.value())
                .ok_or_else(|| corrupt("undecodable region catalog row"))?;
            catalog.insert(k.value().to_owned(), entry);
        }
    }
    let mut frozen = HashMap::new();
    let mut frozen_known = HashSet::new();
    if let Some(t) = partition::table_if_exists(txn, FROZEN_USAGE).map_err(corrupt)? {
        for row in t.iter().map_err(corrupt)? {
            let (k, v) = row.map_err(corrupt)?;
            let (region, account) = k.value();
            if account == FROZEN_SENTINEL {
                frozen_known.insert(region);
            } else {
                frozen.insert((region, account), v.value());
            }
        }
    }
    let mut seen = HashMap::new();
    if let Some(t) = partition::table_if_exists(txn, REGION_SEEN).map_err(corrupt)? {
        for row in t.iter().map_err(corrupt)? {
            let (k, v) = row.map_err(corrupt)?;
            seen.insert(k.value(), v.value());
        }
    }
    let mut doubtful = HashSet::new();
    if let Some(t) = partition::table_if_exists(txn, DOUBTFUL).map_err(corrupt)? {
        for row in t.iter().map_err(corrupt)? {
            doubtful.insert(row.map_err(corrupt)?.0.value());
        }
    }
    Ok(GlobalState {
        uuid,
        digest_key,
        epoch,
        next_region,
        catalog,
        default_region,
        frozen,
        frozen_known,
        seen,
        doubtful,
        clean_close,
    })
}

/// The catalog row of region `name`, as stored.
pub(crate) fn catalog_entry(global: &Partition, name: &str) -> Result<CatalogEntry> {
    let txn = global.begin_read()?;
    let t = txn.open_table(REGIONS).at(global)?;
    let row = t
        .get(name)
        .at(global)?
        .ok_or_else(|| corrupt(format!("region `{name}` missing from the catalog")))?;
    CatalogEntry::decode(row.value()).ok_or_else(|| corrupt("undecodable region catalog row"))
}

/// Changes to the catalog, written in one synced global commit.
#[derive(Default)]
pub(crate) struct CatalogChanges {
    pub rows: Vec<(String, CatalogEntry)>,
    pub next_region: Option<u16>,
    pub default: Option<String>,
    /// Regions disabled now, with the record counts read from their files (None: the
    /// file could not be read, counts unknown).
    pub frozen: Vec<(u16, Option<AccountCounts>)>,
    /// Regions enabled again: their frozen counts are dropped.
    pub thawed: Vec<u16>,
    /// Doubtful regions whose contents this open made durable: their rows are removed.
    pub settled_doubtful: Vec<u16>,
}

impl CatalogChanges {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.next_region.is_none()
            && self.default.is_none()
            && self.frozen.is_empty()
            && self.thawed.is_empty()
            && self.settled_doubtful.is_empty()
    }
}

/// Writes `c` in one synced global commit.
pub(crate) fn write_catalog(global: &Partition, c: &CatalogChanges) -> Result<()> {
    let w = global.begin_write()?;
    {
        let mut t = w.open_table(REGIONS).at(global)?;
        for (name, entry) in &c.rows {
            t.insert(name.as_str(), entry.encode().as_slice())
                .at(global)?;
        }
        let mut meta = w.open_table(META).at(global)?;
        if let Some(n) = c.next_region {
            meta.insert(META_NEXT_REGION, n.to_le_bytes().as_slice())
                .at(global)?;
        }
        if let Some(d) = &c.default {
            meta.insert(META_DEFAULT_REGION, d.as_bytes()).at(global)?;
        }
        let mut frozen = w.open_table(FROZEN_USAGE).at(global)?;
        for r in c.thawed.iter().chain(c.frozen.iter().map(|(r, _)| r)) {
            frozen
                .retain_in((*r, 0)..=(*r, u64::MAX), |_, _| false)
                .at(global)?;
        }
        if !c.settled_doubtful.is_empty() {
            let mut doubtful = w.open_table(DOUBTFUL).at(global)?;
            for r in &c.settled_doubtful {
                doubtful.remove(*r).at(global)?;
            }
        }
        for (r, counts) in &c.frozen {
            if let Some(counts) = counts {
                for (account, records) in counts {
                    frozen.insert((*r, *account), *records).at(global)?;
                }
                frozen.insert((*r, FROZEN_SENTINEL), 1).at(global)?;
            }
        }
    }
    global.commit_settled(w)
}

/// Marks a region disabled in the catalog, recording its record counts, in one synced
/// global commit (used by `Db::disable_region`).
pub(crate) fn persist_disable(
    global: &Partition,
    name: &str,
    entry: &CatalogEntry,
    counts: Option<AccountCounts>,
) -> Result<()> {
    write_catalog(
        global,
        &CatalogChanges {
            rows: vec![(name.to_owned(), entry.clone())],
            frozen: vec![(entry.id, counts)],
            ..Default::default()
        },
    )
}

/// Records (synced) that this process closes the store cleanly: every commit it made is
/// durable or was refused.
pub(crate) fn mark_clean_close(global: &Partition) -> Result<()> {
    let w = global.begin_write()?;
    w.open_table(META)
        .at(global)?
        .insert(META_CLEAN_CLOSE, [1u8].as_slice())
        .at(global)?;
    global.commit_settled(w)
}

/// Records (synced) that a commit of region `id` failed inside its commit.
pub(crate) fn mark_doubtful(global: &Partition, id: u16) -> Result<()> {
    let w = global.begin_write()?;
    w.open_table(DOUBTFUL)
        .at(global)?
        .insert(id, ())
        .at(global)?;
    global.commit(w)
}

/// Takes `n` consecutive account ids (the first is returned) in one counter update, in `w`,
/// the caller's global write transaction.
pub(crate) fn reserve_account_ids(
    global: &Partition,
    w: &redb::WriteTransaction,
    n: u64,
) -> Result<u64> {
    let mut meta = w.open_table(META).at(global)?;
    let id = get_u64(&meta, META_NEXT_ACCOUNT)?;
    let next = id
        .checked_add(n)
        .ok_or_else(|| Error::corrupt("global", "account id counter exhausted"))?;
    put_u64(&mut meta, META_NEXT_ACCOUNT, next).at(global)?;
    Ok(id)
}
