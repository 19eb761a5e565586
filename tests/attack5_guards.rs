//! Adversarial review, round 5: guards for the write pipeline's plan (ops map, transfers)
//! and for one large unique write under a crash at every storage step.
//!
//! passes (guard): ops_map_transfer_across_tables_and_remove_then_insert
//!   (a value moved between two tables under one key, remove + insert of one record in one
//!   write, insert_unique + remove + insert in one write, then a power loss: one owner,
//!   audit clean)
//! passes (guard): large_unique_write_with_a_transfer_crash_at_every_step
//!   (299 claims + a transfer in one write, fault at every counted op then power loss:
//!   acked = present, non-OutcomeUnknown error = absent, audit clean)

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};
use std::time::Duration;

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/d";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}
fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").region("eu").open(DIR)
}
fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

const T2: Table<Raw> = Table::new("t2");

fn owners(db: &Db, v: &str) -> Vec<String> {
    let mut o = vec![];
    for t in [&T, &T2] {
        if let Ok(Some(h)) = db.find_unique(t, "email", v) {
            o.push(format!("{}:{:?}", t.name(), h.key()));
        }
    }
    o
}

#[test]
fn ops_map_transfer_across_tables_and_remove_then_insert() {
    let sim = SimStorage::new();
    let db = all(&sim).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu"))
        .unwrap();
    let c = db
        .create_account(NewAccount::new("c", "us").allow("eu"))
        .unwrap();
    claim(&db, a, "us", b"k", "v@x").unwrap();
    // transfer across tables, same key
    let mut w = db.write_in(a, "us").unwrap();
    w.insert_unique(&T, b"k", b"x", &[]).unwrap();
    w.insert_unique(&T2, b"k", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    w.commit().unwrap();
    assert_eq!(owners(&db, "v@x"), vec!["t2:[107]".to_string()]);
    // remove then insert (keep) in one write: releases
    let mut w = db.write_in(a, "us").unwrap();
    w.remove(&T2, b"k").unwrap();
    w.insert(&T2, b"k", b"y").unwrap();
    w.commit().unwrap();
    assert!(owners(&db, "v@x").is_empty());
    assert!(!db.is_taken("email", "v@x").unwrap());
    // insert_unique then remove then insert in one write
    let mut w = db.write_in(a, "us").unwrap();
    w.insert_unique(&T, b"z", b"x", &[Unique::new("email", "w@x")])
        .unwrap();
    w.remove(&T, b"z").unwrap();
    w.insert(&T, b"z", b"q").unwrap();
    w.commit().unwrap();
    assert!(!db.is_taken("email", "w@x").unwrap());
    // other account claims v now
    claim(&db, c, "eu", b"ck", "v@x").unwrap();
    // a's record T/k still? release of tombstoned etc
    let mut w = db.write_in(a, "us").unwrap();
    w.remove(&T, b"k").unwrap();
    w.remove(&T2, b"k").unwrap();
    w.commit().unwrap();
    assert_eq!(owners(&db, "v@x"), vec!["t:[99, 107]".to_string()]);
    let r = db.audit().unwrap();
    assert!(r.is_clean(), "{r}");
    db.close().unwrap();
    sim.crash();
    let db = all(&sim).unwrap();
    let r = db.audit().unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(owners(&db, "v@x"), vec!["t:[99, 107]".to_string()]);
}

#[test]
fn large_unique_write_with_a_transfer_crash_at_every_step() {
    let vals: Vec<String> = (0..300).map(|i| format!("m{i}@x")).collect();
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let db = all(&sim).unwrap();
        let a = db
            .create_account(NewAccount::new("a", "us").allow("eu"))
            .unwrap();
        claim(&db, a, "eu", b"pre", "m7@x").unwrap();
        sim.fail_after(n, FaultOn::Any);
        let mut w = db.write_in(a, "eu").unwrap();
        let u: Vec<Unique> = vals
            .iter()
            .skip(1)
            .map(|v| Unique::new("email", v.as_str()))
            .collect();
        // record k0 takes everything, 'pre' gives m7 to it (transfer)
        w.insert_unique(&T, b"big", b"x", &u).unwrap();
        w.insert_unique(&T, b"pre", b"x", &[]).unwrap();
        let r = w.commit();
        let tripped = sim.fault_tripped();
        drop(db);
        sim.crash();
        let db = all(&sim).unwrap();
        let rep = db.audit().unwrap();
        assert!(rep.is_clean(), "n={n} r={r:?}: {rep}");
        let big = db
            .read(a)
            .unwrap()
            .get_in("eu", &T, b"big")
            .unwrap()
            .is_some();
        if r.is_ok() {
            assert!(big, "n={n} acked lost");
        }
        if let Err(e) = &r
            && !matches!(e, Error::OutcomeUnknown { .. })
        {
            assert!(!big, "n={n} {e:?} but present");
        }
        drop(db);
        if !tripped {
            break;
        }
        n += 1;
        assert!(n < 400);
    }
    assert!(n > 3, "the sweep must cover the write ({n} steps)");
}
