//! Where partition files live: the layout of a store's folder, region ids stable across
//! reopens, and region paths that collide with other files (`P` and `P.creating`, a region
//! under the global file, another store's region, paths too long) are refused without
//! changing any byte or losing any region.

mod common;

use common::T;
use common::files::*;
use common::refusal::{Env, Expect, Refusal, exists, run_refusals};
use common::sim::open_us_eu_sim;
use regionkv::layout::{global_file, region_file};
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Storage};
use std::path::Path;

// ======================================================================================
// Opening, reopening, the region catalog, wrong-partition files and
// disabled regions, through the public API only.
// ======================================================================================

#[test]
fn files_are_laid_out_as_designed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let eu_file = elsewhere.path().join("mnt-eu").join("regionkv-eu.redb");
    let db = Db::builder()
        .region("us")
        .region_at("eu", &eu_file)
        .open(dir.path())
        .unwrap();
    let acme = db.create_account(NewAccount::new("acme", "eu")).unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert(&NOTES, b"k", b"v").unwrap();
    w.commit().unwrap();
    db.close().unwrap();
    assert!(global_file(dir.path()).is_file());
    assert!(region_file(dir.path(), "us").is_file());
    assert!(eu_file.is_file());
    assert!(!region_file(dir.path(), "eu").exists());

    // Reopening with the same explicit path finds the data.
    let db = Db::builder()
        .region("us")
        .region_at("eu", &eu_file)
        .open(dir.path())
        .unwrap();
    assert_eq!(
        &*db.read(acme).unwrap().get(&NOTES, b"k").unwrap().unwrap(),
        b"v"
    );
}

/// Opens the store at `dir` with regions `enabled` (in that order) and `disabled`.
fn open_with(dir: &Path, enabled: &[&str], disabled: &[&str]) -> Db {
    let mut b = Db::builder();
    for r in enabled {
        b = b.region(*r);
    }
    for r in disabled {
        b = b.disable_region(*r);
    }
    b.open(dir)
        .unwrap_or_else(|e| panic!("open with {enabled:?}, {disabled:?} disabled: {e}"))
}

fn ids(db: &Db) -> Vec<(String, u16, bool)> {
    let mut v: Vec<_> = db
        .regions()
        .into_iter()
        .map(|r| (r.name, r.id.get(), r.enabled))
        .collect();
    v.sort();
    v
}

#[test]
fn catalog_ids_stable_across_reopen_reorder_and_added_region() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let us = db.region_id("us").unwrap();
    let eu = db.region_id("eu").unwrap();
    assert_ne!(us, eu);
    assert_eq!(db.region_name(us).as_deref(), Some("us"));
    assert_eq!(db.region_name(eu).as_deref(), Some("eu"));
    assert_eq!(db.default_region(), us);
    let first = ids(&db);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|(_, _, enabled)| *enabled));
    assert!(matches!(db.region_id("ap"), Err(Error::RegionUnknown(_))));
    db.close().unwrap();

    // Reopen, same order.
    let db = open_us_eu(dir.path());
    assert_eq!(ids(&db), first);
    db.close().unwrap();

    // Reopen, other order, no default named: ids and the default stay.
    let db = reopen_eu_us(dir.path());
    assert_eq!(ids(&db), first);
    assert_eq!(db.default_region(), us);
    db.close().unwrap();

    // Add a region later: existing ids unchanged, the new one is new.
    let db = open_with(dir.path(), &["ap", "eu", "us"], &[]);
    assert_eq!(db.region_id("us").unwrap(), us);
    assert_eq!(db.region_id("eu").unwrap(), eu);
    let ap = db.region_id("ap").unwrap();
    assert_ne!(ap, us);
    assert_ne!(ap, eu);
    let with_ap = ids(&db);
    assert_eq!(with_ap.len(), 3);
    db.close().unwrap();

    // Every order of the three keeps every id.
    for order in [["us", "ap", "eu"], ["eu", "us", "ap"], ["ap", "us", "eu"]] {
        let db = open_with(dir.path(), &order, &[]);
        assert_eq!(ids(&db), with_ap, "order {order:?}");
        db.close().unwrap();
    }

    // Disabling a region keeps its id (listed as not enabled); re-enabling keeps it too.
    let db = open_with(dir.path(), &["us", "eu"], &["ap"]);
    let disabled: Vec<_> = with_ap
        .iter()
        .map(|(n, id, _)| (n.clone(), *id, n != "ap"))
        .collect();
    assert_eq!(ids(&db), disabled);
    db.close().unwrap();
    // A later region never reuses an id, even of a disabled region.
    let db = open_with(dir.path(), &["us", "eu", "sa"], &["ap"]);
    let sa = db.region_id("sa").unwrap();
    assert!(![us, eu, ap].contains(&sa));
    assert_eq!(db.region_id("ap").unwrap(), ap);
    db.close().unwrap();
}

