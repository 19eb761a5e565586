//! Typed and raw records: round trips (also across reopens), zero-copy reads, checksums,
//! argument checks and limits, records held across a drop and reopen of the Db, through the
//! public API only.

mod common;

use common::T;
use common::files::*;
use common::refusal::{Rejected, run_rejections};
use common::sim::*;
use proptest::prelude::*;
use regionkv::layout::region_file;
use regionkv::testing::SimStorage;
use regionkv::{
    AccountId, Db, Error, MAX_KEY, MAX_TABLE_NAME, NewAccount, Raw, Record, Table, Unique, Write,
};
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .open(dir.path())
        .unwrap();
    let a = db
        .create_account(NewAccount::new("a", "eu").allow("us"))
        .unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, b"k1", b"v1").unwrap();
    w.insert_unique(&T, b"k2", b"v2", &[Unique::new("email", "x@y")])
        .unwrap();
    w.commit().unwrap();
    let mut w = db.write(b).unwrap();
    w.insert_unique(&T, b"k9", b"v9", &[Unique::new("email", "x@y")])
        .unwrap();
    assert!(matches!(w.commit(), Err(Error::UniqueViolation { .. })));
    let r = db.read(a).unwrap();
    assert_eq!(&*r.get(&T, b"k1").unwrap().unwrap(), b"v1");
    let hit = db.find_unique(&T, "email", "x@y").unwrap().unwrap();
    assert_eq!(hit.account(), a);
    assert_eq!(&**hit.record(), b"v2");
    drop(r);
    drop(hit);
    db.close().unwrap();
    let db = reopen_eu_us(dir.path());
    let hit = db.find_unique(&T, "email", "x@y").unwrap().unwrap();
    assert_eq!(hit.account(), a);
    let mut w = db.write(a).unwrap();
    w.remove(&T, b"k2").unwrap();
    w.commit().unwrap();
    assert!(!db.is_taken("email", "x@y").unwrap());
    let mut w = db.write(b).unwrap();
    w.insert_unique(&T, b"k9", b"v9", &[Unique::new("email", "x@y")])
        .unwrap();
    w.commit().unwrap();
    assert_eq!(
        db.find_unique(&T, "email", "x@y")
            .unwrap()
            .unwrap()
            .account(),
        b
    );
}

// ======================================================================================
// Opening, reopening, the region catalog, wrong-partition files and
// disabled regions, through the public API only.
// ======================================================================================

#[derive(
    regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema, Debug, Clone, PartialEq,
)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    key: String,
    seats: u32,
    tags: Vec<String>,
    expires: Option<u64>,
}

const LICENSES: Table<License> = Table::new("licenses");

fn license(i: u32) -> License {
    License {
        key: format!("K-{i:04}"),
        seats: i * 3 + 1,
        tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
        expires: i.is_multiple_of(2).then_some(1_700_000_000 + i as u64),
    }
}

fn assert_license(rec: &ArchivedLicense, want: &License) {
    assert_eq!(rec.key.as_str(), want.key);
    assert_eq!(rec.seats.to_native(), want.seats);
    let tags: Vec<&str> = rec.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, want.tags);
    assert_eq!(rec.expires.as_ref().map(|e| e.to_native()), want.expires);
}

