//! The one model of what a store must contain, and the one checker that compares a live
//! store with it.
//!
//! [`Model`]: accounts (home and allowed regions), rows keyed by (account index, region
//! name, user key bytes) with their value and the unique (namespace, value) pairs they own,
//! and the owner of every owned value; optionally ([`Model::declared`]) the rows and owners
//! of a second table, [`D`], that declares its unique value ([`d_declared`]) in the same
//! namespace space, so that its records collide with the first table's claims. Writes
//! reach it as a [`Commit`] (records set, removed or read-modify-written in one account
//! and region, in one commit), which [`Model::commit`] applies when the store must accept
//! it and [`execute_commit`] runs against a store, so a test compares [`classify`] of the
//! one with the other; [`Model::collisions`] names the records whose claim the store must
//! refuse (one of them is the `Collision` of the `UniqueViolation`).
//!
//! [`compare`] reads everything a [`Probes`] set names through a live `Db` (point reads in
//! every region of every account, scans, unique values, `scan_all`) and returns what
//! differs from the model as [`Findings`]: wrong answers, data read as absent, and errors.
//! A [`Catalog`] says which regions are disabled and whether claims may be unsettled.

use std::collections::{BTreeMap, BTreeSet};

use regionkv::{AccountId, Db, Error, Raw, Table, Unique};

/// A unique value: (namespace, value).
pub type Claim = (String, String);

/// A record: (account index, region name, user key).
pub type RowKey = (usize, &'static str, Vec<u8>);

/// The namespace [`D`] declares.
pub const D_NAMESPACE: &str = "slug";

/// The declared value of a record of [`D`]: its bytes before the first `#` (none without
/// one).
pub fn d_declared(v: &[u8]) -> Option<&[u8]> {
    v.iter().position(|&b| b == b'#').map(|i| &v[..i])
}

/// The table that declares its unique value: `insert` claims and releases it.
pub const D: Table<Raw> = Table::<Raw>::new("d").unique(D_NAMESPACE, d_declared);

/// Which table of the model a record is in: the model's own table (values claimed with
/// `insert_unique`) or [`D`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tbl {
    T,
    D,
}

/// The claims a value of `tbl` makes by declaration (`None`: not a declaring table).
fn declared_claims(tbl: Tbl, value: &[u8]) -> Option<Vec<Claim>> {
    match tbl {
        Tbl::T => None,
        Tbl::D => Some(
            d_declared(value)
                .map(|v| {
                    vec![(
                        D_NAMESPACE.to_owned(),
                        String::from_utf8(v.to_vec()).expect("a text value"),
                    )]
                })
                .unwrap_or_default(),
        ),
    }
}

/// What a read-modify-write (`Write::update`, `Db::update`) of a record of `tbl` computes
/// from the record it reads (`None`: absent), `by` choosing how: the new value, or `None`
/// to leave the record as it is. Deterministic, so the model predicts it.
pub fn bump(tbl: Tbl, old: Option<&[u8]>, by: u8) -> Option<Vec<u8>> {
    let sum = old.map(|v| v.iter().fold(0u8, |s, b| s.wrapping_add(*b)));
    match (tbl, sum) {
        // Absent: nothing to update, one time in three.
        (_, None) if by.is_multiple_of(3) => None,
        (Tbl::T, None) => Some(vec![by % 8; 3 + (by as usize % 5)]),
        (Tbl::T, Some(s)) => {
            let v = s.wrapping_add(by).wrapping_add(1) % 8;
            Some(vec![v; 3 + (v as usize % 5)])
        }
        (Tbl::D, None) => Some(d_value(by)),
        // Keeps the declared value (a new tail) or picks another one.
        (Tbl::D, Some(s)) if by.is_multiple_of(2) => {
            let old = old.expect("present");
            match d_declared(old) {
                Some(head) => {
                    let mut v = head.to_vec();
                    v.extend_from_slice(format!("#{}", s % 3).as_bytes());
                    Some(v)
                }
                None => Some(d_value(s.wrapping_add(by))),
            }
        }
        (Tbl::D, Some(s)) => Some(d_value(s.wrapping_add(by))),
    }
}

/// How many distinct values [`d_value`] makes.
pub const D_VALUES: u8 = 20;

/// A value of [`D`]: `value-<h>@example.com#<t>` (it declares `value-<h>@example.com`,
/// the value the workload's `slug` claims use too) or, one time in four, `free-<h>`
/// (declares nothing).
pub fn d_value(i: u8) -> Vec<u8> {
    let i = i % D_VALUES;
    let (h, t) = (i % 5, i / 5);
    if t == 3 {
        format!("free-{h}").into_bytes()
    } else {
        format!("value-{h}@example.com#{t}").into_bytes()
    }
}

