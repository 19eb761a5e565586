//! Schema identity of tables, through the public API: the fingerprints `#[derive(Schema)]`
//! computes (what changes them and what does not), and what a store does with them: a
//! table remembers, per region, the type it was first written with, and every read and
//! write through a handle of another type is refused with `Error::SchemaMismatch` — never
//! read as data, never reported as damage. Damaged schema rows and records of unrecorded
//! schema versions (crafted with redb on a closed store) are audit findings and read as
//! `Corrupt` or `SchemaMismatch`, never a panic. A proptest over a family of shapes ties
//! both together: a value written through one type reads back through another exactly when
//! their fingerprints are equal.

mod common;

use std::path::Path;

use common::files::{assert_same_files, edit_with_redb, sim_snapshot};
use common::sim::{quiet_builder, sim_region};
use proptest::prelude::*;
use redb::ReadableTable;
use regionkv::rkyv;
use regionkv::testing::SimStorage;
use regionkv::{
    AccountId, Db, Error, FindingKind, NewAccount, Raw, Schema, SchemaInfo, Table, Unique,
};

// ---- shapes -----------------------------------------------------------------------------

macro_rules! record {
    ($(#[$m:meta])* $name:ident $body:tt) => {
        #[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
        #[rkyv(crate = regionkv::rkyv)]
        $(#[$m])*
        struct $name $body
    };
}

record!(License {
    key: String,
    seats: u32
});
// Same fields, another type name.
record!(Permit {
    key: String,
    seats: u32
});
record!(LicenseV2 {
    key: String,
    seats: u32,
    max_seats: u32
});
record!(LicenseKeyOnly { key: String });
record!(LicenseReordered {
    seats: u32,
    key: String
});
record!(LicenseSeats64 {
    key: String,
    seats: u64
});
record!(LicenseBytesKey { key: Vec<u8>, seats: u32 });
record!(LicenseOptSeats { key: String, seats: Option<u32> });
record!(LicenseRenamedField {
    key: String,
    count: u32
});
record!(LicenseBoxStr { key: Box<str>, seats: u32 });
#[derive(rkyv::Archive, rkyv::Serialize, Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct LicenseTuple(String, u32);
// Two u32 fields, and the same two swapped: rkyv would read one as the other.
record!(Seats {
    seats: u32,
    max_seats: u32
});
record!(SeatsSwapped {
    max_seats: u32,
    seats: u32
});
// Layout-neutral rkyv attributes.
record!(
    #[rkyv(derive(Debug, PartialEq))]
    LicenseDerives {
        key: String,
        seats: u32
    }
);
record!(
    #[rkyv(compare(PartialEq))]
    LicenseCompare {
        key: String,
        seats: u32
    }
);
record!(
    #[rkyv(derive(Debug), compare(PartialEq))]
    LicenseBoth {
        key: String,
        seats: u32
    }
);
// A layout-changing one: the key archived behind a box.
record!(LicenseBoxedKey {
    #[rkyv(with = rkyv::with::AsBox)]
    key: String,
    seats: u32,
});
#[derive(rkyv::Archive, rkyv::Serialize, Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Wrapper<T> {
    inner: T,
}

macro_rules! plan_enum {
    ($name:ident { $($v:ident $(= $d:literal)?),* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
        #[rkyv(crate = regionkv::rkyv)]
        #[repr(u8)]
        enum $name { $($v $(= $d)?),* }
    };
}

plan_enum!(Plan { Free, Pro });
plan_enum!(PlanAgain { Free, Pro });
plan_enum!(PlanAdded { Free, Pro, Team });
plan_enum!(PlanReordered { Pro, Free });
plan_enum!(PlanRenamed { Free, Premium });
plan_enum!(PlanNumbered { Free = 1, Pro = 2 });
plan_enum!(PlanNumberedSwapped { Free = 2, Pro = 1 });

#[allow(dead_code)]
#[derive(rkyv::Archive, rkyv::Serialize, Schema)]
#[rkyv(crate = regionkv::rkyv)]
enum Event {
    Created { key: String },
    Resized(u32),
    Deleted,
}

#[allow(dead_code)]
#[derive(rkyv::Archive, rkyv::Serialize, Schema)]
#[rkyv(crate = regionkv::rkyv)]
enum EventUnitResized {
    Created { key: String },
    Resized,
    Deleted,
}

/// A field type from "another crate": archivable, without a `Schema` impl.
#[derive(rkyv::Archive, rkyv::Serialize)]
#[rkyv(crate = regionkv::rkyv)]
struct Foreign(u64);

#[derive(rkyv::Archive, rkyv::Serialize, Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Stamped {
    #[schema(as = "foreign-timestamp-v1")]
    at: Foreign,
    seats: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct StampedV2 {
    #[schema(as = "foreign-timestamp-v2")]
    at: Foreign,
    seats: u32,
}

// ---- 1. fingerprints --------------------------------------------------------------------

/// Asserts every fingerprint of `all` differs from every other, naming the pair.
fn all_distinct(all: &[(&str, u64)]) {
    for (i, (a, fa)) in all.iter().enumerate() {
        for (b, fb) in &all[i + 1..] {
            assert_ne!(fa, fb, "{a} and {b} have the same fingerprint");
        }
    }
}

#[test]
fn identical_shapes_share_a_fingerprint_whatever_the_type_name() {
    assert_eq!(License::FINGERPRINT, Permit::FINGERPRINT);
    assert_eq!(Plan::FINGERPRINT, PlanAgain::FINGERPRINT);
    assert_eq!(License::TYPE_NAME, "License");
    assert_eq!(Permit::TYPE_NAME, "Permit");
    assert_eq!(<Wrapper<u32>>::FINGERPRINT, <Wrapper<u32>>::FINGERPRINT);
}

#[test]
fn every_change_of_a_field_changes_the_fingerprint() {
    all_distinct(&[
        ("License", License::FINGERPRINT),
        ("added field", LicenseV2::FINGERPRINT),
        ("removed field", LicenseKeyOnly::FINGERPRINT),
        ("reordered fields", LicenseReordered::FINGERPRINT),
        ("u32 -> u64", LicenseSeats64::FINGERPRINT),
        ("String -> Vec<u8>", LicenseBytesKey::FINGERPRINT),
        ("u32 -> Option<u32>", LicenseOptSeats::FINGERPRINT),
        ("renamed field", LicenseRenamedField::FINGERPRINT),
        ("String -> Box<str>", LicenseBoxStr::FINGERPRINT),
        ("tuple struct", LicenseTuple::FINGERPRINT),
        ("with = AsBox", LicenseBoxedKey::FINGERPRINT),
    ]);
    assert_ne!(Seats::FINGERPRINT, SeatsSwapped::FINGERPRINT);
}

#[test]
fn every_change_of_an_enum_changes_the_fingerprint() {
    all_distinct(&[
        ("Plan", Plan::FINGERPRINT),
        ("variant added", PlanAdded::FINGERPRINT),
        ("variants reordered", PlanReordered::FINGERPRINT),
        ("variant renamed", PlanRenamed::FINGERPRINT),
        ("explicit discriminants", PlanNumbered::FINGERPRINT),
        ("discriminants swapped", PlanNumberedSwapped::FINGERPRINT),
    ]);
    assert_ne!(Event::FINGERPRINT, EventUnitResized::FINGERPRINT);
}

#[test]
fn layout_neutral_rkyv_attributes_keep_the_fingerprint() {
    assert_eq!(LicenseDerives::FINGERPRINT, License::FINGERPRINT);
    assert_eq!(LicenseCompare::FINGERPRINT, License::FINGERPRINT);
    assert_eq!(LicenseBoth::FINGERPRINT, License::FINGERPRINT);
    assert_ne!(LicenseBoxedKey::FINGERPRINT, License::FINGERPRINT);
}

#[test]
fn schema_as_labels_a_foreign_field_type() {
    // `Foreign` has no `Schema` impl: these types compile only through the label.
    assert_ne!(Stamped::FINGERPRINT, StampedV2::FINGERPRINT);
    assert_ne!(
        Stamped::FINGERPRINT,
        Seats::FINGERPRINT,
        "the label stands for the field type"
    );
}

#[test]
fn generic_records_differ_by_their_parameter() {
    all_distinct(&[
        ("Wrapper<u32>", <Wrapper<u32>>::FINGERPRINT),
        ("Wrapper<u64>", <Wrapper<u64>>::FINGERPRINT),
        ("Wrapper<String>", <Wrapper<String>>::FINGERPRINT),
        ("Wrapper<Option<u32>>", <Wrapper<Option<u32>>>::FINGERPRINT),
        ("Wrapper<License>", <Wrapper<License>>::FINGERPRINT),
        ("Wrapper<LicenseV2>", <Wrapper<LicenseV2>>::FINGERPRINT),
    ]);
    // A parameter of the same shape under another name is the same shape.
    assert_eq!(
        <Wrapper<License>>::FINGERPRINT,
        <Wrapper<Permit>>::FINGERPRINT
    );
    assert_eq!(<Wrapper<u32>>::TYPE_NAME, "Wrapper");
}

// ---- 2. a store -------------------------------------------------------------------------

thread_local! {
    /// The directory of this test's store: the store registers open paths per process,
    /// and tests run in parallel threads, one test to a thread.
    static DIR: &'static str = {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::leak(format!("/schema-{n}").into_boxed_str())
    };
}

fn dir() -> &'static str {
    DIR.with(|d| *d)
}
const LICENSES: Table<License> = Table::new("licenses");
const LICENSES_V2: Table<LicenseV2> = Table::new("licenses");
const LICENSES_RAW: Table<Raw> = Table::new("licenses");
const SEATS: Table<Seats> = Table::new("seats");
const SEATS_SWAPPED: Table<SeatsSwapped> = Table::new("seats");
const BLOBS: Table<Raw> = Table::new("blobs");
const BLOBS_AS_LICENSE: Table<License> = Table::new("blobs");

