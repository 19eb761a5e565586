//! Adversarial review, round 4: doubtful regions when the `_doubtful` mark itself fails
//! because the global file fails too (one volume holding every partition dies: the
//! ordinary `fail_after`, not `fail_file_after`).
//!
//! found (fixed since): outcome_unknown_remove_on_a_dying_volume_then_disable_at_open_then_power_loss_breaks_the_quota
//! passes (guard): outcome_unknown_remove_on_one_dying_file_then_restart_then_power_loss_keeps_the_quota
//! passes (guard): outcome_unknown_remove_on_a_dying_volume_then_restart_then_power_loss_keeps_the_quota
//!   (holds: reopening eu read-write makes its live image durable even without the row)
//! passes (guard): outcome_unknown_write_on_a_dying_volume_settles_one_way_after_restart
//! passes (guard): crash_inside_the_recovery_of_an_outcome_unknown_write_on_a_dying_volume_reopens

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/d";
const EU: &str = "/d/regions/eu.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").region("eu").open(DIR)
}

fn put(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert(&T, key, b"x")?;
    w.commit()
}

fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

const MAX: u64 = 4;

/// Fills eu with MAX records, then removes them all in one plain write whose fsync fails
/// (`OutcomeUnknown`) while `fault` makes the following writes fail too. Returns the account.
fn remove_all_outcome_unknown(sim: &SimStorage, whole_volume: bool) -> AccountId {
    let db = all(sim).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(MAX))
        .unwrap();
    for i in 0..MAX as u8 {
        put(&db, a, "eu", &[b'e', i]).unwrap();
    }
    if whole_volume {
        sim.fail_after(0, FaultOn::Syncs);
    } else {
        sim.fail_file_after(EU, 0, FaultOn::Syncs);
    }
    let mut w = db.write_in(a, "eu").unwrap();
    for i in 0..MAX as u8 {
        w.remove(&T, &[b'e', i]).unwrap();
    }
    let r = w.commit();
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    drop(db); // restart, no power loss
    a
}

fn fill_us_then_power_loss_then_count(sim: &SimStorage, db: Db, a: AccountId) -> (u8, u64) {
    let mut i = 0u8;
    while put(&db, a, "us", &[b'u', i]).is_ok() {
        i += 1;
        assert!(i < 20);
    }
    db.close().unwrap();
    sim.crash(); // power loss: eu's unsynced removal is gone
    let db = all(sim).unwrap();
    let total = db.read(a).unwrap().scan(&T).unwrap().count() as u64;
    (i, total)
}

/// Guard (the round-3 fix): one dying file, the `_doubtful` row is written, the restart
/// makes eu durable before counting from it.
#[test]
fn outcome_unknown_remove_on_one_dying_file_then_restart_then_power_loss_keeps_the_quota() {
    let sim = SimStorage::new();
    let a = remove_all_outcome_unknown(&sim, false);
    let db = all(&sim).unwrap();
    let (i, total) = fill_us_then_power_loss_then_count(&sim, db, a);
    assert!(
        total <= MAX,
        "{total} records, limit {MAX} ({i} written in us)"
    );
}

/// The same when the whole volume fails (every partition on one disk, the default
/// layout): the eu commit fails at its fsync, and `mark_doubtful` fails too (the global
/// file's sync fails as well; write.rs ignores that error). The restart (no power loss,
/// eu enabled) finds no `_doubtful` row, so it counts eu's records from its live image,
/// where the removal happened (0), and never makes that image durable. The account fills
/// its limit in us; a power loss brings eu's 4 records back: 8 records, limit 4.
#[test]
fn outcome_unknown_remove_on_a_dying_volume_then_restart_then_power_loss_keeps_the_quota() {
    let sim = SimStorage::new();
    let a = remove_all_outcome_unknown(&sim, true);
    let db = all(&sim).unwrap();
    let (i, total) = fill_us_then_power_loss_then_count(&sim, db, a);
    assert!(
        total <= MAX,
        "account holds {total} records, limit {MAX}: {i} written in us after a plain \
         restart counted eu from its live image (removal unsynced, _doubtful mark failed)"
    );
}