/// A value that differs from `old` (a record of `tbl`) and claims what it claims: what a
/// concurrent writer commits between another write's read and its commit.
pub fn changed(tbl: Tbl, old: Option<&[u8]>) -> Vec<u8> {
    match (tbl, old) {
        (Tbl::T, None) => vec![1; 4],
        (Tbl::T, Some(v)) => {
            let n = v.first().map_or(0, |b| b.wrapping_add(1) % 8);
            let mut new = vec![n; 3 + (n as usize % 5)];
            if new == v {
                new.push(n);
            }
            new
        }
        // Nothing declared: no claim to collide.
        (Tbl::D, None) => b"free-new".to_vec(),
        (Tbl::D, Some(v)) => {
            let mut new = v.to_vec();
            if new.last() == Some(&b'+') {
                new.pop();
            } else {
                new.push(b'+');
            }
            new
        }
    }
}

/// An account of the model: its home region and every region it may use (home first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acct {
    pub home: &'static str,
    pub allowed: Vec<&'static str>,
}

impl Acct {
    pub fn new(home: &'static str, others: &[&'static str]) -> Acct {
        let mut allowed = vec![home];
        allowed.extend(others.iter().filter(|r| **r != home));
        Acct { home, allowed }
    }
}

/// What a record is, in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub value: Vec<u8>,
    /// The values it owns, sorted.
    pub uniques: Vec<Claim>,
}

/// How record values are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Any bytes.
    Any,
    /// Every value begins with [`writer_tag`] of the account that wrote it: a row read
    /// through another account's handle is recognisable as leaked.
    NameWriter,
}

/// The prefix of every value account `acct` writes in [`Values::NameWriter`] mode.
pub fn writer_tag(acct: usize) -> String {
    format!("acct{acct}-")
}

/// A value that names its writer: `acct<acct>-val<val>`.
pub fn writer_value(acct: usize, val: u8) -> Vec<u8> {
    format!("{}val{val}", writer_tag(acct)).into_bytes()
}

/// What the store must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The table every record is in (but those of [`D`]).
    pub table: &'static str,
    /// Every region the store lists, in the order reads probe them.
    pub regions: Vec<&'static str>,
    /// By account index.
    pub accounts: Vec<Acct>,
    pub values: Values,
    pub rows: BTreeMap<RowKey, Row>,
    pub owners: BTreeMap<Claim, RowKey>,
    /// Whether the store has the table [`D`] too (then [`compare`] reads it).
    pub declared: bool,
    /// The rows of [`D`]; each owns the declared value of its value.
    pub drows: BTreeMap<RowKey, Row>,
    /// The owners of values owned by a record of [`D`] (a value is in `owners` or here,
    /// never both: namespaces are shared by every table).
    pub downers: BTreeMap<Claim, RowKey>,
}

/// How a record of [`D`] is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DPut {
    /// `insert`: the table claims and releases the declared value.
    Insert,
    /// `insert_unique` with exactly the declared list: the same.
    Exact,
    /// `insert_unique` with a list that contradicts the declaration: refused before any
    /// I/O (`InvalidArgument`), the write is not committed.
    Contradict,
}

/// One record operation of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// Sets a record. `uniques: None` is a plain insert: the record keeps what it owns;
    /// `Some(list)` makes it own exactly `list` (an empty list releases everything).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        uniques: Option<Vec<Claim>>,
    },
    Remove {
        key: Vec<u8>,
    },
    /// Sets a record of [`D`]: it owns exactly the declared value of `value`.
    PutD {
        key: Vec<u8>,
        value: Vec<u8>,
        how: DPut,
    },
    RemoveD {
        key: Vec<u8>,
    },
    /// `Write::update` of a record of `tbl`: it becomes [`bump`] of what the write reads
    /// (its own buffered change first), and keeps what it owns (a record of [`D`] owns the
    /// declared value of the new value).
    Update {
        tbl: Tbl,
        key: Vec<u8>,
        by: u8,
    },
}

/// One commit: record operations of one account in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub acct: usize,
    pub region: &'static str,
    pub recs: Vec<Rec>,
}

/// Outcome classes the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A value the write claims is owned by a record the write does not release it from.
    Violation,
    /// The region is not among the account's.
    Denied,
    /// A record the write read changed before its commit (nothing written).
    Conflict,
    /// Refused before the commit (`InvalidArgument`): `insert_unique` contradicting a
    /// table's declarations.
    Invalid,
}

/// The outcome class of a commit; `None` for any other error.
pub fn classify(r: &Result<(), Error>) -> Option<Outcome> {
    match r {
        Ok(()) => Some(Outcome::Ok),
        Err(Error::UniqueViolation { .. }) => Some(Outcome::Violation),
        Err(Error::PlacementDenied { .. }) => Some(Outcome::Denied),
        Err(Error::Conflict { .. }) => Some(Outcome::Conflict),
        Err(Error::InvalidArgument(_)) => Some(Outcome::Invalid),
        Err(_) => None,
    }
}

/// Sorted, without repeats: the form a record's list of values has in the model.
pub fn canonical(list: &[Claim]) -> Vec<Claim> {
    let mut v = list.to_vec();
    v.sort();
    v.dedup();
    v
}

/// A record of a commit: its table and key.
pub type Slot = (Tbl, RowKey);

/// A record a commit sets whose claim must be refused: (table, key, claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collides {
    pub tbl: Tbl,
    pub key: Vec<u8>,
    pub claim: Claim,
}