fn open(sim: &SimStorage) -> Db {
    quiet_builder(sim)
        .region("us")
        .region("eu")
        .default_region("us")
        .open(dir())
        .expect("open us+eu")
}

fn lic(key: &str, seats: u32) -> License {
    License {
        key: key.to_owned(),
        seats,
    }
}

/// A store on `sim` with account `acme` (home us, allowed eu) holding, in both regions,
/// `licenses` of `License` (lic-1 owning `license_key` K-1 in us, lic-2), `seats` of
/// `Seats` and `blobs` of `Raw`.
fn seeded(sim: &SimStorage) -> (Db, AccountId) {
    let db = open(sim);
    let acme = db
        .create_account(NewAccount::new("acme", "us").allow("eu"))
        .unwrap();
    for region in ["us", "eu"] {
        let mut w = db.write_in(acme, region).unwrap();
        let unique = format!("K-1-{region}");
        w.insert_unique(
            &LICENSES,
            b"lic-1",
            &lic("K-1", 5),
            &[Unique::new("license_key", &unique)],
        )
        .unwrap();
        w.insert(&LICENSES, b"lic-2", &lic("K-2", 1)).unwrap();
        w.insert(
            &SEATS,
            b"s",
            &Seats {
                seats: 3,
                max_seats: 10,
            },
        )
        .unwrap();
        w.insert(&BLOBS, b"b", b"raw bytes").unwrap();
        w.commit().unwrap();
    }
    (db, acme)
}

/// The schema a store reports for `V` at version 1.
fn info_of<V: regionkv::Value>(codec: &str) -> (String, String, u16, u64) {
    (V::TYPE_NAME.to_owned(), codec.to_owned(), 1, V::FINGERPRINT)
}

