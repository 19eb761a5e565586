//! Races through real threads (bounded loops): one winner per contended value,
//! `find_unique` never misses a moving value, `close` keeps every acknowledged write,
//! `scan_all` racing `disable_region` does not deadlock, and a few seconds of sustained
//! load.

mod common;

use common::T;
use common::files::{diff_files, sim_snapshot};
use common::sim::{claim, open_us_eu_ap_sim, open_us_eu_sim, quiet_us_eu};
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, Error, NewAccount, Unique};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

// ======================================================================================
// 8 threads, accounts in 3 regions, all contending for the same 1,000 values: exactly
// one winner per value, losers see UniqueViolation (or a retryable Busy, retried), and a
// reopen shows the same owners.
// ======================================================================================

const VALUES: u32 = 1000;

const THREADS: usize = 8;

fn open(dir: &std::path::Path) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        .region("ap")
        .open(dir)
        .unwrap()
}

#[test]
fn eight_threads_one_winner_per_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let regions = ["us", "eu", "ap"];
    let accounts: Vec<AccountId> = (0..THREADS)
        .map(|i| {
            db.create_account(NewAccount::new(format!("acct{i}"), regions[i % 3]))
                .unwrap()
        })
        .collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = db.clone();
            let barrier = barrier.clone();
            let acct = accounts[t];
            std::thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                let mut violations = 0u32;
                let mut busy = 0u32;
                // Each thread walks the values from its own offset so that they collide
                // everywhere, not only at the start.
                for i in 0..VALUES {
                    let v = (i + t as u32 * 125) % VALUES;
                    let value = format!("key-{v}");
                    loop {
                        let mut w = db.write(acct).unwrap();
                        w.insert_unique(
                            &T,
                            v.to_be_bytes(),
                            b"x",
                            &[Unique::new("license", &value)],
                        )
                        .unwrap();
                        match w.commit() {
                            Ok(()) => {
                                won.push(v);
                                break;
                            }
                            Err(Error::UniqueViolation { namespace, .. }) => {
                                assert_eq!(namespace, "license");
                                violations += 1;
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                busy += 1;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("thread {t}: unexpected {e}"),
                        }
                    }
                }
                (acct, won, violations, busy)
            })
        })
        .collect();
    let mut winner: HashMap<u32, AccountId> = HashMap::new();
    let mut total_busy = 0;
    for h in handles {
        let (acct, won, violations, busy) = h.join().unwrap();
        total_busy += busy;
        assert_eq!(won.len() as u32 + violations, VALUES);
        for v in won {
            assert!(winner.insert(v, acct).is_none(), "value {v} won twice");
        }
    }
    assert_eq!(
        winner.len() as u32,
        VALUES,
        "every value has exactly one winner"
    );
    eprintln!("busy retries: {total_busy}");
    let check = |db: &Db| {
        for (v, acct) in &winner {
            let hit = db
                .find_unique(&T, "license", format!("key-{v}"))
                .unwrap()
                .unwrap_or_else(|| panic!("value {v} has no owner"));
            assert_eq!(hit.account(), *acct, "value {v}");
            assert_eq!(hit.key(), v.to_be_bytes());
        }
    };
    check(&db);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
    db.close().unwrap();
    let db = open(dir.path());
    check(&db);
    assert!(db.audit().unwrap().is_clean());
}

// ======================================================================================
// races through real threads (bounded loops).
// ======================================================================================

