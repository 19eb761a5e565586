//! Parallel sweeps (`Db::sweep`, `Db::scan_all_parallel`) against `Db::scan_all`: the same
//! rows (a proptest over varied accounts, regions, keys and values, and a region large
//! enough to be cut into several units), the same error for a damaged record (CRC, rkyv
//! validation, short value, short key), the same handling of disabled regions (at open and
//! during the sweep), a callback error or panic stopping the sweep, threads bounded.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use redb::ReadableTable;
use regionkv::layout::region_file;
use regionkv::rkyv;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, Error, NewAccount, Raw, RegionId, Schema, Table, Upgrade, Value};

use common::files::edit_with_redb;
use common::panic_message;
use common::sim::quiet_builder;

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

const NOTES: Table<Raw> = Table::new("notes");

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct DocV1 {
    n: u64,
    title: String,
}

#[derive(rkyv::Archive, rkyv::Serialize, Schema, Debug, Clone, PartialEq)]
#[rkyv(crate = regionkv::rkyv)]
struct Doc {
    n: u64,
    title: String,
    tags: Vec<u32>,
}

impl Upgrade<Doc> for DocV1 {
    fn upgrade(old: &ArchivedDocV1) -> Doc {
        Doc {
            n: old.n.to_native(),
            title: old.title.to_string(),
            tags: vec![1],
        }
    }
}

const DOCS_V1: Table<DocV1> = Table::new("docs");
const DOCS: Table<Doc> = Table::<Doc>::new("docs")
    .version(2)
    .upgrade_from::<DocV1>(1);
/// Another type for `notes`: every read of it is a schema mismatch.
const NOTES_AS_DOC: Table<Doc> = Table::new("notes");

/// (region, account, user key, what the record says).
type Seen = (RegionId, AccountId, Vec<u8>, Vec<u8>);

/// What a record says, as bytes to compare.
trait Says: Value {
    fn says(v: &Self::View) -> Vec<u8>;
}
impl Says for Raw {
    fn says(v: &[u8]) -> Vec<u8> {
        v.to_vec()
    }
}
impl Says for Doc {
    fn says(v: &ArchivedDoc) -> Vec<u8> {
        let tags: Vec<u32> = v.tags.iter().map(|t| t.to_native()).collect();
        format!("{}|{}|{tags:?}", v.n.to_native(), v.title).into_bytes()
    }
}