fn parts(s: &SchemaInfo) -> (String, String, u16, u64) {
    (
        s.type_name.clone(),
        s.codec.clone(),
        s.version,
        s.fingerprint,
    )
}

/// Asserts `e` is the mismatch of `table` in `partition` between stored `S` and asked `A`.
#[track_caller]
fn assert_mismatch<S: regionkv::Value, A: regionkv::Value>(
    e: &Error,
    table: &str,
    partition: &str,
) {
    let codec = |raw: bool| if raw { "raw" } else { "rkyv" };
    let s_raw = S::TYPE_NAME == "Raw";
    let a_raw = A::TYPE_NAME == "Raw";
    match e {
        Error::SchemaMismatch {
            table: t,
            partition: p,
            stored,
            asked,
        } => {
            assert_eq!((t.as_str(), p.as_str()), (table, partition), "{e}");
            assert_eq!(parts(stored), info_of::<S>(codec(s_raw)), "{e}");
            assert_eq!(parts(asked), info_of::<A>(codec(a_raw)), "{e}");
            assert!(!e.is_retryable());
            let msg = e.to_string();
            assert!(
                msg.contains(S::TYPE_NAME) && msg.contains(A::TYPE_NAME),
                "the message names both types: {msg}"
            );
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
}

/// Every read path of `db`, through `table` as `A`, of rows written as `S`: each one is a
/// mismatch naming both, none yields data. `key` and `unique` (in namespace `license_key`,
/// owned in us) are read when given.
fn assert_every_read_refused<S: regionkv::Value, A: regionkv::Value>(
    db: &Db,
    acme: AccountId,
    table: &Table<A>,
    key: &[u8],
    unique: Option<&str>,
) {
    let name = table.name();
    let r = db.read(acme).unwrap();
    assert_mismatch::<S, A>(&r.get(table, key).unwrap_err(), name, "us");
    for region in ["us", "eu"] {
        assert_mismatch::<S, A>(&r.get_in(region, table, key).unwrap_err(), name, region);
    }
    // A missing key of a mismatched table is refused too: the table is checked first.
    assert_mismatch::<S, A>(&r.get(table, b"no-such-key").unwrap_err(), name, "us");
    for rows in [
        r.scan(table).unwrap(),
        r.scan_prefix(table, key).unwrap(),
        db.scan_all(table).unwrap(),
    ] {
        let items: Vec<_> = rows.collect();
        assert_eq!(items.len(), 2, "one refusal per region");
        for (item, region) in items.iter().zip(["us", "eu"]) {
            match item {
                Ok(row) => panic!("a row read through the wrong type: {row:?}"),
                Err(e) => assert_mismatch::<S, A>(e, name, region),
            }
        }
    }
    if let Some(v) = unique {
        let e = db.find_unique(table, "license_key", v).unwrap_err();
        assert_mismatch::<S, A>(&e, name, "us");
    }
}

#[test]
fn every_read_path_refuses_another_type() {
    let sim = SimStorage::new();
    let (db, acme) = seeded(&sim);
    let k1 = Some("K-1-us");
    assert_every_read_refused::<License, LicenseV2>(&db, acme, &LICENSES_V2, b"lic-1", k1);
    assert_every_read_refused::<License, Raw>(&db, acme, &LICENSES_RAW, b"lic-1", k1);
    assert_every_read_refused::<Seats, SeatsSwapped>(&db, acme, &SEATS_SWAPPED, b"s", None);
    assert_every_read_refused::<Raw, License>(&db, acme, &BLOBS_AS_LICENSE, b"b", None);

    // The right handles read everything back, in the same `Read` that was refused.
    let r = db.read(acme).unwrap();
    assert!(r.get(&LICENSES_V2, b"lic-1").is_err());
    let rec = r.get(&LICENSES, b"lic-1").unwrap().unwrap();
    assert_eq!((rec.key.as_str(), rec.seats.to_native()), ("K-1", 5));
    let s = r.get(&SEATS, b"s").unwrap().unwrap();
    assert_eq!((s.seats.to_native(), s.max_seats.to_native()), (3, 10));
    let hit = db
        .find_unique(&LICENSES, "license_key", "K-1-us")
        .unwrap()
        .unwrap();
    assert_eq!(hit.key(), b"lic-1");
    assert_eq!(r.scan(&LICENSES).unwrap().count(), 4);
    assert_eq!(
        db.scan_all(&BLOBS).unwrap().filter(|r| r.is_ok()).count(),
        2
    );
    // The passed checks are remembered per region (a new snapshot does not read
    // `_schemas` again for them): another type is still refused on every path.
    for _ in 0..2 {
        assert!(
            db.read(acme)
                .unwrap()
                .get(&LICENSES, b"lic-1")
                .unwrap()
                .is_some()
        );
        assert_every_read_refused::<License, LicenseV2>(&db, acme, &LICENSES_V2, b"lic-1", k1);
        assert_every_read_refused::<Raw, License>(&db, acme, &BLOBS_AS_LICENSE, b"b", None);
    }
    assert!(db.audit().unwrap().is_clean());
}

/// One operation of a write through a wrong handle.
type WrongOp = fn(&mut regionkv::Write) -> regionkv::Result<()>;

#[test]
fn a_write_of_another_type_fails_at_commit_and_writes_nothing() {
    let sim = SimStorage::new();
    let (db, acme) = seeded(&sim);
    db.checkpoint().unwrap();
    fn v2() -> LicenseV2 {
        LicenseV2 {
            key: "K-9".into(),
            seats: 1,
            max_seats: 2,
        }
    }
    let cases: Vec<(&str, WrongOp)> = vec![
        ("insert of LicenseV2", |w| {
            w.insert(&LICENSES_V2, b"lic-9", &v2())
        }),
        ("insert_unique of LicenseV2", |w| {
            w.insert_unique(
                &LICENSES_V2,
                b"lic-9",
                &v2(),
                &[Unique::new("license_key", "K-9")],
            )
        }),
        ("insert_unique over an existing record", |w| {
            w.insert_unique(
                &LICENSES_V2,
                b"lic-1",
                &v2(),
                &[Unique::new("license_key", "K-9")],
            )
        }),
        ("remove of LicenseV2", |w| w.remove(&LICENSES_V2, b"lic-1")),
        ("remove as Raw", |w| w.remove(&LICENSES_RAW, b"lic-1")),
        ("insert as Raw", |w| {
            w.insert(&LICENSES_RAW, b"lic-9", b"bytes")
        }),
        ("insert of SeatsSwapped", |w| {
            w.insert(
                &SEATS_SWAPPED,
                b"s",
                &SeatsSwapped {
                    max_seats: 1,
                    seats: 2,
                },
            )
        }),
    ];
    for (what, op) in cases {
        for region in ["us", "eu"] {
            let before = sim_snapshot(&sim);
            let mut w = db.write_in(acme, region).unwrap();
            // A right-typed operation of another table rides along: it must not land either.
            w.insert(&BLOBS, b"b2", b"more").unwrap();
            op(&mut w)
                .unwrap_or_else(|e| panic!("{what}: buffered ops are checked at commit: {e}"));
            let e = w.commit().unwrap_err();
            assert!(
                matches!(&e, Error::SchemaMismatch { partition, .. } if partition == region),
                "{what} in {region}: {e:?}"
            );
            assert!(!e.is_retryable());
            assert_same_files(&before, &sim_snapshot(&sim), what);
            assert!(
                !db.is_taken("license_key", "K-9").unwrap(),
                "{what}: K-9 claimed"
            );
            let r = db.read(acme).unwrap();
            assert!(r.get_in(region, &BLOBS, b"b2").unwrap().is_none(), "{what}");
            let rec = r.get_in(region, &LICENSES, b"lic-1").unwrap().unwrap();
            assert_eq!(rec.key.as_str(), "K-1", "{what}");
        }
    }
    // K-9 is still free for the right type.
    let mut w = db.write(acme).unwrap();
    w.insert_unique(
        &LICENSES,
        b"lic-9",
        &lic("K-9", 1),
        &[Unique::new("license_key", "K-9")],
    )
    .unwrap();
    w.commit().unwrap();
    assert!(db.is_taken("license_key", "K-9").unwrap());
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn one_write_holds_one_type_per_table_name() {
    let sim = SimStorage::new();
    let (db, acme) = seeded(&sim);
    let v2 = LicenseV2 {
        key: "K-7".into(),
        seats: 1,
        max_seats: 2,
    };

    let mut w = db.write(acme).unwrap();
    w.insert(&LICENSES, b"lic-7", &lic("K-7", 7)).unwrap();
    let e = w.insert(&LICENSES_V2, b"lic-8", &v2).unwrap_err();
    assert_mismatch::<License, LicenseV2>(&e, "licenses", "us");
    let e = w
        .insert_unique(
            &LICENSES_V2,
            b"lic-8",
            &v2,
            &[Unique::new("license_key", "K-8")],
        )
        .unwrap_err();
    assert_mismatch::<License, LicenseV2>(&e, "licenses", "us");
    let e = w.remove(&LICENSES_RAW, b"lic-1").unwrap_err();
    assert_mismatch::<License, Raw>(&e, "licenses", "us");
    // The refused operations were not buffered: the commit writes the first one only.
    w.commit().unwrap();
    let r = db.read(acme).unwrap();
    assert_eq!(
        r.get(&LICENSES, b"lic-7")
            .unwrap()
            .unwrap()
            .seats
            .to_native(),
        7
    );
    assert!(r.get(&LICENSES, b"lic-8").unwrap().is_none());
    assert!(r.get(&LICENSES, b"lic-1").unwrap().is_some());
    assert!(!db.is_taken("license_key", "K-8").unwrap());

    // Whatever the operation, the first handle of a name in a write decides it: a remove
    // of LicenseV2 makes a later insert of License the mismatch.
    let mut w = db.write(acme).unwrap();
    w.remove(&LICENSES_V2, b"lic-2").unwrap();
    let e = w.insert(&LICENSES, b"lic-2", &lic("K-2", 2)).unwrap_err();
    assert_mismatch::<LicenseV2, License>(&e, "licenses", "us");
    drop(w);
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn the_mismatch_survives_reopen() {
    let sim = SimStorage::new();
    let (db, acme) = seeded(&sim);
    db.close().unwrap();
    let db = open(&sim);
    assert_every_read_refused::<License, LicenseV2>(
        &db,
        acme,
        &LICENSES_V2,
        b"lic-1",
        Some("K-1-us"),
    );
    let mut w = db.write(acme).unwrap();
    w.insert(
        &LICENSES_V2,
        b"lic-9",
        &LicenseV2 {
            key: "x".into(),
            seats: 1,
            max_seats: 1,
        },
    )
    .unwrap();
    assert_mismatch::<License, LicenseV2>(&w.commit().unwrap_err(), "licenses", "us");
    drop(db);
    // After a power loss too.
    sim.crash();
    let db = open(&sim);
    assert_every_read_refused::<Seats, SeatsSwapped>(&db, acme, &SEATS_SWAPPED, b"s", None);
    assert!(db.audit().unwrap().is_clean());
}

/// Intended: schemas are recorded per region. A region where the table has never been
/// written takes whatever type writes it first, even while another region holds the table
/// with another type; each region then refuses the other's type. (Regions are separate
/// files that can be moved, restored or disabled on their own; the store does not keep a
/// cross-region schema.)
#[test]
fn schemas_are_per_region() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let acme = db
        .create_account(NewAccount::new("acme", "us").allow("eu"))
        .unwrap();
    let mut w = db.write_in(acme, "us").unwrap();
    w.insert(&LICENSES, b"lic-1", &lic("K-1", 5)).unwrap();
    w.commit().unwrap();

    let v2 = LicenseV2 {
        key: "K-1".into(),
        seats: 5,
        max_seats: 9,
    };
    let mut w = db.write_in(acme, "eu").unwrap();
    w.insert(&LICENSES_V2, b"lic-1", &v2).unwrap();
    w.commit()
        .expect("eu has no `licenses` table yet: it takes LicenseV2");

    let r = db.read(acme).unwrap();
    let eu = r.get_in("eu", &LICENSES_V2, b"lic-1").unwrap().unwrap();
    assert_eq!(eu.max_seats.to_native(), 9);
    let us = r.get_in("us", &LICENSES, b"lic-1").unwrap().unwrap();
    assert_eq!(us.seats.to_native(), 5);
    assert_mismatch::<License, LicenseV2>(
        &r.get_in("us", &LICENSES_V2, b"lic-1").unwrap_err(),
        "licenses",
        "us",
    );
    assert_mismatch::<LicenseV2, License>(
        &r.get_in("eu", &LICENSES, b"lic-1").unwrap_err(),
        "licenses",
        "eu",
    );
    // A scan yields each region's answer: the rows of the region that holds the type, a
    // mismatch for the other.
    let items: Vec<_> = r.scan(&LICENSES).unwrap().collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().key(), b"lic-1");
    assert_mismatch::<LicenseV2, License>(items[1].as_ref().unwrap_err(), "licenses", "eu");
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn string_and_box_str_are_not_read_as_each_other() {
    // `String` archives inline when short; `Box<str>` always behind a pointer.
    const AS_STRING: Table<License> = Table::new("keys");
    const AS_BOX: Table<LicenseBoxStr> = Table::new("keys");
    let sim = SimStorage::new();
    let db = open(&sim);
    let acme = db.create_account(NewAccount::new("acme", "us")).unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert(&AS_STRING, b"short", &lic("K-1", 1)).unwrap();
    w.commit().unwrap();
    let r = db.read(acme).unwrap();
    assert_mismatch::<License, LicenseBoxStr>(&r.get(&AS_BOX, b"short").unwrap_err(), "keys", "us");
}

#[test]
fn vec_and_boxed_slice_read_as_each_other() {
    // Equal fingerprints promise readable records: `Vec<u8>` and `Box<[u8]>` archive alike.
    record!(BytesVec { data: Vec<u8>, n: u32 });
    record!(BytesBox { data: Box<[u8]>, n: u32 });
    assert_eq!(BytesVec::FINGERPRINT, BytesBox::FINGERPRINT);
    const AS_VEC: Table<BytesVec> = Table::new("bytes");
    const AS_BOX: Table<BytesBox> = Table::new("bytes");
    let sim = SimStorage::new();
    let db = open(&sim);
    let acme = db.create_account(NewAccount::new("acme", "us")).unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert(
        &AS_VEC,
        b"k",
        &BytesVec {
            data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            n: 7,
        },
    )
    .unwrap();
    w.commit().unwrap();
    let r = db.read(acme).unwrap();
    let rec = r.get(&AS_BOX, b"k").unwrap().unwrap();
    assert_eq!(&rec.data[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(rec.n.to_native(), 7);
}

#[test]
fn enums_with_swapped_discriminants_are_not_read_as_each_other() {
    const PLANS: Table<PlanNumbered> = Table::new("plans");
    const PLANS_SWAPPED: Table<PlanNumberedSwapped> = Table::new("plans");
    let sim = SimStorage::new();
    let db = open(&sim);
    let acme = db.create_account(NewAccount::new("acme", "us")).unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert(&PLANS, b"k", &PlanNumbered::Free).unwrap();
    w.commit().unwrap();
    let r = db.read(acme).unwrap();
    assert_mismatch::<PlanNumbered, PlanNumberedSwapped>(
        &r.get(&PLANS_SWAPPED, b"k").unwrap_err(),
        "plans",
        "us",
    );
}

// ---- 3. audit and damaged schema data ---------------------------------------------------

const SCHEMAS_T: redb::TableDefinition<(&str, u16), &[u8]> = redb::TableDefinition::new("_schemas");
const LICENSES_T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("t/licenses");

/// Rewrites the closed store's `us` region file through redb.
fn edit_us(sim: &SimStorage, edit: impl FnOnce(&redb::WriteTransaction)) {
    let path = sim_region(dir(), "us");
    assert_eq!(path, regionkv::layout::region_file(Path::new(dir()), "us"));
    let bytes = edit_with_redb(&sim.live_bytes(&path).unwrap(), |db| {
        let w = db.begin_write().unwrap();
        edit(&w);
        w.commit().unwrap();
    });
    sim.set_bytes(&path, bytes);
}

fn data_key(acme: AccountId, key: &[u8]) -> Vec<u8> {
    let mut k = acme.get().to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

/// An envelope of schema `version` as the store seals it, CRC and all.
fn seal(table: &str, dkey: &[u8], codec: u8, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(&[table.len() as u8]);
    h.update(table.as_bytes());
    h.update(&(dkey.len() as u32).to_le_bytes());
    h.update(dkey);
    h.update(&[codec]);
    h.update(&version.to_le_bytes());
    h.update(payload);
    let mut out = vec![2, codec];
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A closed store: account acme in us with `licenses` lic-1 (owning K-1) and lic-2.
fn closed_store(sim: &SimStorage) -> AccountId {
    let db = open(sim);
    let acme = db.create_account(NewAccount::new("acme", "us")).unwrap();
    let mut w = db.write(acme).unwrap();
    w.insert_unique(
        &LICENSES,
        b"lic-1",
        &lic("K-1", 5),
        &[Unique::new("license_key", "K-1")],
    )
    .unwrap();
    w.insert(&LICENSES, b"lic-2", &lic("K-2", 1)).unwrap();
    w.commit().unwrap();
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
    db.close().unwrap();
    acme
}

#[test]
fn the_seal_here_is_the_stores_seal() {
    let acme = AccountId::from_raw(7);
    let bytes = regionkv::encode_value(&LICENSES, acme, b"k", &lic("K", 1)).unwrap();
    let dkey = data_key(acme, b"k");
    assert_eq!(seal("licenses", &dkey, 1, 1, &bytes[8..]), bytes);
}

/// `decode_value`, like a read from the store, looks at the schema version before it
/// interprets the payload: a record of another version is a mismatch whatever its bytes.
#[test]
fn decode_value_checks_the_version_before_the_payload() {
    let acme = AccountId::from_raw(3);
    let dkey = data_key(acme, b"k");
    for payload in [
        &b""[..],
        b"\xff\xff\xff",
        b"not an archive of License at all",
    ] {
        let v2 = seal("licenses", &dkey, 1, 2, payload);
        match regionkv::decode_value(&LICENSES, acme, b"k", &v2) {
            Err(Error::SchemaMismatch { stored, asked, .. }) => {
                assert_eq!((stored.version, asked.version), (2, 1));
            }
            other => panic!("{payload:?}: {:?}", other.err()),
        }
        // The same bytes at version 1: the payload is validated (too short for a
        // `License`), and refused.
        if payload.len() < 12 {
            let v1 = seal("licenses", &dkey, 1, 1, payload);
            assert!(matches!(
                regionkv::decode_value(&LICENSES, acme, b"k", &v1),
                Err(Error::Corrupt { .. })
            ));
        }
        // A damaged version is damage (the CRC covers it), not a mismatch.
        let mut bad = regionkv::encode_value(&LICENSES, acme, b"k", &lic("K", 1)).unwrap();
        bad[2] ^= 0x02;
        assert!(matches!(
            regionkv::decode_value(&LICENSES, acme, b"k", &bad),
            Err(Error::Corrupt { .. })
        ));
    }
}

#[test]
fn a_record_of_an_unrecorded_schema_version() {
    let sim = SimStorage::new();
    let acme = closed_store(&sim);
    let dkey = data_key(acme, b"lic-1");
    // lic-1 rewritten as schema version 2, same payload (so the usage counters still hold).
    edit_us(&sim, |w| {
        let mut t = w.open_table(LICENSES_T).unwrap();
        let old = t.get(dkey.as_slice()).unwrap().unwrap().value().to_vec();
        assert_eq!(
            &old[..4],
            &[2, 1, 1, 0],
            "envelope v2, rkyv, schema version 1"
        );
        let v2 = seal("licenses", &dkey, 1, 2, &old[8..]);
        t.insert(dkey.as_slice(), v2.as_slice()).unwrap();
    });
    let db = open(&sim);
    let audit = db.audit().unwrap();
    let kinds: Vec<_> = audit.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::Schema], "{audit}");
    let f = &audit.findings()[0];
    assert_eq!(
        (f.partition.as_str(), f.table.as_deref()),
        ("us", Some("t/licenses"))
    );
    assert_eq!(f.key.as_deref(), Some(dkey.as_slice()));
    assert!(f.detail.contains("not recorded"), "{f}");

    // Unrecorded version: damage. The other record still reads.
    let r = db.read(acme).unwrap();
    let e = r.get(&LICENSES, b"lic-1").unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { what, .. } if what.contains("version 2")),
        "{e:?}"
    );
    assert!(r.get(&LICENSES, b"lic-2").unwrap().is_some());
    let items: Vec<_> = r.scan(&LICENSES).unwrap().collect();
    assert!(matches!(items[0], Err(Error::Corrupt { .. })));
    assert!(items[1].is_ok());
    assert!(matches!(
        db.find_unique(&LICENSES, "license_key", "K-1"),
        Err(Error::Corrupt { .. })
    ));
    // Without a store, another version is all `decode_value` can tell.
    let v1 = regionkv::encode_value(&LICENSES, acme, b"lic-1", &lic("K-1", 5)).unwrap();
    assert!(matches!(
        regionkv::decode_value(
            &LICENSES,
            acme,
            b"lic-1",
            &seal("licenses", &dkey, 1, 2, &v1[8..])
        ),
        Err(Error::SchemaMismatch { .. })
    ));
    db.close().unwrap();
    drop((items, r));

    // Once version 2 is recorded (as the newest), the record is a mismatch for a version-1
    // handle, naming what version 2 holds; the version-1 records are findings: older than
    // the newest.
    edit_us(&sim, |w| {
        let mut t = w.open_table(SCHEMAS_T).unwrap();
        let mut row = vec![1u8];
        row.extend_from_slice(&LicenseV2::FINGERPRINT.to_le_bytes());
        row.extend_from_slice(b"LicenseV2");
        t.insert(("licenses", 2), row.as_slice()).unwrap();
    });
    let db = open(&sim);
    let r = db.read(acme).unwrap();
    match r.get(&LICENSES, b"lic-1").unwrap_err() {
        Error::SchemaMismatch { stored, asked, .. } => {
            assert_eq!(
                parts(&stored),
                ("LicenseV2".into(), "rkyv".into(), 2, LicenseV2::FINGERPRINT)
            );
            assert_eq!(parts(&asked), info_of::<License>("rkyv"));
        }
        e => panic!("expected a mismatch, got {e:?}"),
    }
    assert!(r.get(&LICENSES, b"lic-2").unwrap().is_some());
    let audit = db.audit().unwrap();
    let schema: Vec<_> = audit.findings_of(FindingKind::Schema).collect();
    assert_eq!(schema.len(), 1, "{audit}");
    assert_eq!(
        schema[0].key.as_deref(),
        Some(data_key(acme, b"lic-2").as_slice())
    );
    assert!(schema[0].detail.contains("newest is 2"), "{}", schema[0]);
}

#[test]
fn a_table_without_its_schema_row() {
    let sim = SimStorage::new();
    let acme = closed_store(&sim);
    edit_us(&sim, |w| {
        let mut t = w.open_table(SCHEMAS_T).unwrap();
        assert!(t.remove(("licenses", 1)).unwrap().is_some());
    });
    let db = open(&sim);
    let audit = db.audit().unwrap();
    let kinds: Vec<_> = audit.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::Schema], "{audit}");
    let f = &audit.findings()[0];
    assert_eq!(
        (f.partition.as_str(), f.table.as_deref()),
        ("us", Some("t/licenses"))
    );
    assert!(f.detail.contains("2 rows but no schema row"), "{f}");

    let r = db.read(acme).unwrap();
    for e in [
        r.get(&LICENSES, b"lic-1").unwrap_err(),
        r.get(&LICENSES_V2, b"lic-1").unwrap_err(),
        r.scan(&LICENSES).unwrap().next().unwrap().unwrap_err(),
        db.find_unique(&LICENSES, "license_key", "K-1").unwrap_err(),
    ] {
        assert!(
            matches!(&e, Error::Corrupt { what, .. } if what.contains("no schema row")),
            "{e:?}"
        );
    }
    // A write cannot adopt the table either (it holds rows of an unknown type).
    let before = sim_snapshot(&sim);
    let mut w = db.write(acme).unwrap();
    w.insert(&LICENSES, b"lic-3", &lic("K-3", 1)).unwrap();
    assert!(matches!(w.commit(), Err(Error::Corrupt { .. })));
    assert_same_files(
        &before,
        &sim_snapshot(&sim),
        "write to a table without schema row",
    );
}

#[test]
fn an_undecodable_schema_row() {
    let sim = SimStorage::new();
    let acme = closed_store(&sim);
    edit_us(&sim, |w| {
        let mut t = w.open_table(SCHEMAS_T).unwrap();
        t.insert(("licenses", 1), b"\x01short".as_slice()).unwrap();
    });
    let db = open(&sim);
    let audit = db.audit().unwrap();
    let undecodable: Vec<_> = audit.findings_of(FindingKind::Undecodable).collect();
    assert_eq!(undecodable.len(), 1, "{audit}");
    let f = undecodable[0];
    assert_eq!(
        (f.partition.as_str(), f.table.as_deref()),
        ("us", Some("_schemas"))
    );
    assert!(f.detail.contains("`licenses`"), "{f}");
    // The table's rows are of no known schema then.
    assert!(
        audit
            .findings_of(FindingKind::Schema)
            .all(|f| f.table.as_deref() == Some("t/licenses")),
        "{audit}"
    );

    let r = db.read(acme).unwrap();
    for e in [
        r.get(&LICENSES, b"lic-1").unwrap_err(),
        r.get_in("us", &LICENSES_RAW, b"lic-2").unwrap_err(),
        r.scan(&LICENSES).unwrap().next().unwrap().unwrap_err(),
        db.scan_all(&LICENSES).unwrap().next().unwrap().unwrap_err(),
        db.find_unique(&LICENSES, "license_key", "K-1").unwrap_err(),
    ] {
        assert!(
            matches!(&e, Error::Corrupt { what, .. } if what.contains("undecodable")),
            "{e:?}"
        );
    }
    let before = sim_snapshot(&sim);
    let mut w = db.write(acme).unwrap();
    w.remove(&LICENSES, b"lic-1").unwrap();
    assert!(matches!(w.commit(), Err(Error::Corrupt { .. })));
    assert_same_files(
        &before,
        &sim_snapshot(&sim),
        "write to a table of undecodable schema",
    );
    assert!(db.is_taken("license_key", "K-1").unwrap());
}

// ---- 4. written as one shape, read as another -------------------------------------------

/// A field value, for comparing records of different types field by field.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    U32(u32),
    U64(u64),
    Str(String),
    Bytes(Vec<u8>),
    OptU32(Option<u32>),
}

