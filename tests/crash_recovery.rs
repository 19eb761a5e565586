//! Faults and power losses at every step of the run-time operations and of recovery.
//! Contract: `Ok` = the effect is there; an error other than `OutcomeUnknown` = no trace,
//! also for a restart without a power loss (SimStorage keeps the live image of a file whose
//! fsync failed); `OutcomeUnknown` = settled one way everywhere (records, unique index,
//! record counts). The store always reopens and audits clean.

mod common;

use common::T;
use common::sim::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};

// ======================================================================================
// power loss at every I/O step of the run-time operator
// paths: `disable_region`, `forfeit_unsettled`, and the open that brings a forfeited
// region back (claims_lost reconciliation).
// ======================================================================================

const DIR: &str = "/c";

// Guard: 41 steps: acked claims of the region stay taken while it is disabled, and owned by
//   their records once back.
#[test]
fn crash_at_every_step_of_a_runtime_disable() {
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        let e = db
            .create_account(NewAccount::new("e", "eu").max_records(10))
            .unwrap();
        let u = db.create_account(NewAccount::new("u", "us")).unwrap();
        let vals: Vec<String> = (0..4).map(|i| format!("v{i}@x")).collect();
        for (i, v) in vals.iter().enumerate() {
            claim(&db, e, "eu", format!("e{i}").as_bytes(), v).unwrap();
        }
        sim.fail_after(n, FaultOn::Any);
        let r = db.disable_region("eu");
        let tripped = sim.fault_tripped();
        sim.crash();
        drop(db);

        let db = quiet_us_eu_off(&sim, DIR).unwrap();
        for v in &vals {
            match db.is_taken("email", v) {
                Ok(true) | Err(Error::RegionUnsettled(_)) => {}
                other => {
                    panic!("n={n} ({r:?}): acked {v} owned in disabled eu: is_taken {other:?}")
                }
            }
            let c = claim(&db, u, "us", format!("u-{v}").as_bytes(), v);
            assert!(
                c.is_err(),
                "n={n} ({r:?}): us claimed {v}, owned in disabled eu"
            );
        }
        db.close().unwrap();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        for (i, v) in vals.iter().enumerate() {
            let h = db.find_unique(&T, "email", v).unwrap();
            assert!(
                h.as_ref()
                    .is_some_and(|h| h.account() == e && h.key() == format!("e{i}").as_bytes()),
                "n={n} ({r:?}): owner of {v}: {:?}",
                h.map(|h| h.account())
            );
        }
        let audit = db.audit().unwrap();
        assert!(audit.is_clean(), "n={n}: {audit} {:?}", audit.findings());
        db.close().unwrap();
        if !tripped {
            break;
        }
        n += 1;
    }
    eprintln!("disable sweep: {n} steps");
}

