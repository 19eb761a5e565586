//! The shared kit of the integration tests.
//!
//! This module: a small protocol workload over 3 regions ([`Op`], [`workload`], the
//! proptest strategy [`op_strategy`]), run against a store ([`execute`]) and against the
//! one model of the kit ([`Model::apply`], [`Model::explain`] for what an error names),
//! and the checker of that model over the workload's keys and values (`check`,
//! `check_some`, `check_catalog`). Two tables: `T`, whose records claim values with
//! `insert_unique`, and `D`, which declares its unique value in the `slug` namespace
//! (values from the same few), so that the two tables' claims collide; records of both
//! are read-modify-written (`Write::update`, `Db::update`), and a write whose read went
//! stale must fail with `Conflict`. Spaces are small on purpose: few accounts, few keys,
//! few unique values, so claims collide.
//!
//! Submodules: [`model`] (the one model of what a store must contain, its writes, and the
//! checker that compares a live store with it), [`rng`] (the one pseudo-random generator), [`sim`] (stores on `SimStorage`,
//! one-record writes, file paths from `regionkv::layout`), [`files`] (directory snapshots
//! and their differences, byte searches, the us+eu store on disk), [`refusal`] (refused
//! opens and rejected operations as rows of a table).
//!
//! Every test binary compiles this kit and uses a part of it.

#![allow(dead_code)]

pub mod files;
pub mod model;
pub mod refusal;
pub mod rng;
pub mod sim;

use proptest::prelude::*;
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table};

#[allow(unused_imports)]
pub use model::{
    Acct, Catalog, Claim, Collides, Commit, D, DPut, Findings, Model, Outcome, Probes, Rec, Row,
    RowKey, Tbl, Values, classify, compare, execute_commit,
};
pub use rng::Rng;

pub const T: Table<Raw> = Table::new("t");
pub const REGIONS: [&str; 3] = ["us", "eu", "ap"];
pub const NAMESPACES: [&str; 2] = ["email", "slug"];
pub const KEYS: u8 = 6;
pub const VALUES: u8 = 5;

/// Account i: (name, home, other allowed regions).
pub const ACCOUNTS: [(&str, &str, &[&str]); 3] = [
    ("a0", "us", &["eu"]),
    ("a1", "eu", &["ap"]),
    ("a2", "ap", &["us", "eu"]),
];

pub fn allowed(acct: usize) -> Vec<&'static str> {
    let (_, home, others) = ACCOUNTS[acct % 3];
    let mut v = vec![home];
    v.extend_from_slice(others);
    v
}

pub fn unique_value(v: u8) -> String {
    format!("value-{v}@example.com")
}

pub fn record_value(v: u8) -> Vec<u8> {
    vec![v; 3 + (v as usize % 5)]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert {
        acct: usize,
        region: usize,
        key: u8,
        val: u8,
    },
    InsertUnique {
        acct: usize,
        region: usize,
        key: u8,
        val: u8,
        uniques: Vec<(u8, u8)>,
    },
    /// Two records in one write: moves a value between them when they share it.
    Pair {
        acct: usize,
        region: usize,
        keys: (u8, u8),
        uniques: (Uniques, Uniques),
    },
    Remove {
        acct: usize,
        region: usize,
        key: u8,
    },
    /// A record of `D` set to `model::d_value(val)`: `how` 0 `insert`, 1 `insert_unique`
    /// with the declared list, 2 `insert_unique` with a list that contradicts it (refused).
    InsertD {
        acct: usize,
        region: usize,
        key: u8,
        val: u8,
        how: u8,
    },
    RemoveD {
        acct: usize,
        region: usize,
        key: u8,
    },
    /// A read-modify-write of a record of `T` or (`declared`) `D`: it becomes
    /// `model::bump(old, by)`.
    Update {
        acct: usize,
        region: usize,
        key: u8,
        by: u8,
        declared: bool,
        how: UpdateHow,
    },
    /// Write A reads the record (`Write::update`, and A also sets another record of `T`),
    /// then write B of the same account and region commits a change of it
    /// (`model::changed`, which claims nothing new), then A commits: `Conflict`, and
    /// nothing of A is written.
    StaleUpdate {
        acct: usize,
        region: usize,
        key: u8,
        by: u8,
        declared: bool,
    },
    Checkpoint,
}

