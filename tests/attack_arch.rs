//! Adversarial review of the architecture pass (open plan/apply split, recovery phases,
//! typed unique index, catalog module): attempts to break I1–I5, record quotas and "a
//! refused open changes no file" through the public API, with `SimStorage` for crashes,
//! faults and restored volumes.
//!
//! Tests marked `// guard: passes` held on the code under review; the others fail on it
//! (each says the invariant, the scenario, and what was expected vs seen).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::T;
use common::sim::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};

const DIR: &str = "/attack";

/// Every file of `sim`: path -> live bytes.
fn files(sim: &SimStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    sim.paths()
        .into_iter()
        .filter_map(|p| sim.live_bytes(&p).map(|b| (p, b)))
        .collect()
}

fn changed(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => out.push(format!("removed {}", p.display())),
            Some(a) if a != b => out.push(format!("modified {}", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            out.push(format!("created {}", p.display()));
        }
    }
    out
}

/// Rewrites a partition's bytes through redb itself (a real temporary file).
fn edit_with_redb(bytes: &[u8], edit: impl FnOnce(&redb::Database)) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.redb");
    std::fs::write(&p, bytes).unwrap();
    {
        let db = redb::Database::open(&p).unwrap();
        edit(&db);
    }
    std::fs::read(&p).unwrap()
}

fn count(db: &Db, a: AccountId) -> usize {
    db.read(a)
        .unwrap()
        .scan(&T)
        .unwrap()
        .filter(|r| r.is_ok())
        .count()
}

// ======================================================================================
// Quotas: a region disabled at open freezes its counts from whatever file is at its path
// ======================================================================================

/// Quota (`NewAccount::max_records` across regions, including disabled ones).
///
/// Scenario: eu's volume is restored from an older backup (fewer records of account `a`,
/// max_records 3). Opening with eu enabled is refused as stale, and the error says "Put
/// the newer file back, or disable the region". The operator disables eu at open: the plan
/// freezes eu's record counts from the *stale* file (0 records of `a` instead of 2), so `a`
/// may add 3 records in us. When the newer eu file is put back and eu enabled again, `a`
/// holds 5 records against a limit of 3.
///
/// Expected: the frozen counts of a file older than the index (`last_txn` below
/// `_region_seen`) are unknown (a limited account allowed there cannot grow), or at least
/// never lower than what the region durably holds; `a` never exceeds 3 records.
/// Seen (current code): the third us write succeeds and `a` ends with 5 records.
#[test]
fn stale_file_disabled_at_open_freezes_too_low_counts_and_breaks_the_quota() {
    let sim = SimStorage::new();
    let both = || quiet_builder(&sim).region("us").region("eu");
    let db = both().open(DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(3))
        .unwrap();
    db.close().unwrap();
    // The operator's backup of eu: no record of `a` yet.
    let backup = sim.live_bytes(sim_region(DIR, "eu")).unwrap();

    let db = both().open(DIR).unwrap();
    claim(&db, a, "eu", b"e0", "e0@x").unwrap();
    claim(&db, a, "eu", b"e1", "e1@x").unwrap();
    db.close().unwrap(); // checkpoint: the index has seen eu's last unique write
    let newer = sim.live_bytes(sim_region(DIR, "eu")).unwrap();

    // The volume is restored from the backup.
    sim.set_bytes(sim_region(DIR, "eu"), backup);
    let refused = both().open(DIR);
    assert!(
        matches!(
            refused,
            Err(Error::PartitionMismatch { .. }) | Err(Error::Config(_))
        ),
        "stale eu must be refused, got {:?}",
        refused.as_ref().map(|_| ())
    );
    drop(refused);
    // "...or disable the region".
    let db = quiet_builder(&sim)
        .region("us")
        .disable_region("eu")
        .open(DIR)
        .unwrap();
    let mut added = 0;
    for k in [b"u0", b"u1", b"u2"] {
        if put(&db, a, "us", k).is_ok() {
            added += 1;
        }
    }
    db.close().unwrap();

    // The newer file is found and put back; eu is enabled again.
    sim.set_bytes(sim_region(DIR, "eu"), newer);
    let db = both().open(DIR).unwrap();
    let total = count(&db, a);
    assert!(
        total <= 3,
        "account a (max_records 3) holds {total} records: eu's counts were frozen from the \
         stale file while eu was disabled, and {added} records were added in us"
    );
}

// ======================================================================================
// A refused open changes no file: refusals that come from recovery, after apply wrote
// ======================================================================================

