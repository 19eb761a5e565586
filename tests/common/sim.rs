//! Stores on the in-memory [`SimStorage`]: a builder whose checkpoint budget never fires on
//! its own, the us+eu store on it, one-record writes, and the paths of a store's files
//! (from `regionkv::layout`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use regionkv::layout::{global_file, region_file};
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Unique};

use super::T;

/// A builder on `sim` whose checkpoint budget (1 MiB, one hour) never fires in a test, so
/// that every checkpoint is one the test asked for.
pub fn quiet_builder(sim: &SimStorage) -> Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

/// Inserts record `key` of `T` in `region`, owning unique value `v` in namespace `email`.
pub fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

/// Inserts plain record `key` of `T` in `region`.
pub fn put(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert(&T, key, b"x")?;
    w.commit()
}

/// Removes record `key` of `T` in `region`.
pub fn remove(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.remove(&T, key)?;
    w.commit()
}

/// Creates account `e` (home eu) and account `u` (home us); returns (e, u).
pub fn e_and_u(db: &Db) -> (AccountId, AccountId) {
    let e = db
        .create_account(NewAccount::new("e", "eu"))
        .expect("create e");
    let u = db
        .create_account(NewAccount::new("u", "us"))
        .expect("create u");
    (e, u)
}

/// The global partition's file of the store at `dir`.
pub fn sim_global(dir: &str) -> PathBuf {
    global_file(Path::new(dir))
}

/// The default file of region `name` of the store at `dir`.
pub fn sim_region(dir: &str, name: &str) -> PathBuf {
    region_file(Path::new(dir), name)
}

/// Inserts record `key` of `T` in the account's home region, owning unique value `v` in
/// namespace `email`.
pub fn claim_home(db: &Db, a: AccountId, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write(a)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

/// Opens (or creates) the store at `dir` on `sim` with regions `us` and `eu`, default
/// checkpoint budget.
pub fn open_us_eu_sim(sim: &SimStorage, dir: &str) -> regionkv::Result<Db> {
    Db::builder()
        .storage(sim.clone())
        .region("us")
        .region("eu")
        .open(dir)
}

/// Opens the store at `dir` on `sim` with regions `us` and `eu`, on a [`quiet_builder`].
pub fn quiet_us_eu(sim: &SimStorage, dir: &str) -> regionkv::Result<Db> {
    quiet_builder(sim).region("us").region("eu").open(dir)
}

/// Like [`quiet_us_eu`] with `eu` disabled.
pub fn quiet_us_eu_off(sim: &SimStorage, dir: &str) -> regionkv::Result<Db> {
    quiet_builder(sim)
        .region("us")
        .disable_region("eu")
        .open(dir)
}

/// How many records of `T` the account holds in the regions it can read (every row must
/// read back).
pub fn record_count(db: &Db, a: AccountId) -> u64 {
    db.read(a)
        .expect("read")
        .scan(&T)
        .expect("scan")
        .inspect(|row| {
            if let Err(e) = row {
                panic!("row of account {a:?}: {e}");
            }
        })
        .count() as u64
}

/// Writes plain records `prefix`+0, `prefix`+1, ... in `region` until one is refused;
/// returns how many were written (fewer than 20, or the limit did not hold).
pub fn fill_until_refused(db: &Db, a: AccountId, region: &str, prefix: &[u8]) -> u8 {
    let mut i = 0u8;
    loop {
        let mut key = prefix.to_vec();
        key.push(i);
        if put(db, a, region, &key).is_err() {
            return i;
        }
        i += 1;
        assert!(i < 20, "{i} records written in {region}: no limit held");
    }
}

/// Power loss at every storage operation of a reopen: for n = 0, 1, ... `prepare` builds a
/// fresh store (and returns its storage), a fault trips after n operations of the reopen
/// `open`, power is lost, and the store must open again and audit clean. Returns the fault
/// points after which it did not open (a failed audit panics); stops at the first n beyond
/// the reopen.
pub fn power_loss_at_every_step_of_reopen(
    prepare: impl Fn() -> SimStorage,
    open: impl Fn(&SimStorage) -> regionkv::Result<Db>,
) -> Vec<String> {
    let mut bricked = Vec::new();
    for n in 0u64.. {
        assert!(n < 500, "the reopen took more than 500 storage operations");
        let sim = prepare();
        sim.fail_after(n, FaultOn::Any);
        let reopen = open(&sim);
        let tripped = sim.fault_tripped();
        drop(reopen);
        sim.crash();
        match open(&sim) {
            Ok(db) => {
                let audit = db.audit().expect("audit");
                assert!(audit.is_clean(), "n={n}: {:?}", audit.findings());
                db.close().expect("close");
            }
            Err(e) => bricked.push(format!("n={n}: {e}")),
        }
        if !tripped {
            break;
        }
    }
    bricked
}

/// [`power_loss_at_every_step_of_reopen`] of the restart after a write whose outcome is
/// unknown: `prepare` builds a us+eu store at `dir`, runs that write and returns the
/// storage, the store and the write's result, which must be `OutcomeUnknown`; the fault is
/// cleared and the store dropped (a restart, no power loss), then reopened by
/// [`quiet_us_eu`]. Panics if a fault point leaves a store that never opens again, saying
/// `what` happened before.
pub fn assert_restart_after_outcome_unknown_survives_power_loss(
    dir: &str,
    what: &str,
    prepare: impl Fn() -> (SimStorage, Db, regionkv::Result<()>),
) {
    let bricked = power_loss_at_every_step_of_reopen(
        || {
            let (sim, db, r) = prepare();
            assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
            sim.clear_fault();
            drop(db); // restart, no power loss
            sim
        },
        |sim| quiet_us_eu(sim, dir),
    );
    assert!(
        bricked.is_empty(),
        "power loss inside the reopen after {what} leaves a store that never opens again:\n{}",
        bricked.join("\n")
    );
}

/// Opens (or creates) the store at `dir` on `sim` with regions `us`, `eu` and `ap`, default
/// checkpoint budget; panics on error.
pub fn open_us_eu_ap_sim(sim: &SimStorage, dir: &str) -> Db {
    Db::builder()
        .storage(sim.clone())
        .region("us")
        .region("eu")
        .region("ap")
        .open(dir)
        .unwrap_or_else(|e| panic!("open us, eu, ap at {dir}: {e}"))
}
