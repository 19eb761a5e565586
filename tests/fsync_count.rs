//! One fsync per write, unique or not: a property of the protocol's design (the region
//! commit is the only synced step), counted with the SimStorage backend, not timed. The
//! one exception is the first unique write in a region after each checkpoint: its Reserve
//! is synced, because it durably marks the region dirty (so that a recovery that cannot
//! read the region knows its markers may hold claims): one global sync per region per
//! checkpoint interval, never per write.
//!
//! redb also syncs when it grows a file (`TransactionalMemory::grow`); those syncs are
//! amortized over the file's growth and are counted apart: a write may cost one more sync
//! per file that grew during it.

mod common;

use common::sim::{sim_global, sim_region};
use std::time::Duration;

use regionkv::testing::SimStorage;
use regionkv::{Db, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");

fn open(sim: &SimStorage) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        // No checkpoint inside the measured writes.
        .checkpoint_budget(1_000_000, Duration::from_secs(3600))
        .storage(sim.clone())
        .open("/fs")
        .unwrap()
}

#[test]
fn unique_write_costs_one_sync() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    for i in 0..20u32 {
        let v = format!("user{i}@example.com");
        let before = Syncs::take(&sim);
        let mut w = db.write(a).unwrap();
        w.insert_unique(&T, i.to_be_bytes(), b"rec", &[Unique::new("email", &v)])
            .unwrap();
        w.commit().unwrap();
        // The first one marks eu dirty: one global sync; the others none.
        before.assert_syncs(&sim, "claim", (i == 0) as u64);
    }
    // Release and claim in one write (change of email): still one sync.
    let before = Syncs::take(&sim);
    let mut w = db.write(a).unwrap();
    w.insert_unique(
        &T,
        0u32.to_be_bytes(),
        b"rec",
        &[Unique::new("email", "new@example.com")],
    )
    .unwrap();
    w.commit().unwrap();
    before.assert_one_commit_sync(&sim, "release + claim");
    // Remove of an owner: release, one sync.
    let before = Syncs::take(&sim);
    let mut w = db.write(a).unwrap();
    w.remove(&T, 1u32.to_be_bytes()).unwrap();
    w.commit().unwrap();
    before.assert_one_commit_sync(&sim, "release");
}

/// Sync counts and file lengths of the global and eu files before a write.
struct Syncs {
    global: (u64, usize),
    eu: (u64, usize),
}

impl Syncs {
    fn take(sim: &SimStorage) -> Syncs {
        let f =
            |p: std::path::PathBuf| (sim.syncs_of(&p), sim.live_bytes(&p).map_or(0, |b| b.len()));
        Syncs {
            global: f(sim_global("/fs")),
            eu: f(sim_region("/fs", "eu")),
        }
    }

    /// The write synced the region once (its commit) and the global file never, apart from
    /// redb's syncs when it grew a file.
    fn assert_one_commit_sync(&self, sim: &SimStorage, what: &str) {
        self.assert_syncs(sim, what, 0)
    }

    /// The write synced the region once (its commit) and the global file `global` times,
    /// apart from redb's syncs when it grew a file.
    fn assert_syncs(&self, sim: &SimStorage, what: &str, global: u64) {
        let after = Syncs::take(sim);
        let grew = |a: (u64, usize), b: (u64, usize)| (b.1 > a.1) as u64;
        let global_extra = after.global.0 - self.global.0;
        let eu_extra = after.eu.0 - self.eu.0;
        assert!(
            global_extra >= global && global_extra - global <= grew(self.global, after.global),
            "{what}: {global_extra} global syncs, expected {global} plus growth"
        );
        assert!(
            eu_extra >= 1 && eu_extra - 1 <= grew(self.eu, after.eu),
            "{what}: {eu_extra} region syncs"
        );
    }
}

#[test]
fn failed_claim_costs_no_sync() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k", b"rec", &[Unique::new("email", "x@y")])
        .unwrap();
    w.commit().unwrap();
    let before = sim.syncs();
    let mut w = db.write(b).unwrap();
    w.insert_unique(&T, b"k", b"rec", &[Unique::new("email", "x@y")])
        .unwrap();
    assert!(w.commit().is_err());
    assert_eq!(sim.syncs(), before);
}

#[test]
fn plain_write_does_not_touch_the_global_partition() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let global = sim.live_bytes(sim_global("/fs")).unwrap();
    let writes = sim.writes();
    let syncs = sim.syncs();
    for i in 0..10u32 {
        let mut w = db.write(a).unwrap();
        w.insert(&T, i.to_be_bytes(), b"plain").unwrap();
        w.commit().unwrap();
    }
    assert_eq!(sim.syncs() - syncs, 10, "one sync per plain write");
    assert!(sim.writes() > writes);
    assert_eq!(
        sim.live_bytes(sim_global("/fs")).unwrap(),
        global,
        "global bytes changed"
    );
}