/// "A refused open leaves every byte as it was" (docs/design.md, "Opening").
///
/// Scenario: a region file holds an applied marker that does not decode (a hostile or
/// damaged file whose pages are valid: the probe and its checksums pass; markers are only
/// decoded by recovery). The open also adds a new region `ap`. The plan accepts everything;
/// apply reserves ap's id, creates ap's file and commits the new catalog; then recovery
/// refuses the open with `Error::Corrupt` ("undecodable applied marker").
///
/// Expected: refused before the first write — no file created or modified; the store still
/// opens with its previous configuration (us only).
/// Seen (current code): `regions/ap.redb` is created and `global.redb` modified; the old
/// configuration is refused afterwards ("region `ap` is in the store's catalog but not
/// configured").
#[test]
fn undecodable_marker_refuses_the_open_only_after_apply_changed_the_store() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim).region("us").open(DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    claim(&db, a, "us", b"k", "v@x").unwrap();
    db.close().unwrap();
    // Plant a marker row that does not decode, through redb (valid pages and checksums).
    let us = sim_region(DIR, "us");
    let bytes = edit_with_redb(&sim.live_bytes(&us).unwrap(), |db| {
        let w = db.begin_write().unwrap();
        {
            let mut t = w
                .open_table(redb::TableDefinition::<u128, &[u8]>::new("_markers"))
                .unwrap();
            t.insert(u128::MAX, b"\xff\xff".as_slice()).unwrap();
        }
        w.commit().unwrap();
    });
    sim.set_bytes(&us, bytes);

    let before = files(&sim);
    let r = quiet_builder(&sim).region("us").region("ap").open(DIR);
    let err = match r {
        Ok(_) => panic!("an undecodable marker must refuse the open"),
        Err(e) => e,
    };
    let diff = changed(&before, &files(&sim));
    let old_config = quiet_builder(&sim).region("us").open(DIR).map(|_| ());
    assert!(
        diff.is_empty(),
        "the open was refused ({err}) but changed the store: {diff:?}; the previous \
         configuration now opens with {old_config:?}"
    );
}

// ======================================================================================
// Guards: the refactored paths (recovery phases, forfeit, typed index) on sequences the
// suite does not cover as such.
// ======================================================================================

// guard: passes
/// I1/I3: a release whose region commit fails before writing (outcome unknown), made
/// durable in the global file by a later synced commit (create_account), then a power
/// loss and a reopen with that region disabled: the Releasing entry stays in flight (the
/// value is held, not free, not claimable); a forfeit restores the committed owner; when
/// the region returns, exactly one record owns the value and the audit is clean.
#[test]
fn releasing_entry_left_in_flight_in_a_disabled_region_then_forfeit_then_return() {
    let sim = SimStorage::new();
    let all = || quiet_builder(&sim).region("us").region("eu");
    let db = all().open(DIR).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "eu", b"e1", "v@x").unwrap();
    db.checkpoint().unwrap();
    // Release v: eu's file dies before the region commit writes anything.
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Any);
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e1", b"y", &[]).unwrap();
    let r = w.commit();
    assert!(r.is_err(), "{r:?}");
    sim.clear_fault();
    // A synced global commit makes the Releasing entry durable.
    db.create_account(NewAccount::new("w", "us")).unwrap();
    sim.crash();
    drop(db);

    let db = quiet_builder(&sim)
        .region("us")
        .disable_region("eu")
        .open(DIR)
        .unwrap();
    assert!(db.is_taken("email", "v@x").unwrap());
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let r = w.commit();
    assert!(
        matches!(
            r,
            Err(Error::RegionUnsettled(_)) | Err(Error::UniqueViolation { .. })
        ),
        "{r:?}"
    );
    db.forfeit_unsettled("eu").unwrap();
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let r = w.commit();
    assert!(matches!(r, Err(Error::UniqueViolation { .. })), "{r:?}");
    db.close().unwrap();

    let db = all().open(DIR).unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), e);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

// guard: passes
/// I1/I2 with tombstones and a disabled region: eu releases v (confirmed, unsynced), us
/// claims v, power loss; reopen with eu disabled (unsettled: its release marker cannot be
/// seen). us's claim marker is replayed; tombstones are kept; checkpoints while eu is
/// disabled; eu returns: one owner (us), audit clean.
#[test]
fn release_in_disabled_region_then_claim_elsewhere_then_power_loss_and_return() {
    let sim = SimStorage::new();
    let all = || quiet_builder(&sim).region("us").region("eu");
    let db = all().open(DIR).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "eu", b"e1", "v@x").unwrap();
    db.checkpoint().unwrap();
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e1", b"y", &[]).unwrap();
    w.commit().unwrap();
    claim(&db, u, "us", b"u1", "v@x").unwrap();
    sim.crash();
    drop(db);

    let db = quiet_builder(&sim)
        .region("us")
        .disable_region("eu")
        .open(DIR)
        .unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), u);
    drop(hit); // it holds us's snapshot (and file) open
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = all().open(DIR).unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), u);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