// Regression (fixed since): find unique never misses a value moving between two records.
/// (d) A value moves back and forth between two records of one account (a transfer in one
/// write). At every instant exactly one of them owns it, so `find_unique` must always
/// find it (and `is_taken` must always say taken). `find_unique` reads the global entry,
/// then the region: when the entry it read was *settled* (Committed to record k1) and a
/// transfer k1 -> k2 commits in between, it gives up and returns `None` at once (only an
/// in-flight entry is read again).
#[test]
fn find_unique_never_misses_a_value_moving_between_two_records() {
    let sim = SimStorage::new();
    let db = Db::builder()
        .storage(sim.clone())
        .region("us")
        .open("/race")
        .unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let v = "moving@example.com";
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k1", b"x", &[Unique::new("email", v)])
        .unwrap();
    w.commit().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let moves = Arc::new(AtomicU64::new(0));
    let mover = {
        let db = db.clone();
        let stop = stop.clone();
        let moves = moves.clone();
        std::thread::spawn(move || {
            let mut at_k1 = true;
            while !stop.load(Ordering::Relaxed) {
                let (from, to): (&[u8], &[u8]) = if at_k1 {
                    (b"k1", b"k2")
                } else {
                    (b"k2", b"k1")
                };
                let mut w = db.write(a).unwrap();
                w.insert_unique(&T, to, b"x", &[Unique::new("email", v)])
                    .unwrap();
                w.insert_unique(&T, from, b"x", &[]).unwrap();
                match w.commit() {
                    Ok(()) => {
                        at_k1 = !at_k1;
                        moves.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Busy(_)) => {}
                    Err(e) => panic!("transfer failed: {e}"),
                }
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lookups = 0u64;
    let mut missed = None;
    while Instant::now() < deadline {
        lookups += 1;
        match db.find_unique(&T, "email", v).unwrap() {
            Some(hit) => {
                assert_eq!(hit.account(), a);
                assert!(hit.key() == b"k1" || hit.key() == b"k2");
            }
            None => {
                missed = Some(lookups);
                break;
            }
        }
        assert!(db.is_taken("email", v).unwrap(), "is_taken said free");
    }
    stop.store(true, Ordering::Relaxed);
    mover.join().unwrap();
    if let Some(n) = missed {
        panic!(
            "find_unique returned None for a value owned at every instant (lookup {n}, after {} \
             transfers)",
            moves.load(Ordering::Relaxed)
        );
    }
    assert!(
        moves.load(Ordering::Relaxed) > 100,
        "the race did not run: {} transfers",
        moves.load(Ordering::Relaxed)
    );
}

// Guard: close during commits keeps every acknowledged write.
/// Guard (b): `close` while four threads commit (unique and plain writes, two regions):
/// every commit that returned Ok survives a power loss right after close; later ones see
/// `Closed`.
#[test]
fn close_during_commits_keeps_every_acknowledged_write() {
    for round in 0..5u32 {
        let sim = SimStorage::new();
        let dir = format!("/close{round}");
        let db = open_us_eu_sim(&sim, &dir).unwrap();
        let accts: Vec<_> = (0..4)
            .map(|i| {
                db.create_account(NewAccount::new(format!("a{i}"), ["us", "eu"][i % 2]))
                    .unwrap()
            })
            .collect();
        let threads: Vec<_> = accts
            .iter()
            .copied()
            .enumerate()
            .map(|(t, a)| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..10_000u32 {
                        let mut w = match db.write(a) {
                            Ok(w) => w,
                            Err(Error::Closed) => break,
                            Err(e) => panic!("{e}"),
                        };
                        let v = format!("{t}-{i}");
                        w.insert_unique(&T, i.to_be_bytes(), b"x", &[Unique::new("u", &v)])
                            .unwrap();
                        match w.commit() {
                            Ok(()) => acked.push(i),
                            Err(Error::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    (a, acked)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + 3 * round as u64));
        db.clone().close().unwrap();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            results.iter().any(|(_, a)| !a.is_empty()),
            "no commit ran before close"
        );
        drop(db);
        sim.crash();
        let db = open_us_eu_sim(&sim, &dir).unwrap();
        for (a, acked) in results {
            let r = db.read(a).unwrap();
            for i in acked {
                assert!(
                    r.get(&T, i.to_be_bytes()).unwrap().is_some(),
                    "round {round}: acknowledged write {i} of {a} lost"
                );
            }
        }
        let audit = db.audit().unwrap();
        assert!(audit.is_clean(), "{audit}");
    }
}

// ======================================================================================
// `scan_all` racing `disable_region` must not deadlock.
//
// `scan_all` reads the region set under its lock and, under that same read guard, asks
// for each region again; `disable_region` takes the write lock. With a fair lock the
// scanner's second read waits behind the waiting writer, which waits for the scanner.
// ======================================================================================

const DIR: &str = "/store";

const ROUNDS: u64 = 200;

const SCANNERS: usize = 2;

/// A hung round would hang the whole suite: abort the process instead.
fn watchdog(round: Arc<AtomicU64>, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut last = round.load(Ordering::SeqCst);
        let mut since = Instant::now();
        while !done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            let now = round.load(Ordering::SeqCst);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > Duration::from_secs(30) {
                // Straight to stderr: the test harness captures `eprintln!`, and its
                // buffer dies with the process.
                let _ = writeln!(
                    std::io::stderr(),
                    "scan_all_racing_disable_region_does_not_deadlock: round {now} of \
                     {ROUNDS} made no progress for 30 s: scan_all and disable_region \
                     deadlocked"
                );
                std::process::exit(101);
            }
        }
    });
}

fn open_us_eu_ap(sim: &SimStorage) -> Db {
    open_us_eu_ap_sim(sim, DIR)
}

#[test]
fn scan_all_racing_disable_region_does_not_deadlock() {
    let round = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    watchdog(round.clone(), done.clone());
    // Stops the watchdog however this test ends (a panic must not turn into an exit).
    struct Done(Arc<AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _done = Done(done.clone());

    let sim = SimStorage::new();
    {
        let db = open_us_eu_ap(&sim);
        for (i, r) in ["us", "eu", "ap"].into_iter().enumerate() {
            let a = db
                .create_account(NewAccount::new(format!("a{i}"), r))
                .unwrap();
            let mut w = db.write(a).unwrap();
            w.insert(&T, b"k", b"row").unwrap();
            w.commit().unwrap();
        }
        db.close().unwrap();
    }
    let mut rows_seen = 0u64;
    for r in 0..ROUNDS {
        // ap listed again: enabled for this round.
        let db = open_us_eu_ap(&sim);
        let stop = Arc::new(AtomicBool::new(false));
        let scanners: Vec<_> = (0..SCANNERS)
            .map(|_| {
                let db = db.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut rows = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let scan = match db.scan_all(&T) {
                            Ok(s) => s,
                            Err(Error::Closed) => break,
                            Err(e) => panic!("scan_all: {e}"),
                        };
                        for row in scan {
                            // Every row reads back, also from a region disabled while the
                            // scan runs (it keeps the region's file open_us_eu_ap).
                            let row = row.expect("scan row");
                            assert_eq!(&**row.record(), b"row");
                            rows += 1;
                        }
                    }
                    rows
                })
            })
            .collect();
        // Let the scanners get going, at a different point of their loop every round.
        for _ in 0..(r % 7) * 50 {
            std::thread::yield_now();
        }
        db.disable_region("ap").unwrap();
        assert!(
            !db.regions().iter().any(|i| i.name == "ap" && i.enabled),
            "ap is disabled"
        );
        stop.store(true, Ordering::Relaxed);
        for s in scanners {
            rows_seen += s.join().unwrap();
        }
        db.close().unwrap();
        round.store(r + 1, Ordering::SeqCst);
    }
    assert!(rows_seen > 0, "the scanners read rows");
}

