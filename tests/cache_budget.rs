//! The page-cache budget (`Builder::cache_size`): the shares of the open partitions and the
//! verification look never add up to more than the budget, whatever the number of regions;
//! they follow file sizes; a budget below the minimum is refused before anything changes.

use std::collections::BTreeMap;
use std::path::Path;

use regionkv::testing::SimStorage;
use regionkv::{
    CacheBudget, DEFAULT_CACHE_BYTES, Db, Error, MIN_PARTITION_CACHE, NewAccount, Raw, Table,
};

const T: Table<Raw> = Table::new("t");

fn assert_within(b: &CacheBudget) {
    assert!(b.used() <= b.total, "{} > {}", b.used(), b.total);
    assert!(b.look >= MIN_PARTITION_CACHE);
    for p in &b.partitions {
        assert!(p.bytes >= MIN_PARTITION_CACHE, "{p:?}");
    }
}

fn share(b: &CacheBudget, name: &str) -> usize {
    b.partitions
        .iter()
        .find(|p| p.partition == name)
        .unwrap_or_else(|| panic!("no share for {name}: {b:?}"))
        .bytes
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn three() -> regionkv::Builder {
    Db::builder().region("us").region("eu").region("ap")
}

#[test]
fn three_regions_share_by_file_size_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = three().open(dir.path()).unwrap();
    // A new store: every file just created, so the spread is even.
    let b = db.cache_budget();
    assert_eq!(b.total, DEFAULT_CACHE_BYTES);
    assert_within(&b);
    let names: Vec<&str> = b.partitions.iter().map(|p| p.partition.as_str()).collect();
    assert_eq!(names, ["global", "us", "eu", "ap"]);
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let value = vec![7u8; 1000];
    for chunk in 0..4 {
        let mut w = db.write(a).unwrap();
        for i in 0..500u32 {
            w.insert(&T, (chunk * 500 + i).to_be_bytes(), &value[..])
                .unwrap();
        }
        w.commit().unwrap();
    }
    db.close().unwrap();

    let budget = 8 << 20;
    let db = three().cache_size(budget).open(dir.path()).unwrap();
    let b = db.cache_budget();
    assert_eq!(b.total, budget);
    assert_within(&b);
    let eu = b.partitions.iter().find(|p| p.partition == "eu").unwrap();
    let us = b.partitions.iter().find(|p| p.partition == "us").unwrap();
    assert!(eu.file_bytes > 2 * us.file_bytes, "{b:?}");
    assert!(
        eu.bytes > 2 * us.bytes,
        "the bigger file gets the bigger share: {b:?}"
    );
    // The store works at these shares.
    let r = db.read(a).unwrap();
    assert_eq!(
        &*r.get(&T, 1999u32.to_be_bytes()).unwrap().unwrap(),
        &value[..]
    );
    drop(r);
    db.verify().unwrap().check().unwrap();
    db.close().unwrap();

    // A disabled region has no share; its part goes to the open ones.
    let db = Db::builder()
        .region("us")
        .region("eu")
        .disable_region("ap")
        .cache_size(budget)
        .open(dir.path())
        .unwrap();
    let b2 = db.cache_budget();
    assert_within(&b2);
    assert!(b2.partitions.iter().all(|p| p.partition != "ap"), "{b2:?}");
    assert_eq!(b2.partitions.len(), 3);
    assert!(share(&b2, "eu") > share(&b, "eu"));
    db.close().unwrap();
}

#[test]
fn a_thousand_regions_stay_within_the_default_budget() {
    // In memory: 1,025 real files would need as many descriptors and much longer.
    const N: usize = 1024;
    let sim = SimStorage::new();
    let mut builder = Db::builder().storage(sim.clone());
    for i in 0..N {
        builder = builder.region(format!("r{i}"));
    }
    let db = builder.clone().open("/sim").unwrap();
    let b = db.cache_budget();
    assert_eq!(b.partitions.len(), N + 1);
    assert_eq!(b.total, DEFAULT_CACHE_BYTES);
    assert_within(&b);
    // Before: 1 MiB per partition whatever the budget, 1,025 MiB in all.
    assert!(
        b.used() > DEFAULT_CACHE_BYTES - (N + 1),
        "the budget is used: {}",
        b.used()
    );
    db.close().unwrap();

    // Exactly the minimum: one floor per partition and one for the look.
    let min = (N + 2) * MIN_PARTITION_CACHE;
    let db = builder.clone().cache_size(min).open("/sim").unwrap();
    let b = db.cache_budget();
    assert_within(&b);
    assert_eq!(b.used(), min);
    let a = db.create_account(NewAccount::new("a", "r1000")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, b"k", b"v").unwrap();
    w.commit().unwrap();
    db.close().unwrap();

    let err = builder.cache_size(min - 1).open("/sim").unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains(&min.to_string())),
        "names the minimum: {err}"
    );
}

#[test]
fn a_budget_below_the_minimum_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let min = 5 * MIN_PARTITION_CACHE; // global + 3 regions + the look
    // A new store: nothing is created.
    let err = three().cache_size(min - 1).open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains(&min.to_string())),
        "{err}"
    );
    assert!(files(dir.path()).is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // An existing store: every file as it was, and it opens afterwards.
    let db = three().open(dir.path()).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, b"k", b"v").unwrap();
    w.commit().unwrap();
    db.close().unwrap();
    let before = files(dir.path());
    for small in [0, 1, MIN_PARTITION_CACHE, min - 1] {
        let err = three().cache_size(small).open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert_eq!(files(dir.path()), before);
    }
    // A fourth region raises the minimum: the same budget that fits three is refused.
    let err = three()
        .region("sa")
        .cache_size(min)
        .open(dir.path())
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert_eq!(files(dir.path()), before);

    let db = three().cache_size(min).open(dir.path()).unwrap();
    assert_within(&db.cache_budget());
    assert_eq!(&*db.read(a).unwrap().get(&T, b"k").unwrap().unwrap(), b"v");
    db.close().unwrap();
}

#[test]
fn a_store_at_the_minimum_writes_reads_and_verifies() {
    // 64 KiB caches: most pages are read from and written to the file directly.
    let sim = SimStorage::new();
    let min = 3 * MIN_PARTITION_CACHE;
    let open = || {
        Db::builder()
            .region("us")
            .storage(sim.clone())
            .cache_size(min)
            .open("/sim")
            .unwrap()
    };
    let db = open();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let value = vec![3u8; 700];
    let mut w = db.write(a).unwrap();
    for i in 0..2000u32 {
        w.insert(&T, i.to_be_bytes(), &value[..]).unwrap();
    }
    w.commit().unwrap();
    db.close().unwrap();

    let db = open();
    assert_eq!(db.cache_budget().used(), min);
    let r = db.read(a).unwrap();
    for i in (0..2000u32).step_by(7) {
        assert_eq!(&*r.get(&T, i.to_be_bytes()).unwrap().unwrap(), &value[..]);
    }
    assert_eq!(r.scan(&T).unwrap().count(), 2000);
    drop(r);
    // Two verifications at once share the one look (they run one after the other).
    std::thread::scope(|s| {
        let v: Vec<_> = (0..2).map(|_| s.spawn(|| db.verify())).collect();
        for h in v {
            h.join().unwrap().unwrap().check().unwrap();
        }
    });
    db.close().unwrap();
}
