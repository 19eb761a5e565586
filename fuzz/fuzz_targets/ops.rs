//! `ops`: an arbitrary sequence of operations over a 3-region store on `SimStorage`,
//! run against the engine and an in-memory model.
//!
//! Operations: create account, writes (insert, insert_unique, a change of the unique
//! values, remove, and small batches of those in one commit), records of `td`, a table
//! that declares its `slug` value (set by `insert`, or `insert_unique` with the declared
//! list or a contradicting one, refused), read-modify-writes (`Write::update` in any
//! batch, `Db::update`), and a stale update (write A reads a record, write B commits a
//! change of it, A's commit must fail with `Conflict` naming it and write nothing);
//! checkpoint, close + reopen,
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
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Raw, RegionId, Table, Unique};

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
/// `t0` and `t1` (values claimed with `insert_unique`), and `td`, which declares its `slug`
/// value: the bytes of a record before `#` (see `dvalue`), claimed and released by
/// `insert` itself, colliding with the other tables' `slug` claims.
const TABLES: [Table<Raw>; 3] = [
    Table::new("t0"),
    Table::new("t1"),
    Table::<Raw>::new("td").unique("slug", declared),
];
const TD: u8 = 2;
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
/// The value `td` declares in a record: its bytes before the first `#`.
fn declared(v: &[u8]) -> Option<&[u8]> {
    v.iter().position(|&b| b == b'#').map(|i| &v[..i])
}
/// Record values of `td`: `v<b % 6>#<b>` (declares `uvalue(b)` in `slug`), or one time in
/// four `free-<b>` (declares nothing).
fn dvalue(b: u8) -> Vec<u8> {
    if b % 4 == 3 {
        format!("free-{b:03}").into_bytes()
    } else {
        format!("{}#{b:03}", uvalue(b)).into_bytes()
    }
}
/// The claim of `dvalue(b)`.
fn dclaim(b: u8) -> BTreeSet<Val> {
    (b % 4 != 3)
        .then_some((1, b % UVALUES))
        .into_iter()
        .collect()
}
/// The bytes of a record of table `t` the model holds as `b`.
fn row_bytes(t: u8, b: u8) -> Vec<u8> {
    if t == TD { dvalue(b) } else { value(b) }
}
/// The model's `b` of a record of table `t` (`None`: bytes no `row_bytes` makes).
fn row_index(t: u8, bytes: &[u8]) -> Option<u8> {
    let b = if t == TD {
        std::str::from_utf8(bytes.get(bytes.len().checked_sub(3)?..)?)
            .ok()?
            .parse()
            .ok()?
    } else {
        *bytes.first()?
    };
    (row_bytes(t, b) == bytes).then_some(b)
}
/// What a read-modify-write of a record of `t` makes of the record it reads (`None`:
/// absent): the new value, or `None` to leave it. A record of `td` keeps its declared
/// value when `by` is even, else takes another one (or none).
fn bump(t: u8, old: Option<u8>, by: u8) -> Option<u8> {
    match old {
        None if by.is_multiple_of(3) => None,
        None => Some(by),
        Some(o) if t == TD && by.is_multiple_of(2) => Some(changed(t, Some(o))),
        Some(o) => Some(o.wrapping_add(by).wrapping_add(1)),
    }
}
/// A value other than `old` (a record of `t`) that claims nothing `old` does not: what
/// write B of a stale update commits.
fn changed(t: u8, old: Option<u8>) -> u8 {
    match (t == TD, old) {
        // Declares nothing.
        (true, None) => 3,
        // The same declared value (and `b % 4` class): 12 away.
        (true, Some(o)) if o < 244 => o + 12,
        (true, Some(o)) => o - 12,
        (false, None) => 0,
        (false, Some(o)) => o.wrapping_add(4),
    }
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

/// Items that read or use the declaring table.
#[derive(Arbitrary, Debug, Clone)]
enum DItem {
    /// A record of `td` set to `dvalue(value)`: `list % 4` 0 and 1 `insert`, 2
    /// `insert_unique` with the declared list, 3 with a contradicting list (refused with
    /// `InvalidArgument` before the commit).
    Insert {
        key: u8,
        value: u8,
        list: u8,
    },
    Remove {
        key: u8,
    },
    /// `Write::update` of a record of `t0`, `t1` or `td` (`table % 3`): it becomes `bump`
    /// of what the write reads (its own buffered change first).
    Update {
        table: u8,
        key: u8,
        by: u8,
    },
}

/// An item of a write.
#[derive(Debug, Clone)]
enum WItem {
    T(Item),
    D(DItem),
}

impl<'a> Arbitrary<'a> for WItem {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(if u.ratio(1u8, 3)? {
            WItem::T(u.arbitrary()?)
        } else {
            WItem::D(u.arbitrary()?)
        })
    }
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
    /// A few writes (of any accounts and regions) committed together by `Db::commit_each`:
    /// group commits, each write with its own outcome, which must be the outcome of
    /// committing them one by one (region by region, in the order of each region's first
    /// write). Writes that read (`DItem::Update`) are left out: they read before the
    /// writes ahead of them commit.
    Group {
        writes: Vec<(u8, u8, Vec<WItem>)>,
    },
    /// A commit of a few items of any kind (`td`, updates and the items of `Batch`).
    Mixed {
        account: u8,
        region: u8,
        items: Vec<WItem>,
    },
    /// `Db::update` of a record of `t0`, `t1` or `td` (`table % 3`) in the account's home
    /// region.
    DbUpdate {
        account: u8,
        table: u8,
        key: u8,
        by: u8,
    },
    /// Write A updates a record (and inserts another of `t0`), write B commits a change of
    /// the record (claiming nothing new), then A commits: `Conflict`, A writes nothing.
    StaleUpdate {
        account: u8,
        region: u8,
        table: u8,
        key: u8,
        by: u8,
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
    ReopenWith {
        disable_bits: u8,
        extra: u8,
    },
    /// Power loss, then reopen with another configuration (a region disabled now that was
    /// enabled before may be left unsettled).
    CrashReopenWith {
        disable_bits: u8,
        extra: u8,
    },
    /// `Db::disable_region(ALL_REGIONS[region % 4])` at run time.
    DisableNow {
        region: u8,
    },
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
    ScanDuringDisable {
        region: u8,
    },
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
// 32..=45 again the creates and writes of 0..=13, 46..=51 mixed writes, 52..=54
// `Db::update`, 55..=57 stale updates, and one value each for the operator steps (each
// about 1 in 64).
impl<'a> Arbitrary<'a> for Step {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let pick = u.int_in_range(0u8..=63)?;
        let pick = if (32..=45).contains(&pick) {
            pick - 32
        } else {
            pick
        };
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
            51 => Step::Group {
                writes: (0..u.int_in_range(2..=5)?)
                    .map(|_| -> arbitrary::Result<_> {
                        Ok((
                            u.arbitrary()?,
                            u.arbitrary()?,
                            (0..u.int_in_range(1..=MAX_BATCH)?)
                                .map(|_| u.arbitrary())
                                .collect::<arbitrary::Result<_>>()?,
                        ))
                    })
                    .collect::<arbitrary::Result<_>>()?,
            },
            46..=50 => Step::Mixed {
                account: u.arbitrary()?,
                region: u.arbitrary()?,
                items: (0..u.int_in_range(1..=MAX_BATCH)?)
                    .map(|_| u.arbitrary())
                    .collect::<arbitrary::Result<_>>()?,
            },
            52..=54 => Step::DbUpdate {
                account: u.arbitrary()?,
                table: u.arbitrary()?,
                key: u.arbitrary()?,
                by: u.arbitrary()?,
            },
            55..=57 => Step::StaleUpdate {
                account: u.arbitrary()?,
                region: u.arbitrary()?,
                table: u.arbitrary()?,
                key: u.arbitrary()?,
                by: u.arbitrary()?,
            },
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
    /// `RegionDisabled`: the write's region, or the new account's home, is disabled.
    Disabled,
    /// `InvalidArgument`: `insert_unique` contradicting `td`'s declaration.
    Invalid,
    /// `Conflict`: a record the write read changed before its commit.
    Conflict,
}

/// A record of a refused write whose claim collides: (namespace, table, key, value), as
/// `Error::UniqueViolation` must name one.
type Collider = (String, String, Vec<u8>, Vec<u8>);

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

fn norm_witem(item: &WItem) -> WItem {
    match item {
        WItem::T(i) => WItem::T(norm_item(i)),
        WItem::D(d) => WItem::D(d.clone()),
    }
}

fn witem_slot(item: &WItem) -> (u8, u8) {
    match item {
        WItem::T(i) => item_slot(i),
        WItem::D(DItem::Insert { key, .. } | DItem::Remove { key }) => (TD, key % KEYS),
        WItem::D(DItem::Update { table, key, .. }) => (table % 3, key % KEYS),
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

    /// `disabled`: the regions disabled now (the home region is checked before the name).
    fn create(
        &self,
        name: u8,
        home: u8,
        allow: u8,
        disabled: &BTreeSet<u8>,
    ) -> Result<Model, Kind> {
        let name = name % NAMES;
        let home = home % 3;
        if disabled.contains(&home) {
            return Err(Kind::Disabled);
        }
        if self.accounts.contains_key(&name) {
            return Err(Kind::NameTaken);
        }
        let mut m = self.clone();
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
    /// documents it (`disabled`: the regions disabled now).
    fn write(
        &self,
        account: u64,
        region: u8,
        items: &[WItem],
        disabled: &BTreeSet<u8>,
    ) -> Result<Model, Kind> {
        self.write_why(account, region, items, disabled).0
    }

    /// `write`, and for `Kind::Unique` the records whose claim collides.
    fn write_why(
        &self,
        account: u64,
        region: u8,
        items: &[WItem],
        disabled: &BTreeSet<u8>,
    ) -> (Result<Model, Kind>, Vec<Collider>) {
        match self.write_inner(account, region, items, disabled) {
            Ok(m) => (Ok(m), Vec::new()),
            Err((k, c)) => (Err(k), c),
        }
    }

    fn write_inner(
        &self,
        account: u64,
        region: u8,
        items: &[WItem],
        disabled: &BTreeSet<u8>,
    ) -> Result<Model, (Kind, Vec<Collider>)> {
        let bare = |k: Kind| (k, Vec::new());
        let a = self
            .accounts
            .values()
            .find(|a| a.id == Some(account))
            .expect("model account");
        if !a.allowed.contains(&region) {
            return Err(bare(Kind::Placement));
        }
        if disabled.contains(&region) {
            return Err(bare(Kind::Disabled));
        }
        // Buffering, as `Write::insert*`/`remove`/`update` do.
        let mut slots: BTreeMap<(u8, u8), MOp> = BTreeMap::new();
        for item in items {
            let slot = witem_slot(item);
            // A plain insert keeps what the record owns at this point of the write.
            let inherit = |slots: &BTreeMap<(u8, u8), MOp>| match slots.get(&slot) {
                Some(MOp::Remove) => Some(BTreeSet::new()),
                Some(MOp::Put { uniques, .. }) => uniques.clone(),
                None => None,
            };
            let op = match item {
                WItem::T(Item::Insert { value, .. }) => MOp::Put {
                    value: *value,
                    uniques: inherit(&slots),
                },
                WItem::T(Item::InsertUnique {
                    value, ns, uvalue, ..
                }) => MOp::Put {
                    value: *value,
                    uniques: Some([(*ns, *uvalue)].into_iter().collect()),
                },
                WItem::T(Item::UpdateUnique { value, uniques, .. }) => {
                    let set: BTreeSet<Val> = uniques.iter().copied().collect();
                    if set.len() != uniques.len() {
                        return Err(bare(Kind::Duplicate));
                    }
                    MOp::Put {
                        value: *value,
                        uniques: Some(set),
                    }
                }
                WItem::T(Item::Remove { .. }) | WItem::D(DItem::Remove { .. }) => MOp::Remove,
                WItem::D(DItem::Insert { value, list, .. }) => {
                    if list % 4 == 3 {
                        return Err(bare(Kind::Invalid));
                    }
                    MOp::Put {
                        value: *value,
                        uniques: Some(dclaim(*value)),
                    }
                }
                WItem::D(DItem::Update { by, .. }) => {
                    let (t, k) = slot;
                    let old = match slots.get(&slot) {
                        Some(MOp::Put { value, .. }) => Some(*value),
                        Some(MOp::Remove) => None,
                        None => self.rows.get(&(account, region, t, k)).map(|r| r.value),
                    };
                    // `None`: nothing buffered (the write only read the record).
                    let Some(value) = bump(t, old, *by) else {
                        continue;
                    };
                    let uniques = if t == TD {
                        Some(dclaim(value))
                    } else {
                        inherit(&slots)
                    };
                    MOp::Put { value, uniques }
                }
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
                return Err(bare(Kind::Duplicate));
            }
        }
        let colliders: Vec<Collider> = claims
            .iter()
            .filter(|(v, _)| !releases.contains(v) && self.owners.contains_key(v))
            .map(|&((ns, v), (_, _, t, k))| {
                (
                    NAMESPACES[ns as usize].to_owned(),
                    TABLES[t as usize].name().to_owned(),
                    key(k),
                    uvalue(v).into_bytes(),
                )
            })
            .collect();
        if !colliders.is_empty() {
            return Err((Kind::Unique, colliders));
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

/// A configuration the store is opened with (region indices into `ALL_REGIONS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Config {
    /// Disabled regions (never `us`).
    disabled: BTreeSet<u8>,
    /// Disabled regions left out of the builder (they were disabled already).
    omitted: BTreeSet<u8>,
    /// `sa` is listed (or disabled, or omitted): the store knows it once this opened.
    extra: bool,
}

impl Config {
    /// The configuration `bits` and `extra` ask for after this one (see `Step::ReopenWith`).
    fn next(&self, bits: u8, extra: u8) -> Config {
        let extra = extra % 4 == 0 || self.extra;
        let mut disabled = BTreeSet::new();
        for (bit, r) in [(0, 1u8), (1, 2), (2, SA)] {
            // A region new to the store cannot be disabled (it has no file yet).
            if bits & (1 << bit) != 0 && (r != SA || self.extra) {
                disabled.insert(r);
            }
        }
        let omitted = if bits & 8 != 0 {
            disabled.intersection(&self.disabled).copied().collect()
        } else {
            BTreeSet::new()
        };
        Config {
            disabled,
            omitted,
            extra,
        }
    }

    /// Every region enabled (`sa` as known).
    fn all_enabled(&self) -> Config {
        Config {
            extra: self.extra,
            ..Config::default()
        }
    }

    fn is_enabled(&self, r: u8) -> bool {
        (r != SA || self.extra) && !self.disabled.contains(&r)
    }
}

/// Options every open of a run shares: storage, digest key, cache, budget, eu's path.
#[derive(Clone)]
struct Env {
    sim: SimStorage,
    budget: u64,
    eu_at: bool,
}

impl Env {
    fn base(&self) -> Builder {
        Db::builder()
            .storage(self.sim.clone())
            .digest_key([7; 32])
            .cache_size(8 << 20)
            .checkpoint_budget(self.budget, Duration::from_secs(3600))
    }

    fn listed(&self, b: Builder, r: u8) -> Builder {
        let name = ALL_REGIONS[r as usize];
        if r == 1 && self.eu_at {
            b.region_at(name, EU_PATH)
        } else {
            b.region(name)
        }
    }

    /// The builder of `cfg`; `us` first (the default region), then eu, ap, sa.
    fn builder(&self, cfg: &Config) -> Builder {
        let mut b = self.base();
        for r in 0..ALL_REGIONS.len() as u8 {
            if r == SA && !cfg.extra {
                continue;
            }
            if cfg.disabled.contains(&r) {
                if !cfg.omitted.contains(&r) {
                    b = b.disable_region(ALL_REGIONS[r as usize]);
                }
            } else {
                b = self.listed(b, r);
            }
        }
        b
    }

    fn open(&self, cfg: &Config) -> regionkv::Result<Db> {
        self.builder(cfg).open(DIR)
    }
}

/// Every file's live bytes: a refused open must leave them all as they were.
fn snapshot(sim: &SimStorage) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    sim.paths()
        .into_iter()
        .map(|p| {
            let b = sim.live_bytes(&p);
            (p, b)
        })
        .collect()
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
        Error::RegionDisabled(_) => Some(Kind::Disabled),
        Error::InvalidArgument(_) => Some(Kind::Invalid),
        Error::Conflict { .. } => Some(Kind::Conflict),
        _ => None,
    }
}

/// The refusals a write may meet while a disabled region may hold unsettled claims.
fn unsettled_refusal(e: &Error) -> bool {
    matches!(e, Error::RegionUnsettled(_) | Error::Busy(_))
}

fn run_write(db: &Db, account: u64, region: u8, items: &[WItem]) -> regionkv::Result<()> {
    let mut w = db.write_in(AccountId::from_raw(account), REGIONS[region as usize])?;
    buffer(&mut w, items)?;
    w.commit()
}

/// The function of a read-modify-write of a record of table `t`: `bump(.., by)` in bytes.
fn update_fn(t: u8, by: u8) -> impl FnMut(Option<&regionkv::Record<Raw>>) -> Option<Vec<u8>> {
    move |old| {
        let old = old.map(|r| row_index(t, r).expect("a record the model can name"));
        bump(t, old, by).map(|b| row_bytes(t, b))
    }
}

/// Write A of a stale update: buffer `a` (reading the record), commit write B (`b`) of
/// the same account and region, commit A.
fn run_stale(db: &Db, account: u64, region: u8, a: &[WItem], b: &[WItem]) -> regionkv::Result<()> {
    let mut w = db.write_in(AccountId::from_raw(account), REGIONS[region as usize])?;
    buffer(&mut w, a)?;
    run_write(db, account, region, b)?;
    w.commit()
}

fn buffer(w: &mut regionkv::Write, items: &[WItem]) -> regionkv::Result<()> {
    for item in items {
        let (t, k) = witem_slot(item);
        let table = &TABLES[t as usize];
        let key = key(k);
        let item = match item {
            WItem::T(item) => item,
            WItem::D(DItem::Insert { value: v, list, .. }) => {
                let dv = dvalue(*v);
                let decl = declared(&dv);
                match (list % 4, decl) {
                    (0 | 1, _) => w.insert(table, &key, &dv)?,
                    (2, Some(d)) => w.insert_unique(table, &key, &dv, &[Unique::new("slug", d)])?,
                    (2, None) => w.insert_unique(table, &key, &dv, &[])?,
                    // Contradicting: none where it declares one, one where it declares none.
                    (_, Some(_)) => w.insert_unique(table, &key, &dv, &[])?,
                    (_, None) => w.insert_unique(table, &key, &dv, &[Unique::new("slug", "v0")])?,
                }
                continue;
            }
            WItem::D(DItem::Remove { .. }) => {
                w.remove(table, &key)?;
                continue;
            }
            WItem::D(DItem::Update { by, .. }) => {
                w.update(table, &key, update_fn(t, *by))?;
                continue;
            }
        };
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
    Ok(())
}

struct Harness {
    env: Env,
    sim: SimStorage,
    db: Option<Db>,
    model: Model,
    region_ids: [RegionId; 3],
    /// The configuration of the open store.
    config: Config,
    /// Disabled regions that were disabled at an open after a power loss while they were
    /// enabled before: they may hold unsettled claims until they are enabled again.
    unsettled: BTreeSet<u8>,
    /// The regions the engine reported unsettled at the last open (`RecoveryReport`).
    engine_unsettled: BTreeSet<String>,
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
        items: Vec<WItem>,
        expect: Result<Model, Kind>,
        /// For `Kind::Unique`: the records of the write whose claim collides.
        colliders: Vec<Collider>,
        /// `Db::update` of the one `DItem::Update` item (in the home region).
        via_db: bool,
    },
    /// Write A (`a`) reads record `(t, k)`, write B (`b`) changes it, A commits. `after_b`:
    /// the model after B, or the error B (and so the step) must give.
    Stale {
        account: u64,
        region: u8,
        a: Vec<WItem>,
        b: Vec<WItem>,
        slot: (u8, u8),
        after_b: Result<Model, Kind>,
    },
    Checkpoint,
    Reopen {
        clean: bool,
    },
    Nothing,
    Skip,
}

/// How an open relates to what was before it, for the unsettled bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// A clean close (or nothing) before: no region may become unsettled, and the ones
    /// the engine reported stay reported while disabled.
    Clean,
    /// A power loss before: a region disabled now that was enabled may become unsettled.
    Crash,
    /// The open of `FaultyOpen` that follows the crash of an interrupted open (after a
    /// clean close): nothing may become unsettled, but the interrupted open may have
    /// settled a region it enabled.
    InterruptedOpen,
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
            "DIVERGENCE: {what}\nops so far:\n{s}config: {:?}, unsettled: {:?} (engine: {:?})\nmodel: {:#?}",
            self.config, self.unsettled, self.engine_unsettled, self.model
        );
    }

    fn catalog(&self) -> Cat {
        Cat {
            disabled: self.config.disabled.clone(),
            unsettled: !self.unsettled.is_empty(),
        }
    }

    fn check_now(&self, when: &str) {
        if let Err(e) = check(self.db(), &self.model, &self.region_ids, &self.catalog()) {
            self.fail(format!("{when}: {e}"));
        }
    }

    fn plan(&self, step: &Step) -> Plan {
        match step {
            Step::CreateAccount { name, home, allow } => Plan::Create {
                name: name % NAMES,
                home: home % 3,
                allow: allow % 3,
                expect: self
                    .model
                    .create(*name, *home, *allow, &self.config.disabled),
            },
            Step::Write {
                account,
                region,
                item,
            } => self.plan_write(*account, *region, &[WItem::T(item.clone())]),
            Step::Batch {
                account,
                region,
                items,
            } => {
                if items.is_empty() {
                    return Plan::Skip;
                }
                let items: Vec<WItem> = items
                    .iter()
                    .take(MAX_BATCH)
                    .cloned()
                    .map(WItem::T)
                    .collect();
                self.plan_write(*account, *region, &items)
            }
            Step::Mixed {
                account,
                region,
                items,
            } => {
                if items.is_empty() {
                    return Plan::Skip;
                }
                self.plan_write(*account, *region, &items[..items.len().min(MAX_BATCH)])
            }
            Step::DbUpdate {
                account,
                table,
                key,
                by,
            } => {
                let Some((name, id)) = self.model.account_id(*account) else {
                    return Plan::Skip;
                };
                let region = self.model.accounts[&name].home;
                let items = vec![WItem::D(DItem::Update {
                    table: table % 3,
                    key: key % KEYS,
                    by: *by,
                })];
                let (expect, colliders) =
                    self.model
                        .write_why(id, region, &items, &self.config.disabled);
                Plan::Write {
                    account: id,
                    region,
                    items,
                    expect,
                    colliders,
                    via_db: true,
                }
            }
            Step::StaleUpdate {
                account,
                region,
                table,
                key: k,
                by,
            } => {
                let Plan::Write {
                    account: id,
                    region,
                    ..
                } = self.plan_write(*account, *region, &[])
                else {
                    return Plan::Skip;
                };
                let (t, k) = (table % 3, k % KEYS);
                let a = vec![
                    WItem::D(DItem::Update {
                        table: t,
                        key: k,
                        by: *by,
                    }),
                    WItem::T(Item::Insert {
                        table: false,
                        key: k + 1,
                        value: *by,
                    }),
                ];
                let old = self.model.rows.get(&(id, region, t, k)).map(|r| r.value);
                let new = changed(t, old);
                let b = vec![if t == TD {
                    WItem::D(DItem::Insert {
                        key: k,
                        value: new,
                        list: 0,
                    })
                } else {
                    WItem::T(Item::Insert {
                        table: t == 1,
                        key: k,
                        value: new,
                    })
                }];
                let after_b = self.model.write(id, region, &b, &self.config.disabled);
                if let Ok(m) = &after_b {
                    let now = m.rows.get(&(id, region, t, k)).map(|r| r.value);
                    assert_ne!(now, old, "model: write B of a stale update changes nothing");
                }
                Plan::Stale {
                    account: id,
                    region,
                    a,
                    b,
                    slot: (t, k),
                    after_b,
                }
            }
            Step::Checkpoint => Plan::Checkpoint,
            Step::Reopen => Plan::Reopen { clean: true },
            Step::DropReopen => Plan::Reopen { clean: false },
            Step::Nothing => Plan::Nothing,
            // Run by `operator_step`.
            _ => Plan::Skip,
        }
    }

    fn plan_write(&self, account: u8, region: u8, items: &[WItem]) -> Plan {
        let Some((name, id)) = self.model.account_id(account) else {
            return Plan::Skip;
        };
        let items: Vec<WItem> = items.iter().map(norm_witem).collect();
        // Mostly a region the account may use (so that writes land on the same few records
        // often); one time in eight any region, which may be refused.
        let region = if region % 8 == 7 {
            (region / 8) % 3
        } else {
            let allowed: Vec<u8> = self.model.accounts[&name].allowed.iter().copied().collect();
            allowed[(region as usize) % allowed.len()]
        };
        let (expect, colliders) = self
            .model
            .write_why(id, region, &items, &self.config.disabled);
        Plan::Write {
            account: id,
            region,
            items,
            expect,
            colliders,
            via_db: false,
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
                items,
                via_db: true,
                ..
            } => {
                let [WItem::D(DItem::Update { table, key: k, by })] = &items[..] else {
                    unreachable!("Db::update of one update item")
                };
                db.update(
                    AccountId::from_raw(*account),
                    &TABLES[*table as usize],
                    key(*k),
                    update_fn(*table, *by),
                )
                .map(|_| ())
            }
            Plan::Write {
                account,
                region,
                items,
                ..
            } => run_write(db, *account, *region, items),
            Plan::Stale {
                account,
                region,
                a,
                b,
                ..
            } => run_stale(db, *account, *region, a, b),
            Plan::Checkpoint => db.checkpoint(),
            Plan::Reopen { .. } | Plan::Nothing | Plan::Skip => Ok(()),
        };
        match r {
            Ok(()) => Got::Ok,
            Err(e) => Got::Err(e),
        }
    }

    /// `self.db` was just opened with `next`: update the configuration and the unsettled
    /// regions, compare the engine's recovery report with them, and audit if every region
    /// is enabled.
    fn opened(&mut self, next: Config, after: After) {
        for r in 0..ALL_REGIONS.len() as u8 {
            if !next.disabled.contains(&r) {
                self.unsettled.remove(&r);
            } else if after == After::Crash && self.config.is_enabled(r) {
                self.unsettled.insert(r);
            }
        }
        let report = self.db().recovery_report();
        let reported: BTreeSet<String> = report.unsettled.iter().cloned().collect();
        let allowed: BTreeSet<String> = self
            .unsettled
            .iter()
            .map(|&r| ALL_REGIONS[r as usize].to_owned())
            .collect();
        if !reported.is_subset(&allowed) {
            self.config = next;
            self.fail(format!(
                "open reports unsettled regions {reported:?}; only {allowed:?} may be"
            ));
        }
        if after != After::InterruptedOpen {
            // Unsettled persists while the region stays disabled.
            let kept: BTreeSet<String> = self
                .engine_unsettled
                .iter()
                .filter(|n| {
                    let r = ALL_REGIONS.iter().position(|x| x == n).expect("region") as u8;
                    next.disabled.contains(&r)
                })
                .cloned()
                .collect();
            if !kept.is_subset(&reported) {
                self.config = next;
                self.fail(format!(
                    "regions {kept:?} were unsettled and are still disabled, but the open \
                     reports only {reported:?}"
                ));
            }
        }
        if !report.claims_lost.is_empty() {
            self.fail(format!(
                "claims lost without a forfeit: {:?}",
                report.claims_lost
            ));
        }
        self.engine_unsettled = reported;
        self.config = next;
        self.audit_if_all_enabled();
    }

    /// Opens `next` (which must open); the old handle must be gone already.
    fn open_with(&mut self, next: Config, after: After) {
        match self.env.open(&next) {
            Ok(db) => self.db = Some(db),
            Err(e) => self.fail(format!("open {next:?} ({after:?}) failed: {e}")),
        }
        self.opened(next, after);
    }

    fn close(&mut self) {
        let db = self.db.take().expect("db is open");
        if let Err(e) = db.close() {
            self.fail(format!("close failed without a fault: {e}"));
        }
    }

    fn reopen_clean(&mut self, clean: bool) {
        if clean {
            self.close();
        } else {
            // Without close(): the Db's drop runs its best-effort checkpoint.
            drop(self.db.take());
        }
        let cfg = self.config.clone();
        self.open_with(cfg, After::Clean);
    }

    /// After every open with every region enabled: `audit()` (I1, I2, placement,
    /// counters, checksums, protocol leftovers) must be clean.
    fn audit_if_all_enabled(&self) {
        if !self.config.disabled.is_empty() {
            return;
        }
        match self.db().audit() {
            Ok(report) if report.is_clean() => {}
            Ok(report) => self.fail(format!("audit after reopen: {report}")),
            Err(e) => self.fail(format!("audit after reopen failed: {e}")),
        }
    }

    /// A `Step::Group`: the writes committed by one `commit_each`, each outcome checked
    /// against the model advanced one write at a time in the order `commit_each` commits.
    fn group_step(&mut self, writes: &[(u8, u8, Vec<WItem>)]) {
        let mut planned: Vec<(u64, u8, Vec<WItem>)> = Vec::new();
        for (account, region, items) in writes {
            let reads = |i: &WItem| matches!(i, WItem::D(DItem::Update { .. }));
            if items.is_empty() || items.iter().any(reads) {
                continue;
            }
            let items = &items[..items.len().min(MAX_BATCH)];
            if let Plan::Write {
                account,
                region,
                items,
                ..
            } = self.plan_write(*account, *region, items)
            {
                planned.push((account, region, items));
            }
        }
        if planned.len() < 2 {
            return;
        }
        // commit_each: region by region, in the order of each region's first write.
        let first: Vec<u8> = planned.iter().map(|p| p.1).collect();
        planned.sort_by_key(|p| first.iter().position(|r| *r == p.1));
        let db = self.db();
        let mut got: Vec<Option<regionkv::Result<()>>> = planned.iter().map(|_| None).collect();
        let mut built = Vec::new();
        let mut slots = Vec::new();
        for (i, (account, region, items)) in planned.iter().enumerate() {
            let w = db
                .write_in(AccountId::from_raw(*account), REGIONS[*region as usize])
                .and_then(|mut w| buffer(&mut w, items).map(|()| w));
            match w {
                Ok(w) => {
                    built.push(w);
                    slots.push(i);
                }
                Err(e) => got[i] = Some(Err(e)),
            }
        }
        for (i, r) in slots.into_iter().zip(db.commit_each(built)) {
            got[i] = Some(r);
        }
        if trace() {
            eprintln!("    -> group {got:?}");
        }
        let unsettled = !self.unsettled.is_empty();
        let mut model = self.model.clone();
        for ((account, region, items), got) in planned.iter().zip(got) {
            let got = got.unwrap_or_else(|| Err(Error::Closed));
            let (expect, colliders) =
                model.write_why(*account, *region, items, &self.config.disabled);
            model = match (expect, got) {
                (Ok(next), Ok(())) => next,
                (Err(Kind::Unique), Err(Error::UniqueViolation { namespace, record })) => {
                    let named = (namespace, record.table, record.key, record.value);
                    if !colliders.contains(&named) {
                        self.fail(format!(
                            "group: UniqueViolation names {named:?}, not a colliding record \
                             of the write: {colliders:?}"
                        ));
                    }
                    model
                }
                (Err(k), Err(e)) if kind_of(&e) == Some(k) => model,
                (Ok(_) | Err(Kind::Unique), Err(e)) if unsettled && unsettled_refusal(&e) => model,
                (expect, got) => self.fail(format!(
                    "group write of account {account} in {}: expected {:?}, engine gave {got:?}",
                    REGIONS[*region as usize],
                    expect.as_ref().map(|_| "Ok")
                )),
            };
        }
        self.model = model;
        self.check_now("after a group commit");
    }

    /// Steps without a fault: the engine must do exactly what the model says.
    fn step(&mut self, step: &Step) {
        if step.is_operator() {
            self.operator_step(step);
            return;
        }
        if let Step::Group { writes } = step {
            self.group_step(writes);
            return;
        }
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
        let unsettled = !self.unsettled.is_empty();
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
            // The violation names a record of the write whose claim collides.
            (
                Plan::Write {
                    expect: Err(Kind::Unique),
                    colliders,
                    ..
                },
                Got::Err(Error::UniqueViolation { namespace, record }),
            ) => {
                let named = (
                    namespace.clone(),
                    record.table.clone(),
                    record.key.clone(),
                    record.value.clone(),
                );
                if !colliders.contains(&named) {
                    self.fail(format!(
                        "UniqueViolation names {named:?}, not a colliding record of the write: \
                         {colliders:?}"
                    ));
                }
                self.model.clone()
            }
            (
                Plan::Create { expect: Err(k), .. } | Plan::Write { expect: Err(k), .. },
                Got::Err(e),
            ) if kind_of(&e) == Some(*k) => self.model.clone(),
            // Write B committed; A's read went stale: Conflict naming the record.
            (
                Plan::Stale {
                    after_b: Ok(m),
                    slot: (t, k),
                    ..
                },
                Got::Err(Error::Conflict { table, key: got }),
            ) => {
                if *table != *TABLES[*t as usize].name() || got != key(*k) {
                    self.fail(format!(
                        "Conflict names {table} {:?}, not the record read (t{t}, k{k})",
                        String::from_utf8_lossy(&got)
                    ));
                }
                m.clone()
            }
            (
                Plan::Stale {
                    after_b: Err(k), ..
                },
                Got::Err(e),
            ) if kind_of(&e) == Some(*k) => self.model.clone(),
            // A's claim refused (B claims nothing new: it committed).
            (Plan::Stale { after_b: Ok(m), .. }, Got::Err(e))
                if unsettled && unsettled_refusal(&e) =>
            {
                m.clone()
            }
            (Plan::Stale { after_b, .. }, got) => self.fail(format!(
                "stale update: expected Conflict after B ({:?}), engine gave {got:?}",
                after_b.as_ref().map(|_| "Ok")
            )),
            // A claim may be refused while a disabled region may hold unsettled claims
            // (never accepted for a value the model says is owned: that arm is above).
            (
                Plan::Write {
                    expect: Ok(_) | Err(Kind::Unique),
                    ..
                },
                Got::Err(e),
            ) if unsettled && unsettled_refusal(&e) => self.model.clone(),
            (Plan::Checkpoint | Plan::Reopen { .. } | Plan::Nothing, Got::Ok) => self.model.clone(),
            (Plan::Create { expect, .. } | Plan::Write { expect, .. }, got) => self.fail(format!(
                "expected {:?}, engine gave {got:?}",
                expect.as_ref().map(|_| "Ok")
            )),
            (_, got) => self.fail(format!("unexpected result {got:?}")),
        };
        self.model = next;
        self.check_now("after a step without fault");
    }

    fn crash_and_reopen(&mut self) {
        // Crash first: the old Db's drop must not be able to write anything.
        self.sim.crash();
        drop(self.db.take());
        let cfg = self.config.clone();
        match self.env.open(&cfg) {
            Ok(db) => self.db = Some(db),
            Err(e) => self.fail(format!("reopen after a crash failed: {e}")),
        }
        self.opened(cfg, After::Crash);
    }

    /// A step under an armed fault, then a crash and a reopen; the store must then match
    /// one of the models the step's result allows.
    fn crash_step(&mut self, fail_after: u8, on: On, step: &Step) {
        match step {
            // Group commits under faults are the crash harness's (tests/crash_every_step.rs
            // runs its workload as groups); here a group runs without a fault.
            Step::Group { .. } => return self.step(step),
            Step::DisableNow { region } => {
                self.disable_now(*region, Some((fail_after, on)));
                self.check_now("after disable_region under a fault and a crash");
                return;
            }
            s if s.is_operator() => return self.operator_step(s),
            _ => {}
        }
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
                if let Ok(db) = self.env.open(&self.config) {
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
        let unsettled = !self.unsettled.is_empty();
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
                Plan::Write {
                    expect: Ok(_) | Err(Kind::Unique),
                    ..
                },
                Got::Err(e),
            ) if unsettled && unsettled_refusal(&e) => vec![pre.clone()],
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
            (
                Plan::Stale {
                    after_b: Ok(post), ..
                },
                Got::Err(Error::Conflict { .. }),
            ) => vec![post.clone()],
            // B's outcome unknown, or A failed after B committed.
            (
                Plan::Stale {
                    after_b: Ok(post), ..
                },
                Got::Err(e),
            ) if write_unknown(&e)
                || (tripped && kind_of(&e).is_none())
                || (unsettled && unsettled_refusal(&e)) =>
            {
                vec![pre.clone(), post.clone()]
            }
            (
                Plan::Stale {
                    after_b: Err(k), ..
                },
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
            match check(self.db(), c, &self.region_ids, &self.catalog()) {
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

    // -----------------------------------------------------------------------------------
    // Operator steps

    fn operator_step(&mut self, step: &Step) {
        match *step {
            Step::ReopenWith {
                disable_bits,
                extra,
            } => self.reopen_with(disable_bits, extra),
            Step::CrashReopenWith {
                disable_bits,
                extra,
            } => {
                let next = self.config.next(disable_bits, extra);
                if trace() {
                    eprintln!("    crash, then open {next:?}");
                }
                self.sim.crash();
                drop(self.db.take());
                self.open_with(next, After::Crash);
            }
            Step::DisableNow { region } => self.disable_now(region, None),
            Step::FaultyOpen {
                fail_after,
                on,
                disable_bits,
                extra,
            } => self.faulty_open(fail_after, on, disable_bits, extra),
            Step::ScanDuringDisable { region } => self.scan_during_disable(region),
            Step::ReadDuringTransfer {
                account,
                region,
                table,
                key,
                value,
                uvalue,
            } => self.read_during_transfer(account, region, table, key, value, uvalue),
            _ => unreachable!("not an operator step"),
        }
        self.check_now("after an operator step");
    }

    /// An open that must be refused with `Error::Config` and leave every byte as it was.
    fn refused(&self, what: &str, b: Builder) {
        let before = snapshot(&self.sim);
        let r = b.open(DIR);
        if trace() {
            eprintln!("    refused open ({what}): {:?}", r.as_ref().err());
        }
        match r {
            Err(Error::Config(_)) => {}
            Err(e) => self.fail(format!("open with {what}: {e}, not Error::Config")),
            Ok(_) => self.fail(format!("open with {what} was not refused")),
        }
        if snapshot(&self.sim) != before {
            self.fail(format!("the refused open with {what} changed files"));
        }
    }

    fn reopen_with(&mut self, bits: u8, extra: u8) {
        let next = self.config.next(bits, extra);
        if trace() {
            eprintln!("    close, then open {next:?}");
        }
        self.close();
        // The default region disabled: refused, nothing changed.
        let mut bad = next.clone();
        bad.disabled.insert(0);
        bad.omitted.remove(&0);
        self.refused("the default region disabled", self.env.builder(&bad));
        // A region the store has enabled, neither listed nor disabled: refused too.
        if (1..ALL_REGIONS.len() as u8).any(|r| self.config.is_enabled(r)) {
            let b = self.env.base().region(REGIONS[0]);
            self.refused("only `us` listed", b);
        }
        self.open_with(next, After::Clean);
    }

    /// `disable_region` at run time; under `fault`, then a crash and a reopen.
    fn disable_now(&mut self, region: u8, fault: Option<(u8, On)>) {
        let r = region % ALL_REGIONS.len() as u8;
        let name = ALL_REGIONS[r as usize];
        let known = r != SA || self.config.extra;
        if let Some((n, on)) = fault {
            self.sim.fail_after(u64::from(n), on.into());
        }
        let res = self.db().disable_region(name);
        let tripped = fault.is_some() && self.sim.fault_tripped();
        if trace() {
            eprintln!("    disable {name} -> {res:?} (fault tripped: {tripped})");
        }
        match res {
            Err(Error::Config(_)) if r == 0 => {}
            Err(Error::RegionUnknown(_)) if !known => {}
            Ok(()) if r != 0 && known => {
                // Settled: `disable_region` checkpoints before it records the choice.
                self.config.disabled.insert(r);
            }
            // Under a fault: not disabled; the reopen lists it, which enables it anyway.
            Err(e) if tripped && kind_of(&e).is_none() => {}
            other => self.fail(format!("disable_region({name}): {other:?}")),
        }
        if fault.is_some() {
            self.crash_and_reopen();
        }
    }

    fn faulty_open(&mut self, fail_after: u8, on: On, bits: u8, extra: u8) {
        let prev = self.config.clone();
        let next = prev.next(bits, extra);
        self.close();
        self.sim.fail_after(u64::from(fail_after), on.into());
        let r = self.env.open(&next);
        let tripped = self.sim.fault_tripped();
        if trace() {
            eprintln!(
                "    open {next:?} under fault -> {:?} (tripped: {tripped}); crash",
                r.as_ref().err()
            );
        }
        self.sim.crash();
        drop(r);
        // The previous configuration opens, or the new one (it may have been completed,
        // or it completes now).
        match self.env.open(&prev) {
            Ok(db) => {
                if trace() {
                    eprintln!("    the previous configuration opens");
                }
                self.db = Some(db);
                self.opened(prev, After::InterruptedOpen);
            }
            Err(e1) => {
                if trace() {
                    eprintln!("    the previous configuration does not open: {e1}");
                }
                match self.env.open(&next) {
                    Ok(db) => {
                        self.db = Some(db);
                        self.opened(next, After::InterruptedOpen);
                    }
                    Err(e2) => self.fail(format!(
                        "after an open interrupted at storage op {fail_after} ({on:?}), neither \
                         the previous configuration ({e1}) nor the new one {next:?} ({e2}) opens"
                    )),
                }
            }
        }
    }

    /// A scanning thread races `disable_region`: every scan must yield the enabled
    /// regions' rows with or without the disabled one's (once without, always without),
    /// and neither may block for good.
    fn scan_during_disable(&mut self, region: u8) {
        let targets: Vec<u8> = (1..ALL_REGIONS.len() as u8)
            .filter(|&r| self.config.is_enabled(r))
            .collect();
        if targets.is_empty() {
            return;
        }
        let x = targets[region as usize % targets.len()];
        let name = ALL_REGIONS[x as usize];
        type Rows0 = BTreeMap<(u64, u8, Vec<u8>), Vec<u8>>;
        let with: Rows0 = self
            .model
            .rows
            .iter()
            .filter(|((_, r, t, _), _)| *t == 0 && self.config.is_enabled(*r))
            .map(|(&(a, r, _, k), row)| ((a, r, key(k)), value(row.value)))
            .collect();
        let without: Rows0 = with
            .iter()
            .filter(|((_, r, _), _)| *r != x)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ids = self.region_ids;
        enum Msg {
            Started,
            Scans(Result<usize, String>),
            Disabled(regionkv::Result<()>),
        }
        let (tx, rx) = mpsc::channel::<Msg>();
        let db = self.db().clone();
        let txs = tx.clone();
        let scanner = std::thread::spawn(move || {
            let ridx = |id: RegionId| ids.iter().position(|&r| r == id).map(|i| i as u8);
            let mut seen_without = 0;
            let res = (|| {
                for i in 0..SCANS {
                    let mut got = Rows0::new();
                    for row in db
                        .scan_all(&TABLES[0])
                        .map_err(|e| format!("scan_all: {e}"))?
                    {
                        let row = row.map_err(|e| format!("scan {i}: row: {e}"))?;
                        let r = ridx(row.region()).ok_or("scan: unknown region")?;
                        got.insert(
                            (row.account().get(), r, row.key().to_vec()),
                            row.record().to_vec(),
                        );
                    }
                    if got == without {
                        seen_without += 1;
                    } else if got != with {
                        return Err(format!(
                            "scan {i} yields {:?}: neither every enabled region's rows nor \
                             those without {name}",
                            got.keys().collect::<Vec<_>>()
                        ));
                    } else if seen_without > 0 && with != without {
                        return Err(format!(
                            "scan {i} yields {name}'s rows again after a scan without them"
                        ));
                    }
                    if i == 0 {
                        let _ = txs.send(Msg::Started);
                    }
                }
                Ok(seen_without)
            })();
            let _ = txs.send(Msg::Scans(res));
        });
        let deadline = Instant::now() + WATCHDOG;
        let wait = |what: &str| -> Msg {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(_) => panic!(
                    "deadlock: ScanDuringDisable({name}) did not finish in {WATCHDOG:?} \
                     (waiting for {what})\nops so far: {:#?}",
                    self.log
                ),
            }
        };
        let mut scans = None;
        let mut disabled = None;
        let mut disabler = None;
        while scans.is_none() || disabled.is_none() {
            match wait(if scans.is_none() {
                "the scans"
            } else {
                "disable_region"
            }) {
                Msg::Started => {
                    let db = self.db().clone();
                    let tx = tx.clone();
                    disabler = Some(std::thread::spawn(move || {
                        let _ = tx.send(Msg::Disabled(db.disable_region(name)));
                    }));
                }
                Msg::Scans(r) => {
                    if disabler.is_none() {
                        // The first scan failed: nothing was started.
                        disabled = Some(Ok(()));
                        if r.is_ok() {
                            self.fail("scans ended before the first one was reported".into());
                        }
                    }
                    scans = Some(r);
                }
                Msg::Disabled(r) => disabled = Some(r),
            }
        }
        scanner.join().expect("scanner thread");
        if let Some(d) = disabler {
            d.join().expect("disabler thread");
        }
        if trace() {
            eprintln!("    scans during disable({name}): {scans:?}, disable -> {disabled:?}");
        }
        match scans.expect("scans") {
            Ok(_) => {}
            Err(e) => self.fail(format!("ScanDuringDisable({name}): {e}")),
        }
        match disabled.expect("disabled") {
            Ok(()) => {
                self.config.disabled.insert(x);
            }
            Err(e) => self.fail(format!("disable_region({name}) during scans: {e}")),
        }
    }

    /// A thread moves one unique value between records A and B of one account (one write
    /// each); meanwhile `is_taken` must say true and `find_unique` must name A or B.
    fn read_during_transfer(
        &mut self,
        account: u8,
        region: u8,
        table: bool,
        k: u8,
        val: u8,
        uv: u8,
    ) {
        if !self.unsettled.is_empty() {
            // The first claim may be refused then.
            return;
        }
        let Some((name, id)) = self.model.account_id(account) else {
            return;
        };
        let allowed: Vec<u8> = self.model.accounts[&name]
            .allowed
            .iter()
            .copied()
            .filter(|r| !self.config.disabled.contains(r))
            .collect();
        if allowed.is_empty() {
            return;
        }
        let r = allowed[region as usize % allowed.len()];
        let t = table as u8;
        let ka = k % KEYS;
        let kb = (ka + 1 + (k / KEYS) % (KEYS - 1)) % KEYS;
        let (rec_a, rec_b) = ((id, r, t, ka), (id, r, t, kb));
        // A value that is free or owned by A or B.
        let n = NAMESPACES.len() as u8 * UVALUES;
        let Some(v) = (0..n)
            .map(|i| (uv % n + i) % n)
            .map(|c| (c / UVALUES, c % UVALUES))
            .find(|v| {
                self.model
                    .owners
                    .get(v)
                    .is_none_or(|o| *o == rec_a || *o == rec_b)
            })
        else {
            return;
        };
        let items = |a_owns: bool| -> Vec<WItem> {
            let set = |owns: bool| if owns { vec![v] } else { vec![] };
            vec![
                WItem::T(Item::UpdateUnique {
                    table,
                    key: ka,
                    value: val,
                    uniques: set(a_owns),
                }),
                WItem::T(Item::UpdateUnique {
                    table,
                    key: kb,
                    value: val,
                    uniques: set(!a_owns),
                }),
            ]
        };
        // First A owns it alone (B owns nothing): one write, checked like any other.
        let first = items(true);
        let Ok(mut m) = self.model.write(id, r, &first, &self.config.disabled) else {
            return;
        };
        if let Err(e) = run_write(self.db(), id, r, &first) {
            self.fail(format!("ReadDuringTransfer: the first write failed: {e}"));
        }
        self.model = m.clone();
        // Then TRANSFERS moves, B, A, B, ...
        let mut writes = Vec::new();
        for i in 0..TRANSFERS {
            let w = items(i % 2 == 1);
            m = match m.write(id, r, &w, &self.config.disabled) {
                Ok(m) => m,
                Err(k) => self.fail(format!("model bug: transfer {i} refused: {k:?}")),
            };
            writes.push(w);
        }
        let done = Arc::new(AtomicBool::new(false));
        let db = self.db().clone();
        let flag = done.clone();
        let mover = std::thread::spawn(move || {
            let mut res = Ok(());
            for (i, w) in writes.iter().enumerate() {
                if let Err(e) = run_write(&db, id, r, w) {
                    res = Err(format!("transfer {i}: {e}"));
                    break;
                }
            }
            flag.store(true, Ordering::Release);
            res
        });
        let (nsn, uvs) = (NAMESPACES[v.0 as usize], uvalue(v.1));
        let deadline = Instant::now() + WATCHDOG;
        let mut reads = 0u32;
        let mut bad = None;
        loop {
            let finished = done.load(Ordering::Acquire);
            match self.db().is_taken(nsn, &uvs) {
                Ok(true) => {}
                other => bad = Some(format!("is_taken({nsn}, {uvs}) -> {other:?}")),
            }
            // The hit outlives nothing: it is checked and dropped, while commits run.
            match self.db().find_unique(&TABLES[t as usize], nsn, &uvs) {
                Ok(Some(h))
                    if h.account().get() == id
                        && h.region() == self.region_ids[r as usize]
                        && (h.key() == key(ka) || h.key() == key(kb))
                        && **h.record() == *value(val) => {}
                Ok(Some(h)) => {
                    bad = Some(format!(
                        "find_unique({nsn}, {uvs}) -> {:?}/{:?}/{:?}, not record {ka} or {kb}",
                        h.account(),
                        h.region(),
                        String::from_utf8_lossy(h.key())
                    ))
                }
                other => {
                    bad = Some(format!(
                        "find_unique({nsn}, {uvs}) -> {:?}",
                        other.map(|o| o.map(|h| h.account()))
                    ))
                }
            }
            reads += 1;
            if bad.is_some() || finished {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "deadlock: ReadDuringTransfer did not finish in {WATCHDOG:?}\nops so far: {:#?}",
                    self.log
                );
            }
        }
        // Let the mover finish (with a watchdog of its own) before judging.
        while !done.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                panic!(
                    "deadlock: ReadDuringTransfer's writer did not finish in {WATCHDOG:?}\n\
                     ops so far: {:#?}",
                    self.log
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let moved = mover.join().expect("mover thread");
        if trace() {
            eprintln!(
                "    {TRANSFERS} transfers of {nsn}/{uvs} between k{ka} and k{kb} in {}: {moved:?}, \
                 {reads} reads during them",
                REGIONS[r as usize],
            );
        }
        if let Some(b) = bad {
            self.fail(format!(
                "during transfers between records {ka} and {kb} of account {id} in {}: {b}",
                REGIONS[r as usize]
            ));
        }
        if let Err(e) = moved {
            self.fail(format!("ReadDuringTransfer: {e}"));
        }
        self.model = m;
    }
}

// ---------------------------------------------------------------------------------------
// The comparison

/// What the store may answer while some regions are disabled.
#[derive(Debug, Clone, Default)]
struct Cat {
    /// Disabled regions (indices into `ALL_REGIONS`).
    disabled: BTreeSet<u8>,
    /// Some disabled region may hold claims a crash left unsettled: "free" answers may be
    /// refused with `RegionUnsettled` (or an entry left in flight may name a disabled
    /// region), but an owned value must stay taken and never get a second owner.
    unsettled: bool,
}

impl Cat {
    fn is_disabled(&self, r: u8) -> bool {
        self.disabled.contains(&r)
    }
}

fn check(db: &Db, m: &Model, region_ids: &[RegionId; 3], cat: &Cat) -> Result<(), String> {
    let ridx = |id: RegionId| region_ids.iter().position(|&r| r == id).map(|i| i as u8);
    let e = |what: &str, err: Error| format!("{what}: {err}");
    fn unsettled_err<T>(cat: &Cat, r: &regionkv::Result<T>) -> bool {
        cat.unsettled && matches!(r, Err(Error::RegionUnsettled(_)))
    }

    // The catalog.
    let regions = db.regions();
    for (i, name) in REGIONS.iter().enumerate() {
        let enabled = regions.iter().find(|r| r.name == *name).map(|r| r.enabled);
        if enabled != Some(!cat.is_disabled(i as u8)) {
            return Err(format!(
                "region {name}: enabled {enabled:?} in the store, disabled {} in the model",
                cat.is_disabled(i as u8)
            ));
        }
    }

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

    // Rows, by point reads (a disabled region's read as `RegionDisabled`).
    for (&(acct, r, t, k), row) in &m.rows {
        let read = db
            .read(AccountId::from_raw(acct))
            .map_err(|x| e("read", x))?;
        let got = read.get_in(REGIONS[r as usize], &TABLES[t as usize], &key(k));
        if cat.is_disabled(r) {
            match got {
                Err(Error::RegionDisabled(_)) => continue,
                other => {
                    return Err(format!(
                        "row {:?} in disabled {}: {:?}",
                        (acct, r, t, k),
                        REGIONS[r as usize],
                        other.map(|o| o.map(|rec| rec.len()))
                    ));
                }
            }
        }
        match got.map_err(|x| e("get_in", x))? {
            Some(rec) if *rec == *row_bytes(t, row.value) => {}
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

    // Rows, by scans: exactly the model's rows of the enabled regions, no more.
    let expect_rows = |t: u8, acct: Option<u64>| -> BTreeMap<(u64, u8, Vec<u8>), Vec<u8>> {
        m.rows
            .iter()
            .filter(|((a, r, tt, _), _)| {
                *tt == t && acct.is_none_or(|x| x == *a) && !cat.is_disabled(*r)
            })
            .map(|(&(a, r, _, k), row)| ((a, r, key(k)), row_bytes(t, row.value)))
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
            // One `RegionDisabled` item per disabled region the account may use.
            let mut skipped = BTreeSet::new();
            for row in read.scan(&TABLES[t as usize]).map_err(|x| e("scan", x))? {
                let row = match row {
                    Ok(row) => row,
                    Err(Error::RegionDisabled(name)) => {
                        if !skipped.insert(name.clone()) {
                            return Err(format!("scan of account {id}: {name} skipped twice"));
                        }
                        continue;
                    }
                    Err(x) => return Err(e("scan row", x)),
                };
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
            let want_skipped: BTreeSet<String> = a
                .allowed
                .iter()
                .filter(|&&r| cat.is_disabled(r))
                .map(|&r| REGIONS[r as usize].to_owned())
                .collect();
            if skipped != want_skipped {
                return Err(format!(
                    "scan of account {id} t{t}: RegionDisabled items for {skipped:?}, disabled \
                     regions it may use: {want_skipped:?}"
                ));
            }
        }
    }

    // Unique values: I1 (one owner) and I2 (the owner's record is where the index says).
    for ns in 0..NAMESPACES.len() as u8 {
        for v in 0..UVALUES {
            let owner = m.owners.get(&(ns, v));
            let (nsn, uv) = (NAMESPACES[ns as usize], uvalue(v));
            let taken = db.is_taken(nsn, &uv);
            let hits: Vec<_> = (0..TABLES.len())
                .map(|t| db.find_unique(&TABLES[t], nsn, &uv))
                .collect();
            let show = |h: &regionkv::Result<Option<regionkv::Hit<Raw>>>| match h {
                Ok(Some(h)) => format!(
                    "Some({}, {}, {})",
                    h.account(),
                    h.region(),
                    String::from_utf8_lossy(h.key())
                ),
                Ok(None) => "None".to_owned(),
                Err(x) => format!("Err({x})"),
            };
            match owner {
                // Owned in a disabled region: taken, and its owner cannot be read.
                Some(&(_, r, ot, _)) if cat.is_disabled(r) => {
                    if !(matches!(taken, Ok(true)) || unsettled_err(cat, &taken)) {
                        return Err(format!(
                            "is_taken({nsn}, {uv}) owned in disabled {}: {taken:?}",
                            REGIONS[r as usize]
                        ));
                    }
                    for (t, hit) in hits.iter().enumerate() {
                        let ok = if t as u8 == ot {
                            matches!(hit, Err(Error::RegionDisabled(_))) || unsettled_err(cat, hit)
                        } else {
                            matches!(hit, Ok(None)) || unsettled_err(cat, hit)
                        };
                        if !ok {
                            return Err(format!(
                                "find_unique({nsn}, {uv}) in t{t}, owned in t{ot} of disabled \
                                 {}: {}",
                                REGIONS[r as usize],
                                show(hit)
                            ));
                        }
                    }
                    continue;
                }
                // Free, while a disabled region may hold unsettled claims: may be refused,
                // or taken by an entry left in flight there; never an owner.
                None if cat.unsettled => {
                    if let Err(x) = &taken
                        && !matches!(x, Error::RegionUnsettled(_))
                    {
                        return Err(format!("is_taken({nsn}, {uv}): {x}"));
                    }
                    for (t, hit) in hits.iter().enumerate() {
                        if !matches!(
                            hit,
                            Ok(None)
                                | Err(Error::RegionUnsettled(_))
                                | Err(Error::RegionDisabled(_))
                        ) {
                            return Err(format!(
                                "find_unique({nsn}, {uv}) in t{t}: {}, the model has no owner",
                                show(hit)
                            ));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let taken = taken.map_err(|x| e("is_taken", x))?;
            if taken != owner.is_some() {
                return Err(format!(
                    "is_taken({nsn}, {uv}) = {taken}, model owner {owner:?}"
                ));
            }
            for (t, hit) in hits.into_iter().enumerate() {
                let t = t as u8;
                let hit = hit.map_err(|x| e("find_unique", x))?;
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
                        if **h.record() != *row_bytes(t, row.value) {
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

/// A new store holding only `INITIAL_ACCOUNTS` (`eu` at `EU_PATH` if `eu_at`). Created
/// once per process (and variant) and copied for each input: creating four redb files
/// costs more than a whole short input under the fuzzer's instrumentation.
fn fresh_store(eu_at: bool) -> SimStorage {
    static FILES: [OnceLock<Vec<(PathBuf, Vec<u8>)>>; 2] = [OnceLock::new(), OnceLock::new()];
    let files = FILES[eu_at as usize].get_or_init(|| {
        let env = Env {
            sim: SimStorage::new(),
            budget: 1024,
            eu_at,
        };
        let db = env
            .open(&Config::default())
            .expect("creating a store on a fresh SimStorage");
        for (name, home, allow) in INITIAL_ACCOUNTS {
            db.create_account(
                NewAccount::new(account_name(name), REGIONS[home as usize])
                    .allow(REGIONS[allow as usize]),
            )
            .expect("creating an initial account");
        }
        db.close().expect("closing a fresh store");
        let sim = env.sim;
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
    let eu_at = input.budget & 8 != 0;
    let sim = fresh_store(eu_at);
    let env = Env {
        sim: sim.clone(),
        budget,
        eu_at,
    };
    let config = Config::default();
    let db = env.open(&config).expect("opening a fresh store");
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
        env,
        sim,
        db: Some(db),
        model,
        region_ids,
        config,
        unsettled: BTreeSet::new(),
        engine_unsettled: BTreeSet::new(),
        log: Vec::new(),
    };
    if trace() {
        eprintln!(
            "budget {budget}, eu at {}",
            if eu_at { EU_PATH } else { "its default path" }
        );
    }
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
    // The end: a clean close, then every region enabled again: nothing may be left
    // unsettled, the store must equal the model exactly, and the audit must be clean.
    h.log
        .push("final: close, reopen with every region enabled".into());
    h.close();
    let all = h.config.all_enabled();
    h.open_with(all, After::Clean);
    h.check_now("after the final reopen with every region enabled");
    let report = h.db().recovery_report();
    if !report.unsettled.is_empty() {
        h.fail(format!(
            "every region is enabled, yet {:?} are unsettled",
            report.unsettled
        ));
    }
    // Closed before the next input: its Drop would checkpoint anyway.
    h.close();
});