// ======================================================================================
// hostile region paths: every refused open changes no byte and loses no region.
// ======================================================================================

/// Creates account `a` (home eu), whose record `k` of `T` holds `acknowledged`.
fn write_acknowledged(db: &Db) -> AccountId {
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, b"k", b"acknowledged").unwrap();
    w.commit().unwrap();
    a
}

/// Opens the store at `store` on `sim` with regions us and eu, eu at `eu_path`.
fn open_us_and_eu_at(sim: &SimStorage, store: &str, eu_path: &str) -> regionkv::Result<Db> {
    Db::builder()
        .storage(sim.clone())
        .region("us")
        .region_at("eu", eu_path)
        .open(store)
}

/// A store at `/s` on the simulated storage with eu at `eu_path` and account `a` of eu
/// holding an acknowledged record; closed.
fn sim_store_with_eu_at(env: &Env, store: &str, eu_path: &str) {
    let db = env
        .builder()
        .region("us")
        .region_at("eu", eu_path)
        .open(store)
        .unwrap();
    write_acknowledged(&db);
    db.close().unwrap();
}

/// The problems of a refused first open: each of `paths` that exists.
fn nothing_at(env: &Env, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| exists(env, Path::new(p)))
        .map(|p| format!("{p} exists after the refused open"))
        .collect()
}

#[test]
fn refused_region_paths_change_nothing() {
    let long = "x".repeat(250);
    let cases = [
        // Regression (fixed since): adding a region at P destroys the region living at
        //   P.creating.
        // I3: a region whose file is at `X.creating` (a legal `region_at` path) loses every
        // acknowledged record when a later open adds a region at `X`: `create_new(X)`
        // removes `X.creating` unconditionally before building the new file there.
        // Adding a region at "/s/vol/eu": its temporary name is eu's file. Refused,
        // untouched.
        Refusal::new(
            "adding a region at P while a region lives at P.creating",
            Env::sim,
            |env| {
                env.builder()
                    .region("us")
                    .region_at("eu", "/s/vol/eu.creating")
                    .region_at("ap", "/s/vol/eu")
                    .open("/s")
            },
            Expect::CONFIG,
        )
        .setup(|env| sim_store_with_eu_at(env, "/s", "/s/vol/eu.creating"))
        .after(|env| {
            // The store opens as it was, with eu's acknowledged record.
            let db = env
                .builder()
                .region("us")
                .region_at("eu", "/s/vol/eu.creating")
                .open("/s")
                .unwrap();
            let a = db.account_id("a").unwrap().expect("account a");
            let got = db.read(a).unwrap().get(&T, b"k").unwrap();
            assert_eq!(got.as_deref(), Some(&b"acknowledged"[..]));
            Vec::new()
        }),
        // Regression (fixed since): two new regions P and P.creating in one open lose one.
        // Same hole inside one open: two new regions, `sa` at `P.creating` listed before
        // `ap` at `P`. The open succeeded; `sa`'s file was deleted while it was open, so
        // everything written to it was lost at the next open. Now refused before anything
        // is created: no file may be lost later.
        Refusal::new(
            "two new regions at P.creating and P in one open",
            Env::sim,
            |env| {
                env.builder()
                    .region("us")
                    .region_at("sa", "/s/vol/x.creating")
                    .region_at("ap", "/s/vol/x")
                    .open("/s")
            },
            Expect::CONFIG,
        ),
        // Regression (fixed since): refused open of two new regions file vs folder changes
        //   bytes.
        // "A refused open changes no byte": two new regions whose paths conflict as file vs
        // folder (`new/x` and `new/x/y.redb`) pass every plan check one by one, then the
        // apply wrote the catalog and created `new/x` before failing on `new/x/y.redb`.
        Refusal::new(
            "two new regions at a file and under it as a folder",
            Env::real,
            |env| {
                env.builder()
                    .region("us")
                    .region_at("ap", env.at("new").join("x"))
                    .region_at("sa", env.at("new").join("x").join("y.redb"))
                    .open(env.root())
            },
            Expect::ConfigContaining("would be inside region `ap`'s file"),
        )
        .setup(|env| {
            env.builder()
                .region("us")
                .open(env.root())
                .unwrap()
                .close()
                .unwrap()
        }),
        // Regression (fixed since): refused new store region under global file changes
        //   bytes.
        // Same for a new store: a region under `<dir>/global.redb/` cannot be created (the
        // global file will be there), but the plan only checked each path against what
        // exists now. SimStorage has no folders (a file under a file's path is possible
        // there), yet the plan refuses it by path, as on real files.
        Refusal::new(
            "new store, region under the global file, simulated",
            Env::sim,
            |env| {
                env.builder()
                    .region("us")
                    .region_at("eu", "/n/global.redb/eu.redb")
                    .open("/n")
            },
            Expect::ConfigContaining("would be inside the global file's file"),
        )
        .after(|env| nothing_at(env, &["/n/global.redb", "/n/regions/us.redb"])),
        // Real files: a folder cannot be made where the global file is.
        Refusal::new(
            "new store, region under the global file",
            Env::real,
            |env| {
                env.builder()
                    .region("us")
                    .region_at("eu", env.at("global.redb").join("eu.redb"))
                    .open(env.root())
            },
            Expect::ConfigContaining("would be inside the global file's file"),
        ),
        // Regression (fixed since): new region at the catalog path of a disabled region is
        //   accepted.
        // The design: "two regions on one file ... are refused by name before anything
        // exists". eu lives at `/s2/vol/eu.redb` (region_at); its volume is unmounted, so
        // eu is disabled and its file is absent. A new region `ap` given eu's path was
        // accepted and created there: when the volume returns, eu's file and ap's are one
        // path (the store can no longer open both, and one of them hides the other).
        Refusal::new(
            "new region at the catalog path of a disabled region",
            Env::sim,
            |env| {
                env.builder()
                    .region("us")
                    .disable_region("eu")
                    .region_at("ap", "/s2/vol/eu.redb")
                    .open("/s2")
            },
            Expect::ConfigContaining("are given the same file"),
        )
        .setup(|env| {
            sim_store_with_eu_at(env, "/s2", "/s2/vol/eu.redb");
            // The volume goes away (the file is no longer at its path).
            env.sim_storage()
                .rename("/s2/vol/eu.redb".as_ref(), "/unmounted/eu.redb".as_ref())
                .unwrap();
        }),
        // Regression (fixed since): region path whose temporary name is too long fails
        //   after writing.
        // "A refused open leaves every byte as it was" (and the file-vs-folder case above,
        // about paths that pass the plan but fail in the apply): a region_at path whose
        // last component is 250 bytes passes every plan check (its folder exists and is
        // writable), but its temporary name `<path>.creating` is 259 bytes, over NAME_MAX
        // (255): the apply failed after it had already created the global file of a new
        // store. Refused now before anything exists, with the I/O error of the name.
        Refusal::new(
            "region path whose temporary name is too long",
            Env::real,
            |env| {
                env.builder()
                    .region("us")
                    .region_at("eu", env.at(&long))
                    .open(env.at("store"))
            },
            Expect::Refused {
                what: "Error::Io with kind InvalidFilename, for the `.creating` name",
                matches: |e| {
                    matches!(e, Error::Io { path, source }
                        if source.kind() == std::io::ErrorKind::InvalidFilename
                            && path.to_string_lossy().ends_with(".creating"))
                },
            },
        )
        .after(|env| {
            let store = env.at("store");
            nothing_at(env, &[&global_file(&store).to_string_lossy()])
        }),
    ];
    run_refusals(&cases);
}

