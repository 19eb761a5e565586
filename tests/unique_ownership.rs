//! Who owns a unique value must never be lost: not by a
//! release from a record that does not own it, not during a transfer between two records
//! of one account, not after a failed Confirm.

mod common;

use common::T;
use common::sim::*;
use redb::ReadableDatabase;
use regionkv::layout::region_file;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Raw, Table, Unique};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

// ======================================================================================
// Who owns a unique value must never be lost: not by a
// release from a record that does not own it, not during a transfer between two records
// of one account, not after a failed Confirm.
// ======================================================================================

const DIR: &str = "/store";

const X: &str = "x@example.com";

const Y: &str = "y@example.com";

fn sim_builder(sim: &SimStorage) -> Builder {
    Db::builder().storage(sim.clone())
}

fn open_all(sim: &SimStorage) -> Db {
    open_us_eu_ap_sim(sim, DIR)
}

/// `Some((account, key))` of the owner of `value`, as `find_unique` reports it.
fn owner(db: &Db, value: &str) -> Result<Option<(AccountId, Vec<u8>)>, Error> {
    Ok(db
        .find_unique(&T, "email", value)?
        .map(|h| (h.account(), h.key().to_vec())))
}

/// The recipe of the lost-claim test (a crash, then an open with eu disabled) can leave two records that
/// list the same value: a's (stale, in eu) and b's. a's release must then not free b's
/// value. If b's claim is refused (as it is now), a's release frees a's own value.
#[test]
fn release_by_a_record_that_no_longer_owns_the_value_keeps_the_owner() {
    let sim = SimStorage::new();
    let (a, b) = {
        let db = open_all(&sim);
        let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
        let b = db.create_account(NewAccount::new("b", "us")).unwrap();
        claim_home(&db, a, b"ka", X).expect("a claims x");
        sim.crash();
        drop(db);
        (a, b)
    };
    let b_claim = {
        let db = sim_builder(&sim)
            .region("us")
            .region("ap")
            .disable_region("eu")
            .open(DIR)
            .expect("open with eu disabled");
        let r = claim_home(&db, b, b"kb", X);
        let _ = db.close();
        r
    };

    let db = open_all(&sim);
    let mut w = db.write(a).unwrap();
    w.remove(&T, b"ka").unwrap();
    let removed = w.commit();
    let mut problems = Vec::new();
    if b_claim.is_ok() {
        // b's claim was acknowledged: nothing a does may free the value.
        match db.is_taken("email", X) {
            Ok(true) => {}
            other => problems.push(format!(
                "b owns x, a removed its stale record ({removed:?}): is_taken = {other:?}"
            )),
        }
        match owner(&db, X) {
            Ok(Some(o)) if o == (b, b"kb".to_vec()) => {}
            other => problems.push(format!(
                "b owns x, a removed its stale record: find_unique = {other:?}"
            )),
        }
    } else {
        // Only a ever owned x; its removal freed it.
        removed.expect("a removes its record");
        claim_home(&db, b, b"kb", X).expect("x is free once a removed its record");
        assert_eq!(owner(&db, X).unwrap(), Some((b, b"kb".to_vec())));
    }
    let report = db.audit().unwrap();
    if !report.is_clean() {
        problems.push(format!("{report}"));
    }
    assert!(problems.is_empty(), "{problems:#?}");
    db.close().unwrap();
}