/// How an [`Op::Update`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateHow {
    /// `Db::update` (the account's home region; `region` is ignored).
    Db,
    /// `Write::update`, alone in its write.
    Write,
    /// `Write::update` after an insert of the same record in the same write (value `val`
    /// as `Insert`/`InsertD` make it): it reads the buffered value.
    AfterPut(u8),
    /// `Write::update` after a remove of the same record in the same write: it reads
    /// `None`.
    AfterRemove,
}

/// (namespace index, value index) pairs a record claims.
pub type Uniques = Vec<(u8, u8)>;

impl Op {
    pub fn region_name(acct: usize, region: usize) -> &'static str {
        let a = allowed(acct);
        a[region % a.len()]
    }

    /// The account the op writes as, if it writes.
    pub fn account(&self) -> Option<usize> {
        match self {
            Op::Insert { acct, .. }
            | Op::InsertUnique { acct, .. }
            | Op::Pair { acct, .. }
            | Op::Remove { acct, .. }
            | Op::InsertD { acct, .. }
            | Op::RemoveD { acct, .. }
            | Op::Update { acct, .. }
            | Op::StaleUpdate { acct, .. } => Some(*acct),
            Op::Checkpoint => None,
        }
    }

    /// Whether the op commits twice (a [`Op::StaleUpdate`]: B, then A).
    pub fn is_stale(&self) -> bool {
        matches!(self, Op::StaleUpdate { .. })
    }

    /// The commit the op is (`None`: a checkpoint); for a [`Op::StaleUpdate`], write A.
    pub fn to_commit(&self) -> Option<Commit> {
        let put = |key: u8, val: u8, uniques: Option<&Uniques>| Rec::Put {
            key: vec![key],
            value: record_value(val),
            uniques: uniques.map(|u| uniq_list(u)),
        };
        let (acct, region, recs) = match self {
            Op::Checkpoint => return None,
            Op::Insert {
                acct,
                region,
                key,
                val,
            } => (acct, region, vec![put(*key, *val, None)]),
            Op::InsertUnique {
                acct,
                region,
                key,
                val,
                uniques,
            } => (acct, region, vec![put(*key, *val, Some(uniques))]),
            // Keys equal: the same record twice in one write, the last operation wins.
            Op::Pair {
                acct,
                region,
                keys,
                uniques,
            } => (
                acct,
                region,
                vec![
                    put(keys.0, keys.0, Some(&uniques.0)),
                    put(keys.1, keys.1, Some(&uniques.1)),
                ],
            ),
            Op::Remove { acct, region, key } => {
                (acct, region, vec![Rec::Remove { key: vec![*key] }])
            }
            Op::InsertD {
                acct,
                region,
                key,
                val,
                how,
            } => (acct, region, vec![put_d(*key, *val, *how)]),
            Op::RemoveD { acct, region, key } => {
                (acct, region, vec![Rec::RemoveD { key: vec![*key] }])
            }
            Op::Update {
                acct,
                region,
                key,
                by,
                declared,
                how,
            } => {
                let tbl = if *declared { Tbl::D } else { Tbl::T };
                let update = Rec::Update {
                    tbl,
                    key: vec![*key],
                    by: *by,
                };
                let first = match (how, tbl) {
                    (UpdateHow::Db, _) => {
                        return Some(Commit {
                            acct: *acct,
                            region: Op::region_name(*acct, 0),
                            recs: vec![update],
                        });
                    }
                    (UpdateHow::Write, _) => None,
                    (UpdateHow::AfterPut(v), Tbl::T) => Some(put(*key, *v, None)),
                    (UpdateHow::AfterPut(v), Tbl::D) => Some(put_d(*key, *v, 0)),
                    (UpdateHow::AfterRemove, Tbl::T) => Some(Rec::Remove { key: vec![*key] }),
                    (UpdateHow::AfterRemove, Tbl::D) => Some(Rec::RemoveD { key: vec![*key] }),
                };
                (acct, region, first.into_iter().chain([update]).collect())
            }
            Op::StaleUpdate {
                acct,
                region,
                key,
                by,
                declared,
            } => {
                let tbl = if *declared { Tbl::D } else { Tbl::T };
                let recs = vec![
                    Rec::Update {
                        tbl,
                        key: vec![*key],
                        by: *by,
                    },
                    put((*key + 1) % KEYS, *by, None),
                ];
                (acct, region, recs)
            }
        };
        Some(Commit {
            acct: *acct,
            region: Op::region_name(*acct, *region),
            recs,
        })
    }
}