// ======================================================================================
// region paths against the files of DISABLED regions.
// ======================================================================================

// Regression (fixed since): new region at p destroys the disabled region living at p
//   creating.
/// I3: the fix of the case "adding a region at P while a region lives at P.creating" (in
/// `refused_region_paths_change_nothing`) refuses a new region at `P` while a region living
/// at `P.creating` is *listed*. The plan's path checks only cover the regions this open enables, so with
/// that region disabled the open succeeds and `create_new(P)` removes `P.creating`: the
/// disabled region's file, with its acknowledged records. When the region is enabled
/// again its file is gone.
#[test]
fn new_region_at_p_destroys_the_disabled_region_living_at_p_creating() {
    let sim = SimStorage::new();
    let eu_path = "/s/vol/x.creating";
    let db = open_us_and_eu_at(&sim, "/s", eu_path).unwrap();
    let a = write_acknowledged(&db);
    db.close().unwrap();
    let eu_bytes = sim.live_bytes(eu_path);
    assert!(eu_bytes.is_some());

    // eu is disabled (its volume is slow, say); a new region is added at /s/vol/x.
    let r = Db::builder()
        .storage(sim.clone())
        .region("us")
        .disable_region("eu")
        .region_at("ap", "/s/vol/x")
        .open("/s")
        .map(drop);
    assert!(
        matches!(&r, Err(Error::Config(m)) if m.contains("is the temporary name of region `ap`")),
        "a new region at the path whose temporary name is the disabled eu's file: {r:?}"
    );
    assert_eq!(
        sim.live_bytes(eu_path).map(|b| b.len()),
        eu_bytes.map(|b| b.len()),
        "the disabled region's file at {eu_path} was removed by the open that added a region \
         at /s/vol/x"
    );
    // eu comes back with its acknowledged record.
    assert!(
        sim.live_bytes("/s/vol/x").is_none(),
        "the refused open created ap"
    );
    let db = open_us_and_eu_at(&sim, "/s", eu_path).expect("eu returns");
    let got = db.read(a).unwrap().get(&T, b"k").unwrap();
    assert_eq!(got.as_deref(), Some(&b"acknowledged"[..]));
}

