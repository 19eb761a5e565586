//! The shared kit of the integration tests.
//!
//! This module: a small protocol workload over 3 regions, an in-memory model of what the
//! store must contain, and a checker that compares a live store with it (`check`,
//! `check_some`, `check_catalog`). Spaces are small on purpose: few accounts, few keys, few
//! unique values, so claims collide.
//!
//! Submodules: [`rng`] (the one pseudo-random generator), [`sim`] (stores on `SimStorage`,
//! one-record writes, file paths from `regionkv::layout`), [`files`] (directory snapshots
//! and their differences, byte searches, the us+eu store on disk), [`refusal`] (refused
//! opens and rejected operations as rows of a table).
//!
//! Every test binary compiles this kit and uses a part of it.

#![allow(dead_code)]

pub mod files;
pub mod refusal;
pub mod rng;
pub mod sim;

use std::collections::BTreeMap;

use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

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
    Checkpoint,
}

impl Op {
    pub fn region_name(acct: usize, region: usize) -> &'static str {
        let a = allowed(acct);
        a[region % a.len()]
    }
}

/// What a record is, in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub value: Vec<u8>,
    pub uniques: Vec<(String, String)>,
}

pub type RowKey = (usize, &'static str, u8);
/// (namespace index, value index) pairs a record claims.
pub type Uniques = Vec<(u8, u8)>;
/// One record a write sets: key, value, owned (namespace, value) pairs.
type RecordSet = (RowKey, Vec<u8>, Vec<(String, String)>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub rows: BTreeMap<RowKey, Row>,
    pub owners: BTreeMap<(String, String), RowKey>,
}

/// Outcome classes the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Violation,
}

