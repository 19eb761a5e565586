//! A crash during the open that creates a region must not leave the
//! region's `created` flag false forever (a later loss of its file would then be answered
//! by silently creating an empty region).

mod common;

use std::path::Path;

use common::T;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, Error, NewAccount, Storage};

const DIR: &str = "/store";

fn open_us_eu(sim: &SimStorage) -> Result<Db, Error> {
    Db::builder()
        .storage(sim.clone())
        .region("us")
        .region("eu")
        .open(DIR)
}

#[test]
fn crash_while_creating_a_region_then_losing_its_file_is_refused() {
    let eu = Path::new(DIR).join("regions").join("eu.redb");
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
        let first = open_us_eu(&sim);
        let tripped = sim.fault_tripped();
        drop(first);
        sim.crash();
        points += 1;

        // The region's creation completes (or restarts) at the next open.
        match open_us_eu(&sim) {
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
        match open_us_eu(&sim) {
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
