//! Adversarial review, round 4: what a running store answers about a write whose outcome is
//! unknown, while that region stays ENABLED (poisoned) in the same process.
//!
//! FAILS: busy_from_a_poisoned_enabled_regions_in_flight_claim_is_retryable_forever
//! passes (guard): find_unique_names_an_owner_from_an_unknown_write_that_a_power_loss_undoes
//! passes (guard): read_returns_a_record_of_an_unknown_write_that_a_power_loss_undoes
//!   (no dirty read: snapshots after the failed commit do not see it)

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/r";
const EU: &str = "/r/regions/eu.redb";

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

/// Setup: accounts e (eu) and u (us); a unique write of e in eu fails at its fsync.
fn unknown_claim_in_eu(sim: &SimStorage) -> (Db, AccountId, AccountId) {
    let db = all(sim).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "eu", b"k0", "first@x").unwrap(); // eu dirty: later Reserves unsynced
    sim.fail_file_after(EU, 0, FaultOn::Syncs);
    let r = claim(&db, e, "eu", b"k", "z@x");
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    (db, e, u)
}

/// The round-3 finding fixed the case of a DISABLED region. With eu still enabled (the
/// operator has not reacted yet, or never will: the volume came back), eu is poisoned
/// ("refuses writes until the store is reopened"), and its claim stays Pending for the
/// life of this process. Every claim of the value from us answers `Error::Busy`, which
/// `is_retryable()` promises may succeed on retry: it never does until a reopen, and the
/// error names neither eu nor the need to reopen.
#[test]
fn busy_from_a_poisoned_enabled_regions_in_flight_claim_is_retryable_forever() {
    let sim = SimStorage::new();
    let (db, _e, u) = unknown_claim_in_eu(&sim);
    let mut last = None;
    for i in 0..200 {
        match claim(&db, u, "us", format!("k{i}").as_bytes(), "z@x") {
            Err(err) if err.is_retryable() => {
                last = Some(err.to_string());
                std::thread::sleep(Duration::from_millis(1));
            }
            other => {
                if let Err(err) = &other {
                    assert!(err.to_string().contains("eu"), "{err}");
                }
                return;
            }
        }
    }
    panic!(
        "200 retries over 200+ ms of an error that is_retryable() all failed: {last:?}; \
         only a reopen settles eu's unknown claim"
    );
}

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
    let db = all(&sim).unwrap();
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

/// The same for a plain read of the account's own data.
#[test]
fn read_returns_a_record_of_an_unknown_write_that_a_power_loss_undoes() {
    let sim = SimStorage::new();
    let (db, e, _u) = unknown_claim_in_eu(&sim);
    let seen = db.read(e).unwrap().get(&T, b"k").unwrap().is_some();
    drop(db);
    sim.crash();
    let db = all(&sim).unwrap();
    let now = db.read(e).unwrap().get(&T, b"k").unwrap().is_some();
    assert!(
        !seen || now,
        "read(e).get(k) returned the record of a write that failed with OutcomeUnknown \
         (eu's live image); after a power loss it does not exist"
    );
}