/// A record of `D` set to `model::d_value(val)` (`how`: see [`Op::InsertD`]).
fn put_d(key: u8, val: u8, how: u8) -> Rec {
    Rec::PutD {
        key: vec![key],
        value: model::d_value(val),
        how: [DPut::Insert, DPut::Exact, DPut::Contradict][how as usize % 3],
    }
}

fn uniq_list(u: &[(u8, u8)]) -> Vec<Claim> {
    let v: Vec<Claim> = u
        .iter()
        .map(|&(ns, val)| {
            (
                NAMESPACES[ns as usize % 2].to_string(),
                unique_value(val % VALUES),
            )
        })
        .collect();
    model::canonical(&v)
}

impl Model {
    /// The model of the workload's store: table `T`, regions `REGIONS`, accounts
    /// `ACCOUNTS`, nothing written.
    pub fn workload() -> Model {
        let accounts = ACCOUNTS
            .iter()
            .map(|(_, home, others)| Acct::new(home, others))
            .collect();
        let mut m = Model::new(T.name(), &REGIONS, accounts);
        m.declared = true;
        m
    }

    /// Write B of a [`Op::StaleUpdate`]: a plain change of the record A reads, which
    /// claims nothing new (`None` for other ops).
    pub fn stale_writer(&self, op: &Op) -> Option<Commit> {
        let Op::StaleUpdate {
            acct,
            region,
            key,
            declared,
            ..
        } = op
        else {
            return None;
        };
        let region = Op::region_name(*acct, *region);
        let (tbl, k) = (if *declared { Tbl::D } else { Tbl::T }, vec![*key]);
        let old = self.rows_of(tbl).get(&(*acct, region, k.clone()));
        let value = model::changed(tbl, old.map(|r| r.value.as_slice()));
        let rec = match tbl {
            Tbl::T => Rec::Put {
                key: k,
                value,
                uniques: None,
            },
            Tbl::D => Rec::PutD {
                key: k,
                value,
                how: DPut::Insert,
            },
        };
        Some(Commit {
            acct: *acct,
            region,
            recs: vec![rec],
        })
    }

