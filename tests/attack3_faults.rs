//! Adversarial review, round 3: I/O faults WITHOUT a power loss, swept over every counted
//! operation of each public operation: `fail_after(n, kind)`, run the operation, then
//! `clear_fault()`, drop the Db and reopen (no crash). Contract: `Ok` = the effect is there;
//! an error other than `OutcomeUnknown` = no trace; `OutcomeUnknown` = settled one way
//! everywhere. The store always reopens and audits clean.
//!
//! passes (guard): `unique_claim_no_power_loss_sweep` (Any/Writes/Syncs)
//! passes (guard): `unique_remove_no_power_loss_sweep`
//! passes (guard): `create_account_no_power_loss_sweep`
//! passes (guard): `checkpoint_and_close_no_power_loss_sweep`
//! passes (guard): `runtime_disable_no_power_loss_sweep`
//! passes (guard): `reconfiguring_open_no_power_loss_sweep` (add ap / disable eu at open /
//!   enable eu again)
//! passes (guard): `forfeit_no_power_loss_sweep`

use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/f";

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

fn remove(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.remove(&T, key)?;
    w.commit()
}

/// The base store: account a (eu, allows us), a0 owned by eu/k0, a1 owned by us/k1,
/// checkpointed; then one more claim in eu so that the next one has an unsynced Reserve.
fn base(sim: &SimStorage) -> (Db, AccountId) {
    let db = all(sim).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "eu").allow("us").max_records(10))
        .unwrap();
    claim(&db, a, "eu", b"k0", "a0").unwrap();
    claim(&db, a, "us", b"k1", "a1").unwrap();
    db.checkpoint().unwrap();
    (db, a)
}

fn owner(db: &Db, v: &str) -> Option<(AccountId, String, Vec<u8>)> {
    db.find_unique(&T, "email", v).unwrap().map(|h| {
        (
            h.account(),
            db.region_name(h.region()).unwrap(),
            h.key().to_vec(),
        )
    })
}

fn has(db: &Db, a: AccountId, region: &str, key: &[u8]) -> bool {
    db.read(a)
        .unwrap()
        .get_in(region, &T, key)
        .unwrap()
        .is_some()
}

fn audit_clean(db: &Db, what: &str) {
    let r = db.audit().unwrap();
    assert!(r.is_clean(), "{what}: audit {:?}", r.findings());
}

/// Runs `op` on the base store under `fail_after(n, on)` for every n until the fault no
/// longer trips; after each, reopens without a power loss and calls `check(db, result)`.
fn sweep(
    on: FaultOn,
    op: impl Fn(&Db, AccountId) -> regionkv::Result<()>,
    check: impl Fn(&Db, AccountId, &regionkv::Result<()>, &str) -> Result<(), String>,
) -> Vec<String> {
    let mut bad = Vec::new();
    for n in 0..400u64 {
        let sim = SimStorage::new();
        let (db, a) = base(&sim);
        sim.fail_after(n, on);
        let r = op(&db, a);
        let tripped = sim.fault_tripped();
        sim.clear_fault();
        drop(db);
        let what = format!("{on:?} n={n} result {r:?}");
        match all(&sim) {
            Ok(db) => {
                if let Err(e) = check(&db, a, &r, &what) {
                    bad.push(e);
                }
                let au = db.audit().unwrap();
                if !au.is_clean() {
                    bad.push(format!("{what}: audit {:?}", au.findings()));
                }
            }
            Err(e) => bad.push(format!("{what}: reopen failed: {e}")),
        }
        if !tripped {
            let min = if on == FaultOn::Syncs { 1 } else { 4 };
            assert!(n >= min, "{on:?}: the sweep covered only {n} steps");
            return bad;
        }
    }
    panic!("sweep did not end");
}

fn effect_matches(r: &regionkv::Result<()>, present: bool, what: &str) -> Result<(), String> {
    match r {
        Ok(()) if !present => Err(format!(
            "{what}: acknowledged, effect missing after restart"
        )),
        Err(Error::OutcomeUnknown { .. }) => Ok(()),
        Err(_) if present => Err(format!("{what}: failed, yet effect present after restart")),
        _ => Ok(()),
    }
}

