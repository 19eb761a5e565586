//! Group commit: writes committed to one region at the same moment share one region
//! transaction, one Reserve, one fsync and one Confirm, and each keeps its own outcome
//! (`Db::commit_each`, concurrent `Write::commit`); a region batch (`Db::batch_in`) commits
//! writes of many accounts all or none. Sync counts come from the SimStorage backend, never
//! from timing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::sim::{quiet_builder, sim_global, sim_region};
use common::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};

const DIR: &str = "/group";

fn open(sim: &SimStorage) -> Db {
    quiet_builder(sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .expect("open")
}

fn accounts(db: &Db, n: usize, home: &str) -> Vec<AccountId> {
    db.create_accounts((0..n).map(|i| NewAccount::new(format!("{home}-{i}"), home)))
        .expect("create accounts")
}

/// A write of `a` in its home region: record `key` owning `email` value `v` (or a plain
/// record if `v` is `None`).
fn write(db: &Db, a: AccountId, key: &str, v: Option<&str>) -> regionkv::Write {
    let mut w = db.write(a).expect("write");
    match v {
        Some(v) => w
            .insert_unique(&T, key, b"rec", &[Unique::new("email", v)])
            .expect("buffer"),
        None => w.insert(&T, key, b"rec").expect("buffer"),
    }
    w
}

fn has(db: &Db, a: AccountId, key: &str) -> bool {
    db.read(a).unwrap().get(&T, key).unwrap().is_some()
}

fn owner(db: &Db, v: &str) -> Option<(AccountId, Vec<u8>)> {
    db.find_unique(&T, "email", v)
        .unwrap()
        .map(|h| (h.account(), h.key().to_vec()))
}

/// (syncs of the region file, syncs of the global file, bytes of each) now.
fn syncs(sim: &SimStorage, region: &str) -> [(u64, usize); 2] {
    let f = |p: std::path::PathBuf| (sim.syncs_of(&p), sim.live_bytes(&p).map_or(0, |b| b.len()));
    [f(sim_region(DIR, region)), f(sim_global(DIR))]
}

/// Syncs since `before`, less one per file that grew (redb syncs when it grows a file).
fn syncs_since(sim: &SimStorage, region: &str, before: [(u64, usize); 2]) -> [u64; 2] {
    let after = syncs(sim, region);
    let mut out = [0; 2];
    for i in 0..2 {
        let grew = (after[i].1 > before[i].1) as u64;
        out[i] = (after[i].0 - before[i].0).saturating_sub(grew);
    }
    out
}

#[test]
fn writes_committed_together_share_one_sync() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 10, "eu");
    // One unique write first: it marks eu dirty (a synced Reserve, once per checkpoint).
    db.commit_each([write(&db, ids[0], "first", Some("first@x"))])
        .into_iter()
        .for_each(|r| r.unwrap());
    let writes: Vec<_> = (0..40)
        .map(|i| {
            let v = format!("u{i}@x");
            write(
                &db,
                ids[i % 10],
                &format!("k{i}"),
                (i % 2 == 0).then_some(v.as_str()),
            )
        })
        .collect();
    let before = syncs(&sim, "eu");
    let outcomes = db.commit_each(writes);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let [region, global] = syncs_since(&sim, "eu", before);
    assert_eq!(region, 1, "40 writes in one group: one region sync");
    assert_eq!(global, 0, "Reserve and Confirm of the group are unsynced");
    for i in 0..40 {
        assert!(has(&db, ids[i % 10], &format!("k{i}")), "k{i}");
        if i % 2 == 0 {
            let o = owner(&db, &format!("u{i}@x"));
            assert_eq!(o, Some((ids[i % 10], format!("k{i}").into_bytes())), "u{i}");
        }
    }
    // After a power loss every write of the group is there (their commit was synced).
    sim.crash();
    drop(db);
    let db = open(&sim);
    for i in 0..40 {
        assert!(
            has(&db, ids[i % 10], &format!("k{i}")),
            "k{i} after power loss"
        );
    }
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn each_write_of_a_group_keeps_its_own_outcome() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 4, "eu");
    let limited = db
        .create_account(NewAccount::new("limited", "eu").max_records(1))
        .unwrap();
    db.commit_each([write(&db, ids[0], "owner", Some("taken@x"))])
        .into_iter()
        .for_each(|r| r.unwrap());
    db.commit_each([write(&db, limited, "only", None)])
        .into_iter()
        .for_each(|r| r.unwrap());
    // A stale read-modify-write: it read "owner" before another write changed it.
    let mut stale = db.write(ids[0]).unwrap();
    stale
        .update(&T, "owner", |_| Some(b"stale".to_vec()))
        .unwrap();
    let mut change = db.write(ids[0]).unwrap();
    change.insert(&T, "owner", b"changed").unwrap();
    change.commit().unwrap();

    let group = vec![
        write(&db, ids[1], "a", Some("a@x")),     // ok
        write(&db, ids[2], "b", Some("taken@x")), // taken by ids[0]
        stale,                                    // conflict
        write(&db, limited, "more", None),        // over its quota
        write(&db, ids[3], "c", None),            // ok
        write(&db, ids[2], "d", Some("d@x")),     // ok: its own value
    ];
    let out = db.commit_each(group);
    assert!(out[0].is_ok(), "{:?}", out[0]);
    match &out[1] {
        Err(Error::UniqueViolation { namespace, record }) => {
            assert_eq!(namespace, "email");
            assert_eq!(record.key, b"b");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
    assert!(
        matches!(out[2], Err(Error::Conflict { .. })),
        "{:?}",
        out[2]
    );
    assert!(
        matches!(out[3], Err(Error::QuotaExceeded { .. })),
        "{:?}",
        out[3]
    );
    assert!(out[4].is_ok() && out[5].is_ok(), "{out:?}");
    // What failed left nothing; what succeeded is there.
    assert!(has(&db, ids[1], "a") && has(&db, ids[3], "c") && has(&db, ids[2], "d"));
    assert!(!has(&db, ids[2], "b") && !has(&db, limited, "more"));
    let kept = db.read(ids[0]).unwrap().get(&T, "owner").unwrap().unwrap();
    assert_eq!(&kept[..], b"changed");
    assert_eq!(owner(&db, "taken@x"), Some((ids[0], b"owner".to_vec())));
    assert_eq!(owner(&db, "a@x"), Some((ids[1], b"a".to_vec())));
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn writes_on_one_value_in_one_group_apply_in_the_order_given() {
    // Serially: A claims v for k1; A moves k1 to another value (releasing v); B claims v.
    // In one group the second and third find v held by the first (in flight): they run in
    // later groups, and the outcome is the serial one.
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 2, "eu");
    let out = db.commit_each([
        write(&db, ids[0], "k1", Some("v@x")),
        write(&db, ids[0], "k1", Some("w@x")),
        write(&db, ids[1], "k2", Some("v@x")),
    ]);
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(owner(&db, "v@x"), Some((ids[1], b"k2".to_vec())));
    assert_eq!(owner(&db, "w@x"), Some((ids[0], b"k1".to_vec())));
    // Two claims of one value by two accounts: the first wins, as serially.
    let out = db.commit_each([
        write(&db, ids[0], "k3", Some("x@x")),
        write(&db, ids[1], "k4", Some("x@x")),
    ]);
    assert!(out[0].is_ok(), "{out:?}");
    assert!(
        matches!(out[1], Err(Error::UniqueViolation { .. })),
        "{out:?}"
    );
    assert_eq!(owner(&db, "x@x"), Some((ids[0], b"k3".to_vec())));
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn concurrent_writers_share_commits() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 8, "eu");
    // A disk whose flush takes a while: writers arriving during a sync form the next group.
    sim.set_sync_latency(Duration::from_millis(2));
    let before = syncs(&sim, "eu");
    let per_thread = 25;
    std::thread::scope(|s| {
        for (t, id) in ids.iter().enumerate() {
            let db = &db;
            s.spawn(move || {
                for i in 0..per_thread {
                    let v = format!("t{t}-{i}@x");
                    let w = write(db, *id, &format!("k{i}"), Some(&v));
                    w.commit().expect("commit");
                }
            });
        }
    });
    sim.set_sync_latency(Duration::ZERO);
    let writes = (ids.len() * per_thread) as u64;
    let [region, _] = syncs_since(&sim, "eu", before);
    eprintln!("{writes} concurrent writes: {region} region syncs");
    assert!(
        region < writes * 3 / 4,
        "{writes} concurrent writes took {region} region syncs: no group formed"
    );
    for (t, id) in ids.iter().enumerate() {
        for i in 0..per_thread {
            let v = format!("t{t}-{i}@x");
            assert_eq!(owner(&db, &v), Some((*id, format!("k{i}").into_bytes())));
        }
    }
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn concurrent_claims_of_one_value_have_one_winner() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 8, "eu");
    sim.set_sync_latency(Duration::from_millis(1));
    let db = Arc::new(db);
    for round in 0..10 {
        let v = format!("contested-{round}@x");
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let (db, v) = (&db, &v);
                    s.spawn(move || write(db, *id, &format!("r{round}"), Some(v)).commit())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..ids.len()).filter(|i| outcomes[*i].is_ok()).collect();
        assert!(winners.len() <= 1, "round {round}: {outcomes:?}");
        for (i, r) in outcomes.iter().enumerate() {
            match r {
                Ok(()) => assert!(has(&db, ids[i], &format!("r{round}"))),
                Err(Error::UniqueViolation { .. } | Error::Busy(_)) => {
                    assert!(!has(&db, ids[i], &format!("r{round}")))
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let o = owner(&db, &v);
        assert_eq!(
            o.map(|(a, _)| a),
            winners.first().map(|i| ids[*i]),
            "round {round}"
        );
    }
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn a_batch_is_one_sync_for_many_accounts() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 50, "eu");
    db.commit_each([write(&db, ids[0], "first", Some("first@x"))])
        .into_iter()
        .for_each(|r| r.unwrap());
    let mut batch = db.batch_in("eu").unwrap();
    for (i, id) in ids.iter().enumerate() {
        for j in 0..4 {
            let key = format!("k{j}");
            let v = format!("a{i}-{j}@x");
            batch
                .write(*id)
                .unwrap()
                .insert_unique(&T, key.as_str(), b"rec", &[Unique::new("email", &v)])
                .unwrap();
        }
    }
    assert_eq!(batch.len(), 200);
    let before = syncs(&sim, "eu");
    batch.commit().unwrap();
    let [region, global] = syncs_since(&sim, "eu", before);
    assert_eq!(
        (region, global),
        (1, 0),
        "a batch of 200 records in 50 accounts"
    );
    sim.crash();
    drop(db);
    let db = open(&sim);
    for (i, id) in ids.iter().enumerate() {
        for j in 0..4 {
            let v = format!("a{i}-{j}@x");
            assert_eq!(owner(&db, &v), Some((*id, format!("k{j}").into_bytes())));
        }
    }
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn a_batch_is_all_or_none() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 3, "eu");
    let us = accounts(&db, 1, "us");
    db.commit_each([write(&db, ids[0], "owner", Some("taken@x"))])
        .into_iter()
        .for_each(|r| r.unwrap());
    let snapshot_before = |db: &Db| {
        (0..3)
            .map(|i| has(db, ids[i], "new"))
            .chain([db.is_taken("email", "n1@x").unwrap()])
            .collect::<Vec<_>>()
    };
    let fill = |batch: &mut regionkv::Batch, last: &str| {
        batch
            .write(ids[1])
            .unwrap()
            .insert_unique(&T, "new", b"rec", &[Unique::new("email", "n1@x")])
            .unwrap();
        batch
            .write(ids[2])
            .unwrap()
            .insert_unique(&T, "new", b"rec", &[Unique::new("email", last)])
            .unwrap();
    };
    // One part collides with a committed record: the whole batch is refused.
    let mut batch = db.batch_in("eu").unwrap();
    fill(&mut batch, "taken@x");
    match batch.commit() {
        Err(Error::UniqueViolation { record, .. }) => assert_eq!(record.key, b"new"),
        other => panic!("expected a violation, got {other:?}"),
    }
    assert_eq!(snapshot_before(&db), vec![false; 4]);
    // Two parts claim one value: refused as a duplicate.
    let mut batch = db.batch_in("eu").unwrap();
    fill(&mut batch, "n1@x");
    assert!(matches!(
        batch.commit(),
        Err(Error::DuplicateInWrite { .. })
    ));
    assert_eq!(snapshot_before(&db), vec![false; 4]);
    // A part whose account may not live in the region: refused when the part is opened.
    let mut batch = db.batch_in("eu").unwrap();
    assert!(matches!(
        batch.write(us[0]),
        Err(Error::PlacementDenied { .. })
    ));
    assert!(matches!(db.batch_in("mars"), Err(Error::RegionUnknown(_))));
    // Without the collision it commits, all of it.
    let mut batch = db.batch_in("eu").unwrap();
    fill(&mut batch, "n2@x");
    batch.commit().unwrap();
    assert_eq!(snapshot_before(&db), vec![false, true, true, true]);
    assert!(db.audit().unwrap().is_clean());
}

