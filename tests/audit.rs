//! `Db::audit`: a clean store audits clean, and each kind of damage, made on purpose with
//! raw redb access to a closed store's partition files, is named by the right finding
//! (kind, partition, table, key).

use regionkv::layout::{global_file, region_file};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use regionkv::{AccountId, Db, Error, FindingKind, NewAccount, Raw, Table, Unique};

const USERS: Table<Raw> = Table::new("users");
const NOTES: Table<Raw> = Table::new("notes");

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    seats: u32,
}
const LICENSES: Table<License> = Table::new("licenses");

// The raw schema (src/schema.rs).
const UNIQUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("_unique");
const OWNED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("_owned");
const USAGE: TableDefinition<u64, (u64, u64)> = TableDefinition::new("_usage");
const MARKERS: TableDefinition<u128, &[u8]> = TableDefinition::new("_markers");

struct Store {
    _dir: tempfile::TempDir,
    path: PathBuf,
    acme: u64,
    bob: u64,
    carol: u64,
}

impl Store {
    fn global(&self) -> PathBuf {
        global_file(&self.path)
    }
    fn region(&self, name: &str) -> PathBuf {
        region_file(&self.path, name)
    }
    fn open(&self) -> Db {
        Db::builder()
            .region("us")
            .region("eu")
            .default_region("us")
            .open(&self.path)
            .unwrap()
    }
}

fn commit(db: &Db, account: u64, region: Option<&str>, f: impl FnOnce(&mut regionkv::Write)) {
    let id = AccountId::from_raw(account);
    let mut w = match region {
        Some(r) => db.write_in(id, r).unwrap(),
        None => db.write(id).unwrap(),
    };
    f(&mut w);
    w.commit().unwrap();
}

/// Several accounts over us and eu; records with and without unique values, updates,
/// removes, a value released by one account and claimed by another, a reopen. Closed.
fn build() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .open(&path)
        .unwrap();
    let acme = db
        .create_account(NewAccount::new("acme", "eu").allow("us"))
        .unwrap()
        .get();
    let bob = db
        .create_account(NewAccount::new("bob", "us"))
        .unwrap()
        .get();
    let carol = db
        .create_account(NewAccount::new("carol", "eu").max_records(100))
        .unwrap()
        .get();

    commit(&db, acme, None, |w| {
        w.insert_unique(&USERS, b"u1", b"ann", &[Unique::new("email", "ann@acme")])
            .unwrap();
        w.insert_unique(
            &USERS,
            b"u2",
            b"bob",
            &[
                Unique::new("email", "bob@acme"),
                Unique::new("handle", "bobby"),
            ],
        )
        .unwrap();
        w.insert_unique(&USERS, b"u3", b"tmp", &[Unique::new("email", "tmp@acme")])
            .unwrap();
        w.insert(&NOTES, b"n1", b"first note").unwrap();
        w.insert(&NOTES, b"n2", b"short").unwrap();
        let lic = License {
            key: "K-1".into(),
            seats: 5,
        };
        w.insert_unique(
            &LICENSES,
            b"lic-1",
            &lic,
            &[Unique::new("license_key", "K-1")],
        )
        .unwrap();
    });
    // Updates: change one unique value and keep another; a plain update of a record
    // keeps its values; a longer value.
    commit(&db, acme, None, |w| {
        w.insert_unique(
            &USERS,
            b"u2",
            b"robert",
            &[
                Unique::new("email", "robert@acme"),
                Unique::new("handle", "bobby"),
            ],
        )
        .unwrap();
        w.insert(&USERS, b"u1", b"ann, updated").unwrap();
        w.insert(&NOTES, b"n2", b"a much longer second note")
            .unwrap();
        w.remove(&USERS, b"u3").unwrap();
    });
    // Another allowed region.
    commit(&db, acme, Some("us"), |w| {
        w.insert_unique(&USERS, b"u9", b"in us", &[Unique::new("email", "us@acme")])
            .unwrap();
    });
    commit(&db, bob, None, |w| {
        w.insert(&NOTES, b"n1", b"bob's note").unwrap();
        w.insert(&NOTES, b"n2", b"bob's second note").unwrap();
        w.insert(&NOTES, b"n3", b"doomed").unwrap();
        // Released by acme above, claimed by bob.
        w.insert_unique(&USERS, b"b1", b"b", &[Unique::new("email", "tmp@acme")])
            .unwrap();
    });
    commit(&db, bob, None, |w| w.remove(&NOTES, b"n3").unwrap());
    commit(&db, carol, None, |w| {
        w.insert(&NOTES, b"c1", b"carol").unwrap();
        w.insert_unique(&USERS, b"c", b"c", &[Unique::new("email", "carol@x")])
            .unwrap();
    });
    db.close().unwrap();

    // Reopen, write more, and leave the store closed.
    let db = Db::builder().region("eu").region("us").open(&path).unwrap();
    commit(&db, carol, None, |w| {
        w.insert_unique(&USERS, b"c", b"c2", &[Unique::new("email", "carol@y")])
            .unwrap();
    });
    commit(&db, acme, None, |w| w.remove(&USERS, b"u2").unwrap());
    db.close().unwrap();
    Store {
        _dir: dir,
        path,
        acme,
        bob,
        carol,
    }
}

