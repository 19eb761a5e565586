//! The checkpoint timer thread (1 ms budget) racing writers in three regions, a run-time
//! `disable_region`, `forfeit_unsettled`, `close`, Drop without close, and injected faults
//! on the global file or a region file: every acknowledged write survives, the store
//! reopens. A watchdog exits the process (101) if anything hangs for 30 s.

mod common;

use common::T;
use common::sim::*;
use parking_lot::Mutex;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const DIR: &str = "/tm";

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

const MAX: u64 = 12;

fn watchdog(what: &'static str) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    std::thread::spawn(move || {
        for _ in 0..300 {
            std::thread::sleep(Duration::from_millis(100));
            if d.load(Ordering::Acquire) {
                return;
            }
        }
        eprintln!("WATCHDOG: `{what}` hung for 30 s");
        std::process::exit(101);
    });
    done
}

fn b(sim: &SimStorage) -> regionkv::Builder {
    let mut b = Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_millis(1));
    for r in REGIONS {
        b = b.region(r);
    }
    b
}

#[derive(Default)]
struct Acked {
    /// (account, region, key)
    puts: BTreeSet<(AccountId, &'static str, Vec<u8>)>,
    /// (account, region, key, value)
    claims: Vec<(AccountId, &'static str, Vec<u8>, String)>,
}

struct Ids {
    homes: Vec<AccountId>,
    limited: AccountId,
}

fn setup(db: &Db) -> Ids {
    let homes = REGIONS
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut n = NewAccount::new(format!("h{i}"), *r);
            for o in REGIONS {
                n = n.allow(o);
            }
            db.create_account(n).unwrap()
        })
        .collect();
    let mut n = NewAccount::new("limited", "us").max_records(MAX);
    for o in REGIONS {
        n = n.allow(o);
    }
    let limited = db.create_account(n).unwrap();
    Ids { homes, limited }
}

/// One writer per region until `stop`: unique claims from a shared pool (collisions) and
/// plain writes of the limited account.
fn writers(
    db: &Db,
    ids: &Ids,
    acked: &Arc<Mutex<Acked>>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut hs = Vec::new();
    for (ri, region) in REGIONS.iter().enumerate() {
        let db = db.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        let owner = ids.homes[ri];
        let limited = ids.limited;
        let region: &'static str = region;
        hs.push(std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Acquire) && i < 400 {
                i += 1;
                let key = format!("{region}-{i}").into_bytes();
                let v = format!("v{}", (i * 7 + ri as u32 * 3) % 40);
                let r = (|| {
                    let mut w = db.write_in(owner, region)?;
                    w.insert_unique(&T, &key, b"x", &[Unique::new("email", &v)])?;
                    w.commit()
                })();
                match r {
                    Ok(()) => acked.lock().claims.push((owner, region, key.clone(), v)),
                    Err(Error::Closed) => return,
                    Err(_) => {}
                }
                let r = (|| {
                    let mut w = db.write_in(limited, region)?;
                    w.insert(&T, &key, b"y")?;
                    w.commit()
                })();
                match r {
                    Ok(()) => {
                        acked.lock().puts.insert((limited, region, key));
                    }
                    Err(Error::Closed) => return,
                    Err(_) => {}
                }
            }
        }));
    }
    hs
}

/// Every acknowledged write is there, every acknowledged claim is owned by its record
/// (nothing in this workload releases), the limit holds, the audit is clean.
fn verify(db: &Db, ids: &Ids, acked: &Acked, ctx: &str) {
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{ctx}: audit {:?}", audit.findings());
    for (a, region, key) in &acked.puts {
        let got = db.read(*a).unwrap().get_in(region, &T, key).unwrap();
        assert!(got.is_some(), "{ctx}: acked put {region}/{key:?} lost");
    }
    for (a, _region, key, v) in &acked.claims {
        let hit = db.find_unique(&T, "email", v).unwrap();
        let got = hit.map(|h| (h.account(), h.key().to_vec()));
        assert_eq!(got, Some((*a, key.clone())), "{ctx}: acked claim of {v}");
    }
    let n = record_count(db, ids.limited);
    assert!(
        n <= MAX,
        "{ctx}: limited account holds {n} records, limit {MAX}"
    );
}

