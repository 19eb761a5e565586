//! `Db::builder()`: options with documented defaults, validation, and the open sequence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redb::ReadableTable;

use crate::account::RoutingCache;
use crate::backends::{FileStorage, Storage};
use crate::db::{Db, Inner, Options, Region, RegionSet, RegionSlot, Usage};
use crate::error::{Error, Result};
use crate::partition::global::{CatalogEntry, get_u64, put_u64};
use crate::partition::region::decode_owned;
use crate::partition::{self, Expect, Partition, Probe};
use crate::reservation::coordinator::{CheckpointBudget, Coordinator};
use crate::reservation::recovery;
use crate::schema::*;
use crate::types::RegionId;

/// Default total page-cache budget, split across all open partitions.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;
/// Default largest stored value (after encoding), in bytes.
pub const DEFAULT_MAX_VALUE: usize = 16 << 20;
/// Largest user key, in bytes.
pub const MAX_KEY: usize = 4096;

#[derive(Debug, Clone)]
enum RegionSpec {
    Open { name: String, path: Option<PathBuf> },
    Disabled { name: String },
}

/// Configures and opens a [`Db`]. Created by [`Db::builder`].
///
/// Defaults: cache budget 256 MiB in total (split evenly over the open partitions), values
/// up to 16 MiB, a checkpoint every 1,024 unique writes or 1 s, whichever comes first, a
/// digest key generated once and kept in the global partition.
#[derive(Debug, Clone)]
pub struct Builder {
    regions: Vec<RegionSpec>,
    default_region: Option<String>,
    cache_bytes: usize,
    max_value: usize,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    digest_key: Option<[u8; 32]>,
    storage: Option<Arc<dyn Storage>>,
    verify_on_open: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            regions: Vec::new(),
            default_region: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_value: DEFAULT_MAX_VALUE,
            checkpoint_every: 1024,
            checkpoint_interval: Duration::from_secs(1),
            digest_key: None,
            storage: None,
            verify_on_open: true,
        }
    }
}