// guard: passes
/// Quota: a region disabled at run time freezes its counts; a power loss (no clean close)
/// and a reopen with it still disabled keep them; the limit holds across both regions and
/// after eu returns.
#[test]
fn runtime_disable_counts_survive_power_loss_and_hold_the_quota() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(3))
        .unwrap();
    put(&db, a, "eu", b"e0").unwrap();
    put(&db, a, "eu", b"e1").unwrap();
    db.disable_region("eu").unwrap();
    put(&db, a, "us", b"u0").unwrap();
    assert!(matches!(
        put(&db, a, "us", b"u1"),
        Err(Error::QuotaExceeded { .. })
    ));
    sim.crash();
    drop(db);
    let db = quiet_builder(&sim)
        .region("us")
        .disable_region("eu")
        .open(DIR)
        .unwrap();
    assert!(matches!(
        put(&db, a, "us", b"u1"),
        Err(Error::QuotaExceeded { .. })
    ));
    db.close().unwrap();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    assert_eq!(count(&db, a), 3);
}

// guard: passes
/// A refused open changes nothing, after a power loss left files a redb open would repair:
/// refusals decided late in the plan (default region disabled, a digest key that differs).
#[test]
fn late_plan_refusals_after_power_loss_change_nothing() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    claim(&db, a, "us", b"k", "v@x").unwrap();
    claim(&db, a, "us", b"k2", "w@x").unwrap();
    sim.crash();
    drop(db);
    let before = files(&sim);
    let r = quiet_builder(&sim)
        .region("eu")
        .disable_region("us")
        .open(DIR)
        .map(|_| ());
    assert!(r.is_err(), "{r:?}");
    let r = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .digest_key([7; 32])
        .open(DIR)
        .map(|_| ());
    assert!(r.is_err(), "{r:?}");
    assert_eq!(changed(&before, &files(&sim)), Vec::<String>::new());
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    assert!(db.is_taken("email", "w@x").unwrap());
}

// ======================================================================================
// The registry of open stores: a record outlives its store
// ======================================================================================

/// "A second open of the same store in one process is refused whatever the backend does"
/// and "a refused open leaves every byte as it was" (docs/design.md, "Opening", steps 3
/// and the refusal rule; `Db::close`: "until then, opening the store again in this
/// process is refused").
///
/// Scenario: a `Hit` from `find_unique` (it holds its region's snapshot, hence the region
/// file) outlives `Db::close` and the last `Db` clone. The registry entry lives in `Inner`
/// and is released with it, so the plan lets a second open through; only the backend
/// stops it, in apply, after the global file was opened read-write (`SimStorage` models a
/// file lock: `Io { WouldBlock }`). A backend without locks would get two live redb
/// databases on one file.
///
/// Expected: `Error::Config` ("already open in this process") from the plan, nothing
/// touched. Seen (current code): the open passes the plan and fails in apply with
/// `Error::Io` (eu.redb "already open for writing"), after it modified `global.redb` and
/// `regions/us.redb` (opened read-write by apply step 1).
#[test]
fn a_record_that_outlives_its_store_lets_a_second_open_past_the_registry() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    claim(&db, a, "eu", b"k", "v@x").unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    db.close().unwrap();
    let before = files(&sim);
    let r = quiet_builder(&sim).region("us").region("eu").open(DIR);
    let diff = changed(&before, &files(&sim));
    let what = format!("{:?}", r.as_ref().map(|_| ()));
    drop(r);
    assert_eq!(hit.record().payload(), b"x");
    assert!(
        what.contains("Config") && diff.is_empty(),
        "second open while eu's file is still held by a record: {what}; files changed: {diff:?}"
    );
}

// ======================================================================================
// The class behind the undecodable marker: every table recovery and the open's last steps
// read is checked in phase 1, so damage in any of them refuses the open before a write.
// ======================================================================================

/// Replaces table `name` by one of another type holding one row.
fn retype(db: &redb::Database, name: &str) {
    let w = db.begin_write().unwrap();
    w.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name))
        .ok();
    w.delete_table(redb::TableDefinition::<u128, &[u8]>::new(name))
        .ok();
    {
        let mut t = w
            .open_table(redb::TableDefinition::<&str, &str>::new(name))
            .unwrap();
        t.insert("wrong", "type").unwrap();
    }
    w.commit().unwrap();
}