fn data(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

fn data_key(account: u64, key: &[u8]) -> Vec<u8> {
    let mut k = account.to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

fn owned_key(table: &str, account: u64, key: &[u8]) -> Vec<u8> {
    let mut k = vec![table.len() as u8];
    k.extend_from_slice(table.as_bytes());
    k.extend_from_slice(&account.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Decodes an owned-values row into (namespace, digest) pairs.
fn owned_values(row: &[u8]) -> Vec<(String, [u8; 16])> {
    let u32_at = |i: usize| u32::from_le_bytes(row[i..i + 4].try_into().unwrap()) as usize;
    let n = u32_at(0);
    let mut i = 4;
    let mut out = Vec::new();
    for _ in 0..n {
        let l = u32_at(i);
        let ns = String::from_utf8(row[i + 4..i + 4 + l].to_vec()).unwrap();
        i += 4 + l;
        let digest: [u8; 16] = row[i..i + 16].try_into().unwrap();
        i += 16;
        let l = u32_at(i);
        i += 4 + l;
        out.push((ns, digest));
    }
    assert_eq!(i, row.len());
    out
}

fn unique_key(ns: &str, digest: &[u8; 16]) -> Vec<u8> {
    let mut k = vec![ns.len() as u8];
    k.extend_from_slice(ns.as_bytes());
    k.extend_from_slice(digest);
    k
}

/// Runs `f` in one write transaction on a partition file of a closed store.
fn patch<R>(path: &Path, f: impl FnOnce(&redb::WriteTransaction) -> R) -> R {
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    let r = f(&w);
    w.commit().unwrap();
    r
}

fn raw_get(path: &Path, table: TableDefinition<&[u8], &[u8]>, key: &[u8]) -> Option<Vec<u8>> {
    let db = redb::Database::create(path).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(table).unwrap();
    t.get(key).unwrap().map(|g| g.value().to_vec())
}

/// The unique key of the first value the record owns (read from its region's file).
fn first_owned(s: &Store, region: &str, table: &str, account: u64, key: &[u8]) -> Vec<u8> {
    let row = raw_get(&s.region(region), OWNED, &owned_key(table, account, key)).unwrap();
    let (ns, d) = owned_values(&row).remove(0);
    unique_key(&ns, &d)
}

/// Reopens the damaged store, audits, and returns the report after checking that every
/// finding has the expected kind.
fn audit_expect(s: &Store, kinds: &[FindingKind]) -> regionkv::AuditReport {
    let db = s.open();
    let report = db.audit().unwrap();
    let got: Vec<FindingKind> = report.findings().iter().map(|f| f.kind).collect();
    assert_eq!(got, kinds, "{report}");
    assert_eq!(report.is_clean(), kinds.is_empty());
    db.close().unwrap();
    report
}

#[test]
fn clean_store_audits_clean_before_and_after_reopen() {
    let s = build();
    let db = s.open();
    let report = db.audit().unwrap();
    assert!(report.is_clean(), "{report}");
    assert!(report.findings().is_empty());
    // acme: u1, n1, n2, lic-1 (eu) + u9 (us); bob: n1, n2, b1; carol: c1, c.
    assert_eq!(report.records_checked(), 10, "{report}");
    // Live values: ann, handle bobby released with u2, robert released, us@acme, K-1,
    // tmp@acme (bob), carol@y; plus tombstones that survived the last checkpoint.
    assert!(report.unique_entries_checked() >= 5, "{report}");
    assert_eq!(report.unchecked(), 0);
    assert!(report.to_string().starts_with("audit clean"), "{report}");

    // Writes since the last checkpoint leave markers: audit collects them first.
    commit(&db, s.bob, None, |w| {
        w.insert_unique(&USERS, b"b2", b"x", &[Unique::new("email", "new@bob")])
            .unwrap();
    });
    let report = db.audit().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.records_checked(), 11);
    db.close().unwrap();
    audit_expect(&s, &[]);
}

#[test]
fn audit_of_a_closed_handle_is_an_error() {
    let s = build();
    let db = s.open();
    db.clone().close().unwrap();
    assert!(matches!(db.audit(), Err(Error::Closed)));
}

#[test]
fn disabled_region_is_unchecked_not_a_finding() {
    let s = build();
    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(&s.path)
        .unwrap();
    let report = db.audit().unwrap();
    assert!(report.is_clean(), "{report}");
    // Entries naming eu records: ann, K-1, carol@y.
    assert_eq!(report.unchecked(), 3, "{report}");
    // us: acme u9, bob n1 n2 b1.
    assert_eq!(report.records_checked(), 4, "{report}");
    assert!(
        report.notes().iter().any(|n| n.contains("`eu`")),
        "{report}"
    );
}

#[test]
fn in_flight_entry_of_a_disabled_region_is_a_note() {
    // Recovery cannot settle a txn whose region is disabled and leaves it in flight; audit
    // cannot either: a note, not a finding.
    const INFLIGHT: TableDefinition<&[u8], ()> = TableDefinition::new("_inflight");
    let s = build();
    let ukey = first_owned(&s, "eu", "users", s.acme, b"u1");
    patch(&s.global(), |w| {
        let mut t = w.open_table(UNIQUE).unwrap();
        let mut v = t.get(ukey.as_slice()).unwrap().unwrap().value().to_vec();
        v[0] = 3; // Pending
        let txn = u128::from_le_bytes(v[1..17].try_into().unwrap());
        t.insert(ukey.as_slice(), v.as_slice()).unwrap();
        let mut row = txn.to_be_bytes().to_vec();
        row.extend_from_slice(&ukey);
        w.open_table(INFLIGHT)
            .unwrap()
            .insert(row.as_slice(), ())
            .unwrap();
    });
    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(&s.path)
        .unwrap();
    assert_eq!(db.recovery_report().left_in_flight, 1);
    let report = db.audit().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.unchecked(), 3, "{report}");
    assert!(
        report
            .notes()
            .iter()
            .any(|n| n.contains("in flight in disabled region `eu`")),
        "{report}"
    );
}

#[test]
fn deleted_unique_entry_is_an_orphan_record() {
    let s = build();
    let ukey = first_owned(&s, "eu", "users", s.acme, b"u1");
    patch(&s.global(), |w| {
        assert!(
            w.open_table(UNIQUE)
                .unwrap()
                .remove(ukey.as_slice())
                .unwrap()
                .is_some()
        );
    });
    let report = audit_expect(&s, &[FindingKind::OrphanRecord]);
    let f = &report.findings()[0];
    assert_eq!(f.partition, "eu");
    assert_eq!(f.table.as_deref(), Some("_owned"));
    assert_eq!(
        f.key.as_deref(),
        Some(owned_key("users", s.acme, b"u1").as_slice())
    );
    assert!(f.detail.contains("no global entry"), "{f}");
    // No plaintext value in the report.
    assert!(!report.to_string().contains("ann@acme"));
}

#[test]
fn deleted_data_row_is_an_orphan_entry() {
    let s = build();
    let ukey = first_owned(&s, "eu", "users", s.acme, b"u1");
    let dkey = data_key(s.acme, b"u1");
    patch(&s.region("eu"), |w| {
        let old = w
            .open_table(data("t/users"))
            .unwrap()
            .remove(dkey.as_slice())
            .unwrap()
            .unwrap()
            .value()
            .len() as u64;
        // Keep the counters right so the orphan is the only finding.
        let mut usage = w.open_table(USAGE).unwrap();
        let (r, b) = usage.get(s.acme).unwrap().unwrap().value();
        usage.insert(s.acme, (r - 1, b - old)).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::OrphanEntry]);
    let f = &report.findings()[0];
    assert_eq!(f.partition, "global");
    assert_eq!(f.table.as_deref(), Some("_unique"));
    assert_eq!(f.key.as_deref(), Some(ukey.as_slice()));
    assert!(
        f.detail.contains("does not exist") && f.detail.contains("`eu`"),
        "{f}"
    );
}

#[test]
fn row_outside_the_placement_policy_and_of_an_unknown_account() {
    let s = build();
    // carol may only store data in eu; account 999 does not exist.
    let encode = |account: u64, key: &[u8]| {
        regionkv::encode_value(&NOTES, AccountId::from_raw(account), key, b"misplaced").unwrap()
    };
    let value = encode(s.carol, b"p1");
    let other = encode(999, b"x");
    let k1 = data_key(s.carol, b"p1");
    let k2 = data_key(999, b"x");
    patch(&s.region("us"), |w| {
        let mut t = w.open_table(data("t/notes")).unwrap();
        t.insert(k1.as_slice(), value.as_slice()).unwrap();
        t.insert(k2.as_slice(), other.as_slice()).unwrap();
        let mut usage = w.open_table(USAGE).unwrap();
        usage.insert(s.carol, (1, value.len() as u64)).unwrap();
        usage.insert(999, (1, value.len() as u64)).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Placement, FindingKind::UnknownAccount]);
    let (p, u) = (&report.findings()[0], &report.findings()[1]);
    assert_eq!(p.partition, "us");
    assert_eq!(p.table.as_deref(), Some("t/notes"));
    assert_eq!(p.key.as_deref(), Some(k1.as_slice()));
    assert!(p.detail.contains("carol"), "{p}");
    assert_eq!(u.partition, "us");
    assert_eq!(u.table.as_deref(), Some("t/notes"));
    assert_eq!(u.key.as_deref(), Some(k2.as_slice()));
}

#[test]
fn changed_usage_row_is_a_counter_finding() {
    let s = build();
    patch(&s.region("eu"), |w| {
        let mut usage = w.open_table(USAGE).unwrap();
        let (r, b) = usage.get(s.acme).unwrap().unwrap().value();
        usage.insert(s.acme, (r + 1, b)).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Counter]);
    let f = &report.findings()[0];
    assert_eq!(f.partition, "eu");
    assert_eq!(f.table.as_deref(), Some("_usage"));
    assert_eq!(f.key.as_deref(), Some(s.acme.to_be_bytes().as_slice()));

    // A missing usage row is found too.
    patch(&s.region("us"), |w| {
        w.open_table(USAGE).unwrap().remove(s.bob).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Counter, FindingKind::Counter]);
    let f = report
        .findings()
        .iter()
        .find(|f| f.partition == "us")
        .unwrap();
    assert_eq!(f.table.as_deref(), Some("_usage"));
    assert_eq!(f.key.as_deref(), Some(s.bob.to_be_bytes().as_slice()));
    assert!(f.detail.contains("no usage row"), "{f}");
}

#[test]
fn flipped_byte_in_a_value_is_a_checksum_finding() {
    let s = build();
    let k_raw = data_key(s.bob, b"n1");
    let k_rkyv = data_key(s.acme, b"lic-1");
    patch(&s.region("us"), |w| {
        let mut t = w.open_table(data("t/notes")).unwrap();
        let mut v = t.get(k_raw.as_slice()).unwrap().unwrap().value().to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x20;
        t.insert(k_raw.as_slice(), v.as_slice()).unwrap();
    });
    patch(&s.region("eu"), |w| {
        let mut t = w.open_table(data("t/licenses")).unwrap();
        let mut v = t.get(k_rkyv.as_slice()).unwrap().unwrap().value().to_vec();
        v[8] ^= 0x01;
        t.insert(k_rkyv.as_slice(), v.as_slice()).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Checksum, FindingKind::Checksum]);
    let names: Vec<_> = report
        .findings()
        .iter()
        .map(|f| (f.partition.as_str(), f.table.as_deref(), f.key.clone()))
        .collect();
    assert!(
        names.contains(&("us", Some("t/notes"), Some(k_raw.clone()))),
        "{report}"
    );
    assert!(
        names.contains(&("eu", Some("t/licenses"), Some(k_rkyv.clone()))),
        "{report}"
    );
    assert!(report.findings()[0].detail.contains("checksum"), "{report}");

    // The damage is what a read reports too.
    let db = s.open();
    let r = db.read(AccountId::from_raw(s.bob)).unwrap();
    assert!(matches!(r.get(&NOTES, b"n1"), Err(Error::Corrupt { .. })));
}

#[test]
fn pending_entry_left_in_the_index_is_in_flight() {
    // Recovery rolls back Pending entries it finds through their `_inflight` row, and
    // replays and deletes every applied marker of an open region, so neither a raw
    // `_inflight` row nor a raw `_markers` row survives a reopen (the latter is covered by a
    // unit test in src/audit/region.rs, on an open store). A Pending entry without its in-flight
    // row is invisible to recovery: audit must report it.
    let s = build();
    let ukey = first_owned(&s, "eu", "users", s.acme, b"u1");
    patch(&s.global(), |w| {
        let mut t = w.open_table(UNIQUE).unwrap();
        let mut v = t.get(ukey.as_slice()).unwrap().unwrap().value().to_vec();
        assert_eq!(v[0], 1, "Committed");
        v[0] = 3; // Pending, same txn and record, nothing to restore.
        t.insert(ukey.as_slice(), v.as_slice()).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::InFlight]);
    let f = &report.findings()[0];
    assert_eq!(f.partition, "global");
    assert_eq!(f.table.as_deref(), Some("_unique"));
    assert_eq!(f.key.as_deref(), Some(ukey.as_slice()));
    assert!(f.detail.contains("being claimed"), "{f}");
}

#[test]
fn forged_marker_is_replayed_by_recovery_and_its_claim_is_an_orphan_entry() {
    // A raw applied marker is consumed at open (replayed, then deleted): its claim of a
    // record that does not exist becomes a committed entry, which audit reports.
    let s = build();
    let mut m = s.acme.to_le_bytes().to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&5u32.to_le_bytes());
    m.extend_from_slice(b"email");
    m.extend_from_slice(&[7; 16]);
    m.extend_from_slice(&5u32.to_le_bytes());
    m.extend_from_slice(b"users");
    m.extend_from_slice(&5u32.to_le_bytes());
    m.extend_from_slice(b"ghost");
    m.extend_from_slice(&0u32.to_le_bytes());
    patch(&s.region("us"), |w| {
        let mut t = w.open_table(MARKERS).unwrap();
        t.insert((1u128 << 100) | 1, m.as_slice()).unwrap();
    });
    let db = s.open();
    assert_eq!(db.recovery_report().markers, 1);
    let report = db.audit().unwrap();
    let kinds: Vec<_> = report.findings().iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::OrphanEntry], "{report}");
    let f = &report.findings()[0];
    assert_eq!(
        f.key.as_deref(),
        Some(unique_key("email", &[7; 16]).as_slice())
    );
    assert!(
        f.detail.contains("ghost") && f.detail.contains("`us`"),
        "{f}"
    );
}

