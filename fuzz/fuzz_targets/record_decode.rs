//! `record_decode`: arbitrary bytes as a stored value.
//!
//! 1. The input as a whole stored value (envelope + payload), decoded through handles of
//!    two tables and three types (two rkyv records and `Raw`): `Ok` or `Err`, never a
//!    panic or UB (the build runs under AddressSanitizer); an error is `Corrupt`, or
//!    `SchemaMismatch` for an intact envelope of another schema version. When a typed
//!    decode succeeds every field is read.
//! 2. The input as a payload behind a *valid* envelope (correct version, codec and CRC,
//!    sealed here as the store seals), so that rkyv's validation, not the CRC, is what the
//!    fuzzer attacks; behind an envelope of another schema version it is a mismatch whatever
//!    its bytes (the version is compared before the payload is interpreted).
//! 3. The input through `arbitrary` as a typed record: `encode_value` then `decode_value`
//!    must give back exactly that record through the same handle, and fail through a handle
//!    of another table, codec, account or key; a damaged schema-version byte is damage
//!    (`Corrupt`, the CRC covers it), never a mismatch.
//!
//! Not checked (cannot be, without a store): two record types of the same table name,
//! codec and schema version. Their fingerprints live in the region's `_schemas` rows,
//! which reads from a store compare (see `tests/schema_identity.rs`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regionkv::rkyv;
use regionkv::{AccountId, Error, Raw, Table, decode_value, encode_value};

#[derive(Debug, PartialEq, Arbitrary, rkyv::Archive, rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Rec {
    name: String,
    data: Vec<u8>,
    n: u64,
    opt: Option<u32>,
    tags: Vec<String>,
}

/// A second record type, of another table.
#[derive(Debug, PartialEq, rkyv::Archive, rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Pair {
    seats: u32,
    max_seats: u32,
}

const RECS: Table<Rec> = Table::new("t");
const RAW_T: Table<Raw> = Table::new("t");
const PAIRS: Table<Pair> = Table::new("u");
const RECS_U: Table<Rec> = Table::new("u");
const RAW_U: Table<Raw> = Table::new("u");

fn acct() -> AccountId {
    AccountId::from_raw(1)
}

