//! Adversarial review, round 3: `_region_seen` stale detection against legitimate
//! sequences (false refusals that brick the store).
//!
//! passes (guard): `crash_inside_the_recovery_of_an_outcome_unknown_write_reopens`
//!   (a marker only in eu's live image, restart without power loss, power loss at every
//!   step of the recovering open: the store always reopens and audits clean)

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/s";
const EU: &str = "/s/regions/eu.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").region("eu").open(DIR)
}

fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

/// A unique write in eu fails at its fsync (`OutcomeUnknown`): its commit (marker and
/// `last_txn` included) is in eu's live image, not in its durable one. The service restarts
/// without a power loss; the open's recovery replays the marker it reads from the live
/// image, raises `_region_seen[eu]` to that txn in a synced global commit, then deletes
/// the marker in a synced eu commit. A power loss at any step of that open must leave a
/// store that opens again.
#[test]
fn crash_inside_the_recovery_of_an_outcome_unknown_write_reopens() {
    let mut n = 0u64;
    let mut bricked = Vec::new();
    loop {
        let sim = SimStorage::new();
        let db = all(&sim).unwrap();
        let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
        // A first unique write makes eu dirty (synced Reserve) and sets last_txn durably.
        claim(&db, a, "eu", b"k0", "v0@x").unwrap();
        db.checkpoint().unwrap();
        sim.fail_file_after(EU, 0, FaultOn::Syncs);
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
        "power loss inside the reopen after an OutcomeUnknown write leaves a store that \
         never opens again:\n{}",
        bricked.join("\n")
    );
}
