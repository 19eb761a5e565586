//! Typed and raw records, zero-copy reads, checksums and argument
//! checks, through the public API only.

mod common_foundation;

use std::collections::BTreeMap;
use std::path::Path;

use common_foundation::*;
use proptest::prelude::*;
use regionkv::testing::SimStorage;
use regionkv::{
    AccountId, Db, Error, MAX_KEY, MAX_TABLE_NAME, NewAccount, Raw, Record, Table, Unique,
};

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, Debug, Clone, PartialEq)]
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

// ---------------------------------------------------------------------------------------
// 11. Db is Clone + Send + Sync; Record deref is the validated view
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// 8. CRC corruption is detected
// ---------------------------------------------------------------------------------------

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
    let a = {
        let db = open_us_eu(dir.path());
        let a = write_marked(&db);
        db.close().unwrap();
        a
    };
    let eu = region_path(dir.path(), "eu");
    let mut bytes = std::fs::read(&eu).unwrap();
    assert!(flip_all(&mut bytes, MARK_RAW) >= 1, "raw payload found");
    assert!(
        flip_all(&mut bytes, MARK_DOC.as_bytes()) >= 1,
        "doc payload found"
    );
    std::fs::write(&eu, &bytes).unwrap();

    // By default the open verifies redb's page checksums and refuses the damaged file.
    let refused = try_open_us_eu(dir.path());
    assert!(matches!(refused, Err(Error::Corrupt { .. })), "{refused:?}");
    // Without that check, the record's own CRC catches it at read time.
    let db = open_unverified(dir.path());
    check_corruption_reported(&db, a);
    db.close().unwrap();
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
    let eu = region_path(root, "eu");
    let mut bytes = sim.live_bytes(&eu).expect("eu file in the sim");
    assert!(flip_all(&mut bytes, MARK_RAW) >= 1);
    assert!(flip_all(&mut bytes, MARK_DOC.as_bytes()) >= 1);
    sim.set_bytes(&eu, bytes);
    let db = open();
    check_corruption_reported(&db, a);
}

#[test]
fn corrupt_envelope_header_is_detected() {
    // Damage the stored CRC itself (the 4 bytes before the payload) instead of the payload.
    let dir = tempfile::tempdir().unwrap();
    let a = {
        let db = open_us_eu(dir.path());
        let a = write_marked(&db);
        db.close().unwrap();
        a
    };
    let eu = region_path(dir.path(), "eu");
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

// ---------------------------------------------------------------------------------------
// 12. Argument checks: oversized value, over-long key, bad table names
// ---------------------------------------------------------------------------------------

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
    let eu = region_path(dir.path(), "eu");
    let eu_before = std::fs::read(&eu).unwrap();
    let invalid = |r: Result<(), Error>, what: &str| {
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{what}: expected InvalidArgument, got {r:?}"
        );
    };

    let mut w = db.write(a).unwrap();
    // Oversized values (raw and typed).
    invalid(
        w.insert(&NOTES, b"big", &[7u8; 1025]),
        "raw value over limit",
    );
    invalid(
        w.insert(&NOTES, b"huge", &vec![7u8; 1 << 20]),
        "1 MiB value",
    );
    let mut big = doc("big");
    big.blob = vec![1; 2000];
    invalid(w.insert(&DOCS, b"big", &big), "typed value over limit");
    invalid(
        w.insert_unique(&NOTES, b"big", &[7u8; 1025], &[Unique::new("u", "v")]),
        "unique insert of a value over limit",
    );
    // Over-long keys.
    let long_key = vec![b'k'; MAX_KEY + 1];
    invalid(w.insert(&NOTES, &long_key, b"v"), "key over MAX_KEY");
    invalid(
        w.insert_unique(&NOTES, &long_key, b"v", &[Unique::new("u", "v")]),
        "unique insert with a key over MAX_KEY",
    );
    invalid(
        w.remove(&NOTES, &long_key),
        "remove with a key over MAX_KEY",
    );
    // Bad table names.
    invalid(w.insert(&EMPTY_NAME, b"k", b"v"), "empty table name");
    invalid(w.remove(&EMPTY_NAME, b"k"), "remove from empty table name");
    invalid(w.insert(&LONG_NAME, b"k", b"v"), "table name over limit");
    // Bad unique values.
    invalid(
        w.insert_unique(&NOTES, b"k", b"v", &[Unique::new("", "v")]),
        "empty namespace",
    );
    invalid(
        w.insert_unique(&NOTES, b"k", b"v", &[Unique::new("ns", "")]),
        "empty unique value",
    );
    assert!(w.is_empty(), "no rejected operation was buffered");
    w.commit().unwrap();
    assert_eq!(
        std::fs::read(&eu).unwrap(),
        eu_before,
        "nothing reached the eu file"
    );

    // Reads with bad table names are refused too.
    let r = db.read(a).unwrap();
    assert!(matches!(
        r.get(&EMPTY_NAME, b"k"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        r.scan(&EMPTY_NAME),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.scan_all(&EMPTY_NAME),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        db.find_unique(&EMPTY_NAME, "ns", "v"),
        Err(Error::InvalidArgument(_))
    ));
    // An over-long key on the read path: no panic, nothing found (or refused).
    assert!(matches!(
        r.get(&NOTES, &long_key),
        Ok(None) | Err(Error::InvalidArgument(_))
    ));
    drop(r);

    // At the limits: accepted.
    let mut w = db.write(a).unwrap();
    w.insert(&NOTES, &vec![b'k'; MAX_KEY], &[7u8; 1024])
        .unwrap();
    w.commit().unwrap();
    let r = db.read(a).unwrap();
    assert_eq!(
        r.get(&NOTES, &vec![b'k'; MAX_KEY]).unwrap().unwrap().len(),
        1024
    );
    assert_eq!(scan_keys(&db, a, &NOTES).len(), 1, "only the valid record");
    assert_eq!(db.scan_all(&DOCS).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------
// 10. Property: random typed values round-trip, also after reopen
// ---------------------------------------------------------------------------------------

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
            let t = DOCS.name();
            let bytes = regionkv::encode_value::<Doc>(t, a, k, d).unwrap();
            let view = regionkv::decode_value::<Doc>(t, a, k, &bytes).unwrap();
            assert_doc(view, d);
            // Bound to its row: the same bytes under another key fail their check.
            assert!(regionkv::decode_value::<Doc>(t, a, &[0u8; 40], &bytes).is_err());
        }
    }
}
