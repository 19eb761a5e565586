//! `scan_all` racing `disable_region` must not deadlock.
//!
//! `scan_all` reads the region set under its lock and, under that same read guard, asks
//! for each region again; `disable_region` takes the write lock. With a fair lock the
//! scanner's second read waits behind the waiting writer, which waits for the scanner.

mod common;

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::T;
use regionkv::testing::SimStorage;
use regionkv::{Db, Error, NewAccount};

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

fn open(sim: &SimStorage) -> Db {
    Db::builder()
        .storage(sim.clone())
        .region("us")
        .region("eu")
        .region("ap")
        .open(DIR)
        .expect("open us, eu, ap")
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
        let db = open(&sim);
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
        let db = open(&sim);
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
                            // scan runs (it keeps the region's file open).
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
