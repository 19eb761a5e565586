//! Adversarial review, round 4: public-API inputs at and over their limits; many regions.
//!
//! passes (guard): limits_are_accepted_at_the_edge_and_refused_past_it
//! passes (guard): fifty_regions_some_disabled_at_open_and_at_run_time
//! passes (guard): scan_prefix_of_ff_bytes_stays_inside_the_account

use std::time::Duration;

use regionkv::testing::SimStorage;
use regionkv::{Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
// 64 bytes: 16 four-byte characters.
const T64: Table<Raw> = Table::new("😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀");
const T65: Table<Raw> = Table::new("😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀x");

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn invalid<T: std::fmt::Debug>(r: regionkv::Result<T>, what: &str) {
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{what}: {r:?}");
}

#[test]
fn limits_are_accepted_at_the_edge_and_refused_past_it() {
    let sim = SimStorage::new();
    let r64 = "r".repeat(64);
    let db = b(&sim)
        .region("us")
        .region(&r64)
        .max_value_size(1000)
        .open("/e")
        .unwrap();
    invalid(
        b(&sim).region("us").region("r".repeat(65)).open("/e2"),
        "region 65",
    );
    // 128 bytes of 4-byte characters; 129 refused.
    let name128 = "🦀".repeat(32);
    assert_eq!(name128.len(), 128);
    let a = db
        .create_account(NewAccount::new(name128.clone(), &r64).allow("us"))
        .unwrap();
    invalid(
        db.create_account(NewAccount::new(format!("{name128}x"), "us")),
        "name 129",
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
    invalid(w.insert(&T65, b"k", b"v"), "table 65");
    invalid(w.insert(&T, &vec![0u8; 4097], b"v"), "key 4097");
    invalid(w.insert(&T, b"k", &vec![0u8; 1001]), "value 1001");
    invalid(
        w.insert_unique(&T, b"k", b"v", &[Unique::new(&"n".repeat(65), "v")]),
        "ns 65",
    );
    invalid(
        w.insert_unique(&T, b"k", b"v", &[Unique::new("n", &vec![1u8; 1025])]),
        "value 1025",
    );
    invalid(
        w.insert_unique(&T, b"k", b"v", &[Unique::new("", "v")]),
        "ns 0",
    );
    invalid(
        w.insert_unique(&T, b"k", b"v", &[Unique::new("n", "")]),
        "value 0",
    );
    w.commit().unwrap();

    let hit = db.find_unique(&T64, &ns64, &v1024).unwrap().unwrap();
    assert_eq!((hit.account(), hit.key()), (a, key4096.as_slice()));
    assert_eq!(db.find_unique(&T64, "e", "x").unwrap().unwrap().key(), b"");
    assert!(db.is_taken(&ns64, &v1024).unwrap());
    invalid(
        db.find_unique(&T65, "e", "x").map(|h| h.is_some()),
        "find t65",
    );
    invalid(db.is_taken("e", vec![0u8; 1025]), "is_taken 1025");
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
    let db = b(&sim).region("us").region(&r64).open("/e").unwrap();
    assert!(db.audit().unwrap().is_clean());
    assert_eq!(db.account(a).unwrap().name(), name128);
}

#[test]
fn fifty_regions_some_disabled_at_open_and_at_run_time() {
    let sim = SimStorage::new();
    let names: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
    let mut bl = b(&sim);
    for n in &names {
        bl = bl.region(n);
    }
    let db = bl.open("/m").unwrap();
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let a = db
            .create_account(
                NewAccount::new(format!("a{i}"), n)
                    .allow(&names[(i + 1) % 50])
                    .max_records(3),
            )
            .unwrap();
        let mut w = db.write(a).unwrap();
        w.insert_unique(&T, b"k", b"v", &[Unique::new("e", &format!("v{i}"))])
            .unwrap();
        w.commit().unwrap();
        ids.push(a);
    }
    for n in names.iter().skip(1).step_by(3) {
        db.disable_region(n).unwrap();
    }
    db.close().unwrap();
    sim.crash();
    let mut bl = b(&sim);
    for (i, n) in names.iter().enumerate() {
        bl = if i % 3 == 2 {
            bl.disable_region(n)
        } else {
            bl.region(n)
        };
    }
    let db = bl.open("/m").unwrap();
    for (i, a) in ids.iter().enumerate() {
        let v = format!("v{i}");
        assert!(db.is_taken("e", &v).unwrap(), "v{i}");
        let enabled = i % 3 != 2; // i % 3 == 1: disabled at run time, enabled again now
        let hit = db.find_unique(&T, "e", &v);
        if enabled {
            assert_eq!(hit.unwrap().unwrap().account(), *a);
        } else {
            assert!(matches!(hit, Err(Error::RegionDisabled(_))), "{i}: {hit:?}");
        }
        let other = (i + 1) % 50;
        let mut w = db
            .write(ids[other])
            .unwrap_or_else(|_| db.write_in(ids[other], &names[(other + 1) % 50]).unwrap());
        w.insert_unique(&T, b"k2", b"v", &[Unique::new("e", &v)])
            .unwrap();
        let r = w.commit();
        assert!(
            matches!(
                r,
                Err(Error::UniqueViolation { .. }) | Err(Error::RegionDisabled(_))
            ),
            "{i}: {r:?}"
        );
    }
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn scan_prefix_of_ff_bytes_stays_inside_the_account() {
    let sim = SimStorage::new();
    let db = b(&sim).region("us").open("/p").unwrap();
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
    assert_eq!(r.scan_prefix(&T, &[0xFF]).unwrap().count(), 3);
    let rc = db.read(c).unwrap();
    assert_eq!(rc.scan_prefix(&T, &[]).unwrap().count(), 3);
    assert_eq!(rc.scan_prefix(&T, &[0xFF]).unwrap().count(), 1);
}
