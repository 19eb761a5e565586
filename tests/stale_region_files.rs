//! A region file restored from an older copy of itself passes every per-file check; the
//! open must refuse it (untouched) or reconcile the global index with it, never open into a
//! state with an orphan entry or two owners. Legitimate sequences (recovery of a write of
//! unknown outcome) must not be refused as stale.

mod common;

use common::T;
use common::files::{assert_same_files, sim_snapshot};
use common::refusal::{Env, Expect, Refusal, run_refusals};
use common::sim::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, Error, NewAccount, Unique};

// ======================================================================================
// one region file restored from an older copy of itself
// (restore-from-backup of one volume). The stale file passes every open check (same
// store id, region name and id, page checksums); the global index still describes the
// newer file. Either the open refuses the stale file, or it reconciles the index with it:
// it must not open into a state that breaks I1/I2.
// ======================================================================================

/// Opens the store (us, eu) over eu's stale file. Both outcomes are legitimate. Refused:
/// the error is `Error::PartitionMismatch` saying eu's file is older than the index, no byte
/// changed, and with eu disabled the store opens with `v` still taken (the index keeps the
/// newer file's view); returns `None`. Opened: returns the store for the caller's checks of
/// the reconciled state.
fn open_over_stale_eu(sim: &SimStorage, v: &str) -> Option<Db> {
    let before = sim_snapshot(sim);
    let err = match open_us_eu_sim(sim, DIR) {
        Ok(db) => return Some(db),
        Err(err) => err,
    };
    assert!(
        matches!(&err, Error::PartitionMismatch { reason, .. } if reason.contains("older")),
        "stale eu refused with {err:?}; expected Error::PartitionMismatch saying it is older"
    );
    assert_same_files(
        &before,
        &sim_snapshot(sim),
        "the refused open of the stale file",
    );
    let db = quiet_us_eu_off(sim, DIR).expect("the store opens with eu disabled");
    assert!(
        db.is_taken("email", v).unwrap(),
        "{v} is free once eu (stale) is disabled"
    );
    None
}

