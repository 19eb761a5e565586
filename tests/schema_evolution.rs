//! Schema evolution: a table declares its current version and how older versions read
//! (`Table::version`, `Table::upgrade_from`); old records read as their upgrade (owned,
//! `Record::is_upgraded`), `Db::migrate` rewrites them in batches, resumably across
//! crashes, and a handle that cannot read what a table holds can neither read nor add to it.

mod common;

use common::sim::*;
use regionkv::rkyv;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, FindingKind, NewAccount, Schema, Table, Unique, Upgrade};

const DIR: &str = "/evo";

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct LicenseV1 {
    key: String,
    seats: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    seats: u32,
    max_seats: u32,
    note: String,
}

impl Upgrade<License> for LicenseV1 {
    fn upgrade(old: &ArchivedLicenseV1) -> License {
        let seats = old.seats.to_native();
        License {
            key: old.key.to_string(),
            seats,
            max_seats: seats * 2,
            note: format!("from v1 ({} seats)", seats),
        }
    }
}

/// The upgrade, on owned values, to compute what each record must read as.
fn upgraded(v1: &LicenseV1) -> License {
    License {
        key: v1.key.clone(),
        seats: v1.seats,
        max_seats: v1.seats * 2,
        note: format!("from v1 ({} seats)", v1.seats),
    }
}

const V1: Table<LicenseV1> = Table::new("licenses");
const V2: Table<License> = Table::new("licenses")
    .version(2)
    .upgrade_from::<LicenseV1>(1);
/// Version 2 without the upgrade: cannot read version-1 records.
const V2_BARE: Table<License> = Table::new("licenses").version(2);

fn v1(i: u32) -> LicenseV1 {
    LicenseV1 {
        key: format!("K-{i:04}"),
        // A varying size, so a rewrite changes the byte counters.
        seats: i % 17 + 1,
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("l{i:04}").into_bytes()
}

fn assert_is(r: &ArchivedLicense, want: &License) {
    assert_eq!(r.key.as_str(), want.key);
    assert_eq!(r.seats.to_native(), want.seats);
    assert_eq!(r.max_seats.to_native(), want.max_seats);
    assert_eq!(r.note.as_str(), want.note);
}

/// `n` v1 licenses of one account in us, each owning its key as a unique value.
fn seed(sim: &SimStorage, n: u32) -> AccountId {
    let db = quiet_us_eu(sim, DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("acme", "us").allow("eu"))
        .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let mut w = db.write(a).unwrap();
        for &i in chunk {
            let l = v1(i);
            w.insert_unique(&V1, key(i), &l, &[Unique::new("license_key", &l.key)])
                .unwrap();
        }
        w.commit().unwrap();
    }
    db.close().unwrap();
    a
}

/// Every record reads as the upgrade of its v1 value; returns how many were upgraded on
/// read (not yet migrated).
fn check_all(db: &Db, a: AccountId, n: u32) -> usize {
    let r = db.read(a).unwrap();
    let mut upgraded_reads = 0;
    for i in 0..n {
        let rec = r.get(&V2, key(i)).unwrap().expect("record present");
        assert_is(&rec, &upgraded(&v1(i)));
        upgraded_reads += rec.is_upgraded() as usize;
    }
    let scanned: Vec<_> = r.scan(&V2).unwrap().map(|row| row.unwrap()).collect();
    assert_eq!(scanned.len(), n as usize);
    for row in &scanned {
        let i: u32 = std::str::from_utf8(&row.key()[1..])
            .unwrap()
            .parse()
            .unwrap();
        assert_is(row.record(), &upgraded(&v1(i)));
    }
    let hit = db
        .find_unique(&V2, "license_key", v1(3).key)
        .unwrap()
        .unwrap();
    assert_is(hit.record(), &upgraded(&v1(3)));
    upgraded_reads
}