/// A field type of the alphabet: its structural kind, a value from a seed, its `Val`.
trait Field: Sized {
    const KIND: &'static str;
    fn make(seed: u64) -> Self;
    fn val(&self) -> Val;
}

impl Field for u32 {
    const KIND: &'static str = "u32";
    fn make(seed: u64) -> Self {
        seed as u32
    }
    fn val(&self) -> Val {
        Val::U32(*self)
    }
}
impl Field for u64 {
    const KIND: &'static str = "u64";
    fn make(seed: u64) -> Self {
        seed.rotate_left(17)
    }
    fn val(&self) -> Val {
        Val::U64(*self)
    }
}
impl Field for String {
    const KIND: &'static str = "string";
    fn make(seed: u64) -> Self {
        // Short (inline) and long strings.
        "k".repeat((seed % 19) as usize) + &seed.to_string()
    }
    fn val(&self) -> Val {
        Val::Str(self.clone())
    }
}
impl Field for Box<str> {
    const KIND: &'static str = "box-str";
    fn make(seed: u64) -> Self {
        String::make(seed).into_boxed_str()
    }
    fn val(&self) -> Val {
        Val::Str(self.to_string())
    }
}
impl Field for Vec<u8> {
    const KIND: &'static str = "bytes";
    fn make(seed: u64) -> Self {
        seed.to_le_bytes()[..(seed % 9) as usize].to_vec()
    }
    fn val(&self) -> Val {
        Val::Bytes(self.clone())
    }
}
impl Field for Box<[u8]> {
    // Archived exactly like `Vec<u8>`.
    const KIND: &'static str = "bytes";
    fn make(seed: u64) -> Self {
        Vec::<u8>::make(seed).into_boxed_slice()
    }
    fn val(&self) -> Val {
        Val::Bytes(self.to_vec())
    }
}
impl Field for Option<u32> {
    const KIND: &'static str = "option-u32";
    fn make(seed: u64) -> Self {
        (!seed.is_multiple_of(3)).then_some(seed as u32 ^ 0x5555)
    }
    fn val(&self) -> Val {
        Val::OptU32(*self)
    }
}

