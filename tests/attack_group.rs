//! Adversarial review of group commit (src/commit.rs), `Db::commit_each` and `Db::batch_in`
//! (src/batch.rs), the split Reserve (src/reservation/coordinator.rs) and `Write::stage`
//! (src/write.rs).
//!
//! Every test asserts the behaviour the documentation promises. The tests under "Breaks"
//! fail on the code they were written against; the ones under "Probes that held" pass and
//! are kept because they probe something that could have broken (deadlocks, lost
//! outcomes, lost increments, faults during concurrent groups).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::T;
use common::sim::quiet_builder;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique, Write};

const DIR: &str = "/attack-group";

fn open(sim: &SimStorage) -> Db {
    open_at(sim, DIR)
}

fn open_at(sim: &SimStorage, dir: &str) -> Db {
    quiet_builder(sim)
        .region("us")
        .region("eu")
        .open(dir)
        .expect("open")
}

fn acct(db: &Db, name: &str, new: NewAccount) -> AccountId {
    db.create_account(new)
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
}

/// A write of `a` in its home region: record `key` = `value`, owning `email` value `v`
/// (exactly that one), or keeping what it owns if `v` is `None`.
fn put(db: &Db, a: AccountId, key: &str, value: &[u8], v: Option<&str>) -> Write {
    let mut w = db.write(a).expect("write");
    match v {
        Some(v) => w
            .insert_unique(&T, key, value, &[Unique::new("email", v)])
            .expect("buffer"),
        None => w.insert(&T, key, value).expect("buffer"),
    }
    w
}

fn get(db: &Db, a: AccountId, key: &str) -> Option<Vec<u8>> {
    db.read(a)
        .expect("read")
        .get(&T, key)
        .expect("get")
        .map(|r| r.to_vec())
}

fn owner(db: &Db, v: &str) -> Option<(AccountId, Vec<u8>)> {
    db.find_unique(&T, "email", v)
        .expect("find_unique")
        .map(|h| (h.account(), h.key().to_vec()))
}

/// Every row of `T` over all regions: (account, region name, key).
fn rows(db: &Db) -> Vec<(AccountId, String, Vec<u8>)> {
    db.scan_all(&T)
        .expect("scan_all")
        .map(|r| {
            let r = r.expect("row");
            (
                r.account(),
                db.region_name(r.region()).unwrap_or_default(),
                r.key().to_vec(),
            )
        })
        .collect()
}

fn assert_clean(db: &Db, what: &str) {
    let audit = db.audit().expect("audit");
    assert!(audit.is_clean(), "{what}: {audit}\n{:#?}", audit.findings());
}

/// Runs `f` on a thread and fails the test if it has not finished after `secs` seconds
/// (a deadlock must fail the test, not hang the suite; the stuck thread is left behind).
fn within<R: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: no end after {secs} s (deadlock or hang)"),
    }
}

// ---------------------------------------------------------------------------------------
// Breaks
// ---------------------------------------------------------------------------------------

/// `Batch::write` hands out `&mut Write`: a caller can put a write of another region in
/// a part's slot. `Batch::commit` then runs the whole batch in the region of its *first*
/// part (`commit::group_region`), so the other parts' records are written into that
/// region's file: a tenant allowed only in `us` gets its data in `eu`'s file (I4), the
/// commit is acknowledged and the record cannot be read back (I3).
#[test]
fn batch_part_replaced_by_a_write_of_another_region_breaks_residency() {
    let sim = SimStorage::new();
    let db = open(&sim);
    // Allowed in eu and us; created first, so its part comes first in the batch.
    let x = acct(&db, "x", NewAccount::new("x", "eu").allow("us"));
    // Only in eu.
    let e = acct(&db, "e", NewAccount::new("e", "eu"));
    let mut batch = db.batch_in("eu").expect("batch");
    // x's part: replaced by a write of x in us.
    let mut xs = db.write_in(x, "us").expect("write_in us");
    xs.insert(&T, "x-in-us", b"x").expect("buffer");
    *batch.write(x).expect("part x") = xs;
    batch
        .write(e)
        .expect("part e")
        .insert(&T, "e-secret", b"eu only")
        .expect("buffer");
    let r = batch.commit();
    match r {
        // Refusing such a batch is fine: then nothing may be written.
        Err(err) => {
            assert!(
                !matches!(err, Error::OutcomeUnknown { .. }),
                "unexpected: {err}"
            );
            assert_eq!(rows(&db), vec![], "a refused batch wrote rows");
        }
        Ok(()) => {
            // Acknowledged: every part is where its write said, and readable.
            assert_eq!(
                get(&db, e, "e-secret").as_deref(),
                Some(&b"eu only"[..]),
                "e's acknowledged record cannot be read back; rows: {:?}",
                rows(&db)
            );
            for (a, region, key) in rows(&db) {
                if a == e {
                    assert_eq!(
                        region,
                        "eu",
                        "I4: a record of e (eu only) in region {region}: {}",
                        String::from_utf8_lossy(&key)
                    );
                }
            }
        }
    }
    assert_clean(&db, "after the batch");
}