impl Model {
    pub fn new(table: &'static str, regions: &[&'static str], accounts: Vec<Acct>) -> Model {
        Model {
            table,
            regions: regions.to_vec(),
            accounts,
            values: Values::Any,
            rows: BTreeMap::new(),
            owners: BTreeMap::new(),
            declared: false,
            drows: BTreeMap::new(),
            downers: BTreeMap::new(),
        }
    }

    pub fn table(&self) -> Table<Raw> {
        Table::new(self.table)
    }

    /// The name of table `tbl` in the store.
    pub fn table_name(&self, tbl: Tbl) -> &'static str {
        match tbl {
            Tbl::T => self.table,
            Tbl::D => D.name(),
        }
    }

    /// The rows of table `tbl`.
    pub fn rows_of(&self, tbl: Tbl) -> &BTreeMap<RowKey, Row> {
        match tbl {
            Tbl::T => &self.rows,
            Tbl::D => &self.drows,
        }
    }

    /// The tables [`compare`] reads.
    pub fn tables(&self) -> Vec<Tbl> {
        if self.declared {
            vec![Tbl::T, Tbl::D]
        } else {
            vec![Tbl::T]
        }
    }

    /// The owner of a value: its table and record.
    pub fn owner(&self, claim: &Claim) -> Option<(Tbl, &RowKey)> {
        self.owners
            .get(claim)
            .map(|rk| (Tbl::T, rk))
            .or_else(|| self.downers.get(claim).map(|rk| (Tbl::D, rk)))
    }

    /// The model's name of a region the store names `name`.
    pub fn region(&self, name: &str) -> Option<&'static str> {
        self.regions.iter().copied().find(|r| *r == name)
    }

    /// The value of a record as commit `w` sees it after the operations `last` buffered.
    fn current<'a>(&'a self, last: &'a [(Slot, Option<Row>)], slot: &Slot) -> Option<&'a Row> {
        match last.iter().find(|(s, _)| s == slot) {
            Some((_, row)) => row.as_ref(),
            None => self.rows_of(slot.0).get(&slot.1),
        }
    }

    /// What each record `w` touches becomes (`None`: removed), the last operation on a
    /// record winning, in the order first touched; or the outcome of a commit refused
    /// before its claims are looked at.
    fn resolve(&self, w: &Commit) -> Result<Vec<(Slot, Option<Row>)>, Outcome> {
        if !self.accounts[w.acct].allowed.contains(&w.region) {
            return Err(Outcome::Denied);
        }
        if self.values == Values::NameWriter {
            let tag = writer_tag(w.acct);
            for rec in &w.recs {
                if let Rec::Put { value, .. } = rec {
                    assert!(value.starts_with(tag.as_bytes()), "{w:?}: untagged value");
                }
            }
        }
        let mut last: Vec<(Slot, Option<Row>)> = Vec::new();
        for rec in &w.recs {
            let rk = |key: &Vec<u8>| (w.acct, w.region, key.clone());
            let (slot, new) = match rec {
                Rec::Put {
                    key,
                    value,
                    uniques,
                } => {
                    let slot = (Tbl::T, rk(key));
                    let uniques = match uniques {
                        Some(list) => canonical(list),
                        // A plain insert keeps what the record owns at that point of the
                        // write: after a remove in the same write, nothing.
                        None => self
                            .current(&last, &slot)
                            .map(|r| r.uniques.clone())
                            .unwrap_or_default(),
                    };
                    let row = Row {
                        value: value.clone(),
                        uniques,
                    };
                    (slot, Some(row))
                }
                Rec::Remove { key } => ((Tbl::T, rk(key)), None),
                Rec::PutD { key, value, how } => {
                    if *how == DPut::Contradict {
                        return Err(Outcome::Invalid);
                    }
                    let uniques = declared_claims(Tbl::D, value).expect("declared");
                    let row = Row {
                        value: value.clone(),
                        uniques,
                    };
                    ((Tbl::D, rk(key)), Some(row))
                }
                Rec::RemoveD { key } => ((Tbl::D, rk(key)), None),
                Rec::Update { tbl, key, by } => {
                    let slot = (*tbl, rk(key));
                    let old = self.current(&last, &slot);
                    let Some(value) = bump(*tbl, old.map(|r| r.value.as_slice()), *by) else {
                        // Nothing buffered: the record stays as the write sees it.
                        continue;
                    };
                    let uniques = declared_claims(*tbl, &value)
                        .unwrap_or_else(|| old.map(|r| r.uniques.clone()).unwrap_or_default());
                    (slot, Some(Row { value, uniques }))
                }
            };
            match last.iter_mut().find(|(s, _)| *s == slot) {
                Some(entry) => entry.1 = new,
                None => last.push((slot, new)),
            }
        }
        Ok(last)
    }

    /// The records of `last` whose claims are owned elsewhere: by a record outside the
    /// write, or by one of the write that keeps the value.
    fn collisions_in(&self, last: &[(Slot, Option<Row>)]) -> Vec<Collides> {
        let mut out = Vec::new();
        // A value claimed by two records of one write is refused before any I/O
        // (DuplicateInWrite); the workloads never write that.
        for (slot, new) in last {
            let Some(row) = new else { continue };
            for u in &row.uniques {
                let Some((otbl, orow)) = self.owner(u) else {
                    continue;
                };
                let owner = (otbl, orow.clone());
                if owner == *slot {
                    continue;
                }
                let refused = match last.iter().find(|(s, _)| *s == owner) {
                    None => true,
                    Some((_, Some(other))) => other.uniques.contains(u),
                    Some((_, None)) => false,
                };
                if refused {
                    out.push(Collides {
                        tbl: slot.0,
                        key: slot.1.2.clone(),
                        claim: u.clone(),
                    });
                }
            }
        }
        out
    }

    /// The records of `w` whose claim the store must refuse (empty if it must accept the
    /// claims, or refuses `w` for another reason).
    pub fn collisions(&self, w: &Commit) -> Vec<Collides> {
        match self.resolve(w) {
            Ok(last) => self.collisions_in(&last),
            Err(_) => Vec::new(),
        }
    }

    /// Applies `w` if the store must accept it; returns the predicted outcome (the model
    /// is unchanged unless it is `Ok`).
    pub fn commit(&mut self, w: &Commit) -> Outcome {
        let last = match self.resolve(w) {
            Ok(last) => last,
            Err(o) => return o,
        };
        if !self.collisions_in(&last).is_empty() {
            return Outcome::Violation;
        }
        for ((tbl, rk), _) in &last {
            let (rows, owners) = self.maps(*tbl);
            if let Some(old) = rows.remove(rk) {
                for u in &old.uniques {
                    if owners.get(u) == Some(rk) {
                        owners.remove(u);
                    }
                }
            }
        }
        for ((tbl, rk), new) in last {
            if let Some(row) = new {
                let (rows, owners) = self.maps(tbl);
                for u in &row.uniques {
                    owners.insert(u.clone(), rk.clone());
                }
                rows.insert(rk, row);
            }
        }
        Outcome::Ok
    }

    fn maps(&mut self, tbl: Tbl) -> (&mut BTreeMap<RowKey, Row>, &mut BTreeMap<Claim, RowKey>) {
        match tbl {
            Tbl::T => (&mut self.rows, &mut self.owners),
            Tbl::D => (&mut self.drows, &mut self.downers),
        }
    }

    /// The keys of account `acct`'s rows of `tbl`, in any region.
    fn keys_of(&self, tbl: Tbl, acct: usize) -> BTreeSet<Vec<u8>> {
        self.rows_of(tbl)
            .keys()
            .filter(|(a, _, _)| *a == acct)
            .map(|(_, _, k)| k.clone())
            .collect()
    }
}