#[test]
fn unique_claim_no_power_loss_sweep() {
    let mut bad = Vec::new();
    for on in [FaultOn::Any, FaultOn::Writes, FaultOn::Syncs] {
        bad.extend(sweep(
            on,
            |db, a| claim(db, a, "eu", b"k2", "a2"),
            |db, a, r, what| {
                let rec = has(db, a, "eu", b"k2");
                let own = owner(db, "a2");
                if rec != own.is_some() {
                    return Err(format!("{what}: record {rec} but owner {own:?}"));
                }
                effect_matches(r, rec, what)
            },
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn unique_remove_no_power_loss_sweep() {
    let mut bad = Vec::new();
    for on in [FaultOn::Any, FaultOn::Syncs] {
        bad.extend(sweep(
            on,
            |db, a| remove(db, a, "us", b"k1"),
            |db, a, r, what| {
                let rec = has(db, a, "us", b"k1");
                let taken = db.is_taken("email", "a1").unwrap();
                if rec != taken {
                    return Err(format!("{what}: record {rec} but taken {taken}"));
                }
                effect_matches(r, !rec, what)
            },
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn create_account_no_power_loss_sweep() {
    let mut bad = Vec::new();
    for on in [FaultOn::Any, FaultOn::Syncs] {
        bad.extend(sweep(
            on,
            |db, _| db.create_account(NewAccount::new("b", "us")).map(|_| ()),
            |db, _, r, what| effect_matches(r, db.account_id("b").unwrap().is_some(), what),
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn checkpoint_and_close_no_power_loss_sweep() {
    let mut bad = Vec::new();
    for on in [FaultOn::Any, FaultOn::Syncs] {
        bad.extend(sweep(
            on,
            |db, a| {
                claim(db, a, "eu", b"k2", "a2")?;
                db.checkpoint()?;
                claim(db, a, "us", b"k3", "a3")?;
                db.clone().close()
            },
            |db, a, _r, what| {
                for (k, v, region) in [(b"k0", "a0", "eu"), (b"k1", "a1", "us")] {
                    if owner(db, v) != Some((a, region.into(), k.to_vec())) {
                        return Err(format!("{what}: {v} lost: {:?}", owner(db, v)));
                    }
                }
                for (k, v, region) in [(b"k2", "a2", "eu"), (b"k3", "a3", "us")] {
                    let rec = has(db, a, region, k);
                    let own = owner(db, v);
                    if rec != own.is_some() {
                        return Err(format!("{what}: {v}: record {rec}, owner {own:?}"));
                    }
                }
                Ok(())
            },
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn runtime_disable_no_power_loss_sweep() {
    let mut bad = Vec::new();
    for on in [FaultOn::Any, FaultOn::Syncs] {
        for n in 0..400u64 {
            let sim = SimStorage::new();
            let (db, a) = base(&sim);
            claim(&db, a, "eu", b"k2", "a2").unwrap();
            sim.fail_after(n, on);
            let r = db.disable_region("eu");
            let tripped = sim.fault_tripped();
            sim.clear_fault();
            drop(db);
            let what = format!("{on:?} n={n} disable {r:?}");
            let only_us = b(&sim).region("us").open(DIR);
            let disabled = only_us.is_ok();
            if let Ok(db) = only_us {
                for v in ["a0", "a2"] {
                    match db.is_taken("email", v) {
                        Ok(true) | Err(Error::RegionUnsettled(_)) => {}
                        other => bad.push(format!("{what}: {v} is_taken {other:?}")),
                    }
                }
                drop(db);
            }
            if let Err(e) = effect_matches(&r, disabled, &what) {
                bad.push(e);
            }
            match all(&sim) {
                Ok(db) => {
                    for (k, v) in [(b"k0", "a0"), (b"k2", "a2")] {
                        if owner(&db, v) != Some((a, "eu".into(), k.to_vec())) {
                            bad.push(format!("{what}: {v} owner {:?}", owner(&db, v)));
                        }
                    }
                    audit_clean(&db, &what);
                }
                Err(e) => bad.push(format!("{what}: reopen with eu: {e}")),
            }
            if !tripped {
                break;
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// An open that changes the configuration (adds ap / disables eu at open / brings eu
/// back) fails at every counted step; the volume comes back (no power loss). The store
/// must open with the previous configuration or with the new one, and keep every claim.
#[test]
fn reconfiguring_open_no_power_loss_sweep() {
    type Cfg = fn(&SimStorage) -> regionkv::Result<Db>;
    let add_ap: Cfg = |s| b(s).region("us").region("eu").region("ap").open(DIR);
    let eu_off: Cfg = |s| b(s).region("us").disable_region("eu").open(DIR);
    let mut bad = Vec::new();
    // (name, setup before the faulty open, the faulty open, the previous configuration)
    let cases: [(&str, bool, Cfg, Cfg); 3] = [
        ("add ap", false, add_ap, all),
        ("disable eu at open", false, eu_off, all),
        ("enable eu again", true, all, eu_off),
    ];
    for (name, eu_disabled_first, new, old) in cases {
        for on in [FaultOn::Any, FaultOn::Syncs] {
            for n in 0..400u64 {
                let sim = SimStorage::new();
                let (db, a) = base(&sim);
                drop(db);
                if eu_disabled_first {
                    eu_off(&sim).unwrap().close().unwrap();
                }
                sim.fail_after(n, on);
                let r = new(&sim);
                let tripped = sim.fault_tripped();
                let ok = r.is_ok();
                drop(r);
                sim.clear_fault();
                let what = format!("{name} {on:?} n={n} (open ok: {ok})");
                let reopened = match old(&sim) {
                    Ok(db) => Ok(db),
                    Err(e1) => new(&sim).map_err(|e2| format!("old: {e1}; new: {e2}")),
                };
                match reopened {
                    Ok(db) => {
                        let a0 = db.is_taken("email", "a0");
                        let a1 = db.is_taken("email", "a1");
                        if !matches!(a0, Ok(true) | Err(Error::RegionUnsettled(_)))
                            || !matches!(a1, Ok(true) | Err(Error::RegionUnsettled(_)))
                        {
                            bad.push(format!("{what}: a0 {a0:?} a1 {a1:?}"));
                        }
                        drop(db);
                        let _ = a;
                    }
                    Err(e) => bad.push(format!("{what}: neither configuration opens: {e}")),
                }
                if let Ok(db) = add_ap(&sim).or_else(|_| all(&sim)) {
                    audit_clean(&db, &what);
                } else {
                    bad.push(format!("{what}: full configuration does not open"));
                }
                if !tripped {
                    break;
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `forfeit_unsettled` fails at every counted step (no power loss): an error other than
/// OutcomeUnknown must leave the region unsettled after a restart.
#[test]
fn forfeit_no_power_loss_sweep() {
    let mut bad = Vec::new();
    for on in [FaultOn::Any, FaultOn::Syncs] {
        for n in 0..400u64 {
            let sim = SimStorage::new();
            let (db, a) = base(&sim);
            claim(&db, a, "eu", b"k2", "a2").unwrap(); // eu dirty, a2 only in eu's marker
            sim.crash();
            drop(db);
            let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
            assert!(matches!(
                db.is_taken("email", "zz"),
                Err(Error::RegionUnsettled(_))
            ));
            sim.fail_after(n, on);
            let r = db.forfeit_unsettled("eu");
            let tripped = sim.fault_tripped();
            sim.clear_fault();
            drop(db);
            let what = format!("{on:?} n={n} forfeit {r:?}");
            let db = b(&sim).region("us").disable_region("eu").open(DIR).unwrap();
            let settled = db.is_taken("email", "zz").is_ok();
            let r = r.map(|_| ());
            if let Err(e) = effect_matches(&r, settled, &what) {
                bad.push(e);
            }
            drop(db);
            let db = all(&sim).unwrap();
            audit_clean(&db, &what);
            if !tripped {
                break;
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
