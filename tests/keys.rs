//! Record keys through the `Key` trait: strings, integers (ordered), byte arrays and tuples;
//! byte keys keep their layout, so a key written as bytes reads back as the same string.

mod common;

use common::sim::*;
use regionkv::testing::SimStorage;
use regionkv::{Error, Key, NewAccount, Raw, Table};

const DIR: &str = "/keys";
const T: Table<Raw> = Table::new("t");

#[test]
fn every_key_type_round_trips_and_byte_keys_keep_their_layout() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, "str-key", b"1").unwrap();
    w.insert(&T, String::from("string-key"), b"2").unwrap();
    w.insert(&T, 42u64, b"3").unwrap();
    w.insert(&T, [7u8; 4], b"4").unwrap();
    w.insert(&T, (9u64, "inv-1"), b"5").unwrap();
    w.insert(&T, b"bytes".to_vec(), b"6").unwrap();
    w.insert(&T, -3i32, b"7").unwrap();
    w.commit().unwrap();

    let r = db.read(a).unwrap();
    // Each reads back under its own type and under the same bytes.
    assert_eq!(&*r.get(&T, "str-key").unwrap().unwrap(), b"1");
    assert_eq!(&*r.get(&T, b"str-key").unwrap().unwrap(), b"1");
    assert_eq!(&*r.get(&T, "string-key").unwrap().unwrap(), b"2");
    assert_eq!(&*r.get(&T, 42u64).unwrap().unwrap(), b"3");
    assert_eq!(&*r.get(&T, 42u64.to_be_bytes()).unwrap().unwrap(), b"3");
    assert_eq!(&*r.get(&T, &[7u8, 7, 7, 7][..]).unwrap().unwrap(), b"4");
    assert_eq!(&*r.get(&T, (9u64, "inv-1")).unwrap().unwrap(), b"5");
    assert_eq!(&*r.get(&T, "bytes").unwrap().unwrap(), b"6");
    assert_eq!(&*r.get(&T, -3i32).unwrap().unwrap(), b"7");
    assert!(r.get(&T, 43u64).unwrap().is_none());
    assert!(r.get(&T, (9u64, "inv-2")).unwrap().is_none());
    // The row keys are the encoded bytes.
    let keys: Vec<Vec<u8>> = r
        .scan(&T)
        .unwrap()
        .map(|row| row.unwrap().key().to_vec())
        .collect();
    assert!(keys.contains(&b"str-key".to_vec()));
    assert!(keys.contains(&42u64.to_be_bytes().to_vec()));
    assert!(keys.contains(&(9u64, "inv-1").key_bytes().into_owned()));
}

/// Integer keys scan in numeric order; a tuple key's fixed-width first component is a
/// prefix to scan by.
#[test]
fn integer_keys_scan_in_order_and_tuples_scan_by_their_first_component() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    const N: Table<Raw> = Table::new("numbers");
    const INV: Table<Raw> = Table::new("invoices");
    let mut w = db.write(a).unwrap();
    for n in [300u64, 2, 70_000, 1, 256, u64::MAX] {
        w.insert(&N, n, &n.to_le_bytes()).unwrap();
    }
    for (customer, inv) in [(2u64, "b"), (1, "z"), (2, "a"), (3, "a"), (2, "c")] {
        w.insert(&INV, (customer, inv), inv.as_bytes()).unwrap();
    }
    w.commit().unwrap();
    let r = db.read(a).unwrap();
    let order: Vec<u64> = r
        .scan(&N)
        .unwrap()
        .map(|row| u64::from_le_bytes(row.unwrap().record().as_ref().try_into().unwrap()))
        .collect();
    assert_eq!(order, vec![1, 2, 256, 300, 70_000, u64::MAX]);
    let of_2: Vec<Vec<u8>> = r
        .scan_prefix(&INV, 2u64)
        .unwrap()
        .map(|row| row.unwrap().record().to_vec())
        .collect();
    assert_eq!(of_2, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
}

/// Keys keep their limits whatever their type.
#[test]
fn key_limits_apply_to_encoded_keys() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    let long = "x".repeat(regionkv::MAX_KEY + 1);
    assert!(matches!(
        w.insert(&T, long.as_str(), b"v"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        w.insert(&T, (1u64, long.as_str()), b"v"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(w.is_empty());
}