/// Runs `w` against the store as account `id`, through `table` (and [`D`]).
pub fn execute_commit(db: &Db, table: &Table<Raw>, id: AccountId, w: &Commit) -> Result<(), Error> {
    let mut tx = db.write_in(id, w.region)?;
    buffer(&mut tx, table, &w.recs)?;
    tx.commit()
}

/// Buffers `recs` in `tx` (`table`: the model's table).
pub fn buffer(tx: &mut regionkv::Write, table: &Table<Raw>, recs: &[Rec]) -> Result<(), Error> {
    for rec in recs {
        match rec {
            Rec::Put {
                key,
                value,
                uniques: None,
            } => tx.insert(table, key, value)?,
            Rec::Put {
                key,
                value,
                uniques: Some(list),
            } => {
                let us: Vec<Unique> = list.iter().map(|(n, v)| Unique::new(n, v)).collect();
                tx.insert_unique(table, key, value, &us)?
            }
            Rec::Remove { key } => tx.remove(table, key)?,
            Rec::PutD { key, value, how } => {
                let declared = d_declared(value);
                let list: Vec<Unique> = match (how, declared) {
                    (DPut::Insert, _) => {
                        tx.insert(&D, key, value)?;
                        continue;
                    }
                    (DPut::Exact, Some(v)) => vec![Unique::new(D_NAMESPACE, v)],
                    (DPut::Exact, None) => vec![],
                    // Another value than the declared one, or none where it declares one.
                    (DPut::Contradict, Some(_)) => vec![],
                    (DPut::Contradict, None) => {
                        vec![Unique::new(D_NAMESPACE, "value-0@example.com")]
                    }
                };
                tx.insert_unique(&D, key, value, &list)?
            }
            Rec::RemoveD { key } => tx.remove(&D, key)?,
            Rec::Update { tbl, key, by } => {
                let t = match tbl {
                    Tbl::T => table,
                    Tbl::D => &D,
                };
                tx.update(t, key, |old| bump(*tbl, old.map(|r| &r[..]), *by))?;
            }
        }
    }
    Ok(())
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

/// What [`compare`] reads besides the model's own rows and values.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Keys read in every region of every account: absent ones must read as absent.
    pub keys: Vec<Vec<u8>>,
    /// Prefixes every account scans (the empty prefix is `scan`, and is always scanned).
    pub prefixes: Vec<Vec<u8>>,
    /// Unique values looked up besides the owned ones: each must be free.
    pub values: Vec<Claim>,
}