    /// Applies `op` if the engine must accept it; returns the predicted outcome. A
    /// [`Op::StaleUpdate`] applies write B (which the engine must accept) and predicts A's
    /// outcome: `Conflict` if B changed the record A read, else A's own.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        if let Some(b) = self.stale_writer(op) {
            let a = op.to_commit().expect("a write");
            let Rec::Update { tbl, key, .. } = &a.recs[0] else {
                unreachable!("A begins with its update")
            };
            let rk = (a.acct, a.region, key.clone());
            let before = self.rows_of(*tbl).get(&rk).cloned();
            assert_eq!(
                self.commit(&b),
                Outcome::Ok,
                "model: write B of {op:?} refused"
            );
            let after = self.rows_of(*tbl).get(&rk).cloned();
            if before.map(|r| r.value) != after.map(|r| r.value) {
                return Outcome::Conflict;
            }
            return self.commit(&a);
        }
        match op.to_commit() {
            None => Outcome::Ok,
            Some(c) => self.commit(&c),
        }
    }

    /// What the model (before `op`) says of the error `r` of `op` names: a
    /// `UniqueViolation` names (namespace, table, key, value as given) a record of the
    /// write whose claim collides; a `Conflict` names the record a [`Op::StaleUpdate`]
    /// read. `Err` describes a difference.
    pub fn explain(&self, op: &Op, r: &Result<(), Error>) -> Result<(), String> {
        match r {
            Err(Error::UniqueViolation { namespace, record }) => {
                let mut m = self.clone();
                let commit = match m.stale_writer(op) {
                    Some(b) => {
                        if m.commit(&b) != Outcome::Ok {
                            return Err(format!("{op:?}: write B refused by the model"));
                        }
                        op.to_commit()
                    }
                    None => op.to_commit(),
                };
                let Some(commit) = commit else {
                    return Err(format!("{op:?}: a violation of no write"));
                };
                let cands = m.collisions(&commit);
                let named = cands.iter().any(|c| {
                    c.claim.0 == *namespace
                        && m.table_name(c.tbl) == record.table
                        && c.key == record.key
                        && c.claim.1.as_bytes() == record.value.as_slice()
                });
                if named {
                    Ok(())
                } else {
                    Err(format!(
                        "{op:?}: UniqueViolation names {namespace} {} {:?} {:?}, not a colliding \
                         record of the write: {cands:?}",
                        record.table,
                        String::from_utf8_lossy(&record.key),
                        String::from_utf8_lossy(&record.value)
                    ))
                }
            }
            Err(Error::Conflict { table, key }) => match op {
                Op::StaleUpdate {
                    key: k, declared, ..
                } => {
                    let tbl = if *declared { Tbl::D } else { Tbl::T };
                    if *table == self.table_name(tbl) && *key == vec![*k] {
                        Ok(())
                    } else {
                        Err(format!(
                            "{op:?}: Conflict names {table} {key:?}, not the record read"
                        ))
                    }
                }
                _ => Err(format!(
                    "{op:?}: Conflict in a write with no concurrent one"
                )),
            },
            _ => Ok(()),
        }
    }
}

/// The workload's model ([`Model::workload`]).
impl Default for Model {
    fn default() -> Model {
        Model::workload()
    }
}

/// Whether the engine would refuse the op before any I/O (the workload avoids these).
pub fn is_valid(op: &Op) -> bool {
    match op {
        Op::Pair { keys, uniques, .. } if keys.0 != keys.1 => {
            let a = uniq_list(&uniques.0);
            let b = uniq_list(&uniques.1);
            !a.iter().any(|u| b.contains(u))
        }
        _ => true,
    }
}

/// Runs an op against the store. A [`Op::StaleUpdate`] returns write B's error if B
/// fails (A is dropped uncommitted), else A's result.
pub fn execute(db: &Db, ids: &[AccountId], op: &Op) -> Result<(), Error> {
    let some: Vec<Option<AccountId>> = ids.iter().map(|i| Some(*i)).collect();
    execute_some(db, &some, op).expect("every account exists")
}

/// Like [`execute`], for a workload in which some accounts do not exist yet (`None`):
/// `None` if the op's account does not exist (the op is not run).
pub fn execute_some(db: &Db, ids: &[Option<AccountId>], op: &Op) -> Option<Result<(), Error>> {
    let Some(c) = op.to_commit() else {
        return Some(db.checkpoint());
    };
    let id = ids[c.acct]?;
    Some(match op {
        Op::Update {
            how: UpdateHow::Db, ..
        } => {
            let [Rec::Update { tbl, key, by }] = &c.recs[..] else {
                unreachable!("one update")
            };
            let t = match tbl {
                Tbl::T => &T,
                Tbl::D => &D,
            };
            db.update(id, t, key, |old| {
                model::bump(*tbl, old.map(|r| &r[..]), *by)
            })
            .map(|_| ())
        }
        Op::StaleUpdate {
            acct,
            region,
            key,
            declared,
            ..
        } => stale_update(db, id, &c, (*acct, *region, *key, *declared)),
        _ => execute_commit(db, &T, id, &c),
    })
}