/// The same hole with a write of *another store*: the batch of store 1 runs in store 2's
/// region file with store 2's coordinator, and store 1's tenant's record is read by the
/// tenant of store 2 that has the same account id (I5).
#[test]
fn batch_part_replaced_by_a_write_of_another_store_breaks_isolation() {
    let sim1 = SimStorage::new();
    let sim2 = SimStorage::new();
    let db1 = open_at(&sim1, "/store-1");
    let db2 = open_at(&sim2, "/store-2");
    let a1 = acct(&db1, "a1", NewAccount::new("a1", "eu"));
    let s1 = acct(&db1, "s1", NewAccount::new("s1", "eu"));
    let b2 = acct(&db2, "b2", NewAccount::new("b2", "eu"));
    let victim = acct(&db2, "victim", NewAccount::new("victim", "eu"));
    assert_eq!((a1, s1), (b2, victim), "both stores number accounts alike");

    let mut batch = db1.batch_in("eu").expect("batch");
    let mut other = db2.write(b2).expect("write in store 2");
    other.insert(&T, "b2", b"store 2").expect("buffer");
    *batch.write(a1).expect("part a1") = other;
    batch
        .write(s1)
        .expect("part s1")
        .insert(&T, "secret", b"s1's secret in store 1")
        .expect("buffer");
    let r = batch.commit();
    // Whatever the outcome: the tenant of store 2 never reads store 1's data.
    let leaked = get(&db2, victim, "secret");
    assert_eq!(
        leaked, None,
        "I5: store 2's tenant reads store 1's tenant's record (batch outcome {r:?})"
    );
    if r.is_ok() {
        assert_eq!(
            get(&db1, s1, "secret").as_deref(),
            Some(&b"s1's secret in store 1"[..]),
            "acknowledged record of store 1 missing from store 1"
        );
    }
    assert_clean(&db1, "store 1");
    assert_clean(&db2, "store 2");
}

/// The same hole with unique values: the parts' reservations go into one Reserve begun
/// for the first reserving part's region and `reserve_in` meets a part of another region
/// (`debug_assert_eq!(region, rt.region)` in a debug build: the group panics, every
/// write gets `Corrupt` and the batch's *first* region is poisoned until a reopen; in a
/// release build the marker and records land in the wrong file instead). A caller's
/// misuse must be refused, not poison a region every tenant of it then cannot write to.
#[test]
fn batch_part_of_another_region_with_unique_values_poisons_a_region() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let x = acct(&db, "x", NewAccount::new("x", "eu").allow("us"));
    let e = acct(&db, "e", NewAccount::new("e", "eu"));
    let u = acct(&db, "u", NewAccount::new("u", "us"));
    let mut batch = db.batch_in("eu").expect("batch");
    batch
        .write(x)
        .expect("part x")
        .insert_unique(&T, "x", b"x", &[Unique::new("email", "x@x")])
        .expect("buffer");
    let mut us_write = db.write_in(x, "us").expect("write_in us");
    us_write
        .insert_unique(&T, "x-us", b"x", &[Unique::new("email", "x-us@x")])
        .expect("buffer");
    *batch.write(e).expect("part e") = us_write;
    let r = batch.commit();
    assert!(
        !matches!(r, Err(Error::Corrupt { .. })),
        "a misused batch reported as storage damage: {r:?}"
    );
    // Another tenant of eu and one of us can still write.
    let mut w = db.write(u).expect("write u");
    w.insert(&T, "after", b"u").expect("buffer");
    let after_us = w.commit();
    let mut w = db.write(e).expect("write e");
    w.insert(&T, "after", b"e").expect("buffer");
    let after_eu = w.commit();
    assert!(
        after_us.is_ok() && after_eu.is_ok(),
        "after the batch ({r:?}): us write {after_us:?}, eu write {after_eu:?}"
    );
    assert_clean(&db, "after the batch");
}