/// What differs between a store and the model.
#[derive(Debug, Default)]
pub struct Findings {
    /// Answers other than the model's.
    pub wrong: Vec<String>,
    /// Data of the model read as absent (`None`, not taken, missing from a scan).
    pub missing: Vec<String>,
    /// Reads that failed where the model expects an answer (or failed otherwise than it
    /// expects).
    pub errors: Vec<String>,
}

impl Findings {
    pub fn is_empty(&self) -> bool {
        self.wrong.is_empty() && self.missing.is_empty() && self.errors.is_empty()
    }

    /// `Err` naming every finding (the first few in full) unless there is none.
    pub fn into_result(self) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let n = self.wrong.len() + self.missing.len() + self.errors.len();
        let all: Vec<String> = (self.wrong.iter().map(|w| format!("wrong: {w}")))
            .chain(self.missing.iter().map(|m| format!("missing: {m}")))
            .chain(self.errors.iter().map(|e| format!("error: {e}")))
            .take(8)
            .collect();
        Err(format!("{n} findings: {}", all.join("; ")))
    }
}

/// A key or value for messages: text if it is printable, else hex.
pub fn show(b: &[u8]) -> String {
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{:?}", String::from_utf8_lossy(b))
    } else {
        format!("{b:02x?}")
    }
}

/// The most rows a scan may yield before it counts as not ending.
const SCAN_LIMIT: usize = 10_000;

/// What a point read must return.
enum Want {
    Value(Option<Vec<u8>>),
    Denied,
    Disabled,
}

struct Cmp<'a> {
    db: &'a Db,
    ids: &'a [Option<AccountId>],
    model: &'a Model,
    cat: &'a Catalog,
    out: Findings,
    /// The partitions for which the scan under way yielded an error item (`"*"`: one that
    /// names none): the rows of such a region it does not yield are not "missing", the error
    /// stands for them (a row that fails, or the rest of a region's range that cannot be
    /// read).
    cut: BTreeSet<String>,
}

/// The partition an error names, if it names one.
fn partition_of(e: &Error) -> Option<&str> {
    match e {
        Error::Corrupt { partition, .. }
        | Error::Storage { partition, .. }
        | Error::OutcomeUnknown { partition, .. }
        | Error::SchemaMismatch { partition, .. } => Some(partition),
        Error::Poisoned(p) => Some(p),
        _ => None,
    }
}

/// Compares the store with the model: for every account with an id (`ids` by account
/// index; `None`: not created yet), `read` answers as that account; in every table of the
/// model (its own and, if [`Model::declared`], [`D`]) `get_in` of every key (the model's
/// and `probes.keys`) in every region, and `get` in the home region, return the model's
/// value, `PlacementDenied` outside the account's regions or `RegionDisabled` in a
/// disabled one; `scan` and `scan_prefix` of every prefix yield exactly the model's rows
/// of the account in its enabled regions, each tagged with the account, plus one
/// `RegionDisabled` item per disabled region of the account. Every owned and probed
/// unique value has the model's owner (table, account, region, key, record) in
/// `find_unique` of every table (none in the tables that do not own it) and `is_taken`,
/// within what `cat` allows. `scan_all` of every table yields exactly the model's rows in
/// enabled regions, each tagged with its owner. With [`Values::NameWriter`], every value
/// read names the account it was read as (or, in `scan_all`, the row's account).
///
/// `phase` is told what is read next (for reports of a read that panics or hangs).
pub fn compare(
    db: &Db,
    ids: &[Option<AccountId>],
    model: &Model,
    cat: &Catalog,
    probes: &Probes,
    phase: &dyn Fn(String),
) -> Findings {
    let mut c = Cmp {
        db,
        ids,
        model,
        cat,
        out: Findings::default(),
        cut: BTreeSet::new(),
    };
    for (acct, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        c.account(acct, *id, probes, phase);
    }
    let values: BTreeSet<Claim> = model
        .owners
        .keys()
        .chain(model.downers.keys())
        .cloned()
        .chain(probes.values.iter().cloned())
        .collect();
    for (ns, value) in &values {
        phase(format!("find_unique {ns}/{value}"));
        c.value(ns, value);
    }
    for tbl in model.tables() {
        phase(format!("scan_all {}", model.table_name(tbl)));
        c.scan_all(tbl);
    }
    c.out
}