/// Writes garbage over every entry of the global unique index.
fn garble_entries(db: &redb::Database) {
    let w = db.begin_write().unwrap();
    {
        let def = redb::TableDefinition::<&[u8], &[u8]>::new("_unique");
        let mut t = w.open_table(def).unwrap();
        let keys: Vec<Vec<u8>> = redb::ReadableTable::iter(&t)
            .unwrap()
            .map(|r| r.unwrap().0.value().to_vec())
            .collect();
        assert!(!keys.is_empty(), "the scenario needs index entries");
        for k in keys {
            t.insert(k.as_slice(), b"\x09\x09".as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
}

#[test]
fn damage_in_any_table_recovery_reads_refuses_the_open_before_any_write() {
    type Edit = fn(&redb::Database);
    let cases: &[(&str, &str, Edit)] = &[
        ("undecodable marker", "us", |db| {
            let w = db.begin_write().unwrap();
            {
                let def = redb::TableDefinition::<u128, &[u8]>::new("_markers");
                let mut t = w.open_table(def).unwrap();
                t.insert(u128::MAX, b"\xff\xff".as_slice()).unwrap();
            }
            w.commit().unwrap();
        }),
        (
            "entries the markers and in-flight rows name",
            "global",
            garble_entries,
        ),
        ("_markers of another type", "us", |db| {
            retype(db, "_markers")
        }),
        ("_usage of another type", "us", |db| retype(db, "_usage")),
        ("_unique of another type", "global", |db| {
            retype(db, "_unique")
        }),
        ("_inflight of another type", "global", |db| {
            retype(db, "_inflight")
        }),
        ("_tombstones of another type", "global", |db| {
            retype(db, "_tombstones")
        }),
        ("_dirty of another type", "global", |db| {
            retype(db, "_dirty")
        }),
    ];
    let mut failures = Vec::new();
    for (case, file, edit) in cases {
        let sim = SimStorage::new();
        let db = quiet_builder(&sim).region("us").open(DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        claim(&db, a, "us", b"k0", "v0@x").unwrap();
        db.checkpoint().unwrap();
        claim(&db, a, "us", b"k1", "v1@x").unwrap(); // a marker, a dirty row
        let mut w = db.write(a).unwrap();
        w.remove(&T, b"k0").unwrap(); // a release: a tombstone after Confirm
        w.commit().unwrap();
        sim.crash(); // the markers stay; the unsynced Confirms are gone
        drop(db);
        let path = if *file == "global" {
            sim_global(DIR)
        } else {
            sim_region(DIR, file)
        };
        let bytes = edit_with_redb(&sim.live_bytes(&path).unwrap(), *edit);
        sim.set_bytes(&path, bytes);
        let before = files(&sim);
        // The open also adds a region: apply would create its file and change the catalog.
        let r = quiet_builder(&sim).region("us").region("ap").open(DIR);
        let diff = changed(&before, &files(&sim));
        match r {
            Err(Error::Corrupt { .. }) if diff.is_empty() => {}
            other => failures.push(format!(
                "{case}: {:?}, files changed: {diff:?}",
                other.map(|_| ())
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The class behind the outliving record: every handle that holds a region snapshot
/// (`Record`, `Row`, `Hit`, a `Rows` iterator) keeps the store's files registered after
/// `close` and the last `Db`: a second open is refused and changes nothing until it is
/// dropped; then it opens.
#[test]
fn every_handle_that_outlives_its_store_keeps_its_files_registered() {
    type Keep = fn(&Db, AccountId) -> Box<dyn std::any::Any>;
    let cases: &[(&str, Keep)] = &[
        ("Record", |db, a| {
            Box::new(db.read(a).unwrap().get(&T, b"k").unwrap().unwrap())
        }),
        ("Row", |db, a| {
            Box::new(
                db.read(a)
                    .unwrap()
                    .scan(&T)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap(),
            )
        }),
        ("Hit", |db, _| {
            Box::new(db.find_unique(&T, "email", "v@x").unwrap().unwrap())
        }),
        ("Rows (scan_all)", |db, _| {
            Box::new(db.scan_all(&T).unwrap())
        }),
    ];
    for (case, keep) in cases {
        let sim = SimStorage::new();
        let both = || quiet_builder(&sim).region("us").region("eu");
        let db = both().open(DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
        claim(&db, a, "eu", b"k", "v@x").unwrap();
        let held = keep(&db, a);
        db.close().unwrap();
        let before = files(&sim);
        let r = both().open(DIR);
        let diff = changed(&before, &files(&sim));
        assert!(
            matches!(r, Err(Error::Config(_))) && diff.is_empty(),
            "{case}: second open while it is held: {:?}, files changed: {diff:?}",
            r.map(|_| ())
        );
        drop(held);
        both()
            .open(DIR)
            .unwrap_or_else(|e| panic!("{case}: open after the handle is dropped: {e}"));
    }
}