/// `Db::commit_each` documents: "The outcomes are those of committing the writes one by
/// one in this order". A write deferred behind an earlier write of its group (it releases
/// a value that write holds in flight) is moved behind *every* later write of the group,
/// so a later write takes the value the deferred one claims.
///
/// One by one: W1 (a) claims v@x for k1; W2 (a) moves k1 to w@x; W3 (b) claims w@x: taken.
/// Observed: W2 runs in the next group, after W3, and fails with the violation; W3 wins.
#[test]
fn commit_each_deferred_write_loses_its_value_to_a_later_write() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = acct(&db, "a", NewAccount::new("a", "eu"));
    let b = acct(&db, "b", NewAccount::new("b", "eu"));
    let out = db.commit_each([
        put(&db, a, "k1", b"one", Some("v@x")),
        put(&db, a, "k1", b"two", Some("w@x")),
        put(&db, b, "k3", b"b", Some("w@x")),
    ]);
    assert!(out[0].is_ok(), "W1: {:?}", out[0]);
    assert!(
        out[1].is_ok(),
        "W2 must win w@x, as one by one: {:?} (W3: {:?}, owner of w@x: {:?})",
        out[1],
        out[2],
        owner(&db, "w@x")
    );
    assert!(
        matches!(out[2], Err(Error::UniqueViolation { .. })),
        "W3 claims a value W2 took: {:?}",
        out[2]
    );
    assert_eq!(owner(&db, "w@x"), Some((a, b"k1".to_vec())));
    assert_clean(&db, "after commit_each");
}

/// The same reordering makes the *last* write of a record lose to an earlier one: W3, a
/// plain insert of k1 given after W2, is applied before W2 (deferred), and W2's value is
/// what the record ends with. All three are acknowledged.
#[test]
fn commit_each_deferred_write_overwrites_a_later_write_of_the_same_record() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = acct(&db, "a", NewAccount::new("a", "eu"));
    let out = db.commit_each([
        put(&db, a, "k1", b"first", Some("v@x")),
        put(&db, a, "k1", b"second", Some("w@x")),
        put(&db, a, "k1", b"third", None),
    ]);
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(
        get(&db, a, "k1").as_deref(),
        Some(&b"third"[..]),
        "the last write given (and acknowledged) must be the record's value"
    );
    assert_eq!(owner(&db, "w@x"), Some((a, b"k1".to_vec())));
    assert!(!db.is_taken("email", "v@x").unwrap());
    assert_clean(&db, "after commit_each");
}

/// The quota check of a group reads the in-memory record count, which the group's earlier
/// writes only change at settle (after the commit): a remove earlier in the group does not
/// free its slot for a later insert. One by one (as `commit_each` documents) both succeed.
#[test]
fn commit_each_remove_then_insert_at_the_quota_limit() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let q = acct(&db, "q", NewAccount::new("q", "eu").max_records(1));
    put(&db, q, "old", b"x", None)
        .commit()
        .expect("first record");
    let mut rm = db.write(q).unwrap();
    rm.remove(&T, "old").unwrap();
    let out = db.commit_each([rm, put(&db, q, "new", b"x", None)]);
    assert!(
        out.iter().all(Result::is_ok),
        "remove then insert, at a limit of 1: {out:?}"
    );
    assert_eq!(get(&db, q, "old"), None);
    assert!(get(&db, q, "new").is_some());
}

/// The same stale count gives an outcome that matches *no* serial order of the group, so
/// the design's claim ("every outcome is that of some serial order of the group") fails
/// for concurrent writers too, not only for `commit_each`'s order.
///
/// Limit 1, no records. W1 inserts k1; W2 removes k1; W3 read k1 as absent (before the
/// group) and inserts k2. Serially W3 either runs before W1 (ok: 0 records), after W2
/// (ok: k1 absent again, 0 records), or between them (`Conflict`: k1 changed). Observed:
/// `QuotaExceeded`, which no serial order gives.
#[test]
fn group_quota_refusal_matches_no_serial_order() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let q = acct(&db, "q", NewAccount::new("q", "eu").max_records(1));
    let w1 = put(&db, q, "k1", b"x", None);
    let mut w2 = db.write(q).unwrap();
    w2.remove(&T, "k1").unwrap();
    let mut w3 = db.write(q).unwrap();
    assert!(w3.get(&T, "k1").unwrap().is_none());
    w3.insert(&T, "k2", b"x").unwrap();
    let out = db.commit_each([w1, w2, w3]);
    assert!(out[0].is_ok() && out[1].is_ok(), "{out:?}");
    assert!(
        matches!(out[2], Ok(()) | Err(Error::Conflict { .. })),
        "W3: {:?} is the outcome of no serial order",
        out[2]
    );
}

