//! Adversarial review: operator sequences (disable / forfeit / crash / reopen / drop).
//!
//! found (fixed since): `forfeited_claim_nobody_took_is_lost_when_a_rolled_back_claim_masked_it`
//! found (fixed since): `drop_without_close_then_reopen_is_refused_while_the_timer_holds_the_store`
//! found (fixed since): `forfeit_then_inflight_claim_elsewhere_leaves_a_second_owner`
//! passes (guard): `unsettled_region_blocks_free_answers_and_claims_until_forfeit`
//! passes (guard): `forfeit_then_other_claims_then_return_reports_claims_lost`

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/op";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

/// Sets up: eu holds an acknowledged claim of `value` (record `e1`) that the global file
/// lost in a power loss; the store is reopened with eu disabled (eu is unsettled).
fn unsettled_eu(sim: &SimStorage, value: &str) -> (Db, regionkv::AccountId, regionkv::AccountId) {
    let db = b(sim).region("us").region("eu").open(DIR).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    // First unique write of eu since the checkpoint: marks eu dirty (synced).
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e0", b"x", &[Unique::new("email", "warmup")])
        .unwrap();
    w.commit().unwrap();
    // Acknowledged; its global entry is unsynced.
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e1", b"x", &[Unique::new("email", value)])
        .unwrap();
    w.commit().unwrap();
    sim.crash();
    drop(db);
    let db = b(sim).region("us").disable_region("eu").open(DIR).unwrap();
    (db, e, u)
}