pub(crate) fn check_region_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::invalid(format!(
            "region name `{name}` must be 1 to 64 ASCII letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

impl Builder {
    /// Opens region `name` at `<dir>/regions/<name>.redb`.
    pub fn region(mut self, name: impl Into<String>) -> Self {
        self.regions.push(RegionSpec::Open {
            name: name.into(),
            path: None,
        });
        self
    }

    /// Opens region `name` at `path` (e.g. a volume mounted in that region).
    pub fn region_at(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.regions.push(RegionSpec::Open {
            name: name.into(),
            path: Some(path.into()),
        });
        self
    }

    /// Marks region `name` disabled (recorded in the catalog): its file is not opened, its
    /// data stays, and reads and writes to it return [`Error::RegionDisabled`]. A region
    /// the catalog knows must be listed with [`Builder::region`] or disabled here.
    pub fn disable_region(mut self, name: impl Into<String>) -> Self {
        self.regions
            .push(RegionSpec::Disabled { name: name.into() });
        self
    }

    /// The region new accounts and tools use when none is named. Defaults to the one
    /// recorded in the store, else the first region listed.
    pub fn default_region(mut self, name: impl Into<String>) -> Self {
        self.default_region = Some(name.into());
        self
    }

    /// Total page-cache budget in bytes, split over the open partitions (redb's own default
    /// is 1 GiB per file).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Largest encoded value accepted by a write (default 16 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value = bytes;
        self
    }

    /// Checkpoint after this many unique writes (default 1,024) or this much time
    /// (default 1 s), whichever comes first. A checkpoint is one synced global commit.
    pub fn checkpoint_budget(mut self, every: u64, interval: Duration) -> Self {
        self.checkpoint_every = every.max(1);
        self.checkpoint_interval = interval;
        self
    }

    /// The key of the digests that the global unique index stores instead of values. Used
    /// only when the store is created (it is then kept in the global partition); opening an
    /// existing store with a different key is an error.
    pub fn digest_key(mut self, key: [u8; 32]) -> Self {
        self.digest_key = Some(key);
        self
    }

    /// Whether every partition file's page checksums are verified when the store opens
    /// (default: true). redb does not verify checksums on ordinary reads, and a damaged
    /// page can make it panic; with verification a damaged file is refused at open with
    /// [`Error::Corrupt`]. It reads every file once per open: a store of many GiB on
    /// trusted media may turn it off to open faster.
    pub fn verify_on_open(mut self, verify: bool) -> Self {
        self.verify_on_open = verify;
        self
    }

    /// Where partition files live (default: [`FileStorage`], ordinary files).
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Creates or opens the store in `dir`: `<dir>/global.redb` and one file per region.
    ///
    /// On open, every partition's meta is checked (store id, kind, region name and id,
    /// format version) before anything writes to it, then recovery settles any unique
    /// write a crash interrupted.
    ///
    /// # Errors
    /// [`Error::PartitionMismatch`] or [`Error::FormatVersion`] for a file that is not the
    /// expected partition (nothing is modified); [`Error::Config`] when the regions listed
    /// do not match the catalog (a known region neither listed nor disabled, a region's
    /// file missing); [`Error::InvalidArgument`] for a bad region name; storage errors.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Db> {
        open(self, dir.as_ref())
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        path: PathBuf::from("<random>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

struct GlobalState {
    uuid: [u8; 16],
    digest_key: [u8; 32],
    epoch: u64,
    next_region: u16,
    catalog: HashMap<String, CatalogEntry>,
    default_region: Option<String>,
    /// Record counts of disabled regions, per (region, account), recorded when they were
    /// disabled; `known` holds the regions whose counts were recorded.
    frozen: HashMap<(u16, u64), u64>,
    frozen_known: std::collections::HashSet<u16>,
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::corrupt("global", what.to_string())
}

/// Reads the catalog and counters of the global partition from a snapshot (read-only or
/// read-write open alike).
fn read_global(txn: &redb::ReadTransaction) -> Result<GlobalState> {
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
    let mut catalog = HashMap::new();
    match txn.open_table(REGIONS) {
        Ok(t) => {
            for row in t.iter().map_err(corrupt)? {
                let (k, v) = row.map_err(corrupt)?;
                let entry = CatalogEntry::decode(v.value())
                    .ok_or_else(|| corrupt("undecodable region catalog row"))?;
                catalog.insert(k.value().to_owned(), entry);
            }
        }
        Err(e) if partition::missing_table(&e) => {}
        Err(e) => return Err(corrupt(e)),
    }
    let mut frozen = HashMap::new();
    let mut frozen_known = std::collections::HashSet::new();
    match txn.open_table(FROZEN_USAGE) {
        Ok(t) => {
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
        Err(e) if partition::missing_table(&e) => {}
        Err(e) => return Err(corrupt(e)),
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
    })
}

/// Record counts per account of a region, from its USAGE table.
pub(crate) fn region_usage(txn: &redb::ReadTransaction) -> Result<Vec<(u64, u64)>> {
    let err = |e: &dyn std::fmt::Display| Error::corrupt("region", e.to_string());
    let mut v = Vec::new();
    match txn.open_table(USAGE) {
        Ok(t) => {
            for row in t.iter().map_err(|e| err(&e))? {
                let (k, u) = row.map_err(|e| err(&e))?;
                v.push((k.value(), u.value().0));
            }
        }
        Err(e) if partition::missing_table(&e) => {}
        Err(e) => return Err(err(&e)),
    }
    Ok(v)
}

/// Record counts per account of one region: (account, records).
type AccountCounts = Vec<(u64, u64)>;

/// Changes to the catalog made by one open, written in one synced global commit before
/// any region file is created.
#[derive(Default)]
struct CatalogChanges {
    rows: Vec<(String, CatalogEntry)>,
    next_region: Option<u16>,
    default: Option<String>,
    /// Regions disabled now, with the record counts read from their files (None: the
    /// file could not be read, counts unknown).
    frozen: Vec<(u16, Option<AccountCounts>)>,
    /// Regions enabled again: their frozen counts are dropped.
    thawed: Vec<u16>,
}

impl CatalogChanges {
    fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.next_region.is_none()
            && self.default.is_none()
            && self.frozen.is_empty()
            && self.thawed.is_empty()
    }
}

fn write_catalog(global: &Partition, c: &CatalogChanges) -> Result<()> {
    let w = global.begin_write()?;
    {
        let mut t = w.open_table(REGIONS).map_err(|e| global.err(e))?;
        for (name, entry) in &c.rows {
            t.insert(name.as_str(), entry.encode().as_slice())
                .map_err(|e| global.err(e))?;
        }
        let mut meta = w.open_table(META).map_err(|e| global.err(e))?;
        if let Some(n) = c.next_region {
            meta.insert(META_NEXT_REGION, n.to_le_bytes().as_slice())
                .map_err(|e| global.err(e))?;
        }
        if let Some(d) = &c.default {
            meta.insert(META_DEFAULT_REGION, d.as_bytes())
                .map_err(|e| global.err(e))?;
        }
        let mut frozen = w.open_table(FROZEN_USAGE).map_err(|e| global.err(e))?;
        for r in c.thawed.iter().chain(c.frozen.iter().map(|(r, _)| r)) {
            frozen
                .retain_in((*r, 0)..=(*r, u64::MAX), |_, _| false)
                .map_err(|e| global.err(e))?;
        }
        for (r, counts) in &c.frozen {
            if let Some(counts) = counts {
                for (account, records) in counts {
                    frozen
                        .insert((*r, *account), *records)
                        .map_err(|e| global.err(e))?;
                }
                frozen
                    .insert((*r, FROZEN_SENTINEL), 1)
                    .map_err(|e| global.err(e))?;
            }
        }
    }
    global.commit(w)
}

/// Marks a region disabled in the catalog, recording its record counts, in one synced
/// global commit (used by `Db::disable_region`).
pub(crate) fn persist_disable(
    global: &Partition,
    name: &str,
    entry: CatalogEntry,
    counts: Vec<(u64, u64)>,
) -> Result<()> {
    write_catalog(
        global,
        &CatalogChanges {
            rows: vec![(name.to_owned(), entry)],
            frozen: vec![(entry.id, Some(counts))],
            ..Default::default()
        },
    )
}

/// Recomputes the digests of a few unique values a region owns with the store's digest
/// key: a changed or damaged key would make every value look free and let it be claimed
/// twice, so it is refused before anything is opened for writing.
fn check_digest_key(txn: &redb::ReadTransaction, key: &[u8; 32], region: &str) -> Result<()> {
    let bad = |what: String| Error::corrupt("global", what);
    let t = match txn.open_table(OWNED) {
        Ok(t) => t,
        Err(e) if partition::missing_table(&e) => return Ok(()),
        Err(e) => return Err(Error::corrupt(region, e.to_string())),
    };
    for row in t
        .iter()
        .map_err(|e| Error::corrupt(region, e.to_string()))?
        .take(4)
    {
        let (_, v) = row.map_err(|e| Error::corrupt(region, e.to_string()))?;
        // An undecodable row is damage of its own (audit names it); it says nothing
        // about the key.
        let Some(list) = decode_owned(v.value()) else {
            continue;
        };
        if list
            .iter()
            .any(|o| crate::table::digest(key, &o.ns, &o.value) != o.digest)
        {
            return Err(bad(format!(
                "the digest key does not match the unique values of region `{region}` \
                 (the key in global.redb was changed or damaged)"
            )));
        }
    }
    Ok(())
}

fn default_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("regions").join(format!("{name}.redb"))
}

fn open(b: Builder, dir: &Path) -> Result<Db> {
    let storage: Arc<dyn Storage> = b.storage.clone().unwrap_or_else(|| Arc::new(FileStorage));
    // Validate the region list.
    let mut seen = std::collections::HashSet::new();
    for spec in &b.regions {
        let name = match spec {
            RegionSpec::Open { name, .. } | RegionSpec::Disabled { name } => name,
        };
        check_region_name(name)?;
        if !seen.insert(name.clone()) {
            return Err(Error::Config(format!("region `{name}` is listed twice")));
        }
    }
    let open_specs: Vec<(String, PathBuf)> = b
        .regions
        .iter()
        .filter_map(|s| match s {
            RegionSpec::Open { name, path } => Some((
                name.clone(),
                path.clone().unwrap_or_else(|| default_path(dir, name)),
            )),
            RegionSpec::Disabled { .. } => None,
        })
        .collect();
    let disabled: Vec<String> = b
        .regions
        .iter()
        .filter_map(|s| match s {
            RegionSpec::Disabled { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let partitions = 1 + open_specs.len();
    let cache = (b.cache_bytes / partitions).max(1 << 20);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| Error::Io { path, source: e }
    };

    // Phase 1: look, read-only. Every existing file is checked through a copy-on-write view
    // (meta, catalog, page checksums; a crash-left file is repaired in the view), and
    // nothing writes a byte until every file passed, so a refused open leaves every file
    // as it was.
    let verify = b.verify_on_open;
    let global_path = dir.join("global.redb");
    let expect_global = Expect {
        kind: KIND_GLOBAL,
        uuid: None,
        region: None,
    };
    let mut state: Option<GlobalState> = None;
    match partition::probe(&*storage, &global_path, &expect_global, verify, |txn| {
        state = Some(read_global(txn)?);
        Ok(())
    })? {
        Probe::Checked => {}
        Probe::Missing => {
            if open_specs.is_empty() {
                return Err(Error::Config(
                    "a new store needs at least one region (Builder::region)".into(),
                ));
            }
            // A region file without its global partition belongs to another store (or
            // to one whose global file was lost): never adopt or overwrite it.
            for (name, path) in &open_specs {
                if storage.open(path, true).map_err(io(path))?.is_some() {
                    return Err(Error::mismatch(
                        path,
                        format!(
                            "region `{name}` file exists but {} does not",
                            global_path.display()
                        ),
                    ));
                }
            }
            if let Some(name) = disabled.first() {
                return Err(Error::RegionUnknown(name.clone()));
            }
        }
    }
    if let (Some(k), Some(st)) = (b.digest_key, &state)
        && k != st.digest_key
    {
        return Err(Error::Config(
            "digest key differs from the one this store was created with".into(),
        ));
    }
    let empty = HashMap::new();
    let catalog_now = state.as_ref().map_or(&empty, |s| &s.catalog);

    // The catalog against the builder's list.
    for (name, entry) in catalog_now {
        let listed = open_specs.iter().any(|(n, _)| n == name) || disabled.contains(name);
        if !listed && entry.enabled {
            return Err(Error::Config(format!(
                "region `{name}` is in the store's catalog but not configured: list it with \
                 Builder::region or disable it with Builder::disable_region"
            )));
        }
    }
    for name in &disabled {
        if !catalog_now.contains_key(name) {
            return Err(Error::RegionUnknown(name.clone()));
        }
    }
    let mut changes = CatalogChanges::default();
    let mut next = state.as_ref().map_or(1, |s| s.next_region);
    let mut ids: HashMap<String, CatalogEntry> = catalog_now.clone();
    for (name, path) in &open_specs {
        match catalog_now.get(name) {
            Some(e) => {
                let expect = Expect {
                    kind: KIND_REGION,
                    uuid: state.as_ref().map(|s| s.uuid),
                    region: Some((name.clone(), e.id)),
                };
                let key = state.as_ref().map(|s| s.digest_key);
                let found = partition::probe(&*storage, path, &expect, verify, |txn| match key {
                    Some(key) => check_digest_key(txn, &key, name),
                    None => Ok(()),
                })?;
                if found == Probe::Missing && e.created {
                    return Err(Error::Config(format!(
                        "the file of region `{name}` is missing at {} (it was created \
                         before); restore it, give its path with Builder::region_at, or \
                         disable the region",
                        path.display()
                    )));
                }
                if !e.enabled {
                    let e = CatalogEntry {
                        enabled: true,
                        ..*e
                    };
                    changes.rows.push((name.clone(), e));
                    changes.thawed.push(e.id);
                    ids.insert(name.clone(), e);
                }
            }
            None => {
                // A region new to this store has no file yet: one found there belongs to
                // something else.
                if storage.open(path, true).map_err(io(path))?.is_some() {
                    return Err(Error::mismatch(
                        path,
                        format!("region `{name}` is new to this store, but a file exists there"),
                    ));
                }
                if next == u16::MAX {
                    return Err(Error::Config("no region ids left".into()));
                }
                let e = CatalogEntry {
                    id: next,
                    enabled: true,
                    created: false,
                };
                next += 1;
                changes.next_region = Some(next);
                changes.rows.push((name.clone(), e));
                ids.insert(name.clone(), e);
            }
        }
    }
    for name in &disabled {
        let e = catalog_now[name];
        if e.enabled {
            // Disabled now: record its record counts (for limits that span regions) if its
            // file can be read; otherwise limited accounts allowed there cannot grow.
            let path = default_path(dir, name);
            let mut counts = None;
            let expect = Expect {
                kind: KIND_REGION,
                uuid: state.as_ref().map(|s| s.uuid),
                region: Some((name.clone(), e.id)),
            };
            let _ = partition::probe(&*storage, &path, &expect, false, |txn| {
                counts = Some(region_usage(txn)?);
                Ok(())
            });
            let e = CatalogEntry {
                enabled: false,
                ..e
            };
            changes.rows.push((name.clone(), e));
            changes.frozen.push((e.id, counts));
            ids.insert(name.clone(), e);
        }
    }
    let stored_default = state.as_ref().and_then(|s| s.default_region.clone());
    let default_name = match (&b.default_region, &stored_default) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) if ids.contains_key(d) => d.clone(),
        _ => match open_specs.first() {
            Some((n, _)) => n.clone(),
            None => return Err(Error::Config("no region is enabled".into())),
        },
    };
    if !ids.contains_key(&default_name) {
        return Err(Error::RegionUnknown(default_name));
    }
    if stored_default.as_deref() != Some(default_name.as_str()) {
        changes.default = Some(default_name.clone());
    }

    // Phase 2: every check passed. Open read-write, record the catalog, create what is new.
    let global = match () {
        () if state.is_some() => {
            partition::open_rw(&*storage, &global_path, "global", cache, &expect_global)?
        }
        () => {
            let uuid = random_bytes::<16>()?;
            let key = match b.digest_key {
                Some(k) => k,
                None => random_bytes::<32>()?,
            };
            let mut meta = partition::base_meta(uuid, KIND_GLOBAL);
            meta.push((META_DIGEST_KEY, key.to_vec()));
            meta.push((META_EPOCH, 0u64.to_le_bytes().to_vec()));
            meta.push((META_NEXT_ACCOUNT, 1u64.to_le_bytes().to_vec()));
            meta.push((META_NEXT_REGION, 1u16.to_le_bytes().to_vec()));
            let p = partition::create_new(&*storage, &global_path, "global", cache, &meta)?;
            state = Some(read_global(&p.begin_read()?)?);
            p
        }
    };
    let Some(mut state) = state else {
        return Err(Error::corrupt("global", "catalog unreadable"));
    };
    if !changes.is_empty() {
        // Synced before any region file is created: ids are assigned once.
        write_catalog(&global, &changes)?;
        for (r, counts) in &changes.frozen {
            state.frozen.retain(|(fr, _), _| fr != r);
            if let Some(counts) = counts {
                state.frozen_known.insert(*r);
                for (a, n) in counts {
                    state.frozen.insert((*r, *a), *n);
                }
            }
        }
        for r in &changes.thawed {
            state.frozen.retain(|(fr, _), _| fr != r);
            state.frozen_known.remove(r);
        }
    }
    let mut catalog = ids;

    // Open (or create) every enabled region.
    let mut regions: Vec<Arc<Region>> = Vec::new();
    let mut created_now = CatalogChanges::default();
    for (name, path) in &open_specs {
        let entry = catalog[name];
        let expect = Expect {
            kind: KIND_REGION,
            uuid: Some(state.uuid),
            region: Some((name.clone(), entry.id)),
        };
        let exists = storage.open(path, true).map_err(io(path))?.is_some();
        let part = if exists {
            partition::open_rw(&*storage, path, name, cache, &expect)?
        } else {
            let mut meta = partition::base_meta(state.uuid, KIND_REGION);
            meta.push((META_REGION_NAME, name.as_bytes().to_vec()));
            meta.push((META_REGION_ID, entry.id.to_le_bytes().to_vec()));
            let p = partition::create_new(&*storage, path, name, cache, &meta)?;
            created_now.rows.push((
                name.clone(),
                CatalogEntry {
                    created: true,
                    ..entry
                },
            ));
            p
        };
        regions.push(Arc::new(Region {
            id: RegionId(entry.id),
            part,
        }));
    }
    if !created_now.is_empty() {
        write_catalog(&global, &created_now)?;
        for (n, e) in created_now.rows {
            catalog.insert(n, e);
        }
    }

    let all_open = catalog.values().all(|e| e.enabled);
    let (epoch, report) = recovery::recover(&global, &regions, state.epoch, all_open)?;

    // Usage counters, for limits that span regions: open regions from their files,
    // disabled ones from the counts recorded when they were disabled.
    let mut usage: HashMap<u64, Usage> = HashMap::new();
    for r in &regions {
        let txn = r.part.begin_read()?;
        for (account, records) in region_usage(&txn)? {
            usage.entry(account).or_default().records += records;
        }
    }
    let mut usage_unknown = std::collections::HashSet::new();
    for e in catalog.values().filter(|e| !e.enabled) {
        if !state.frozen_known.contains(&e.id) {
            usage_unknown.insert(e.id);
        }
    }
    for ((r, account), records) in &state.frozen {
        if catalog.values().any(|e| e.id == *r && !e.enabled) {
            usage.entry(*account).or_default().records += records;
        }
    }

    let mut set = RegionSet::default();
    for (name, e) in &catalog {
        set.names.insert(name.clone(), e.id);
        let slot = match regions.iter().find(|r| r.id.0 == e.id) {
            Some(r) => RegionSlot::Open(r.clone()),
            None => RegionSlot::Disabled,
        };
        let idx = e.id as usize;
        if set.by_id.len() <= idx {
            set.by_id.resize_with(idx + 1, || None);
        }
        set.by_id[idx] = Some((name.clone(), slot));
    }
    set.default = catalog[&default_name].id;
    set.usage_unknown = usage_unknown;

    let inner = Inner {
        dir: dir.to_owned(),
        uuid: state.uuid,
        digest_key: state.digest_key,
        global,
        regions: RwLock::new(set),
        accounts: RoutingCache::default(),
        usage: Mutex::new(usage),
        coord: Coordinator::new(
            epoch,
            CheckpointBudget {
                every: b.checkpoint_every,
                interval: b.checkpoint_interval,
            },
            all_open,
        ),
        opts: Options {
            max_value: b.max_value,
        },
        closed: AtomicBool::new(false),
        recovery: report,
    };
    Ok(Db {
        inner: Arc::new(inner),
    })
}

pub(crate) fn bump_next_account(global: &Partition, w: &redb::WriteTransaction) -> Result<u64> {
    let mut meta = w.open_table(META).map_err(|e| global.err(e))?;
    let id = get_u64(&meta, META_NEXT_ACCOUNT)?;
    let next = id
        .checked_add(1)
        .ok_or_else(|| Error::corrupt("global", "account id counter exhausted"))?;
    put_u64(&mut meta, META_NEXT_ACCOUNT, next).map_err(|e| global.err(e))?;
    Ok(id)
}
