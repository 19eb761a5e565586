//! Adversarial review, round 6: `forfeit_unsettled` of a region disabled at run time while
//! it holds a write of unknown outcome (poisoned), then restart / power loss, re-enable.
//!
//! passes (guard): poisoned_then_disabled_then_forfeited_matrix (unknown claim / unknown
//!   remove x another claimant x power loss x eu-disabled restart x clean close: one owner,
//!   audit clean, claims_lost lists exactly the surviving record that lost its value,
//!   the limited account cannot grow past max_records)
//! passes (guard): forfeited_value_taken_then_released_then_region_returns (e's claim is
//!   listed lost even though u released the value again: conservative, audit clean)

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/f";
const EU: &str = "/f/regions/eu.redb";

fn b(sim: &SimStorage) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}
fn all(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").region("eu").open(DIR)
}
fn eu_off(sim: &SimStorage) -> regionkv::Result<Db> {
    b(sim).region("us").disable_region("eu").open(DIR)
}
fn claim(db: &Db, a: AccountId, region: &str, key: &[u8], v: &str) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert_unique(&T, key, b"x", &[Unique::new("email", v)])?;
    w.commit()
}
fn remove(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.remove(&T, key)?;
    w.commit()
}

/// kind: 0 = unknown claim of z@x, 1 = unknown remove of the record owning first@x.
fn run(kind: u8, other_claims: bool, crash: bool, disabled_restart: bool, clean_close: bool) {
    let tag = format!(
        "kind={kind} other={other_claims} crash={crash} dis_restart={disabled_restart} close={clean_close}"
    );
    let sim = SimStorage::new();
    let db = all(&sim).unwrap();
    let e = db
        .create_account(NewAccount::new("e", "eu").allow("us").max_records(3))
        .unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    claim(&db, e, "eu", b"k0", "first@x").unwrap();
    let target = if kind == 0 { "z@x" } else { "first@x" };
    sim.fail_file_after(EU, 0, FaultOn::Syncs);
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
        let db = eu_off(&sim).unwrap();
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
    let db = all(&sim).unwrap();
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
        .get(&T, if kind == 0 { b"k" } else { b"k0" })
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

/// The forfeited value is taken by u, then RELEASED by u (tombstone newer than eu's
/// unknown claim), then eu returns (no power loss: its live image holds e's claim).
#[test]
fn forfeited_value_taken_then_released_then_region_returns() {
    for restart_between in [false, true] {
        for crash_at_end in [false, true] {
            let tag = format!("restart_between={restart_between} crash_at_end={crash_at_end}");
            let sim = SimStorage::new();
            let db = all(&sim).unwrap();
            let e = db.create_account(NewAccount::new("e", "eu")).unwrap();
            let u = db.create_account(NewAccount::new("u", "us")).unwrap();
            claim(&db, e, "eu", b"k0", "first@x").unwrap();
            sim.fail_file_after(EU, 0, FaultOn::Syncs);
            let r = claim(&db, e, "eu", b"k", "z@x");
            assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
            sim.clear_fault();
            db.disable_region("eu").unwrap();
            db.forfeit_unsettled("eu").unwrap();
            claim(&db, u, "us", b"uk", "z@x").unwrap();
            let db = if restart_between {
                db.close().unwrap();
                eu_off(&sim).unwrap()
            } else {
                db
            };
            remove(&db, u, "us", b"uk").unwrap();
            db.checkpoint().unwrap();
            drop(db);
            if crash_at_end {
                sim.crash();
            }
            let db = all(&sim).unwrap();
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
