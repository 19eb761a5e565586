//! Shared snapshots (docs/design.md section 8, "Shared snapshots"): every partition keeps
//! its newest read snapshot, with the tables opened in it, for the reads that begin before
//! its next commit. What must hold:
//!
//! - a read never misses a commit that returned before it began, whichever thread
//!   committed and whichever read path (`Read`, `View`, `Db::find_unique`, `scan_all`,
//!   `Db::sweep`) and whatever kind of commit (a write, a batch, a group, a failed one);
//! - the kept snapshot pins no page: a store that reads between its commits does not
//!   grow more than one that never reads (a `Read` kept alive does, and the test shows
//!   the measurement can tell);
//! - a clean close still compacts after reads (the partition drops its kept snapshot
//!   before it is released).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use regionkv::{AccountId, Db, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");

fn open(dir: &std::path::Path) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        .default_region("us")
        .open(dir)
        .expect("open")
}

fn version_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

fn record(version: u64) -> Vec<u8> {
    let mut v = version.to_be_bytes().to_vec();
    v.extend_from_slice(b"-payload");
    v
}

/// A writer commits versions 1..N of one record (and claims a unique value per version);
/// after each commit returns it publishes the version. Readers on other threads take a
/// fresh `Read`, `View`, `find_unique` and `scan_all` after loading the published version:
/// each must see at least that version (a kept snapshot older than a returned commit would
/// show an older one). A second writer keeps commits of another account going, so kept
/// snapshots are retired and taken again all the time.
#[test]
fn fresh_reads_never_miss_a_returned_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    const VERSIONS: u64 = 150;
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(5));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (db, published, stop, start) =
            (db.clone(), published.clone(), stop.clone(), start.clone());
        readers.push(std::thread::spawn(move || {
            start.wait();
            let mut checks = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let want = published.load(Ordering::SeqCst);
                if want == 0 {
                    std::thread::yield_now();
                    continue;
                }
                let seen = match (r + checks) % 4 {
                    0 => {
                        let read = db.read(a).unwrap();
                        version_of(&read.get(&T, "k").unwrap().expect("written"))
                    }
                    1 => {
                        let view = db.view().unwrap();
                        version_of(&view.get(a, &T, "k").unwrap().expect("written"))
                    }
                    2 => {
                        // The value of the published version (or a later one) has an owner.
                        let hit = db.find_unique(&T, "v", format!("v-{want}")).unwrap();
                        match hit {
                            Some(h) => version_of(h.record()),
                            // Released by a later version already.
                            None => {
                                let read = db.read(a).unwrap();
                                let v = version_of(&read.get(&T, "k").unwrap().unwrap());
                                assert!(v > want, "v-{want} has no owner at version {v}");
                                v
                            }
                        }
                    }
                    _ => {
                        let mut best = 0;
                        for row in db.scan_all(&T).unwrap() {
                            let row = row.unwrap();
                            if row.account() == a {
                                best = version_of(row.record());
                            }
                        }
                        best
                    }
                };
                assert!(
                    seen >= want,
                    "reader {r} saw version {seen} after version {want} was committed"
                );
                checks += 1;
            }
            checks
        }));
    }
    let churn = {
        let (db, stop, start) = (db.clone(), stop.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut batch = db.batch_in("us").unwrap();
                batch
                    .write(b)
                    .unwrap()
                    .insert(&T, format!("c{}", i % 7), &record(i))
                    .unwrap();
                batch.commit().unwrap();
                i += 1;
            }
        })
    };
    start.wait();
    for v in 1..=VERSIONS {
        let mut w = db.write(a).unwrap();
        w.insert_unique(&T, "k", &record(v), &[Unique::new("v", &format!("v-{v}"))])
            .unwrap();
        w.commit().unwrap();
        published.store(v, Ordering::SeqCst);
        if v % 10 == 0 {
            // A failed commit (the value is taken by this very record) changes nothing.
            let mut w = db.write(b).unwrap();
            w.insert_unique(&T, "dup", b"x", &[Unique::new("v", &format!("v-{v}"))])
                .unwrap();
            assert!(w.commit().is_err(), "a taken value must be refused");
        }
    }
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    let checks: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checks > 0, "the readers checked nothing");
    let read = db.read(b).unwrap();
    assert!(
        read.get(&T, "dup").unwrap().is_none(),
        "a refused write left a record"
    );
}

