//! `ops`: an arbitrary sequence of operations over a 3-region store on `SimStorage`,
//! run against the engine and an in-memory model.
//!
//! Operations: create account, writes (insert, insert_unique, a change of the unique
//! values, remove, and small batches of those in one commit), checkpoint, close + reopen,
//! drop + reopen, and crashes: a fault is armed with `SimStorage::fail_after`, one step
//! runs under it, then the power is cut (`SimStorage::crash`) and the store is reopened.
//!
//! Operator paths: reopen with regions disabled (or enabled again, or a fourth region
//! `sa` added) after a clean close or after a power loss, `Db::disable_region` at run time
//! (also under a fault), an open with a new configuration interrupted by a fault and a
//! crash (the previous or the new configuration must open), refused opens (the default
//! region disabled, a region neither listed nor disabled) that must change no file byte,
//! a scan racing `disable_region`, and reads of a unique value racing its transfers
//! between two records. The first input byte also decides whether `eu` lives at a custom
//! path (`Builder::region_at`) for the whole run.
//!
//! After every step the whole store is compared with the model: every row (point reads
//! with `get_in`, the account's `scan`, and `scan_all`), every account, and for every
//! unique value `find_unique` and `is_taken` (I1: one owner, I2: the owner's record exists
//! where the index says); after every reopen with every region enabled `audit()` must be
//! clean. Disabled regions: reads and writes there fail with `RegionDisabled`, scans skip
//! them (`scan_all`) or yield one `RegionDisabled` item (`Read::scan`), a value owned
//! there stays taken. A region disabled at an open after a power loss while it was
//! enabled before may be left *unsettled*: until it is enabled again, a value the model
//! calls free may be refused (`RegionUnsettled`, `Busy`), but an owned value never gets a
//! second owner; otherwise `RegionUnsettled` must never appear. Crash semantics (I3):
//! - a write whose `commit()` returned `Ok` survives the crash;
//! - a write that failed with any error but `Error::OutcomeUnknown` leaves no trace;
//! - after `OutcomeUnknown` (and for account creation, whose synced global commit has no
//!   outcome-unknown error of its own, after any error once the fault tripped) the write
//!   may or may not have happened: the reopened store must equal the model either
//!   entirely before or entirely after it, never a mix.
//!
//! Any divergence panics: that is the finding.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use regionkv::{
    AccountId, Builder, Db, Error, FaultOn, NewAccount, Raw, RegionId, SimStorage, Table, Unique,
};

/// The regions accounts use; `us` (the first listed when the store was created) is the
/// default region and can never be disabled.
const REGIONS: [&str; 3] = ["us", "eu", "ap"];
/// `REGIONS` plus `sa`, a region no account uses, added at some opens (then known to the
/// store for the rest of the run).
const ALL_REGIONS: [&str; 4] = ["us", "eu", "ap", "sa"];
const SA: u8 = 3;
/// Where `eu` lives when the first input byte asks for `Builder::region_at`.
const EU_PATH: &str = "/fuzz-eu/eu.redb";
/// A thread of the concurrent steps that has not finished by then is stuck.
const WATCHDOG: Duration = Duration::from_secs(20);
/// Scans of `ScanDuringDisable`, transfers of `ReadDuringTransfer`.
const SCANS: usize = 50;
const TRANSFERS: usize = 20;
const TABLES: [Table<Raw>; 2] = [Table::new("t0"), Table::new("t1")];
const NAMES: u8 = 4;
const KEYS: u8 = 4;
const NAMESPACES: [&str; 2] = ["email", "slug"];
const UVALUES: u8 = 6;
const MAX_OPS: usize = 64;
const MAX_BATCH: usize = 3;
const MAX_UNIQUES: usize = 3;
const DIR: &str = "/fuzz";