#[test]
fn a_batch_respects_quotas_across_its_parts() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = db
        .create_account(NewAccount::new("q", "eu").max_records(3))
        .unwrap();
    let b = accounts(&db, 1, "eu")[0];
    let mut batch = db.batch_in("eu").unwrap();
    for k in ["1", "2", "3", "4"] {
        batch.write(a).unwrap().insert(&T, k, b"x").unwrap();
    }
    batch.write(b).unwrap().insert(&T, "b", b"x").unwrap();
    assert!(matches!(batch.commit(), Err(Error::QuotaExceeded { .. })));
    assert!(!has(&db, b, "b") && !has(&db, a, "1"));
    // The refused batch gave its reservation back: three records still fit.
    let mut batch = db.batch_in("eu").unwrap();
    for k in ["1", "2", "3"] {
        batch.write(a).unwrap().insert(&T, k, b"x").unwrap();
    }
    batch.commit().unwrap();
    assert!(has(&db, a, "3"));
}

/// Batch of 3 accounts' unique records, with a fault at storage operation `n`, then a
/// power loss: after reopening the batch is there entirely or not at all, and the store
/// audits clean. Returns whether the fault fired.
fn batch_with_fault(n: u64, on: FaultOn) -> bool {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 3, "eu");
    db.commit_each([write(&db, ids[0], "old", Some("old@x"))])
        .into_iter()
        .for_each(|r| r.unwrap());
    let mut batch = db.batch_in("eu").unwrap();
    for (i, id) in ids.iter().enumerate() {
        let v = format!("b{i}@x");
        batch
            .write(*id)
            .unwrap()
            .insert_unique(&T, "new", b"rec", &[Unique::new("email", &v)])
            .unwrap();
    }
    // Account 0 also moves its old record's value away (a release in the batch).
    batch
        .write(ids[0])
        .unwrap()
        .insert_unique(&T, "old", b"rec", &[])
        .unwrap();
    sim.fail_after(n, on);
    let r = batch.commit();
    let tripped = sim.fault_tripped();
    if !tripped {
        r.as_ref().expect("no fault, no error");
    }
    sim.crash();
    drop(db);
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap_or_else(|e| panic!("reopen after fault {n}: {e}"));
    let present: Vec<bool> = ids.iter().map(|id| has(&db, *id, "new")).collect();
    let all = present.iter().all(|p| *p);
    assert!(
        all || present.iter().all(|p| !*p),
        "fault {n}: part of a batch: {present:?}"
    );
    if r.is_ok() {
        assert!(all, "fault {n}: the batch returned Ok and is not there");
    } else if !matches!(r, Err(Error::OutcomeUnknown { .. })) {
        assert!(!all, "fault {n}: the batch failed ({r:?}) and is there");
    }
    for (i, id) in ids.iter().enumerate() {
        let o = owner(&db, &format!("b{i}@x"));
        assert_eq!(o, all.then(|| (*id, b"new".to_vec())), "fault {n}: b{i}");
    }
    assert_eq!(
        db.is_taken("email", "old@x").unwrap(),
        !all,
        "fault {n}: old value"
    );
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "fault {n}: {audit}");
    tripped
}

