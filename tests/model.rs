//! Model-based test of the reservation protocol: random sequences of account creation,
//! inserts, unique claims and changes, removes, checkpoints, clean reopens, power losses
//! and injected I/O faults (followed by a power loss or by a plain restart) across 3
//! regions, compared after every step with an in-memory model: same reads, same owners,
//! same errors.

mod common;

use common::*;
use proptest::prelude::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error};

#[derive(Debug, Clone)]
enum Step {
    Create(usize),
    Op(Op),
    /// Close and reopen.
    Reopen,
    /// Power loss between operations: every acknowledged write must survive.
    Crash,
    /// The disk fails at storage operation `n` of the next op, then power loss (`true`)
    /// or a restart with the disk back (`false`: what a failed sync wrote stays).
    FaultThenCrash(u8, Op, bool),
    /// Writes committed together by `Db::commit_each` (the groupable ones whose account
    /// exists, put in the order it commits them: region by region).
    Group(Vec<Op>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0usize..3).prop_map(Step::Create),
        12 => op_strategy(3).prop_map(Step::Op),
        1 => Just(Step::Reopen),
        1 => Just(Step::Crash),
        1 => (0u8..40, op_strategy(3), any::<bool>()).prop_map(|(n, op, power)| Step::FaultThenCrash(n, op, power)),
        3 => proptest::collection::vec(op_strategy(3), 2..6).prop_map(Step::Group),
    ]
}

const DIR: &str = "/model";

fn open(sim: &SimStorage) -> Db {
    builder()
        .storage(sim.clone())
        .checkpoint_budget(4, std::time::Duration::from_secs(3600))
        .open(DIR)
        .expect("open")
}

/// The ids known so far, by workload account index.
fn ids_of(db: &Db) -> Vec<Option<AccountId>> {
    ACCOUNTS
        .iter()
        .map(|(name, _, _)| db.account_id(name).unwrap())
        .collect()
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let sim = SimStorage::new();
    let mut db = open(&sim);
    let mut model = Model::default();
    let mut ids: Vec<Option<AccountId>> = vec![None; 3];
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Create(a) => {
                let r = db.create_account(new_account(a));
                match ids[a] {
                    None => ids[a] = Some(r.map_err(|e| TestCaseError::fail(e.to_string()))?),
                    Some(_) => prop_assert!(matches!(r, Err(Error::AccountNameTaken(_))), "{r:?}"),
                }
            }
            Step::Op(op) => {
                let Some(r) = execute_some(&db, &ids, &op) else {
                    continue;
                };
                model
                    .explain(&op, &r)
                    .map_err(|e| TestCaseError::fail(format!("step {i}: {e}")))?;
                let want = model.apply(&op);
                prop_assert_eq!(classify(&r), Some(want), "step {} {:?}: {:?}", i, op, r);
            }
            Step::Group(ops) => {
                let mut ops: Vec<Op> = ops
                    .into_iter()
                    .filter(|op| is_groupable(op) && runnable(&ids, op))
                    .collect();
                if ops.len() < 2 {
                    continue;
                }
                // commit_each commits region by region, in the order of each region's
                // first write, and keeps the order within a region.
                let first: Vec<_> = ops.iter().map(op_region).collect();
                ops.sort_by_key(|op| first.iter().position(|r| *r == op_region(op)));
                let rs = execute_step(&db, &ids, &ops);
                for (op, r) in ops.iter().zip(&rs) {
                    model
                        .explain(op, r)
                        .map_err(|e| TestCaseError::fail(format!("step {i} (group): {e}")))?;
                    let want = model.apply(op);
                    prop_assert_eq!(
                        classify(r),
                        Some(want),
                        "step {} group {:?}: {:?}",
                        i,
                        op,
                        r
                    );
                }
            }
            Step::Reopen => {
                db.close().map_err(|e| TestCaseError::fail(e.to_string()))?;
                db = open(&sim);
            }
            Step::Crash => {
                sim.crash();
                drop(db);
                db = open(&sim);
            }
            Step::FaultThenCrash(n, op, power_loss) => {
                if !runnable(&ids, &op) {
                    continue;
                }
                sim.fail_after(n as u64, FaultOn::Any);
                let r = execute_some(&db, &ids, &op).expect("runnable");
                let tripped = sim.fault_tripped();
                if power_loss {
                    sim.crash();
                } else {
                    sim.clear_fault();
                }
                drop(db);
                db = open(&sim);
                let mut with = model.clone();
                let want = with.apply(&op);
                match &r {
                    // Acknowledged: must be there.
                    Ok(()) => {
                        prop_assert_eq!(want, Outcome::Ok);
                        model = with;
                    }
                    Err(Error::UniqueViolation { .. }) => prop_assert_eq!(want, Outcome::Violation),
                    // Write B of a stale update committed, A did not.
                    Err(Error::Conflict { .. }) => {
                        prop_assert_eq!(want, Outcome::Conflict);
                        model = with;
                    }
                    Err(Error::InvalidArgument(_)) if want == Outcome::Invalid => {}
                    Err(Error::OutcomeUnknown { .. }) => {
                        prop_assert!(tripped);
                        // Either way, but one way: pick the model the store agrees with.
                        if check_some(&db, &ids, &with).is_ok() {
                            model = with;
                        }
                    }
                    Err(e) => {
                        prop_assert!(tripped, "step {i}: {e} without a fault");
                        // A stale update's write B may have committed before A failed.
                        if op.is_stale() && check_some(&db, &ids, &with).is_ok() {
                            model = with;
                        }
                    }
                }
            }
        }
        prop_assert_eq!(ids_of(&db), ids.clone(), "accounts after step {}", i);
        if let Err(e) = check_some(&db, &ids, &model) {
            return Err(TestCaseError::fail(format!("after step {i}: {e}")));
        }
    }
    let audit = db.audit().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(audit.is_clean(), "{}", audit);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..64)) {
        // Most cases start with an account, so that the ops after it have someone to run as.
        let mut all = vec![Step::Create(0)];
        all.extend(steps);
        run(all)?;
    }
}