/// The same invariant without depending on that recipe: a record whose `_owned` row lists a
/// value that the global index says another record owns (planted with redb, as damage or a
/// past bug would leave it). Removing that record must not free the other record's value.
#[test]
fn release_of_a_planted_stale_owned_row_keeps_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let open = || Db::builder().region("us").region("eu").open(&dir).unwrap();
    let (a, b) = {
        let db = open();
        let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
        let b = db.create_account(NewAccount::new("b", "us")).unwrap();
        claim_home(&db, a, b"ka", X).unwrap();
        claim_home(&db, b, b"kb", Y).unwrap();
        db.close().unwrap();
        (a, b)
    };
    // `_owned` key: [table_len u8][table][account u64 BE][user key]; value: [count u32 LE]
    // then the entries. b's row is rewritten to list Y and X (X copied from a's row).
    let owned = redb::TableDefinition::<&[u8], &[u8]>::new("_owned");
    let okey = |acct: AccountId, key: &[u8]| {
        let mut k = vec![1u8, b't'];
        k.extend_from_slice(&acct.get().to_be_bytes());
        k.extend_from_slice(key);
        k
    };
    let read_row = |path: &std::path::Path, key: &[u8]| -> Vec<u8> {
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(owned).unwrap();
        t.get(key).unwrap().expect("owned row").value().to_vec()
    };
    let eu = region_file(&dir, "eu");
    let us = region_file(&dir, "us");
    let row_a = read_row(&eu, &okey(a, b"ka"));
    let row_b = read_row(&us, &okey(b, b"kb"));
    assert_eq!(&row_a[..4], &1u32.to_le_bytes());
    assert_eq!(&row_b[..4], &1u32.to_le_bytes());
    let mut planted = 2u32.to_le_bytes().to_vec();
    planted.extend_from_slice(&row_b[4..]);
    planted.extend_from_slice(&row_a[4..]);
    {
        let db = redb::Database::open(&us).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(owned)
            .unwrap()
            .insert(okey(b, b"kb").as_slice(), planted.as_slice())
            .unwrap();
        w.commit().unwrap();
    }

    let db = open();
    assert_eq!(owner(&db, X).unwrap(), Some((a, b"ka".to_vec())));
    let mut w = db.write(b).unwrap();
    w.remove(&T, b"kb").unwrap();
    let removed = w.commit();
    let mut problems = Vec::new();
    match db.is_taken("email", X) {
        Ok(true) => {}
        other => problems.push(format!(
            "a owns x; b removed a record whose row listed x too ({removed:?}): is_taken(x) = \
             {other:?}"
        )),
    }
    match owner(&db, X) {
        Ok(Some(o)) if o == (a, b"ka".to_vec()) => {}
        other => problems.push(format!(
            "a owns x; after b's release find_unique = {other:?}"
        )),
    }
    let taken_by_b = claim_home(&db, b, b"kb2", X);
    if taken_by_b.is_ok() {
        problems.push("b claimed x, which a still owns: Ok".into());
    }
    assert!(problems.is_empty(), "{problems:#?}");
    db.close().unwrap();
}

