//! Phase 1 of open: look at every file and decide everything, writing nothing.
//!
//! Every check that can refuse an open runs here: names, paths (the same file given twice,
//! the global file's path, a folder that cannot be created), the catalog against the
//! builder's list, the default region, the identity and integrity of every existing file
//! (through a copy-on-write view: see `partition::probe`), the digest key, and exclusive
//! access. Storage is reached only through [`ReadOnly`], which cannot write; the result is
//! an [`OpenPlan`] that `apply` carries out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::ReadableTable;

use super::default_path;
use crate::backends::{ReadOnly, Storage};
use crate::budget::{self, CacheBudget};
use crate::builder::{Builder, RegionSpec};
use crate::error::{Error, Result};
use crate::limits::check_region_name;
use crate::partition::catalog::{CatalogChanges, GlobalState, read_global};
use crate::partition::global::CatalogEntry;
use crate::partition::global::{split_txn_key, unique_key};
use crate::partition::region::decode_owned;
use crate::partition::region::{Marker, region_usage};
use crate::partition::registry::Registration;
use crate::partition::{self, Expect, Probe};
use crate::reservation::state::Entry;
use crate::schema::*;

/// What to do with a region file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileStep {
    /// It exists and the catalog knows it: open it.
    Open,
    /// It exists, made by an open that was interrupted before the catalog recorded it as
    /// created: open it and record it.
    Adopt,
    /// Create it.
    Create,
}

/// One region this open will have open.
pub(super) struct RegionPlan {
    pub name: String,
    pub path: PathBuf,
    /// The catalog row after this open.
    pub entry: CatalogEntry,
    pub step: FileStep,
    /// Its file's size now (0 when it is created): its weight in the cache budget.
    pub file_bytes: u64,
}