/// `Batch` documents: "a value claimed by two accounts of the batch, or released by one
/// and claimed by another, is `Error::DuplicateInWrite`". When the claiming part comes
/// first (lower account id) the claim meets the releasing account's committed entry and
/// the batch fails with `UniqueViolation` instead (nothing is written either way).
#[test]
fn batch_release_and_claim_across_parts_is_refused_and_writes_nothing() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let claimer = acct(&db, "claimer", NewAccount::new("claimer", "eu"));
    let releaser = acct(&db, "releaser", NewAccount::new("releaser", "eu"));
    put(&db, releaser, "r", b"x", Some("moving@x"))
        .commit()
        .unwrap();
    let mut batch = db.batch_in("eu").unwrap();
    batch
        .write(releaser)
        .unwrap()
        .insert_unique(&T, "r", b"x", &[])
        .unwrap();
    batch
        .write(claimer)
        .unwrap()
        .insert_unique(&T, "c", b"x", &[Unique::new("email", "moving@x")])
        .unwrap();
    // Documented (after this test found the doc wrong): `DuplicateInWrite` when the
    // releasing part is staged first, `UniqueViolation` when the claiming part is (parts
    // are staged by account id; here the claimer's is lower).
    let r = batch.commit();
    assert!(
        matches!(
            r,
            Err(Error::DuplicateInWrite { .. } | Error::UniqueViolation { .. })
        ),
        "expected DuplicateInWrite or UniqueViolation, got {r:?}"
    );
    assert_eq!(owner(&db, "moving@x"), Some((releaser, b"r".to_vec())));
    assert_clean(&db, "after the refused batch");
}

// ---------------------------------------------------------------------------------------
// Probes that held
// ---------------------------------------------------------------------------------------

/// Two writes to two regions claiming one value in one `commit_each`: the first region's
/// write wins, the second gets the violation (regions one after the other).
#[test]
fn commit_each_across_regions_claiming_one_value() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let e = acct(&db, "e", NewAccount::new("e", "eu"));
    let u = acct(&db, "u", NewAccount::new("u", "us"));
    let out = db.commit_each([
        put(&db, e, "k", b"e", Some("both@x")),
        put(&db, u, "k", b"u", Some("both@x")),
        put(&db, e, "k2", b"e", Some("e2@x")),
    ]);
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(
        matches!(out[1], Err(Error::UniqueViolation { .. })),
        "{out:?}"
    );
    assert_eq!(owner(&db, "both@x"), Some((e, b"k".to_vec())));
    assert_eq!(get(&db, u, "k"), None);
    assert_clean(&db, "after commit_each");
}

/// A deferral chain: 200 writes of one record, each moving it to a new value, in one
/// `commit_each` (each is deferred behind the previous one: 200 groups). Every write
/// succeeds, the record ends with the last value and owns only it.
#[test]
fn a_deferral_chain_on_one_record_settles_in_order() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = acct(&db, "a", NewAccount::new("a", "eu"));
    let n = 200;
    let writes: Vec<Write> = (0..n)
        .map(|i| {
            let v = format!("chain-{i}@x");
            put(&db, a, "k", format!("{i}").as_bytes(), Some(&v))
        })
        .collect();
    let db2 = db.clone();
    let out = within(120, "deferral chain", move || db2.commit_each(writes));
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(get(&db, a, "k"), Some(format!("{}", n - 1).into_bytes()));
    for i in 0..n - 1 {
        assert!(
            !db.is_taken("email", format!("chain-{i}@x")).unwrap(),
            "{i}"
        );
    }
    assert_eq!(
        owner(&db, &format!("chain-{}@x", n - 1)),
        Some((a, b"k".to_vec()))
    );
    assert_clean(&db, "after the chain");
}

/// A part of a batch whose `Write::get` went stale (another commit changed the record
/// between the read and the batch's commit): the whole batch fails with `Conflict`,
/// nothing of any part is written.
#[test]
fn a_stale_read_in_a_batch_part_refuses_the_whole_batch() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = acct(&db, "a", NewAccount::new("a", "eu"));
    let b = acct(&db, "b", NewAccount::new("b", "eu"));
    put(&db, b, "counter", b"1", None).commit().unwrap();
    let mut batch = db.batch_in("eu").unwrap();
    batch
        .write(a)
        .unwrap()
        .insert_unique(&T, "new", b"a", &[Unique::new("email", "a-new@x")])
        .unwrap();
    let part = batch.write(b).unwrap();
    assert_eq!(&part.get(&T, "counter").unwrap().unwrap()[..], b"1");
    part.insert(&T, "counter", b"2").unwrap();
    // Meanwhile the record changes.
    put(&db, b, "counter", b"10", None).commit().unwrap();
    let r = batch.commit();
    assert!(matches!(r, Err(Error::Conflict { .. })), "{r:?}");
    assert_eq!(get(&db, a, "new"), None);
    assert!(!db.is_taken("email", "a-new@x").unwrap());
    assert_eq!(get(&db, b, "counter").as_deref(), Some(&b"10"[..]));
    assert_clean(&db, "after the refused batch");
}