#[test]
fn find_unique_sees_an_owner_throughout_a_transfer() {
    const MOVES: usize = 300;
    let sim = SimStorage::new();
    let db = sim_builder(&sim).region("us").open(DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    claim_home(&db, a, b"k1", X).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = db.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..MOVES {
                let (from, to): (&[u8], &[u8]) = if i % 2 == 0 {
                    (b"k1", b"k2")
                } else {
                    (b"k2", b"k1")
                };
                let mut w = db.write(a).unwrap();
                w.insert_unique(&T, from, b"rec", &[]).unwrap();
                w.insert_unique(&T, to, b"rec", &[Unique::new("email", X)])
                    .unwrap();
                w.commit().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut lookups = 0u64;
    let mut none = 0u64;
    let mut wrong = Vec::new();
    let mut errors = Vec::new();
    let mut not_taken = 0u64;
    while !done.load(Ordering::SeqCst) {
        lookups += 1;
        match owner(&db, X) {
            Ok(Some((acct, key))) if acct == a && (key == b"k1" || key == b"k2") => {}
            Ok(Some(o)) => wrong.push(o),
            Ok(None) => none += 1,
            Err(e) => errors.push(e.to_string()),
        }
        if !matches!(db.is_taken("email", X), Ok(true)) {
            not_taken += 1;
        }
    }
    writer.join().unwrap();
    assert!(lookups > 0);
    assert!(
        none == 0 && wrong.is_empty() && errors.is_empty() && not_taken == 0,
        "{lookups} lookups during {MOVES} moves: {none} returned None, wrong owners {wrong:?}, \
         errors {errors:?}, is_taken not Ok(true) {not_taken} times"
    );
    let o = owner(&db, X).unwrap();
    assert!(o.is_some());
    db.close().unwrap();
}

/// Runs one claim of `values` values with the global file failing after `n` writes; returns
/// the store, the account, whether the commit was acknowledged and whether the fault fired.
fn claim_with_global_fault(
    vals: &[String],
    n: u64,
) -> (SimStorage, Db, AccountId, Result<(), Error>, bool) {
    let global = sim_global(DIR);
    let sim = SimStorage::new();
    let db = sim_builder(&sim)
        .digest_key([7; 32])
        // A small cache, so that even unsynced global commits reach the file.
        .cache_size(1 << 20)
        .region("us")
        .open(DIR)
        .unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    // The first unique write of a checkpoint interval has a synced Reserve (it marks the
    // region dirty): warm up, so the swept write's global commits are unsynced ones.
    claim_home(&db, a, b"warm", "warm@example.com").unwrap();
    sim.fail_file_after(&global, n, FaultOn::Writes);
    let mut w = db.write(a).unwrap();
    let uniques: Vec<Unique> = vals.iter().map(|v| Unique::new("email", v)).collect();
    w.insert_unique(&T, b"ka", b"rec", &uniques).unwrap();
    let committed = w.commit();
    let tripped = sim.fault_tripped();
    (sim, db, a, committed, tripped)
}

#[test]
fn acknowledged_claim_stays_visible_after_a_failed_confirm() {
    // Reserve and Confirm are unsynced global commits: the fault trips in Confirm only
    // when Confirm has to write the file. Writes fail from fault point n on, so for small n
    // the commit fails (in Reserve), for large n nothing trips; in between, if Confirm
    // writes at all, the commit is acknowledged with the global partition failed. Find the
    // smallest n that acknowledges (binary search), then check the window above it.
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for values in [24usize, 3000] {
        let vals: Vec<String> = (0..values).map(|i| format!("v{i}@example.com")).collect();
        let (mut lo, mut hi) = (0u64, 1 << 20);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (_, db, _, committed, _) = claim_with_global_fault(&vals, mid);
            drop(db);
            if committed.is_ok() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        for n in lo..lo + 3 {
            let (sim, db, a, committed, tripped) = claim_with_global_fault(&vals, n);
            if committed.is_err() || !tripped {
                continue;
            }
            // Acknowledged, with the global partition failed after the region commit.
            cases.push((values, n));
            for v in vals.iter().step_by((values / 8).max(1)) {
                match owner(&db, v) {
                    Ok(Some(o)) if o == (a, b"ka".to_vec()) => {}
                    Err(_) => {}
                    other => problems.push(format!(
                        "{values} values, n={n}: find_unique({v}) = {other:?}"
                    )),
                }
                if matches!(db.is_taken("email", v), Ok(false)) {
                    problems.push(format!("{values} values, n={n}: is_taken({v}) = Ok(false)"));
                }
            }
            // A second claim of an acknowledged value must not succeed either.
            if claim_home(&db, a, b"kb", &vals[0]).is_ok() {
                problems.push(format!(
                    "{values} values, n={n}: second claim of {}: Ok",
                    vals[0]
                ));
            }
            // Recovery settles the write as acknowledged.
            drop(db);
            sim.crash();
            let db = sim_builder(&sim).region("us").open(DIR).unwrap();
            for v in vals.iter().step_by((values / 8).max(1)) {
                match owner(&db, v) {
                    Ok(Some(o)) if o == (a, b"ka".to_vec()) => {}
                    other => problems.push(format!(
                        "{values} values, n={n}: after reopen find_unique({v}) = {other:?}"
                    )),
                }
            }
            db.close().unwrap();
        }
    }
    assert!(
        !cases.is_empty(),
        "no fault point made the commit succeed with the global partition failed"
    );
    assert!(
        problems.is_empty(),
        "(values, fault point) {cases:?}: {problems:#?}"
    );
}

// ======================================================================================
// guards for the write pipeline's plan (ops map, transfers)
// and for one large unique write under a crash at every storage step.
// ======================================================================================

fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    quiet_us_eu(sim, DIR)
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

// Guard: a value moved between two tables under one key, remove + insert of one record in
//   one write, insert_unique + remove + insert in one write, then a power loss: one owner,
//   audit clean.
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