/// The scenario: v1 records, reopen with v2 declared, read all (upgraded), migrate with a
/// crash injected midway, reopen, migrate again: every record is v2 (read in place) and
/// equal to the upgrade of its v1 value; the audit is clean at the end.
#[test]
fn migrate_with_a_crash_midway_then_again_rewrites_every_record() {
    const N: u32 = 230;
    let sim = SimStorage::new();
    let a = seed(&sim, N);

    let db = quiet_us_eu(&sim, DIR).unwrap();
    assert_eq!(
        check_all(&db, a, N),
        N as usize,
        "before migrate: all upgraded"
    );
    // Old records are reported as outdated until migrated.
    let audit = db.audit().unwrap();
    assert!(
        audit
            .findings()
            .iter()
            .all(|f| f.kind == FindingKind::Schema),
        "{audit}"
    );
    assert_eq!(audit.findings().len(), 0, "no v2 is recorded yet: {audit}");

    // Crash after the second batch's commit: the third batch's sync fails.
    let mut batches = 0;
    let mut done_before_crash = 0;
    let r = db.migrate_with(&V2, 50, |p| {
        batches += 1;
        done_before_crash = p.rewritten;
        if batches == 2 {
            sim.fail_file_after(sim_region(DIR, "us"), 0, FaultOn::Syncs);
        }
    });
    assert!(r.is_err(), "the injected fault stops the migration: {r:?}");
    assert_eq!(done_before_crash, 100);
    sim.clear_fault();
    sim.crash();
    drop(db);

    let db = quiet_us_eu(&sim, DIR).unwrap();
    let left = check_all(&db, a, N);
    assert_eq!(
        left,
        (N - 100) as usize,
        "the two committed batches stay migrated"
    );
    let mut seen = Vec::new();
    let report = db
        .migrate_with(&V2, 64, |p| seen.push((p.region.clone(), p.rewritten)))
        .unwrap();
    assert_eq!(report.rewritten, (N - 100) as u64);
    assert_eq!(report.regions, vec!["us".to_owned(), "eu".to_owned()]);
    assert!(report.skipped.is_empty());
    assert!(seen.iter().all(|(r, _)| r == "us"), "{seen:?}");
    assert_eq!(seen.last().map(|s| s.1), Some((N - 100) as u64));
    assert_eq!(
        check_all(&db, a, N),
        0,
        "after migrate: every read in place"
    );
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
    // A second migrate has nothing to do.
    assert_eq!(db.migrate(&V2).unwrap().rewritten, 0);
    db.close().unwrap();

    // The old handle can no longer read the table's records (they are v2 now).
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let r = db.read(a).unwrap();
    let e = r.get(&V1, key(0)).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { .. }), "{e}");
}

/// Outdated records are an audit finding once a newer version is recorded in the region
/// (a write of v2 registers it), and not after migrate.
#[test]
fn audit_reports_records_older_than_the_newest_version() {
    let sim = SimStorage::new();
    let a = seed(&sim, 5);
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&V2, b"new", &upgraded(&v1(99))).unwrap();
    w.commit().unwrap();
    let audit = db.audit().unwrap();
    assert_eq!(audit.findings().len(), 5, "{audit}");
    for f in audit.findings() {
        assert_eq!(f.kind, FindingKind::Schema, "{f}");
        assert!(f.to_string().contains("migrate"), "{f}");
    }
    assert_eq!(db.migrate(&V2).unwrap().rewritten, 5);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

/// A handle that does not declare how version 1 reads can neither read v1 records nor
/// register its version in a table of them; nothing is written.
#[test]
fn a_version_without_an_upgrade_for_what_is_stored_is_refused() {
    let sim = SimStorage::new();
    let a = seed(&sim, 3);
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let r = db.read(a).unwrap();
    let e = r.get(&V2_BARE, key(0)).map(|_| ()).unwrap_err();
    match &e {
        Error::SchemaMismatch { stored, asked, .. } => {
            assert_eq!((stored.version, asked.version), (1, 2), "{e}");
            assert_eq!(stored.type_name, "LicenseV1");
        }
        other => panic!("{other}"),
    }
    let before = common::files::sim_snapshot(&sim);
    let mut w = db.write(a).unwrap();
    w.insert(&V2_BARE, b"x", &upgraded(&v1(1))).unwrap();
    let e = w.commit().unwrap_err();
    assert!(matches!(e, Error::SchemaMismatch { .. }), "{e}");
    common::files::assert_same_files(&before, &common::files::sim_snapshot(&sim), "refused");
    assert!(matches!(
        db.migrate(&V2_BARE),
        Err(Error::SchemaMismatch { .. })
    ));
    common::files::assert_same_files(&before, &common::files::sim_snapshot(&sim), "refused");
    // With the upgrade declared, the same write is accepted.
    let mut w = db.write(a).unwrap();
    w.insert(&V2, b"x", &upgraded(&v1(1))).unwrap();
    w.commit().unwrap();
}

