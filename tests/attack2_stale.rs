//! Adversarial review, round 2: one region file restored from an older copy of itself
//! (restore-from-backup of one volume). The stale file passes every open check (same
//! store id, region name and id, page checksums); the global index still describes the
//! newer file. Either the open refuses the stale file, or it reconciles the index with it:
//! it must not open into a state that breaks I1/I2.
//!
//! found (fixed since): `stale_region_file_without_the_claim_leaves_an_orphan_entry`
//! found (fixed since): `stale_region_file_with_a_released_claim_leaves_two_owners`
//! guard: `stale_region_file_is_refused_untouched_and_the_newer_file_opens`

use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const EU: &str = "/st/regions/eu.redb";

fn open(sim: &SimStorage) -> regionkv::Result<Db> {
    Db::builder()
        .storage(sim.clone())
        .region("us")
        .region("eu")
        .open("/st")
}

fn claim(db: &Db, a: AccountId, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write(a)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}

/// Backup of eu taken before `e1` claimed `v`; the claim is checkpointed (marker deleted);
/// the backup is restored. The index says eu's `e1` owns `v`, eu has no such record: `v`
/// can never be claimed again (UniqueViolation) though nobody owns it (find_unique None).
#[test]
fn stale_region_file_without_the_claim_leaves_an_orphan_entry() {
    let sim = SimStorage::new();
    let db = open(&sim).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, b"e0", "other@x").unwrap();
    db.close().unwrap();
    let backup = sim.live_bytes(EU).unwrap();

    let db = open(&sim).unwrap();
    claim(&db, e, b"e1", "v@x").unwrap();
    db.close().unwrap();
    sim.set_bytes(EU, backup); // the operator restores eu's volume from its backup

    let db = match open(&sim) {
        Err(err) => {
            eprintln!("stale file refused: {err}");
            return;
        }
        Ok(db) => db,
    };
    let owner = db.find_unique(&T, "email", "v@x").unwrap();
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let third = w.commit();
    let audit = db.audit().unwrap();
    assert!(
        audit.is_clean() && (owner.is_some() || third.is_ok()),
        "stale eu opened: find_unique(v) = {:?}, a claim of v by us = {third:?}; audit: {audit} {:?}",
        owner.map(|h| h.account()),
        audit.findings()
    );
}

/// Backup of eu taken while `e1` owns `v` (checkpointed); then `e1` releases `v` and us's
/// `u1` claims it; the backup is restored. eu's `e1` lists `v` again, us's `u1` owns it:
/// two records own one value.
#[test]
fn stale_region_file_with_a_released_claim_leaves_two_owners() {
    let sim = SimStorage::new();
    let db = open(&sim).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, b"e1", "v@x").unwrap();
    db.close().unwrap();
    let backup = sim.live_bytes(EU).unwrap();

    let db = open(&sim).unwrap();
    let mut w = db.write(e).unwrap();
    w.remove(&T, b"e1").unwrap();
    w.commit().unwrap();
    claim(&db, u, b"u1", "v@x").unwrap();
    db.close().unwrap();
    sim.set_bytes(EU, backup);

    let db = match open(&sim) {
        Err(err) => {
            eprintln!("stale file refused: {err}");
            return;
        }
        Ok(db) => db,
    };
    let e1_back = db.read(e).unwrap().get(&T, b"e1").unwrap().is_some();
    let owner = db
        .find_unique(&T, "email", "v@x")
        .unwrap()
        .map(|h| h.account());
    let audit = db.audit().unwrap();
    assert!(
        audit.is_clean(),
        "stale eu opened (e1 back: {e1_back}, find_unique(v) -> {owner:?}); audit: {audit} {:?}",
        audit.findings()
    );
}

/// The refusal itself: a region file older than the index is refused with a clear error,
/// changes no byte, and the store opens again once the newer file is back (or with the
/// region disabled).
#[test]
fn stale_region_file_is_refused_untouched_and_the_newer_file_opens() {
    let sim = SimStorage::new();
    let db = open(&sim).unwrap();
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    claim(&db, e, b"e0", "other@x").unwrap();
    db.close().unwrap();
    let backup = sim.live_bytes(EU).unwrap();
    let db = open(&sim).unwrap();
    claim(&db, e, b"e1", "v@x").unwrap();
    db.close().unwrap();
    let newer = sim.live_bytes(EU).unwrap();

    sim.set_bytes(EU, backup.clone());
    let before: Vec<_> = sim
        .paths()
        .into_iter()
        .map(|p| (sim.live_bytes(&p), p))
        .collect();
    match open(&sim) {
        Err(Error::PartitionMismatch { reason, .. }) => {
            assert!(reason.contains("older"), "{reason}")
        }
        other => panic!("a stale eu must be refused: {:?}", other.map(|_| ())),
    }
    let after: Vec<_> = sim
        .paths()
        .into_iter()
        .map(|p| (sim.live_bytes(&p), p))
        .collect();
    assert!(before == after, "the refused open changed files");
    // Disabled, the stale file is not read: the store opens, and v stays taken.
    let db = Db::builder()
        .storage(sim.clone())
        .region("us")
        .disable_region("eu")
        .open("/st")
        .unwrap();
    assert!(db.is_taken("email", "v@x").unwrap());
    db.close().unwrap();
    // The newer file back: everything as before.
    sim.set_bytes(EU, newer);
    let db = open(&sim).unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!((hit.account(), hit.key()), (e, &b"e1"[..]));
    assert!(db.audit().unwrap().is_clean());
}
