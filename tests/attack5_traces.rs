//! Adversarial review, round 5: traces of FAILED unique writes (an error other than
//! `OutcomeUnknown`) seen by a restart, without a power loss, that has the write's region
//! disabled (the volume holding eu is being replaced; the service restarts on us alone).
//!
//! found (fixed since): failed_dirty_marking_reserve_leaves_a_held_value_and_an_unsettled_store
//! found (fixed since): failed_unique_claim_no_power_loss_sweep_with_eu_disabled_at_restart
//!
//! Recipe: the first unique write in eu after a checkpoint runs the synced, dirty-marking
//! Reserve (`_dirty[eu]` + the Pending entry). Its global fsync fails: `Write::commit`
//! returns `Error::Storage { partition: "global" }` — "nothing was written" — and eu was
//! never touched. The SimStorage live image of global.redb holds that Reserve (redb wrote
//! its pages and header before the failing sync), so a restart without a power loss sees
//! it. With eu enabled recovery rolls it back (no marker) — that case is covered by
//! attack3_faults. With eu disabled, recovery keeps the Pending entry in flight and the
//! `_dirty[eu]` row makes the whole store unsettled: the value the failed write tried to
//! claim reads as taken, and every claim of any free value in any region answers
//! `RegionUnsettled("eu")` until eu returns or an operator forfeits it. Without the failed
//! write the store would be settled (the checkpoint had cleared eu's row).
//!
//! Suspected cause: src/reservation/coordinator.rs `reserve`, `global.commit(w)?` (a failed
//! synced commit may still be in the file — `commit_settled` treats that as
//! OutcomeUnknown elsewhere), propagated unchanged by src/write.rs `reserve(...)?` in
//! `Write::commit`. The error should be `OutcomeUnknown` (or the write should not leave
//! durable-looking state that only an enabled eu can settle).

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/d";
const GLOBAL: &str = "/d/global.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").region("eu").open(DIR)
}

fn us_only(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").disable_region("eu").open(DIR)
}

fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

/// A store with account `a` (us, allowed eu), one settled claim in eu, then a checkpoint:
/// no `_dirty` row, nothing in flight.
fn base(sim: &SimStorage) -> (Db, AccountId) {
    let db = all(sim).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu"))
        .unwrap();
    claim(&db, a, "eu", b"k0", "v0@x").unwrap();
    db.checkpoint().unwrap();
    (db, a)
}

/// What a settled store with no trace of the failed write answers, restarted on us alone.
fn no_trace(db: &Db, a: AccountId, what: &str) -> Result<(), String> {
    match db.is_taken("email", "v1@x") {
        Ok(false) => {}
        other => {
            return Err(format!(
                "{what}: is_taken(v1) = {other:?} (v1 was only in a write that failed)"
            ));
        }
    }
    match claim(db, a, "us", b"u1", "fresh@x") {
        Ok(()) => {}
        Err(e) => {
            return Err(format!(
                "{what}: claim of an unrelated free value in us: {e:?}"
            ));
        }
    }
    match claim(db, a, "us", b"u2", "v1@x") {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{what}: claim of v1 in us: {e:?}")),
    }
}

#[test]
fn failed_dirty_marking_reserve_leaves_a_held_value_and_an_unsettled_store() {
    let sim = SimStorage::new();
    let (db, a) = base(&sim);
    // The next Reserve in eu is the dirty-marking one: synced. Its sync fails.
    sim.fail_file_after(GLOBAL, 0, FaultOn::Syncs);
    let r = claim(&db, a, "eu", b"k1", "v1@x");
    // It used to be `Storage` ("nothing was written") although the synced Reserve may be
    // durable. Now the outcome is unknown, and it settles one way.
    assert!(
        matches!(&r, Err(Error::OutcomeUnknown { partition, .. }) if partition == "global"),
        "the failed dirty-marking Reserve: {r:?}"
    );
    sim.clear_fault();
    drop(db); // restart, no power loss

    // With eu disabled the claim cannot settle: v1 stays held, never handed to another.
    let db = us_only(&sim).unwrap();
    assert!(
        !matches!(db.is_taken("email", "v1@x"), Ok(false)),
        "v1 reported free while its claim is unsettled"
    );
    assert!(claim(&db, a, "us", b"u2", "v1@x").is_err());
    db.close().unwrap();
    // eu back: the claim never reached eu, recovery rolls it back; no trace is left.
    let db = all(&sim).unwrap();
    assert!(db.recovery_report().unsettled.is_empty());
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
    db.close().unwrap();
    let db = us_only(&sim).unwrap();
    if let Err(e) = no_trace(&db, a, "after eu returned once") {
        panic!("the unknown outcome did not settle as 'not written': {e}");
    }
}

/// The same as a sweep over every counted storage operation of the claim (the
/// attack3_faults sweep, but restarting with eu disabled): every `n` whose error is not
/// `OutcomeUnknown` must leave no trace.
#[test]
fn failed_unique_claim_no_power_loss_sweep_with_eu_disabled_at_restart() {
    let mut bad = Vec::new();
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let (db, a) = base(&sim);
        sim.fail_after(n, FaultOn::Any);
        let r = claim(&db, a, "eu", b"k1", "v1@x");
        let tripped = sim.fault_tripped();
        sim.clear_fault();
        drop(db);
        match us_only(&sim) {
            Ok(db) => {
                if let Err(e) = &r
                    && !matches!(e, Error::OutcomeUnknown { .. })
                    && let Err(why) = no_trace(&db, a, &format!("n={n}, {e}"))
                {
                    bad.push(why);
                }
            }
            Err(e) => bad.push(format!("n={n}: restart with eu disabled failed: {e}")),
        }
        if !tripped {
            break;
        }
        n += 1;
        assert!(n < 200, "sweep did not end");
    }
    assert!(
        bad.is_empty(),
        "failed writes (errors other than OutcomeUnknown) left traces after a restart with \
         eu disabled:\n{}",
        bad.join("\n")
    );
}