fn uniq_list(u: &[(u8, u8)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = u
        .iter()
        .map(|&(ns, val)| {
            (
                NAMESPACES[ns as usize % 2].to_string(),
                unique_value(val % VALUES),
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Model {
    /// Applies `op` if the engine must accept it; returns the predicted outcome.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Checkpoint => Outcome::Ok,
            Op::Insert {
                acct,
                region,
                key,
                val,
            } => {
                let rk = (*acct, Op::region_name(*acct, *region), *key);
                let uniques = self
                    .rows
                    .get(&rk)
                    .map(|r| r.uniques.clone())
                    .unwrap_or_default();
                self.rows.insert(
                    rk,
                    Row {
                        value: record_value(*val),
                        uniques,
                    },
                );
                Outcome::Ok
            }
            Op::InsertUnique {
                acct,
                region,
                key,
                val,
                uniques,
            } => {
                let rk = (*acct, Op::region_name(*acct, *region), *key);
                self.set_records(&[(rk, record_value(*val), uniq_list(uniques))])
            }
            Op::Pair {
                acct,
                region,
                keys,
                uniques,
            } => {
                let r = Op::region_name(*acct, *region);
                if keys.0 == keys.1 {
                    // Same record twice in one write: the last operation wins.
                    return self.set_records(&[(
                        (*acct, r, keys.1),
                        record_value(keys.1),
                        uniq_list(&uniques.1),
                    )]);
                }
                let a = uniq_list(&uniques.0);
                let b = uniq_list(&uniques.1);
                self.set_records(&[
                    ((*acct, r, keys.0), record_value(keys.0), a),
                    ((*acct, r, keys.1), record_value(keys.1), b),
                ])
            }
            Op::Remove { acct, region, key } => {
                let rk = (*acct, Op::region_name(*acct, *region), *key);
                if let Some(row) = self.rows.remove(&rk) {
                    for u in row.uniques {
                        self.owners.remove(&u);
                    }
                }
                Outcome::Ok
            }
        }
    }

    /// Sets several records of one write atomically (each owning exactly its list).
    fn set_records(&mut self, recs: &[RecordSet]) -> Outcome {
        // Values claimed by two records of the write: the engine refuses the write
        // (DuplicateInWrite); the workload never generates that, see `is_valid`.
        let written: Vec<RowKey> = recs.iter().map(|r| r.0).collect();
        for (rk, _, new) in recs {
            for u in new {
                if let Some(owner) = self.owners.get(u)
                    && owner != rk
                    && !written.contains(owner)
                {
                    return Outcome::Violation;
                }
                // Owned by another record of this write that keeps it: also a conflict.
                if let Some(owner) = self.owners.get(u)
                    && owner != rk
                    && written.contains(owner)
                {
                    let keeps = recs.iter().any(|(k, _, l)| k == owner && l.contains(u));
                    if keeps {
                        return Outcome::Violation;
                    }
                }
            }
        }
        for (rk, value, new) in recs {
            if let Some(old) = self.rows.get(rk) {
                for u in &old.uniques {
                    if self.owners.get(u) == Some(rk) {
                        self.owners.remove(u);
                    }
                }
            }
            self.rows.insert(
                *rk,
                Row {
                    value: value.clone(),
                    uniques: new.clone(),
                },
            );
        }
        for (rk, _, new) in recs {
            for u in new {
                self.owners.insert(u.clone(), *rk);
            }
        }
        Outcome::Ok
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

/// Runs an op against the store.
pub fn execute(db: &Db, ids: &[AccountId], op: &Op) -> Result<(), Error> {
    let write = |acct: usize, region: usize| db.write_in(ids[acct], Op::region_name(acct, region));
    match op {
        Op::Checkpoint => db.checkpoint(),
        Op::Insert {
            acct,
            region,
            key,
            val,
        } => {
            let mut w = write(*acct, *region)?;
            w.insert(&T, &[*key], &record_value(*val))?;
            w.commit()
        }
        Op::InsertUnique {
            acct,
            region,
            key,
            val,
            uniques,
        } => {
            let list = uniq_list(uniques);
            let us: Vec<Unique> = list.iter().map(|(n, v)| Unique::new(n, v)).collect();
            let mut w = write(*acct, *region)?;
            w.insert_unique(&T, &[*key], &record_value(*val), &us)?;
            w.commit()
        }
        Op::Pair {
            acct,
            region,
            keys,
            uniques,
        } => {
            let la = uniq_list(&uniques.0);
            let lb = uniq_list(&uniques.1);
            let ua: Vec<Unique> = la.iter().map(|(n, v)| Unique::new(n, v)).collect();
            let ub: Vec<Unique> = lb.iter().map(|(n, v)| Unique::new(n, v)).collect();
            let mut w = write(*acct, *region)?;
            w.insert_unique(&T, &[keys.0], &record_value(keys.0), &ua)?;
            w.insert_unique(&T, &[keys.1], &record_value(keys.1), &ub)?;
            w.commit()
        }
        Op::Remove { acct, region, key } => {
            let mut w = write(*acct, *region)?;
            w.remove(&T, &[*key])?;
            w.commit()
        }
    }
}

pub fn classify(r: &Result<(), Error>) -> Option<Outcome> {
    match r {
        Ok(()) => Some(Outcome::Ok),
        Err(Error::UniqueViolation { .. }) => Some(Outcome::Violation),
        Err(_) => None,
    }
}

pub fn builder() -> regionkv::Builder {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b
}

/// Creates the accounts of the workload; returns their ids.
pub fn create_accounts(db: &Db) -> Vec<AccountId> {
    ACCOUNTS
        .iter()
        .map(|(name, home, others)| {
            let mut n = NewAccount::new(*name, *home);
            for o in *others {
                n = n.allow(*o);
            }
            db.create_account(n).expect("create account")
        })
        .collect()
}

pub fn account_ids(db: &Db) -> Vec<AccountId> {
    ACCOUNTS
        .iter()
        .map(|(name, _, _)| db.account_id(name).unwrap().expect("account exists"))
        .collect()
}

/// Compares the store with the model: every row (I3), every owner (I1, I2).
pub fn check(db: &Db, ids: &[AccountId], model: &Model) -> Result<(), String> {
    let all: Vec<Option<AccountId>> = ids.iter().map(|i| Some(*i)).collect();
    check_some(db, &all, model)
}

/// Like [`check`], for a workload in which some accounts do not exist yet (`None`).
pub fn check_some(db: &Db, ids: &[Option<AccountId>], model: &Model) -> Result<(), String> {
    check_catalog(db, ids, model, &Catalog::default())
}

/// `n` (namespace, value) index pairs.
fn random_uniques(g: &mut Rng, n: u64) -> Vec<(u8, u8)> {
    (0..n)
        .map(|_| (g.next(2) as u8, g.next(VALUES as u64) as u8))
        .collect()
}

/// A deterministic pseudo-random workload, with unique values that collide.
pub fn workload(seed: u64, len: usize) -> Vec<Op> {
    let mut g = Rng(seed.max(1));
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let acct = g.next(3) as usize;
        let region = g.next(3) as usize;
        let key = g.next(KEYS as u64) as u8;
        let op = match g.next(10) {
            0..=2 => {
                let n = 1 + g.next(2);
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
            _ => {
                let val = g.next(8) as u8;
                Op::InsertUnique {
                    acct,
                    region,
                    key,
                    val,
                    uniques: random_uniques(&mut g, 1),
                }
            }
        };
        if is_valid(&op) {
            ops.push(op);
        }
    }
    ops
}

/// What the store may answer while some regions are disabled.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Disabled regions (by name).
    pub disabled: Vec<&'static str>,
    /// Some disabled region may hold claims a crash left unsettled: "free" answers may be
    /// refused with `RegionUnsettled` (or `Busy` for an in-flight entry left behind).
    pub unsettled: bool,
}

impl Catalog {
    pub fn is_disabled(&self, region: &str) -> bool {
        self.disabled.contains(&region)
    }
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
    for (acct, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        let r = db.read(*id).map_err(|e| format!("read({acct}): {e}"))?;
        for region in allowed(acct) {
            for key in 0..KEYS {
                let got = r.get_in(region, &T, &[key]);
                if cat.is_disabled(region) {
                    if !matches!(got, Err(Error::RegionDisabled(_))) {
                        return Err(format!(
                            "get a{acct} {region} k{key} in a disabled region: {:?}",
                            got.map(|o| o.map(|r| r.to_vec()))
                        ));
                    }
                    continue;
                }
                let got = got
                    .map_err(|e| format!("get a{acct} {region} k{key}: {e}"))?
                    .map(|rec| rec.to_vec());
                let want = model
                    .rows
                    .get(&(acct, region, key))
                    .map(|r| r.value.clone());
                if got != want {
                    return Err(format!(
                        "row a{acct} {region} k{key}: store {got:?}, model {want:?}"
                    ));
                }
            }
        }
    }
    for ns in NAMESPACES {
        for v in 0..VALUES {
            let value = unique_value(v);
            let want = model
                .owners
                .get(&(ns.to_string(), value.clone()))
                .map(|(a, r, k)| (*a, r.to_string(), vec![*k]));
            let hit = db.find_unique(&T, ns, &value);
            let taken = db.is_taken(ns, &value);
            match &want {
                Some((_, region, _)) if cat.is_disabled(region) => {
                    if !matches!(
                        hit,
                        Err(Error::RegionDisabled(_)) | Err(Error::RegionUnsettled(_))
                    ) {
                        return Err(format!(
                            "find_unique {ns}/{value} owned in disabled {region}: {:?}",
                            hit.map(|h| h.map(|h| h.account()))
                        ));
                    }
                    match taken {
                        Ok(true) => {}
                        Err(Error::RegionUnsettled(_)) if cat.unsettled => {}
                        other => {
                            return Err(format!(
                                "is_taken {ns}/{value} owned in disabled {region}: {other:?}"
                            ));
                        }
                    }
                    continue;
                }
                None if cat.unsettled => {
                    // May be refused; must never name an owner the model does not know.
                    match hit {
                        // An entry left in flight by the crash names the disabled region.
                        Ok(None)
                        | Err(Error::RegionUnsettled(_))
                        | Err(Error::RegionDisabled(_)) => {}
                        Ok(Some(h)) => {
                            return Err(format!(
                                "find_unique {ns}/{value}: owner {:?}, model none",
                                h.account()
                            ));
                        }
                        Err(e) => return Err(format!("find_unique {ns}/{value}: {e}")),
                    }
                    if let Err(e) = &taken
                        && !matches!(e, Error::RegionUnsettled(_))
                    {
                        return Err(format!("is_taken {ns}/{value}: {e}"));
                    }
                    continue;
                }
                _ => {}
            }
            let got = hit
                .map_err(|e| format!("find_unique {ns}/{value}: {e}"))?
                .map(|h| {
                    let acct = ids
                        .iter()
                        .position(|i| *i == Some(h.account()))
                        .expect("known account");
                    let region = db.region_name(h.region()).unwrap();
                    (acct, region, h.key().to_vec())
                });
            if got != want {
                return Err(format!(
                    "owner of {ns}/{value}: store {got:?}, model {want:?}"
                ));
            }
            let taken = taken.map_err(|e| format!("is_taken {ns}/{value}: {e}"))?;
            if taken != want.is_some() {
                return Err(format!(
                    "is_taken {ns}/{value}: {taken}, model owner {want:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The region an op writes to, if it writes.
pub fn op_region(op: &Op) -> Option<&'static str> {
    match op {
        Op::Insert { acct, region, .. }
        | Op::InsertUnique { acct, region, .. }
        | Op::Pair { acct, region, .. }
        | Op::Remove { acct, region, .. } => Some(Op::region_name(*acct, *region)),
        Op::Checkpoint => None,
    }
}
