//! Adversarial review: races through real threads (bounded loops).
//!
//! found (fixed since): `find_unique_never_misses_a_value_moving_between_two_records`
//! passes (guard): `close_during_commits_keeps_every_acknowledged_write`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use regionkv::testing::SimStorage;
use regionkv::{Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");

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

/// Guard (b): `close` while four threads commit (unique and plain writes, two regions):
/// every commit that returned Ok survives a power loss right after close; later ones see
/// `Closed`.
#[test]
fn close_during_commits_keeps_every_acknowledged_write() {
    for round in 0..5u32 {
        let sim = SimStorage::new();
        let dir = format!("/close{round}");
        let db = Db::builder()
            .storage(sim.clone())
            .region("us")
            .region("eu")
            .open(&dir)
            .unwrap();
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
                        w.insert_unique(&T, &i.to_be_bytes(), b"x", &[Unique::new("u", &v)])
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
        let db = Db::builder()
            .storage(sim.clone())
            .region("us")
            .region("eu")
            .open(&dir)
            .unwrap();
        for (a, acked) in results {
            let r = db.read(a).unwrap();
            for i in acked {
                assert!(
                    r.get(&T, &i.to_be_bytes()).unwrap().is_some(),
                    "round {round}: acknowledged write {i} of {a} lost"
                );
            }
        }
        let audit = db.audit().unwrap();
        assert!(audit.is_clean(), "{audit}");
    }
}