/// `Db::update` from 4 threads on one counter, on a disk with slow flushes (so updates
/// share groups and conflict inside them): no increment is lost, none fails.
#[test]
fn db_update_under_heavy_grouping_loses_no_increment() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = acct(&db, "a", NewAccount::new("a", "eu"));
    put(&db, a, "n", &0u64.to_le_bytes(), None)
        .commit()
        .unwrap();
    sim.set_sync_latency(Duration::from_micros(500));
    let (threads, each) = (4, 20);
    let db2 = db.clone();
    within(120, "concurrent Db::update", move || {
        std::thread::scope(|s| {
            for _ in 0..threads {
                let db = &db2;
                s.spawn(move || {
                    for _ in 0..each {
                        let wrote = db
                            .update(a, &T, "n", |old| {
                                let old = old?;
                                let n = u64::from_le_bytes(old[..8].try_into().ok()?);
                                Some((n + 1).to_le_bytes().to_vec())
                            })
                            .expect("update");
                        assert!(wrote);
                    }
                });
            }
        });
    });
    sim.set_sync_latency(Duration::ZERO);
    let n = u64::from_le_bytes(get(&db, a, "n").unwrap()[..8].try_into().unwrap());
    assert_eq!(n, threads * each, "lost increments");
}

/// Writers committing in eu (unique and plain writes, in groups) while `disable_region`
/// drains the region and `forfeit_unsettled` and checkpoints run: nothing deadlocks;
/// every write acknowledged is there when eu comes back, every write refused is not.
#[test]
fn disable_region_while_groups_are_queued() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids: Vec<AccountId> = db
        .create_accounts((0..4).map(|i| NewAccount::new(format!("w{i}"), "us").allow("eu")))
        .unwrap();
    sim.set_sync_latency(Duration::from_micros(300));
    let db2 = db.clone();
    let ids2 = ids.clone();
    let outcomes = within(120, "commits racing disable_region", move || {
        let db = &db2;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let handles: Vec<_> = ids2
                .iter()
                .enumerate()
                .map(|(t, id)| {
                    let stop = &stop;
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..200 {
                            let key = format!("t{t}-{i}");
                            let w = match db.write_in(*id, "eu") {
                                Ok(mut w) => {
                                    if i % 2 == 0 {
                                        let v = format!("{key}@x");
                                        w.insert_unique(
                                            &T,
                                            key.as_str(),
                                            b"x",
                                            &[Unique::new("email", &v)],
                                        )
                                        .unwrap();
                                    } else {
                                        w.insert(&T, key.as_str(), b"x").unwrap();
                                    }
                                    w
                                }
                                Err(Error::RegionDisabled(_)) => break,
                                Err(e) => panic!("write_in: {e}"),
                            };
                            // Half of them in pairs through commit_each.
                            let r = if i % 3 == 0 {
                                db.commit_each([w]).pop().unwrap()
                            } else {
                                w.commit()
                            };
                            let stopped = matches!(r, Err(Error::RegionDisabled(_)));
                            out.push((*id, key, r));
                            if stopped || stop.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                        out
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(30));
            db.disable_region("eu").expect("disable eu");
            let f = db.forfeit_unsettled("eu").expect("forfeit");
            assert!(!f.was_unsettled);
            db.checkpoint().expect("checkpoint");
            stop.store(true, Ordering::SeqCst);
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    sim.set_sync_latency(Duration::ZERO);
    for (_, key, r) in &outcomes {
        assert!(
            matches!(r, Ok(()) | Err(Error::RegionDisabled(_))),
            "{key}: {r:?}"
        );
    }
    db.close().unwrap();
    let db = open(&sim);
    for (id, key, r) in &outcomes {
        let present = db
            .read(*id)
            .unwrap()
            .get_in("eu", &T, key.as_str())
            .unwrap()
            .is_some();
        assert_eq!(present, r.is_ok(), "{key}: {r:?}");
    }
    assert_clean(&db, "after eu returned");
}

/// Writers in two regions while `close` runs: `close` waits for the groups in flight,
/// the writes after it get `Closed`; after a power loss every acknowledged write is there
/// and no refused one is.
#[test]
fn close_while_groups_are_queued() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids: Vec<AccountId> = db
        .create_accounts(
            (0..4).map(|i| NewAccount::new(format!("c{i}"), if i % 2 == 0 { "eu" } else { "us" })),
        )
        .unwrap();
    sim.set_sync_latency(Duration::from_micros(300));
    let ids2 = ids.clone();
    let outcomes = within(120, "commits racing close", move || {
        let handles: Vec<_> = ids2
            .iter()
            .enumerate()
            .map(|(t, id)| {
                let (db, id) = (db.clone(), *id);
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..10_000 {
                        let key = format!("t{t}-{i}");
                        let v = format!("{key}@x");
                        let w = match db.write(id) {
                            Ok(mut w) => {
                                w.insert_unique(
                                    &T,
                                    key.as_str(),
                                    b"x",
                                    &[Unique::new("email", &v)],
                                )
                                .unwrap();
                                w
                            }
                            Err(Error::Closed) => break,
                            Err(e) => panic!("write: {e}"),
                        };
                        let r = w.commit();
                        let closed = matches!(r, Err(Error::Closed));
                        out.push((id, key, r));
                        if closed {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(40));
        db.close().expect("close");
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    sim.set_sync_latency(Duration::ZERO);
    assert!(
        outcomes.iter().any(|(_, _, r)| r.is_ok()),
        "nothing committed"
    );
    sim.crash();
    let db = open(&sim);
    for (id, key, r) in &outcomes {
        assert!(matches!(r, Ok(()) | Err(Error::Closed)), "{key}: {r:?}");
        assert_eq!(get(&db, *id, key).is_some(), r.is_ok(), "{key}: {r:?}");
    }
    assert_clean(&db, "after close and power loss");
}

/// Groups in two regions while checkpoints run on every few writes, on the timer and
/// from a thread of their own: no deadlock, the audit is clean, and after a power loss
/// every acknowledged write is there.
#[test]
fn checkpoints_racing_groups() {
    let sim = SimStorage::new();
    let db = Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(3, Duration::from_millis(2))
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    let ids: Vec<AccountId> = db
        .create_accounts(
            (0..4).map(|i| NewAccount::new(format!("k{i}"), if i % 2 == 0 { "eu" } else { "us" })),
        )
        .unwrap();
    sim.set_sync_latency(Duration::from_micros(200));
    let db2 = db.clone();
    let ids2 = ids.clone();
    let outcomes = within(120, "commits racing checkpoints", move || {
        let db = &db2;
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let done = &done;
            s.spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    db.checkpoint().expect("checkpoint");
                }
            });
            let handles: Vec<_> = ids2
                .iter()
                .enumerate()
                .map(|(t, id)| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..60 {
                            let key = format!("t{t}-{i}");
                            // Contested values: every thread claims `shared-{i % 5}`.
                            let v = if i % 4 == 0 {
                                format!("shared-{}", i % 5)
                            } else {
                                format!("{key}@x")
                            };
                            let w = put(db, *id, &key, b"x", Some(&v));
                            out.push((*id, key, v, w.commit()));
                        }
                        out
                    })
                })
                .collect();
            let out: Vec<_> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            done.store(true, Ordering::SeqCst);
            out
        })
    });
    sim.set_sync_latency(Duration::ZERO);
    for (_, key, _, r) in &outcomes {
        assert!(
            matches!(
                r,
                Ok(()) | Err(Error::UniqueViolation { .. } | Error::Busy(_))
            ),
            "{key}: {r:?}"
        );
    }
    assert_clean(&db, "after the race");
    drop(db);
    sim.crash();
    let db = open(&sim);
    for (id, key, v, r) in &outcomes {
        assert_eq!(get(&db, *id, key).is_some(), r.is_ok(), "{key}: {r:?}");
        if r.is_ok() {
            assert_eq!(owner(&db, v), Some((*id, key.as_bytes().to_vec())), "{v}");
        }
    }
    assert_clean(&db, "after a power loss");
}

