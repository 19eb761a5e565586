//! Phase 2 of open: carry out an [`OpenPlan`] in steps that a crash or an I/O error can
//! interrupt anywhere, then run recovery.
//!
//! 1. Open the global file read-write (or create a new store's), then every existing
//!    region file (over a few threads: see `parallel`): each takes its lock before
//!    anything is written to the catalog.
//! 2. Record the ids of new regions as rows not yet created (synced).
//! 3. Create each new region file (built under `<path>.creating`, synced, renamed).
//! 4. Record the rest in one synced commit: created and enabled flags, paths, frozen
//!    counts, the default.
//! 5. Recovery.
//!
//! Interrupted before 4, the store still opens with its previous configuration (rows not
//! created are ignored unless listed) and the new one completes at its next open (a file
//! made in step 3 is adopted: its meta names this store, region and id). After 4, the new
//! configuration is the store's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};

use super::plan::{FileStep, OpenPlan};
use crate::account::RoutingCache;
use crate::builder::Builder;
use crate::db::{Db, Inner, Options, Usage};
use crate::error::{Error, Result};
use crate::partition::catalog::{CatalogChanges, GlobalState, read_global, write_catalog};
use crate::partition::contain::{Blame, contain_any};
use crate::partition::global::CatalogEntry;
use crate::partition::region::region_usage;
use crate::partition::set::{Region, RegionSet, RegionSlot};
use crate::partition::{self, Expect, Partition};
use crate::reservation::coordinator::{CheckpointBudget, Coordinator};
use crate::reservation::recovery;
use crate::schema::*;
use crate::types::RegionId;

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Io {
        path: std::path::PathBuf::from("<random>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(b)
}

pub(super) fn apply(plan: OpenPlan, b: &Builder) -> Result<Db> {
    let OpenPlan {
        storage,
        dir,
        global_path,
        budget,
        state,
        regions: planned,
        reserve,
        finish,
        catalog,
        default,
        registration,
        marker_keys: _,
        verified,
        reserved,
    } = plan;

    // Every step that reads or writes a partition runs contained: a damaged page that the
    // probe did not meet (it reads what recovery reads, but writes go further: redb's
    // freed-page trees) makes redb panic, which refuses the open with `Error::Corrupt`
    // naming the partition, like any other damage found late. Steps before 4 leave the
    // store as a crash there would, and recovery settles it at the next open.

    // 1. The global file, then the existing region files.
    let looks = partition::Looks::new(budget.look);
    // `budget.partitions` is `global`, then `planned` in order.
    let cache_of = |i: usize| budget.partitions[i].bytes;
    // The descriptors the plan held for the opens below (`reserve_handles`).
    drop(reserved);
    let (global, state) = open_global(&storage, &global_path, cache_of(0), &looks, state, b)?;
    let expect = |name: &str, id: u16| Expect {
        kind: KIND_REGION,
        uuid: Some(state.uuid),
        region: Some((name.to_owned(), id)),
    };
    // Over a few threads (`parallel`): each open is mostly redb's fsync of the file's
    // header; the error reported is the one the first failing file (in order) gives.
    let existing: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].step != FileStep::Create)
        .collect();
    let opened = super::parallel::in_order(
        existing.len(),
        |k| planned[existing[k]].name.clone(),
        |k| {
            let i = existing[k];
            let r = &planned[i];
            let exp = expect(&r.name, r.entry.id);
            let p = partition::open_rw(&storage, &r.path, &r.name, cache_of(i + 1), &looks, &exp)?;
            if finish.settled_doubtful.contains(&r.entry.id) {
                // A commit of unknown outcome may sit in the file's live image: one synced
                // commit makes what the file holds durable before the global forgets it.
                p.contain(|| {
                    let w = p.begin_write()?;
                    p.commit(w)
                })?;
            }
            Ok(p)
        },
    );
    let mut parts: HashMap<String, Partition> = HashMap::new();
    for (k, p) in opened.into_iter().enumerate() {
        parts.insert(planned[existing[k]].name.clone(), p?);
    }

    // 2. Ids of new regions, durable before their files exist: ids are assigned once.
    if !reserve.is_empty() {
        global.contain(|| write_catalog(&global, &reserve))?;
    }

    // 3. New region files.
    for (i, r) in planned.iter().enumerate() {
        if r.step != FileStep::Create {
            continue;
        }
        let mut meta = partition::base_meta(state.uuid, KIND_REGION);
        meta.push((META_REGION_NAME, r.name.as_bytes().to_vec()));
        meta.push((META_REGION_ID, r.entry.id.to_le_bytes().to_vec()));
        let p = partition::create_new(&storage, &r.path, &r.name, cache_of(i + 1), &looks, &meta)?;
        parts.insert(r.name.clone(), p);
    }

    // 4. The rest of the catalog.
    if !finish.is_empty() {
        global.contain(|| write_catalog(&global, &finish))?;
    }
    let mut regions: Vec<Arc<Region>> = Vec::new();
    for r in &planned {
        let Some(part) = parts.remove(&r.name) else {
            return Err(Error::corrupt(&r.name, "region partition not opened"));
        };
        regions.push(Arc::new(Region::new(
            RegionId(r.entry.id),
            part,
            registration.clone(),
        )));
    }

    // 5. Recovery.
    let names: HashMap<u16, String> = catalog.iter().map(|(n, e)| (e.id, n.clone())).collect();
    let all_open = catalog.values().all(|e| e.enabled);
    // Recovery reads the global index while it writes regions and back: a panic is blamed
    // on the partition whose file fails its page check (nothing else runs yet).
    let mut all: Vec<&Partition> = vec![&global];
    all.extend(regions.iter().map(|r| &r.part));
    let recovered = contain_any(&all, Blame::Verify, || {
        recovery::recover(&global, &regions, state.epoch, all_open, |id| {
            names.get(&id).cloned().unwrap_or_else(|| id.to_string())
        })
    })?;

    let frozen = frozen_counts(&state, &finish);
    let (usage, usage_unknown) = usage_totals(&regions, &catalog, &frozen)?;
    let mut set = region_set(&catalog, &regions, &default);
    set.usage_unknown = usage_unknown;

    let inner = Arc::new(Inner {
        dir,
        digest_key: state.digest_key,
        global,
        regions: RwLock::new(set),
        accounts: RoutingCache::new(b.routing_cache_bytes),
        usage: Mutex::new(usage),
        coord: Coordinator::new(
            recovered.epoch,
            CheckpointBudget {
                every: b.checkpoint_every,
                interval: b.checkpoint_interval,
            },
            all_open,
            recovered.unsettled,
            b.unique_cache_bytes,
        ),
        opts: Options {
            max_value: b.max_value,
            compact_on_close: b.compact_on_close,
        },
        closed: AtomicBool::new(false),
        closed_clean: AtomicBool::new(false),
        writers: RwLock::new(()),
        timer: Default::default(),
        recovery: recovered.report,
        verified_at_open: verified,
        cache_budget: budget,
        _registration: registration,
    });
    inner
        .timer
        .start(Arc::downgrade(&inner), b.checkpoint_interval);
    Ok(Db { inner })
}