#[test]
fn a_batch_is_all_or_none_across_a_crash_at_every_storage_operation() {
    // Any operation: the batch's Reserve, its region commit, its Confirm, the reopen.
    for (on, least) in [(FaultOn::Any, 10), (FaultOn::Syncs, 1)] {
        let mut n = 0;
        while batch_with_fault(n, on) {
            n += 1;
        }
        eprintln!("batch, {on:?}: {n} fault points");
        assert!(n >= least, "{on:?}: only {n} storage operations");
    }
}

/// One write of the differential test below: account `acct` (of 3; account 0 may hold
/// at most 2 records) does one thing to record `key` (of 2: writes often meet).
#[derive(Debug, Clone)]
enum Spec {
    Put {
        acct: usize,
        key: u8,
        val: u8,
    },
    Claim {
        acct: usize,
        key: u8,
        val: u8,
        value: u8,
    },
    Remove {
        acct: usize,
        key: u8,
    },
    /// Reads the record (at the write's own snapshot) and writes it back changed.
    Bump {
        acct: usize,
        key: u8,
    },
}

fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
    use proptest::prelude::*;
    prop_oneof![
        (0..3usize, 0..2u8, any::<u8>()).prop_map(|(acct, key, val)| Spec::Put { acct, key, val }),
        (0..3usize, 0..2u8, any::<u8>(), 0..3u8).prop_map(|(acct, key, val, value)| Spec::Claim {
            acct,
            key,
            val,
            value
        }),
        (0..3usize, 0..2u8).prop_map(|(acct, key)| Spec::Remove { acct, key }),
        (0..3usize, 0..2u8).prop_map(|(acct, key)| Spec::Bump { acct, key }),
    ]
}

