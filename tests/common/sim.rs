//! Stores on the in-memory [`SimStorage`]: a builder whose checkpoint budget never fires on
//! its own, the us+eu store on it, one-record writes, and the paths of a store's files
//! (from `regionkv::layout`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use regionkv::layout::{global_file, region_file};
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Builder, Db, Unique};

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