#[test]
fn checkpoint_is_one_global_sync_plus_marker_collection() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k", b"rec", &[Unique::new("email", "x@y")])
        .unwrap();
    w.commit().unwrap();
    let g = sim.syncs_of(sim_global("/fs"));
    let eu = sim.syncs_of(sim_region("/fs", "eu"));
    let us = sim.syncs_of(sim_region("/fs", "us"));
    assert_eq!(
        db.stats().txns_live,
        1,
        "confirmed, marker not yet collected"
    );
    assert_eq!(db.stats().txns_since_checkpoint, 1);
    db.checkpoint().unwrap();
    assert_eq!(db.stats().txns_live, 0, "marker collected durably");
    assert_eq!(db.stats().txns_since_checkpoint, 0);
    assert_eq!(sim.syncs_of(sim_global("/fs")) - g, 1);
    assert_eq!(
        sim.syncs_of(sim_region("/fs", "eu")) - eu,
        1,
        "markers collected in eu"
    );
    assert_eq!(
        sim.syncs_of(sim_region("/fs", "us")),
        us,
        "us had no markers"
    );
    // After the checkpoint, the next unique write marks eu dirty again: one global sync.
    let before = Syncs::take(&sim);
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k2", b"rec", &[Unique::new("email", "x2@y")])
        .unwrap();
    w.commit().unwrap();
    before.assert_syncs(&sim, "first claim after a checkpoint", 1);
    let before = Syncs::take(&sim);
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, b"k3", b"rec", &[Unique::new("email", "x3@y")])
        .unwrap();
    w.commit().unwrap();
    before.assert_one_commit_sync(&sim, "second claim after a checkpoint");
}

/// A checkpoint of the budget keeps the `_dirty` row of a region written since the previous
/// checkpoint: the region's next unique write is not synced again (a load pays no global
/// sync per region per checkpoint). The row goes at the next budget checkpoint that finds
/// the region idle since, and at every explicit checkpoint: a crash then an open with the
/// region disabled leaves the store settled.
#[test]
fn budget_checkpoints_keep_the_dirty_row_of_a_region_being_written() {
    let sim = SimStorage::new();
    let open = |disable_eu: bool| {
        let b = Db::builder()
            .region("us")
            .checkpoint_budget(2, Duration::from_secs(3600))
            .storage(sim.clone());
        let b = if disable_eu {
            b.disable_region("eu")
        } else {
            b.region("eu")
        };
        b.open("/fs").unwrap()
    };
    let db = open(false);
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "e0", "e0@x"); // marks eu dirty (synced Reserve)
    claim(&db, e, "e1", "e1@x"); // the budget of 2 commits: a checkpoint; eu was written
    assert_eq!(db.stats().txns_since_checkpoint, 0, "checkpointed");
    let before = Syncs::take(&sim);
    claim(&db, e, "e2", "e2@x");
    before.assert_one_commit_sync(&sim, "eu's row kept: its next Reserve is not synced");
    // us is written, eu is not: the next budget checkpoint removes eu's row, keeps us's.
    claim(&db, u, "u0", "u0@x"); // second commit since: a checkpoint (eu was written: kept)
    claim(&db, u, "u1", "u1@x");
    claim(&db, u, "u2", "u2@x"); // eu idle since the last checkpoint: its row goes now
    let global = || {
        let p = sim_global("/fs");
        (sim.syncs_of(&p), sim.live_bytes(&p).map_or(0, |b| b.len()))
    };
    let g = global();
    claim(&db, u, "u3", "u3@x");
    let after = global();
    assert!(
        after.0 - g.0 <= (after.1 > g.1) as u64,
        "us's row kept: its next Reserve is not synced ({} global syncs)",
        after.0 - g.0
    );
    sim.crash();
    drop(db);
    // eu disabled at the open: its row was removed, the store is settled.
    let db = open(true);
    assert!(
        db.is_taken("email", "fresh@x").is_ok(),
        "eu's row was removed by a checkpoint that found it idle"
    );
    db.close().unwrap();
    // Every row kept by a budget checkpoint is gone after an explicit one.
    let db = open(false);
    claim(&db, e, "e3", "e3@x");
    claim(&db, e, "e4", "e4@x"); // budget checkpoint: eu's row kept
    let before = Syncs::take(&sim);
    claim(&db, e, "e5", "e5@x");
    before.assert_one_commit_sync(&sim, "kept");
    db.checkpoint().unwrap(); // explicit: every row goes
    let before = Syncs::take(&sim);
    claim(&db, e, "e6", "e6@x");
    before.assert_syncs(&sim, "the row was removed: marked again", 1);
    sim.crash();
    drop(db);
    let db = open(true);
    assert!(
        matches!(
            db.is_taken("email", "fresh@x"),
            Err(regionkv::Error::RegionUnsettled(_))
        ),
        "eu marked and written after the explicit checkpoint, then lost: unsettled"
    );
}

fn claim(db: &Db, a: regionkv::AccountId, k: &str, v: &str) {
    let mut w = db.write(a).unwrap();
    w.insert_unique(&T, k, b"rec", &[Unique::new("email", v)])
        .unwrap();
    w.commit().unwrap();
}