/// One run of two threads writing in eu and us at the same time (unique claims, some of
/// one contested value, moves and plain records) with a fault at storage operation `n`,
/// then a power loss and a reopen: every write acknowledged is there, every write refused
/// (any error but `OutcomeUnknown`) left nothing, the audit is clean. Returns whether the
/// fault fired.
fn concurrent_groups_with_fault(n: u64, fault: Fault) -> bool {
    let sim = SimStorage::new();
    let db = open(&sim);
    let e = db
        .create_accounts((0..2).map(|i| NewAccount::new(format!("e{i}"), "eu")))
        .unwrap();
    let u = db
        .create_accounts((0..2).map(|i| NewAccount::new(format!("u{i}"), "us")))
        .unwrap();
    // Records to move away from their values later.
    for (i, a) in e.iter().chain(&u).enumerate() {
        put(&db, *a, "old", b"old", Some(&format!("old-{i}@x")))
            .commit()
            .unwrap();
    }
    // The workload's first unique write in each region marks it dirty again (a synced
    // Reserve), and a checkpoint runs between its rounds: the global file is written.
    db.checkpoint().unwrap();
    match fault {
        Fault::Any(on) => sim.fail_after(n, on),
        Fault::File(file, on) => sim.fail_file_after(file(), n, on),
    }
    type Out = Vec<(AccountId, String, Option<String>, regionkv::Result<()>)>;
    let run = |db: &Db, accts: &[AccountId], tag: &str| -> Out {
        let mut out = Vec::new();
        for round in 0..3 {
            if round == 1 && tag == "e" {
                let _ = db.checkpoint();
            }
            let mut writes = Vec::new();
            let mut meta = Vec::new();
            for (j, a) in accts.iter().enumerate() {
                let key = format!("{tag}-{round}-{j}");
                let v = match (round + j) % 3 {
                    0 => Some("contested@x".to_string()),
                    1 => Some(format!("{key}@x")),
                    _ => None,
                };
                let Ok(mut w) = db.write(*a) else { continue };
                let buffered = match &v {
                    Some(v) => w.insert_unique(&T, key.as_str(), b"x", &[Unique::new("email", v)]),
                    None => w.insert(&T, key.as_str(), b"x"),
                };
                buffered.unwrap();
                writes.push(w);
                meta.push((*a, key, v));
            }
            for ((a, key, v), r) in meta.into_iter().zip(db.commit_each(writes)) {
                out.push((a, key, v, r));
            }
        }
        out
    };
    let outcomes: Out = std::thread::scope(|s| {
        let h1 = s.spawn(|| run(&db, &e, "e"));
        let h2 = s.spawn(|| run(&db, &u, "u"));
        let mut o = h1.join().unwrap();
        o.extend(h2.join().unwrap());
        o
    });
    let tripped = sim.fault_tripped();
    drop(db);
    sim.crash();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap_or_else(|err| panic!("fault {n}: reopen: {err}"));
    for (a, key, v, r) in &outcomes {
        let present = get(&db, *a, key).is_some();
        match r {
            Ok(()) => assert!(present, "fault {n}: {key} acknowledged and lost"),
            Err(Error::OutcomeUnknown { .. }) => {}
            Err(err) => assert!(!present, "fault {n}: {key} failed ({err}) and is there"),
        }
        if let Some(v) = v
            && present
        {
            assert_eq!(
                owner(&db, v),
                Some((*a, key.as_bytes().to_vec())),
                "fault {n}: {v}"
            );
        }
    }
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "fault {n}: {audit}");
    tripped
}