/// Whether the op is one write that reads nothing (so it can be built before the writes
/// ahead of it commit, and share their group commit with the same outcome as alone).
pub fn is_groupable(op: &Op) -> bool {
    matches!(
        op,
        Op::Insert { .. }
            | Op::InsertUnique { .. }
            | Op::Pair { .. }
            | Op::Remove { .. }
            | Op::InsertD { .. }
            | Op::RemoveD { .. }
    )
}

/// Cuts `ops` into steps: groupable ops to one region, up to `max`, committed together by
/// [`execute_step`] (between two other ops, the groupable ones are gathered by region, so
/// the workload runs in another order: the model follows the steps), every other op alone.
pub fn group_steps(ops: &[Op], max: usize) -> Vec<Vec<Op>> {
    let mut steps: Vec<Vec<Op>> = Vec::new();
    let mut open: Vec<Vec<Op>> = Vec::new();
    for op in ops {
        if !is_groupable(op) || max <= 1 {
            steps.append(&mut open);
            steps.push(vec![op.clone()]);
            continue;
        }
        match open
            .iter_mut()
            .position(|g| op_region(&g[0]) == op_region(op))
        {
            Some(i) => {
                open[i].push(op.clone());
                if open[i].len() >= max {
                    steps.push(open.remove(i));
                }
            }
            None => open.push(vec![op.clone()]),
        }
    }
    steps.append(&mut open);
    steps
}