// ======================================================================================
// The sustained-load driver of `examples/load.rs`, bounded to a few seconds: 2 writers and
// 2 readers on a 3-region store with unique-value contention; afterwards every
// acknowledged write must be present after a reopen, every acknowledged claim found with
// its owner, and `audit()` clean. Nothing here depends on speed: each thread does a
// minimum number of operations however long they take.
// ======================================================================================

#[path = "../examples/load.rs"]
#[allow(dead_code)]
mod load;

#[test]
fn load_for_a_few_seconds_then_verify_everything_acknowledged() {
    let cfg = load::Config {
        duration: Duration::from_secs(3),
        writers: 2,
        readers: 2,
        min_ops_per_thread: 50,
        ..load::Config::default()
    };
    let report = load::run(&cfg);
    report.print();
    assert!(
        report.passed(),
        "{} verification failures, first: {:?}",
        report.failures.len(),
        report.failures.first()
    );
    assert!(report.writes_committed > 0, "no write was acknowledged");
    assert!(report.reads >= 100, "{} reads", report.reads);
    assert_eq!(report.verified_values, cfg.unique_pool as usize);
}

// ======================================================================================
// The registry of open stores: a handle outlives its store.
// ======================================================================================

/// What keeps a region snapshot of a closed store alive.
type Keep = fn(&Db, AccountId) -> Box<dyn std::any::Any>;

