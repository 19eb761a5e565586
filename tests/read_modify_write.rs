//! Read-modify-write: `Write::get` (own buffered changes first, then a region snapshot),
//! `Write::update`, `Db::update` (retries), and the optimistic check at commit that turns a
//! lost update into a retryable `Error::Conflict`.

mod common;

use std::sync::{Arc, Barrier};

use common::sim::*;
use regionkv::rkyv;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Schema, Table, Unique};

const DIR: &str = "/rmw";

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    seats: u32,
    expired: bool,
}

const LICENSES: Table<License> = Table::new("licenses");

fn store() -> (SimStorage, Db, AccountId) {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("acme", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(
        &LICENSES,
        b"l1",
        &License {
            key: "K-1".into(),
            seats: 5,
            expired: false,
        },
    )
    .unwrap();
    w.commit().unwrap();
    (sim, db, a)
}

fn seats(db: &Db, a: AccountId) -> u32 {
    db.read(a)
        .unwrap()
        .get(&LICENSES, b"l1")
        .unwrap()
        .unwrap()
        .seats
        .to_native()
}

/// The lost update: the expiry worker reads the license, a customer's upgrade to 500 seats
/// commits, the worker writes its stale copy. The worker's commit fails with a retryable
/// `Conflict` and writes nothing; its retry sees 500 seats and keeps them.
#[test]
fn a_stale_read_modify_write_conflicts_instead_of_losing_the_update() {
    let (_sim, db, a) = store();
    let mut worker = db.write(a).unwrap();
    let mut stale = worker
        .get(&LICENSES, b"l1")
        .unwrap()
        .unwrap()
        .deserialize()
        .unwrap();
    assert_eq!(stale.seats, 5);

    db.update(a, &LICENSES, b"l1", |old| {
        let mut l = old?.deserialize().ok()?;
        l.seats = 500;
        Some(l)
    })
    .unwrap();

    stale.expired = true;
    worker.insert(&LICENSES, b"l1", &stale).unwrap();
    let e = worker.commit().unwrap_err();
    match &e {
        Error::Conflict { table, key } => {
            assert_eq!((table.as_str(), key.as_slice()), ("licenses", &b"l1"[..]));
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert!(e.is_retryable());
    assert_eq!(seats(&db, a), 500, "the upgrade stands");

    // The retry, as Db::update does it.
    db.update(a, &LICENSES, b"l1", |old| {
        let mut l = old?.deserialize().ok()?;
        l.expired = true;
        Some(l)
    })
    .unwrap();
    let r = db.read(a).unwrap();
    let l = r.get(&LICENSES, b"l1").unwrap().unwrap();
    assert_eq!((l.seats.to_native(), l.expired), (500, true));
}

/// Threads incrementing one counter through `Db::update` never lose an increment; the
/// same threads with a blind read-then-insert (no `get`) would.
#[test]
fn concurrent_db_updates_never_lose_an_increment() {
    const THREADS: usize = 4;
    const EACH: u32 = 25;
    let (_sim, db, a) = store();
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let db = db.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..EACH {
                    db.update(a, &LICENSES, b"l1", |old| {
                        let mut l = old?.deserialize().ok()?;
                        l.seats += 1;
                        Some(l)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(seats(&db, a), 5 + THREADS as u32 * EACH);
}

/// A record read as absent and created by another commit before this one is a conflict
/// too (two writers cannot both "create if missing").
#[test]
fn a_record_read_as_absent_then_created_elsewhere_conflicts() {
    let (_sim, db, a) = store();
    let mut w1 = db.write(a).unwrap();
    assert!(w1.get(&LICENSES, b"l2").unwrap().is_none());
    let mut w2 = db.write(a).unwrap();
    assert!(w2.get(&LICENSES, b"l2").unwrap().is_none());
    let new = |seats| License {
        key: "K-2".into(),
        seats,
        expired: false,
    };
    w1.insert(&LICENSES, b"l2", &new(1)).unwrap();
    w2.insert(&LICENSES, b"l2", &new(2)).unwrap();
    w1.commit().unwrap();
    assert!(matches!(w2.commit(), Err(Error::Conflict { .. })));
    let r = db.read(a).unwrap();
    assert_eq!(r.get(&LICENSES, b"l2").unwrap().unwrap().seats, 1);
}

/// A write that reads one record and writes another conflicts when the record it read
/// changed: the decision it made on that read is protected.
#[test]
fn a_read_of_one_record_protects_a_write_of_another() {
    let (_sim, db, a) = store();
    let mut w = db.write(a).unwrap();
    let seen = w.get(&LICENSES, b"l1").unwrap().unwrap().seats.to_native();
    w.insert(
        &LICENSES,
        b"summary",
        &License {
            key: "sum".into(),
            seats: seen,
            expired: false,
        },
    )
    .unwrap();
    db.update(a, &LICENSES, b"l1", |old| {
        let mut l = old?.deserialize().ok()?;
        l.seats = 9;
        Some(l)
    })
    .unwrap();
    assert!(matches!(w.commit(), Err(Error::Conflict { .. })));
    assert!(
        db.read(a)
            .unwrap()
            .get(&LICENSES, b"summary")
            .unwrap()
            .is_none(),
        "nothing of the conflicting write was written"
    );
}

/// `Write::get` reads the write's own buffered changes first: an insert reads back as the
/// inserted value (owned, not in place), a remove as absent; a record it did not change
/// reads from the region, in place. A write whose reads did not change commits.
#[test]
fn get_reads_own_buffered_changes_first() {
    let (_sim, db, a) = store();
    let mut w = db.write(a).unwrap();
    let l1 = w.get(&LICENSES, b"l1").unwrap().unwrap();
    assert!(l1.is_in_place());
    assert_eq!(l1.seats, 5);
    drop(l1);
    w.insert(
        &LICENSES,
        b"l3",
        &License {
            key: "K-3".into(),
            seats: 3,
            expired: false,
        },
    )
    .unwrap();
    let l3 = w.get(&LICENSES, b"l3").unwrap().unwrap();
    assert!(!l3.is_in_place() && !l3.is_upgraded());
    assert_eq!(l3.seats, 3);
    drop(l3);
    w.remove(&LICENSES, b"l1").unwrap();
    assert!(w.get(&LICENSES, b"l1").unwrap().is_none());
    w.commit().unwrap();
    let r = db.read(a).unwrap();
    assert!(r.get(&LICENSES, b"l1").unwrap().is_none());
    assert_eq!(r.get(&LICENSES, b"l3").unwrap().unwrap().seats, 3);
}

/// `update` returning `None` writes nothing; `Db::update` then reports `false`. A record
/// keeps the unique values it owns across an update.
#[test]
fn update_keeps_unique_values_and_none_writes_nothing() {
    const USERS: Table<Raw> = Table::new("users");
    let (_sim, db, a) = store();
    let mut w = db.write(a).unwrap();
    w.insert_unique(&USERS, b"u1", b"ann", &[Unique::new("email", "ann@x")])
        .unwrap();
    w.commit().unwrap();
    assert!(
        db.update(a, &USERS, b"u1", |old| {
            let mut v = old?.to_vec();
            v.extend_from_slice(b"-renamed");
            Some(v)
        })
        .unwrap()
    );
    let hit = db.find_unique(&USERS, "email", "ann@x").unwrap().unwrap();
    assert_eq!(&**hit.record(), b"ann-renamed");
    assert!(!db.update(a, &USERS, b"u1", |_| None::<Vec<u8>>).unwrap());
    assert!(
        !db.update(a, &USERS, b"absent", |old| old.map(|o| o.to_vec()))
            .unwrap()
    );
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

/// Reading through a `Write` with another type is a schema mismatch, also against the
/// write's own earlier use of the table.
#[test]
fn get_checks_the_schema() {
    const AS_RAW: Table<Raw> = Table::new("licenses");
    let (_sim, db, a) = store();
    let mut w = db.write(a).unwrap();
    let e = w.get(&AS_RAW, b"l1").map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { .. }), "{e}");
    assert!(!e.is_retryable());
    let mut w = db.write(a).unwrap();
    w.insert(
        &LICENSES,
        b"l9",
        &License {
            key: "K-9".into(),
            seats: 9,
            expired: false,
        },
    )
    .unwrap();
    let e = w.get(&AS_RAW, b"l9").map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { .. }), "{e}");
}
