//! What a running store answers about a write whose outcome is unknown: retryable errors
//! become retryable in fact, no dirty reads, no owner named from a write a power loss
//! undoes.

mod common;

use common::T;
use common::sim::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error};
use std::time::Duration;

// ======================================================================================
// error classification.
// ======================================================================================

const DIR: &str = "/e";

// Regression (fixed since): busy from a disabled regions in flight claim is retryable
//   forever.
/// `is_retryable()` promises that retrying may succeed. A unique write in eu fails at its
/// region commit (`OutcomeUnknown`): its claim stays in flight in the global index, which
/// is right (its outcome is unknown). The operator disables eu (the documented reaction to
/// a dying volume) and the service restarts with eu disabled. From then on every claim of
/// that value in another region returns `Error::Busy` — retryable, naming no region —
/// forever: nothing but enabling eu again or `forfeit_unsettled("eu")` clears it, and
/// neither the error nor `recovery_report().unsettled` points the operator there (eu is
/// not listed as unsettled). It must be a non-retryable error naming eu
/// (`RegionUnsettled("eu")` / `RegionDisabled("eu")`, as `find_unique` already says).
#[test]
fn busy_from_a_disabled_regions_in_flight_claim_is_retryable_forever() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Writes);
    let r = claim(&db, e, "eu", b"k", "z@x");
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    let d = db.disable_region("eu");
    assert!(d.is_ok(), "{d:?}");
    db.close().unwrap();

    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    let report = db.recovery_report();
    if let Err(last) = retry_claim_of_z_from_us(&db, u) {
        panic!(
            "200 retries over 200+ ms of an error that is_retryable() all failed with the same \
             error: {last:?}; it names no region, and recovery_report() = {report:?} lists \
             nothing unsettled: only enabling eu or forfeit_unsettled(\"eu\") clears it"
        );
    }
}

/// Claims `z@x` from us as `u` (a new record each try) while the error is retryable, 200
/// tries 1 ms apart. Ok once it answers otherwise: settled, or a non-retryable error, which
/// must name eu. Err(the last retryable error) if every try was retryable.
fn retry_claim_of_z_from_us(db: &Db, u: AccountId) -> Result<(), Option<String>> {
    let mut last = None;
    for i in 0..200 {
        match claim(db, u, "us", format!("k{i}").as_bytes(), "z@x") {
            Err(err) if err.is_retryable() => {
                last = Some(err.to_string());
                std::thread::sleep(Duration::from_millis(1));
            }
            other => {
                // A non-retryable error (naming eu) or a settled answer: fine.
                if let Err(err) = &other {
                    assert!(err.to_string().contains("eu"), "{err}");
                }
                return Ok(());
            }
        }
    }
    Err(last)
}

// ======================================================================================
// what a running store answers about a write whose outcome is
// unknown, while that region stays ENABLED (poisoned) in the same process.
// ======================================================================================

/// Setup: accounts e (eu) and u (us); a unique write of e in eu fails at its fsync.
fn unknown_claim_in_eu(sim: &SimStorage) -> (Db, AccountId, AccountId) {
    let db = quiet_us_eu(sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    claim(&db, e, "eu", b"k0", "first@x").unwrap(); // eu dirty: later Reserves unsynced
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Syncs);
    let r = claim(&db, e, "eu", b"k", "z@x");
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    (db, e, u)
}

// Regression (fixed since): busy from a poisoned enabled regions in flight claim is
//   retryable forever.
/// `busy_from_a_disabled_regions_in_flight_claim_is_retryable_forever` covers a DISABLED
/// region. With eu still enabled (the operator has not reacted yet, or never will: the
/// volume came back), eu is poisoned
/// ("refuses writes until the store is reopened"), and its claim stays Pending for the
/// life of this process. Every claim of the value from us answers `Error::Busy`, which
/// `is_retryable()` promises may succeed on retry: it never does until a reopen, and the
/// error names neither eu nor the need to reopen.
#[test]
fn busy_from_a_poisoned_enabled_regions_in_flight_claim_is_retryable_forever() {
    let sim = SimStorage::new();
    let (db, _e, u) = unknown_claim_in_eu(&sim);
    if let Err(last) = retry_claim_of_z_from_us(&db, u) {
        panic!(
            "200 retries over 200+ ms of an error that is_retryable() all failed: {last:?}; \
             only a reopen settles eu's unknown claim"
        );
    }
}

// Guard: find unique names an owner from an unknown write that a power loss undoes.
/// A read must not answer from a commit that is not durable. After the failed fsync eu's
/// live image holds the unknown claim; `find_unique` verifies the hit against eu's read
/// snapshot (which sees that image) and names e as the owner. A power loss then undoes
/// the commit: the value is free, e never owned it. The store answered "owned by e, in
/// record k" from data that never became durable (a dirty read of an unknown write).
#[test]
fn find_unique_names_an_owner_from_an_unknown_write_that_a_power_loss_undoes() {
    let sim = SimStorage::new();
    let (db, e, _u) = unknown_claim_in_eu(&sim);
    let hit = db.find_unique(&T, "email", "z@x");
    let said_owner = matches!(&hit, Ok(Some(h)) if h.account() == e);
    drop(hit);
    drop(db);
    sim.crash();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let owner_now = db
        .find_unique(&T, "email", "z@x")
        .unwrap()
        .map(|h| h.account());
    assert!(
        !said_owner || owner_now == Some(e),
        "find_unique named e as the owner of z@x from eu's undurable image; after a power \
         loss the owner is {owner_now:?}"
    );
}

// Guard: no dirty read: snapshots after the failed commit do not see it.
/// The same for a plain read of the account's own data.
#[test]
fn read_returns_a_record_of_an_unknown_write_that_a_power_loss_undoes() {
    let sim = SimStorage::new();
    let (db, e, _u) = unknown_claim_in_eu(&sim);
    let seen = db.read(e).unwrap().get(&T, b"k").unwrap().is_some();
    drop(db);
    sim.crash();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let now = db.read(e).unwrap().get(&T, b"k").unwrap().is_some();
    assert!(
        !seen || now,
        "read(e).get(k) returned the record of a write that failed with OutcomeUnknown \
         (eu's live image); after a power loss it does not exist"
    );
}
