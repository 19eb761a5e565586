//! Adversarial review, round 3: error classification.
//!
//! found (fixed since): `busy_from_a_disabled_regions_in_flight_claim_is_retryable_forever`

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/e";
const EU: &str = "/e/regions/eu.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

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
    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    sim.fail_file_after(EU, 0, FaultOn::Writes);
    let r = claim(&db, e, "eu", b"k", "z@x");
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    let d = db.disable_region("eu");
    assert!(d.is_ok(), "{d:?}");
    db.close().unwrap();

    let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
    let report = db.recovery_report();
    let mut last = None;
    for i in 0..200 {
        match claim(&db, u, "us", format!("k{i}").as_bytes(), "z@x") {
            Err(err) if err.is_retryable() => {
                last = Some(err.to_string());
                std::thread::sleep(Duration::from_millis(1));
            }
            other => {
                // A non-retryable error (naming eu) or a settled answer: fine.
                if let Err(err) = &other {
                    assert!(err.to_string().contains("eu"), "{err}");
                }
                return;
            }
        }
    }
    panic!(
        "200 retries over 200+ ms of an error that is_retryable() all failed with the same \
         error: {last:?}; it names no region, and recovery_report() = {report:?} lists \
         nothing unsettled: only enabling eu or forfeit_unsettled(\"eu\") clears it"
    );
}
