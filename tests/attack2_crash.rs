//! Adversarial review, round 2: power loss at every I/O step of the run-time operator
//! paths: `disable_region`, `forfeit_unsettled`, and the open that brings a forfeited
//! region back (claims_lost reconciliation).
//!
//! passes (guard): `crash_at_every_step_of_a_runtime_disable` (41 steps: acked claims of
//!   the region stay taken while it is disabled, and owned by their records once back)
//! passes (guard): `crash_at_every_step_of_forfeit_then_of_the_return` (crash inside
//!   forfeit x crash inside the returning open, with an eu-disabled open in between)

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/c";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").region("eu").open(DIR)
}

fn eu_off(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").disable_region("eu").open(DIR)
}

#[test]
fn crash_at_every_step_of_a_runtime_disable() {
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let db = all(&sim).unwrap();
        let e = db
            .create_account(NewAccount::new("e", "eu").max_records(10))
            .unwrap();
        let u = db.create_account(NewAccount::new("u", "us")).unwrap();
        let vals: Vec<String> = (0..4).map(|i| format!("v{i}@x")).collect();
        for (i, v) in vals.iter().enumerate() {
            claim(&db, e, "eu", format!("e{i}").as_bytes(), v).unwrap();
        }
        sim.fail_after(n, FaultOn::Any);
        let r = db.disable_region("eu");
        let tripped = sim.fault_tripped();
        sim.crash();
        drop(db);

        let db = eu_off(&sim).unwrap();
        for v in &vals {
            match db.is_taken("email", v) {
                Ok(true) | Err(Error::RegionUnsettled(_)) => {}
                other => {
                    panic!("n={n} ({r:?}): acked {v} owned in disabled eu: is_taken {other:?}")
                }
            }
            let c = claim(&db, u, "us", format!("u-{v}").as_bytes(), v);
            assert!(
                c.is_err(),
                "n={n} ({r:?}): us claimed {v}, owned in disabled eu"
            );
        }
        db.close().unwrap();
        let db = all(&sim).unwrap();
        for (i, v) in vals.iter().enumerate() {
            let h = db.find_unique(&T, "email", v).unwrap();
            assert!(
                h.as_ref()
                    .is_some_and(|h| h.account() == e && h.key() == format!("e{i}").as_bytes()),
                "n={n} ({r:?}): owner of {v}: {:?}",
                h.map(|h| h.account())
            );
        }
        let audit = db.audit().unwrap();
        assert!(audit.is_clean(), "n={n}: {audit} {:?}", audit.findings());
        db.close().unwrap();
        if !tripped {
            break;
        }
        n += 1;
    }
    eprintln!("disable sweep: {n} steps");
}

/// eu holds an acked claim of `v` the global file lost; reopened with eu disabled.
fn unsettled(sim: &SimStorage) -> (Db, AccountId, AccountId) {
    let db = all(sim).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "eu", b"e0", "warm@x").unwrap();
    claim(&db, e, "eu", b"e1", "v@x").unwrap();
    claim(&db, e, "eu", b"e2", "w@x").unwrap();
    sim.crash();
    drop(db);
    (eu_off(sim).unwrap(), e, u)
}

#[test]
fn crash_at_every_step_of_forfeit_then_of_the_return() {
    // Outer: crash inside forfeit. Inner: crash inside the open that brings eu back.
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let (db, e, u) = unsettled(&sim);
        sim.fail_after(n, FaultOn::Any);
        let f = db.forfeit_unsettled("eu");
        let tripped = sim.fault_tripped();
        sim.crash();
        drop(db);
        let db = eu_off(&sim).unwrap();
        if matches!(db.is_taken("email", "zzz"), Err(Error::RegionUnsettled(_))) {
            db.forfeit_unsettled("eu").unwrap();
        }
        claim(&db, u, "us", b"u1", "v@x").unwrap();
        db.close().unwrap();
        let snapshot: Vec<_> = sim
            .paths()
            .into_iter()
            .map(|p| (sim.live_bytes(&p), p))
            .collect();

        let mut m = 0u64;
        loop {
            for (bytes, p) in &snapshot {
                sim.set_bytes(p, bytes.clone().unwrap());
            }
            sim.fail_after(m, FaultOn::Any);
            let r = all(&sim);
            let inner_tripped = sim.fault_tripped();
            drop(r);
            sim.crash();
            // In between: once with eu disabled (u drops v, then claims it back).
            {
                let db = eu_off(&sim).unwrap();
                let mut w = db.write(u).unwrap();
                w.remove(&T, b"u1").unwrap();
                w.commit().unwrap();
                claim(&db, u, "us", b"u1", "v@x").unwrap();
                db.close().unwrap();
            }
            let db = all(&sim).unwrap();
            let h = db.find_unique(&T, "email", "v@x").unwrap();
            assert!(
                h.as_ref().is_some_and(|h| h.account() == u),
                "n={n} ({f:?}) m={m}: owner of v: {:?}",
                h.map(|h| (h.account(), h.key().to_vec()))
            );
            let hw = db.find_unique(&T, "email", "w@x").unwrap();
            assert!(
                hw.as_ref()
                    .is_some_and(|h| h.account() == e && h.key() == b"e2"),
                "n={n} m={m}: w, claimed by eu and taken by nobody, must stay with e2: {:?}",
                hw.map(|h| (h.account(), h.key().to_vec()))
            );
            let audit = db.audit().unwrap();
            assert!(
                audit.is_clean(),
                "n={n} m={m}: {audit} {:?}",
                audit.findings()
            );
            db.close().unwrap();
            if !inner_tripped {
                break;
            }
            m += 1;
        }
        if !tripped {
            break;
        }
        n += 1;
    }
}