// Regression (fixed since): stale region file without the claim leaves an orphan entry.
/// Backup of eu taken before `e1` claimed `v`; the claim is checkpointed (marker deleted);
/// the backup is restored. The index says eu's `e1` owns `v`, eu has no such record: `v`
/// can never be claimed again (UniqueViolation) though nobody owns it (find_unique None).
#[test]
fn stale_region_file_without_the_claim_leaves_an_orphan_entry() {
    let sim = SimStorage::new();
    let db = open_us_eu_sim(&sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    claim_home(&db, e, b"e0", "other@x").unwrap();
    db.close().unwrap();
    let backup = sim.live_bytes(sim_region(DIR, "eu")).unwrap();

    let db = open_us_eu_sim(&sim, DIR).unwrap();
    claim_home(&db, e, b"e1", "v@x").unwrap();
    db.close().unwrap();
    sim.set_bytes(sim_region(DIR, "eu"), backup); // the operator restores eu's volume from its backup

    let Some(db) = open_over_stale_eu(&sim, "v@x") else {
        return; // refused, as checked
    };
    let owner = db.find_unique(&T, "email", "v@x").unwrap();
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let third = w.commit();
    let audit = db.audit().unwrap();
    assert!(
        audit.is_clean() && (owner.is_some() || third.is_ok()),
        "stale eu opened: find_unique(v) = {:?}, a claim of v by us = {third:?}; audit: {audit} {:?}",
        owner.map(|h| h.account()),
        audit.findings()
    );
}

// Regression (fixed since): stale region file with a released claim leaves two owners.
/// Backup of eu taken while `e1` owns `v` (checkpointed); then `e1` releases `v` and us's
/// `u1` claims it; the backup is restored. eu's `e1` lists `v` again, us's `u1` owns it:
/// two records own one value.
#[test]
fn stale_region_file_with_a_released_claim_leaves_two_owners() {
    let sim = SimStorage::new();
    let db = open_us_eu_sim(&sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    claim_home(&db, e, b"e1", "v@x").unwrap();
    db.close().unwrap();
    let backup = sim.live_bytes(sim_region(DIR, "eu")).unwrap();

    let db = open_us_eu_sim(&sim, DIR).unwrap();
    let mut w = db.write(e).unwrap();
    w.remove(&T, b"e1").unwrap();
    w.commit().unwrap();
    claim_home(&db, u, b"u1", "v@x").unwrap();
    db.close().unwrap();
    sim.set_bytes(sim_region(DIR, "eu"), backup);

    let Some(db) = open_over_stale_eu(&sim, "v@x") else {
        return; // refused, as checked
    };
    let e1_back = db.read(e).unwrap().get(&T, b"e1").unwrap().is_some();
    let owner = db
        .find_unique(&T, "email", "v@x")
        .unwrap()
        .map(|h| h.account());
    let audit = db.audit().unwrap();
    assert!(
        audit.is_clean(),
        "stale eu opened (e1 back: {e1_back}, find_unique(v) -> {owner:?}); audit: {audit} {:?}",
        audit.findings()
    );
}

// Guard: stale region file is refused untouched and the newer file opens.
/// The refusal itself: a region file older than the index is refused with a clear error,
/// changes no byte, and the store opens again once the newer file is back (or with the
/// region disabled).
#[test]
fn stale_region_file_is_refused_untouched_and_the_newer_file_opens() {
    let newer = std::cell::RefCell::new(Vec::new());
    let cases = [Refusal::new(
        "eu restored from a backup older than the index",
        Env::sim,
        |env| open_us_eu_sim(env.sim_storage(), DIR),
        Expect::Refused {
            what: "Error::PartitionMismatch saying the file is older",
            matches: |e| {
                matches!(e, Error::PartitionMismatch { reason, .. } if reason.contains("older"))
            },
        },
    )
    .setup(|env| {
        let sim = env.sim_storage();
        let db = open_us_eu_sim(sim, DIR).unwrap();
        let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
        claim_home(&db, e, b"e0", "other@x").unwrap();
        db.close().unwrap();
        let backup = sim.live_bytes(sim_region(DIR, "eu")).unwrap();
        let db = open_us_eu_sim(sim, DIR).unwrap();
        claim_home(&db, e, b"e1", "v@x").unwrap();
        db.close().unwrap();
        *newer.borrow_mut() = sim.live_bytes(sim_region(DIR, "eu")).unwrap();
        sim.set_bytes(sim_region(DIR, "eu"), backup);
    })
    .after(|env| {
        let sim = env.sim_storage();
        // Disabled, the stale file is not read: the store opens, and v stays taken.
        let db = Db::builder()
            .storage(sim.clone())
            .region("us")
            .disable_region("eu")
            .open(DIR)
            .unwrap();
        assert!(db.is_taken("email", "v@x").unwrap());
        db.close().unwrap();
        // The newer file back: everything as before.
        sim.set_bytes(sim_region(DIR, "eu"), newer.borrow().clone());
        let db = open_us_eu_sim(sim, DIR).unwrap();
        let e = db.account_id("e").unwrap().expect("account e");
        let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
        assert_eq!((hit.account(), hit.key()), (e, &b"e1"[..]));
        assert!(db.audit().unwrap().is_clean());
        Vec::new()
    })];
    run_refusals(&cases);
}

// ======================================================================================
// `_region_seen` stale detection against legitimate
// sequences (false refusals that brick the store).
// ======================================================================================

const DIR: &str = "/s";

// Guard: a marker only in eu's live image, restart without power loss, power loss at every
//   step of the recovering open: the store always reopens and audits clean.
/// A unique write in eu fails at its fsync (`OutcomeUnknown`): its commit (marker and
/// `last_txn` included) is in eu's live image, not in its durable one. The service restarts
/// without a power loss; the open's recovery replays the marker it reads from the live
/// image, raises `_region_seen[eu]` to that txn in a synced global commit, then deletes
/// the marker in a synced eu commit. A power loss at any step of that open must leave a
/// store that opens again.
#[test]
fn crash_inside_the_recovery_of_an_outcome_unknown_write_reopens() {
    // A store where eu is dirty (synced Reserve) with `last_txn` durable, and a second
    // unique write in eu about to run; `fail` makes that write's `n`th eu sync fail.
    let setup = |fail: Option<u64>| {
        let sim = SimStorage::new();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
        claim(&db, a, "eu", b"k0", "v0@x").unwrap();
        db.checkpoint().unwrap();
        let before = sim.syncs_of(sim_region(DIR, "eu"));
        if let Some(n) = fail {
            sim.fail_file_after(sim_region(DIR, "eu"), n, FaultOn::Syncs);
        }
        let r = claim(&db, a, "eu", b"k1", "v1@x");
        (sim, db, r, before)
    };
    // The commit's sync is the write's last sync of eu (redb may sync before it, when it
    // grows the file). Runs are deterministic: a run without fault counts them.
    let (dry, _db, r, before) = setup(None);
    r.unwrap();
    let commit_sync = dry.syncs_of(sim_region(DIR, "eu")) - before - 1;
    assert_restart_after_outcome_unknown_survives_power_loss(
        DIR,
        "an OutcomeUnknown write",
        || {
            let (sim, db, r, _) = setup(Some(commit_sync));
            (sim, db, r)
        },
    );
}