/// Guard (a): while eu is unsettled no value may be reported free or claimed elsewhere.
#[test]
fn unsettled_region_blocks_free_answers_and_claims_until_forfeit() {
    let sim = SimStorage::new();
    let (db, _e, u) = unsettled_eu(&sim, "v@x");
    assert!(matches!(
        db.is_taken("email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    assert!(matches!(
        db.find_unique(&T, "email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    assert!(matches!(w.commit(), Err(Error::RegionUnsettled(_))));
    // Disabling another region at run time, checkpoints, close and a plain reopen keep it
    // unsettled.
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
    assert!(matches!(
        db.is_taken("email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    drop(db);
    sim.crash();
    let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
    assert!(matches!(
        db.is_taken("email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    let f = db.forfeit_unsettled("eu").unwrap();
    assert!(f.was_unsettled);
    assert!(!db.is_taken("email", "v@x").unwrap());
}

/// Guard (a): forfeit, another record takes the value, eu returns: eu's record loses it
/// (claims_lost) and exactly one owner remains.
#[test]
fn forfeit_then_other_claims_then_return_reports_claims_lost() {
    let sim = SimStorage::new();
    let (db, _e, u) = unsettled_eu(&sim, "v@x");
    db.forfeit_unsettled("eu").unwrap();
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    w.commit().unwrap();
    db.close().unwrap();
    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let lost = &db.recovery_report().claims_lost;
    assert_eq!(lost.len(), 1, "{lost:?}");
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), u);
    let a = db.audit().unwrap();
    assert!(a.is_clean(), "{a}");
}

/// (a) "Nothing is lost for values nobody took" (Db::forfeit_unsettled). After a forfeit,
/// a claim of the value in us is reserved (its Reserve is synced: the first unique write
/// of us since the open) and its region commit fails; power is lost. At the next open,
/// with eu back, recovery replays eu's marker *before* rolling back in-flight entries:
/// the newer in-flight entry of us makes the replay keep it, then the rollback deletes
/// it, so nobody owns the value and eu's record has it taken off as "lost". The us write
/// was never applied, so nobody took the value: eu's acknowledged claim must survive.
#[test]
fn forfeited_claim_nobody_took_is_lost_when_a_rolled_back_claim_masked_it() {
    let sim = SimStorage::new();
    let (db, e, u) = unsettled_eu(&sim, "v@x");
    db.forfeit_unsettled("eu").unwrap();
    // us's region file dies before its commit writes anything.
    sim.fail_file_after(format!("{DIR}/regions/us.redb"), 0, FaultOn::Any);
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let r = w.commit();
    assert!(r.is_err(), "the us commit must fail: {r:?}");
    sim.crash();
    drop(db);

    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let us_applied = db.read(u).unwrap().get(&T, b"u1").unwrap().is_some();
    assert!(!us_applied, "the failed us write must not be there");
    // Nobody took the value: eu's record, whose write was acknowledged, still owns it.
    let report = db.recovery_report();
    let hit = db.find_unique(&T, "email", "v@x").unwrap();
    assert!(
        hit.as_ref()
            .is_some_and(|h| h.account() == e && h.key() == b"e1"),
        "eu's acknowledged claim was lost though nobody took the value: find_unique = {:?}, \
         claims_lost = {:?}",
        hit.map(|h| (h.account(), h.key().to_vec())),
        report.claims_lost
    );
    assert!(report.claims_lost.is_empty(), "{:?}", report.claims_lost);
}

/// Drop without close, then open again at once: the checkpoint timer thread upgrades its
/// weak handle and runs a checkpoint while holding the store; if the user's last handle
/// drops then, the store (and its registration in the per-process registry) lives on in
/// the timer thread, and the reopen is refused as "already open in this process".
#[test]
fn drop_without_close_then_reopen_is_refused_while_the_timer_holds_the_store() {
    let sim = SimStorage::new();
    let open = || {
        Db::builder()
            .storage(sim.clone())
            .region("us")
            .checkpoint_budget(1 << 20, Duration::from_millis(1))
            .open("/drop")
    };
    let db = open().unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    drop(db);
    for i in 0..300u32 {
        let db = open().unwrap_or_else(|e| {
            panic!("iteration {i}: reopen after dropping the only handle refused: {e}")
        });
        let mut w = db.write(a).unwrap();
        let v = format!("v{i}");
        w.insert_unique(&T, b"k", b"x", &[Unique::new("email", &v)])
            .unwrap();
        w.commit().unwrap();
        // Give the timer a tick to find the checkpoint overdue.
        std::thread::sleep(Duration::from_micros(1500));
        drop(db);
    }
}

/// (a) + I1/I2: eu's claim is forfeited; a record of ap claims the value, its Reserve is
/// durable (first unique write of ap: synced) and its region commit fails (outcome
/// unknown); power is lost. Reopened with eu back and ap disabled: recovery used to keep
/// eu's claim on eu's record because the entry was in flight (ap's); when ap returned and
/// its claim rolled back, the value had no entry while eu's record still listed it, and a
/// third record could claim it: two owners. Now eu's record gives the forfeited value up
/// (reported in `claims_lost`) and the value has one owner at most, whoever claims it.
#[test]
fn forfeit_then_inflight_claim_elsewhere_leaves_a_second_owner() {
    let sim = SimStorage::new();
    let db = b(&sim)
        .region("us")
        .region("eu")
        .region("ap")
        .open(DIR)
        .unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let a = db.create_account(NewAccount::new("a", "ap")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e0", b"x", &[Unique::new("email", "warmup")])
        .unwrap();
    w.commit().unwrap();
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    w.commit().unwrap();
    sim.crash();
    drop(db);

    let db = b(&sim)
        .region("us")
        .disable_region("eu")
        .region("ap")
        .open(DIR)
        .unwrap();
    db.forfeit_unsettled("eu").unwrap();
    sim.fail_file_after(format!("{DIR}/regions/ap.redb"), 0, FaultOn::Any);
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"a1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let r = w.commit();
    assert!(r.is_err(), "{r:?}");
    sim.crash();
    drop(db);

    // eu back, ap disabled.
    let db = b(&sim)
        .region("us")
        .region("eu")
        .disable_region("ap")
        .open(DIR)
        .unwrap();
    // The forfeited claim met ap's claim of the same value (its outcome still unknown):
    // eu's record gives the value up, and says so.
    let lost = db.recovery_report().claims_lost;
    assert!(
        lost.iter().any(|l| l.region == "eu" && l.key == b"e1"),
        "eu's forfeited claim, taken meanwhile, must be reported lost: {lost:?}"
    );
    db.close().unwrap();
    // Everything back.
    let db = b(&sim)
        .region("us")
        .region("eu")
        .region("ap")
        .open(DIR)
        .unwrap();
    let a_applied = db.read(a).unwrap().get(&T, b"a1").unwrap().is_some();
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "I1/I2: {audit}");
    // A third record tries the value: refused while anyone owns it; if it succeeds,
    // nobody else may still own it.
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let third = w.commit();
    match &third {
        Err(Error::UniqueViolation { .. }) => assert!(a_applied, "refused, but nobody owns it"),
        Ok(()) => {
            assert!(
                !a_applied,
                "ap's record owns it, and so does a third record"
            );
            let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
            assert_eq!(hit.account(), u);
        }
        other => panic!("third claim: {other:?}"),
    }
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "I1/I2 after the third claim: {audit}");
}