/// What the property runs for each shape: write a value made from a seed, read a record
/// back as the shape's fields.
type Fields = Vec<(&'static str, Val)>;

trait Shape: regionkv::Value<Input = Self> + Sized {
    fn make(seed: u64) -> Self;
    fn fields(&self) -> Fields;
    fn read_back(rec: &Self::View) -> Self;
    fn structure() -> Vec<(&'static str, &'static str)>;
}

macro_rules! shapes {
    ($($name:ident { $($f:ident : $t:ty),* })*) => {
        $(
            record!($name { $($f: $t),* });
            impl Shape for $name {
                fn make(seed: u64) -> Self {
                    let mut _i = 0u64;
                    $name { $($f: { _i += 1; <$t as Field>::make(seed.wrapping_mul(_i * 0x9e37_79b9)) }),* }
                }
                fn fields(&self) -> Fields {
                    vec![$((stringify!($f), self.$f.val())),*]
                }
                fn read_back(rec: &Self::View) -> Self {
                    rkyv::deserialize::<$name, rkyv::rancor::Error>(rec).expect("deserialize")
                }
                fn structure() -> Vec<(&'static str, &'static str)> {
                    vec![$((stringify!($f), <$t as Field>::KIND)),*]
                }
            }
        )*
        const SHAPES: &[ShapeFns] = &[$(ShapeFns {
            name: stringify!($name),
            fingerprint: <$name as Schema>::FINGERPRINT,
            structure: <$name as Shape>::structure,
            write: write_shape::<$name>,
            read: read_shape::<$name>,
        }),*];
    };
}

struct ShapeFns {
    name: &'static str,
    fingerprint: u64,
    structure: fn() -> Vec<(&'static str, &'static str)>,
    write: fn(&Db, AccountId, &'static str, u64) -> Fields,
    read: fn(&Db, AccountId, &'static str) -> regionkv::Result<Option<Fields>>,
}

fn write_shape<S: Shape>(db: &Db, acct: AccountId, table: &'static str, seed: u64) -> Fields {
    let v = S::make(seed);
    let mut w = db.write(acct).unwrap();
    w.insert(&Table::<S>::new(table), b"k", &v).unwrap();
    w.commit().unwrap();
    v.fields()
}

fn read_shape<S: Shape>(
    db: &Db,
    acct: AccountId,
    table: &'static str,
) -> regionkv::Result<Option<Fields>> {
    let t = Table::<S>::new(table);
    let r = db.read(acct)?;
    let got = r.get(&t, b"k")?.map(|rec| S::read_back(&rec).fields());
    // The scan agrees with the point read.
    let scanned: Vec<_> = r.scan(&t)?.collect();
    match (&got, scanned.as_slice()) {
        (Some(f), [Ok(row)]) => assert_eq!(&S::read_back(row.record()).fields(), f),
        (None, []) => {}
        (_, other) => panic!(
            "get and scan disagree: {:?}",
            other.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
        ),
    }
    Ok(got)
}

shapes! {
    P0 { a: u32, b: String }
    P1 { a: u32, b: String }
    P2 { a: u32, b: String, c: u64 }
    P3 { a: u32 }
    P4 { b: String, a: u32 }
    P5 { a: u64, b: String }
    P6 { a: u32, b: Vec<u8> }
    P7 { a: Option<u32>, b: String }
    P8 { c: u32, b: String }
    P9 { a: u32, c: u32 }
    P10 { c: u32, a: u32 }
    P11 { a: u32, b: Box<str> }
    P12 { a: u32, b: Box<[u8]> }
    P13 { a: u32, b: String, c: Vec<u8> }
}

#[test]
fn shapes_are_distinct_by_fingerprint_unless_structurally_identical() {
    for (i, x) in SHAPES.iter().enumerate() {
        for y in &SHAPES[i + 1..] {
            let same = (x.structure)() == (y.structure)();
            assert_eq!(
                x.fingerprint == y.fingerprint,
                same,
                "{} and {}: structurally identical {same}",
                x.name,
                y.name
            );
        }
    }
    // The family has both kinds of pairs.
    assert_eq!(SHAPES[0].fingerprint, SHAPES[1].fingerprint);
    assert_eq!(SHAPES[6].fingerprint, SHAPES[12].fingerprint);
}

#[test]
fn a_value_reads_back_through_another_type_exactly_when_fingerprints_match() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim).region("us").open(dir()).unwrap();
    let acct = db.create_account(NewAccount::new("p", "us")).unwrap();
    let n = SHAPES.len();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0u32);
    runner
        .run(&(0..n, 0..n, any::<u64>()), |(wi, ri, seed)| {
            case.set(case.get() + 1);
            // A fresh table per case (shrinking reruns cases): each is first written here.
            let table: &'static str = Box::leak(format!("p{}", case.get()).into_boxed_str());
            let (w, r) = (&SHAPES[wi], &SHAPES[ri]);
            let written = (w.write)(&db, acct, table, seed);
            match (r.read)(&db, acct, table) {
                Ok(Some(got)) => {
                    prop_assert_eq!(
                        w.fingerprint,
                        r.fingerprint,
                        "{} read as {}",
                        w.name,
                        r.name
                    );
                    prop_assert_eq!(got, written);
                }
                Ok(None) => prop_assert!(false, "the record vanished"),
                Err(Error::SchemaMismatch { stored, asked, .. }) => {
                    prop_assert_ne!(
                        w.fingerprint,
                        r.fingerprint,
                        "{} refused as {}",
                        w.name,
                        r.name
                    );
                    prop_assert_eq!(
                        (stored.fingerprint, stored.type_name.as_str()),
                        (w.fingerprint, w.name)
                    );
                    prop_assert_eq!(
                        (asked.fingerprint, asked.type_name.as_str()),
                        (r.fingerprint, r.name)
                    );
                }
                Err(e) => prop_assert!(false, "{} read as {}: {e:?}", w.name, r.name),
            }
            Ok(())
        })
        .unwrap();
    assert!(db.audit().unwrap().is_clean());
}