/// Every row `scan_all` yields, sorted (panics on an error item).
fn scan_all_rows<V: Says>(db: &Db, t: &Table<V>) -> Vec<Seen> {
    let mut rows: Vec<Seen> = db
        .scan_all(t)
        .expect("scan_all")
        .map(|row| {
            let row = row.expect("scan_all row");
            (
                row.region(),
                row.account(),
                row.key().to_vec(),
                V::says(row.record()),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Every row the sweep visits with `threads`, sorted, with its report.
fn sweep_rows<V: Says>(
    db: &Db,
    t: &Table<V>,
    threads: usize,
) -> regionkv::Result<(Vec<Seen>, regionkv::SweepReport)> {
    let seen = Mutex::new(Vec::new());
    let report = db
        .sweep(t)
        .threads(threads)
        .run(|region, account, key, rec| {
            seen.lock()
                .unwrap()
                .push((region, account, key.to_vec(), V::says(rec)));
            Ok::<(), Error>(())
        })?;
    let mut rows = seen.into_inner().unwrap();
    rows.sort();
    Ok((rows, report))
}

/// Rows per region name, from a sorted row list.
fn per_region(db: &Db, rows: &[Seen]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (r, ..) in rows {
        *m.entry(db.region_name(*r).unwrap()).or_insert(0) += 1;
    }
    m
}

/// The sweep visits exactly `scan_all`'s rows, each once, with 1, 2, 3 and 8 threads, and
/// its report counts them per region and lists the disabled regions as `skipped`.
fn assert_same_rows<V: Says>(db: &Db, t: &Table<V>) -> Vec<Seen> {
    assert_same_rows_skipping(db, t, &[])
}

fn assert_same_rows_skipping<V: Says>(db: &Db, t: &Table<V>, skipped: &[&str]) -> Vec<Seen> {
    let want = scan_all_rows(db, t);
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, 2, 3, 8] {
        let (got, report) = sweep_rows(db, t, threads).expect("sweep");
        assert_eq!(got.len(), want.len(), "{threads} threads: row count");
        assert_eq!(got, want, "{threads} threads: the rows of scan_all");
        assert_eq!(report.rows, want.len() as u64);
        let mut by_region: BTreeMap<String, u64> = per_region(db, &want);
        for (name, n) in &report.regions {
            assert_eq!(
                by_region.remove(name).unwrap_or(0),
                *n,
                "{threads} threads: rows of region {name}"
            );
        }
        assert!(by_region.is_empty(), "regions missing from the report");
        assert_eq!(
            report.skipped, skipped,
            "{threads} threads: skipped regions"
        );
        assert!(
            report.threads >= 1 && report.threads <= threads.min(parallel),
            "{threads} threads asked, {} used, {parallel} available",
            report.threads
        );
    }
    // The per-thread states of `fold` partition the rows: each row in exactly one state.
    let (report, states) = db
        .sweep(t)
        .threads(3)
        .fold(
            Vec::new,
            |rows: &mut Vec<Seen>, region, account, key, rec| {
                rows.push((region, account, key.to_vec(), V::says(rec)));
                Ok::<(), Error>(())
            },
        )
        .expect("fold");
    assert_eq!(states.len(), report.threads, "one state per thread");
    let mut merged: Vec<Seen> = states.into_iter().flatten().collect();
    merged.sort();
    assert_eq!(merged, want, "fold: the rows of scan_all");
    // The shorthand is the same sweep.
    let n = AtomicU64::new(0);
    let report = db
        .scan_all_parallel(t, |_, _, _, _| {
            n.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        (report.rows, n.into_inner()),
        (want.len() as u64, want.len() as u64)
    );
    want
}

fn sim_store(sim: &SimStorage) -> Db {
    let mut b = quiet_builder(sim);
    for r in REGIONS {
        b = b.region(r);
    }
    b.open("/sweep").expect("open")
}

/// Accounts: (home, other allowed regions), as region indices.
const ACCOUNTS: [(usize, &[usize]); 5] =
    [(0, &[1]), (1, &[2]), (2, &[0, 1]), (0, &[]), (1, &[0, 2])];

fn create(db: &Db) -> Vec<(AccountId, Vec<&'static str>)> {
    ACCOUNTS
        .iter()
        .enumerate()
        .map(|(i, (home, others))| {
            let mut n = NewAccount::new(format!("acct{i}"), REGIONS[*home]);
            let mut allowed = vec![REGIONS[*home]];
            for o in *others {
                n = n.allow(REGIONS[*o]);
                allowed.push(REGIONS[*o]);
            }
            (db.create_account(n).expect("create account"), allowed)
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Put {
    Note {
        acct: usize,
        region: usize,
        key: Vec<u8>,
        len: usize,
    },
    Doc {
        acct: usize,
        region: usize,
        key: Vec<u8>,
        n: u64,
        old: bool,
    },
    Remove {
        acct: usize,
        region: usize,
        key: Vec<u8>,
    },
}

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        prop::collection::vec(prop_oneof![Just(0u8), Just(0xFFu8), Just(b'k')], 0..4),
    ]
}

fn put_strategy() -> impl Strategy<Value = Put> {
    prop_oneof![
        4 => (0..5usize, 0..3usize, key_strategy(), 0..300usize)
            .prop_map(|(acct, region, key, len)| Put::Note { acct, region, key, len }),
        3 => (0..5usize, 0..3usize, key_strategy(), any::<u64>(), any::<bool>())
            .prop_map(|(acct, region, key, n, old)| Put::Doc { acct, region, key, n, old }),
        1 => (0..5usize, 0..3usize, key_strategy())
            .prop_map(|(acct, region, key)| Put::Remove { acct, region, key }),
    ]
}

/// Applies the puts, one commit each, in a region the account is allowed in; the records
/// of the old schema version first (a table holding the current version refuses an older
/// handle's writes).
fn apply(db: &Db, accts: &[(AccountId, Vec<&'static str>)], puts: &[Put]) {
    let old_first = puts
        .iter()
        .filter(|p| matches!(p, Put::Doc { old: true, .. }))
        .chain(
            puts.iter()
                .filter(|p| !matches!(p, Put::Doc { old: true, .. })),
        );
    {
        for p in old_first {
            let (acct, region) = match p {
                Put::Note { acct, region, .. }
                | Put::Doc { acct, region, .. }
                | Put::Remove { acct, region, .. } => (*acct, *region),
            };
            let (id, allowed) = &accts[acct];
            let region = allowed[region % allowed.len()];
            let mut w = db.write_in(*id, region).expect("write");
            match p {
                Put::Note { key, len, .. } => {
                    let v: Vec<u8> = (0..*len).map(|i| (i * 7 + key.len()) as u8).collect();
                    w.insert(&NOTES, key.as_slice(), &v).expect("insert note");
                }
                Put::Doc { key, n, old, .. } => {
                    let title = format!("doc {n} of {region}");
                    if *old {
                        w.insert(&DOCS_V1, key.as_slice(), &DocV1 { n: *n, title })
                    } else {
                        let tags = vec![*n as u32, 7];
                        w.insert(&DOCS, key.as_slice(), &Doc { n: *n, title, tags })
                    }
                    .expect("insert doc");
                }
                Put::Remove { key, .. } => {
                    w.remove(&NOTES, key.as_slice()).expect("remove note");
                    w.remove(&DOCS, key.as_slice()).expect("remove doc");
                }
            }
            w.commit().expect("commit");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Over varied accounts, regions, keys (empty, 0x00 and 0xFF bytes, long), values (raw
    /// of 0..300 bytes, rkyv records of the current and an older schema version read
    /// through the upgrade) and removals: the sweep visits exactly scan_all's rows.
    #[test]
    fn sweep_visits_exactly_the_rows_of_scan_all(puts in prop::collection::vec(put_strategy(), 1..120)) {
        let sim = SimStorage::new();
        let db = sim_store(&sim);
        let accts = create(&db);
        apply(&db, &accts, &puts);
        let notes = assert_same_rows(&db, &NOTES);
        let docs = assert_same_rows(&db, &DOCS);
        let written = puts.iter().any(|p| !matches!(p, Put::Remove { .. }));
        prop_assert!(!written || notes.len() + docs.len() > 0, "the workload left rows");
        db.close().unwrap();
    }
}

/// One region large enough to be cut into several units (one account with 20,000 rows,
/// others with a few): the units tile it, so every row is visited once.
#[test]
fn a_region_cut_into_units_is_visited_whole() {
    let sim = SimStorage::new();
    let db = sim_store(&sim);
    let accts = create(&db);
    let big = accts[0].0;
    for start in (0..20_000u64).step_by(5_000) {
        let mut w = db.write(big).unwrap();
        for i in start..start + 5_000 {
            w.insert(&NOTES, i, &i.to_le_bytes()).unwrap();
        }
        w.commit().unwrap();
    }
    for (i, (id, allowed)) in accts.iter().enumerate().skip(1) {
        for r in allowed {
            let mut w = db.write_in(*id, r).unwrap();
            for k in 0..(3 + i as u8) {
                w.insert(&NOTES, [k, 0xFF, k], &[k; 5]).unwrap();
            }
            w.commit().unwrap();
        }
    }
    let rows = assert_same_rows(&db, &NOTES);
    assert!(rows.len() > 20_000);
    let (_, report) = sweep_rows(&db, &NOTES, 8).unwrap();
    let us = report.regions.iter().find(|(n, _)| n == "us").unwrap().1;
    assert!(us >= 20_000, "{report:?}");
    db.close().unwrap();
}

// --- damaged records --------------------------------------------------------------------

fn data_key(account: AccountId, key: &[u8]) -> Vec<u8> {
    let mut k = account.get().to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

/// The envelope regionkv stores (format 2), with a CRC that matches whatever payload it
/// is given: damage a checksum cannot see.
fn sealed(table: &str, data_key: &[u8], codec: u8, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = crc32fast::Hasher::new();
    h.update(&[table.len() as u8]);
    h.update(table.as_bytes());
    h.update(&(data_key.len() as u32).to_le_bytes());
    h.update(data_key);
    h.update(&[codec]);
    h.update(&version.to_le_bytes());
    h.update(payload);
    let mut v = vec![2, codec];
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&h.finalize().to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A closed store at `dir` (us, eu): good rows of `docs` and `notes` in both regions.
fn file_store(dir: &Path) -> AccountId {
    let db = Db::builder().region("us").region("eu").open(dir).unwrap();
    let a = db
        .create_account(NewAccount::new("acme", "eu").allow("us"))
        .unwrap();
    for region in ["us", "eu"] {
        let mut w = db.write_in(a, region).unwrap();
        for i in 0..50u64 {
            let doc = Doc {
                n: i,
                title: format!("title {i} in {region}"),
                tags: vec![1, 2, 3],
            };
            w.insert(&DOCS, format!("doc-{i:03}"), &doc).unwrap();
            w.insert(&NOTES, format!("note-{i:03}"), b"a note").unwrap();
        }
        w.commit().unwrap();
    }
    db.close().unwrap();
    a
}

/// Rewrites row `data_key` of user table `table` in region `eu`'s file (through redb:
/// valid pages around the damaged value).
fn damage_eu(dir: &Path, table: &str, data_key: &[u8], value: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let path = region_file(dir, "eu");
    let bytes = std::fs::read(&path).unwrap();
    let name = format!("t/{table}");
    let def = redb::TableDefinition::<&[u8], &[u8]>::new(&name);
    let edited = edit_with_redb(&bytes, |db| {
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(def).unwrap();
            let old = t
                .get(data_key)
                .unwrap()
                .map(|g| g.value().to_vec())
                .unwrap_or_default();
            t.insert(data_key, value(old).as_slice()).unwrap();
        }
        w.commit().unwrap();
    });
    std::fs::write(&path, edited).unwrap();
}

/// `scan_all` yields exactly one error, `Corrupt` in `eu`; every thread count of the sweep
/// returns that same error (same message), and no callback saw the damaged row (`bad_key`
/// in `eu`; `us` holds an intact row of the same key).
fn assert_damage_reported_alike<V: Says>(db: &Db, t: &Table<V>, bad_key: &[u8], why: &str) {
    let items: Vec<_> = db.scan_all(t).unwrap().collect();
    let errors: Vec<&Error> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert_eq!(errors.len(), 1, "scan_all reports the damaged row once");
    let want = errors[0];
    assert!(
        matches!(want, Error::Corrupt { partition, .. } if partition == "eu"),
        "{want:?}"
    );
    assert!(want.to_string().contains(why), "{want} (expected: {why})");
    assert!(items.len() > 50, "scan_all goes on after it");
    let eu = db.region_id("eu").unwrap();
    for threads in [1, 2, 4] {
        let saw_bad = AtomicU64::new(0);
        let r = db.sweep(t).threads(threads).run(|region, _, key, _| {
            if region == eu && key == bad_key {
                saw_bad.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), Error>(())
        });
        match r {
            Err(e @ Error::Corrupt { .. }) => {
                assert_eq!(e.to_string(), want.to_string(), "{threads} threads")
            }
            other => panic!("{threads} threads: expected {want:?}, got {other:?}"),
        }
        assert_eq!(
            saw_bad.into_inner(),
            0,
            "{threads} threads: the damaged record {:?} reached the callback ({want})",
            String::from_utf8_lossy(bad_key)
        );
    }
}

/// A fresh store with one row of `eu` damaged by `damage`, checked by
/// [`assert_damage_reported_alike`].
fn damaged_case<V: Says>(
    t: &Table<V>,
    key: &[u8],
    why: &str,
    damage: impl FnOnce(&Path, AccountId, Vec<u8>),
) {
    let dir = tempfile::tempdir().unwrap();
    let a = file_store(dir.path());
    damage(dir.path(), a, data_key(a, key));
    let db = Db::builder()
        .region("us")
        .region("eu")
        .open(dir.path())
        .unwrap();
    assert_damage_reported_alike(&db, t, key, why);
    db.close().unwrap();
}

#[test]
fn a_damaged_record_is_the_error_scan_all_yields() {
    // A flipped payload byte: the CRC fails.
    damaged_case(&DOCS, b"doc-007", "checksum mismatch", |dir, _, k| {
        damage_eu(dir, "docs", &k, |mut v| {
            let last = v.len() - 1;
            v[last] ^= 0x04;
            v
        })
    });
    // A payload whose CRC matches but which rkyv rejects (pointers out of bounds): an
    // error, never a panic nor a record read from outside the value.
    damaged_case(
        &DOCS,
        b"doc-011",
        "payload failed validation",
        |dir, _, k| {
            let v = sealed("docs", &k, 1, DOCS.schema_version(), &[0xFF; 40]);
            damage_eu(dir, "docs", &k, |_| v)
        },
    );
    // A value shorter than its header.
    damaged_case(
        &NOTES,
        b"note-020",
        "shorter than its header",
        |dir, _, k| damage_eu(dir, "notes", &k, |_| vec![2, 0, 1]),
    );
}

#[test]
fn a_row_key_shorter_than_an_account_is_the_error_scan_all_yields() {
    let dir = tempfile::tempdir().unwrap();
    file_store(dir.path());
    let short = b"\x00\x01";
    damage_eu(dir.path(), "notes", short, |_| {
        sealed("notes", short, 0, 1, b"x")
    });
    let db = Db::builder()
        .region("us")
        .region("eu")
        .open(dir.path())
        .unwrap();
    assert_damage_reported_alike(&db, &NOTES, b"", "row key shorter than 8 bytes");
    db.close().unwrap();
}

#[test]
fn another_type_is_the_mismatch_scan_all_yields_and_no_row_is_visited() {
    let sim = SimStorage::new();
    let db = sim_store(&sim);
    let accts = create(&db);
    apply(
        &db,
        &accts,
        &[Put::Note {
            acct: 0,
            region: 0,
            key: b"n".to_vec(),
            len: 10,
        }],
    );
    let items: Vec<_> = db.scan_all(&NOTES_AS_DOC).unwrap().collect();
    assert_eq!(items.len(), 1);
    let want = items[0].as_ref().map(|_| ()).unwrap_err();
    assert!(matches!(want, Error::SchemaMismatch { .. }), "{want:?}");
    let calls = AtomicU64::new(0);
    let got = db
        .scan_all_parallel(&NOTES_AS_DOC, |_, _, _, _| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap_err();
    assert_eq!(got.to_string(), want.to_string());
    assert_eq!(calls.into_inner(), 0);
    db.close().unwrap();
}

// --- the callback's errors and panics ---------------------------------------------------

/// 3 regions, 6,000 rows of `notes`.
fn loaded(sim: &SimStorage) -> Db {
    let db = sim_store(sim);
    let accts = create(&db);
    for (i, (id, allowed)) in accts.iter().enumerate() {
        for r in allowed {
            let mut w = db.write_in(*id, r).unwrap();
            for k in 0..(6_000 / 11) as u64 {
                w.insert(&NOTES, (i as u64, k), b"row").unwrap();
            }
            w.commit().unwrap();
        }
    }
    db
}

#[derive(Debug, PartialEq)]
enum MyError {
    Enough(u64),
    Store(String),
}

impl From<Error> for MyError {
    fn from(e: Error) -> Self {
        MyError::Store(e.to_string())
    }
}

#[test]
fn a_callback_error_stops_the_sweep_and_is_returned() {
    let sim = SimStorage::new();
    let db = loaded(&sim);
    let total = db.scan_all(&NOTES).unwrap().count() as u64;
    assert!(total >= 5_000);
    for threads in [1, 2, 4] {
        let calls = AtomicU64::new(0);
        let r = db.sweep(&NOTES).threads(threads).run(|_, _, _, _| {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 50 {
                return Err(MyError::Enough(n));
            }
            Ok(())
        });
        assert_eq!(r, Err(MyError::Enough(50)), "{threads} threads");
        let calls = calls.into_inner();
        if threads == 1 {
            assert_eq!(calls, 50, "one thread stops at once");
        } else {
            assert!(
                calls < total / 2,
                "{threads} threads: {calls} calls of {total}"
            );
        }
    }
    // The store's error type through the shorthand.
    let r = db.scan_all_parallel(&NOTES, |_, _, key, _| {
        if key.ends_with(&7u64.to_be_bytes()) {
            return Err(Error::InvalidArgument("stop at 7".into()));
        }
        Ok(())
    });
    assert!(
        matches!(&r, Err(Error::InvalidArgument(m)) if m == "stop at 7"),
        "{r:?}"
    );
    // The store is as it was: a full sweep again.
    assert_eq!(sweep_rows(&db, &NOTES, 2).unwrap().1.rows, total);
    db.close().unwrap();
}

#[test]
fn a_callback_panic_is_resumed_on_the_caller_after_every_thread_stopped() {
    let sim = SimStorage::new();
    let db = loaded(&sim);
    for threads in [1, 2] {
        let calls = AtomicU64::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            db.sweep(&NOTES).threads(threads).run(|_, _, _, _| {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                if n == 10 {
                    panic!("boom in the callback");
                }
                if n > 10 {
                    // The other thread stops at its next row once the panicking one has
                    // unwound (after the panic hook, which may capture a backtrace: slow
                    // on a loaded machine); pace it so the bound below measures the
                    // stop, not the scheduler (3,000 rows = 0.6 s of hook time).
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                Ok::<(), Error>(())
            })
        }));
        let payload = r.expect_err("the panic reaches the caller");
        assert_eq!(panic_message(&*payload), "boom in the callback");
        assert!(
            calls.into_inner() < 3_000,
            "{threads} threads: the sweep stopped"
        );
    }
    // A panic in `fold`'s `init` too.
    let r = catch_unwind(AssertUnwindSafe(|| {
        db.sweep(&NOTES).threads(2).fold(
            || -> u64 { panic!("boom in init") },
            |_, _, _, _, _| Ok::<(), Error>(()),
        )
    }));
    assert_eq!(
        panic_message(&*r.expect_err("init's panic")),
        "boom in init"
    );
    assert!(sweep_rows(&db, &NOTES, 2).unwrap().1.rows > 0);
    db.close().unwrap();
}

// --- disabled regions, closed store, bad names, threads ---------------------------------

#[test]
fn a_region_disabled_at_open_is_skipped_as_scan_all_skips_it() {
    let sim = SimStorage::new();
    let db = loaded(&sim);
    let with_ap = scan_all_rows(&db, &NOTES);
    db.close().unwrap();

    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .disable_region("ap")
        .open("/sweep")
        .unwrap();
    let rows = assert_same_rows_skipping(&db, &NOTES, &["ap"]);
    let ap = with_ap
        .iter()
        .filter(|(r, ..)| db.region_name(*r).as_deref() == Some("ap"))
        .count();
    assert!(ap > 0, "ap held rows");
    assert_eq!(
        rows.len() + ap,
        with_ap.len(),
        "exactly ap's rows are left out"
    );
    let (_, report) = sweep_rows(&db, &NOTES, 2).unwrap();
    assert_eq!(
        report
            .regions
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["us", "eu"]
    );
    db.close().unwrap();
}

#[test]
fn a_region_disabled_during_the_sweep_is_read_to_the_end_as_by_scan_all() {
    let sim = SimStorage::new();
    let db = loaded(&sim);
    let all = scan_all_rows(&db, &NOTES);
    let calls = AtomicU64::new(0);
    let seen = Mutex::new(Vec::new());
    let report = db
        .sweep(&NOTES)
        .threads(1)
        .run(|region, account, key, rec| {
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                db.disable_region("ap")?;
            }
            seen.lock()
                .unwrap()
                .push((region, account, key.to_vec(), rec.to_vec()));
            Ok::<(), Error>(())
        })
        .unwrap();
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, all, "the sweep's snapshot holds every region's rows");
    assert!(report.skipped.is_empty());
    assert!(!common::region_enabled(&db, "ap"));
    // A sweep started after it skips it.
    let (rows, report) = sweep_rows(&db, &NOTES, 2).unwrap();
    assert_eq!(report.skipped, ["ap"]);
    assert_eq!(rows, scan_all_rows(&db, &NOTES));
    assert!(rows.len() < all.len());
    db.close().unwrap();
}

#[test]
fn a_closed_store_and_a_bad_table_name_are_refused_as_by_scan_all() {
    let sim = SimStorage::new();
    let db = sim_store(&sim);
    const BAD: Table<Raw> = Table::new("");
    let want = db.scan_all(&BAD).map(|_| ()).unwrap_err();
    assert!(matches!(want, Error::InvalidArgument(_)), "{want:?}");
    let got = db.scan_all_parallel(&BAD, |_, _, _, _| Ok(())).unwrap_err();
    assert_eq!(got.to_string(), want.to_string());

    let other = db.clone();
    other.close().unwrap();
    assert!(matches!(
        db.scan_all(&NOTES).map(|_| ()),
        Err(Error::Closed)
    ));
    let got = db.scan_all_parallel(&NOTES, |_, _, _, _| Ok(()));
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
}

#[test]
fn threads_are_bounded_by_the_cap_and_the_machine() {
    let sim = SimStorage::new();
    let db = loaded(&sim);
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cap in [0, 1, 2, 3, 64] {
        let threads = Mutex::new(std::collections::HashSet::new());
        let report = db
            .sweep(&NOTES)
            .threads(cap)
            .run(|_, _, _, _| {
                threads.lock().unwrap().insert(std::thread::current().id());
                Ok::<(), Error>(())
            })
            .unwrap();
        let distinct = threads.into_inner().unwrap().len();
        let bound = cap.clamp(1, parallel);
        assert!(report.threads <= bound, "cap {cap}: {report:?}");
        assert!(
            distinct <= report.threads,
            "cap {cap}: {distinct} threads ran callbacks"
        );
        if cap <= 1 {
            assert_eq!((report.threads, distinct), (1, 1));
        }
    }
    db.close().unwrap();
}