/// Runs a step: one op as [`execute_some`] does, or groupable ops as one
/// [`Db::commit_each`] (group commits, each with its own outcome, in order: the caller
/// puts the ops of one region together, in the order `commit_each` commits regions).
/// Every op's account must exist.
pub fn execute_step(db: &Db, ids: &[Option<AccountId>], step: &[Op]) -> Vec<Result<(), Error>> {
    if let [op] = step {
        return vec![execute_some(db, ids, op).expect("the op's account exists")];
    }
    let mut out: Vec<Option<Result<(), Error>>> = (0..step.len()).map(|_| None).collect();
    let mut writes = Vec::new();
    let mut slots = Vec::new();
    for (i, op) in step.iter().enumerate() {
        let c = op.to_commit().expect("a groupable op writes");
        let id = ids[c.acct].expect("the op's account exists");
        let built = db.write_in(id, c.region).and_then(|mut w| {
            model::buffer(&mut w, &T, &c.recs)?;
            Ok(w)
        });
        match built {
            Ok(w) => {
                writes.push(w);
                slots.push(i);
            }
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    for (i, r) in slots.into_iter().zip(db.commit_each(writes)) {
        out[i] = Some(r);
    }
    out.into_iter().map(|r| r.expect("every op ran")).collect()
}

/// Write A (`a`) reads and buffers; write B (what [`Model::stale_writer`] makes of the
/// record as A read it) commits; then A commits.
fn stale_update(
    db: &Db,
    id: AccountId,
    a: &Commit,
    (acct, region, key, declared): (usize, usize, u8, bool),
) -> Result<(), Error> {
    let mut wa = db.write_in(id, a.region)?;
    let tbl = if declared { Tbl::D } else { Tbl::T };
    let t = if declared { &D } else { &T };
    // What A reads now is what B changes.
    let old = wa.get(t, [key])?.map(|r| r.to_vec());
    model::buffer(&mut wa, &T, &a.recs)?;
    let value = model::changed(tbl, old.as_deref());
    let rec = match tbl {
        Tbl::T => Rec::Put {
            key: vec![key],
            value,
            uniques: None,
        },
        Tbl::D => Rec::PutD {
            key: vec![key],
            value,
            how: DPut::Insert,
        },
    };
    let b = Commit {
        acct,
        region: Op::region_name(acct, region),
        recs: vec![rec],
    };
    execute_commit(db, &T, id, &b)?;
    wa.commit()
}

/// Whether the op can run: its account exists (or it writes as nobody).
pub fn runnable(ids: &[Option<AccountId>], op: &Op) -> bool {
    op.account().is_none_or(|a| ids[a].is_some())
}

pub fn builder() -> regionkv::Builder {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b
}

/// Account `i` of the workload.
pub fn new_account(i: usize) -> NewAccount {
    let (name, home, others) = ACCOUNTS[i];
    let mut n = NewAccount::new(name, home);
    for o in others {
        n = n.allow(*o);
    }
    n
}

/// Creates the accounts of the workload; returns their ids.
pub fn create_accounts(db: &Db) -> Vec<AccountId> {
    (0..ACCOUNTS.len())
        .map(|i| db.create_account(new_account(i)).expect("create account"))
        .collect()
}

pub fn account_ids(db: &Db) -> Vec<AccountId> {
    ACCOUNTS
        .iter()
        .map(|(name, _, _)| db.account_id(name).unwrap().expect("account exists"))
        .collect()
}

/// Whether region `name` of the store is enabled (panics if the store does not list it).
pub fn region_enabled(db: &Db, name: &str) -> bool {
    db.regions()
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("region {name} is not listed"))
        .enabled
}

/// The message of a caught panic (empty if it carries neither a `String` nor a `&str`).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// What the checker of the workload reads besides the model's data: every key of the
/// workload and every unique value of each namespace.
pub fn workload_probes() -> Probes {
    Probes {
        keys: (0..KEYS).map(|k| vec![k]).collect(),
        prefixes: Vec::new(),
        values: NAMESPACES
            .iter()
            .flat_map(|ns| (0..VALUES).map(move |v| (ns.to_string(), unique_value(v))))
            .collect(),
    }
}

/// Compares the store with the model ([`compare`] over [`workload_probes`]): every row
/// (I3), every owner (I1, I2).
pub fn check(db: &Db, ids: &[AccountId], model: &Model) -> Result<(), String> {
    let all: Vec<Option<AccountId>> = ids.iter().map(|i| Some(*i)).collect();
    check_some(db, &all, model)
}

/// Like [`check`], for a workload in which some accounts do not exist yet (`None`).
pub fn check_some(db: &Db, ids: &[Option<AccountId>], model: &Model) -> Result<(), String> {
    check_catalog(db, ids, model, &Catalog::default())
}

/// Like [`check_some`], with disabled regions: rows there read as `RegionDisabled`; a value
/// owned there is taken (and `find_unique` says `RegionDisabled`); while `unsettled`, a
/// value the model calls free may be refused but never handed to a second owner.
pub fn check_catalog(
    db: &Db,
    ids: &[Option<AccountId>],
    model: &Model,
    cat: &Catalog,
) -> Result<(), String> {
    compare(db, ids, model, cat, &workload_probes(), &|_| {}).into_result()
}

/// `n` (namespace, value) index pairs.
fn random_uniques(g: &mut Rng, n: u64) -> Vec<(u8, u8)> {
    (0..n)
        .map(|_| (g.next(2) as u8, g.next(VALUES as u64) as u8))
        .collect()
}

/// A deterministic pseudo-random workload, with unique values that collide (in `T` and
/// `D`) and read-modify-writes; no op of it fails but by a violation (no stale update, no
/// contradicting list), so that every error under a fault is the fault's.
pub fn workload(seed: u64, len: usize) -> Vec<Op> {
    let mut g = Rng(seed.max(1));
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let acct = g.next(3) as usize;
        let region = g.next(3) as usize;
        let key = g.next(KEYS as u64) as u8;
        let op = match g.next(14) {
            c @ (0..=2 | 9) => {
                let n = if c == 9 { 1 } else { 1 + g.next(2) };
                let val = g.next(8) as u8;
                Op::InsertUnique {
                    acct,
                    region,
                    key,
                    val,
                    uniques: random_uniques(&mut g, n),
                }
            }
            3 => Op::InsertUnique {
                acct,
                region,
                key,
                val: g.next(8) as u8,
                uniques: vec![],
            },
            4 => Op::Insert {
                acct,
                region,
                key,
                val: g.next(8) as u8,
            },
            5 | 6 => Op::Remove { acct, region, key },
            7 => {
                let k2 = g.next(KEYS as u64) as u8;
                let a = random_uniques(&mut g, 1);
                let b = random_uniques(&mut g, 1);
                Op::Pair {
                    acct,
                    region,
                    keys: (key, k2),
                    uniques: (a, b),
                }
            }
            8 => Op::Checkpoint,
            10 => Op::InsertD {
                acct,
                region,
                key,
                val: g.next(model::D_VALUES as u64) as u8,
                how: g.next(2) as u8,
            },
            11 => Op::RemoveD { acct, region, key },
            _ => {
                let how = match g.next(4) {
                    0 => UpdateHow::Db,
                    1 => UpdateHow::Write,
                    2 => UpdateHow::AfterPut(g.next(model::D_VALUES as u64) as u8),
                    _ => UpdateHow::AfterRemove,
                };
                Op::Update {
                    acct,
                    region,
                    key,
                    by: g.next(256) as u8,
                    declared: g.next(2) == 0,
                    how,
                }
            }
        };
        if is_valid(&op) {
            ops.push(op);
        }
    }
    ops
}

