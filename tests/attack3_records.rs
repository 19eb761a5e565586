//! Adversarial review, round 3: `Record`/`Row` held across drop of the Db and a reopen of
//! the same store in the same process.
//!
//! passes (guard): `record_held_across_drop_and_reopen` (the reopen is refused with
//!   `Error::Io` "eu.redb is already open for writing" while the record lives — the close
//!   docs say files are released with the last snapshot; once dropped the store reopens
//!   and audits clean, also after a power loss)

use std::time::Duration;

use regionkv::testing::SimStorage;
use regionkv::{Db, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/r";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

#[test]
fn record_held_across_drop_and_reopen() {
    let sim = SimStorage::new();
    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k", b"old", &[Unique::new("email", "v")])
        .unwrap();
    w.commit().unwrap();
    let rec = db.read(a).unwrap().get(&T, b"k").unwrap().unwrap();
    let row = db.scan_all(&T).unwrap().next().unwrap().unwrap();
    drop(db);
    let t0 = std::time::Instant::now();
    let db2 = b(&sim).region("us").region("eu").open(DIR);
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
    let db3 = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let au = db3.audit().unwrap();
    assert!(au.is_clean(), "after crash: {:?}", au.findings());
    let r = db3.read(a).unwrap();
    assert!(
        r.get(&T, b"k").unwrap().is_some(),
        "acknowledged record lost"
    );
}
