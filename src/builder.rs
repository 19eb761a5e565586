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
use crate::partition::{self, Expect, Partition};
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
    catalog: HashMap<String, CatalogEntry>,
    default_region: Option<String>,
}

fn read_global(global: &Partition) -> Result<GlobalState> {
    let txn = global.begin_read()?;
    let meta = txn.open_table(META).map_err(|e| global.err(e))?;
    let get = |k: &str| -> Result<Option<Vec<u8>>> {
        Ok(meta
            .get(k)
            .map_err(|e| global.err(e))?
            .map(|v| v.value().to_vec()))
    };
    let uuid = get(META_DB_UUID)?
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::corrupt("global", "store id missing"))?;
    let digest_key = get(META_DIGEST_KEY)?
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Error::corrupt("global", "digest key missing"))?;
    let epoch = get_u64(&meta, META_EPOCH)?;
    let default_region = get(META_DEFAULT_REGION)?.and_then(|v| String::from_utf8(v).ok());
    let mut catalog = HashMap::new();
    match txn.open_table(REGIONS) {
        Ok(t) => {
            for row in t.iter().map_err(|e| global.err(e))? {
                let (k, v) = row.map_err(|e| global.err(e))?;
                let entry = CatalogEntry::decode(v.value())
                    .ok_or_else(|| Error::corrupt("global", "undecodable region catalog row"))?;
                catalog.insert(k.value().to_owned(), entry);
            }
        }
        Err(e) if partition::missing_table(&e) => {}
        Err(e) => return Err(global.err(e)),
    }
    Ok(GlobalState {
        uuid,
        digest_key,
        epoch,
        catalog,
        default_region,
    })
}

fn write_catalog(
    global: &Partition,
    rows: &[(String, CatalogEntry)],
    next_region: Option<u16>,
    default: Option<&str>,
) -> Result<()> {
    let w = global.begin_write()?;
    {
        let mut t = w.open_table(REGIONS).map_err(|e| global.err(e))?;
        for (name, entry) in rows {
            t.insert(name.as_str(), entry.encode().as_slice())
                .map_err(|e| global.err(e))?;
        }
        let mut meta = w.open_table(META).map_err(|e| global.err(e))?;
        if let Some(n) = next_region {
            meta.insert(META_NEXT_REGION, n.to_le_bytes().as_slice())
                .map_err(|e| global.err(e))?;
        }
        if let Some(d) = default {
            meta.insert(META_DEFAULT_REGION, d.as_bytes())
                .map_err(|e| global.err(e))?;
        }
    }
    global.commit(w)
}

