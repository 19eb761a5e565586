//! Operator paths around unsettled regions: `disable_region`, `forfeit_unsettled`, crash,
//! reopen, drop without close; forfeited claims are reported in `claims_lost` and never
//! leave a second owner.

mod common;

use common::T;
use common::sim::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};
use std::time::Duration;

// ======================================================================================
// operator sequences (disable / forfeit / crash / reopen / drop).
// ======================================================================================

const DIR: &str = "/op";

/// `acct` claims `v@x` on record `key` in its home `region`, whose file dies before the
/// commit writes anything: the commit must fail. Then power is lost.
fn claim_on_a_dying_file_then_power_loss(
    sim: &SimStorage,
    db: Db,
    region: &str,
    acct: AccountId,
    key: &[u8],
) {
    sim.fail_file_after(sim_region(DIR, region), 0, FaultOn::Any);
    let mut w = db.write(acct).unwrap();
    w.insert_unique(&T, key, b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let r = w.commit();
    assert!(r.is_err(), "the {region} commit must fail: {r:?}");
    sim.crash();
    drop(db);
}

/// Sets up: eu holds an acknowledged claim of `value` (record `e1`) that the global file
/// lost in a power loss; the store is reopened with eu disabled (eu is unsettled).
fn unsettled_eu(sim: &SimStorage, value: &str) -> (Db, regionkv::AccountId, regionkv::AccountId) {
    let db = quiet_us_eu(sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    // First unique write of eu since the checkpoint: marks eu dirty (synced).
    claim_home(&db, e, b"e0", "warmup").unwrap();
    // Acknowledged; its global entry is unsynced.
    claim_home(&db, e, b"e1", value).unwrap();
    sim.crash();
    drop(db);
    let db = quiet_us_eu_off(sim, DIR).unwrap();
    (db, e, u)
}

// Guard: unsettled region blocks free answers and claims until forfeit.
/// Guard (a): while eu is unsettled no value may be reported free or claimed elsewhere.
#[test]
fn unsettled_region_blocks_free_answers_and_claims_until_forfeit() {
    let sim = SimStorage::new();
    let (db, _e, u) = unsettled_eu(&sim, "v@x");
    assert!(matches!(
        db.is_taken("email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    assert!(matches!(
        db.find_unique(&T, "email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    assert!(matches!(w.commit(), Err(Error::RegionUnsettled(_))));
    // Disabling another region at run time, checkpoints, close and a plain reopen keep it
    // unsettled.
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    assert!(matches!(
        db.is_taken("email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    drop(db);
    sim.crash();
    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    assert!(matches!(
        db.is_taken("email", "v@x"),
        Err(Error::RegionUnsettled(_))
    ));
    let f = db.forfeit_unsettled("eu").unwrap();
    assert!(f.was_unsettled);
    assert!(!db.is_taken("email", "v@x").unwrap());
}

// Guard: forfeit then other claims then return reports claims lost.
/// Guard (a): forfeit, another record takes the value, eu returns: eu's record loses it
/// (claims_lost) and exactly one owner remains.
#[test]
fn forfeit_then_other_claims_then_return_reports_claims_lost() {
    let sim = SimStorage::new();
    let (db, _e, u) = unsettled_eu(&sim, "v@x");
    db.forfeit_unsettled("eu").unwrap();
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    w.commit().unwrap();
    db.close().unwrap();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let lost = &db.recovery_report().claims_lost;
    assert_eq!(lost.len(), 1, "{lost:?}");
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), u);
    let a = db.audit().unwrap();
    assert!(a.is_clean(), "{a}");
}

// Regression (fixed since): forfeited claim nobody took is lost when a rolled back claim
//   masked it.
/// (a) "Nothing is lost for values nobody took" (Db::forfeit_unsettled). After a forfeit,
/// a claim of the value in us is reserved (its Reserve is synced: the first unique write
/// of us since the open) and its region commit fails; power is lost. At the next open,
/// with eu back, recovery replays eu's marker *before* rolling back in-flight entries:
/// the newer in-flight entry of us makes the replay keep it, then the rollback deletes
/// it, so nobody owns the value and eu's record has it taken off as "lost". The us write
/// was never applied, so nobody took the value: eu's acknowledged claim must survive.
#[test]
fn forfeited_claim_nobody_took_is_lost_when_a_rolled_back_claim_masked_it() {
    let sim = SimStorage::new();
    let (db, e, u) = unsettled_eu(&sim, "v@x");
    db.forfeit_unsettled("eu").unwrap();
    // us's region file dies before its commit writes anything.
    claim_on_a_dying_file_then_power_loss(&sim, db, "us", u, b"u1");

    let db = quiet_us_eu(&sim, DIR).unwrap();
    let us_applied = db.read(u).unwrap().get(&T, b"u1").unwrap().is_some();
    assert!(!us_applied, "the failed us write must not be there");
    // Nobody took the value: eu's record, whose write was acknowledged, still owns it.
    let report = db.recovery_report();
    let hit = db.find_unique(&T, "email", "v@x").unwrap();
    assert!(
        hit.as_ref()
            .is_some_and(|h| h.account() == e && h.key() == b"e1"),
        "eu's acknowledged claim was lost though nobody took the value: find_unique = {:?}, \
         claims_lost = {:?}",
        hit.map(|h| (h.account(), h.key().to_vec())),
        report.claims_lost
    );
    assert!(report.claims_lost.is_empty(), "{:?}", report.claims_lost);
}

// Regression (fixed since): drop without close then reopen is refused while the timer holds
//   the store.
/// Drop without close, then open again at once: the checkpoint timer thread upgrades its
/// weak handle and runs a checkpoint while holding the store; if the user's last handle
/// drops then, the store (and its registration in the per-process registry) lives on in
/// the timer thread, and the reopen is refused as "already open in this process".
#[test]
fn drop_without_close_then_reopen_is_refused_while_the_timer_holds_the_store() {
    let sim = SimStorage::new();
    let open = || {
        Db::builder()
            .storage(sim.clone())
            .region("us")
            .checkpoint_budget(1 << 20, Duration::from_millis(1))
            .open("/drop")
    };
    let db = open().unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    drop(db);
    for i in 0..300u32 {
        let db = open().unwrap_or_else(|e| {
            panic!("iteration {i}: reopen after dropping the only handle refused: {e}")
        });
        let mut w = db.write(a).unwrap();
        let v = format!("v{i}");
        w.insert_unique(&T, b"k", b"x", &[Unique::new("email", &v)])
            .unwrap();
        w.commit().unwrap();
        // Give the timer a tick to find the checkpoint overdue.
        std::thread::sleep(Duration::from_micros(1500));
        drop(db);
    }
}

/// Opens the store at `DIR` on a [`quiet_builder`] with regions us, eu and ap, `disabled`
/// (if any) disabled.
fn us_eu_ap(sim: &SimStorage, disabled: Option<&str>) -> Db {
    let mut b = quiet_builder(sim);
    for r in ["us", "eu", "ap"] {
        b = if disabled == Some(r) {
            b.disable_region(r)
        } else {
            b.region(r)
        };
    }
    b.open(DIR).unwrap()
}

// Regression (fixed since): forfeit then inflight claim elsewhere leaves a second owner.
/// (a) + I1/I2: eu's claim is forfeited; a record of ap claims the value, its Reserve is
/// durable (first unique write of ap: synced) and its region commit fails (outcome
/// unknown); power is lost. Reopened with eu back and ap disabled: recovery used to keep
/// eu's claim on eu's record because the entry was in flight (ap's); when ap returned and
/// its claim rolled back, the value had no entry while eu's record still listed it, and a
/// third record could claim it: two owners. Now eu's record gives the forfeited value up
/// (reported in `claims_lost`) and the value has one owner at most, whoever claims it.
#[test]
fn forfeit_then_inflight_claim_elsewhere_leaves_a_second_owner() {
    let sim = SimStorage::new();
    let db = us_eu_ap(&sim, None);
    let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
    let a = db.create_account(NewAccount::new("a", "ap")).unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim_home(&db, e, b"e0", "warmup").unwrap();
    claim_home(&db, e, b"e1", "v@x").unwrap();
    sim.crash();
    drop(db);

    let db = us_eu_ap(&sim, Some("eu"));
    db.forfeit_unsettled("eu").unwrap();
    claim_on_a_dying_file_then_power_loss(&sim, db, "ap", a, b"a1");

    // eu back, ap disabled.
    let db = us_eu_ap(&sim, Some("ap"));
    // The forfeited claim met ap's claim of the same value (its outcome still unknown):
    // eu's record gives the value up, and says so.
    let lost = db.recovery_report().claims_lost;
    assert!(
        lost.iter().any(|l| l.region == "eu" && l.key == b"e1"),
        "eu's forfeited claim, taken meanwhile, must be reported lost: {lost:?}"
    );
    db.close().unwrap();
    // Everything back.
    let db = us_eu_ap(&sim, None);
    let a_applied = db.read(a).unwrap().get(&T, b"a1").unwrap().is_some();
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "I1/I2: {audit}");
    // A third record tries the value: refused while anyone owns it; if it succeeds,
    // nobody else may still own it.
    let mut w = db.write(u).unwrap();
    w.insert_unique(&T, b"u1", b"x", &[Unique::new("email", "v@x")])
        .unwrap();
    let third = w.commit();
    match &third {
        Err(Error::UniqueViolation { .. }) => assert!(a_applied, "refused, but nobody owns it"),
        Ok(()) => {
            assert!(
                !a_applied,
                "ap's record owns it, and so does a third record"
            );
            let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
            assert_eq!(hit.account(), u);
        }
        other => panic!("third claim: {other:?}"),
    }
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "I1/I2 after the third claim: {audit}");
}

// ======================================================================================
// `forfeit_unsettled` of a region disabled at run time while
// it holds a write of unknown outcome (poisoned), then restart / power loss, re-enable.
// ======================================================================================

/// kind: 0 = unknown claim of z@x, 1 = unknown remove of the record owning first@x.
fn run(kind: u8, other_claims: bool, crash: bool, disabled_restart: bool, clean_close: bool) {
    let tag = format!(
        "kind={kind} other={other_claims} crash={crash} dis_restart={disabled_restart} close={clean_close}"
    );
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let e = db
        .create_account(NewAccount::new("e", "eu").allow("us").max_records(3))
        .unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "eu", b"k0", "first@x").unwrap();
    let target = if kind == 0 { "z@x" } else { "first@x" };
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Syncs);
    let r = if kind == 0 {
        claim(&db, e, "eu", b"k", "z@x")
    } else {
        remove(&db, e, "eu", b"k0")
    };
    assert!(
        matches!(r, Err(Error::OutcomeUnknown { .. })),
        "{tag}: {r:?}"
    );
    sim.clear_fault();
    let d = db.disable_region("eu");
    assert!(d.is_ok(), "{tag}: disable {d:?}");
    let f = db.forfeit_unsettled("eu");
    eprintln!(
        "{tag}: forfeit {f:?} is_taken {:?}",
        db.is_taken("email", target)
    );
    let mut u_owns = false;
    if other_claims {
        let c = claim(&db, u, "us", b"uk", target);
        eprintln!("{tag}: u claim {c:?}");
        u_owns = c.is_ok();
    }
    // e in us while eu disabled with unknown counts: limited account must not grow
    let g = claim(&db, e, "us", b"eus", "eus@x");
    eprintln!("{tag}: e grows in us {g:?}");
    let e_us = g.is_ok();
    if clean_close {
        db.close().unwrap();
    } else {
        drop(db);
    }
    if disabled_restart {
        let db = quiet_us_eu_off(&sim, DIR).unwrap();
        assert!(db.audit().unwrap().is_clean(), "{tag}: audit eu-off");
        if crash {
            drop(db);
            sim.crash();
        } else {
            db.close().unwrap();
        }
    } else if crash {
        sim.crash();
    }
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let rep = db.recovery_report();
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{tag}: audit {:?}", audit.findings());
    let h = db
        .find_unique(&T, "email", target)
        .unwrap()
        .map(|h| (h.account(), h.key().to_vec()));
    let rec_k = db
        .read(e)
        .unwrap()
        .get(&T, if kind == 0 { &b"k"[..] } else { b"k0" })
        .unwrap()
        .is_some();
    let lost: Vec<_> = rep
        .claims_lost
        .iter()
        .map(|l| (l.account, l.key.clone(), l.namespace.clone()))
        .collect();
    eprintln!("{tag}: owner {h:?} rec {rec_k} lost {lost:?}");
    if u_owns {
        // u's acked claim must survive
        assert_eq!(
            h,
            Some((u, b"uk".to_vec())),
            "{tag}: u's acked claim lost; lost={lost:?}"
        );
    }
    if kind == 0 {
        let e_lost = lost.iter().any(|l| l.0 == e && l.1 == b"k");
        if rec_k {
            // e's record exists: either it owns z@x or it is in claims_lost
            assert!(
                h == Some((e, b"k".to_vec())) || e_lost,
                "{tag}: record k exists, owner {h:?}, lost {lost:?}"
            );
            if h == Some((e, b"k".to_vec())) {
                assert!(!e_lost, "{tag}: listed lost but owns");
            }
        } else {
            assert!(
                !e_lost,
                "{tag}: claims_lost lists a record that does not exist: {lost:?}"
            );
        }
    } else {
        // remove: if k0 still exists it must own first@x unless u took it (then lost)
        let e_lost = lost.iter().any(|l| l.0 == e && l.1 == b"k0");
        if rec_k && !u_owns {
            assert_eq!(
                h,
                Some((e, b"k0".to_vec())),
                "{tag}: k0 exists, owner {h:?}"
            );
        }
        if rec_k && u_owns {
            assert!(
                e_lost,
                "{tag}: k0 exists, u owns, not in claims_lost {lost:?}"
            );
        }
        if !rec_k {
            assert!(!e_lost, "{tag}");
        }
    }
    // quota: e has at most 3 records across regions
    let mut n = 0;
    for reg in ["us", "eu"] {
        let rd = db.read(e).unwrap();
        for k in [&b"k0"[..], b"k", b"eus", b"q1", b"q2", b"q3"] {
            if rd.get_in(reg, &T, k).map(|r| r.is_some()).unwrap_or(false) {
                n += 1;
            }
        }
    }
    let _ = e_us;
    for i in 0..5 {
        let _ = claim(&db, e, "us", format!("q{i}").as_bytes(), &format!("q{i}@x"));
    }
    let mut n2 = 0;
    let rd = db.read(e).unwrap();
    for r in db.scan_all(&T).unwrap() {
        let r = r.unwrap();
        if r.account() == e {
            n2 += 1;
        }
    }
    drop(rd);
    assert!(
        n2 <= 3,
        "{tag}: e has {n2} records (before fill: {n}), max 3"
    );
    assert!(db.audit().unwrap().is_clean(), "{tag}: final audit");
}

// Guard: unknown claim / unknown remove x another claimant x power loss x eu-disabled
//   restart x clean close: one owner, audit clean, claims_lost lists exactly the surviving
//   record that lost its value, the limited account cannot grow past max_records.
#[test]
fn poisoned_then_disabled_then_forfeited_matrix() {
    for kind in 0..2 {
        for other in [false, true] {
            for crash in [false, true] {
                for dr in [false, true] {
                    for cc in [false, true] {
                        run(kind, other, crash, dr, cc);
                    }
                }
            }
        }
    }
}

// Guard: e's claim is listed lost even though u released the value again: conservative,
//   audit clean.
/// The forfeited value is taken by u, then RELEASED by u (tombstone newer than eu's
/// unknown claim), then eu returns (no power loss: its live image holds e's claim).
#[test]
fn forfeited_value_taken_then_released_then_region_returns() {
    for restart_between in [false, true] {
        for crash_at_end in [false, true] {
            let tag = format!("restart_between={restart_between} crash_at_end={crash_at_end}");
            let sim = SimStorage::new();
            let db = quiet_us_eu(&sim, DIR).unwrap();
            let (e, u) = e_and_u(&db);
            claim(&db, e, "eu", b"k0", "first@x").unwrap();
            sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Syncs);
            let r = claim(&db, e, "eu", b"k", "z@x");
            assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
            sim.clear_fault();
            db.disable_region("eu").unwrap();
            db.forfeit_unsettled("eu").unwrap();
            claim(&db, u, "us", b"uk", "z@x").unwrap();
            let db = if restart_between {
                db.close().unwrap();
                quiet_us_eu_off(&sim, DIR).unwrap()
            } else {
                db
            };
            remove(&db, u, "us", b"uk").unwrap();
            db.checkpoint().unwrap();
            drop(db);
            if crash_at_end {
                sim.crash();
            }
            let db = quiet_us_eu(&sim, DIR).unwrap();
            let rep = db.recovery_report();
            let audit = db.audit().unwrap();
            let h = db
                .find_unique(&T, "email", "z@x")
                .unwrap()
                .map(|h| (h.account(), h.key().to_vec()));
            let rec = db.read(e).unwrap().get(&T, b"k").unwrap().is_some();
            eprintln!(
                "{tag}: owner {h:?} rec {rec} lost {:?} audit {:?}",
                rep.claims_lost,
                audit.findings()
            );
            assert!(audit.is_clean(), "{tag}: audit {:?}", audit.findings());
            // value must be claimable by someone or owned by e's record
            if h.is_none() {
                let w = db.create_account(NewAccount::new("w", "us")).unwrap();
                claim(&db, w, "us", b"wk", "z@x").unwrap();
                let audit = db.audit().unwrap();
                assert!(
                    audit.is_clean(),
                    "{tag}: after w claims: {:?}",
                    audit.findings()
                );
            }
            db.close().unwrap();
        }
    }
}

// ======================================================================================
// A Releasing entry of a disabled region across a power loss, a forfeit and the return.
// ======================================================================================

// Guard: a Releasing entry left in flight in a disabled region, then a forfeit, then its return.
/// I1/I3: a release whose region commit fails before writing (outcome unknown), made
/// durable in the global file by a later synced commit (create_account), then a power
/// loss and a reopen with that region disabled: the Releasing entry stays in flight (the
/// value is held, not claimable, and whether it is taken is unknown); a forfeit restores the committed owner; when
/// the region returns, exactly one record owns the value and the audit is clean.
#[test]
fn releasing_entry_left_in_flight_in_a_disabled_region_then_forfeit_then_return() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    claim(&db, e, "eu", b"e1", "v@x").unwrap();
    db.checkpoint().unwrap();
    // Release v: eu's file dies before the region commit writes anything.
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Any);
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e1", b"y", &[]).unwrap();
    let r = w.commit();
    assert!(r.is_err(), "{r:?}");
    sim.clear_fault();
    // A synced global commit makes the Releasing entry durable.
    db.create_account(NewAccount::new("w", "us")).unwrap();
    sim.crash();
    drop(db);

    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    // Owned (and being released) by a record of the unsettled region: unknown.
    let t = db.is_taken("email", "v@x");
    assert!(
        matches!(&t, Err(Error::RegionUnsettled(r)) if r == "eu"),
        "{t:?}"
    );
    let r = claim_home(&db, u, b"u1", "v@x");
    assert!(
        matches!(&r, Err(Error::RegionUnsettled(r)) if r == "eu"),
        "{r:?}"
    );
    db.forfeit_unsettled("eu").unwrap();
    assert!(db.is_taken("email", "v@x").unwrap());
    let r = claim_home(&db, u, b"u1", "v@x");
    assert!(matches!(r, Err(Error::UniqueViolation { .. })), "{r:?}");
    db.close().unwrap();

    let db = quiet_us_eu(&sim, DIR).unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), e);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}
