//! Adversarial review of the record layer (schema identity, evolution, read-modify-write,
//! declared unique values, keys), through the public API only.
//!
//! Tests whose doc comment starts with "Guard:" are attacks that held (they pass). The
//! others demonstrate a break of a documented promise and FAIL on purpose.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::files::{assert_same_files, sim_snapshot};
use common::sim::*;
use regionkv::rkyv;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, FindingKind, Key, NewAccount, Raw, Schema, Table, Upgrade};

const DIR: &str = "/attack9";

// ---------------------------------------------------------------------------------------
// Types

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct User {
    email: String,
    name: String,
}

const USERS: Table<User> =
    Table::<User>::new("users").unique("email", |u| Some(u.email.as_bytes()));
/// The same table, type and version, without the declaration (another module, an older
/// binary, a tool).
const USERS_PLAIN: Table<User> = Table::new("users");

fn user(email: &str, name: &str) -> User {
    User {
        email: email.into(),
        name: name.into(),
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct MemberV1 {
    email: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct Member {
    email: String,
    handle: String,
}

/// The upgrade changes the declared values: the email is lower-cased (a release and a
/// claim) and a handle is derived (a claim).
impl Upgrade<Member> for MemberV1 {
    fn upgrade(old: &ArchivedMemberV1) -> Member {
        member_upgrade(old.email.as_str())
    }
}

fn member_upgrade(email: &str) -> Member {
    let email = email.to_lowercase();
    let handle = email.split('@').next().unwrap_or_default().to_owned();
    Member { email, handle }
}

const MEMBERS_V1: Table<MemberV1> =
    Table::<MemberV1>::new("members").unique("email", |m| Some(m.email.as_bytes()));
const MEMBERS: Table<Member> = Table::<Member>::new("members")
    .version(2)
    .upgrade_from::<MemberV1>(1)
    .unique("email", |m| Some(m.email.as_bytes()))
    .unique("handle", |m| Some(m.handle.as_bytes()));

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct ItemV1 {
    n: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct Item {
    n: u32,
    label: String,
}

impl Upgrade<Item> for ItemV1 {
    fn upgrade(old: &ArchivedItemV1) -> Item {
        let n = old.n.to_native();
        Item {
            n,
            label: format!("item {n}"),
        }
    }
}

/// An upgrade with a bug: it panics on one record.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct FragileV1 {
    n: u32,
}

impl Upgrade<Item> for FragileV1 {
    fn upgrade(old: &ArchivedFragileV1) -> Item {
        let n = old.n.to_native();
        assert!(n != 13, "the upgrade's bug: record 13");
        Item {
            n,
            label: format!("item {n}"),
        }
    }
}

const ITEMS_V1: Table<ItemV1> = Table::new("items");
const ITEMS: Table<Item> = Table::new("items").version(2).upgrade_from::<ItemV1>(1);
const FRAGILE_V1: Table<FragileV1> = Table::new("fragile");
const FRAGILE: Table<Item> = Table::new("fragile")
    .version(2)
    .upgrade_from::<FragileV1>(1);

// ---------------------------------------------------------------------------------------
// Helpers

fn store() -> (SimStorage, Db, AccountId, AccountId) {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu"))
        .unwrap();
    let b = db.create_account(NewAccount::new("b", "eu")).unwrap();
    (sim, db, a, b)
}

fn put_user(db: &Db, a: AccountId, key: &str, u: &User) -> regionkv::Result<()> {
    let mut w = db.write(a)?;
    w.insert(&USERS, key, u)?;
    w.commit()
}

/// Who owns `value` in `ns`: (account, key).
fn owner<V: regionkv::Value>(
    db: &Db,
    t: &Table<V>,
    ns: &str,
    value: &str,
) -> Option<(AccountId, Vec<u8>)> {
    db.find_unique(t, ns, value)
        .unwrap()
        .map(|h| (h.account(), h.key().to_vec()))
}

/// Audit findings other than outdated records (`Schema`).
fn non_schema_findings(db: &Db) -> Vec<String> {
    let audit = db.audit().unwrap();
    audit
        .findings()
        .iter()
        .filter(|f| f.kind != FindingKind::Schema)
        .map(|f| f.to_string())
        .collect()
}

fn assert_clean(db: &Db, what: &str) {
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{what}: {audit}");
}

// ---------------------------------------------------------------------------------------
// Declared unique values

/// Found by this review (it was a break): a handle of the same table, type and version
/// without `.unique(...)` (another module, a tool, the binary before the declaration was
/// added) was accepted, and its `insert` changed the declared field while the record kept
/// owning the old value; the new value was free for anyone and the audit was clean. Now the
/// declared namespaces are part of what a version records: such a handle may read, but its
/// write is a `SchemaMismatch` naming both declarations, and nothing is written.
#[test]
fn a_handle_without_the_declaration_cannot_write_the_table() {
    let (sim, db, a, b) = store();
    put_user(&db, a, "u1", &user("ann@example.com", "Ann")).unwrap();
    assert!(db.is_taken("email", "ann@example.com").unwrap());

    let before = common::files::sim_snapshot(&sim);
    let mut w = db.write(a).unwrap();
    w.insert(&USERS_PLAIN, "u1", &user("ann@example.org", "Ann"))
        .unwrap();
    match w.commit().unwrap_err() {
        Error::SchemaMismatch { stored, asked, .. } => {
            assert_eq!(stored.unique_namespaces, vec!["email".to_owned()]);
            assert!(asked.unique_namespaces.is_empty());
        }
        e => panic!("expected a mismatch, got {e}"),
    }
    common::files::assert_same_files(&before, &common::files::sim_snapshot(&sim), "refused");
    // Reading through it is harmless and allowed.
    let r = db.read(a).unwrap();
    let rec = r.get(&USERS_PLAIN, "u1").unwrap().unwrap();
    assert_eq!(rec.email.as_str(), "ann@example.com");
    // The value stays with its record; another account cannot take it.
    assert!(put_user(&db, b, "u9", &user("ann@example.com", "Mallory")).is_err());
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

/// Guard: two records of one write swapping their declared values (a transfer each way)
/// commit, the index follows both, the audit is clean, and so it stays after a power loss
/// before any checkpoint (recovery replays the marker of the swap).
#[test]
fn guard_two_records_swapping_declared_values_in_one_write() {
    let (sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    w.insert(&USERS, "u1", &user("one@x", "1")).unwrap();
    w.insert(&USERS, "u2", &user("two@x", "2")).unwrap();
    w.insert(&USERS, "u3", &user("three@x", "3")).unwrap();
    w.commit().unwrap();
    db.checkpoint().unwrap();

    // u1 <-> u2 swap, and u3 takes a fresh value while giving up its own.
    let mut w = db.write(a).unwrap();
    w.insert(&USERS, "u1", &user("two@x", "1")).unwrap();
    w.insert(&USERS, "u2", &user("one@x", "2")).unwrap();
    w.insert(&USERS, "u3", &user("four@x", "3")).unwrap();
    w.commit().unwrap();
    let check = |db: &Db, what: &str| {
        assert_eq!(
            owner(db, &USERS, "email", "one@x"),
            Some((a, b"u2".to_vec())),
            "{what}"
        );
        assert_eq!(
            owner(db, &USERS, "email", "two@x"),
            Some((a, b"u1".to_vec())),
            "{what}"
        );
        assert_eq!(
            owner(db, &USERS, "email", "four@x"),
            Some((a, b"u3".to_vec())),
            "{what}"
        );
        assert!(!db.is_taken("email", "three@x").unwrap(), "{what}");
        assert_clean(db, what);
    };
    check(&db, "after the swap");
    sim.crash();
    drop(db);
    let db = quiet_us_eu(&sim, DIR).unwrap();
    check(&db, "after a power loss and recovery");
}

/// Guard: in one write, remove a record and insert it again with another declared value,
/// and a second record takes the value the first gave up: record and index agree.
#[test]
fn guard_remove_then_insert_in_one_write_and_a_transfer() {
    let (_sim, db, a, b) = store();
    put_user(&db, a, "u1", &user("old@x", "1")).unwrap();
    let mut w = db.write(a).unwrap();
    w.remove(&USERS, "u1").unwrap();
    w.insert(&USERS, "u1", &user("new@x", "1")).unwrap();
    w.insert(&USERS, "u2", &user("old@x", "2")).unwrap();
    w.commit().unwrap();
    assert_eq!(
        owner(&db, &USERS, "email", "new@x"),
        Some((a, b"u1".to_vec()))
    );
    assert_eq!(
        owner(&db, &USERS, "email", "old@x"),
        Some((a, b"u2".to_vec()))
    );
    // A transfer never crosses accounts.
    let mut w = db.write(b).unwrap();
    w.insert(&USERS, "u1", &user("old@x", "b")).unwrap();
    assert!(matches!(w.commit(), Err(Error::UniqueViolation { .. })));
    // Db::update changing the field moves the claim.
    db.update(a, &USERS, "u2", |old| {
        let mut u = old?.deserialize().ok()?;
        u.email = "newer@x".into();
        Some(u)
    })
    .unwrap();
    assert!(!db.is_taken("email", "old@x").unwrap());
    assert_eq!(
        owner(&db, &USERS, "email", "newer@x"),
        Some((a, b"u2".to_vec()))
    );
    assert_clean(&db, "after remove/insert, transfer, update");
}

/// Guard: a UniqueViolation's message leaves the value out; `Conflict` and `Busy` are
/// retryable, a violation, a mismatch and a placement refusal are not.
#[test]
fn guard_error_messages_and_retryability() {
    let (_sim, db, a, b) = store();
    put_user(&db, a, "u1", &user("secret-value@x", "1")).unwrap();
    let e = put_user(&db, b, "u2", &user("secret-value@x", "2")).unwrap_err();
    assert!(!e.to_string().contains("secret-value"), "{e}");
    assert!(!e.is_retryable());
    match &e {
        Error::UniqueViolation { namespace, record } => {
            assert_eq!(namespace, "email");
            assert_eq!(record.key, b"u2");
            assert_eq!(record.value, b"secret-value@x");
            assert_eq!(record.table, "users");
        }
        other => panic!("{other}"),
    }
    let mut w = db.write(a).unwrap();
    w.get(&USERS, "u1").unwrap();
    w.insert(&USERS, "u1", &user("secret-value@x", "1b"))
        .unwrap();
    db.update(a, &USERS, "u1", |_| Some(user("secret-value@x", "1c")))
        .unwrap();
    let e = w.commit().unwrap_err();
    assert!(
        matches!(e, Error::Conflict { .. }) && e.is_retryable(),
        "{e}"
    );
    let e = db.write_in(b, "us").and_then(|mut w| {
        w.insert(&USERS, "z", &user("z@x", "z"))?;
        w.commit()
    });
    assert!(matches!(e, Err(Error::PlacementDenied { .. })), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// Read-modify-write

/// Guard: a read protects the record read, also when the write only writes another table,
/// when the concurrent change was a remove followed by a re-insert with other bytes, and in
/// a table that declares unique values; nothing is written by the refused commit.
#[test]
fn guard_reads_are_validated_across_tables_and_remove_reinsert() {
    let (sim, db, a, _b) = store();
    put_user(&db, a, "u1", &user("u1@x", "1")).unwrap();
    // Read users/u1, write only items.
    let mut w = db.write(a).unwrap();
    let seen = w.get(&USERS, "u1").unwrap().unwrap().name.to_string();
    assert_eq!(seen, "1");
    w.insert(
        &ITEMS,
        1u32,
        &Item {
            n: 1,
            label: "from 1".into(),
        },
    )
    .unwrap();
    let mut c = db.write(a).unwrap();
    c.remove(&USERS, "u1").unwrap();
    c.commit().unwrap();
    let mut c = db.write(a).unwrap();
    c.insert(&USERS, "u1", &user("u1@x", "1 again")).unwrap();
    c.commit().unwrap();
    let before = sim_snapshot(&sim);
    let e = w.commit().unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_same_files(&before, &sim_snapshot(&sim), "a refused commit");
    assert!(db.read(a).unwrap().get(&ITEMS, 1u32).unwrap().is_none());
    assert_clean(&db, "after the conflict");
}

/// Guard: a read in one region of an account is not disturbed by a change of the same key
/// in another region (another record), and a change in the read's region is caught even
/// when the write goes there through `write_in`.
#[test]
fn guard_reads_in_two_regions_of_one_account() {
    let (_sim, db, a, _b) = store();
    for region in ["us", "eu"] {
        let mut w = db.write_in(a, region).unwrap();
        w.insert(&USERS_PLAIN, "k", &user("", region)).unwrap();
        w.commit().unwrap();
    }
    let mut w = db.write_in(a, "eu").unwrap();
    assert_eq!(
        w.get(&USERS_PLAIN, "k").unwrap().unwrap().name.as_str(),
        "eu"
    );
    // A change of us/k is another record.
    db.update(a, &USERS_PLAIN, "k", |_| Some(user("", "us2")))
        .unwrap();
    w.insert(&USERS_PLAIN, "k", &user("", "eu2")).unwrap();
    w.commit().unwrap();
    let mut w = db.write_in(a, "eu").unwrap();
    w.get(&USERS_PLAIN, "k").unwrap();
    w.insert(&USERS_PLAIN, "k", &user("", "eu3")).unwrap();
    let mut c = db.write_in(a, "eu").unwrap();
    c.insert(&USERS_PLAIN, "k", &user("", "eu-concurrent"))
        .unwrap();
    c.commit().unwrap();
    assert!(matches!(w.commit(), Err(Error::Conflict { .. })));
    let r = db.read(a).unwrap();
    assert_eq!(
        r.get_in("eu", &USERS_PLAIN, "k")
            .unwrap()
            .unwrap()
            .name
            .as_str(),
        "eu-concurrent"
    );
}

// ---------------------------------------------------------------------------------------
// Schema identity and evolution

/// Found by this review (it was a break): the audit judged each region against the newest
/// version recorded *in that region*, so with v2 recorded in us and only v1 records in eu
/// it was clean although `migrate` then rewrote eu's records. Now "outdated" is against the
/// newest version recorded in any open region: the audit reports exactly what migrate
/// rewrites.
#[test]
fn audit_reports_outdated_records_of_a_region_without_the_new_version() {
    let (_sim, db, a, _b) = store();
    for i in 0..3u32 {
        let mut w = db.write_in(a, "eu").unwrap();
        w.insert(&ITEMS_V1, i, &ItemV1 { n: i }).unwrap();
        w.commit().unwrap();
    }
    let mut w = db.write_in(a, "us").unwrap();
    w.insert(
        &ITEMS,
        100u32,
        &Item {
            n: 100,
            label: "v2".into(),
        },
    )
    .unwrap();
    w.commit().unwrap();
    let outdated = db
        .audit()
        .unwrap()
        .findings()
        .iter()
        .filter(|f| f.kind == FindingKind::Schema)
        .count();
    let report = db.migrate(&ITEMS).unwrap();
    assert_eq!(report.rewritten, 3, "{report:?}");
    assert_eq!(
        outdated, 3,
        "the audit reported {outdated} outdated records, migrate then rewrote 3 (eu)"
    );
}

/// Guard: every read and write through a handle of another type, or of another version
/// without the upgrade, is SchemaMismatch (never Corrupt, never Ok), Write::get included,
/// and the refused commits write nothing.
#[test]
fn guard_every_access_with_another_type_is_a_mismatch() {
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
    #[rkyv(crate = regionkv::rkyv)]
    struct Swapped {
        name: String,
        email: String,
    }
    const SWAPPED: Table<Swapped> = Table::new("users");
    const USERS_V3: Table<User> = Table::new("users").version(3);
    const RAW: Table<Raw> = Table::new("users");
    let (sim, db, a, _b) = store();
    put_user(&db, a, "u1", &user("u1@x", "1")).unwrap();
    let mismatch = |r: regionkv::Result<()>, what: &str| match r {
        Err(Error::SchemaMismatch { .. }) => {}
        other => panic!("{what}: {other:?}"),
    };
    let r = db.read(a).unwrap();
    mismatch(r.get(&SWAPPED, "u1").map(|_| ()), "get Swapped");
    mismatch(r.get(&USERS_V3, "u1").map(|_| ()), "get v3");
    mismatch(r.get(&RAW, "u1").map(|_| ()), "get raw");
    mismatch(r.get(&RAW, "absent").map(|_| ()), "get raw absent");
    mismatch(
        r.scan(&RAW)
            .map(|_| ())
            .and_then(|_| r.scan(&RAW)?.next().transpose().map(|_| ())),
        "scan raw",
    );
    mismatch(
        db.scan_all(&SWAPPED)
            .and_then(|mut s| s.next().transpose().map(|_| ())),
        "scan_all",
    );
    mismatch(
        db.find_unique(&SWAPPED, "email", "u1@x").map(|_| ()),
        "find_unique",
    );
    let before = sim_snapshot(&sim);
    let mut w = db.write(a).unwrap();
    mismatch(w.get(&SWAPPED, "u1").map(|_| ()), "Write::get");
    let mut w = db.write(a).unwrap();
    w.insert(&RAW, "u2", b"raw").unwrap();
    mismatch(w.commit(), "insert raw");
    let mut w = db.write(a).unwrap();
    w.remove(&SWAPPED, "u1").unwrap();
    mismatch(w.commit(), "remove swapped");
    let mut w = db.write(a).unwrap();
    w.insert(&USERS_V3, "u3", &user("u3@x", "3")).unwrap();
    mismatch(w.commit(), "insert v3");
    mismatch(db.migrate(&USERS_V3).map(|_| ()), "migrate v3");
    mismatch(
        db.update(a, &RAW, "u1", |_| Some(b"x".to_vec()))
            .map(|_| ()),
        "Db::update raw",
    );
    assert_same_files(&before, &sim_snapshot(&sim), "refused accesses");
    // Within one write, two handles of one table with different types.
    let mut w = db.write_in(a, "eu").unwrap();
    w.insert(&USERS, "x", &user("x@x", "x")).unwrap();
    mismatch(w.insert(&RAW, "y", b"y"), "second type in a write");
    mismatch(
        w.get(&RAW, "x").map(|_| ()),
        "get of own buffer, other type",
    );
}

/// Guard: a table emptied of its records keeps its type per version: the same version
/// with another type is refused; a new version without the upgrade may start the table
/// again, after which the old handle reads the new records as a mismatch (never as data).
#[test]
fn guard_an_emptied_table_never_reads_another_type_as_data() {
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
    #[rkyv(crate = regionkv::rkyv)]
    struct Other {
        a: u64,
        b: u64,
    }
    const OTHER_V1: Table<Other> = Table::new("users");
    const OTHER_V2: Table<Other> = Table::new("users").version(2);
    let (_sim, db, a, _b) = store();
    put_user(&db, a, "u1", &user("u1@x", "1")).unwrap();
    let mut w = db.write(a).unwrap();
    w.remove(&USERS, "u1").unwrap();
    w.commit().unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&OTHER_V1, "o", &Other { a: 1, b: 2 }).unwrap();
    assert!(matches!(w.commit(), Err(Error::SchemaMismatch { .. })));
    let mut w = db.write(a).unwrap();
    w.insert(&OTHER_V2, "o", &Other { a: 1, b: 2 }).unwrap();
    w.commit().unwrap();
    put_user(&db, a, "u2", &user("u2@x", "2")).unwrap();
    let r = db.read(a).unwrap();
    assert!(matches!(
        r.get(&USERS, "o").map(|_| ()),
        Err(Error::SchemaMismatch { .. })
    ));
    assert!(matches!(
        r.get(&OTHER_V2, "u2").map(|_| ()),
        Err(Error::SchemaMismatch { .. })
    ));
    assert_eq!(r.get(&USERS, "u2").unwrap().unwrap().name.as_str(), "2");
    assert_eq!(r.get(&OTHER_V2, "o").unwrap().unwrap().b.to_native(), 2);
}

/// Guard: a panicking user upgrade is the user's problem only as long as the store is not
/// harmed: `Db::migrate` runs `Upgrade::upgrade` inside a region write transaction; a panic there
/// unwinds through redb's transaction. Afterwards the region must still accept writes, the
/// store must close and reopen, the audit must be clean and every record read. (Whether
/// the panic reaches the caller is the user's problem; the store's integrity is not.)
#[test]
fn guard_a_panicking_upgrade_inside_migrate_leaves_the_store_sound() {
    let (sim, db, a, _b) = store();
    for chunk in (0..20u32).collect::<Vec<_>>().chunks(5) {
        let mut w = db.write(a).unwrap();
        for &i in chunk {
            w.insert(&FRAGILE_V1, i, &FragileV1 { n: i }).unwrap();
        }
        w.commit().unwrap();
    }
    let r = catch_unwind(AssertUnwindSafe(|| db.migrate_with(&FRAGILE, 4, |_| {})));
    assert!(r.is_err(), "the upgrade's panic reaches the caller");
    // The store goes on.
    let mut w = db.write(a).unwrap();
    w.insert(
        &ITEMS,
        1u32,
        &Item {
            n: 1,
            label: "after".into(),
        },
    )
    .unwrap();
    w.commit().expect("a write after the panic");
    put_user(&db, a, "u1", &user("after@x", "1")).expect("a unique write after the panic");
    assert_eq!(
        non_schema_findings(&db),
        Vec::<String>::new(),
        "audit after the panic"
    );
    db.close().expect("close after the panic");
    let db = quiet_us_eu(&sim, DIR).expect("reopen after a panicking upgrade");
    assert_eq!(
        non_schema_findings(&db),
        Vec::<String>::new(),
        "audit after reopen"
    );
    let r = db.read(a).unwrap();
    for i in (0..20u32).filter(|&i| i != 13) {
        assert_eq!(r.get(&FRAGILE, i).unwrap().unwrap().n.to_native(), i);
    }
    assert!(r.get(&ITEMS, 1u32).unwrap().is_some());
    // And after a power loss too.
    drop(r);
    sim.crash();
    drop(db);
    let db = quiet_us_eu(&sim, DIR).expect("reopen after a power loss");
    assert_eq!(
        non_schema_findings(&db),
        Vec::<String>::new(),
        "audit after crash"
    );
}

/// Crash inside `migrate` at every storage operation, in a table whose upgrade changes
/// the declared unique values (release of the old email, claims of the new email and
/// handle): after each power loss the store opens, the audit is clean but for outdated
/// records, every record reads as its upgrade, each record owns exactly the values of its
/// stored version (old email while v1, new email and handle once v2), record counts and
/// `_usage` stay right, and a second `migrate` finishes with a clean audit.
#[test]
fn migrate_crash_at_every_storage_operation_keeps_records_and_values() {
    const N: usize = 5;
    let emails: Vec<String> = (0..N).map(|i| format!("Person{i}@Example.COM")).collect();
    let seed = || {
        let sim = SimStorage::new();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        let a = db
            .create_account(NewAccount::new("a", "us").max_records(N as u64 + 1))
            .unwrap();
        let mut w = db.write(a).unwrap();
        for (i, e) in emails.iter().enumerate() {
            w.insert(&MEMBERS_V1, i as u32, &MemberV1 { email: e.clone() })
                .unwrap();
        }
        w.commit().unwrap();
        db.close().unwrap();
        (sim, a)
    };
    let check = |db: &Db, a: AccountId, what: &str| {
        let findings = non_schema_findings(db);
        assert!(findings.is_empty(), "{what}: {findings:?}");
        let r = db.read(a).unwrap();
        let mut migrated = 0;
        for (i, e) in emails.iter().enumerate() {
            let rec = r
                .get(&MEMBERS, i as u32)
                .unwrap_or_else(|err| panic!("{what}: record {i}: {err}"))
                .unwrap_or_else(|| panic!("{what}: record {i} lost"));
            let want = member_upgrade(e);
            assert_eq!(rec.email.as_str(), want.email, "{what}");
            assert_eq!(rec.handle.as_str(), want.handle, "{what}");
            let key = (i as u32).key_bytes().to_vec();
            let own = |ns: &str, v: &str| owner(db, &MEMBERS, ns, v) == Some((a, key.clone()));
            if rec.is_upgraded() {
                assert!(own("email", e), "{what}: v1 record {i} owns its old email");
                assert!(!db.is_taken("email", &want.email).unwrap(), "{what}");
                assert!(!db.is_taken("handle", &want.handle).unwrap(), "{what}");
            } else {
                migrated += 1;
                assert!(own("email", &want.email), "{what}: v2 record {i} new email");
                assert!(own("handle", &want.handle), "{what}: v2 record {i} handle");
                assert!(!db.is_taken("email", e).unwrap(), "{what}: old email freed");
            }
        }
        assert_eq!(record_count_of(db, a), N, "{what}");
        // The quota still counts N records: exactly one more fits.
        let mut w = db.write(a).unwrap();
        w.insert(
            &ITEMS,
            999u32,
            &Item {
                n: 0,
                label: String::new(),
            },
        )
        .unwrap();
        w.commit()
            .unwrap_or_else(|e| panic!("{what}: the one record left in quota: {e}"));
        let mut w = db.write(a).unwrap();
        w.insert(
            &ITEMS,
            998u32,
            &Item {
                n: 0,
                label: String::new(),
            },
        )
        .unwrap();
        assert!(
            matches!(w.commit(), Err(Error::QuotaExceeded { .. })),
            "{what}: quota"
        );
        let mut w = db.write(a).unwrap();
        w.remove(&ITEMS, 999u32).unwrap();
        w.commit().unwrap();
        migrated
    };
    let mut n = 0u64;
    loop {
        let (sim, a) = seed();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        sim.fail_after(n, FaultOn::Any);
        let r = db.migrate_with(&MEMBERS, 2, |_| {});
        let tripped = sim.fault_tripped();
        sim.clear_fault();
        sim.crash();
        drop(db);
        let what = format!("fault after {n} operations ({r:?})");
        let db = quiet_us_eu(&sim, DIR).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        check(&db, a, &what);
        let report = db
            .migrate(&MEMBERS)
            .unwrap_or_else(|e| panic!("{what}: second migrate: {e}"));
        assert!(report.unique_conflicts.is_empty(), "{what}: {report:?}");
        assert_eq!(
            check(&db, a, &what),
            N,
            "{what}: all migrated after the rerun"
        );
        assert_clean(&db, &what);
        db.close().unwrap();
        if !tripped {
            assert!(r.is_ok(), "{what}");
            break;
        }
        n += 1;
        assert!(n < 2000, "no end");
    }
    eprintln!("fault points: {n}");
    assert!(n > 20, "the fault points covered the migration: {n}");
}

/// A storage fault inside `migrate` at every operation, *without* a power loss: the
/// process goes on (the fault cleared, as a transient I/O error), writes after it either
/// fail or are durable (I3), a later migrate finishes, and after close + reopen (and after
/// a power loss) every record and value is where it must be.
#[test]
fn migrate_fault_at_every_operation_then_the_store_goes_on() {
    const N: usize = 4;
    let emails: Vec<String> = (0..N).map(|i| format!("P{i}@X.ORG")).collect();
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        let mut w = db.write(a).unwrap();
        for (i, e) in emails.iter().enumerate() {
            w.insert(&MEMBERS_V1, i as u32, &MemberV1 { email: e.clone() })
                .unwrap();
        }
        w.commit().unwrap();
        sim.fail_after(n, FaultOn::Any);
        let r = db.migrate_with(&MEMBERS, 2, |_| {});
        let tripped = sim.fault_tripped();
        sim.clear_fault();
        let what = format!("fault after {n} operations ({r:?})");
        // Writes after the fault: each either fails or must survive.
        let mut acked = Vec::new();
        for j in 0..3u32 {
            let mut w = match db.write(a) {
                Ok(w) => w,
                Err(_) => continue,
            };
            w.insert(&USERS, j, &user(&format!("after{j}@x"), "after"))
                .unwrap();
            if w.commit().is_ok() {
                acked.push(j);
            }
        }
        let _ = db.migrate(&MEMBERS);
        sim.crash();
        drop(db);
        let db = quiet_us_eu(&sim, DIR).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let findings = non_schema_findings(&db);
        assert!(findings.is_empty(), "{what}: {findings:?}");
        for &j in &acked {
            let got = db.read(a).unwrap().get(&USERS, j).unwrap();
            assert!(got.is_some(), "{what}: acknowledged write {j} lost");
            assert_eq!(
                owner(&db, &USERS, "email", &format!("after{j}@x")),
                Some((a, j.key_bytes().to_vec())),
                "{what}"
            );
        }
        let report = db
            .migrate(&MEMBERS)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(report.unique_conflicts.is_empty(), "{what}: {report:?}");
        let r = db.read(a).unwrap();
        for (i, e) in emails.iter().enumerate() {
            let rec = r.get(&MEMBERS, i as u32).unwrap().expect("record");
            assert!(rec.is_in_place(), "{what}");
            let want = member_upgrade(e);
            assert_eq!(
                owner(&db, &MEMBERS, "handle", &want.handle),
                Some((a, (i as u32).key_bytes().to_vec())),
                "{what}"
            );
            assert!(!db.is_taken("email", e).unwrap(), "{what}");
        }
        drop(r);
        assert_clean(&db, &what);
        db.close().unwrap();
        if !tripped {
            break;
        }
        n += 1;
        assert!(n < 2000, "no end");
    }
}

/// Guard: a record read through `Write::get` and then rewritten by `migrate` (same value,
/// new version) makes the commit conflict rather than overwrite the migrated record with a
/// stale version; the retry through `Db::update` succeeds.
#[test]
fn guard_migrate_between_get_and_commit_conflicts() {
    let (_sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    w.insert(&ITEMS_V1, 1u32, &ItemV1 { n: 1 }).unwrap();
    w.commit().unwrap();
    let mut w = db.write(a).unwrap();
    assert!(w.get(&ITEMS, 1u32).unwrap().unwrap().is_upgraded());
    w.insert(
        &ITEMS,
        1u32,
        &Item {
            n: 2,
            label: "stale".into(),
        },
    )
    .unwrap();
    assert_eq!(db.migrate(&ITEMS).unwrap().rewritten, 1);
    assert!(matches!(w.commit(), Err(Error::Conflict { .. })));
    db.update(a, &ITEMS, 1u32, |old| {
        let mut i: Item = old?.deserialize().ok()?;
        i.n += 10;
        Some(i)
    })
    .unwrap();
    assert_eq!(
        db.read(a)
            .unwrap()
            .get(&ITEMS, 1u32)
            .unwrap()
            .unwrap()
            .n
            .to_native(),
        11
    );
}

fn record_count_of(db: &Db, a: AccountId) -> usize {
    db.read(a)
        .unwrap()
        .scan(&MEMBERS)
        .unwrap()
        .inspect(|r| assert!(r.is_ok(), "{r:?}"))
        .count()
}

/// Guard: `migrate` keeps `_usage` right (byte counters adjusted; audit clean), respects
/// quota (record counts unchanged), skips a region disabled from the progress callback
/// (reported as skipped) and finishes it once enabled again.
#[test]
fn guard_migrate_with_a_region_disabled_midway() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(40))
        .unwrap();
    for region in ["us", "eu"] {
        let mut w = db.write_in(a, region).unwrap();
        for i in 0..10u32 {
            w.insert(&ITEMS_V1, i, &ItemV1 { n: i }).unwrap();
        }
        w.commit().unwrap();
    }
    let mut disabled = false;
    let report = db
        .migrate_with(&ITEMS, 3, |p| {
            if p.region == "eu" && !disabled {
                disabled = true;
                db.disable_region("eu").unwrap();
            }
        })
        .unwrap();
    assert_eq!(report.skipped, vec!["eu".to_owned()], "{report:?}");
    assert_eq!(report.rewritten, 13, "{report:?}");
    // The limit counts eu's frozen records: 20 in all, 20 more fit.
    assert_eq!(fill_items(&db, a, "us", 100), 20);
    db.close().unwrap();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let report = db.migrate(&ITEMS).unwrap();
    assert_eq!(report.rewritten, 7, "{report:?}");
    assert_clean(&db, "after migrate");
}

fn fill_items(db: &Db, a: AccountId, region: &str, from: u32) -> u32 {
    let mut i = 0;
    loop {
        let mut w = db.write_in(a, region).unwrap();
        w.insert(
            &ITEMS,
            from + i,
            &Item {
                n: i,
                label: String::new(),
            },
        )
        .unwrap();
        match w.commit() {
            Ok(()) => i += 1,
            Err(Error::QuotaExceeded { .. }) => return i,
            Err(e) => panic!("{e}"),
        }
        assert!(i < 100);
    }
}

/// Guard: a migrate whose upgrade would swap two records' declared values (each claims
/// the other's) leaves both at v1 and reports them, never a record without its value or a
/// value owned twice; the audit stays clean but for the outdated records.
#[test]
fn guard_migrate_of_an_upgrade_that_swaps_declared_values() {
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
    #[rkyv(crate = regionkv::rkyv)]
    struct SlotV1 {
        slug: String,
    }
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
    #[rkyv(crate = regionkv::rkyv)]
    struct Slot {
        slug: String,
        v: u8,
    }
    impl Upgrade<Slot> for SlotV1 {
        fn upgrade(o: &ArchivedSlotV1) -> Slot {
            let slug = match o.slug.as_str() {
                "a" => "b",
                "b" => "a",
                s => s,
            };
            Slot {
                slug: slug.into(),
                v: 2,
            }
        }
    }
    const S1: Table<SlotV1> =
        Table::<SlotV1>::new("slots").unique("slug", |s| Some(s.slug.as_bytes()));
    const S2: Table<Slot> = Table::<Slot>::new("slots")
        .version(2)
        .upgrade_from::<SlotV1>(1)
        .unique("slug", |s| Some(s.slug.as_bytes()));
    let (_sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    w.insert(&S1, "x", &SlotV1 { slug: "a".into() }).unwrap();
    w.insert(&S1, "y", &SlotV1 { slug: "b".into() }).unwrap();
    w.insert(&S1, "z", &SlotV1 { slug: "c".into() }).unwrap();
    w.commit().unwrap();
    let report = db.migrate(&S2).unwrap();
    assert_eq!(report.rewritten, 1, "{report:?}");
    assert_eq!(report.unique_conflicts.len(), 2, "{report:?}");
    assert_eq!(owner(&db, &S2, "slug", "a"), Some((a, b"x".to_vec())));
    assert_eq!(owner(&db, &S2, "slug", "b"), Some((a, b"y".to_vec())));
    assert_eq!(non_schema_findings(&db), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// Keys

/// Guard: distinct tuple keys of one type never share an encoding (nor a record), byte
/// keys keep their bytes, and integer and string keys read the same record as their bytes.
#[test]
fn guard_keys_never_collide_and_byte_keys_are_unchanged() {
    let parts: [&[u8]; 8] = [
        b"",
        b"\0",
        b"\0\0",
        b"\0\xff",
        b"a",
        b"a\0",
        b"\xff",
        b"\0\0\xff",
    ];
    let mut seen = std::collections::HashMap::new();
    for x in parts {
        for y in parts {
            for z in parts {
                let k = (x, y, z).key_bytes().to_vec();
                if let Some(prev) = seen.insert(k.clone(), (x, y, z)) {
                    panic!("{prev:?} and {:?} share {k:?}", (x, y, z));
                }
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    for x in parts {
        for y in parts {
            let k = ((x, 7u16), y).key_bytes().to_vec();
            assert!(seen.insert(k, (x, y)).is_none());
        }
    }
    let (_sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    w.insert(&USERS_PLAIN, b"k\0", &user("", "bytes")).unwrap();
    w.insert(&USERS_PLAIN, ("k", ""), &user("", "tuple"))
        .unwrap();
    w.insert(&USERS_PLAIN, 7u32, &user("", "u32")).unwrap();
    w.insert(&USERS_PLAIN, -1i64, &user("", "i64")).unwrap();
    w.commit().unwrap();
    let r = db.read(a).unwrap();
    let name = |k: &[u8]| r.get(&USERS_PLAIN, k).unwrap().unwrap().name.to_string();
    assert_eq!(name(b"k\0"), "bytes");
    assert_eq!(name(b"k\0\0"), "tuple");
    assert_eq!(name(&[0, 0, 0, 7]), "u32");
    assert_eq!(
        name(&[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        "i64"
    );
    assert_eq!(r.scan(&USERS_PLAIN).unwrap().count(), 4);
}

/// Guard: a user `Key` impl whose bytes exceed the key limit is refused, nothing buffered;
/// an empty key works like any other.
#[test]
fn guard_odd_key_impls() {
    struct Huge;
    impl Key for Huge {
        fn key_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Owned(vec![1; regionkv::MAX_KEY + 1])
        }
    }
    let (_sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    assert!(matches!(
        w.insert(&USERS_PLAIN, Huge, &user("", "")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        w.get(&USERS_PLAIN, Huge).map(|_| ()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        w.insert(&USERS_PLAIN, ((Huge, 1u8), 2u8), &user("", "")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(w.is_empty());
    w.insert(&USERS_PLAIN, b"", &user("", "empty")).unwrap();
    w.commit().unwrap();
    assert_eq!(
        db.read(a)
            .unwrap()
            .get(&USERS_PLAIN, "")
            .unwrap()
            .unwrap()
            .name
            .as_str(),
        "empty"
    );
}

/// Guard: the highest schema version and an old version 0 are accepted and work.
#[test]
fn guard_extreme_versions() {
    const MAXV: Table<Item> = Table::new("items")
        .version(u16::MAX)
        .upgrade_from::<ItemV1>(1);
    let (_sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    w.insert(&ITEMS_V1, 1u32, &ItemV1 { n: 1 }).unwrap();
    w.commit().unwrap();
    assert!(
        db.read(a)
            .unwrap()
            .get(&MAXV, 1u32)
            .unwrap()
            .unwrap()
            .is_upgraded()
    );
    assert_eq!(db.migrate(&MAXV).unwrap().rewritten, 1);
    assert!(
        db.read(a)
            .unwrap()
            .get(&MAXV, 1u32)
            .unwrap()
            .unwrap()
            .is_in_place()
    );
    assert_clean(&db, "max version");
}

/// Guard: a panicking upgrade met by a read is the caller's panic, not damage: it reaches
/// the caller, and the region (whose reads run with redb's panics contained) is not
/// marked damaged: it keeps serving reads and writes.
#[test]
fn guard_a_panicking_upgrade_in_a_read_reaches_the_caller_and_damages_nothing() {
    let (_sim, db, a, _b) = store();
    let mut w = db.write(a).unwrap();
    for i in [12u32, 13] {
        w.insert(&FRAGILE_V1, i, &FragileV1 { n: i }).unwrap();
    }
    w.commit().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| {
        db.read(a).unwrap().get(&FRAGILE, 13u32)
    }));
    assert!(r.is_err(), "the upgrade's panic reaches the caller");
    let ok = db.read(a).unwrap().get(&FRAGILE, 12u32).unwrap().unwrap();
    assert_eq!(ok.n.to_native(), 12);
    let mut w = db.write(a).unwrap();
    w.insert(&FRAGILE_V1, 14u32, &FragileV1 { n: 14 }).unwrap();
    w.commit().expect("the region still takes writes");
    assert!(db.audit().unwrap().is_clean());
}