/// Every kind of commit is seen by the next read on the same thread, through every read
/// path: single writes, removes, read-modify-writes, batches, groups (`commit_each`), and
/// a sweep.
#[test]
fn every_kind_of_commit_is_seen_by_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let ids: Vec<AccountId> = (0..3)
        .map(|i| {
            db.create_account(NewAccount::new(format!("a{i}"), "eu").allow("us"))
                .unwrap()
        })
        .collect();
    let get = |id: AccountId, key: &str| -> Option<u64> {
        // A fresh Read, and a View made now: the same answer.
        let a = db
            .read(id)
            .unwrap()
            .get(&T, key)
            .unwrap()
            .map(|r| version_of(&r));
        let b = db
            .view()
            .unwrap()
            .get(id, &T, key)
            .unwrap()
            .map(|r| version_of(&r));
        assert_eq!(a, b, "a Read and a View disagree on {key}");
        a
    };
    let swept = |region: &str| -> u64 {
        let n = AtomicU64::new(0);
        db.sweep(&T)
            .run(|r, _, _, _| {
                if db.region_name(r).as_deref() == Some(region) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), regionkv::Error>(())
            })
            .unwrap();
        n.into_inner()
    };
    for round in 1..=20u64 {
        // Prime the kept snapshots.
        assert_eq!(get(ids[0], "w").unwrap_or(0), round - 1);
        let mut w = db.write(ids[0]).unwrap();
        w.insert(&T, "w", &record(round)).unwrap();
        w.commit().unwrap();
        assert_eq!(get(ids[0], "w"), Some(round), "a single write");

        let mut w = db.write(ids[0]).unwrap();
        w.remove(&T, "w").unwrap();
        w.commit().unwrap();
        assert_eq!(get(ids[0], "w"), None, "a remove");
        let mut w = db.write(ids[0]).unwrap();
        w.insert(&T, "w", &record(round)).unwrap();
        w.commit().unwrap();

        let mut batch = db.batch_in("eu").unwrap();
        for id in &ids {
            batch
                .write(*id)
                .unwrap()
                .insert(&T, "b", &record(round))
                .unwrap();
        }
        batch.commit().unwrap();
        for id in &ids {
            assert_eq!(get(*id, "b"), Some(round), "a batch");
        }

        let writes: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut w = db.write(*id).unwrap();
                w.insert_unique(
                    &T,
                    "g",
                    &record(round),
                    &[Unique::new("g", &format!("g-{id:?}-{round}"))],
                )
                .unwrap();
                w
            })
            .collect();
        for r in db.commit_each(writes) {
            r.unwrap();
        }
        for id in &ids {
            assert_eq!(get(*id, "g"), Some(round), "a group");
            let hit = db
                .view()
                .unwrap()
                .find_unique(&T, "g", format!("g-{id:?}-{round}"))
                .unwrap()
                .expect("claimed");
            assert_eq!((hit.account(), version_of(hit.record())), (*id, round));
        }

        // Another region of the same account: its own kept snapshot.
        let before = swept("us");
        let mut w = db.write_in(ids[1], "us").unwrap();
        w.insert(&T, format!("u{round}"), &record(round)).unwrap();
        w.commit().unwrap();
        assert_eq!(swept("us"), before + 1, "a sweep after a write in us");
        let r = db.read(ids[1]).unwrap();
        let got = r.get_in("us", &T, format!("u{round}")).unwrap();
        assert_eq!(got.map(|r| version_of(&r)), Some(round), "get_in");
    }
}

fn region_file(dir: &std::path::Path, region: &str) -> u64 {
    std::fs::metadata(dir.join("regions").join(format!("{region}.redb")))
        .expect("region file")
        .len()
}