#[test]
fn reopen_round_trip_typed_and_raw_records() {
    let dir = tempfile::tempdir().unwrap();
    let (acme, bob) = {
        let db = open_us_eu(dir.path());
        let acme = db
            .create_account(NewAccount::new("acme", "eu").allow("us"))
            .unwrap();
        let bob = db.create_account(NewAccount::new("bob", "us")).unwrap();

        let mut w = db.write(acme).unwrap();
        for i in 0..20 {
            w.insert(&LICENSES, format!("lic-{i}").as_bytes(), &license(i))
                .unwrap();
            w.insert(&NOTES, format!("note-{i}").as_bytes(), &[i as u8; 37])
                .unwrap();
        }
        w.commit().unwrap();
        // Another allowed region.
        let mut w = db.write_in(acme, "us").unwrap();
        w.insert(&LICENSES, b"lic-us", &license(99)).unwrap();
        w.insert(&NOTES, b"note-us", b"in the us").unwrap();
        w.commit().unwrap();
        let mut w = db.write(bob).unwrap();
        w.insert(&NOTES, b"note-bob", b"").unwrap(); // empty raw value
        w.commit().unwrap();
        db.close().unwrap();
        (acme, bob)
    };

    // Reopen (regions listed in another order) and read everything back.
    let db = reopen_eu_us(dir.path());
    assert_eq!(db.account_id("acme").unwrap(), Some(acme));
    assert_eq!(db.account_id("bob").unwrap(), Some(bob));
    let r = db.read(acme).unwrap();
    for i in 0..20 {
        let rec = r
            .get(&LICENSES, format!("lic-{i}").as_bytes())
            .unwrap()
            .expect("typed record after reopen");
        assert_license(&rec, &license(i));
        let note = r
            .get(&NOTES, format!("note-{i}").as_bytes())
            .unwrap()
            .expect("raw record after reopen");
        assert_eq!(&*note, &[i as u8; 37][..]);
    }
    // Home-region reads do not see the us rows; get_in does.
    assert!(r.get(&LICENSES, b"lic-us").unwrap().is_none());
    let rec = r.get_in("us", &LICENSES, b"lic-us").unwrap().unwrap();
    assert_license(&rec, &license(99));
    assert_eq!(
        &*r.get_in("us", &NOTES, b"note-us").unwrap().unwrap(),
        b"in the us"
    );
    assert!(r.get(&NOTES, b"missing").unwrap().is_none());

    // The scan sees 21 rows of each table, tagged with their region.
    let rows = scan_keys(&db, acme, &LICENSES);
    assert_eq!(rows.len(), 21);
    assert_eq!(rows.iter().filter(|(reg, _)| reg == "us").count(), 1);
    assert!(rows.contains(&("us".to_owned(), b"lic-us".to_vec())));

    let rb = db.read(bob).unwrap();
    assert_eq!(&*rb.get(&NOTES, b"note-bob").unwrap().unwrap(), b"");
    // Bob never sees acme's rows.
    assert!(rb.get(&NOTES, b"note-us").unwrap().is_none());
    drop((r, rb, rec));
    db.close().unwrap();
}

// ======================================================================================
// Typed and raw records, zero-copy reads, checksums and argument
// checks, through the public API only.
// ======================================================================================

#[derive(
    regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema, Debug, Clone, PartialEq,
)]
#[rkyv(crate = regionkv::rkyv)]
struct Doc {
    name: String,
    blob: Vec<u8>,
    n: u64,
    opt: Option<u32>,
    tags: Vec<String>,
}

const DOCS: Table<Doc> = Table::new("docs");

fn assert_doc(rec: &ArchivedDoc, want: &Doc) {
    assert_eq!(rec.name.as_str(), want.name);
    assert_eq!(rec.blob.as_slice(), want.blob.as_slice());
    assert_eq!(rec.n.to_native(), want.n);
    assert_eq!(rec.opt.as_ref().map(|v| v.to_native()), want.opt);
    let tags: Vec<&str> = rec.tags.iter().map(|t| t.as_str()).collect();
    assert_eq!(tags, want.tags);
}

fn doc(name: &str) -> Doc {
    Doc {
        name: name.to_owned(),
        blob: vec![1, 2, 3],
        n: 42,
        opt: Some(7),
        tags: vec!["a".into(), "b".into()],
    }
}

#[test]
fn db_is_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Db>();
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();

    // And it works from several threads at once.
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                let a = db
                    .create_account(NewAccount::new(format!("t{t}"), "eu"))
                    .unwrap();
                let mut w = db.write(a).unwrap();
                w.insert(&NOTES, b"k", format!("thread {t}").as_bytes())
                    .unwrap();
                w.commit().unwrap();
                a
            })
        })
        .collect();
    let accounts: Vec<AccountId> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (t, a) in accounts.into_iter().enumerate() {
        let r = db.read(a).unwrap();
        assert_eq!(
            &*r.get(&NOTES, b"k").unwrap().unwrap(),
            format!("thread {t}").as_bytes()
        );
    }
}