/// eu holds an acked claim of `v` the global file lost; reopened with eu disabled.
fn unsettled(sim: &SimStorage) -> (Db, AccountId, AccountId) {
    let db = quiet_us_eu(sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    claim(&db, e, "eu", b"e0", "warm@x").unwrap();
    claim(&db, e, "eu", b"e1", "v@x").unwrap();
    claim(&db, e, "eu", b"e2", "w@x").unwrap();
    sim.crash();
    drop(db);
    (quiet_us_eu_off(sim, DIR).unwrap(), e, u)
}

// Guard: crash inside forfeit x crash inside the returning open, with an eu-disabled open
//   in between.
#[test]
fn crash_at_every_step_of_forfeit_then_of_the_return() {
    // Outer: crash inside forfeit. Inner: crash inside the open that brings eu back.
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let (db, e, u) = unsettled(&sim);
        sim.fail_after(n, FaultOn::Any);
        let f = db.forfeit_unsettled("eu");
        let tripped = sim.fault_tripped();
        sim.crash();
        drop(db);
        let db = quiet_us_eu_off(&sim, DIR).unwrap();
        if matches!(db.is_taken("email", "zzz"), Err(Error::RegionUnsettled(_))) {
            db.forfeit_unsettled("eu").unwrap();
        }
        claim(&db, u, "us", b"u1", "v@x").unwrap();
        db.close().unwrap();
        let snapshot: Vec<_> = sim
            .paths()
            .into_iter()
            .map(|p| (sim.live_bytes(&p), p))
            .collect();

        let mut m = 0u64;
        loop {
            for (bytes, p) in &snapshot {
                sim.set_bytes(p, bytes.clone().unwrap());
            }
            sim.fail_after(m, FaultOn::Any);
            let r = quiet_us_eu(&sim, DIR);
            let inner_tripped = sim.fault_tripped();
            drop(r);
            sim.crash();
            // In between: once with eu disabled (u drops v, then claims it back).
            {
                let db = quiet_us_eu_off(&sim, DIR).unwrap();
                let mut w = db.write(u).unwrap();
                w.remove(&T, b"u1").unwrap();
                w.commit().unwrap();
                claim(&db, u, "us", b"u1", "v@x").unwrap();
                db.close().unwrap();
            }
            let db = quiet_us_eu(&sim, DIR).unwrap();
            let h = db.find_unique(&T, "email", "v@x").unwrap();
            assert!(
                h.as_ref().is_some_and(|h| h.account() == u),
                "n={n} ({f:?}) m={m}: owner of v: {:?}",
                h.map(|h| (h.account(), h.key().to_vec()))
            );
            let hw = db.find_unique(&T, "email", "w@x").unwrap();
            assert!(
                hw.as_ref()
                    .is_some_and(|h| h.account() == e && h.key() == b"e2"),
                "n={n} m={m}: w, claimed by eu and taken by nobody, must stay with e2: {:?}",
                hw.map(|h| (h.account(), h.key().to_vec()))
            );
            let audit = db.audit().unwrap();
            assert!(
                audit.is_clean(),
                "n={n} m={m}: {audit} {:?}",
                audit.findings()
            );
            db.close().unwrap();
            if !inner_tripped {
                break;
            }
            m += 1;
        }
        if !tripped {
            break;
        }
        n += 1;
    }
}

// ======================================================================================
// I/O faults WITHOUT a power loss.
//
// `SimStorage` keeps the live image of a file whose fsync failed: redb had already written
// the commit's pages and header, so a process that reopens the store without a power loss
// (the volume came back, the service was restarted) sees that commit. The contract: an
// error other than `OutcomeUnknown` leaves no trace; an `OutcomeUnknown` write settles one
// way *everywhere* (records, unique index, and the record counts quotas use).
// ======================================================================================

// Regression (fixed since): failed create account exists after restart.
/// I3: `create_account` is one synced global commit. Its fsync fails: the caller gets
/// `Error::Storage` (not `OutcomeUnknown`), i.e. "nothing was written". After a restart
/// without power loss the account exists (and a retry of the same name would get
/// `AccountNameTaken`).
#[test]
fn failed_create_account_exists_after_restart() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim).region("us").open(DIR).unwrap();
    sim.fail_file_after(sim_global(DIR), 0, FaultOn::Syncs);
    let r = db.create_account(NewAccount::new("a", "us"));
    assert!(r.is_err(), "the fault must hit create_account: {r:?}");
    let unknown = matches!(r, Err(Error::OutcomeUnknown { .. }));
    drop(db);
    sim.clear_fault(); // the volume is back; no power loss
    let db = quiet_builder(&sim).region("us").open(DIR).unwrap();
    let exists = db.account_id("a").unwrap();
    assert!(
        unknown || exists.is_none(),
        "create_account failed with {r:?} (not OutcomeUnknown), yet after a restart the \
         account exists: {exists:?}"
    );
}

// ======================================================================================
// I/O faults WITHOUT a power loss, swept over every counted
// operation of each public operation: `fail_after(n, kind)`, run the operation, then
// `clear_fault()`, drop the Db and reopen (no crash). Contract: `Ok` = the effect is there;
// an error other than `OutcomeUnknown` = no trace; `OutcomeUnknown` = settled one way
// everywhere. The store always reopens and audits clean.
// ======================================================================================

