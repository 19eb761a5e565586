//! Crash at every step of the protocol, through the fault-injecting SimStorage backend.
//!
//! For every N over the whole run (not a sample): the Nth storage operation (write, length
//! change or sync) of a workload fails, and so does every later one, as on a dying disk;
//! then the machine "loses power" (unsynced bytes are gone), the store is reopened (with a
//! second fault inside recovery for some runs) and compared with a model:
//! - I3: every write whose commit returned Ok is present; every write that failed before
//!   its region commit is absent; a write whose outcome was unknown went one way, in every
//!   partition alike;
//! - I1/I2: each unique value is owned by exactly the record the model says, or by none.
//!
//! The workload covers Reserve, Apply, Confirm, Abort (violations), transfers between
//! records, checkpoints (explicit and on budget) with marker collection, and recovery.

mod common;

use common::sim::{sim_global, sim_region};
use common::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, Error};

const DIR: &str = "/crash";

struct Run {
    tripped: bool,
}

fn open(sim: &SimStorage) -> Result<Db, Error> {
    builder()
        .storage(sim.clone())
        // A small budget: checkpoints and marker collection happen inside the workload.
        .checkpoint_budget(3, std::time::Duration::from_secs(3600))
        .open(DIR)
}

/// Where the injected fault strikes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Every file: the whole disk dies; the workload stops at the first failed op.
    Disk,
    /// One partition file (a volume dies); the other partitions keep working and the
    /// workload goes on, so later synced commits elsewhere can make in-flight global
    /// entries durable (exercising rollback at recovery).
    File(&'static str),
}

fn path_of(file: &str) -> std::path::PathBuf {
    match file {
        "global" => sim_global(DIR),
        region => sim_region(DIR, region),
    }
}

/// Applies the outcome of `op` to every candidate model, keeping those consistent with
/// it. More than one candidate exists only after an outcome-unknown commit.
fn advance(cands: &mut Vec<Model>, op: &Op, r: &Result<(), Error>, tripped: bool) {
    match r {
        Err(Error::OutcomeUnknown { .. }) => {
            assert!(tripped, "outcome unknown without an injected fault: {op:?}");
            let mut next = Vec::new();
            for c in cands.drain(..) {
                let mut with = c.clone();
                with.apply(op);
                next.push(c);
                next.push(with);
            }
            next.dedup();
            *cands = next;
        }
        Ok(()) | Err(Error::UniqueViolation { .. }) => {
            let got = classify(r).unwrap();
            cands.retain_mut(|c| c.apply(op) == got);
            assert!(
                !cands.is_empty(),
                "op {op:?}: store said {r:?}, no model agrees"
            );
        }
        // Refused before the region commit: definitely not applied. Busy happens only when
        // a value is held by a txn whose outcome is unknown (its region is poisoned).
        Err(e) => assert!(tripped, "op {op:?} failed without an injected fault: {e}"),
    }
}

/// Applies the outcomes of one step (ops committed together by `execute_step`, in order).
/// The ops of a step go to one region, so every outcome-unknown one shared one failed
/// region commit: they went the same way, all applied or none.
fn advance_step(cands: &mut Vec<Model>, step: &[Op], rs: &[Result<(), Error>], tripped: bool) {
    if let ([op], [r]) = (step, rs) {
        return advance(cands, op, r, tripped);
    }
    let mut none = cands.clone();
    let mut all = std::mem::take(cands);
    let mut unknown = false;
    for (op, r) in step.iter().zip(rs) {
        if matches!(r, Err(Error::OutcomeUnknown { .. })) {
            assert!(tripped, "outcome unknown without an injected fault: {op:?}");
            unknown = true;
            for c in &mut all {
                c.apply(op);
            }
        } else {
            advance(&mut none, op, r, tripped);
            advance(&mut all, op, r, tripped);
        }
    }
    *cands = if unknown { none } else { Vec::new() };
    cands.extend(all);
    cands.dedup();
}

/// Runs the workload with a fault at storage operation `n` (if any), crashes, reopens
/// (with a fault inside recovery at `recovery_fault`, if any), and checks the store.
fn run(ops: &[Vec<Op>], fault: Option<(u64, FaultOn, Target)>, recovery_fault: Option<u64>) -> Run {
    let sim = SimStorage::new();
    let db = open(&sim).expect("open fresh store");
    let ids = create_accounts(&db);
    let some: Vec<_> = ids.iter().copied().map(Some).collect();
    let mut cands = vec![Model::default()];
    match fault {
        Some((n, on, Target::Disk)) => sim.fail_after(n, on),
        Some((n, on, Target::File(f))) => sim.fail_file_after(path_of(f), n, on),
        None => {}
    }
    for step in ops {
        let rs = execute_step(&db, &some, step);
        let tripped = sim.fault_tripped();
        advance_step(&mut cands, step, &rs, tripped);
        if tripped && rs.iter().any(Result::is_err) && matches!(fault, Some((_, _, Target::Disk))) {
            break;
        }
    }
    let tripped = sim.fault_tripped();

    // Power loss. Crash first, so that nothing the old handle does while dropping counts.
    sim.crash();
    drop(db);

    if let Some(k) = recovery_fault {
        sim.fail_after(k, FaultOn::Any);
        let attempt = open(&sim);
        sim.crash();
        drop(attempt);
    }

    let verify = |db: &Db| -> Result<usize, String> {
        let ids = account_ids(db);
        let mut errs = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            match check(db, &ids, c) {
                Ok(()) => return Ok(i),
                Err(e) => errs.push(e),
            }
        }
        Err(errs.join(" | "))
    };
    let db = open(&sim).unwrap_or_else(|e| panic!("reopen after crash ({fault:?}): {e}"));
    let which = verify(&db).unwrap_or_else(|e| {
        panic!("fault={fault:?} recovery_fault={recovery_fault:?}: no candidate matches: {e}")
    });
    let audit = db.audit().expect("audit");
    assert!(
        audit.is_clean(),
        "fault={fault:?}: audit after recovery: {audit}"
    );
    // Recovery settled everything: a clean reopen shows the same state.
    db.close().expect("close");
    let db = open(&sim).expect("second reopen");
    let again = verify(&db)
        .unwrap_or_else(|e| panic!("{fault:?}: state changed across a clean reopen: {e}"));
    assert_eq!(
        which, again,
        "{fault:?}: outcome flipped across a clean reopen"
    );
    Run { tripped }
}