fn update_how() -> impl Strategy<Value = UpdateHow> {
    prop_oneof![
        Just(UpdateHow::Db),
        Just(UpdateHow::Write),
        (0u8..model::D_VALUES).prop_map(UpdateHow::AfterPut),
        Just(UpdateHow::AfterRemove),
    ]
}

/// Workload ops as a proptest strategy; `unique_weight` weighs `InsertUnique` against
/// 1 `Insert`, 1 `Pair`, 2 `Remove`, 1 `Checkpoint`, 2 `InsertD`, 1 `RemoveD`, 2 `Update`
/// and 1 `StaleUpdate`.
pub fn op_strategy(unique_weight: u32) -> impl Strategy<Value = Op> {
    let a = 0usize..3;
    let r = 0usize..3;
    let k = 0u8..KEYS;
    let u = || proptest::collection::vec((0u8..2, 0u8..VALUES), 0..3);
    prop_oneof![
        2 => (a.clone(), r.clone(), k.clone(), 0u8..model::D_VALUES, 0u8..3)
            .prop_map(|(acct, region, key, val, how)| Op::InsertD { acct, region, key, val, how }),
        1 => (a.clone(), r.clone(), k.clone())
            .prop_map(|(acct, region, key)| Op::RemoveD { acct, region, key }),
        2 => (a.clone(), r.clone(), k.clone(), any::<u8>(), any::<bool>(), update_how()).prop_map(
            |(acct, region, key, by, declared, how)| Op::Update { acct, region, key, by, declared, how }
        ),
        1 => (a.clone(), r.clone(), k.clone(), any::<u8>(), any::<bool>()).prop_map(
            |(acct, region, key, by, declared)| Op::StaleUpdate { acct, region, key, by, declared }
        ),
        1 => (a.clone(), r.clone(), k.clone(), 0u8..8)
            .prop_map(|(acct, region, key, val)| Op::Insert { acct, region, key, val }),
        unique_weight => (a.clone(), r.clone(), k.clone(), 0u8..8, u()).prop_map(
            |(acct, region, key, val, uniques)| Op::InsertUnique { acct, region, key, val, uniques }
        ),
        1 => (a.clone(), r.clone(), k.clone(), k.clone(), u(), u()).prop_map(
            |(acct, region, k1, k2, u1, u2)| Op::Pair { acct, region, keys: (k1, k2), uniques: (u1, u2) }
        ),
        2 => (a, r, k).prop_map(|(acct, region, key)| Op::Remove { acct, region, key }),
        1 => Just(Op::Checkpoint),
    ]
    .prop_filter("engine refuses before any I/O", is_valid)
}

/// The region an op writes to, if it writes.
pub fn op_region(op: &Op) -> Option<&'static str> {
    op.to_commit().map(|c| c.region)
}