// Regression (fixed since): new store with a region at p destroys another stores live
//   region at p creating.
/// I3, same root cause across stores: store A's region eu lives at `/sh/x.creating` and is
/// open; store B (another folder, same disk, same process) is created with a region at
/// `/sh/x`. B's plan checks temporary names only among its own paths, and the registry of
/// open files holds A's `/sh/x.creating`, not B's `/sh/x`: B's `create_new` removes A's
/// live region file. A's acknowledged record is gone at its next open.
#[test]
fn new_store_with_a_region_at_p_destroys_another_stores_live_region_at_p_creating() {
    let sim = SimStorage::new();
    let a_db = open_us_and_eu_at(&sim, "/A", "/sh/x.creating").unwrap();
    let acct = write_acknowledged(&a_db);

    let b_db = Db::builder()
        .storage(sim.clone())
        .region("us")
        .region_at("ap", "/sh/x")
        .open("/B")
        .map(drop);
    assert!(
        matches!(&b_db, Err(Error::Config(m)) if m.contains("/sh/x.creating exists")),
        "store B with a region at the path whose temporary name is store A's live eu: {b_db:?}"
    );
    assert!(
        sim.paths().iter().all(|p| !p.starts_with("/B")),
        "the refused open of store B created {:?}",
        sim.paths()
    );
    a_db.close().unwrap();
    let reopened = open_us_and_eu_at(&sim, "/A", "/sh/x.creating");
    let got = reopened.as_ref().map(|db| {
        db.read(acct)
            .unwrap()
            .get(&T, b"k")
            .unwrap()
            .map(|r| r.to_vec())
    });
    assert!(
        matches!(&got, Ok(Some(v)) if v == b"acknowledged"),
        "store A's acknowledged record after store B was created: {:?}",
        got.map_err(|e| e.to_string())
    );
}

// ======================================================================================
// A crash during the open that creates a region must not leave the
// region's `created` flag false forever (a later loss of its file would then be answered
// by silently creating an empty region).
// ======================================================================================

const DIR: &str = "/store";

#[test]
fn crash_while_creating_a_region_then_losing_its_file_is_refused() {
    let eu = region_file(Path::new(DIR), "eu");
    let mut problems = Vec::new();
    let mut points = 0;
    for n in 0..500u64 {
        let sim = SimStorage::new();
        {
            let db = Db::builder()
                .storage(sim.clone())
                .region("us")
                .open(DIR)
                .unwrap();
            let a = db.create_account(NewAccount::new("a", "us")).unwrap();
            let mut w = db.write(a).unwrap();
            w.insert(&T, b"k", b"v").unwrap();
            w.commit().unwrap();
            db.close().unwrap();
        }
        // The open that adds eu, with a fault after n storage operations, then a crash.
        sim.fail_after(n, FaultOn::Any);
        let first = open_us_eu_sim(&sim, DIR);
        let tripped = sim.fault_tripped();
        drop(first);
        sim.crash();
        points += 1;

        // The region's creation completes (or restarts) at the next open.
        match open_us_eu_sim(&sim, DIR) {
            Ok(db) => {
                let eu_id = db.region_id("eu").unwrap();
                assert!(
                    db.regions().iter().any(|r| r.id == eu_id && r.enabled),
                    "n={n}: eu open"
                );
                db.close().unwrap();
            }
            Err(e) => {
                problems.push(format!("n={n}: open after the crash: {e}"));
                continue;
            }
        }
        // eu was created: losing its file must be refused, never answered with a new,
        // empty eu.
        Storage::remove(&sim, &eu).unwrap();
        match open_us_eu_sim(&sim, DIR) {
            Err(Error::Config(msg)) if msg.contains("eu") => {}
            Err(e) => problems.push(format!(
                "n={n}: open with eu's file missing: {e} (expected Error::Config naming it)"
            )),
            Ok(db) => {
                problems.push(format!(
                    "n={n}: open with eu's file missing succeeded (eu silently recreated)"
                ));
                drop(db);
            }
        }
        if !tripped {
            break; // the fault lies beyond the open: every point was covered
        }
    }
    assert!(points > 1, "the sweep covered the open");
    assert!(problems.is_empty(), "{points} fault points: {problems:#?}");
}