#[test]
fn garbage_in_an_owned_row_is_undecodable() {
    let s = build();
    let okey = owned_key("users", s.acme, b"u1");
    patch(&s.region("eu"), |w| {
        let mut t = w.open_table(OWNED).unwrap();
        t.insert(okey.as_slice(), b"\xff\xff\xff".as_slice())
            .unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Undecodable]);
    let f = &report.findings()[0];
    assert_eq!(f.partition, "eu");
    assert_eq!(f.table.as_deref(), Some("_owned"));
    assert_eq!(f.key.as_deref(), Some(okey.as_slice()));

    // Garbage in a unique entry too.
    let ukey = first_owned(&s, "us", "users", s.bob, b"b1");
    patch(&s.global(), |w| {
        w.open_table(UNIQUE)
            .unwrap()
            .insert(ukey.as_slice(), b"junk".as_slice())
            .unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Undecodable, FindingKind::Undecodable]);
    let f = report
        .findings()
        .iter()
        .find(|f| f.partition == "global")
        .unwrap();
    assert_eq!(f.table.as_deref(), Some("_unique"));
    assert_eq!(f.key.as_deref(), Some(ukey.as_slice()));
}

#[test]
fn value_owned_by_two_records_is_a_duplicate_owner() {
    let s = build();
    // bob's n2 (in us) also claims to own acme's "ann@acme" (whose entry names acme's u1).
    let row = raw_get(&s.region("eu"), OWNED, &owned_key("users", s.acme, b"u1")).unwrap();
    let okey = owned_key("notes", s.bob, b"n2");
    patch(&s.region("us"), |w| {
        w.open_table(OWNED)
            .unwrap()
            .insert(okey.as_slice(), row.as_slice())
            .unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::DuplicateOwner]);
    let f = &report.findings()[0];
    assert_eq!(f.partition, "us");
    assert_eq!(f.table.as_deref(), Some("_owned"));
    assert_eq!(f.key.as_deref(), Some(okey.as_slice()));
    assert!(f.detail.contains("u1"), "{f}");

    // Without the entry, both owners are reported as duplicates (not as two orphans).
    let ukey = first_owned(&s, "eu", "users", s.acme, b"u1");
    patch(&s.global(), |w| {
        w.open_table(UNIQUE)
            .unwrap()
            .remove(ukey.as_slice())
            .unwrap();
    });
    let report = audit_expect(
        &s,
        &[FindingKind::DuplicateOwner, FindingKind::DuplicateOwner],
    );
    let parts: Vec<_> = report
        .findings()
        .iter()
        .map(|f| f.partition.as_str())
        .collect();
    assert!(parts.contains(&"us") && parts.contains(&"eu"), "{report}");
}