const BIG: usize = 32 << 10;
const OVERWRITES: u64 = 200;

/// Overwrites one 32 KiB record `OVERWRITES` times; before each commit, `between` runs.
/// Returns the region file's size at the end (before any close).
fn churn(dir: &std::path::Path, between: impl Fn(&Db, AccountId)) -> u64 {
    let db = Db::builder()
        .region("us")
        .compact_on_close(false)
        .open(dir)
        .expect("open");
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    for i in 0..OVERWRITES {
        between(&db, a);
        let mut w = db.write(a).unwrap();
        let mut v = record(i);
        v.resize(BIG, i as u8);
        w.insert(&T, "big", &v).unwrap();
        w.commit().unwrap();
    }
    let size = region_file(dir, "us");
    db.close().unwrap();
    size
}

/// The kept snapshot is always the newest and a commit drops it, so it pins no page that
/// a later commit frees: reading before every overwrite grows the file no more than never
/// reading. Holding one `Read` across the overwrites does pin them (the file grows by
/// about one record per overwrite), which shows that the sizes tell the two apart.
#[test]
fn a_kept_snapshot_pins_no_pages() {
    let quiet = tempfile::tempdir().unwrap();
    let reading = tempfile::tempdir().unwrap();
    let holding = tempfile::tempdir().unwrap();
    let never = churn(quiet.path(), |_, _| {});
    let read_each_time = churn(reading.path(), |db, a| {
        let r = db.read(a).unwrap();
        let _ = r.get(&T, "big").unwrap();
        let v = db.view().unwrap();
        let _ = v.get(a, &T, "big").unwrap();
    });
    let held: std::cell::RefCell<Option<regionkv::Read>> = std::cell::RefCell::new(None);
    let pinned = churn(holding.path(), |db, a| {
        let mut held = held.borrow_mut();
        if held.is_none() {
            let r = db.read(a).unwrap();
            let _ = r.get(&T, "big").unwrap();
            *held = Some(r);
        }
    });
    drop(held);
    let churned = OVERWRITES * BIG as u64;
    assert!(
        pinned > churned / 2,
        "a held Read should pin the overwritten pages: {pinned} bytes after {churned} churned"
    );
    assert!(
        read_each_time <= never + 4 * BIG as u64 + (never / 4),
        "reads between commits grew the file: {read_each_time} bytes, {never} without reads"
    );
}

/// A clean close compacts after fresh reads: the partition drops its kept snapshot first.
#[test]
fn a_clean_close_compacts_after_fresh_reads() {
    let dir = tempfile::tempdir().unwrap();
    let before_close;
    {
        let db = Db::builder().region("us").open(dir.path()).expect("open");
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        for i in 0..100u64 {
            let mut w = db.write(a).unwrap();
            let mut v = record(i);
            v.resize(BIG, 1);
            w.insert(&T, format!("k{i}"), &v).unwrap();
            w.commit().unwrap();
        }
        let mut w = db.write(a).unwrap();
        for i in 1..100u64 {
            w.remove(&T, format!("k{i}")).unwrap();
        }
        w.commit().unwrap();
        // Fresh reads: the region keeps the newest snapshot.
        let r = db.read(a).unwrap();
        assert!(r.get(&T, "k0").unwrap().is_some());
        drop(r);
        assert_eq!(db.scan_all(&T).unwrap().count(), 1);
        before_close = region_file(dir.path(), "us");
        db.close().unwrap();
    }
    let after_close = region_file(dir.path(), "us");
    assert!(
        after_close * 2 < before_close,
        "the close did not compact: {before_close} -> {after_close} bytes"
    );
    let db = Db::builder().region("us").open(dir.path()).expect("reopen");
    let a = db.account_id("a").unwrap().unwrap();
    let r = db.read(a).unwrap();
    assert_eq!(version_of(&r.get(&T, "k0").unwrap().unwrap()), 0);
    assert!(r.get(&T, "k1").unwrap().is_none());
}
