//! The unique-index cache and `View`: lookups answered from memory are never older than a
//! commit that returned (in any thread), the budget holds, hits and misses are counted, a
//! failed commit leaves no stale entry; a `View` reuses its snapshots and still finds
//! values claimed after it was taken.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::sim::{claim, quiet_builder, remove, sim_global};
use common::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};

const DIR: &str = "/cache";

fn open_with(sim: &SimStorage, cache: usize) -> Db {
    quiet_builder(sim)
        .region("us")
        .region("eu")
        .unique_cache_size(cache)
        .open(DIR)
        .expect("open")
}

fn two(db: &Db) -> (AccountId, AccountId) {
    let ids = db
        .create_accounts([NewAccount::new("a", "eu"), NewAccount::new("b", "us")])
        .unwrap();
    (ids[0], ids[1])
}

fn owner(db: &Db, v: &str) -> Option<AccountId> {
    db.find_unique(&T, "email", v).unwrap().map(|h| h.account())
}

#[test]
fn a_cached_lookup_sees_every_commit_that_returned() {
    for cache in [16 << 20, 0] {
        let sim = SimStorage::new();
        let db = open_with(&sim, cache);
        let (a, b) = two(&db);
        // Warm the cache with "free", then with each owner, and change it each time.
        assert!(!db.is_taken("email", "v@x").unwrap());
        assert_eq!(owner(&db, "v@x"), None);
        claim(&db, a, "eu", b"ka", "v@x").unwrap();
        assert!(db.is_taken("email", "v@x").unwrap());
        assert_eq!(owner(&db, "v@x"), Some(a));
        assert_eq!(owner(&db, "v@x"), Some(a));
        remove(&db, a, "eu", b"ka").unwrap();
        assert_eq!(owner(&db, "v@x"), None);
        assert!(!db.is_taken("email", "v@x").unwrap());
        claim(&db, b, "us", b"kb", "v@x").unwrap();
        assert_eq!(owner(&db, "v@x"), Some(b));
        // A checkpoint drops tombstones: still the same answers.
        remove(&db, b, "us", b"kb").unwrap();
        db.checkpoint().unwrap();
        db.checkpoint().unwrap();
        assert!(!db.is_taken("email", "v@x").unwrap());
        let s = db.stats();
        if cache == 0 {
            assert_eq!((s.unique_cache_hits, s.unique_cache_entries), (0, 0));
        } else {
            assert!(s.unique_cache_hits > 0, "{s:?}");
            assert!(s.unique_cache_misses > 0, "{s:?}");
        }
    }
}

#[test]
fn lookups_racing_commits_never_keep_an_outdated_entry() {
    // A writer moves one value between two accounts; after each commit returns, a checker
    // thread must see the new state although reader threads keep filling the cache from
    // snapshots that may predate the commit.
    let sim = SimStorage::new();
    let db = open_with(&sim, 1 << 20);
    let (a, b) = two(&db);
    let stop = AtomicBool::new(false);
    let (to_checker, steps) = mpsc::channel::<(usize, Option<AccountId>)>();
    let (to_writer, acks) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let view = db.view().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let _ = db.is_taken("email", "moving@x");
                    let _ = view.find_unique(&T, "email", "moving@x");
                }
            });
        }
        let db_ref = &db;
        let checker = s.spawn(move || {
            let db = db_ref;
            let view = db.view().unwrap();
            for (step, want) in steps {
                assert_eq!(
                    db.is_taken("email", "moving@x").unwrap(),
                    want.is_some(),
                    "step {step}"
                );
                let got = view
                    .find_unique(&T, "email", "moving@x")
                    .unwrap()
                    .map(|h| h.account());
                assert_eq!(
                    got, want,
                    "step {step}: a lookup older than a commit that returned"
                );
                to_writer.send(()).unwrap();
            }
        });
        // Stops the readers even if the checker or the writer fails (no hang).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for step in 0..1_000 {
            let (who, region, key) = if step % 4 < 2 {
                (a, "eu", b"ka")
            } else {
                (b, "us", b"kb")
            };
            let want = if step % 2 == 0 {
                claim(&db, who, region, key, "moving@x").unwrap();
                Some(who)
            } else {
                remove(&db, who, region, key).unwrap();
                None
            };
            to_checker.send((step, want)).unwrap();
            if acks.recv_timeout(Duration::from_secs(60)).is_err() {
                break; // the checker failed: its panic is reported by the join
            }
        }
        drop(to_checker);
        checker.join().unwrap();
    });
    assert!(db.stats().unique_cache_hits > 0);
}

#[test]
fn the_cache_stays_within_its_budget() {
    let budget = 64 << 10;
    let sim = SimStorage::new();
    let db = open_with(&sim, budget);
    let (a, _) = two(&db);
    let mut w = db.write(a).unwrap();
    for i in 0..2_000u32 {
        let v = format!("user{i}@example.com");
        w.insert_unique(&T, i.to_be_bytes(), b"x", &[Unique::new("email", &v)])
            .unwrap();
    }
    w.commit().unwrap();
    for round in 0..2 {
        for i in 0..2_000u32 {
            let v = format!("user{i}@example.com");
            assert_eq!(owner(&db, &v), Some(a), "round {round}, {v}");
            assert!(!db.is_taken("email", format!("free{i}")).unwrap());
        }
        let s = db.stats();
        assert!(s.unique_cache_bytes <= budget, "{s:?}");
        assert!(
            s.unique_cache_entries > 100,
            "the cache keeps almost nothing: {s:?}"
        );
    }
}