/// A store (us, eu) on `sim` at `DIR` where eu's account `a` owns `v@x` with record `k`;
/// `keep` takes a handle, the store is closed and its last `Db` dropped, and a second open
/// runs while the handle is held. Returns the handle, the second open's outcome and every
/// file it changed.
fn second_open_while_held(
    sim: &SimStorage,
    keep: Keep,
) -> (Box<dyn std::any::Any>, regionkv::Result<()>, Vec<String>) {
    let db = quiet_us_eu(sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    claim(&db, a, "eu", b"k", "v@x").unwrap();
    let held = keep(&db, a);
    db.close().unwrap();
    let before = sim_snapshot(sim);
    let r = quiet_us_eu(sim, DIR).map(drop);
    let diff = diff_files(&before, &sim_snapshot(sim));
    (held, r, diff)
}

// Regression (fixed since): a record that outlives its store let a second open past the
//   registry.
/// "A second open of the same store in one process is refused whatever the backend does"
/// and "a refused open leaves every byte as it was" (docs/design.md, "Opening"; `Db::close`:
/// "until then, opening the store again in this process is refused"). A `Hit` from
/// `find_unique` holds its region's snapshot, hence the region file, past `Db::close` and
/// the last `Db` clone. The registry entry used to be released with the store, so a second
/// open passed the plan and only the backend's lock stopped it, in apply, after
/// `global.redb` and `regions/us.redb` had been opened read-write. Now: `Error::Config`
/// from the plan, nothing touched, and the record still reads.
#[test]
fn a_record_that_outlives_its_store_lets_a_second_open_past_the_registry() {
    let sim = SimStorage::new();
    let (held, r, diff) = second_open_while_held(&sim, |db, _| {
        Box::new(db.find_unique(&T, "email", "v@x").unwrap().unwrap())
    });
    assert!(
        matches!(r, Err(Error::Config(_))) && diff.is_empty(),
        "second open while eu's file is still held by a record: {r:?}; files changed: {diff:?}"
    );
    let hit = held.downcast::<regionkv::Hit<regionkv::Raw>>().unwrap();
    assert_eq!(hit.record().payload(), b"x");
}

/// The class behind the outliving record: every handle that holds a region snapshot
/// (`Record`, `Row`, `Hit`, a `Rows` iterator) keeps the store's files registered after
/// `close` and the last `Db`: a second open is refused and changes nothing until it is
/// dropped; then it opens.
#[test]
fn every_handle_that_outlives_its_store_keeps_its_files_registered() {
    let cases: &[(&str, Keep)] = &[
        ("Record", |db, a| {
            Box::new(db.read(a).unwrap().get(&T, b"k").unwrap().unwrap())
        }),
        ("Row", |db, a| {
            Box::new(
                db.read(a)
                    .unwrap()
                    .scan(&T)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap(),
            )
        }),
        ("Hit", |db, _| {
            Box::new(db.find_unique(&T, "email", "v@x").unwrap().unwrap())
        }),
        ("Rows (scan_all)", |db, _| {
            Box::new(db.scan_all(&T).unwrap())
        }),
    ];
    for (case, keep) in cases {
        let sim = SimStorage::new();
        let (held, r, diff) = second_open_while_held(&sim, *keep);
        assert!(
            matches!(r, Err(Error::Config(_))) && diff.is_empty(),
            "{case}: second open while it is held: {r:?}, files changed: {diff:?}"
        );
        drop(held);
        quiet_us_eu(&sim, DIR)
            .unwrap_or_else(|e| panic!("{case}: open after the handle is dropped: {e}"));
    }
}