fn account_name(i: u8) -> String {
    format!("acct{}", i % NAMES)
}
fn key(i: u8) -> Vec<u8> {
    format!("k{}", i % KEYS).into_bytes()
}
fn uvalue(i: u8) -> String {
    format!("v{}", i % UVALUES)
}
/// Record values of several sizes, so that rows spill over redb pages now and then.
fn value(b: u8) -> Vec<u8> {
    let len = [1usize, 40, 700, 3000][(b % 4) as usize];
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

// ---------------------------------------------------------------------------------------
// Input

#[derive(Arbitrary, Debug, Clone, Copy)]
enum On {
    Writes,
    Syncs,
    Any,
}

impl From<On> for FaultOn {
    fn from(o: On) -> FaultOn {
        match o {
            On::Writes => FaultOn::Writes,
            On::Syncs => FaultOn::Syncs,
            On::Any => FaultOn::Any,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Item {
    Insert {
        table: bool,
        key: u8,
        value: u8,
    },
    InsertUnique {
        table: bool,
        key: u8,
        value: u8,
        ns: u8,
        uvalue: u8,
    },
    /// `insert_unique` with a whole new set of values (possibly empty: releases all).
    UpdateUnique {
        table: bool,
        key: u8,
        value: u8,
        uniques: Vec<(u8, u8)>,
    },
    Remove {
        table: bool,
        key: u8,
    },
}

#[derive(Debug, Clone)]
enum Step {
    CreateAccount {
        name: u8,
        home: u8,
        allow: u8,
    },
    /// One commit of one item (the plain insert / insert_unique / update / remove ops)...
    Write {
        account: u8,
        region: u8,
        item: Item,
    },
    /// ...or of a few items together (exercises transfers and duplicates within a write).
    Batch {
        account: u8,
        region: u8,
        items: Vec<Item>,
    },
    Checkpoint,
    /// `close()` then reopen.
    Reopen,
    /// Drop without `close()` (the best-effort checkpoint in `Drop`) then reopen.
    DropReopen,
    /// Crash with no step under a fault: only what was synced survives.
    Nothing,
    /// `close()`, then reopen with another configuration: bits 0..=2 of `disable_bits`
    /// disable eu, ap, sa; bit 3 omits from the builder the regions that were disabled
    /// already; `extra` (1 in 4) adds `sa`. The refused variants are tried first: the
    /// default region disabled, and only `us` listed while another region is enabled;
    /// both must fail with `Error::Config` and change no file byte.
    ReopenWith { disable_bits: u8, extra: u8 },
    /// Power loss, then reopen with another configuration (a region disabled now that was
    /// enabled before may be left unsettled).
    CrashReopenWith { disable_bits: u8, extra: u8 },
    /// `Db::disable_region(ALL_REGIONS[region % 4])` at run time.
    DisableNow { region: u8 },
    /// `close()`, then an open with another configuration under
    /// `fail_after(fail_after, on)`, a crash; then the previous configuration must open,
    /// or else the new one.
    FaultyOpen {
        fail_after: u8,
        on: On,
        disable_bits: u8,
        extra: u8,
    },
    /// A thread runs `scan_all(t0)` `SCANS` times while `disable_region` runs.
    ScanDuringDisable { region: u8 },
    /// A thread moves one unique value between two records of one account `TRANSFERS`
    /// times (one write each) while `find_unique` and `is_taken` must keep finding it.
    ReadDuringTransfer {
        account: u8,
        region: u8,
        table: bool,
        key: u8,
        value: u8,
        uvalue: u8,
    },
}

impl Step {
    /// The operator steps: they reopen or race on their own, and ignore an `Op::Crash`
    /// around them (except `DisableNow`, which runs under the fault).
    fn is_operator(&self) -> bool {
        matches!(
            self,
            Step::ReopenWith { .. }
                | Step::CrashReopenWith { .. }
                | Step::DisableNow { .. }
                | Step::FaultyOpen { .. }
                | Step::ScanDuringDisable { .. }
                | Step::ReadDuringTransfer { .. }
        )
    }
}

#[derive(Debug, Clone)]
enum Op {
    Step(Step),
    /// Arm `fail_after(n, on)`, run `step`, cut the power, reopen.
    Crash {
        fail_after: u8,
        on: On,
        step: Step,
    },
}

// Weighted by hand: a reopen costs as much as dozens of writes (every redb file is closed
// and opened again), so writes are frequent and reopens and crashes rarer. One byte
// picks the step: 0..=31 as the first version of this target had it (seeds stay valid),
// 32..=57 again the creates, writes and batches of 0..=25, and one value each for the
// operator steps (each about 1 in 64).
impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let pick = u.int_in_range(0u8..=63)?;
        let pick = if (32..=57).contains(&pick) { pick - 32 } else { pick };
        Ok(match pick {
            0..=2 => Step::CreateAccount {
                name: u.arbitrary()?,
                home: u.arbitrary()?,
                allow: u.arbitrary()?,
            },
            3..=22 => Step::Write {
                account: u.arbitrary()?,
                region: u.arbitrary()?,
                item: u.arbitrary()?,
            },
            23..=26 => Step::Batch {
                account: u.arbitrary()?,
                region: u.arbitrary()?,
                items: (0..u.int_in_range(1..=MAX_BATCH)?)
                    .map(|_| u.arbitrary())
                    .collect::<arbitrary::Result<_>>()?,
            },
            27..=28 => Step::Checkpoint,
            29 => Step::Reopen,
            30 => Step::DropReopen,
            31 => Step::Nothing,
            58 => Step::ReopenWith {
                disable_bits: u.arbitrary()?,
                extra: u.arbitrary()?,
            },
            59 => Step::CrashReopenWith {
                disable_bits: u.arbitrary()?,
                extra: u.arbitrary()?,
            },
            60 => Step::DisableNow {
                region: u.arbitrary()?,
            },
            61 => Step::FaultyOpen {
                fail_after: u.arbitrary()?,
                on: u.arbitrary()?,
                disable_bits: u.arbitrary()?,
                extra: u.arbitrary()?,
            },
            62 => Step::ScanDuringDisable {
                region: u.arbitrary()?,
            },
            _ => Step::ReadDuringTransfer {
                account: u.arbitrary()?,
                region: u.arbitrary()?,
                table: u.arbitrary()?,
                key: u.arbitrary()?,
                value: u.arbitrary()?,
                uvalue: u.arbitrary()?,
            },
        })
    }
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        // One op in eight runs under a fault and ends in a crash.
        Ok(if u.ratio(1u8, 8)? {
            Op::Crash {
                fail_after: u.arbitrary()?,
                on: u.arbitrary()?,
                step: u.arbitrary()?,
            }
        } else {
            Op::Step(u.arbitrary()?)
        })
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bits 0..=2: checkpoint every N unique writes (0 and 4..=7: the default of 1,024).
    /// Bit 3: `eu` lives at `EU_PATH` (`Builder::region_at`) for the whole run.
    budget: u8,
    ops: Vec<Op>,
}

// ---------------------------------------------------------------------------------------
// Model

type RowKey = (u64, u8, u8, u8); // account, region, table, key
type Val = (u8, u8); // namespace, value

#[derive(Debug, Clone, PartialEq, Eq)]
struct AccountM {
    /// `None` while a creation of unknown outcome is being resolved.
    id: Option<u64>,
    home: u8,
    allowed: BTreeSet<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RowM {
    value: u8,
    owned: BTreeSet<Val>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    accounts: BTreeMap<u8, AccountM>,
    rows: BTreeMap<RowKey, RowM>,
    owners: BTreeMap<Val, RowKey>,
}

/// Error classes the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NameTaken,
    Placement,
    Duplicate,
    Unique,
}

#[derive(Debug)]
enum MOp {
    Put {
        value: u8,
        uniques: Option<BTreeSet<Val>>,
    },
    Remove,
}

fn norm_item(item: &Item) -> Item {
    match item {
        Item::UpdateUnique {
            table,
            key,
            value,
            uniques,
        } => Item::UpdateUnique {
            table: *table,
            key: *key,
            value: *value,
            uniques: uniques
                .iter()
                .take(MAX_UNIQUES)
                .map(|&(n, v)| (n % NAMESPACES.len() as u8, v % UVALUES))
                .collect(),
        },
        Item::InsertUnique {
            table,
            key,
            value,
            ns,
            uvalue,
        } => Item::InsertUnique {
            table: *table,
            key: *key,
            value: *value,
            ns: ns % NAMESPACES.len() as u8,
            uvalue: uvalue % UVALUES,
        },
        other => other.clone(),
    }
}

fn item_slot(item: &Item) -> (u8, u8) {
    let (t, k): (bool, u8) = match item {
        Item::Insert { table, key, .. }
        | Item::InsertUnique { table, key, .. }
        | Item::UpdateUnique { table, key, .. }
        | Item::Remove { table, key } => (*table, *key),
    };
    (t as u8, k % KEYS)
}

impl Model {
    fn account_id(&self, idx: u8) -> Option<(u8, u64)> {
        if self.accounts.is_empty() {
            return None;
        }
        let (name, a) = self
            .accounts
            .iter()
            .nth(idx as usize % self.accounts.len())?;
        Some((*name, a.id?))
    }

    fn create(&self, name: u8, home: u8, allow: u8) -> Result<Model, Kind> {
        let name = name % NAMES;
        if self.accounts.contains_key(&name) {
            return Err(Kind::NameTaken);
        }
        let mut m = self.clone();
        let home = home % 3;
        m.accounts.insert(
            name,
            AccountM {
                id: None,
                home,
                allowed: [home, allow % 3].into_iter().collect(),
            },
        );
        Ok(m)
    }

    /// The effect of one commit of `items` by `account` in `region`, as the engine
    /// documents it.
    fn write(&self, account: u64, region: u8, items: &[Item]) -> Result<Model, Kind> {
        let a = self
            .accounts
            .values()
            .find(|a| a.id == Some(account))
            .expect("model account");
        if !a.allowed.contains(&region) {
            return Err(Kind::Placement);
        }
        // Buffering, as `Write::insert*`/`remove` do.
        let mut slots: BTreeMap<(u8, u8), MOp> = BTreeMap::new();
        for item in items {
            let slot = item_slot(item);
            let op = match item {
                Item::Insert { value, .. } => {
                    let uniques = match slots.get(&slot) {
                        Some(MOp::Remove) => Some(BTreeSet::new()),
                        Some(MOp::Put { uniques, .. }) => uniques.clone(),
                        None => None,
                    };
                    MOp::Put {
                        value: *value,
                        uniques,
                    }
                }
                Item::InsertUnique {
                    value, ns, uvalue, ..
                } => MOp::Put {
                    value: *value,
                    uniques: Some([(*ns, *uvalue)].into_iter().collect()),
                },
                Item::UpdateUnique { value, uniques, .. } => {
                    let set: BTreeSet<Val> = uniques.iter().copied().collect();
                    if set.len() != uniques.len() {
                        return Err(Kind::Duplicate);
                    }
                    MOp::Put {
                        value: *value,
                        uniques: Some(set),
                    }
                }
                Item::Remove { .. } => MOp::Remove,
            };
            slots.insert(slot, op);
        }
        // Commit: claims and releases per record.
        let mut claims: Vec<(Val, RowKey)> = Vec::new();
        let mut releases: Vec<Val> = Vec::new();
        for (&(t, k), op) in &slots {
            let rk = (account, region, t, k);
            let new = match op {
                MOp::Remove => BTreeSet::new(),
                MOp::Put {
                    uniques: Some(u), ..
                } => u.clone(),
                MOp::Put { uniques: None, .. } => continue,
            };
            let old = self
                .rows
                .get(&rk)
                .map(|r| r.owned.clone())
                .unwrap_or_default();
            releases.extend(old.difference(&new).copied());
            claims.extend(new.difference(&old).map(|&v| (v, rk)));
        }
        let mut seen = BTreeSet::new();
        for (v, _) in &claims {
            if !seen.insert(*v) {
                return Err(Kind::Duplicate);
            }
        }
        for (v, _) in &claims {
            let transfer = releases.contains(v);
            if !transfer && self.owners.contains_key(v) {
                return Err(Kind::Unique);
            }
        }
        let mut m = self.clone();
        for v in &releases {
            m.owners.remove(v);
        }
        for (v, rk) in &claims {
            m.owners.insert(*v, *rk);
        }
        for (&(t, k), op) in &slots {
            let rk = (account, region, t, k);
            match op {
                MOp::Remove => {
                    m.rows.remove(&rk);
                }
                MOp::Put { value, uniques } => {
                    let owned = match uniques {
                        Some(u) => u.clone(),
                        None => self
                            .rows
                            .get(&rk)
                            .map(|r| r.owned.clone())
                            .unwrap_or_default(),
                    };
                    m.rows.insert(
                        rk,
                        RowM {
                            value: *value,
                            owned,
                        },
                    );
                }
            }
        }
        m.self_check();
        Ok(m)
    }

    fn self_check(&self) {
        for (v, rk) in &self.owners {
            assert!(
                self.rows.get(rk).is_some_and(|r| r.owned.contains(v)),
                "model bug: owner of {v:?} is {rk:?} which does not own it"
            );
        }
        for (rk, r) in &self.rows {
            for v in &r.owned {
                assert_eq!(
                    self.owners.get(v),
                    Some(rk),
                    "model bug: {rk:?} owns {v:?} unindexed"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Engine

fn open(sim: &SimStorage, budget: u64) -> regionkv::Result<Db> {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b.storage(sim.clone())
        .digest_key([7; 32])
        .cache_size(8 << 20)
        .checkpoint_budget(budget, Duration::from_secs(3600))
        .open(DIR)
}

/// The engine's answer to a step, as far as the model cares.
#[derive(Debug)]
enum Got {
    Ok,
    Created(u64),
    Err(Error),
}

fn kind_of(e: &Error) -> Option<Kind> {
    match e {
        Error::AccountNameTaken(_) => Some(Kind::NameTaken),
        Error::PlacementDenied { .. } => Some(Kind::Placement),
        Error::DuplicateInWrite { .. } => Some(Kind::Duplicate),
        Error::UniqueViolation { .. } => Some(Kind::Unique),
        _ => None,
    }
}

fn run_write(db: &Db, account: u64, region: u8, items: &[Item]) -> regionkv::Result<()> {
    let mut w = db.write_in(AccountId::from_raw(account), REGIONS[region as usize])?;
    for item in items {
        let (t, k) = item_slot(item);
        let table = &TABLES[t as usize];
        let key = key(k);
        match item {
            Item::Insert { value: v, .. } => w.insert(table, &key, &value(*v))?,
            Item::InsertUnique {
                value: v,
                ns,
                uvalue: u,
                ..
            } => {
                let uv = uvalue(*u);
                w.insert_unique(
                    table,
                    &key,
                    &value(*v),
                    &[Unique::new(NAMESPACES[*ns as usize], &uv)],
                )?
            }
            Item::UpdateUnique {
                value: v, uniques, ..
            } => {
                let vals: Vec<(usize, String)> = uniques
                    .iter()
                    .map(|&(n, u)| (n as usize, uvalue(u)))
                    .collect();
                let list: Vec<Unique> = vals
                    .iter()
                    .map(|(n, u)| Unique::new(NAMESPACES[*n], u))
                    .collect();
                w.insert_unique(table, &key, &value(*v), &list)?
            }
            Item::Remove { .. } => w.remove(table, &key)?,
        }
    }
    w.commit()
}

struct Harness {
    sim: SimStorage,
    budget: u64,
    db: Option<Db>,
    model: Model,
    region_ids: [RegionId; 3],
    log: Vec<String>,
}

/// What one step means for the model: `Ok(model after)` or the error it must give, and
/// for writes the arguments resolved against the model.
enum Plan {
    Create {
        name: u8,
        home: u8,
        allow: u8,
        expect: Result<Model, Kind>,
    },
    Write {
        account: u64,
        region: u8,
        items: Vec<Item>,
        expect: Result<Model, Kind>,
    },
    Checkpoint,
    Reopen {
        clean: bool,
    },
    Nothing,
    Skip,
}

impl Harness {
    fn db(&self) -> &Db {
        self.db.as_ref().expect("db is open")
    }

    fn fail(&self, what: String) -> ! {
        let mut s = String::new();
        for (i, l) in self.log.iter().enumerate() {
            let _ = writeln!(s, "  {i:3}: {l}");
        }
        panic!(
            "DIVERGENCE: {what}\nops so far:\n{s}model: {:#?}",
            self.model
        );
    }

    fn plan(&self, step: &Step) -> Plan {
        match step {
            Step::CreateAccount { name, home, allow } => Plan::Create {
                name: name % NAMES,
                home: home % 3,
                allow: allow % 3,
                expect: self.model.create(*name, *home, *allow),
            },
            Step::Write {
                account,
                region,
                item,
            } => self.plan_write(*account, *region, std::slice::from_ref(item)),
            Step::Batch {
                account,
                region,
                items,
            } => {
                if items.is_empty() {
                    return Plan::Skip;
                }
                self.plan_write(*account, *region, &items[..items.len().min(MAX_BATCH)])
            }
            Step::Checkpoint => Plan::Checkpoint,
            Step::Reopen => Plan::Reopen { clean: true },
            Step::DropReopen => Plan::Reopen { clean: false },
            Step::Nothing => Plan::Nothing,
        }
    }

    fn plan_write(&self, account: u8, region: u8, items: &[Item]) -> Plan {
        let Some((name, id)) = self.model.account_id(account) else {
            return Plan::Skip;
        };
        let items: Vec<Item> = items.iter().map(norm_item).collect();
        // Mostly a region the account may use (so that writes land on the same few records
        // often); one time in eight any region, which may be refused.
        let region = if region % 8 == 7 {
            (region / 8) % 3
        } else {
            let allowed: Vec<u8> = self.model.accounts[&name].allowed.iter().copied().collect();
            allowed[(region as usize) % allowed.len()]
        };
        let expect = self.model.write(id, region, &items);
        Plan::Write {
            account: id,
            region,
            items,
            expect,
        }
    }

    /// Runs a planned step; `Reopen` and `Nothing` are handled by the caller.
    fn execute(&self, plan: &Plan) -> Got {
        let db = self.db();
        let r = match plan {
            Plan::Create {
                name, home, allow, ..
            } => {
                return match db.create_account(
                    NewAccount::new(account_name(*name), REGIONS[*home as usize])
                        .allow(REGIONS[*allow as usize]),
                ) {
                    Ok(id) => Got::Created(id.get()),
                    Err(e) => Got::Err(e),
                };
            }
            Plan::Write {
                account,
                region,
                items,
                ..
            } => run_write(db, *account, *region, items),
            Plan::Checkpoint => db.checkpoint(),
            Plan::Reopen { .. } | Plan::Nothing | Plan::Skip => Ok(()),
        };
        match r {
            Ok(()) => Got::Ok,
            Err(e) => Got::Err(e),
        }
    }

    fn reopen_clean(&mut self, clean: bool) {
        let db = self.db.take().expect("db is open");
        if clean {
            if let Err(e) = db.close() {
                self.fail(format!("close failed without a fault: {e}"));
            }
        } else {
            // Without close(): the Db's drop runs its best-effort checkpoint.
            drop(db);
        }
        match open(&self.sim, self.budget) {
            Ok(db) => self.db = Some(db),
            Err(e) => self.fail(format!("reopen failed without a fault: {e}")),
        }
        self.audit();
    }

    /// After every open: `audit()` (I1, I2, placement, counters, checksums, protocol
    /// leftovers) must be clean.
    fn audit(&self) {
        match self.db().audit() {
            Ok(report) if report.is_clean() => {}
            Ok(report) => self.fail(format!("audit after reopen: {report}")),
            Err(e) => self.fail(format!("audit after reopen failed: {e}")),
        }
    }

    /// Steps without a fault: the engine must do exactly what the model says.
    fn step(&mut self, step: &Step) {
        let plan = self.plan(step);
        match &plan {
            Plan::Skip => return,
            Plan::Reopen { clean } => self.reopen_clean(*clean),
            Plan::Nothing => {
                // A crash with nothing under a fault: every acknowledged write survives.
                self.crash_and_reopen();
            }
            _ => {}
        }
        let got = self.execute(&plan);
        if trace() {
            eprintln!("    -> {got:?}");
        }
        let next = match (&plan, got) {
            (
                Plan::Create {
                    name,
                    expect: Ok(m),
                    ..
                },
                Got::Created(id),
            ) => {
                let mut m = m.clone();
                m.accounts.get_mut(name).expect("planned account").id = Some(id);
                m
            }
            (Plan::Write { expect: Ok(m), .. }, Got::Ok) => m.clone(),
            (
                Plan::Create { expect: Err(k), .. } | Plan::Write { expect: Err(k), .. },
                Got::Err(e),
            ) if kind_of(&e) == Some(*k) => self.model.clone(),
            (Plan::Checkpoint | Plan::Reopen { .. } | Plan::Nothing, Got::Ok) => self.model.clone(),
            (Plan::Create { expect, .. } | Plan::Write { expect, .. }, got) => self.fail(format!(
                "expected {:?}, engine gave {got:?}",
                expect.as_ref().map(|_| "Ok")
            )),
            (_, got) => self.fail(format!("unexpected result {got:?}")),
        };
        self.model = next;
        if let Err(e) = check(self.db(), &self.model, &self.region_ids) {
            self.fail(format!("after a step without fault: {e}"));
        }
    }

    fn crash_and_reopen(&mut self) {
        // Crash first: the old Db's drop must not be able to write anything.
        self.sim.crash();
        drop(self.db.take());
        match open(&self.sim, self.budget) {
            Ok(db) => self.db = Some(db),
            Err(e) => self.fail(format!("reopen after a crash failed: {e}")),
        }
        self.audit();
    }

    /// A step under an armed fault, then a crash and a reopen; the store must then match
    /// one of the models the step's result allows.
    fn crash_step(&mut self, fail_after: u8, on: On, step: &Step) {
        let plan = self.plan(step);
        if matches!(plan, Plan::Skip) {
            return;
        }
        let pre = self.model.clone();
        self.sim.fail_after(u64::from(fail_after), on.into());
        let got = match &plan {
            Plan::Reopen { clean } => {
                let db = self.db.take().expect("db is open");
                let closed = if *clean {
                    db.close()
                } else {
                    drop(db);
                    Ok(())
                };
                // Open (recovery included) under the same fault; it may fail.
                if let Ok(db) = open(&self.sim, self.budget) {
                    self.db = Some(db);
                }
                match closed {
                    Ok(()) => Got::Ok,
                    Err(e) => Got::Err(e),
                }
            }
            _ => self.execute(&plan),
        };
        let tripped = self.sim.fault_tripped();
        if trace() {
            eprintln!("    -> {got:?} (fault tripped: {tripped}); crash");
        }
        self.crash_and_reopen();

        let write_unknown = |e: &Error| matches!(e, Error::OutcomeUnknown { .. });
        let candidates: Vec<Model> = match (&plan, got) {
            (
                Plan::Write {
                    expect: Ok(post), ..
                },
                Got::Ok,
            ) => vec![post.clone()],
            (
                Plan::Write {
                    expect: Ok(post), ..
                },
                Got::Err(e),
            ) if write_unknown(&e) => {
                vec![pre.clone(), post.clone()]
            }
            // Any other error of a write means nothing was written (I3).
            (Plan::Write { expect: Ok(_), .. }, Got::Err(e))
                if tripped && kind_of(&e).is_none() =>
            {
                vec![pre.clone()]
            }
            (
                Plan::Create {
                    name,
                    expect: Ok(post),
                    ..
                },
                Got::Created(id),
            ) => {
                let mut post = post.clone();
                post.accounts.get_mut(name).expect("planned").id = Some(id);
                vec![post]
            }
            // A failed synced global commit may or may not be durable.
            (
                Plan::Create {
                    name,
                    expect: Ok(post),
                    ..
                },
                Got::Err(e),
            ) if tripped && kind_of(&e).is_none() => {
                let mut post = post.clone();
                match self.db().account_id(&account_name(*name)) {
                    Ok(Some(id)) => {
                        post.accounts.get_mut(name).expect("planned").id = Some(id.get());
                        vec![pre.clone(), post]
                    }
                    Ok(None) => vec![pre.clone()],
                    Err(e) => self.fail(format!("account_id after crash: {e}")),
                }
            }
            (
                Plan::Create { expect: Err(k), .. } | Plan::Write { expect: Err(k), .. },
                Got::Err(e),
            ) if kind_of(&e) == Some(*k) || (tripped && kind_of(&e).is_none()) => {
                vec![pre.clone()]
            }
            (Plan::Checkpoint | Plan::Reopen { .. } | Plan::Nothing, Got::Ok) => vec![pre.clone()],
            (Plan::Checkpoint | Plan::Reopen { .. }, Got::Err(_)) if tripped => vec![pre.clone()],
            (_, got) => self.fail(format!(
                "under fault (tripped: {tripped}): engine gave {got:?}, not allowed by the model"
            )),
        };
        let mut why = Vec::new();
        for c in &candidates {
            match check(self.db(), c, &self.region_ids) {
                Ok(()) => {
                    if trace() && candidates.len() > 1 {
                        let which = if *c == pre {
                            "did not happen"
                        } else {
                            "happened"
                        };
                        eprintln!("    outcome unknown -> the step {which}");
                    }
                    self.model = c.clone();
                    return;
                }
                Err(e) => why.push(e),
            }
        }
        self.fail(format!(
            "after a crash the store matches none of the {} allowed outcome(s): {why:#?}",
            candidates.len()
        ));
    }
}

// ---------------------------------------------------------------------------------------
// The comparison

fn check(db: &Db, m: &Model, region_ids: &[RegionId; 3]) -> Result<(), String> {
    let ridx = |id: RegionId| region_ids.iter().position(|&r| r == id).map(|i| i as u8);
    let e = |what: &str, err: Error| format!("{what}: {err}");

    // Accounts.
    for n in 0..NAMES {
        let got = db
            .account_id(&account_name(n))
            .map_err(|x| e("account_id", x))?;
        match (m.accounts.get(&n), got) {
            (None, None) => {}
            (Some(a), Some(id)) => {
                if a.id != Some(id.get()) {
                    return Err(format!(
                        "account {n}: id {id} in the store, {:?} in the model",
                        a.id
                    ));
                }
                let acc = db.account(id).map_err(|x| e("account", x))?;
                let allowed: BTreeSet<u8> = acc.allowed().iter().filter_map(|&r| ridx(r)).collect();
                if ridx(acc.home()) != Some(a.home) || allowed != a.allowed {
                    return Err(format!("account {n}: placement differs: {acc:?} vs {a:?}"));
                }
            }
            (a, got) => return Err(format!("account {n}: model {a:?}, store {got:?}")),
        }
    }

    // Rows, by point reads.
    for (&(acct, r, t, k), row) in &m.rows {
        let read = db
            .read(AccountId::from_raw(acct))
            .map_err(|x| e("read", x))?;
        let got = read
            .get_in(REGIONS[r as usize], &TABLES[t as usize], &key(k))
            .map_err(|x| e("get_in", x))?;
        match got {
            Some(rec) if *rec == *value(row.value) => {}
            Some(rec) => {
                return Err(format!(
                    "row {:?}: {} bytes stored, model has value {}",
                    (acct, r, t, k),
                    rec.len(),
                    row.value
                ));
            }
            None => {
                return Err(format!(
                    "row {:?} missing (model value {})",
                    (acct, r, t, k),
                    row.value
                ));
            }
        }
    }

    // Rows, by scans: exactly the model's rows, no more.
    let expect_rows = |t: u8, acct: Option<u64>| -> BTreeMap<(u64, u8, Vec<u8>), Vec<u8>> {
        m.rows
            .iter()
            .filter(|((a, _, tt, _), _)| *tt == t && acct.is_none_or(|x| x == *a))
            .map(|(&(a, r, _, k), row)| ((a, r, key(k)), value(row.value)))
            .collect()
    };
    for t in 0..TABLES.len() as u8 {
        let mut got = BTreeMap::new();
        for row in db
            .scan_all(&TABLES[t as usize])
            .map_err(|x| e("scan_all", x))?
        {
            let row = row.map_err(|x| e("scan_all row", x))?;
            let r = ridx(row.region()).ok_or("scan_all: unknown region")?;
            got.insert(
                (row.account().get(), r, row.key().to_vec()),
                row.record().to_vec(),
            );
        }
        let want = expect_rows(t, None);
        if got != want {
            return Err(format!(
                "scan_all t{t}: store has {:?}, model {:?}",
                got.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>(),
                want.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
            ));
        }
        for a in m.accounts.values() {
            let Some(id) = a.id else { continue };
            let read = db.read(AccountId::from_raw(id)).map_err(|x| e("read", x))?;
            let mut got = BTreeMap::new();
            for row in read.scan(&TABLES[t as usize]).map_err(|x| e("scan", x))? {
                let row = row.map_err(|x| e("scan row", x))?;
                if row.account().get() != id {
                    return Err(format!(
                        "scan of account {id} yielded a row of {}",
                        row.account()
                    ));
                }
                let r = ridx(row.region()).ok_or("scan: unknown region")?;
                got.insert((id, r, row.key().to_vec()), row.record().to_vec());
            }
            let want = expect_rows(t, Some(id));
            if got != want {
                return Err(format!(
                    "scan of account {id} t{t}: {} rows, model {}",
                    got.len(),
                    want.len()
                ));
            }
        }
    }

    // Unique values: I1 (one owner) and I2 (the owner's record is where the index says).
    for ns in 0..NAMESPACES.len() as u8 {
        for v in 0..UVALUES {
            let owner = m.owners.get(&(ns, v));
            let (nsn, uv) = (NAMESPACES[ns as usize], uvalue(v));
            let taken = db.is_taken(nsn, &uv).map_err(|x| e("is_taken", x))?;
            if taken != owner.is_some() {
                return Err(format!(
                    "is_taken({nsn}, {uv}) = {taken}, model owner {owner:?}"
                ));
            }
            for t in 0..TABLES.len() as u8 {
                let hit = db
                    .find_unique(&TABLES[t as usize], nsn, &uv)
                    .map_err(|x| e("find_unique", x))?;
                let want = owner.filter(|o| o.2 == t);
                match (hit, want) {
                    (None, None) => {}
                    (Some(h), Some(&(a, r, _, k))) => {
                        let at = (h.account().get(), ridx(h.region()), h.key().to_vec());
                        if at != (a, Some(r), key(k)) {
                            return Err(format!(
                                "find_unique({nsn}, {uv}) in t{t} -> {at:?}, model {:?}",
                                (a, r, k)
                            ));
                        }
                        let row = &m.rows[&(a, r, t, k)];
                        if **h.record() != *value(row.value) {
                            return Err(format!("find_unique({nsn}, {uv}): record bytes differ"));
                        }
                    }
                    (h, want) => {
                        return Err(format!(
                            "find_unique({nsn}, {uv}) in t{t} -> {:?}, model owner {want:?}",
                            h.map(|h| (
                                h.account(),
                                h.region(),
                                String::from_utf8_lossy(h.key()).into_owned()
                            ))
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `REGIONKV_FUZZ_TRACE=1`: print every operation and the engine's answer (to read what
/// an input does: `REGIONKV_FUZZ_TRACE=1 fuzz/target/.../ops <input>`).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("REGIONKV_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

/// Accounts every input starts with (name index, home, other allowed region), so that
/// writes are meaningful from the first operation; `CreateAccount` adds names 2 and 3.
const INITIAL_ACCOUNTS: [(u8, u8, u8); 2] = [(0, 0, 1), (1, 1, 2)];

/// A new store holding only `INITIAL_ACCOUNTS`. Created once per process and copied for
/// each input: creating four redb files costs more than a whole short input under the
/// fuzzer's instrumentation.
fn fresh_store() -> SimStorage {
    static FILES: OnceLock<Vec<(PathBuf, Vec<u8>)>> = OnceLock::new();
    let files = FILES.get_or_init(|| {
        let sim = SimStorage::new();
        let db = open(&sim, 1024).expect("creating a store on a fresh SimStorage");
        for (name, home, allow) in INITIAL_ACCOUNTS {
            db.create_account(
                NewAccount::new(account_name(name), REGIONS[home as usize])
                    .allow(REGIONS[allow as usize]),
            )
            .expect("creating an initial account");
        }
        db.close().expect("closing a fresh store");
        sim.paths()
            .into_iter()
            .map(|p| {
                let bytes = sim.live_bytes(&p).expect("listed file");
                (p, bytes)
            })
            .collect()
    });
    let sim = SimStorage::new();
    for (p, bytes) in files {
        sim.set_bytes(p, bytes.clone());
    }
    sim
}

fuzz_target!(|input: Input| {
    // Mostly the default budget (checkpoints only when asked for, at close and at open),
    // sometimes a checkpoint after every 1, 2 or 3 unique writes.
    let budget = match input.budget % 8 {
        n @ 1..=3 => u64::from(n),
        _ => 1024,
    };
    let sim = fresh_store();
    let db = open(&sim, budget).expect("opening a fresh store");
    let region_ids = REGIONS.map(|r| db.region_id(r).expect("configured region"));
    let mut model = Model::default();
    for (name, home, allow) in INITIAL_ACCOUNTS {
        let id = db
            .account_id(&account_name(name))
            .expect("account_id")
            .expect("initial account");
        model.accounts.insert(
            name,
            AccountM {
                id: Some(id.get()),
                home,
                allowed: [home, allow].into_iter().collect(),
            },
        );
    }
    let mut h = Harness {
        sim,
        budget,
        db: Some(db),
        model,
        region_ids,
        log: Vec::new(),
    };
    for op in input.ops.iter().take(MAX_OPS) {
        if trace() {
            eprintln!("op {}: {op:?}", h.log.len());
        }
        h.log.push(format!("{op:?}"));
        match op {
            Op::Step(step) => h.step(step),
            Op::Crash {
                fail_after,
                on,
                step,
            } => h.crash_step(*fail_after, *on, step),
        }
    }
    // The end: a clean close and reopen must show the same store.
    h.reopen_clean(true);
    if let Err(e) = check(h.db(), &h.model, &h.region_ids) {
        h.fail(format!("after the final reopen: {e}"));
    }
});