fn build(db: &Db, ids: &[AccountId], s: &Spec) -> regionkv::Result<regionkv::Write> {
    let (acct, key) = match s {
        Spec::Put { acct, key, .. }
        | Spec::Claim { acct, key, .. }
        | Spec::Remove { acct, key }
        | Spec::Bump { acct, key } => (*acct, [*key]),
    };
    let mut w = db.write(ids[acct])?;
    match s {
        Spec::Put { val, .. } => w.insert(&T, key, &[*val])?,
        Spec::Claim { val, value, .. } => {
            let v = format!("shared{value}@x");
            w.insert_unique(&T, key, &[*val], &[Unique::new("email", &v)])?
        }
        Spec::Remove { .. } => w.remove(&T, key)?,
        Spec::Bump { .. } => {
            w.update(&T, key, |old| {
                Some(vec![old.map_or(0, |r| r[0].wrapping_add(1))])
            })?;
        }
    }
    Ok(w)
}

/// The outcome class of a commit, for comparing two stores.
fn class(r: &regionkv::Result<()>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("?")
            .to_owned(),
    }
}

/// Everything a store holds for the differential test: every record of every account,
/// and the owner of every value.
fn contents(db: &Db, ids: &[AccountId]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for row in db.read(*id).unwrap().scan(&T).unwrap() {
            let row = row.unwrap();
            out.push(format!("{i} {:?} {:?}", row.key(), &row.record()[..]));
        }
    }
    for v in 0..3 {
        let o = db
            .find_unique(&T, "email", format!("shared{v}@x"))
            .unwrap()
            .map(|h| (ids.iter().position(|x| *x == h.account()), h.key().to_vec()));
        out.push(format!("shared{v}: {o:?}"));
    }
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Group commit is serial commit: the same writes, built the same way, committed
    /// through `commit_each` (groups, deferrals, quotas counted across the group) on one
    /// store and one by one on another, give the same outcome for each write and the same
    /// contents (records and owners) after every group.
    #[test]
    fn commit_each_equals_committing_one_by_one(
        groups in proptest::collection::vec(proptest::collection::vec(spec(), 1..8), 1..10)
    ) {
        let (sa, sb) = (SimStorage::new(), SimStorage::new());
        let (a, b) = (open(&sa), open(&sb));
        let make = |db: &Db| {
            db.create_accounts([
                NewAccount::new("q", "eu").max_records(2),
                NewAccount::new("r", "eu"),
                NewAccount::new("s", "eu"),
            ])
            .unwrap()
        };
        let (ia, ib) = (make(&a), make(&b));
        for (g, group) in groups.iter().enumerate() {
            let built_a: Vec<_> = group.iter().map(|s| build(&a, &ia, s)).collect();
            let built_b: Vec<_> = group.iter().map(|s| build(&b, &ib, s)).collect();
            let mut got_a = vec![None; group.len()];
            let mut writes = Vec::new();
            let mut slots = Vec::new();
            for (i, w) in built_a.into_iter().enumerate() {
                match w {
                    Ok(w) => { writes.push(w); slots.push(i); }
                    Err(e) => got_a[i] = Some(class(&Err(e))),
                }
            }
            for (i, r) in slots.into_iter().zip(a.commit_each(writes)) {
                got_a[i] = Some(class(&r));
            }
            let got_b: Vec<_> = built_b
                .into_iter()
                .map(|w| Some(class(&w.and_then(|w| w.commit()))))
                .collect();
            proptest::prop_assert_eq!(&got_a, &got_b, "group {} {:?}", g, group);
            proptest::prop_assert_eq!(contents(&a, &ia), contents(&b, &ib), "after group {}", g);
        }
        proptest::prop_assert!(a.audit().unwrap().is_clean());
    }
}