#[test]
fn report_display_names_each_finding() {
    let s = build();
    patch(&s.region("eu"), |w| {
        let mut usage = w.open_table(USAGE).unwrap();
        usage.insert(s.carol, (42, 42)).unwrap();
    });
    let report = audit_expect(&s, &[FindingKind::Counter]);
    let text = report.to_string();
    assert!(text.starts_with("audit found 1 problem"), "{text}");
    assert!(text.contains("[counter] eu/_usage"), "{text}");
    assert!(text.contains("42"), "{text}");
}

#[test]
fn changed_digest_key_is_refused_at_open_and_a_wrong_digest_is_a_finding() {
    // The key itself changed: every value would look free. Refused at open.
    let s = build();
    let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("_meta");
    patch(&s.global(), |w| {
        w.open_table(meta)
            .unwrap()
            .insert("digest_key", [7u8; 32].as_slice())
            .unwrap();
    });
    let refused = Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .open(&s.path);
    assert!(
        matches!(refused, Err(Error::Corrupt { ref partition, .. }) if partition == "global"),
        "{refused:?}"
    );

    // One owned row's digest changed, past the rows sampled at open: audit names it.
    let s = build();
    {
        let db = s.open();
        for i in 0..8u8 {
            let v = format!("zz-{i}@example.com");
            commit(&db, s.acme, None, |w| {
                w.insert_unique(&USERS, [b'z', i], b"x", &[Unique::new("email", &v)])
                    .unwrap()
            });
        }
        db.close().unwrap();
    }
    let okey = owned_key("users", s.acme, &[b'z', 7]);
    let row = raw_get(&s.region("eu"), OWNED, &okey).expect("owned row");
    let mut bad = row.clone();
    // Layout: [n u32][ns len u32][ns][digest 16][value]: flip a digest byte.
    let ns_len = u32::from_le_bytes(bad[4..8].try_into().unwrap()) as usize;
    bad[8 + ns_len] ^= 0x55;
    patch(&s.region("eu"), |w| {
        w.open_table(OWNED)
            .unwrap()
            .insert(okey.as_slice(), bad.as_slice())
            .unwrap();
    });
    let db = s.open();
    let report = db.audit().unwrap();
    let f = report
        .findings()
        .iter()
        .find(|f| f.kind == FindingKind::DigestMismatch)
        .unwrap_or_else(|| panic!("no digest finding: {report}"));
    assert_eq!(f.partition, "eu");
    assert_eq!(f.key.as_deref(), Some(okey.as_slice()));
}