impl Cmp<'_> {
    fn table(&self, tbl: Tbl) -> Table<Raw> {
        match tbl {
            Tbl::T => self.model.table(),
            Tbl::D => D,
        }
    }

    fn want(&self, tbl: Tbl, acct: usize, region: &'static str, key: &[u8]) -> Want {
        if !self.model.accounts[acct].allowed.contains(&region) {
            Want::Denied
        } else if self.cat.is_disabled(region) {
            Want::Disabled
        } else {
            Want::Value(
                self.model
                    .rows_of(tbl)
                    .get(&(acct, region, key.to_vec()))
                    .map(|r| r.value.clone()),
            )
        }
    }

    /// Whether `value`, read as account `acct`, names its writer where values must.
    fn names(&self, acct: usize, value: &[u8]) -> bool {
        self.model.values != Values::NameWriter || value.starts_with(writer_tag(acct).as_bytes())
    }

    fn point(
        &mut self,
        what: String,
        acct: usize,
        want: Want,
        got: Result<Option<Vec<u8>>, Error>,
    ) {
        if let Ok(Some(v)) = &got
            && !self.names(acct, v)
        {
            self.out.wrong.push(format!(
                "{what}: value {} of another writer (a leaked row)",
                show(v)
            ));
            return;
        }
        match (want, got) {
            (Want::Value(w), Ok(g)) if w == g => {}
            (Want::Value(Some(w)), Ok(None)) => self
                .out
                .missing
                .push(format!("{what}: None, model {}", show(&w))),
            (Want::Value(w), Ok(g)) => self.out.wrong.push(format!(
                "{what}: store {:?}, model {:?}",
                g.as_deref().map(show),
                w.as_deref().map(show)
            )),
            (Want::Value(_), Err(e)) => self.out.errors.push(format!("{what}: {e}")),
            (Want::Denied, Err(Error::PlacementDenied { .. })) => {}
            (Want::Disabled, Err(Error::RegionDisabled(_))) => {}
            (Want::Denied, got) => self.out.wrong.push(format!(
                "{what} outside the account's regions: {:?}",
                got.map(|o| o.map(|v| show(&v)))
            )),
            (Want::Disabled, Ok(g)) => self.out.wrong.push(format!(
                "{what} in a disabled region: {:?}",
                g.map(|v| show(&v))
            )),
            (Want::Disabled, Err(e)) => self
                .out
                .errors
                .push(format!("{what} in a disabled region: {e}")),
        }
    }

    fn account(&mut self, acct: usize, id: AccountId, probes: &Probes, phase: &dyn Fn(String)) {
        phase(format!("read a{acct} ({id})"));
        let r = match self.db.read(id) {
            Ok(r) => r,
            Err(e) => {
                self.out.errors.push(format!("read a{acct} ({id}): {e}"));
                return;
            }
        };
        if r.account() != id {
            self.out.wrong.push(format!(
                "read a{acct} ({id}): a handle of account {}",
                r.account()
            ));
        }
        for tbl in self.model.tables() {
            self.account_table(tbl, acct, id, &r, probes, phase);
        }
    }

    /// The reads of [`Cmp::account`] in table `tbl`.
    fn account_table(
        &mut self,
        tbl: Tbl,
        acct: usize,
        id: AccountId,
        r: &regionkv::Read,
        probes: &Probes,
        phase: &dyn Fn(String),
    ) {
        let t = self.table(tbl);
        // The model's own table reads as it always did; the others are named.
        let tn = match tbl {
            Tbl::T => String::new(),
            _ => format!(" in {}", t.name()),
        };
        let home = self.model.accounts[acct].home;
        let mut keys = self.model.keys_of(tbl, acct);
        keys.extend(probes.keys.iter().cloned());
        for key in &keys {
            for &region in &self.model.regions {
                phase(format!("get{tn} a{acct} {region} {}", show(key)));
                // `get_in` in every region, and `get` in the home region too.
                let mut reads = vec![(format!("get_in {region}"), r.get_in(region, &t, key))];
                if region == home {
                    reads.push(("get".to_owned(), r.get(&t, key)));
                }
                for (how, got) in reads {
                    let want = self.want(tbl, acct, region, key);
                    self.point(
                        format!("{how}{tn} by a{acct} ({id}) of key {}", show(key)),
                        acct,
                        want,
                        got.map(|o| o.map(|rec| rec.to_vec())),
                    );
                }
            }
        }
        let mut prefixes: BTreeSet<&[u8]> = probes.prefixes.iter().map(|p| p.as_slice()).collect();
        prefixes.insert(b"");
        for prefix in prefixes {
            phase(format!("scan{tn} a{acct} {}", show(prefix)));
            let rows = if prefix.is_empty() {
                r.scan(&t)
            } else {
                r.scan_prefix(&t, prefix)
            };
            let what = format!("scan_prefix{tn} {} by a{acct} ({id})", show(prefix));
            match rows {
                Ok(rows) => self.scan(tbl, acct, id, prefix, rows, &what),
                Err(e) => self.out.errors.push(format!("{what}: {e}")),
            }
        }
    }

    fn scan(
        &mut self,
        tbl: Tbl,
        acct: usize,
        id: AccountId,
        prefix: &[u8],
        rows: regionkv::Rows<Raw>,
        what: &str,
    ) {
        let allowed = self.model.accounts[acct].allowed.clone();
        let mut seen: BTreeSet<RowKey> = BTreeSet::new();
        self.cut.clear();
        let mut disabled_items = 0;
        for (n, row) in rows.enumerate() {
            if self.past_scan_limit(what, n) {
                break;
            }
            if let Err(Error::RegionDisabled(_)) = row {
                disabled_items += 1;
                continue;
            }
            let Some((account, region, key, value)) = self.scanned(what, row) else {
                continue;
            };
            if account != id {
                self.out
                    .wrong
                    .push(format!("{what}: a row of {account} (key {})", show(&key)));
            } else if !allowed.contains(&region) || self.cat.is_disabled(region) {
                self.out.wrong.push(format!(
                    "{what}: a row in {region}, not an enabled region of the account"
                ));
            } else if !key.starts_with(prefix) {
                self.out
                    .wrong
                    .push(format!("{what}: key {} outside the prefix", show(&key)));
            } else {
                self.row(tbl, what, (acct, region, key), &value, &mut seen);
            }
        }
        self.unseen(tbl, what, &seen, |(a, _, key)| {
            *a == acct && key.starts_with(prefix)
        });
        let disabled = allowed.iter().filter(|r| self.cat.is_disabled(r)).count();
        if disabled_items != disabled {
            self.out.wrong.push(format!(
                "{what}: {disabled_items} RegionDisabled items, {disabled} regions of the \
                 account disabled"
            ));
        }
    }

    /// A scanned row as (account, region, key, value); `None` (reported) if it failed to
    /// read or lies in a region the model does not know.
    fn scanned(
        &mut self,
        what: &str,
        row: Result<regionkv::Row<Raw>, Error>,
    ) -> Option<(AccountId, &'static str, Vec<u8>, Vec<u8>)> {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                self.cut.insert(partition_of(&e).unwrap_or("*").to_owned());
                self.out.errors.push(format!("{what}: row: {e}"));
                return None;
            }
        };
        let Some(region) = self
            .db
            .region_name(row.region())
            .and_then(|n| self.model.region(&n))
        else {
            self.out.wrong.push(format!(
                "{what}: a row in unknown region {} (key {})",
                row.region(),
                show(row.key())
            ));
            return None;
        };
        Some((
            row.account(),
            region,
            row.key().to_vec(),
            row.record().to_vec(),
        ))
    }

    /// One scanned row of account `rk.0` in table `tbl` against the model: once, naming
    /// its writer, with the model's value.
    fn row(&mut self, tbl: Tbl, what: &str, rk: RowKey, value: &[u8], seen: &mut BTreeSet<RowKey>) {
        let (acct, region, key) = &rk;
        let at = format!("{what}: a{acct} {region} {}", show(key));
        if seen.contains(&rk) {
            self.out.wrong.push(format!("{at} twice"));
        } else if !self.names(*acct, value) {
            self.out.wrong.push(format!(
                "{at}: value {} of another writer (a leaked or mistagged row)",
                show(value)
            ));
        } else {
            match self.model.rows_of(tbl).get(&rk) {
                Some(want) if want.value == value => {}
                Some(want) => self.out.wrong.push(format!(
                    "{at}: store {}, model {}",
                    show(value),
                    show(&want.value)
                )),
                None => self.out.wrong.push(format!("{at}: unexpected row")),
            }
        }
        seen.insert(rk);
    }

    /// Every model row of `tbl` in an enabled region that `filter` selects must have been
    /// `seen`.
    fn unseen(
        &mut self,
        tbl: Tbl,
        what: &str,
        seen: &BTreeSet<RowKey>,
        filter: impl Fn(&RowKey) -> bool,
    ) {
        let cut = |region: &str| self.cut.contains(region) || self.cut.contains("*");
        for rk in self.model.rows_of(tbl).keys() {
            if filter(rk) && !self.cat.is_disabled(rk.1) && !seen.contains(rk) && !cut(rk.1) {
                self.out
                    .missing
                    .push(format!("{what}: no row a{} {} {}", rk.0, rk.1, show(&rk.2)));
            }
        }
    }

    /// `is_taken` and `find_unique` of one value in every table of the model.
    fn value(&mut self, ns: &str, value: &str) {
        let db = self.db;
        let claim = (ns.to_owned(), value.to_owned());
        let want = self.model.owner(&claim);
        let taken = db.is_taken(ns, value);
        let unsettled = self.cat.unsettled;
        let out = &mut self.out;
        match want {
            Some((_, (_, region, _))) if self.cat.is_disabled(region) => match taken {
                Ok(true) => {}
                Err(Error::RegionUnsettled(_)) if unsettled => {}
                Ok(false) => out.missing.push(format!(
                    "is_taken {ns}/{value} owned in disabled {region}: false"
                )),
                Err(e) => out.errors.push(format!(
                    "is_taken {ns}/{value} owned in disabled {region}: {e}"
                )),
            },
            None if unsettled => match taken {
                Ok(_) | Err(Error::RegionUnsettled(_)) => {}
                Err(e) => out.errors.push(format!("is_taken {ns}/{value}: {e}")),
            },
            None => match taken {
                Ok(false) => {}
                Ok(true) => out
                    .wrong
                    .push(format!("is_taken {ns}/{value}: true, model none")),
                Err(e) => out.errors.push(format!("is_taken {ns}/{value}: {e}")),
            },
            Some((_, (acct, region, key))) => match taken {
                Ok(true) => {}
                Ok(false) => out.missing.push(format!(
                    "is_taken {ns}/{value}: false, model a{acct} {region} {}",
                    show(key)
                )),
                Err(e) => out.errors.push(format!("is_taken {ns}/{value}: {e}")),
            },
        }
        for tbl in self.model.tables() {
            // The owner, if it is a record of this table.
            let owner = want.filter(|(t, _)| *t == tbl).map(|(_, rk)| rk);
            let elsewhere = want.is_some() && owner.is_none();
            self.hit(tbl, ns, value, owner, elsewhere);
        }
    }

    /// `find_unique` of a value in table `tbl`: `owner` (a record of `tbl`) or none
    /// (`elsewhere`: the value is owned by a record of another table).
    fn hit(&mut self, tbl: Tbl, ns: &str, value: &str, owner: Option<&RowKey>, elsewhere: bool) {
        let db = self.db;
        let t = self.table(tbl);
        let hit = db.find_unique(&t, ns, value);
        let unsettled = self.cat.unsettled;
        let what = match tbl {
            Tbl::T => format!("find_unique {ns}/{value}"),
            _ => format!("find_unique in {} {ns}/{value}", t.name()),
        };
        let out = &mut self.out;
        match owner {
            Some((_, region, _)) if self.cat.is_disabled(region) => match hit {
                Err(Error::RegionDisabled(_)) => {}
                Err(Error::RegionUnsettled(_)) if unsettled => {}
                Ok(h) => out.wrong.push(format!(
                    "{what} owned in disabled {region}: {:?}",
                    h.map(|h| h.account())
                )),
                Err(e) => out
                    .errors
                    .push(format!("{what} owned in disabled {region}: {e}")),
            },
            // May be refused; must never name an owner the model does not know. (Owned by
            // a record of another table: that table's read names it.)
            None if unsettled => match hit {
                // An entry left in flight by the crash names the disabled region.
                Ok(None) | Err(Error::RegionUnsettled(_)) | Err(Error::RegionDisabled(_)) => {}
                Ok(Some(h)) => out
                    .wrong
                    .push(format!("{what}: owner {:?}, model none", h.account())),
                Err(e) => out.errors.push(format!("{what}: {e}")),
            },
            None => match hit {
                Ok(None) => {}
                Ok(Some(h)) => out.wrong.push(format!(
                    "{what}: owner {} {:?} {}, model {}",
                    h.account(),
                    db.region_name(h.region()),
                    show(h.key()),
                    if elsewhere {
                        "a record of another table"
                    } else {
                        "none"
                    }
                )),
                // Owned by a record of another table in a disabled region.
                Err(Error::RegionDisabled(_)) if elsewhere => {}
                Err(e) => out.errors.push(format!("{what}: {e}")),
            },
            Some(rk) => {
                let (acct, region, key) = rk;
                match hit {
                    Ok(Some(h)) => {
                        let got_acct = self.ids.iter().position(|i| *i == Some(h.account()));
                        let got_region = db.region_name(h.region());
                        let record = h.record().to_vec();
                        let row = &self.model.rows_of(tbl)[rk];
                        if got_acct != Some(*acct)
                            || got_region.as_deref() != Some(*region)
                            || h.key() != key.as_slice()
                            || record != row.value
                        {
                            out.wrong.push(format!(
                                "{what}: store {} (a{got_acct:?}) {got_region:?} {} record {}, \
                                 model a{acct} {region} {} record {}",
                                h.account(),
                                show(h.key()),
                                show(&record),
                                show(key),
                                show(&row.value)
                            ));
                        }
                    }
                    Ok(None) => out.missing.push(format!(
                        "{what}: None, model a{acct} {region} {}",
                        show(key)
                    )),
                    Err(e) => out.errors.push(format!("{what}: {e}")),
                }
            }
        }
    }

    /// Whether row `n` (from 0) of scan `what` is past [`SCAN_LIMIT`]: then the scan is
    /// wrong (recorded) and must stop.
    fn past_scan_limit(&mut self, what: &str, n: usize) -> bool {
        if n == SCAN_LIMIT {
            self.out
                .wrong
                .push(format!("{what}: more than {SCAN_LIMIT} rows"));
        }
        n == SCAN_LIMIT
    }

    fn scan_all(&mut self, tbl: Tbl) {
        let t = self.table(tbl);
        let what = match tbl {
            Tbl::T => "scan_all".to_owned(),
            _ => format!("scan_all {}", t.name()),
        };
        let what = what.as_str();
        let rows = match self.db.scan_all(&t) {
            Ok(rows) => rows,
            Err(e) => {
                self.out.errors.push(format!("{what}: {e}"));
                return;
            }
        };
        let mut seen: BTreeSet<RowKey> = BTreeSet::new();
        self.cut.clear();
        for (n, row) in rows.enumerate() {
            if self.past_scan_limit(what, n) {
                break;
            }
            let Some((account, region, key, value)) = self.scanned(what, row) else {
                continue;
            };
            let Some(acct) = self.ids.iter().position(|i| *i == Some(account)) else {
                self.out.wrong.push(format!(
                    "{what}: a row of unknown account {account} (key {})",
                    show(&key)
                ));
                continue;
            };
            if self.cat.is_disabled(region) {
                self.out.wrong.push(format!(
                    "{what}: a{acct} {region} {} in a disabled region",
                    show(&key)
                ));
            } else {
                self.row(tbl, what, (acct, region, key), &value, &mut seen);
            }
        }
        self.unseen(tbl, what, &seen, |_| true);
    }
}