/// The checker is not vacuous: a model that differs from the store in any one way (a row
/// the store lacks, a row the model lacks, a value, an owner, a value that does not name
/// its writer, a region wrongly called disabled, accounts mixed up; in the declaring table
/// `D` a row, a value, an owner, an owner put in the other table) is reported, and the
/// model refuses what the store must refuse (a claim of a taken value, also one a record
/// of `D` owns, naming the colliding record; a region outside the account's).
#[test]
fn checker_reports_every_kind_of_difference() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = create_accounts(&db);
    let mut model = Model::default();
    for op in workload(7, 80) {
        let r = execute(&db, &ids, &op);
        assert_eq!(classify(&r), Some(model.apply(&op)), "{op:?}: {r:?}");
    }
    check(&db, &ids, &model).expect("the store matches its model");
    let some: Vec<Option<AccountId>> = ids.iter().map(|i| Some(*i)).collect();
    let (claim, owner) = model.owners.iter().next().expect("an owned value");
    let (claim, owner) = (claim.clone(), owner.clone());
    let fails = |what: &str, m: &Model, ids: &[Option<AccountId>], cat: &Catalog, kind: &str| {
        match check_catalog(&db, ids, m, cat) {
            Ok(()) => panic!("{what}: not reported"),
            Err(e) => assert!(e.contains(kind), "{what}: reported as {e}"),
        }
    };
    let none = Catalog::default();

    let mut m = model.clone();
    let row = Row {
        value: vec![1],
        uniques: vec![],
    };
    m.rows.insert((0, "us", vec![KEYS]), row);
    fails("a row the store lacks", &m, &some, &none, "missing: ");

    let mut m = model.clone();
    let (k, row) = m.rows.pop_first().unwrap();
    for u in &row.uniques {
        m.owners.remove(u);
    }
    fails(
        &format!("a row {k:?} the model lacks"),
        &m,
        &some,
        &none,
        "wrong: ",
    );

    let mut m = model.clone();
    m.rows.values_mut().next().unwrap().value.push(9);
    fails("a value", &m, &some, &none, "wrong: ");

    let mut m = model.clone();
    m.owners.remove(&claim);
    fails("an owner", &m, &some, &none, "wrong: find_unique");

    let mut m = model.clone();
    m.values = Values::NameWriter;
    fails(
        "values not naming their writer",
        &m,
        &some,
        &none,
        "a leaked row",
    );

    let eu = Catalog {
        disabled: vec!["eu"],
        unsettled: false,
    };
    fails(
        "eu called disabled",
        &model,
        &some,
        &eu,
        "in a disabled region",
    );

    let mut swapped = some.clone();
    swapped.swap(0, 1);
    fails("accounts mixed up", &model, &swapped, &none, "wrong: ");

    let mut m = model.clone();
    let thief = (owner.0 + 1) % ACCOUNTS.len();
    let steal = Commit {
        acct: thief,
        region: allowed(thief)[0],
        recs: vec![Rec::Put {
            key: vec![0],
            value: vec![1],
            uniques: Some(vec![claim.clone()]),
        }],
    };
    assert_eq!(m.commit(&steal), Outcome::Violation);
    let outside = Commit {
        acct: 0,
        region: "ap",
        recs: vec![Rec::Remove { key: vec![0] }],
    };
    assert_eq!(m.commit(&outside), Outcome::Denied);
    assert_eq!(m, model, "a refused commit changes nothing");

    // The declaring table.
    let (dclaim, downer) = model.downers.iter().next().expect("a value owned in d");
    let (dclaim, downer) = (dclaim.clone(), downer.clone());

    let mut m = model.clone();
    let row = Row {
        value: b"free-9".to_vec(),
        uniques: vec![],
    };
    m.drows.insert((0, "us", vec![KEYS]), row);
    fails("a row of d the store lacks", &m, &some, &none, "missing: ");

    let mut m = model.clone();
    m.drows.values_mut().next().unwrap().value.push(b'+');
    fails("a value in d", &m, &some, &none, "wrong: scan_prefix in d");

    let mut m = model.clone();
    m.downers.remove(&dclaim);
    fails("an owner in d", &m, &some, &none, "wrong: find_unique in d");

    let mut m = model.clone();
    let owner = m.downers.remove(&dclaim).unwrap();
    let row = m.drows.remove(&owner).unwrap();
    m.rows.insert(owner.clone(), row);
    m.owners.insert(dclaim.clone(), owner);
    fails("an owner of d put in t", &m, &some, &none, "wrong: ");

    // A claim in t of a value a record of d owns collides; so does a record of d that
    // declares a value a record of t owns.
    let thief = (downer.0 + 1) % ACCOUNTS.len();
    let steal = Commit {
        acct: thief,
        region: allowed(thief)[0],
        recs: vec![Rec::Put {
            key: vec![1],
            value: vec![1],
            uniques: Some(vec![dclaim.clone()]),
        }],
    };
    let named = model.collisions(&steal);
    assert_eq!(
        named,
        vec![Collides {
            tbl: Tbl::T,
            key: vec![1],
            claim: dclaim.clone()
        }]
    );
    let mut m = model.clone();
    assert_eq!(m.commit(&steal), Outcome::Violation);
    let slug = model
        .owners
        .keys()
        .find(|c| c.0 == "slug")
        .expect("a slug owned in t");
    let steal_d = Commit {
        acct: thief,
        region: allowed(thief)[0],
        recs: vec![Rec::PutD {
            key: vec![2],
            value: format!("{}#x", slug.1).into_bytes(),
            how: DPut::Insert,
        }],
    };
    assert_eq!(m.commit(&steal_d), Outcome::Violation);
    assert_eq!(
        model.collisions(&steal_d),
        vec![Collides {
            tbl: Tbl::D,
            key: vec![2],
            claim: slug.clone()
        }]
    );
    assert_eq!(m, model, "a refused commit changes nothing");
}