/// Same with eu disabled at the restart (the round-3 recipe, on a dying volume).
#[test]
fn outcome_unknown_remove_on_a_dying_volume_then_disable_at_open_then_power_loss_breaks_the_quota()
{
    let sim = SimStorage::new();
    let a = remove_all_outcome_unknown(&sim, true);
    let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
    let mut i = 0u8;
    while put(&db, a, "us", &[b'u', i]).is_ok() {
        i += 1;
        assert!(i < 20);
    }
    db.close().unwrap();
    sim.crash();
    let db = all(&sim).unwrap();
    let total = db.read(a).unwrap().scan(&T).unwrap().count() as u64;
    assert!(
        total <= MAX,
        "account holds {total} records, limit {MAX}: {i} written in us while eu was \
         disabled at open, counted from eu's live image (_doubtful mark failed)"
    );
}

/// "OutcomeUnknown settles one way": a plain write in eu fails at its fsync on a dying
/// volume. After the restart (no power loss) the store shows the record; the service goes
/// on (writes in us, acknowledged), then a power loss: the record is gone again. The
/// unknown write settled "happened" in the first reopened store and "did not happen" in
/// the next, with no operation on it in between.
#[test]
fn outcome_unknown_write_on_a_dying_volume_settles_one_way_after_restart() {
    let sim = SimStorage::new();
    let db = all(&sim).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu"))
        .unwrap();
    put(&db, a, "eu", b"first").unwrap();
    sim.fail_after(0, FaultOn::Syncs);
    let r = put(&db, a, "eu", b"unknown");
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    drop(db);

    let db = all(&sim).unwrap();
    let seen = db
        .read(a)
        .unwrap()
        .get_in("eu", &T, b"unknown")
        .unwrap()
        .is_some();
    // The service acts on what it saw (here: acknowledged writes elsewhere), closes cleanly.
    put(&db, a, "us", b"after").unwrap();
    db.close().unwrap();
    sim.crash();
    let db = all(&sim).unwrap();
    let after = db
        .read(a)
        .unwrap()
        .get_in("eu", &T, b"unknown")
        .unwrap()
        .is_some();
    assert!(db.read(a).unwrap().get(&T, b"after").unwrap().is_some());
    assert_eq!(
        seen,
        after,
        "the OutcomeUnknown write was {} after the restart and {} after a later power loss \
         (a clean close in between): it did not settle one way",
        if seen { "present" } else { "absent" },
        if after { "present" } else { "absent" },
    );
}

/// The attack3_stale guard, on a dying volume: the unique write in eu fails at its fsync,
/// the `_doubtful` mark fails with it, so the restart does not make eu durable before its
/// recovery raises `_region_seen[eu]` (synced) to the txn it replays from eu's live image.
/// A power loss before recovery's synced eu commit leaves a global that has "seen" a txn
/// eu's durable image never got: every later open refuses eu as a stale copy.
#[test]
fn crash_inside_the_recovery_of_an_outcome_unknown_write_on_a_dying_volume_reopens() {
    let mut n = 0u64;
    let mut bricked = Vec::new();
    loop {
        let sim = SimStorage::new();
        let db = all(&sim).unwrap();
        let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
        claim(&db, a, "eu", b"k0", "v0@x").unwrap();
        db.checkpoint().unwrap();
        claim(&db, a, "eu", b"kk", "vk@x").unwrap(); // eu dirty again (synced Reserve)
        sim.fail_after(0, FaultOn::Syncs);
        let r = claim(&db, a, "eu", b"k1", "v1@x");
        assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
        sim.clear_fault();
        drop(db); // restart, no power loss

        sim.fail_after(n, FaultOn::Any);
        let reopen = all(&sim);
        let tripped = sim.fault_tripped();
        drop(reopen);
        sim.crash();
        match all(&sim) {
            Ok(db) => {
                let audit = db.audit().unwrap();
                assert!(audit.is_clean(), "n={n}: {:?}", audit.findings());
                db.close().unwrap();
            }
            Err(e) => bricked.push(format!("n={n}: {e}")),
        }
        if !tripped {
            break;
        }
        n += 1;
        assert!(n < 500);
    }
    assert!(
        bricked.is_empty(),
        "power loss inside the reopen after an OutcomeUnknown write on a dying volume \
         leaves a store that never opens again:\n{}",
        bricked.join("\n")
    );
}
