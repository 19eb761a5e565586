//! Adversarial review, round 2: I/O faults WITHOUT a power loss.
//!
//! `SimStorage` keeps the live image of a file whose fsync failed: redb had already written
//! the commit's pages and header, so a process that reopens the store without a power loss
//! (the volume came back, the service was restarted) sees that commit. The contract: an
//! error other than `OutcomeUnknown` leaves no trace; an `OutcomeUnknown` write settles one
//! way *everywhere* (records, unique index, and the record counts quotas use).
//!
//! found (fixed since): `failed_create_account_exists_after_restart`
//! found (fixed since): `failed_runtime_disable_is_in_effect_after_restart_and_its_counts_break_the_quota`
//! found (fixed since): `outcome_unknown_write_then_runtime_disable_breaks_the_quota`

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, Error, NewAccount, Raw, Table};

const T: Table<Raw> = Table::new("t");
const GLOBAL: &str = "/f/global.redb";
const EU: &str = "/f/regions/eu.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, std::time::Duration::from_secs(3600))
}

fn put(db: &Db, a: regionkv::AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert(&T, key, b"x")?;
    w.commit()
}

/// I3: `create_account` is one synced global commit. Its fsync fails: the caller gets
/// `Error::Storage` (not `OutcomeUnknown`), i.e. "nothing was written". After a restart
/// without power loss the account exists (and a retry of the same name would get
/// `AccountNameTaken`).
#[test]
fn failed_create_account_exists_after_restart() {
    let sim = SimStorage::new();
    let db = b(&sim).region("us").open("/f").unwrap();
    sim.fail_file_after(GLOBAL, 0, FaultOn::Syncs);
    let r = db.create_account(NewAccount::new("a", "us"));
    assert!(r.is_err(), "the fault must hit create_account: {r:?}");
    let unknown = matches!(r, Err(Error::OutcomeUnknown { .. }));
    drop(db);
    sim.clear_fault(); // the volume is back; no power loss
    let db = b(&sim).region("us").open("/f").unwrap();
    let exists = db.account_id("a").unwrap();
    assert!(
        unknown || exists.is_none(),
        "create_account failed with {r:?} (not OutcomeUnknown), yet after a restart the \
         account exists: {exists:?}"
    );
}

/// I3 + quota: `disable_region`'s catalog commit (`persist_disable`, synced) fails at its
/// fsync. It used to return an ordinary error and leave the region enabled in this
/// process, so plain writes kept landing in eu; after a restart the catalog said eu was
/// disabled with counts that missed them, and the limit was exceeded. Now: OutcomeUnknown,
/// and eu refuses writes from then on.
#[test]
fn failed_runtime_disable_is_in_effect_after_restart_and_its_counts_break_the_quota() {
    const MAX: u64 = 4;
    let sim = SimStorage::new();
    let db = b(&sim).region("us").region("eu").open("/f").unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(MAX))
        .unwrap();
    put(&db, a, "eu", b"k0").unwrap();
    // The second global fsync of disable_region: the first is its checkpoint's.
    sim.fail_file_after(GLOBAL, 1, FaultOn::Syncs);
    let r = db.disable_region("eu");
    // A failed synced commit may be durable: the outcome is unknown, and eu refuses writes
    // from now on whichever way it settles, so the counts recorded stay right.
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    for k in [b"k1", b"k2"] {
        let w = put(&db, a, "eu", k);
        assert!(matches!(w, Err(Error::RegionDisabled(_))), "{w:?}");
    }
    drop(db);

    // Whether the disable took effect or not, an open with eu disabled keeps the limit.
    let only_us = b(&sim).region("us").open("/f");
    let failed_disable_in_effect = only_us.is_ok();
    drop(only_us);
    // The operator disables eu at open instead; the limit must hold.
    let db = b(&sim)
        .region("us")
        .disable_region("eu")
        .open("/f")
        .unwrap();
    let mut i = 0u8;
    while put(&db, a, "us", &[i]).is_ok() {
        i += 1;
        assert!(i < 20);
    }
    db.close().unwrap();
    let db = b(&sim).region("us").region("eu").open("/f").unwrap();
    let total = db.read(a).unwrap().scan(&T).unwrap().count() as u64;
    assert!(
        total <= MAX,
        "disable_region failed ({r:?}, in effect after a restart: \
         {failed_disable_in_effect}); account has {total} records, limit {MAX}"
    );
}

/// Quota: a plain write of 3 records in eu fails at its fsync (`OutcomeUnknown`; the
/// records are in the file). `disable_region("eu")` then freezes eu's counts from the
/// region's last *successful* commit (the in-memory view), not from what the file holds.
/// After a restart without power loss, with eu still disabled, the account writes 3 more
/// records in us: 6 records, limit 3, once eu is back.
#[test]
fn outcome_unknown_write_then_runtime_disable_breaks_the_quota() {
    const MAX: u64 = 3;
    let sim = SimStorage::new();
    let db = b(&sim).region("us").region("eu").open("/f").unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(MAX))
        .unwrap();
    sim.fail_file_after(EU, 0, FaultOn::Syncs);
    let mut w = db.write_in(a, "eu").unwrap();
    for k in [b"k0", b"k1", b"k2"] {
        w.insert(&T, k, b"x").unwrap();
    }
    let r = w.commit();
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    db.disable_region("eu").unwrap();
    drop(db);

    let db = b(&sim)
        .region("us")
        .disable_region("eu")
        .open("/f")
        .unwrap();
    let mut i = 0u8;
    while put(&db, a, "us", &[i]).is_ok() {
        i += 1;
        assert!(i < 20);
    }
    db.close().unwrap();
    let db = b(&sim).region("us").region("eu").open("/f").unwrap();
    let total = db.read(a).unwrap().scan(&T).unwrap().count() as u64;
    assert!(
        total <= MAX,
        "account has {total} records (3 in eu from the OutcomeUnknown write), limit {MAX}: \
         eu's frozen counts missed that write"
    );
}