/// Declared old versions must be below the handle's version, and a declared old version
/// recorded as another type is a mismatch, not an upgrade of foreign bytes.
#[test]
fn bad_declarations_are_refused() {
    #[derive(rkyv::Archive, rkyv::Serialize, Schema)]
    #[rkyv(crate = regionkv::rkyv)]
    struct Other {
        n: u64,
    }
    impl Upgrade<License> for Other {
        fn upgrade(_: &ArchivedOther) -> License {
            unreachable!("never called: the recorded v1 is not `Other`")
        }
    }
    const NOT_BELOW: Table<License> = Table::new("licenses").upgrade_from::<LicenseV1>(1);
    const WRONG_OLD: Table<License> = Table::new("licenses").version(2).upgrade_from::<Other>(1);
    let sim = SimStorage::new();
    let a = seed(&sim, 2);
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let r = db.read(a).unwrap();
    let e = r.get(&NOT_BELOW, key(0)).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let e = r.get(&WRONG_OLD, key(0)).map(|_| ()).unwrap_err();
    match &e {
        Error::SchemaMismatch { stored, asked, .. } => {
            assert_eq!(stored.type_name, "LicenseV1", "{e}");
            assert_eq!(asked.type_name, "Other", "{e}");
        }
        other => panic!("{other}"),
    }
}

