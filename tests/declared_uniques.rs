//! Unique values declared by the table (`Table::unique`): `insert` claims and releases them
//! itself, an explicit list that contradicts the declarations is refused, and a collision
//! names the record of the write that collided (`Error::UniqueViolation`'s `record`).

mod common;

use common::files::{assert_same_files, sim_snapshot};
use common::sim::*;
use regionkv::rkyv;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Schema, Table, Unique};

const DIR: &str = "/decl";

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    seats: u32,
    /// An optional second unique value.
    vanity: Option<String>,
}

const LICENSES: Table<License> = Table::<License>::new("licenses")
    .unique("license_key", |l| Some(l.key.as_bytes()))
    .unique("vanity", |l| l.vanity.as_ref().map(|v| v.as_bytes()));

/// A raw table can declare too: the value is the whole record.
const HANDLES: Table<Raw> = Table::<Raw>::new("handles").unique("handle", |v| Some(v));

fn lic(key: &str, seats: u32) -> License {
    License {
        key: key.into(),
        seats,
        vanity: None,
    }
}

fn store() -> (SimStorage, Db, AccountId, AccountId) {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    (sim, db, a, b)
}

fn insert(db: &Db, acct: AccountId, key: &[u8], l: &License) -> regionkv::Result<()> {
    let mut w = db.write(acct)?;
    w.insert(&LICENSES, key, l)?;
    w.commit()
}

/// The drift, made impossible: changing a license's key field with `insert`
/// releases the old key and claims the new one in the same commit.
#[test]
fn insert_claims_and_releases_the_declared_values() {
    let (_sim, db, a, b) = store();
    insert(&db, a, b"l1", &lic("K-1", 5)).unwrap();
    assert!(db.is_taken("license_key", "K-1").unwrap());
    assert!(!db.is_taken("vanity", "acme").unwrap());

    insert(&db, a, b"l1", &lic("K-RENAMED", 5)).unwrap();
    let hit = db
        .find_unique(&LICENSES, "license_key", "K-RENAMED")
        .unwrap()
        .expect("the new key is claimed");
    assert_eq!(hit.record().key.as_str(), "K-RENAMED");
    assert!(
        !db.is_taken("license_key", "K-1").unwrap(),
        "old key released"
    );
    assert!(
        db.find_unique(&LICENSES, "license_key", "K-1")
            .unwrap()
            .is_none()
    );
    // The released key is free for anyone, the new one is not.
    insert(&db, b, b"x", &lic("K-1", 1)).unwrap();
    let e = insert(&db, b, b"y", &lic("K-RENAMED", 1)).unwrap_err();
    assert!(matches!(e, Error::UniqueViolation { .. }), "{e}");

    // An optional value appears and disappears with the field.
    let mut l = lic("K-RENAMED", 5);
    l.vanity = Some("acme".into());
    insert(&db, a, b"l1", &l).unwrap();
    assert!(db.is_taken("vanity", "acme").unwrap());
    insert(&db, a, b"l1", &lic("K-RENAMED", 6)).unwrap();
    assert!(!db.is_taken("vanity", "acme").unwrap());
    // Update recomputes the values too.
    db.update(a, &LICENSES, b"l1", |old| {
        let mut l = old?.deserialize().ok()?;
        l.key = "K-UPDATED".into();
        Some(l)
    })
    .unwrap();
    assert!(db.is_taken("license_key", "K-UPDATED").unwrap());
    assert!(!db.is_taken("license_key", "K-RENAMED").unwrap());
    // Remove releases them.
    let mut w = db.write(a).unwrap();
    w.remove(&LICENSES, b"l1").unwrap();
    w.commit().unwrap();
    assert!(!db.is_taken("license_key", "K-UPDATED").unwrap());
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

/// `insert_unique` on a declaring table: the declared list (any order) is accepted; any
/// other list is refused at once and nothing is buffered.
#[test]
fn an_explicit_list_that_contradicts_the_declarations_is_refused() {
    let (sim, db, a, _) = store();
    let mut l = lic("K-1", 5);
    l.vanity = Some("v".into());
    let before = sim_snapshot(&sim);
    let mut w = db.write(a).unwrap();
    for bad in [
        vec![],
        vec![Unique::new("license_key", "K-1")],
        vec![
            Unique::new("license_key", "K-2"),
            Unique::new("vanity", "v"),
        ],
        vec![
            Unique::new("license_key", "K-1"),
            Unique::new("vanity", "v"),
            Unique::new("extra", "x"),
        ],
    ] {
        let e = w.insert_unique(&LICENSES, b"l1", &l, &bad).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("declares")),
            "{bad:?}: {e}"
        );
    }
    assert!(w.is_empty());
    drop(w);
    assert_same_files(&before, &sim_snapshot(&sim), "refused lists");
    let mut w = db.write(a).unwrap();
    w.insert_unique(
        &LICENSES,
        b"l1",
        &l,
        &[
            Unique::new("vanity", "v"),
            Unique::new("license_key", "K-1"),
        ],
    )
    .unwrap();
    w.commit().unwrap();
    assert!(db.is_taken("vanity", "v").unwrap());
}