#[test]
fn a_table_created_in_a_group_gets_its_schema_row_even_if_the_first_write_is_refused() {
    // Schema checks are shared by the writes of a group once a write is staged; a write
    // refused after its check must not leave the next write of the table unregistered.
    const FRESH: regionkv::Table<regionkv::Raw> = regionkv::Table::new("fresh");
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = accounts(&db, 2, "eu");
    db.commit_each([write(&db, ids[0], "owner", Some("taken@x"))])
        .into_iter()
        .for_each(|r| r.unwrap());
    let mut refused = db.write(ids[1]).unwrap();
    refused
        .insert_unique(&FRESH, "a", b"x", &[Unique::new("email", "taken@x")])
        .unwrap();
    let mut second = db.write(ids[1]).unwrap();
    second.insert(&FRESH, "b", b"y").unwrap();
    let mut third = db.write(ids[0]).unwrap();
    third.insert(&FRESH, "c", b"z").unwrap();
    let out = db.commit_each([refused, second, third]);
    assert!(
        matches!(out[0], Err(Error::UniqueViolation { .. })),
        "{out:?}"
    );
    assert!(out[1].is_ok() && out[2].is_ok(), "{out:?}");
    drop(db);
    let db = open(&sim);
    assert_eq!(
        &*db.read(ids[1]).unwrap().get(&FRESH, "b").unwrap().unwrap(),
        b"y"
    );
    // The table's schema is recorded: another type is a mismatch, not unknown bytes.
    const AS_OTHER: regionkv::Table<String> = regionkv::Table::new("fresh");
    assert!(matches!(
        db.read(ids[0]).unwrap().get(&AS_OTHER, "c"),
        Err(Error::SchemaMismatch { .. })
    ));
    assert!(db.audit().unwrap().is_clean());
}