#[test]
fn record_deref_matches_validated_access() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_us_eu(dir.path());
    let a = db.create_account(NewAccount::new("acme", "eu")).unwrap();
    let want = doc("deref");
    let mut w = db.write(a).unwrap();
    w.insert(&DOCS, b"d", &want).unwrap();
    w.insert(&NOTES, b"n", b"raw bytes").unwrap();
    w.commit().unwrap();

    let r = db.read(a).unwrap();
    let rec: Record<Doc> = r.get(&DOCS, b"d").unwrap().unwrap();
    let checked = rec.validated().unwrap();
    assert!(
        std::ptr::eq(&*rec, checked),
        "Deref and validated access point at the same bytes"
    );
    assert_doc(&rec, &want);
    assert_doc(checked, &want);
    // The view lies inside the payload slice (zero-copy, no owned copy).
    let payload = rec.payload();
    let range = payload.as_ptr_range();
    let p = (&*rec as *const ArchivedDoc).cast::<u8>();
    assert!(
        range.contains(&p),
        "the archived value is inside the payload"
    );
    // Twice in a row: stable.
    assert!(std::ptr::eq(&*rec, &*rec));

    let raw = r.get(&NOTES, b"n").unwrap().unwrap();
    assert!(std::ptr::eq(&*raw, raw.validated().unwrap()));
    assert_eq!(&*raw, b"raw bytes");
    assert_eq!(raw.payload(), b"raw bytes");

    // The same through a scan row.
    let row = r.scan(&DOCS).unwrap().next().unwrap().unwrap();
    assert!(std::ptr::eq(
        &**row.record(),
        row.record().validated().unwrap()
    ));
    assert_doc(row.record(), &want);
}

const MARK_RAW: &[u8] = b"DISTINCTIVE-RAW-PAYLOAD-5d1c0e77-ABCDEFGHIJKLMNOP";

const MARK_DOC: &str = "DISTINCTIVE-DOC-NAME-9b2f4a11-QRSTUVWXYZ";

/// Flips one byte in the middle of every occurrence of `needle`; returns how many.
fn flip_all(bytes: &mut [u8], needle: &[u8]) -> usize {
    let offsets: Vec<usize> = find_all(bytes, needle).collect();
    for &o in &offsets {
        bytes[o + needle.len() / 2] ^= 0x20;
    }
    offsets.len()
}