/// Migration skips disabled regions (listed in the report) and migrates each enabled one.
#[test]
fn migrate_lists_disabled_regions_as_skipped() {
    let sim = SimStorage::new();
    let a = seed(&sim, 4);
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let mut w = db.write_in(a, "eu").unwrap();
    w.insert(&V1, b"eu1", &v1(1)).unwrap();
    w.commit().unwrap();
    db.close().unwrap();
    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    let report = db.migrate(&V2).unwrap();
    assert_eq!(report.rewritten, 4);
    assert_eq!(report.skipped, vec!["eu".to_owned()]);
    db.close().unwrap();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let report = db.migrate(&V2).unwrap();
    assert_eq!(report.rewritten, 1);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct UserV1 {
    email: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct User {
    email: String,
    handle: String,
}

/// The upgrade derives a declared unique value (the handle, from the email's local part).
impl Upgrade<User> for UserV1 {
    fn upgrade(old: &ArchivedUserV1) -> User {
        let email = old.email.to_string();
        let handle = email.split('@').next().unwrap_or_default().to_owned();
        User { email, handle }
    }
}

/// A migration whose upgrade changes a record's declared unique values claims them by the
/// protocol (record and index never drift); a value another record owns leaves that record
/// at its old version, reported, and the rest migrates. The audit stays clean.
#[test]
fn migrate_claims_the_unique_values_an_upgrade_declares() {
    const USERS_V1: Table<UserV1> =
        Table::<UserV1>::new("users").unique("email", |u| Some(u.email.as_bytes()));
    const USERS: Table<User> = Table::<User>::new("users")
        .version(2)
        .upgrade_from::<UserV1>(1)
        .unique("email", |u| Some(u.email.as_bytes()))
        .unique("handle", |u| Some(u.handle.as_bytes()));
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let b = db.create_account(NewAccount::new("b", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    for name in ["ann", "bob", "cy"] {
        let u = UserV1 {
            email: format!("{name}@example.com"),
        };
        w.insert(&USERS_V1, name, &u).unwrap();
    }
    w.commit().unwrap();
    // Someone else owns the handle "bob" already.
    let mut w = db.write(b).unwrap();
    w.insert_unique(
        &USERS,
        "other",
        &User {
            email: "robert@example.org".into(),
            handle: "bob".into(),
        },
        &[
            Unique::new("email", "robert@example.org"),
            Unique::new("handle", "bob"),
        ],
    )
    .unwrap();
    w.commit().unwrap();
    assert!(!db.is_taken("handle", "ann").unwrap());

    let report = db.migrate_with(&USERS, 2, |_| {}).unwrap();
    assert_eq!(report.rewritten, 2, "{report:?}");
    assert_eq!(report.unique_conflicts.len(), 1, "{report:?}");
    let c = &report.unique_conflicts[0];
    assert_eq!(
        (
            c.region.as_str(),
            c.account,
            c.key.as_slice(),
            c.namespace.as_deref()
        ),
        ("us", a, &b"bob"[..], Some("handle"))
    );
    assert!(c.reason.contains("already taken"), "{}", c.reason);
    assert_eq!(
        report.regions,
        vec!["eu".to_owned()],
        "us is not fully migrated"
    );
    for h in ["ann", "cy"] {
        let hit = db.find_unique(&USERS, "handle", h).unwrap().unwrap();
        assert_eq!(hit.account(), a);
        assert!(!hit.record().is_upgraded());
    }
    let r = db.read(a).unwrap();
    assert!(
        r.get(&USERS, "bob").unwrap().unwrap().is_upgraded(),
        "left at v1"
    );
    assert!(
        db.is_taken("email", "bob@example.com").unwrap(),
        "kept its email"
    );
    let audit = db.audit().unwrap();
    assert!(
        audit
            .findings()
            .iter()
            .all(|f| f.kind == FindingKind::Schema)
            && audit.findings().len() == 1,
        "only the record left at v1 is reported: {audit}"
    );
    // Once the handle is free, migrate finishes.
    let mut w = db.write(b).unwrap();
    w.remove(&USERS, "other").unwrap();
    w.commit().unwrap();
    let report = db.migrate(&USERS).unwrap();
    assert_eq!((report.rewritten, report.unique_conflicts.len()), (1, 0));
    assert!(db.is_taken("handle", "bob").unwrap());
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct TagV1 {
    tag: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct Tag {
    tag: String,
    slug: String,
}

/// The upgrade makes the declared slug from the tag: empty for an empty tag (an invalid
/// unique value), the tag itself otherwise.
impl Upgrade<Tag> for TagV1 {
    fn upgrade(old: &ArchivedTagV1) -> Tag {
        Tag {
            tag: old.tag.to_string(),
            slug: old.tag.to_string(),
        }
    }
}

/// A record whose upgrade declares an invalid unique value is left at its old version and
/// reported (namespace `None`, the write's reason); migrate does not stop, the other records
/// migrate, and the audit names only the record left behind.
#[test]
fn migrate_reports_records_whose_upgraded_values_are_invalid() {
    const TAGS_V1: Table<TagV1> = Table::new("tags");
    const TAGS: Table<Tag> = Table::<Tag>::new("tags")
        .version(2)
        .upgrade_from::<TagV1>(1)
        .unique("slug", |t| Some(t.slug.as_bytes()));
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&TAGS_V1, "t0", &TagV1 { tag: String::new() })
        .unwrap();
    w.insert(&TAGS_V1, "t1", &TagV1 { tag: "rust".into() })
        .unwrap();
    w.commit().unwrap();
    let report = db.migrate(&TAGS).unwrap();
    assert_eq!(report.rewritten, 1, "{report:?}");
    assert_eq!(report.unique_conflicts.len(), 1, "{report:?}");
    let c = &report.unique_conflicts[0];
    assert_eq!(
        (c.key.as_slice(), c.namespace.as_deref()),
        (&b"t0"[..], None)
    );
    assert!(c.reason.contains("unique value must be"), "{}", c.reason);
    assert!(!report.regions.contains(&"us".to_owned()), "{report:?}");
    assert!(db.is_taken("slug", "rust").unwrap());
    let audit = db.audit().unwrap();
    assert_eq!(audit.findings().len(), 1, "{audit}");
    assert_eq!(audit.findings()[0].kind, FindingKind::Schema);
}