/// Everything an open will do, decided before anything is written.
pub(super) struct OpenPlan {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub global_path: PathBuf,
    /// The page-cache budget: `global` first, then `regions` in their order.
    pub budget: CacheBudget,
    /// The global partition as found; `None` for a new store.
    pub state: Option<GlobalState>,
    /// The regions to open, in the builder's order.
    pub regions: Vec<RegionPlan>,
    /// Written (synced) before any region file is created: the ids of new regions, as
    /// rows not yet created. An open interrupted after this leaves only these plans,
    /// which an open that does not list those regions ignores.
    pub reserve: CatalogChanges,
    /// Written (synced) once every region file exists: created flags, enabled flags,
    /// frozen counts, paths, the default.
    pub finish: CatalogChanges,
    /// The catalog after this open, of regions that exist (created, or created now).
    pub catalog: HashMap<String, CatalogEntry>,
    pub default: String,
    pub registration: Arc<Registration>,
    /// The unique keys the regions' applied markers name: recovery reads their entries,
    /// so the plan checks they decode (a second, unverified look at the global file, only
    /// when there are markers, i.e. after an end without `Db::close`).
    pub marker_keys: Vec<Vec<u8>>,
    /// The partitions whose every page was checked by this open (`Builder::verify_on_open`,
    /// or redb found the file not closed cleanly): `global` and region names.
    pub verified: Vec<String>,
    /// One read-only handle per file `apply` will hold open (see [`reserve_handles`]),
    /// released just before `apply` opens them.
    pub reserved: Vec<Box<dyn redb::StorageBackend>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

/// Recomputes the digests of a few unique values a region owns with the store's digest
/// key: a changed or damaged key would make every value look free and let it be claimed
/// twice, so it is refused before anything is opened for writing.
fn check_digest_key(txn: &redb::ReadTransaction, key: &[u8; 32], region: &str) -> Result<()> {
    let Some(t) = partition::table_if_exists(txn, OWNED)
        .map_err(|e| Error::corrupt(region, e.to_string()))?
    else {
        return Ok(());
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
            return Err(Error::corrupt(
                "global",
                format!(
                    "the digest key does not match the unique values of region `{region}` \
                     (the key in global.redb was changed or damaged)"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks, read-only, what recovery and the open's last steps will read from a region file,
/// so that damage there refuses the open before anything is written rather than after:
/// every applied marker decodes, and the record counts (`_usage`) are readable. Returns
/// the unique keys the markers name.
fn check_recoverable_region(txn: &redb::ReadTransaction, name: &str) -> Result<Vec<Vec<u8>>> {
    let corrupt = |e: &dyn std::fmt::Display| Error::corrupt(name, e.to_string());
    let mut keys = Vec::new();
    if let Some(t) = partition::table_if_exists(txn, MARKERS).map_err(|e| corrupt(&e))? {
        for row in t.iter().map_err(|e| corrupt(&e))? {
            let (k, v) = row.map_err(|e| corrupt(&e))?;
            let txn = crate::types::TxnId::from_u128(k.value());
            let m = Marker::decode(v.value())
                .ok_or_else(|| Error::corrupt(name, format!("undecodable applied marker {txn}")))?;
            keys.extend(m.claims.iter().map(|c| unique_key(&c.ns, &c.digest)));
            keys.extend(m.releases.iter().map(|(ns, d)| unique_key(ns, d)));
        }
    }
    region_usage(txn, name)?;
    Ok(keys)
}

/// Checks, read-only, what recovery will read from the global file beyond the catalog:
/// the index tables have their types, and every entry an `_inflight` row names decodes
/// (recovery settles each of them).
fn check_recoverable_global(txn: &redb::ReadTransaction) -> Result<()> {
    let corrupt = |e: &dyn std::fmt::Display| Error::corrupt("global", e.to_string());
    let unique = partition::table_if_exists(txn, UNIQUE).map_err(|e| corrupt(&e))?;
    partition::table_if_exists(txn, TOMBSTONES).map_err(|e| corrupt(&e))?;
    if let Some(t) = partition::table_if_exists(txn, DIRTY).map_err(|e| corrupt(&e))? {
        for row in t.iter().map_err(|e| corrupt(&e))? {
            row.map_err(|e| corrupt(&e))?;
        }
    }
    let Some(inflight) = partition::table_if_exists(txn, INFLIGHT).map_err(|e| corrupt(&e))? else {
        return Ok(());
    };
    for row in inflight.iter().map_err(|e| corrupt(&e))? {
        let (k, _) = row.map_err(|e| corrupt(&e))?;
        // A malformed row names nothing: recovery removes it.
        let Some((_, ukey)) = split_txn_key(k.value()) else {
            continue;
        };
        if let Some(t) = &unique
            && let Some(v) = t.get(ukey).map_err(|e| corrupt(&e))?
            && Entry::decode(v.value()).is_none()
        {
            return Err(Error::corrupt("global", "undecodable unique entry"));
        }
    }
    Ok(())
}

/// Checks that the global entries the regions' markers name decode (recovery replays the
/// markers onto them). An unverified look: the first one verified the file.
fn check_marker_entries(
    storage: ReadOnly<'_>,
    global_path: &Path,
    keys: &[Vec<u8>],
    cache: usize,
) -> Result<()> {
    let expect = Expect {
        kind: KIND_GLOBAL,
        uuid: None,
        region: None,
    };
    partition::probe(storage, global_path, &expect, false, cache, |txn| {
        let corrupt = |e: &dyn std::fmt::Display| Error::corrupt("global", e.to_string());
        let Some(t) = partition::table_if_exists(txn, UNIQUE).map_err(|e| corrupt(&e))? else {
            return Ok(());
        };
        for k in keys {
            if let Some(v) = t.get(k.as_slice()).map_err(|e| corrupt(&e))?
                && Entry::decode(v.value()).is_none()
            {
                return Err(Error::corrupt("global", "undecodable unique entry"));
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Refuses a region file older than what the global index has seen of it: its last
/// unique write (`last_txn` in its meta) must be at least the newest the index reflects.
/// An older copy (a volume restored from a backup) would leave the index naming records
/// the file does not hold, or values it released.
fn check_not_stale(
    txn: &redb::ReadTransaction,
    path: &Path,
    name: &str,
    seen: Option<u128>,
) -> Result<()> {
    let Some(seen) = seen else { return Ok(()) };
    let meta = txn
        .open_table(META)
        .map_err(|e| Error::corrupt(name, e.to_string()))?;
    let last = meta
        .get(META_LAST_TXN)
        .map_err(|e| Error::corrupt(name, e.to_string()))?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map_or(0, u128::from_le_bytes);
    if last < seen {
        return Err(Error::mismatch(
            path,
            format!(
                "the file of region `{name}` is older than the store's unique index (its last \
                 unique write is txn {}, the index has seen txn {}): it was restored from an \
                 older copy. Put the newer file back, or disable the region",
                crate::types::TxnId::from_u128(last),
                crate::types::TxnId::from_u128(seen)
            ),
        ));
    }
    Ok(())
}

/// The builder's region list, validated: (name, configured path or `None`) of the enabled
/// ones, and the names of the disabled ones.
type Listed = (Vec<(String, Option<PathBuf>)>, Vec<String>);

fn listed(b: &Builder) -> Result<Listed> {
    let mut seen = std::collections::HashSet::new();
    let mut open = Vec::new();
    let mut disabled = Vec::new();
    for spec in &b.regions {
        let name = match spec {
            RegionSpec::Open { name, .. } | RegionSpec::Disabled { name } => name,
        };
        check_region_name(name)?;
        if !seen.insert(name.clone()) {
            return Err(Error::Config(format!("region `{name}` is listed twice")));
        }
        match spec {
            RegionSpec::Open { name, path } => {
                if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(Error::invalid(format!(
                        "region `{name}` is given an empty path"
                    )));
                }
                open.push((name.clone(), path.clone()));
            }
            RegionSpec::Disabled { name } => disabled.push(name.clone()),
        }
    }
    Ok((open, disabled))
}

const GLOBAL_FILE: &str = "the global file";

/// Refuses two partitions on one file, a file inside another (its folder would be the
/// other file), and a file at another's temporary name (`<path>.creating`, which creating
/// that other partition removes).
///
/// When several pairs clash, the one reported is the first in this order: partitions
/// `a` in the list's order; for `a`, first a later partition on the same file, then the
/// first partition `b` (in the list's order) whose file is inside `a`'s or at `a`'s
/// temporary name. (That is the order of comparing every pair; the pairs are found
/// through maps instead, so that 1,000 regions cost 1,000 lookups, not a million
/// comparisons: see docs/design.md, "What grows with the store".)
fn check_paths(resolved: &[(String, PathBuf)]) -> Result<()> {
    let who = |n: &str| {
        if n == GLOBAL_FILE {
            n.to_owned()
        } else {
            format!("region `{n}`")
        }
    };
    // Every partition by its path (in the list's order).
    let mut at: HashMap<&Path, Vec<usize>> = HashMap::with_capacity(resolved.len());
    for (i, (_, p)) in resolved.iter().enumerate() {
        at.entry(p.as_path()).or_default().push(i);
    }
    // For each partition `a`, the partitions `b` whose path is strictly inside `a`'s
    // (`Path::starts_with` compares components, as `ancestors` yields them).
    let mut inside: HashMap<usize, Vec<usize>> = HashMap::new();
    for (j, (_, pb)) in resolved.iter().enumerate() {
        for anc in pb.ancestors().skip(1) {
            for &i in at.get(anc).into_iter().flatten() {
                inside.entry(i).or_default().push(j);
            }
        }
    }
    for (i, (a, pa)) in resolved.iter().enumerate() {
        if let Some(&j) = at[pa.as_path()].iter().find(|&&j| j > i) {
            return Err(Error::Config(format!(
                "{} and {} are given the same file {}",
                who(&resolved[j].0),
                who(a),
                pa.display()
            )));
        }
        let tmp = partition::creating_path(pa);
        let in_a = inside.get(&i).into_iter().flatten().copied();
        let at_tmp = at.get(tmp.as_path()).into_iter().flatten().copied();
        // A path is never both inside `pa` and `pa`'s sibling `<pa>.creating`.
        let Some(j) = in_a.chain(at_tmp).filter(|&j| j != i).min() else {
            continue;
        };
        let (b, pb) = &resolved[j];
        if pb.starts_with(pa) {
            return Err(Error::Config(format!(
                "{}'s file {} would be inside {}'s file {}",
                who(b),
                pb.display(),
                who(a),
                pa.display()
            )));
        }
        return Err(Error::Config(format!(
            "{}'s file {} is the temporary name of {}'s file {}",
            who(b),
            pb.display(),
            who(a),
            pa.display()
        )));
    }
    Ok(())
}

/// A partition can be created at `path`: its folders can be made, and so can its
/// temporary file `<path>.creating`, which must not exist unless `resume` (an earlier
/// attempt at this same creation left it; creating removes it).
fn check_creatable(storage: ReadOnly<'_>, path: &Path, resume: bool) -> Result<()> {
    let tmp = partition::creating_path(path);
    storage.check_creatable(path).map_err(io(path))?;
    storage.check_creatable(&tmp).map_err(io(&tmp))?;
    if !resume && storage.open(&tmp).map_err(io(&tmp))?.is_some() {
        return Err(Error::Config(format!(
            "{} exists: it is the temporary name for creating {}, and this store did not \
             make it (another store's file?); move it away",
            tmp.display(),
            path.display()
        )));
    }
    Ok(())
}

pub(super) fn plan(b: &Builder, dir: &Path) -> Result<OpenPlan> {
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid("the store's folder is an empty path"));
    }
    let storage = super::storage_of(b);
    // Everything below reaches storage through `ro` only: it cannot write.
    let ro = ReadOnly::new(&*storage);
    let (open_specs, disabled) = listed(b)?;
    // The budget first: a refusal that depends on nothing but the builder.
    budget::check(b.cache_bytes, 1 + open_specs.len())?;
    let look = budget::look_cache(b.cache_bytes);
    let global_path = crate::layout::global_file(dir);

    // Paths: one file each, none the global file's; then hold them in this process.
    let mut resolved: Vec<(String, PathBuf)> =
        vec![(GLOBAL_FILE.into(), resolve(ro, &global_path)?)];
    for (name, given) in &open_specs {
        resolved.push((name.clone(), resolve(ro, &path_of(dir, name, given))?));
    }
    check_paths(&resolved)?;
    let all_paths: Vec<PathBuf> = resolved.iter().map(|(_, p)| p.clone()).collect();
    let registration = Arc::new(Registration::acquire(ro, &all_paths)?);

    let (state, global_verified) = probe_global(b, ro, &global_path, &open_specs, &disabled, look)?;
    let global_bytes = file_len(ro, &global_path)?;
    let empty = HashMap::new();
    let stored = state.as_ref().map_or(&empty, |s| &s.catalog);
    check_listing(stored, &open_specs, &disabled)?;

    // The files of regions not opened now (disabled) are this store's too: no region may
    // be given one of them, or a name that collides with one.
    for (name, e) in stored {
        if e.created && !open_specs.iter().any(|(n, _)| n == name) {
            let p = path_of(dir, name, &e.path);
            resolved.push((name.clone(), resolve(ro, &p)?));
        }
    }
    check_paths(&resolved)?;

    let mut plan = OpenPlan {
        storage: storage.clone(),
        dir: dir.to_owned(),
        global_path,
        budget: CacheBudget {
            total: b.cache_bytes,
            look,
            partitions: Vec::new(),
        },
        regions: Vec::new(),
        reserve: CatalogChanges::default(),
        finish: CatalogChanges::default(),
        catalog: stored
            .iter()
            .filter(|(_, e)| e.created)
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect(),
        default: String::new(),
        registration,
        state: None,
        marker_keys: Vec::new(),
        verified: Vec::new(),
        reserved: Vec::new(),
    };
    if global_verified {
        plan.verified.push("global".into());
    }
    let mut next = state.as_ref().map_or(1, |s| s.next_region);
    for (name, given) in &open_specs {
        let region = match stored.get(name) {
            Some(e) => plan_known(b, ro, &mut plan, state.as_ref(), name, given, e)?,
            None => plan_new(ro, &mut plan, state.is_some(), &mut next, name, given)?,
        };
        if stored.get(name) != Some(&region.entry) {
            plan.finish.rows.push((name.clone(), region.entry.clone()));
        }
        plan.catalog.insert(name.clone(), region.entry.clone());
        plan.regions.push(region);
    }
    for name in &disabled {
        plan_disable(ro, &mut plan, state.as_ref(), name, &stored[name]);
    }
    let stored_default = state.as_ref().and_then(|s| s.default_region.clone());
    plan.default = choose_default(b, stored_default.as_deref(), &open_specs, &disabled)?;
    if stored_default.as_deref() != Some(plan.default.as_str()) {
        plan.finish.default = Some(plan.default.clone());
    }
    if !plan.marker_keys.is_empty() {
        check_marker_entries(ro, &plan.global_path, &plan.marker_keys, look)?;
    }
    // Disabled regions take no share: only open files have a cache.
    let names = std::iter::once("global".to_owned())
        .chain(plan.regions.iter().map(|r| r.name.clone()))
        .collect();
    let sizes: Vec<u64> = std::iter::once(global_bytes)
        .chain(plan.regions.iter().map(|r| r.file_bytes))
        .collect();
    plan.budget = budget::split(b.cache_bytes, names, &sizes)?;
    plan.reserved = reserve_handles(ro, &plan, state.is_some())?;
    plan.state = state;
    Ok(plan)
}

/// The descriptors `apply` will need, taken now: one read-only handle on each file it
/// opens (the global file, every existing region file) and, for each file it creates,
/// one more on the global file. `apply` opens the global file and the region files
/// read-write one after another, and redb writes a file's header as it opens it, so a
/// process descriptor limit met half-way would refuse the open after it changed the first
/// files. Holding them here meets the limit before any write: `Error::Io` naming the file
/// that could not be opened, every byte as it was. (A new store has no file to hold yet:
/// a limit met while creating its files stops the open as a crash at that step would,
/// and the next open completes it.)
fn reserve_handles(
    ro: ReadOnly<'_>,
    plan: &OpenPlan,
    global_exists: bool,
) -> Result<Vec<Box<dyn redb::StorageBackend>>> {
    let mut held = Vec::new();
    if !global_exists {
        return Ok(held);
    }
    let existing = plan
        .regions
        .iter()
        .filter(|r| r.step != FileStep::Create)
        .map(|r| r.path.as_path());
    let created = plan
        .regions
        .iter()
        .filter(|r| r.step == FileStep::Create)
        .map(|_| plan.global_path.as_path());
    for path in std::iter::once(plan.global_path.as_path())
        .chain(existing)
        .chain(created)
    {
        if let Some(h) = ro.open(path).map_err(io(path))? {
            held.push(h);
        }
    }
    Ok(held)
}

fn path_of(dir: &Path, name: &str, given: &Option<PathBuf>) -> PathBuf {
    given.clone().unwrap_or_else(|| default_path(dir, name))
}

fn resolve(storage: ReadOnly<'_>, p: &Path) -> Result<PathBuf> {
    storage.resolve(p).map_err(io(p))
}

/// The size of the file at `p`, 0 if there is none.
fn file_len(storage: ReadOnly<'_>, p: &Path) -> Result<u64> {
    match storage.open(p).map_err(io(p))? {
        Some(f) => f.len().map_err(io(p)),
        None => Ok(0),
    }
}

/// Reads the global partition (read-only, verified when asked or when it was not closed
/// cleanly); `None` for a new store, which must list a region and disable none. Also
/// whether every page of the file was checked.
fn probe_global(
    b: &Builder,
    storage: ReadOnly<'_>,
    global_path: &Path,
    open_specs: &[(String, Option<PathBuf>)],
    disabled: &[String],
    look: usize,
) -> Result<(Option<GlobalState>, bool)> {
    let expect_global = Expect {
        kind: KIND_GLOBAL,
        uuid: None,
        region: None,
    };
    let mut state: Option<GlobalState> = None;
    let found = partition::probe(
        storage,
        global_path,
        &expect_global,
        b.verify_on_open,
        look,
        |txn| {
            state = Some(read_global(txn)?);
            check_recoverable_global(txn)
        },
    )?;
    if found == Probe::Missing {
        if open_specs.is_empty() {
            return Err(Error::Config(
                "a new store needs at least one region (Builder::region)".into(),
            ));
        }
        if let Some(name) = disabled.first() {
            return Err(Error::RegionUnknown(name.clone()));
        }
        // `global.redb.creating` in the store's own folder can only be a crash-left
        // attempt at creating this store.
        check_creatable(storage, global_path, true)?;
    }
    if let (Some(k), Some(st)) = (b.digest_key, &state)
        && k != st.digest_key
    {
        return Err(Error::Config(
            "digest key differs from the one this store was created with".into(),
        ));
    }
    Ok((state, found == (Probe::Checked { verified: true })))
}

/// The catalog against the builder's list: every enabled region of the store is listed
/// (opened or disabled), and only existing regions are disabled.
fn check_listing(
    stored: &HashMap<String, CatalogEntry>,
    open_specs: &[(String, Option<PathBuf>)],
    disabled: &[String],
) -> Result<()> {
    for (name, entry) in stored {
        let listed = open_specs.iter().any(|(n, _)| n == name) || disabled.contains(name);
        if !listed && entry.enabled && entry.created {
            return Err(Error::Config(format!(
                "region `{name}` is in the store's catalog but not configured: list it with \
                 Builder::region or disable it with Builder::disable_region"
            )));
        }
    }
    for name in disabled {
        if !stored.get(name).is_some_and(|e| e.created) {
            return Err(Error::RegionUnknown(name.clone()));
        }
    }
    Ok(())
}

/// A region the catalog knows (created, or planned by an interrupted open): checks its
/// file (identity, integrity, staleness, digest key) and decides to open, adopt or create
/// it.
fn plan_known(
    b: &Builder,
    storage: ReadOnly<'_>,
    plan: &mut OpenPlan,
    state: Option<&GlobalState>,
    name: &str,
    given: &Option<PathBuf>,
    e: &CatalogEntry,
) -> Result<RegionPlan> {
    let look = plan.budget.look;
    let path = path_of(&plan.dir, name, given);
    let expect = Expect {
        kind: KIND_REGION,
        uuid: state.map(|s| s.uuid),
        region: Some((name.to_owned(), e.id)),
    };
    let key = state.map(|s| s.digest_key);
    let seen = state.and_then(|s| s.seen.get(&e.id)).copied();
    let mut marker_keys = Vec::new();
    let found = partition::probe(storage, &path, &expect, b.verify_on_open, look, |txn| {
        check_not_stale(txn, &path, name, seen)?;
        if let Some(key) = key {
            check_digest_key(txn, &key, name)?;
        }
        marker_keys = check_recoverable_region(txn, name)?;
        Ok(())
    })?;
    plan.marker_keys.extend(marker_keys);
    if found == (Probe::Checked { verified: true }) {
        plan.verified.push(name.to_owned());
    }
    let step = match (found, e.created) {
        (Probe::Checked { .. }, true) => FileStep::Open,
        (Probe::Checked { .. }, false) => FileStep::Adopt,
        (Probe::Missing, false) => {
            // This open resumes the creation an earlier one planned: a `.creating` file
            // there is that attempt's.
            check_creatable(storage, &path, e.path == *given)?;
            FileStep::Create
        }
        (Probe::Missing, true) => {
            return Err(Error::Config(format!(
                "the file of region `{name}` is missing at {} (it was created before); \
                 restore it, give its path with Builder::region_at, or disable the region",
                path.display()
            )));
        }
    };
    let file_bytes = match step {
        FileStep::Create => 0,
        FileStep::Open | FileStep::Adopt => file_len(storage, &path)?,
    };
    if !e.enabled {
        plan.finish.thawed.push(e.id);
    }
    if state.is_some_and(|s| s.doubtful.contains(&e.id)) {
        // `apply` makes the file durable (a synced commit) before this row goes.
        plan.finish.settled_doubtful.push(e.id);
    }
    Ok(RegionPlan {
        name: name.to_owned(),
        path,
        entry: created_entry(e.id, given),
        step,
        file_bytes,
    })
}

/// A region new to this store: it must have no file yet; its id is reserved (a row not
/// yet created) before its file is made.
fn plan_new(
    storage: ReadOnly<'_>,
    plan: &mut OpenPlan,
    store_exists: bool,
    next: &mut u16,
    name: &str,
    given: &Option<PathBuf>,
) -> Result<RegionPlan> {
    let path = path_of(&plan.dir, name, given);
    // A file found there belongs to something else.
    if storage.open(&path).map_err(io(&path))?.is_some() {
        let why = if store_exists {
            format!("region `{name}` is new to this store, but a file exists there")
        } else {
            // A region file without its global partition belongs to another store (or to
            // one whose global file was lost): never adopt it.
            format!(
                "region `{name}` file exists but {} does not",
                plan.global_path.display()
            )
        };
        return Err(Error::mismatch(&path, why));
    }
    check_creatable(storage, &path, false)?;
    if *next == u16::MAX {
        return Err(Error::Config("no region ids left".into()));
    }
    let id = *next;
    *next += 1;
    plan.reserve.next_region = Some(*next);
    plan.reserve.rows.push((
        name.to_owned(),
        CatalogEntry {
            id,
            enabled: true,
            created: false,
            path: given.clone(),
        },
    ));
    Ok(RegionPlan {
        name: name.to_owned(),
        path,
        entry: created_entry(id, given),
        step: FileStep::Create,
        file_bytes: 0,
    })
}

/// The catalog row of a region open after this open.
fn created_entry(id: u16, given: &Option<PathBuf>) -> CatalogEntry {
    CatalogEntry {
        id,
        enabled: true,
        created: true,
        path: given.clone(),
    }
}

/// A region disabled by this open: records its record counts (for limits that span
/// regions) if its file can be read and holds what it durably holds; otherwise limited
/// accounts allowed there cannot grow.
fn plan_disable(
    storage: ReadOnly<'_>,
    plan: &mut OpenPlan,
    state: Option<&GlobalState>,
    name: &str,
    e: &CatalogEntry,
) {
    let look = plan.budget.look;
    if !e.enabled {
        return;
    }
    let path = path_of(&plan.dir, name, &e.path);
    let mut counts = None;
    let expect = Expect {
        kind: KIND_REGION,
        uuid: state.map(|s| s.uuid),
        region: Some((name.to_owned(), e.id)),
    };
    // A doubtful file's live image may hold a commit a power loss undoes, and so may any
    // file after the store was not closed cleanly (the doubtful mark can fail with the
    // global file): its counts are not what it durably holds, so they stay unknown. So
    // are a stale file's (an older copy of the region: it may hold fewer records than the
    // region really has).
    let doubtful = state.is_some_and(|s| s.doubtful.contains(&e.id) || !s.clean_close);
    let seen = state.and_then(|s| s.seen.get(&e.id)).copied();
    if !doubtful {
        let _ = partition::probe(storage, &path, &expect, false, look, |txn| {
            check_not_stale(txn, &path, name, seen)?;
            counts = Some(region_usage(txn, name)?);
            Ok(())
        });
    }
    let e = CatalogEntry {
        enabled: false,
        ..e.clone()
    };
    plan.finish.rows.push((name.to_owned(), e.clone()));
    plan.finish.frozen.push((e.id, counts));
    plan.catalog.insert(name.to_owned(), e);
}

/// The default region: always one that is enabled after this open.
fn choose_default(
    b: &Builder,
    stored_default: Option<&str>,
    open_specs: &[(String, Option<PathBuf>)],
    disabled: &[String],
) -> Result<String> {
    let enabled = |n: &str| open_specs.iter().any(|(o, _)| o == n);
    let is_disabled = |n: &str| disabled.iter().any(|d| d == n);
    Ok(match (b.default_region.as_deref(), stored_default) {
        (Some(d), _) if enabled(d) => d.to_owned(),
        (Some(d), _) if is_disabled(d) => {
            return Err(Error::Config(format!(
                "region `{d}` cannot be both the default region and disabled"
            )));
        }
        (Some(d), _) => return Err(Error::RegionUnknown(d.to_owned())),
        (None, Some(d)) if enabled(d) => d.to_owned(),
        (None, Some(d)) if is_disabled(d) => {
            return Err(Error::Config(format!(
                "region `{d}` is the store's default region and cannot be disabled: name \
                 another default with Builder::default_region"
            )));
        }
        _ => match open_specs.first() {
            Some((n, _)) => n.clone(),
            None => return Err(Error::Config("no region is enabled".into())),
        },
    })
}