fn assert_corrupt(r: Result<impl std::fmt::Debug, Error>, table: &str, key: &str) {
    match r {
        Err(Error::Corrupt { partition, what }) => {
            assert_eq!(partition, "eu", "names the partition");
            assert!(what.contains(table), "names the table: {what}");
            assert!(what.contains(key), "names the key: {what}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Writes the distinctive records (and intact neighbours) for account `acme` (home eu).
fn write_marked(db: &Db) -> AccountId {
    let a = db.create_account(NewAccount::new("acme", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&NOTES, b"bad-raw", MARK_RAW).unwrap();
    w.insert(&NOTES, b"good-raw", b"fine").unwrap();
    w.insert_unique(
        &DOCS,
        b"bad-doc",
        &doc(MARK_DOC),
        &[Unique::new("slug", "bad-doc-slug")],
    )
    .unwrap();
    w.insert(&DOCS, b"good-doc", &doc("fine")).unwrap();
    w.commit().unwrap();
    a
}

fn check_corruption_reported(db: &Db, a: AccountId) {
    let r = db.read(a).unwrap();
    assert_corrupt(r.get(&NOTES, b"bad-raw"), "notes", "bad-raw");
    assert_corrupt(r.get(&DOCS, b"bad-doc"), "docs", "bad-doc");
    assert_corrupt(r.get_in("eu", &DOCS, b"bad-doc"), "docs", "bad-doc");
    // Neighbours still read.
    assert_eq!(&*r.get(&NOTES, b"good-raw").unwrap().unwrap(), b"fine");
    assert_doc(&r.get(&DOCS, b"good-doc").unwrap().unwrap(), &doc("fine"));
    // Scans yield the bad row as an error and go on.
    let rows: Vec<_> = r.scan(&NOTES).unwrap().collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .any(|row| matches!(row, Err(Error::Corrupt { .. })))
    );
    assert!(rows.iter().any(|row| row.is_ok()));
    let all: Vec<_> = db.scan_all(&DOCS).unwrap().collect();
    assert!(
        all.iter()
            .any(|row| matches!(row, Err(Error::Corrupt { .. })))
    );
    // The unique lookup reaches the record and reports it too.
    assert_corrupt(
        db.find_unique(&DOCS, "slug", "bad-doc-slug"),
        "docs",
        "bad-doc",
    );
}

#[test]
fn crc_corruption_in_the_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let a = marked_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    let mut bytes = std::fs::read(&eu).unwrap();
    flip_marks(&mut bytes);
    std::fs::write(&eu, &bytes).unwrap();

    // Asked to, the open verifies redb's page checksums and refuses the damaged file.
    let refused = Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .verify_on_open(true)
        .open(dir.path());
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
    // By default (the file was closed cleanly: its pages are trusted), the record's own
    // CRC catches it at read time.
    let db = try_open_us_eu(dir.path()).unwrap();
    check_corruption_reported(&db, a);
    // And the page check on demand names the damaged region.
    let report = db.verify().unwrap();
    let damaged: Vec<&str> = report
        .damaged
        .iter()
        .map(|d| d.partition.as_str())
        .collect();
    assert_eq!(damaged, ["eu"], "{report}");
    db.close().unwrap();
}

/// A closed us+eu store at `dir` holding [`write_marked`]'s records; returns their account.
fn marked_store(dir: &Path) -> AccountId {
    let db = open_us_eu(dir);
    let a = write_marked(&db);
    db.close().unwrap();
    a
}

/// Flips every occurrence of both marked payloads in a partition's bytes (each must occur).
fn flip_marks(bytes: &mut [u8]) {
    assert!(flip_all(bytes, MARK_RAW) >= 1, "raw payload found");
    assert!(
        flip_all(bytes, MARK_DOC.as_bytes()) >= 1,
        "doc payload found"
    );
}

/// A store opened without page-checksum verification, so that the envelope CRC is what
/// detects a damaged value.
fn open_unverified(dir: &Path) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .verify_on_open(false)
        .open(dir)
        .unwrap()
}

#[test]
fn crc_corruption_detected_through_sim_storage() {
    let sim = SimStorage::new();
    let root = Path::new("/sim-store");
    let open = || {
        Db::builder()
            .region("us")
            .region("eu")
            .storage(sim.clone())
            .verify_on_open(false)
            .open(root)
            .unwrap()
    };
    let a = {
        let db = open();
        let a = write_marked(&db);
        db.close().unwrap();
        a
    };
    let eu = region_file(root, "eu");
    let mut bytes = sim.live_bytes(&eu).expect("eu file in the sim");
    flip_marks(&mut bytes);
    sim.set_bytes(&eu, bytes);
    let db = open();
    check_corruption_reported(&db, a);
}

#[test]
fn corrupt_envelope_header_is_detected() {
    // Damage the stored CRC itself (the 4 bytes before the payload) instead of the payload.
    let dir = tempfile::tempdir().unwrap();
    let a = marked_store(dir.path());
    let eu = region_file(dir.path(), "eu");
    let mut bytes = std::fs::read(&eu).unwrap();
    let offsets: Vec<usize> = find_all(&bytes, MARK_RAW).collect();
    assert!(!offsets.is_empty());
    for o in offsets {
        // [version][codec][crc32 x4][payload]: o-1 is the last CRC byte.
        bytes[o - 1] ^= 0xFF;
    }
    std::fs::write(&eu, &bytes).unwrap();
    let db = open_unverified(dir.path());
    let r = db.read(a).unwrap();
    assert_corrupt(r.get(&NOTES, b"bad-raw"), "notes", "bad-raw");
}

const EMPTY_NAME: Table<Raw> = Table::new("");

const LONG_NAME: Table<Raw> =
    Table::new("t2345678901234567890123456789012345678901234567890123456789012345");

#[test]
fn invalid_arguments_are_rejected_and_write_nothing() {
    assert_eq!(LONG_NAME.name().len(), MAX_TABLE_NAME + 1);
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .max_value_size(1024)
        .open(dir.path())
        .unwrap();
    let a = db.create_account(NewAccount::new("acme", "eu")).unwrap();
    let eu = region_file(dir.path(), "eu");
    let eu_before = std::fs::read(&eu).unwrap();
    let long_key = vec![b'k'; MAX_KEY + 1];
    let mut big = doc("big");
    big.blob = vec![1; 2000];

    let mut w = db.write(a).unwrap();
    let rows = [
        // Oversized values (raw and typed).
        Rejected::invalid("raw value over limit", |w: &mut Write| {
            w.insert(&NOTES, b"big", &[7u8; 1025])
        }),
        Rejected::invalid("1 MiB value", |w: &mut Write| {
            w.insert(&NOTES, b"huge", &vec![7u8; 1 << 20])
        }),
        Rejected::invalid("typed value over limit", |w: &mut Write| {
            w.insert(&DOCS, b"big", &big)
        }),
        Rejected::invalid("unique insert of a value over limit", |w: &mut Write| {
            w.insert_unique(&NOTES, b"big", &[7u8; 1025], &[Unique::new("u", "v")])
        }),
        // Over-long keys.
        Rejected::invalid("key over MAX_KEY", |w: &mut Write| {
            w.insert(&NOTES, &long_key, b"v")
        }),
        Rejected::invalid("unique insert with a key over MAX_KEY", |w: &mut Write| {
            w.insert_unique(&NOTES, &long_key, b"v", &[Unique::new("u", "v")])
        }),
        Rejected::invalid("remove with a key over MAX_KEY", |w: &mut Write| {
            w.remove(&NOTES, &long_key)
        }),
        // Bad table names.
        Rejected::invalid("empty table name", |w: &mut Write| {
            w.insert(&EMPTY_NAME, b"k", b"v")
        }),
        Rejected::invalid("remove from empty table name", |w: &mut Write| {
            w.remove(&EMPTY_NAME, b"k")
        }),
        Rejected::invalid("table name over limit", |w: &mut Write| {
            w.insert(&LONG_NAME, b"k", b"v")
        }),
        // Bad unique values.
        Rejected::invalid("empty namespace", |w: &mut Write| {
            w.insert_unique(&NOTES, b"k", b"v", &[Unique::new("", "v")])
        }),
        Rejected::invalid("empty unique value", |w: &mut Write| {
            w.insert_unique(&NOTES, b"k", b"v", &[Unique::new("ns", "")])
        }),
    ];
    // No rejected operation was buffered.
    run_rejections(&mut w, &rows, |w| {
        (!w.is_empty())
            .then(|| format!("{} operations buffered", w.len()))
            .into_iter()
            .collect()
    });
    assert!(w.is_empty(), "no rejected operation was buffered");
    w.commit().unwrap();
    assert_eq!(
        std::fs::read(&eu).unwrap(),
        eu_before,
        "nothing reached the eu file"
    );

    // Reads with bad table names are refused too.
    let r = db.read(a).unwrap();
    let reads = [
        Rejected::invalid("get from an empty table name", |_: &mut ()| {
            r.get(&EMPTY_NAME, b"k").map(|o| o.map(|rec| rec.to_vec()))
        }),
        Rejected::invalid("scan of an empty table name", |_: &mut ()| {
            r.scan(&EMPTY_NAME).map(|s| s.count())
        }),
        Rejected::invalid("scan_all of an empty table name", |_: &mut ()| {
            db.scan_all(&EMPTY_NAME).map(|s| s.count())
        }),
        Rejected::invalid("find_unique in an empty table name", |_: &mut ()| {
            db.find_unique(&EMPTY_NAME, "ns", "v").map(|h| h.is_some())
        }),
    ];
    run_rejections(&mut (), &reads, |_| Vec::new());
    drop(reads);
    // An over-long key on the read path: no panic, nothing found (or refused).
    assert!(matches!(
        r.get(&NOTES, &long_key),
        Ok(None) | Err(Error::InvalidArgument(_))
    ));
    drop(r);

    // At the limits: accepted.
    let mut w = db.write(a).unwrap();
    w.insert(&NOTES, vec![b'k'; MAX_KEY], &[7u8; 1024]).unwrap();
    w.commit().unwrap();
    let r = db.read(a).unwrap();
    assert_eq!(
        r.get(&NOTES, vec![b'k'; MAX_KEY]).unwrap().unwrap().len(),
        1024
    );
    assert_eq!(scan_keys(&db, a, &NOTES).len(), 1, "only the valid record");
    assert_eq!(db.scan_all(&DOCS).unwrap().count(), 0);
}

fn doc_strategy() -> impl Strategy<Value = Doc> {
    (
        "\\PC{0,40}",
        prop::collection::vec(any::<u8>(), 0..200),
        any::<u64>(),
        prop::option::of(any::<u32>()),
        prop::collection::vec("\\PC{0,12}", 0..6),
    )
        .prop_map(|(name, blob, n, opt, tags)| Doc {
            name,
            blob,
            n,
            opt,
            tags,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn typed_values_round_trip(
        docs in prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 1..32),
            doc_strategy(),
            1..8,
        ),
        in_us in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let region = if in_us { "us" } else { "eu" };
        let check = |db: &Db, a: AccountId, docs: &BTreeMap<Vec<u8>, Doc>| {
            let r = db.read(a).unwrap();
            for (k, want) in docs {
                let rec = r.get_in(region, &DOCS, k).unwrap().expect("record present");
                assert_doc(&rec, want);
            }
            // The scan returns exactly these keys, in order.
            let keys: Vec<Vec<u8>> = r
                .scan(&DOCS)
                .unwrap()
                .map(|row| row.unwrap().key().to_vec())
                .collect();
            let want: Vec<Vec<u8>> = docs.keys().cloned().collect();
            assert_eq!(keys, want);
        };
        let a = {
            let db = open_us_eu(dir.path());
            let a = db
                .create_account(NewAccount::new("prop", "eu").allow("us"))
                .unwrap();
            let mut w = db.write_in(a, region).unwrap();
            for (k, d) in &docs {
                w.insert(&DOCS, k, d).unwrap();
            }
            w.commit().unwrap();
            check(&db, a, &docs);
            db.close().unwrap();
            a
        };
        let db = open_us_eu(dir.path());
        check(&db, a, &docs);
        // encode_value / decode_value agree with what the store returns.
        for (k, d) in &docs {
            let t = &DOCS;
            let bytes = regionkv::encode_value::<Doc>(t, a, k, d).unwrap();
            let view = regionkv::decode_value::<Doc>(t, a, k, &bytes).unwrap();
            assert_doc(view, d);
            // Bound to its row: the same bytes under another key fail their check.
            assert!(regionkv::decode_value::<Doc>(t, a, &[0u8; 40], &bytes).is_err());
        }
    }
}

// ======================================================================================
// `Record`/`Row` held across drop of the Db and a reopen of
// the same store in the same process.
// ======================================================================================

const DIR: &str = "/r";

// Guard: the reopen is refused with `Error::Io` "eu.redb is already open for writing" while
//   the record lives — the close docs say files are released with the last snapshot; once
//   dropped the store reopens and audits clean, also after a power loss.
#[test]
fn record_held_across_drop_and_reopen() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k", b"old", &[Unique::new("email", "v")])
        .unwrap();
    w.commit().unwrap();
    let rec = db.read(a).unwrap().get(&T, b"k").unwrap().unwrap();
    let row = db.scan_all(&T).unwrap().next().unwrap().unwrap();
    drop(db);
    let t0 = std::time::Instant::now();
    let db2 = quiet_us_eu(&sim, DIR);
    eprintln!("reopen after {:?}: {:?}", t0.elapsed(), db2.as_ref().err());
    if let Ok(db2) = &db2 {
        for i in 0..50u32 {
            let mut w = db2.write(a).unwrap();
            w.insert(&T, format!("n{i}").as_bytes(), &vec![i as u8; 3000])
                .unwrap();
            w.remove(&T, b"k").unwrap();
            w.commit().unwrap();
        }
        eprintln!("old record: {:?}", &rec[..]);
        eprintln!("old row: {:?}", &row.record()[..]);
        let au = db2.audit().unwrap();
        assert!(au.is_clean(), "{:?}", au.findings());
    }
    drop(rec);
    drop(row);
    drop(db2);
    sim.crash();
    let db3 = quiet_us_eu(&sim, DIR).unwrap();
    let au = db3.audit().unwrap();
    assert!(au.is_clean(), "after crash: {:?}", au.findings());
    let r = db3.read(a).unwrap();
    assert!(
        r.get(&T, b"k").unwrap().is_some(),
        "acknowledged record lost"
    );
}

// ======================================================================================
// public-API inputs at and over their limits; many regions.
// ======================================================================================

// 64 bytes: 16 four-byte characters.
const T64: Table<Raw> = Table::new("😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀");

const T65: Table<Raw> = Table::new("😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀x");

// Guard: limits are accepted at the edge and refused past it.
#[test]
fn limits_are_accepted_at_the_edge_and_refused_past_it() {
    let sim = SimStorage::new();
    let r64 = "r".repeat(64);
    let db = quiet_builder(&sim)
        .region("us")
        .region(&r64)
        .max_value_size(1000)
        .open("/e")
        .unwrap();
    run_rejections(
        &mut (),
        &[Rejected::invalid("region 65", |_: &mut ()| {
            quiet_builder(&sim)
                .region("us")
                .region("r".repeat(65))
                .open("/e2")
        })],
        |_| Vec::new(),
    );
    // 128 bytes of 4-byte characters; 129 refused.
    let name128 = "🦀".repeat(32);
    assert_eq!(name128.len(), 128);
    let a = db
        .create_account(NewAccount::new(name128.clone(), &r64).allow("us"))
        .unwrap();
    run_rejections(
        &mut (),
        &[Rejected::invalid("name 129", |_: &mut ()| {
            db.create_account(NewAccount::new(format!("{name128}x"), "us"))
        })],
        |_| {
            (db.account_id(&format!("{name128}x")).unwrap().is_some())
                .then(|| "the account was created".to_owned())
                .into_iter()
                .collect()
        },
    );
    let b2 = db.create_account(NewAccount::new("b", "us")).unwrap();

    let ns64 = "n".repeat(64);
    let v1024 = vec![0xFFu8; 1024];
    let key4096 = vec![0xFFu8; 4096];
    let val1000 = vec![7u8; 1000];
    let mut w = db.write_in(a, &r64).unwrap();
    w.insert_unique(&T64, &key4096, &val1000, &[Unique::new(&ns64, &v1024)])
        .unwrap();
    w.insert_unique(&T64, b"", b"", &[Unique::new("e", "x")])
        .unwrap();
    let rows = [
        Rejected::invalid("table 65", |w: &mut Write| w.insert(&T65, b"k", b"v")),
        Rejected::invalid("key 4097", |w: &mut Write| {
            w.insert(&T, vec![0u8; 4097], b"v")
        }),
        Rejected::invalid("value 1001", |w: &mut Write| {
            w.insert(&T, b"k", &vec![0u8; 1001])
        }),
        Rejected::invalid("ns 65", |w: &mut Write| {
            w.insert_unique(&T, b"k", b"v", &[Unique::new(&"n".repeat(65), "v")])
        }),
        Rejected::invalid("value 1025", |w: &mut Write| {
            w.insert_unique(&T, b"k", b"v", &[Unique::new("n", &vec![1u8; 1025])])
        }),
        Rejected::invalid("ns 0", |w: &mut Write| {
            w.insert_unique(&T, b"k", b"v", &[Unique::new("", "v")])
        }),
        Rejected::invalid("value 0", |w: &mut Write| {
            w.insert_unique(&T, b"k", b"v", &[Unique::new("n", "")])
        }),
    ];
    // Only the two accepted records stay buffered.
    run_rejections(&mut w, &rows, |w| {
        (w.len() != 2)
            .then(|| format!("{} operations buffered, expected 2", w.len()))
            .into_iter()
            .collect()
    });
    w.commit().unwrap();

    let hit = db.find_unique(&T64, &ns64, &v1024).unwrap().unwrap();
    assert_eq!((hit.account(), hit.key()), (a, key4096.as_slice()));
    assert_eq!(db.find_unique(&T64, "e", "x").unwrap().unwrap().key(), b"");
    assert!(db.is_taken(&ns64, &v1024).unwrap());
    let reads = [
        Rejected::invalid("find t65", |_: &mut ()| {
            db.find_unique(&T65, "e", "x").map(|h| h.is_some())
        }),
        Rejected::invalid("is_taken 1025", |_: &mut ()| {
            db.is_taken("e", vec![0u8; 1025])
        }),
    ];
    run_rejections(&mut (), &reads, |_| Vec::new());
    drop(reads);
    // Another account cannot take it, even through a 0-length key.
    let mut w = db.write(b2).unwrap();
    w.insert_unique(&T64, b"", b"", &[Unique::new(&ns64, &v1024)])
        .unwrap();
    assert!(matches!(w.commit(), Err(Error::UniqueViolation { .. })));
    assert!(db.read(b2).unwrap().scan(&T64).unwrap().next().is_none());
    let r = db.read(a).unwrap();
    assert_eq!(
        &*r.get(&T64, &key4096).unwrap().unwrap(),
        val1000.as_slice()
    );
    assert_eq!(r.get(&T64, b"").unwrap().unwrap().len(), 0);
    assert!(db.audit().unwrap().is_clean());
    db.close().unwrap();
    sim.crash();
    let db = quiet_builder(&sim)
        .region("us")
        .region(&r64)
        .open("/e")
        .unwrap();
    assert!(db.audit().unwrap().is_clean());
    assert_eq!(db.account(a).unwrap().name(), name128);
}

// Guard: scan prefix of ff bytes stays inside the account.
#[test]
fn scan_prefix_of_ff_bytes_stays_inside_the_account() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim).region("us").open("/p").unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let c = db.create_account(NewAccount::new("c", "us")).unwrap();
    for (acct, keys) in [
        (a, vec![vec![0xFF], vec![0xFF, 0xFF], vec![0xFF; 4096]]),
        (c, vec![vec![], vec![0], vec![0xFF]]),
    ] {
        let mut w = db.write(acct).unwrap();
        for k in keys {
            w.insert(&T, &k, b"v").unwrap();
        }
        w.commit().unwrap();
    }
    let r = db.read(a).unwrap();
    for p in [
        vec![],
        vec![0xFF],
        vec![0xFF, 0xFF],
        vec![0xFF; 4096],
        vec![0xFF; 5000],
    ] {
        for row in r.scan_prefix(&T, &p).unwrap() {
            let row = row.unwrap();
            assert_eq!(
                row.account(),
                a,
                "prefix {:?}: row of {:?}",
                p.len(),
                row.account()
            );
            assert!(row.key().starts_with(&p));
        }
    }
    assert_eq!(r.scan_prefix(&T, [0xFF]).unwrap().count(), 3);
    let rc = db.read(c).unwrap();
    assert_eq!(rc.scan_prefix(&T, []).unwrap().count(), 3);
    assert_eq!(rc.scan_prefix(&T, [0xFF]).unwrap().count(), 1);
}