/// The base store: account a (eu, allows us), a0 owned by eu/k0, a1 owned by us/k1,
/// checkpointed; then one more claim in eu so that the next one has an unsynced Reserve.
fn base(sim: &SimStorage) -> (Db, AccountId) {
    let db = quiet_us_eu(sim, DIR).unwrap();
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
        match quiet_us_eu(&sim, DIR) {
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

// Guard: Any/Writes/Syncs.
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

// Guard: unique remove no power loss sweep.
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

// Guard: create account no power loss sweep.
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

// Guard: checkpoint and close no power loss sweep.
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

// Guard: runtime disable no power loss sweep.
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
            let only_us = quiet_builder(&sim).region("us").open(DIR);
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
            match quiet_us_eu(&sim, DIR) {
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

// Guard: add ap / disable eu at open / enable eu again.
/// An open that changes the configuration (adds ap / disables eu at open / brings eu
/// back) fails at every counted step; the volume comes back (no power loss). The store
/// must open with the previous configuration or with the new one, and keep every claim.
#[test]
fn reconfiguring_open_no_power_loss_sweep() {
    type Cfg = fn(&SimStorage) -> regionkv::Result<Db>;
    let add_ap: Cfg = |s| {
        quiet_builder(s)
            .region("us")
            .region("eu")
            .region("ap")
            .open(DIR)
    };
    let eu_off: Cfg = |s| quiet_us_eu_off(s, DIR);
    let all: Cfg = |s| quiet_us_eu(s, DIR);
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
                    quiet_us_eu_off(&sim, DIR).unwrap().close().unwrap();
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
                if let Ok(db) = add_ap(&sim).or_else(|_| quiet_us_eu(&sim, DIR)) {
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

// Guard: forfeit no power loss sweep.
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
            let db = quiet_us_eu_off(&sim, DIR).unwrap();
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
            let db = quiet_us_eu_off(&sim, DIR).unwrap();
            let settled = db.is_taken("email", "zz").is_ok();
            let r = r.map(|_| ());
            if let Err(e) = effect_matches(&r, settled, &what) {
                bad.push(e);
            }
            drop(db);
            let db = quiet_us_eu(&sim, DIR).unwrap();
            audit_clean(&db, &what);
            if !tripped {
                break;
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ======================================================================================
// doubtful regions when the `_doubtful` mark itself fails
// because the global file fails too (one volume holding every partition dies: the
// ordinary `fail_after`, not `fail_file_after`).
// ======================================================================================

// Guard: outcome unknown write on a dying volume settles one way after restart.
/// "OutcomeUnknown settles one way": a plain write in eu fails at its fsync on a dying
/// volume. After the restart (no power loss) the store shows the record; the service goes
/// on (writes in us, acknowledged), then a power loss: the record is gone again. The
/// unknown write settled "happened" in the first reopened store and "did not happen" in
/// the next, with no operation on it in between.
#[test]
fn outcome_unknown_write_on_a_dying_volume_settles_one_way_after_restart() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu"))
        .unwrap();
    put(&db, a, "eu", b"first").unwrap();
    sim.fail_after(0, FaultOn::Syncs);
    let r = put(&db, a, "eu", b"unknown");
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    sim.clear_fault();
    drop(db);

    let db = quiet_us_eu(&sim, DIR).unwrap();
    let seen = db
        .read(a)
        .unwrap()
        .get_in("eu", &T, b"unknown")
        .unwrap()
        .is_some();
    // The service acts on what it saw (here: acknowledged writes elsewhere), closes cleanly.
    put(&db, a, "us", b"after").unwrap();
    db.close().unwrap();
    sim.crash();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let after = db
        .read(a)
        .unwrap()
        .get_in("eu", &T, b"unknown")
        .unwrap()
        .is_some();
    assert!(db.read(a).unwrap().get(&T, b"after").unwrap().is_some());
    assert_eq!(
        seen,
        after,
        "the OutcomeUnknown write was {} after the restart and {} after a later power loss \
         (a clean close in between): it did not settle one way",
        if seen { "present" } else { "absent" },
        if after { "present" } else { "absent" },
    );
}

// Guard: crash inside the recovery of an outcome unknown write on a dying volume reopens.
/// The guard `crash_inside_the_recovery_of_an_outcome_unknown_write_reopens` (stale_region_files.rs), on a dying volume: the unique write in eu fails at its fsync,
/// the `_doubtful` mark fails with it, so the restart does not make eu durable before its
/// recovery raises `_region_seen[eu]` (synced) to the txn it replays from eu's live image.
/// A power loss before recovery's synced eu commit leaves a global that has "seen" a txn
/// eu's durable image never got: every later open refuses eu as a stale copy.
#[test]
fn crash_inside_the_recovery_of_an_outcome_unknown_write_on_a_dying_volume_reopens() {
    assert_restart_after_outcome_unknown_survives_power_loss(
        DIR,
        "an OutcomeUnknown write on a dying volume",
        || {
            let sim = SimStorage::new();
            let db = quiet_us_eu(&sim, DIR).unwrap();
            let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
            claim(&db, a, "eu", b"k0", "v0@x").unwrap();
            db.checkpoint().unwrap();
            claim(&db, a, "eu", b"kk", "vk@x").unwrap(); // eu dirty again (synced Reserve)
            sim.fail_after(0, FaultOn::Syncs);
            let r = claim(&db, a, "eu", b"k1", "v1@x");
            (sim, db, r)
        },
    );
}

// ======================================================================================
// traces of FAILED unique writes (an error other than
// `OutcomeUnknown`) seen by a restart, without a power loss, that has the write's region
// disabled (the volume holding eu is being replaced; the service restarts on us alone).
//
// Recipe: the first unique write in eu after a checkpoint runs the synced, dirty-marking
// Reserve (`_dirty[eu]` + the Pending entry). Its global fsync fails: `Write::commit`
// returns `Error::Storage { partition: "global" }` — "nothing was written" — and eu was
// never touched. The SimStorage live image of global.redb holds that Reserve (redb wrote
// its pages and header before the failing sync), so a restart without a power loss sees
// it. With eu enabled recovery rolls it back (no marker) — that case is covered by
// `unique_claim_no_power_loss_sweep`. With eu disabled, recovery keeps the Pending entry in flight and the
// `_dirty[eu]` row makes the whole store unsettled: the value the failed write tried to
// claim reads as taken, and every claim of any free value in any region answers
// `RegionUnsettled("eu")` until eu returns or an operator forfeits it. Without the failed
// write the store would be settled (the checkpoint had cleared eu's row).
//
// The bug was (fixed since: such a Reserve is now `OutcomeUnknown`): src/reservation/coordinator.rs `reserve`, `global.commit(w)?` (a failed
// synced commit may still be in the file — `commit_settled` treats that as
// OutcomeUnknown elsewhere), propagated unchanged by src/write.rs `reserve(...)?` in
// `Write::commit`. The error should be `OutcomeUnknown` (or the write should not leave
// durable-looking state that only an enabled eu can settle).
// ======================================================================================

/// A store with account `a` (us, allowed eu), one settled claim in eu, then a checkpoint:
/// no `_dirty` row, nothing in flight.
fn base_after_checkpoint(sim: &SimStorage) -> (Db, AccountId) {
    let db = quiet_us_eu(sim, DIR).unwrap();
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu"))
        .unwrap();
    claim(&db, a, "eu", b"k0", "v0@x").unwrap();
    db.checkpoint().unwrap();
    (db, a)
}

/// What a settled store with no trace of the failed write answers, restarted on us alone.
fn no_trace(db: &Db, a: AccountId, what: &str) -> Result<(), String> {
    match db.is_taken("email", "v1@x") {
        Ok(false) => {}
        other => {
            return Err(format!(
                "{what}: is_taken(v1) = {other:?} (v1 was only in a write that failed)"
            ));
        }
    }
    match claim(db, a, "us", b"u1", "fresh@x") {
        Ok(()) => {}
        Err(e) => {
            return Err(format!(
                "{what}: claim of an unrelated free value in us: {e:?}"
            ));
        }
    }
    match claim(db, a, "us", b"u2", "v1@x") {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{what}: claim of v1 in us: {e:?}")),
    }
}

// Regression (fixed since): failed dirty marking reserve leaves a held value and an
//   unsettled store.
#[test]
fn failed_dirty_marking_reserve_leaves_a_held_value_and_an_unsettled_store() {
    let sim = SimStorage::new();
    let (db, a) = base_after_checkpoint(&sim);
    // The next Reserve in eu is the dirty-marking one: synced. Its sync fails.
    sim.fail_file_after(sim_global(DIR), 0, FaultOn::Syncs);
    let r = claim(&db, a, "eu", b"k1", "v1@x");
    // It used to be `Storage` ("nothing was written") although the synced Reserve may be
    // durable. Now the outcome is unknown, and it settles one way.
    assert!(
        matches!(&r, Err(Error::OutcomeUnknown { partition, .. }) if partition == "global"),
        "the failed dirty-marking Reserve: {r:?}"
    );
    sim.clear_fault();
    drop(db); // restart, no power loss

    // With eu disabled the claim cannot settle: v1 stays held, never handed to another.
    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    assert!(
        !matches!(db.is_taken("email", "v1@x"), Ok(false)),
        "v1 reported free while its claim is unsettled"
    );
    assert!(claim(&db, a, "us", b"u2", "v1@x").is_err());
    db.close().unwrap();
    // eu back: the claim never reached eu, recovery rolls it back; no trace is left.
    let db = quiet_us_eu(&sim, DIR).unwrap();
    assert!(db.recovery_report().unsettled.is_empty());
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
    db.close().unwrap();
    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    if let Err(e) = no_trace(&db, a, "after eu returned once") {
        panic!("the unknown outcome did not settle as 'not written': {e}");
    }
}

// Regression (fixed since): failed unique claim no power loss sweep with eu disabled at
//   restart.
/// The same as a sweep over every counted storage operation of the claim (the
/// `unique_claim_no_power_loss_sweep`, but restarting with eu disabled): every `n` whose error is not
/// `OutcomeUnknown` must leave no trace.
#[test]
fn failed_unique_claim_no_power_loss_sweep_with_eu_disabled_at_restart() {
    let mut bad = Vec::new();
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let (db, a) = base_after_checkpoint(&sim);
        sim.fail_after(n, FaultOn::Any);
        let r = claim(&db, a, "eu", b"k1", "v1@x");
        let tripped = sim.fault_tripped();
        sim.clear_fault();
        drop(db);
        match quiet_us_eu_off(&sim, DIR) {
            Ok(db) => {
                if let Err(e) = &r
                    && !matches!(e, Error::OutcomeUnknown { .. })
                    && let Err(why) = no_trace(&db, a, &format!("n={n}, {e}"))
                {
                    bad.push(why);
                }
            }
            Err(e) => bad.push(format!("n={n}: restart with eu disabled failed: {e}")),
        }
        if !tripped {
            break;
        }
        n += 1;
        assert!(n < 200, "sweep did not end");
    }
    assert!(
        bad.is_empty(),
        "failed writes (errors other than OutcomeUnknown) left traces after a restart with \
         eu disabled:\n{}",
        bad.join("\n")
    );
}

// ======================================================================================
// guards for the write pipeline's plan (ops map, transfers)
// and for one large unique write under a crash at every storage step.
// ======================================================================================

// Guard: 299 claims + a transfer in one write, fault at every counted op then power loss:
//   acked = present, non-OutcomeUnknown error = absent, audit clean.
#[test]
fn large_unique_write_with_a_transfer_crash_at_every_step() {
    let vals: Vec<String> = (0..300).map(|i| format!("m{i}@x")).collect();
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        let a = db
            .create_account(NewAccount::new("a", "us").allow("eu"))
            .unwrap();
        claim(&db, a, "eu", b"pre", "m7@x").unwrap();
        sim.fail_after(n, FaultOn::Any);
        let mut w = db.write_in(a, "eu").unwrap();
        let u: Vec<Unique> = vals
            .iter()
            .skip(1)
            .map(|v| Unique::new("email", v.as_str()))
            .collect();
        // record k0 takes everything, 'pre' gives m7 to it (transfer)
        w.insert_unique(&T, b"big", b"x", &u).unwrap();
        w.insert_unique(&T, b"pre", b"x", &[]).unwrap();
        let r = w.commit();
        let tripped = sim.fault_tripped();
        drop(db);
        sim.crash();
        let db = quiet_us_eu(&sim, DIR).unwrap();
        let rep = db.audit().unwrap();
        assert!(rep.is_clean(), "n={n} r={r:?}: {rep}");
        let big = db
            .read(a)
            .unwrap()
            .get_in("eu", &T, b"big")
            .unwrap()
            .is_some();
        if r.is_ok() {
            assert!(big, "n={n} acked lost");
        }
        if let Err(e) = &r
            && !matches!(e, Error::OutcomeUnknown { .. })
        {
            assert!(!big, "n={n} {e:?} but present");
        }
        drop(db);
        if !tripped {
            break;
        }
        n += 1;
        assert!(n < 400);
    }
    assert!(n > 3, "the sweep must cover the write ({n} steps)");
}