/// Ops one per step, or (`group` > 1) consecutive writes to one region committed together.
fn steps(seed: u64, len: usize, group: usize) -> Vec<Vec<Op>> {
    group_steps(&workload(seed, len), group)
}

fn every_step(seed: u64, len: usize, on: FaultOn, target: Target) -> u64 {
    every_step_of(&steps(seed, len, 1), on, target)
}

fn every_step_of(ops: &[Vec<Op>], on: FaultOn, target: Target) -> u64 {
    let mut n = 0;
    loop {
        // Every few runs, also crash inside recovery, at a step that moves with n.
        let recovery_fault = (n % 3 == 0).then_some((n / 3) % 40);
        let r = run(ops, Some((n, on, target)), recovery_fault);
        if !r.tripped {
            return n;
        }
        n += 1;
    }
}

#[test]
fn workload_without_faults_matches_model() {
    for group in [1, 4] {
        let r = run(&steps(7, 60, group), None, None);
        assert!(!r.tripped);
    }
}

#[test]
fn crash_at_every_storage_operation_of_group_commits() {
    let ops = steps(41, 40, 4);
    let grouped = ops.iter().filter(|s| s.len() > 1).count();
    assert!(grouped >= 5, "only {grouped} grouped steps");
    let steps = every_step_of(&ops, FaultOn::Any, Target::Disk)
        + every_step_of(&ops, FaultOn::Syncs, Target::Disk);
    eprintln!("group commits: {steps} fault points");
    assert!(steps > 30, "only {steps} storage operations");
    for (i, file) in ["us", "global"].into_iter().enumerate() {
        let ops = self::steps(43 + i as u64, 40, 4);
        let steps = every_step_of(&ops, FaultOn::Any, Target::File(file));
        eprintln!("group commits, {file}: {steps} fault points");
        assert!(steps > 10, "{file}: only {steps} storage operations");
    }
}

#[test]
fn crash_at_every_storage_operation() {
    let steps = every_step(11, 40, FaultOn::Any, Target::Disk)
        + every_step(12, 40, FaultOn::Writes, Target::Disk);
    eprintln!("crash_at_every_storage_operation: {steps} fault points");
    // The workload must be long enough to reach checkpoints and marker collection.
    assert!(
        steps > 50,
        "only {steps} storage operations: workload too short"
    );
}

#[test]
fn crash_at_every_sync() {
    let steps = every_step(23, 60, FaultOn::Syncs, Target::Disk);
    eprintln!("crash_at_every_sync: {steps} fault points");
    assert!(steps > 10, "only {steps} syncs");
}

#[test]
fn one_partition_fails_at_every_step_others_go_on() {
    for (i, file) in ["us", "eu", "ap", "global"].into_iter().enumerate() {
        let steps = every_step(31 + i as u64, 40, FaultOn::Any, Target::File(file));
        eprintln!("{file}: {steps} fault points");
        assert!(steps > 10, "{file}: only {steps} storage operations");
    }
}

#[test]
fn crash_at_every_step_of_recovery() {
    // A state with applied markers and in-flight entries: crash after Apply, before
    // Confirm's effects are durable (no checkpoint), then fail recovery at every step.
    let ops = workload(5, 16);
    let mut k = 0;
    loop {
        let sim = SimStorage::new();
        let db = builder()
            .storage(sim.clone())
            .checkpoint_budget(1_000_000, std::time::Duration::from_secs(3600))
            .open(DIR)
            .unwrap();
        let ids = create_accounts(&db);
        let mut model = Model::default();
        for op in &ops {
            if matches!(op, Op::Checkpoint) {
                continue;
            }
            let r = execute(&db, &ids, op);
            assert_eq!(classify(&r), Some(model.apply(op)), "{op:?}: {r:?}");
        }
        sim.crash();
        drop(db);
        sim.fail_after(k, FaultOn::Any);
        let first = builder().storage(sim.clone()).open(DIR);
        let tripped = sim.fault_tripped();
        sim.crash();
        drop(first);
        let db = builder()
            .storage(sim.clone())
            .open(DIR)
            .expect("reopen after failed recovery");
        let ids = account_ids(&db);
        check(&db, &ids, &model).unwrap_or_else(|e| panic!("recovery fault at {k}: {e}"));
        if !tripped {
            assert!(k > 5, "recovery took only {k} storage operations");
            break;
        }
        k += 1;
    }
}
