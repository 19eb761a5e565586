//! Adversarial review, round 3: quotas after OutcomeUnknown writes and disables at open.
//!
//! found (fixed since): `outcome_unknown_remove_then_disable_at_open_then_power_loss_breaks_the_quota`
//! passes (guard): `outcome_unknown_remove_then_plain_restart_then_power_loss_keeps_the_quota`

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/q";
const EU: &str = "/q/regions/eu.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn put(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert(&T, key, b"x")?;
    w.commit()
}

/// A plain write removing 4 records in eu fails at its fsync (`OutcomeUnknown`): the
/// removal is in eu's live image only. The service restarts (no power loss) with eu
/// disabled at open — the natural reaction to a failing volume. The open freezes eu's
/// record counts from what it reads: the live image, where the records are gone (0). The
/// account fills its limit in us. A power loss then brings eu's durable image back — the
/// 4 records were never removed — and once eu is enabled the account holds 8 records,
/// limit 4. The OutcomeUnknown write settled one way for the quota ("removed") and the
/// other way in the file ("not removed").
#[test]
fn outcome_unknown_remove_then_disable_at_open_then_power_loss_breaks_the_quota() {
    const MAX: u64 = 4;
    let sim = SimStorage::new();
    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(MAX))
        .unwrap();
    for i in 0..MAX as u8 {
        put(&db, a, "eu", &[b'e', i]).unwrap();
    }
    sim.fail_file_after(EU, 0, FaultOn::Syncs);
    let mut w = db.write_in(a, "eu").unwrap();
    for i in 0..MAX as u8 {
        w.remove(&T, &[b'e', i]).unwrap();
    }
    let r = w.commit();
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    drop(db); // restart, no power loss

    let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
    let mut i = 0u8;
    while put(&db, a, "us", &[b'u', i]).is_ok() {
        i += 1;
        assert!(i < 20);
    }
    db.close().unwrap();
    sim.crash(); // power loss: eu's unsynced removal is gone

    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let total = db.read(a).unwrap().scan(&T).unwrap().count() as u64;
    assert!(
        total <= MAX,
        "account holds {total} records, limit {MAX}: {i} written in us while eu was \
         disabled, counted from eu's live image (removal of {MAX} unsynced)"
    );
}

/// Guard: the same with eu enabled at the restart (its open must make the recovered
/// state of eu durable before counting from it).
#[test]
fn outcome_unknown_remove_then_plain_restart_then_power_loss_keeps_the_quota() {
    const MAX: u64 = 4;
    let sim = SimStorage::new();
    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(MAX))
        .unwrap();
    for i in 0..MAX as u8 {
        put(&db, a, "eu", &[b'e', i]).unwrap();
    }
    sim.fail_file_after(EU, 0, FaultOn::Syncs);
    let mut w = db.write_in(a, "eu").unwrap();
    for i in 0..MAX as u8 {
        w.remove(&T, &[b'e', i]).unwrap();
    }
    let r = w.commit();
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    drop(db); // restart, no power loss

    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let mut i = 0u8;
    while put(&db, a, "us", &[b'u', i]).is_ok() {
        i += 1;
        assert!(i < 20);
    }
    db.close().unwrap();
    sim.crash(); // power loss: eu's unsynced removal is gone

    let db = b(&sim).region("us").region("eu").open(DIR).unwrap();
    let total = db.read(a).unwrap().scan(&T).unwrap().count() as u64;
    assert!(
        total <= MAX,
        "account holds {total} records, limit {MAX}: {i} written in us while eu was \
         disabled, counted from eu's live image (removal of {MAX} unsynced)"
    );
}