fn next_region_id(global: &Partition) -> Result<u16> {
    let txn = global.begin_read()?;
    let meta = txn.open_table(META).map_err(|e| global.err(e))?;
    let v = meta
        .get(META_NEXT_REGION)
        .map_err(|e| global.err(e))?
        .and_then(|g| <[u8; 2]>::try_from(g.value()).ok())
        .map(u16::from_le_bytes)
        .unwrap_or(1);
    Ok(v)
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
                path.clone()
                    .unwrap_or_else(|| dir.join("regions").join(format!("{name}.redb"))),
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

    // The global partition.
    let global_path = dir.join("global.redb");
    let expect_global = Expect {
        kind: KIND_GLOBAL,
        uuid: None,
        region: None,
    };
    let global =
        match partition::open_existing(&*storage, &global_path, "global", cache, &expect_global)? {
            Some(p) => p,
            None => {
                if open_specs.is_empty() {
                    return Err(Error::Config(
                        "a new store needs at least one region (Builder::region)".into(),
                    ));
                }
                // A region file without its global partition belongs to another store (or
                // to one whose global file was lost): never adopt or overwrite it.
                for (name, path) in &open_specs {
                    if storage
                        .open(path, true)
                        .map_err(|e| Error::Io {
                            path: path.clone(),
                            source: e,
                        })?
                        .is_some()
                    {
                        return Err(Error::mismatch(
                            path,
                            format!(
                                "region `{name}` file exists but {} does not",
                                global_path.display()
                            ),
                        ));
                    }
                }
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
                partition::create_new(&*storage, &global_path, "global", cache, &meta)?
            }
        };
    let state = read_global(&global)?;
    if let Some(k) = b.digest_key
        && k != state.digest_key
    {
        return Err(Error::Config(
            "digest key differs from the one this store was created with".into(),
        ));
    }

    // Reconcile the catalog with the builder's list.
    let mut catalog = state.catalog.clone();
    for (name, entry) in &catalog {
        let listed = open_specs.iter().any(|(n, _)| n == name) || disabled.contains(name);
        if !listed && entry.enabled {
            return Err(Error::Config(format!(
                "region `{name}` is in the store's catalog but not configured: list it with \
                 Builder::region or disable it with Builder::disable_region"
            )));
        }
    }
    for name in &disabled {
        if !catalog.contains_key(name) {
            return Err(Error::RegionUnknown(name.clone()));
        }
    }
    let mut changed: Vec<(String, CatalogEntry)> = Vec::new();
    let mut next = next_region_id(&global)?;
    let mut allocated = false;
    for (name, _) in &open_specs {
        match catalog.get(name) {
            Some(e) if e.enabled => {}
            Some(e) => {
                let e = CatalogEntry {
                    enabled: true,
                    ..*e
                };
                changed.push((name.clone(), e));
            }
            None => {
                if next == u16::MAX {
                    return Err(Error::Config("no region ids left".into()));
                }
                let e = CatalogEntry {
                    id: next,
                    enabled: true,
                    created: false,
                };
                next += 1;
                allocated = true;
                changed.push((name.clone(), e));
            }
        }
    }
    for name in &disabled {
        if let Some(e) = catalog.get(name)
            && e.enabled
        {
            changed.push((
                name.clone(),
                CatalogEntry {
                    enabled: false,
                    ..*e
                },
            ));
        }
    }
    let default_name = match (&b.default_region, &state.default_region) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) if catalog.contains_key(d) || open_specs.iter().any(|(n, _)| n == d) => {
            d.clone()
        }
        _ => match open_specs.first() {
            Some((n, _)) => n.clone(),
            None => return Err(Error::Config("no region is enabled".into())),
        },
    };
    if !catalog.contains_key(&default_name) && !open_specs.iter().any(|(n, _)| *n == default_name) {
        return Err(Error::RegionUnknown(default_name));
    }
    let default_changed = state.default_region.as_deref() != Some(default_name.as_str());
    if !changed.is_empty() || default_changed {
        // Synced before any region file is created: ids are assigned once.
        write_catalog(
            &global,
            &changed,
            allocated.then_some(next),
            default_changed.then_some(default_name.as_str()),
        )?;
        for (n, e) in changed {
            catalog.insert(n, e);
        }
    }

    // Open (or create) every enabled region.
    let mut regions: Vec<Arc<Region>> = Vec::new();
    let mut created_now = Vec::new();
    for (name, path) in &open_specs {
        let entry = catalog[name];
        let expect = Expect {
            kind: KIND_REGION,
            uuid: Some(state.uuid),
            region: Some((name.clone(), entry.id)),
        };
        let part = match partition::open_existing(&*storage, path, name, cache, &expect)? {
            Some(p) => p,
            None if entry.created => {
                return Err(Error::Config(format!(
                    "the file of region `{name}` is missing at {} (it was created before); \
                     restore it, give its path with Builder::region_at, or disable the region",
                    path.display()
                )));
            }
            None => {
                let mut meta = partition::base_meta(state.uuid, KIND_REGION);
                meta.push((META_REGION_NAME, name.as_bytes().to_vec()));
                meta.push((META_REGION_ID, entry.id.to_le_bytes().to_vec()));
                created_now.push((
                    name.clone(),
                    CatalogEntry {
                        created: true,
                        ..entry
                    },
                ));
                partition::create_new(&*storage, path, name, cache, &meta)?
            }
        };
        regions.push(Arc::new(Region {
            id: RegionId(entry.id),
            part,
        }));
    }
    if !created_now.is_empty() {
        write_catalog(&global, &created_now, None, None)?;
        for (n, e) in created_now {
            catalog.insert(n, e);
        }
    }

    let all_open = catalog.values().all(|e| e.enabled);
    let (epoch, report) = recovery::recover(&global, &regions, state.epoch, all_open)?;

    // Usage counters, for limits that span regions.
    let mut usage: HashMap<u64, Usage> = HashMap::new();
    for r in &regions {
        let txn = r.part.begin_read()?;
        match txn.open_table(USAGE) {
            Ok(t) => {
                for row in t.iter().map_err(|e| r.part.err(e))? {
                    let (k, v) = row.map_err(|e| r.part.err(e))?;
                    let (records, _) = v.value();
                    usage.entry(k.value()).or_default().records += records;
                }
            }
            Err(e) if partition::missing_table(&e) => {}
            Err(e) => return Err(r.part.err(e)),
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
    put_u64(&mut meta, META_NEXT_ACCOUNT, id + 1).map_err(|e| global.err(e))?;
    Ok(id)
}