/// Where the fault of [`concurrent_groups_with_fault`] hits.
#[derive(Clone, Copy)]
enum Fault {
    /// Every file.
    Any(FaultOn),
    /// One file only (one volume dies, the others keep working).
    File(fn() -> std::path::PathBuf, FaultOn),
}

fn global_file() -> std::path::PathBuf {
    common::sim::sim_global(DIR)
}

fn eu_file() -> std::path::PathBuf {
    common::sim::sim_region(DIR, "eu")
}

#[test]
fn concurrent_groups_with_a_fault_at_every_storage_operation() {
    within(400, "faults during concurrent groups", || {
        for (what, fault, least) in [
            ("any file, any op", Fault::Any(FaultOn::Any), 10),
            ("any file, syncs", Fault::Any(FaultOn::Syncs), 3),
            ("global file", Fault::File(global_file, FaultOn::Any), 3),
            ("eu file", Fault::File(eu_file, FaultOn::Any), 3),
        ] {
            let mut n = 0;
            while concurrent_groups_with_fault(n, fault) && n < 400 {
                n += 1;
            }
            eprintln!("{what}: {n} fault points");
            assert!(n >= least, "{what}: only {n} storage operations");
        }
    });
}

/// A batch of 2,000 accounts' unique records (with empty parts), and a `commit_each` of 600
/// writes that all claim one value (one winner, the others the violation, after one
/// deferral round), in bounded time.
#[test]
fn huge_batch_and_huge_commit_each() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = db
        .create_accounts((0..2000).map(|i| NewAccount::new(format!("h{i}"), "eu")))
        .unwrap();
    let mut batch = db.batch_in("eu").unwrap();
    for (i, id) in ids.iter().enumerate() {
        let v = format!("h{i}@x");
        batch
            .write(*id)
            .unwrap()
            .insert_unique(&T, "k", b"x", &[Unique::new("email", &v)])
            .unwrap();
        // An empty part: nothing to write, nothing refused.
        let _ = batch.write(*id).unwrap().len();
    }
    let db2 = db.clone();
    within(120, "huge batch", move || batch.commit()).expect("batch");
    assert_eq!(owner(&db, "h1999@x"), Some((ids[1999], b"k".to_vec())));
    let writes: Vec<Write> = ids
        .iter()
        .take(600)
        .map(|id| put(&db, *id, "one", b"x", Some("the-one@x")))
        .collect();
    let out = within(120, "huge commit_each", move || db2.commit_each(writes));
    assert!(out[0].is_ok(), "{:?}", out[0]);
    assert!(
        out[1..]
            .iter()
            .all(|r| matches!(r, Err(Error::UniqueViolation { .. }))),
        "{:?}",
        out.iter()
            .find(|r| !matches!(r, Err(Error::UniqueViolation { .. })))
    );
    assert_clean(&db, "after the huge batch");
}