/// The checkpoint budget counts region commits (a batch of many accounts is one), with a
/// bound of 16 markers per commit of the budget: a batch larger than the budget does not
/// checkpoint by itself, `every` commits do, and so do `16 × every` markers.
#[test]
fn the_checkpoint_budget_counts_commits_and_bounds_markers() {
    let sim = SimStorage::new();
    let db = Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(3, Duration::from_secs(3600))
        .region("us")
        .region("eu")
        .open(DIR)
        .expect("open");
    let ids = accounts(&db, 60, "eu");
    let batch_of = |from: usize, to: usize, tag: &str| {
        let mut batch = db.batch_in("eu").unwrap();
        for (i, id) in ids[from..to].iter().enumerate() {
            let v = format!("{tag}-{i}@x");
            batch
                .write(*id)
                .unwrap()
                .insert_unique(&T, tag, b"rec", &[Unique::new("email", &v)])
                .unwrap();
        }
        batch
    };
    // 10 parts, more than the budget of 3, in one commit: no checkpoint.
    batch_of(0, 10, "a").commit().unwrap();
    assert_eq!(
        db.stats().txns_since_checkpoint,
        10,
        "one commit of 10 markers"
    );
    batch_of(0, 10, "b").commit().unwrap();
    assert_eq!(db.stats().txns_since_checkpoint, 20, "two commits");
    // The third commit spends the budget of 3 commits: checkpointed.
    batch_of(0, 1, "c").commit().unwrap();
    assert_eq!(
        db.stats().txns_since_checkpoint,
        0,
        "three commits checkpoint"
    );
    assert_eq!(db.stats().txns_live, 0, "markers collected");
    // 48 markers (16 × 3) in one commit checkpoint too.
    batch_of(0, 47, "d").commit().unwrap();
    assert_eq!(
        db.stats().txns_since_checkpoint,
        47,
        "under the marker bound"
    );
    // Two commits only, but 48 markers: checkpointed.
    batch_of(0, 1, "e").commit().unwrap();
    assert_eq!(
        db.stats().txns_since_checkpoint,
        0,
        "two commits, 48 markers"
    );
    batch_of(0, 48, "f").commit().unwrap();
    assert_eq!(
        db.stats().txns_since_checkpoint,
        0,
        "48 markers in one commit"
    );
    sim.crash();
    drop(db);
    let db = open(&sim);
    for tag in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(
            owner(&db, &format!("{tag}-0@x")),
            Some((ids[0], tag.as_bytes().to_vec()))
        );
    }
    assert!(db.audit().unwrap().is_clean());
}