/// Opens the global file read-write, or creates a new store's (fresh UUID and digest key,
/// counters at their start) when `state` is `None`.
fn open_global(
    storage: &Arc<dyn crate::backends::Storage>,
    path: &std::path::Path,
    cache: usize,
    looks: &partition::Looks,
    state: Option<GlobalState>,
    b: &Builder,
) -> Result<(Partition, GlobalState)> {
    let expect_global = Expect {
        kind: KIND_GLOBAL,
        uuid: None,
        region: None,
    };
    if let Some(state) = state {
        let p = partition::open_rw(storage, path, "global", cache, looks, &expect_global)?;
        return Ok((p, state));
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
    let p = partition::create_new(storage, path, "global", cache, looks, &meta)?;
    let state = p.contain(|| read_global(&p.begin_read()?))?;
    Ok((p, state))
}

/// The record counts of disabled regions after this open, as `_frozen_usage` now holds
/// them: per (region, account), and the regions whose counts are known.
struct Frozen {
    counts: HashMap<(u16, u64), u64>,
    known: HashSet<u16>,
}

fn frozen_counts(state: &GlobalState, finish: &CatalogChanges) -> Frozen {
    let mut counts = state.frozen.clone();
    let mut known = state.frozen_known.clone();
    for (r, got) in &finish.frozen {
        counts.retain(|(fr, _), _| fr != r);
        known.remove(r);
        if let Some(got) = got {
            known.insert(*r);
            for (a, n) in got {
                counts.insert((*r, *a), *n);
            }
        }
    }
    for r in &finish.thawed {
        counts.retain(|(fr, _), _| fr != r);
        known.remove(r);
    }
    Frozen { counts, known }
}

/// Usage counters, for limits that span regions: open regions from their files, disabled
/// ones from the counts recorded when they were disabled. Also the disabled regions whose
/// counts are unknown.
fn usage_totals(
    regions: &[Arc<Region>],
    catalog: &HashMap<String, CatalogEntry>,
    frozen: &Frozen,
) -> Result<(HashMap<u64, Usage>, HashSet<u16>)> {
    let mut usage: HashMap<u64, Usage> = HashMap::new();
    for r in regions {
        let counts = r
            .part
            .contain(|| region_usage(&r.part.begin_read()?, &r.part.name))?;
        for (account, records) in counts {
            usage.entry(account).or_default().records += records;
        }
    }
    let mut unknown = HashSet::new();
    for e in catalog.values().filter(|e| !e.enabled) {
        if !frozen.known.contains(&e.id) {
            unknown.insert(e.id);
        }
    }
    for ((r, account), records) in &frozen.counts {
        if catalog.values().any(|e| e.id == *r && !e.enabled) {
            usage.entry(*account).or_default().records += records;
        }
    }
    Ok((usage, unknown))
}

/// The region set of the running store: every catalog region by id, open or disabled.
fn region_set(
    catalog: &HashMap<String, CatalogEntry>,
    regions: &[Arc<Region>],
    default: &str,
) -> RegionSet {
    let mut set = RegionSet::default();
    for (name, e) in catalog {
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
    set.default = catalog[default].id;
    set
}