/// A store's writes racing for one value from 8 threads, with `disable_region` on the
/// other region and checkpoints: watchdog only (no deadlock), plus one owner per value.
#[test]
fn contested_value_racing_operator_calls() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids: Vec<AccountId> = db
        .create_accounts((0..8).map(|i| NewAccount::new(format!("r{i}"), "us").allow("eu")))
        .unwrap();
    sim.set_sync_latency(Duration::from_micros(200));
    let rounds = Arc::new(AtomicU64::new(0));
    let db2 = db.clone();
    let r2 = rounds.clone();
    within(120, "contested value with operator calls", move || {
        let db = &db2;
        for round in 0..15u64 {
            let v = format!("c-{round}@x");
            std::thread::scope(|s| {
                for (t, id) in ids.iter().enumerate() {
                    let v = &v;
                    s.spawn(move || {
                        let region = if t % 2 == 0 { "us" } else { "eu" };
                        let Ok(mut w) = db.write_in(*id, region) else {
                            return;
                        };
                        w.insert_unique(
                            &T,
                            format!("r{round}").as_str(),
                            b"x",
                            &[Unique::new("email", v)],
                        )
                        .unwrap();
                        let _ = w.commit();
                    });
                }
                if round == 7 {
                    s.spawn(|| db.disable_region("eu").unwrap());
                }
                s.spawn(|| {
                    let _ = db.checkpoint();
                });
            });
            r2.fetch_add(1, Ordering::SeqCst);
        }
    });
    sim.set_sync_latency(Duration::ZERO);
    assert_eq!(rounds.load(Ordering::SeqCst), 15);
    assert_clean(&db, "after the race");
}

/// `commit_each` with a write of another store, an empty write and a write to a region
/// disabled since it was built: each gets its own outcome, the others commit, nothing is
/// written into the wrong store.
#[test]
fn commit_each_with_foreign_empty_and_disabled_writes() {
    let sim1 = SimStorage::new();
    let sim2 = SimStorage::new();
    let db1 = open_at(&sim1, "/one");
    let db2 = open_at(&sim2, "/two");
    let a = acct(&db1, "a", NewAccount::new("a", "us").allow("eu"));
    let b = acct(&db2, "b", NewAccount::new("b", "us"));
    let foreign = put(&db2, b, "foreign", b"x", Some("f@x"));
    let empty = db1.write(a).unwrap();
    let mut to_eu = db1.write_in(a, "eu").unwrap();
    to_eu.insert(&T, "eu", b"x").unwrap();
    db1.disable_region("eu").unwrap();
    let out = db1.commit_each([
        foreign,
        empty,
        to_eu,
        put(&db1, a, "ok", b"x", Some("ok@x")),
    ]);
    assert!(matches!(out[0], Err(Error::InvalidArgument(_))), "{out:?}");
    assert!(out[1].is_ok(), "{out:?}");
    assert!(matches!(out[2], Err(Error::RegionDisabled(_))), "{out:?}");
    assert!(out[3].is_ok(), "{out:?}");
    assert_eq!(get(&db2, b, "foreign"), None);
    assert!(!db2.is_taken("email", "f@x").unwrap());
    assert!(!db1.is_taken("email", "f@x").unwrap());
    assert_eq!(owner(&db1, "ok@x"), Some((a, b"ok".to_vec())));
    assert_clean(&db1, "store 1");
    assert_clean(&db2, "store 2");
}