/// `Db::commit_batches`: batches of two regions commit together, each all or none in its
/// region with one sync of its file; a refused batch leaves the other region's committed;
/// a region's batches commit in the order given; a batch of another store is refused.
#[test]
fn commit_batches_commits_regions_together_each_all_or_none() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let eu = accounts(&db, 20, "eu");
    let us = accounts(&db, 20, "us");
    let batch = |region: &str, ids: &[AccountId], tag: &str| {
        let mut b = db.batch_in(region).unwrap();
        for (i, id) in ids.iter().enumerate() {
            let v = format!("{tag}-{i}@x");
            b.write(*id)
                .unwrap()
                .insert_unique(&T, tag, b"rec", &[Unique::new("email", &v)])
                .unwrap();
        }
        b
    };
    let (eu0, us0) = (syncs(&sim, "eu"), syncs(&sim, "us"));
    let out = db.commit_batches([batch("eu", &eu, "a"), batch("us", &us, "b")]);
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(syncs_since(&sim, "eu", eu0)[0], 1, "one sync of eu");
    assert_eq!(syncs_since(&sim, "us", us0)[0], 1, "one sync of us");
    // The us batch claims a value eu owns: refused whole; the eu batch commits.
    let mut bad = batch("us", &us, "c");
    bad.write(us[0])
        .unwrap()
        .insert_unique(&T, "dup", b"rec", &[Unique::new("email", "a-3@x")])
        .unwrap();
    let out = db.commit_batches([bad, batch("eu", &eu, "d")]);
    assert!(
        matches!(out[0], Err(Error::UniqueViolation { .. })),
        "{:?}",
        out[0]
    );
    assert!(out[1].is_ok(), "{:?}", out[1]);
    assert!(
        owner(&db, "c-1@x").is_none(),
        "nothing of the refused batch"
    );
    assert_eq!(owner(&db, "d-1@x"), Some((eu[1], b"d".to_vec())));
    // Two batches of one region, in order: the first releases a value, the second claims it.
    let mut release = db.batch_in("eu").unwrap();
    release.write(eu[5]).unwrap().remove(&T, "a").unwrap();
    let mut claim = db.batch_in("eu").unwrap();
    claim
        .write(eu[6])
        .unwrap()
        .insert_unique(&T, "moved", b"rec", &[Unique::new("email", "a-5@x")])
        .unwrap();
    let out = db.commit_batches([release, batch("us", &us, "e"), claim]);
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(owner(&db, "a-5@x"), Some((eu[6], b"moved".to_vec())));
    // A batch of another store.
    let other_sim = SimStorage::new();
    let other = open(&other_sim);
    let o = accounts(&other, 1, "eu");
    let mut foreign = other.batch_in("eu").unwrap();
    foreign
        .write(o[0])
        .unwrap()
        .insert(&T, "x", b"rec")
        .unwrap();
    let out = db.commit_batches([foreign]);
    assert!(
        matches!(out[0], Err(Error::InvalidArgument(_))),
        "{:?}",
        out[0]
    );
    assert!(
        !has(&other, o[0], "x"),
        "nothing written to the other store"
    );
    sim.crash();
    drop(db);
    let db = open(&sim);
    for (tag, region_ids) in [("a", &eu), ("b", &us), ("d", &eu), ("e", &us)] {
        assert_eq!(
            owner(&db, &format!("{tag}-9@x")),
            Some((region_ids[9], tag.as_bytes().to_vec()))
        );
    }
    assert_eq!(owner(&db, "a-5@x"), Some((eu[6], b"moved".to_vec())));
    assert!(owner(&db, "c-0@x").is_none());
    assert!(db.audit().unwrap().is_clean());
}