fn reopen_and_verify(sim: &SimStorage, ids: &Ids, acked: &Acked, ctx: &str) {
    let db = b(sim)
        .open(DIR)
        .unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
    verify(&db, ids, acked, &format!("{ctx}, restart"));
    db.close().unwrap();
    sim.crash();
    let db = b(sim)
        .open(DIR)
        .unwrap_or_else(|e| panic!("{ctx}: reopen after power loss: {e}"));
    verify(&db, ids, acked, &format!("{ctx}, power loss"));
    db.close().unwrap();
}

/// `rounds` rounds of the race, each on a fresh store under a watchdog named `name`: the
/// writers run; `during` acts on the store while they write (with the round, the storage
/// and the store; it may end the store and hands back what the writers must outlive); the
/// writers stop; `after` ends what `during` handed back; every acknowledged write must then
/// survive a restart and a power loss ([`reopen_and_verify`]).
fn race<R>(
    name: &'static str,
    rounds: u64,
    during: impl Fn(u64, &SimStorage, Db) -> R,
    after: impl Fn(&SimStorage, R),
) {
    let done = watchdog(name);
    for round in 0..rounds {
        let sim = SimStorage::new();
        let db = b(&sim).open(DIR).unwrap();
        let ids = setup(&db);
        let acked = Arc::new(Mutex::new(Acked::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let hs = writers(&db, &ids, &acked, &stop);
        let left = during(round, &sim, db);
        stop.store(true, Ordering::Release);
        for h in hs {
            h.join().unwrap();
        }
        after(&sim, left);
        let acked = std::mem::take(&mut *acked.lock());
        reopen_and_verify(&sim, &ids, &acked, &format!("{name} round {round}"));
    }
    done.store(true, Ordering::Release);
}

// Guard: timer races writers disable and close.
#[test]
fn timer_races_writers_disable_and_close() {
    race(
        "timer_races_writers_disable_and_close",
        4,
        |round, sim, db| {
            std::thread::sleep(Duration::from_millis(5 + round * 7));
            db.disable_region("ap").unwrap();
            let f = db.forfeit_unsettled("ap").unwrap();
            assert!(!f.was_unsettled, "{f:?}");
            std::thread::sleep(Duration::from_millis(5 + round * 3));
            let probe = db.clone();
            db.close().unwrap();
            // Nothing may write once close returned: no timer checkpoint, no write.
            let (w0, s0) = (sim.writes(), sim.syncs());
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(
                (sim.writes(), sim.syncs()),
                (w0, s0),
                "round {round}: I/O after close returned"
            );
            assert!(matches!(probe.checkpoint(), Err(Error::Closed)));
            probe
        },
        |_, probe| drop(probe),
    );
}

// Guard: timer races writers and drop without close.
#[test]
fn timer_races_writers_and_drop_without_close() {
    race(
        "timer_races_writers_and_drop_without_close",
        4,
        |round, _, db| {
            std::thread::sleep(Duration::from_millis(5 + round * 9));
            db
        },
        // No close: the timer may hold the last reference for a moment.
        |_, db| drop(db),
    );
}

/// The race with `path` dying mid-run (after `round * 5` storage operations): the store is
/// closed as well as it can be and the fault cleared before the restart.
fn dying_file(path: std::path::PathBuf, name: &'static str) {
    race(
        name,
        6,
        |round, sim, db| {
            std::thread::sleep(Duration::from_millis(3));
            sim.fail_file_after(&path, round * 5, FaultOn::Any);
            std::thread::sleep(Duration::from_millis(15));
            db
        },
        |sim, db| {
            let _ = db.close();
            sim.clear_fault();
        },
    );
}

// Guard: timer races writers with a dying global then restart and power loss.
#[test]
fn timer_races_writers_with_a_dying_global_then_restart_and_power_loss() {
    dying_file(sim_global(DIR), "dying global");
}

// Guard: timer races writers with a dying region then restart and power loss.
#[test]
fn timer_races_writers_with_a_dying_region_then_restart_and_power_loss() {
    dying_file(sim_region(DIR, "eu"), "dying eu");
}