/// A collision names the namespace and the record of this write that claimed the value
/// (table, key, the value as given), also for a bulk write of many records; the owner is
/// not revealed. Nothing of the write is committed.
#[test]
fn unique_violation_names_the_colliding_record_of_the_write() {
    let (_sim, db, a, b) = store();
    insert(&db, a, b"l1", &lic("K-7", 5)).unwrap();
    let mut w = db.write(b).unwrap();
    for i in 0..10 {
        let key = format!("import-{i}");
        w.insert(&LICENSES, key.as_bytes(), &lic(&format!("K-{i}"), 1))
            .unwrap();
    }
    let e = w.commit().unwrap_err();
    match &e {
        Error::UniqueViolation { namespace, record } => {
            assert_eq!(namespace, "license_key");
            assert_eq!(record.table, "licenses");
            assert_eq!(record.key, b"import-7");
            assert_eq!(record.value, b"K-7");
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("import-7") && msg.contains("licenses"),
        "{msg}"
    );
    assert!(
        !msg.contains("K-7"),
        "the message leaves the value out: {msg}"
    );
    assert!(!e.is_retryable());
    assert!(
        !db.is_taken("license_key", "K-0").unwrap(),
        "nothing committed"
    );
    // With explicit lists too.
    const NOTES: Table<Raw> = Table::new("notes");
    let mut w = db.write(b).unwrap();
    w.insert_unique(&NOTES, b"n1", b"x", &[Unique::new("license_key", "K-7")])
        .unwrap();
    match w.commit().unwrap_err() {
        Error::UniqueViolation { record, .. } => {
            assert_eq!(
                (record.table.as_str(), record.key.as_slice()),
                ("notes", &b"n1"[..])
            );
            assert_eq!(record.value, b"K-7");
        }
        other => panic!("{other}"),
    }
}

/// A raw table declaring its whole value as unique; a declared value that is invalid (too
/// long) is refused at insert with nothing buffered.
#[test]
fn raw_declarations_and_invalid_declared_values() {
    let (_sim, db, a, b) = store();
    let mut w = db.write(a).unwrap();
    w.insert(&HANDLES, b"h", b"@ann").unwrap();
    w.commit().unwrap();
    let mut w = db.write(b).unwrap();
    w.insert(&HANDLES, b"h", b"@ann").unwrap();
    assert!(matches!(w.commit(), Err(Error::UniqueViolation { .. })));
    let mut w = db.write(b).unwrap();
    let long = vec![b'x'; regionkv::MAX_UNIQUE_VALUE + 1];
    assert!(matches!(
        w.insert(&HANDLES, b"h2", &long),
        Err(Error::InvalidArgument(_))
    ));
    let empty: &[u8] = b"";
    assert!(matches!(
        w.insert(&HANDLES, b"h3", empty),
        Err(Error::InvalidArgument(_))
    ));
    assert!(w.is_empty());
}