#[test]
fn a_failed_commit_leaves_no_stale_entry() {
    // The claim's Reserve (global) fails: the value stays free, whatever was cached.
    let sim = SimStorage::new();
    let db = open_with(&sim, 1 << 20);
    let (a, b) = two(&db);
    claim(&db, b, "us", b"warm", "warm@x").unwrap(); // the region is dirty: Reserves unsynced
    assert!(!db.is_taken("email", "f@x").unwrap()); // cached as free
    sim.fail_file_after(sim_global(DIR), 0, FaultOn::Any);
    let r = claim(&db, a, "eu", b"k", "f@x");
    assert!(r.is_err(), "{r:?}");
    sim.clear_fault();
    match db.is_taken("email", "f@x") {
        Ok(taken) => assert!(!taken, "the failed claim is cached as taken"),
        Err(e) => panic!("is_taken after a failed claim: {e}"),
    }
    assert_eq!(owner(&db, "f@x"), None);
    // What was cached before the failure and not touched by it still answers.
    assert_eq!(owner(&db, "warm@x"), Some(b));
}

#[test]
fn a_view_reuses_its_snapshots_and_still_finds_new_owners() {
    let sim = SimStorage::new();
    let db = open_with(&sim, 1 << 20);
    let (a, b) = two(&db);
    claim(&db, a, "eu", b"k1", "one@x").unwrap();
    let mut view = db.view().unwrap();
    assert_eq!(&*view.get(a, &T, b"k1").unwrap().unwrap(), b"x");
    // Written after the view took its eu snapshot.
    claim(&db, a, "eu", b"k2", "two@x").unwrap();
    assert!(
        view.get(a, &T, b"k2").unwrap().is_none(),
        "get reads at the view's snapshot"
    );
    let hit = view
        .find_unique(&T, "email", "two@x")
        .unwrap()
        .expect("claimed before the call");
    assert_eq!((hit.account(), hit.key()), (a, &b"k2"[..]));
    view.refresh();
    assert!(view.get(a, &T, b"k2").unwrap().is_some());
    // Isolation: a view reads an account's own home region only.
    claim(&db, b, "us", b"k1", "bee@x").unwrap();
    view.refresh();
    assert_eq!(&*view.get(b, &T, b"k1").unwrap().unwrap(), b"x");
    assert!(view.get(b, &T, b"k2").unwrap().is_none());
    assert!(matches!(
        view.get(AccountId::from_raw(999), &T, b"k1"),
        Err(Error::AccountUnknown(_))
    ));
    // A value whose record was removed after the view took its snapshot: not found.
    remove(&db, a, "eu", b"k1").unwrap();
    assert!(view.find_unique(&T, "email", "one@x").unwrap().is_none());
    db.close().unwrap();
    assert!(matches!(
        view.find_unique(&T, "email", "two@x"),
        Err(Error::Closed)
    ));
}

#[test]
fn the_routing_cache_stays_within_its_budget_and_every_account_still_routes() {
    let budget = 8 << 10;
    let sim = SimStorage::new();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .routing_cache_size(budget)
        .open(DIR)
        .unwrap();
    let ids = db
        .create_accounts((0..2_000).map(|i| NewAccount::new(format!("t{i}"), ["us", "eu"][i % 2])))
        .unwrap();
    let s = db.stats();
    assert!(s.routing_cache_bytes <= budget, "{s:?}");
    let mut w = db.write(ids[1_999]).unwrap();
    w.insert(&T, b"k", b"x").unwrap();
    w.commit().unwrap();
    for round in 0..2 {
        for (i, id) in ids.iter().enumerate() {
            let a = db.account(*id).unwrap();
            assert_eq!(
                a.home(),
                db.region_id(["us", "eu"][i % 2]).unwrap(),
                "round {round}"
            );
            assert_eq!(
                db.read(*id).unwrap().get(&T, b"k").unwrap().is_some(),
                i == 1_999
            );
        }
        let s = db.stats();
        assert!(s.routing_cache_bytes <= budget, "{s:?}");
        assert!(s.routing_cache_entries > 10, "{s:?}");
        assert!(
            s.routing_cache_misses > 0 && s.routing_cache_hits > 0,
            "{s:?}"
        );
    }
    // Turned off: every lookup reads the global file, and still routes.
    drop(db);
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .routing_cache_size(0)
        .open(DIR)
        .unwrap();
    assert!(
        db.read(ids[1_999])
            .unwrap()
            .get(&T, b"k")
            .unwrap()
            .is_some()
    );
    assert_eq!(db.stats().routing_cache_entries, 0);
}