/// An envelope as the store seals it: `[2][codec][version u16 LE][crc32 LE][payload]`, the
/// CRC over the row (table, account ++ key), the codec, the version and the payload.
fn seal(table: &str, key: &[u8], codec: u8, version: u16, payload: &[u8]) -> Vec<u8> {
    let mut dkey = acct().get().to_be_bytes().to_vec();
    dkey.extend_from_slice(key);
    let mut h = crc32fast::Hasher::new();
    h.update(&[table.len() as u8]);
    h.update(table.as_bytes());
    h.update(&(dkey.len() as u32).to_le_bytes());
    h.update(&dkey);
    h.update(&[codec]);
    h.update(&version.to_le_bytes());
    h.update(payload);
    let mut out = vec![2, codec];
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads every field of a validated archive; returns a value that depends on all of them
/// so that nothing is optimised away.
fn touch(a: &ArchivedRec) -> u64 {
    let mut acc = a.name.len() as u64;
    acc = acc.wrapping_add(a.name.as_str().bytes().map(u64::from).sum::<u64>());
    acc = acc.wrapping_add(a.data.len() as u64);
    acc = acc.wrapping_add(a.data.iter().map(|&b| u64::from(b)).sum::<u64>());
    acc = acc.wrapping_add(a.n.to_native());
    acc = acc.wrapping_add(a.opt.as_ref().map_or(7, |v| u64::from(v.to_native())));
    acc = acc.wrapping_add(a.tags.len() as u64);
    for t in a.tags.iter() {
        acc = acc.wrapping_add(t.len() as u64);
        acc = acc.wrapping_add(t.as_str().chars().map(u64::from).sum::<u64>());
    }
    acc
}

fn same(a: &ArchivedRec, r: &Rec) -> bool {
    a.name.as_str() == r.name
        && a.data.as_slice() == r.data.as_slice()
        && a.n.to_native() == r.n
        && a.opt.as_ref().map(|v| v.to_native()) == r.opt
        && a.tags.len() == r.tags.len()
        && a.tags.iter().zip(&r.tags).all(|(x, y)| x.as_str() == y)
}

/// Whether `bytes` is an envelope whose header names a schema version other than 1 (the
/// version of every handle here): the only input that may be a mismatch.
fn other_version(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && u16::from_le_bytes([bytes[2], bytes[3]]) != 1
}

/// An error of `decode_value` on `bytes`: damage, or a mismatch of another version.
fn check_err(e: &Error, bytes: &[u8], what: &str) {
    match e {
        Error::Corrupt { .. } => {}
        Error::SchemaMismatch { stored, asked, .. } => {
            assert!(other_version(bytes), "{what}: a mismatch of version 1: {e}");
            assert_eq!(asked.version, 1, "{what}");
            assert_ne!(stored.version, 1, "{what}");
        }
        other => panic!("{what}: neither Corrupt nor SchemaMismatch: {other:?}"),
    }
}

fn is_corrupt<T>(r: &regionkv::Result<T>) -> bool {
    matches!(r, Err(Error::Corrupt { .. }))
}

fuzz_target!(|data: &[u8]| {
    // 1. The bytes as a stored value, through every handle.
    match decode_value(&RECS, acct(), b"k", data) {
        Ok(a) => {
            std::hint::black_box(touch(a));
        }
        Err(e) => check_err(&e, data, "Rec"),
    }
    match decode_value(&PAIRS, acct(), b"k", data) {
        Ok(p) => {
            std::hint::black_box(p.seats.to_native() ^ p.max_seats.to_native());
        }
        Err(e) => check_err(&e, data, "Pair"),
    }
    for t in [&RAW_T, &RAW_U] {
        match decode_value(t, acct(), b"k", data) {
            // A Raw value is the payload after the header: never longer than the input.
            Ok(raw) => assert!(raw.len() <= data.len()),
            Err(e) => check_err(&e, data, "Raw"),
        }
    }

    // 2. The bytes as a payload behind a valid envelope: the typed codec at version 1 (rkyv
    //    validation decides), then versions 0, 2 and one from the input (a mismatch, never
    //    an interpretation of the payload).
    for (table, key) in [("t", &b"k"[..]), ("u", b"other key")] {
        let v1 = seal(table, key, 1, 1, data);
        let r = if table == "t" {
            decode_value(&RECS, acct(), key, &v1).map(touch)
        } else {
            decode_value(&PAIRS, acct(), key, &v1).map(|p| u64::from(p.seats.to_native()))
        };
        match r {
            Ok(x) => {
                std::hint::black_box(x);
            }
            Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "version 1: {e:?}"),
        }
        let picked = data.first().map_or(3, |&b| u16::from(b) << 8 | 0x42);
        for version in [0u16, 2, picked] {
            let other = seal(table, key, 1, version, data);
            let e = if table == "t" {
                decode_value(&RECS, acct(), key, &other)
                    .map(|_| ())
                    .unwrap_err()
            } else {
                decode_value(&PAIRS, acct(), key, &other)
                    .map(|_| ())
                    .unwrap_err()
            };
            match e {
                Error::SchemaMismatch { stored, .. } => assert_eq!(stored.version, version),
                e => panic!("version {version}: {e:?}"),
            }
        }
    }
    // `Raw` round trip, sealed by the store's own encoder.
    let sealed = encode_value(&RAW_T, acct(), b"k", data).expect("Raw encoding is total");
    assert_eq!(
        sealed,
        seal("t", b"k", 0, 1, data),
        "the seal here is the store's"
    );
    let back = decode_value(&RAW_T, acct(), b"k", &sealed).expect("a sealed Raw value decodes");
    assert_eq!(back, data, "Raw round trip");
    assert!(
        is_corrupt(&decode_value(&RAW_U, acct(), b"k", &sealed)),
        "Raw under another table"
    );
    assert!(
        is_corrupt(&decode_value(&RECS, acct(), b"k", &sealed)),
        "Raw as a record"
    );

    // 3. A structured record: it decodes only through the handle that sealed it.
    let mut u = Unstructured::new(data);
    if let Ok(rec) = Rec::arbitrary(&mut u) {
        let bytes = encode_value(&RECS, acct(), b"k", &rec).expect("encoding a record");
        let a =
            decode_value(&RECS, acct(), b"k", &bytes).expect("decoding what encode_value produced");
        assert!(same(a, &rec), "round trip changed the record: {rec:?}");
        assert!(
            is_corrupt(&decode_value(&RECS_U, acct(), b"k", &bytes)),
            "another table"
        );
        assert!(
            is_corrupt(&decode_value(&PAIRS, acct(), b"k", &bytes)),
            "another table and type"
        );
        assert!(
            is_corrupt(&decode_value(&RAW_T, acct(), b"k", &bytes)),
            "typed value as Raw"
        );
        assert!(
            is_corrupt(&decode_value(&RECS, AccountId::from_raw(2), b"k", &bytes)),
            "another account"
        );
        assert!(
            is_corrupt(&decode_value(&RECS, acct(), b"j", &bytes)),
            "another key"
        );
        // Every damaged bit of the schema version: the CRC fails, it is never a mismatch.
        for i in [2usize, 3] {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    is_corrupt(&decode_value(&RECS, acct(), b"k", &bad)),
                    "version byte {i} bit {bit} damaged"
                );
            }
        }
        // Truncations of a valid value: an error or (for a prefix that still validates) a
        // readable record, never a panic.
        for cut in [0, 1, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            match decode_value(&RECS, acct(), b"k", &bytes[..cut]) {
                Ok(a) => {
                    std::hint::black_box(touch(a));
                }
                Err(e) => check_err(&e, &bytes[..cut], "truncated"),
            }
        }
    }
});
