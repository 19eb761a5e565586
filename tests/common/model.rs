//! The one model of what a store must contain, and the one checker that compares a live
//! store with it.
//!
//! [`Model`]: accounts (home and allowed regions), rows keyed by (account index, region
//! name, user key bytes) with their value and the unique (namespace, value) pairs they own,
//! and the owner of every owned value. Writes reach it as a [`Commit`] (records set or
//! removed in one account and region, in one commit), which [`Model::commit`] applies when
//! the store must accept it and [`execute_commit`] runs against a store, so a test compares
//! [`classify`] of the one with the other.
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
    /// The one table every record is in.
    pub table: &'static str,
    /// Every region the store lists, in the order reads probe them.
    pub regions: Vec<&'static str>,
    /// By account index.
    pub accounts: Vec<Acct>,
    pub values: Values,
    pub rows: BTreeMap<RowKey, Row>,
    pub owners: BTreeMap<Claim, RowKey>,
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
}

/// The outcome class of a commit; `None` for any other error.
pub fn classify(r: &Result<(), Error>) -> Option<Outcome> {
    match r {
        Ok(()) => Some(Outcome::Ok),
        Err(Error::UniqueViolation { .. }) => Some(Outcome::Violation),
        Err(Error::PlacementDenied { .. }) => Some(Outcome::Denied),
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

impl Model {
    pub fn new(table: &'static str, regions: &[&'static str], accounts: Vec<Acct>) -> Model {
        Model {
            table,
            regions: regions.to_vec(),
            accounts,
            values: Values::Any,
            rows: BTreeMap::new(),
            owners: BTreeMap::new(),
        }
    }

    pub fn table(&self) -> Table<Raw> {
        Table::new(self.table)
    }

    /// The model's name of a region the store names `name`.
    pub fn region(&self, name: &str) -> Option<&'static str> {
        self.regions.iter().copied().find(|r| *r == name)
    }

    /// Applies `w` if the store must accept it; returns the predicted outcome (the model
    /// is unchanged unless it is `Ok`).
    pub fn commit(&mut self, w: &Commit) -> Outcome {
        if !self.accounts[w.acct].allowed.contains(&w.region) {
            return Outcome::Denied;
        }
        if self.values == Values::NameWriter {
            let tag = writer_tag(w.acct);
            for rec in &w.recs {
                if let Rec::Put { value, .. } = rec {
                    assert!(value.starts_with(tag.as_bytes()), "{w:?}: untagged value");
                }
            }
        }
        // What each record becomes (`None`: removed); the last operation on a key wins.
        let mut last: Vec<(RowKey, Option<Row>)> = Vec::new();
        for rec in &w.recs {
            let (key, new) = match rec {
                Rec::Put {
                    key,
                    value,
                    uniques,
                } => {
                    let rk = (w.acct, w.region, key.clone());
                    let uniques = match uniques {
                        Some(list) => canonical(list),
                        // A plain insert keeps what the record owns at that point of the
                        // write: after a remove in the same write, nothing.
                        None => match last.iter().find(|(k, _)| *k == rk) {
                            Some((_, Some(row))) => row.uniques.clone(),
                            Some((_, None)) => Vec::new(),
                            None => self
                                .rows
                                .get(&rk)
                                .map(|r| r.uniques.clone())
                                .unwrap_or_default(),
                        },
                    };
                    (
                        key,
                        Some(Row {
                            value: value.clone(),
                            uniques,
                        }),
                    )
                }
                Rec::Remove { key } => (key, None),
            };
            let rk = (w.acct, w.region, key.clone());
            last.retain(|(k, _)| *k != rk);
            last.push((rk, new));
        }
        // A value claimed by two records of one write is refused before any I/O
        // (DuplicateInWrite); the workloads never write that.
        for (rk, new) in &last {
            let Some(row) = new else { continue };
            for u in &row.uniques {
                let Some(owner) = self.owners.get(u) else {
                    continue;
                };
                if owner == rk {
                    continue;
                }
                // Owned by a record outside the write, or by one of the write that keeps it.
                match last.iter().find(|(k, _)| k == owner) {
                    None => return Outcome::Violation,
                    Some((_, Some(other))) if other.uniques.contains(u) => {
                        return Outcome::Violation;
                    }
                    Some(_) => {}
                }
            }
        }
        for (rk, _) in &last {
            if let Some(old) = self.rows.remove(rk) {
                for u in &old.uniques {
                    if self.owners.get(u) == Some(rk) {
                        self.owners.remove(u);
                    }
                }
            }
        }
        for (rk, new) in last {
            if let Some(row) = new {
                for u in &row.uniques {
                    self.owners.insert(u.clone(), rk.clone());
                }
                self.rows.insert(rk, row);
            }
        }
        Outcome::Ok
    }

    /// The keys of account `acct`'s rows, in any region.
    fn keys_of(&self, acct: usize) -> BTreeSet<Vec<u8>> {
        self.rows
            .keys()
            .filter(|(a, _, _)| *a == acct)
            .map(|(_, _, k)| k.clone())
            .collect()
    }
}

/// Runs `w` against the store as account `id`, through `table`.
pub fn execute_commit(db: &Db, table: &Table<Raw>, id: AccountId, w: &Commit) -> Result<(), Error> {
    let mut tx = db.write_in(id, w.region)?;
    for rec in &w.recs {
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
        }
    }
    tx.commit()
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
    table: Table<Raw>,
    out: Findings,
}

/// Compares the store with the model: for every account with an id (`ids` by account
/// index; `None`: not created yet), `read` answers as that account; `get_in` of every key
/// (the model's and `probes.keys`) in every region, and `get` in the home region, return
/// the model's value, `PlacementDenied` outside the account's regions or `RegionDisabled`
/// in a disabled one; `scan` and `scan_prefix` of every prefix yield exactly the model's
/// rows of the account in its enabled regions, each tagged with the account, plus one
/// `RegionDisabled` item per disabled region of the account. Every owned and probed
/// unique value has the model's owner (account, region, key, record) in `find_unique` and
/// `is_taken`, within what `cat` allows. `scan_all` yields exactly the model's rows in
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
        table: model.table(),
        out: Findings::default(),
    };
    for (acct, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        c.account(acct, *id, probes, phase);
    }
    let values: BTreeSet<Claim> = model
        .owners
        .keys()
        .cloned()
        .chain(probes.values.iter().cloned())
        .collect();
    for (ns, value) in &values {
        phase(format!("find_unique {ns}/{value}"));
        c.value(ns, value);
    }
    phase("scan_all".to_owned());
    c.scan_all();
    c.out
}

impl Cmp<'_> {
    fn want(&self, acct: usize, region: &'static str, key: &[u8]) -> Want {
        if !self.model.accounts[acct].allowed.contains(&region) {
            Want::Denied
        } else if self.cat.is_disabled(region) {
            Want::Disabled
        } else {
            Want::Value(
                self.model
                    .rows
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
        let t = self.table;
        let home = self.model.accounts[acct].home;
        let mut keys = self.model.keys_of(acct);
        keys.extend(probes.keys.iter().cloned());
        for key in &keys {
            for &region in &self.model.regions {
                phase(format!("get a{acct} {region} {}", show(key)));
                // `get_in` in every region, and `get` in the home region too.
                let mut reads = vec![(format!("get_in {region}"), r.get_in(region, &t, key))];
                if region == home {
                    reads.push(("get".to_owned(), r.get(&t, key)));
                }
                for (how, got) in reads {
                    let want = self.want(acct, region, key);
                    self.point(
                        format!("{how} by a{acct} ({id}) of key {}", show(key)),
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
            phase(format!("scan a{acct} {}", show(prefix)));
            let rows = if prefix.is_empty() {
                r.scan(&t)
            } else {
                r.scan_prefix(&t, prefix)
            };
            let what = format!("scan_prefix {} by a{acct} ({id})", show(prefix));
            match rows {
                Ok(rows) => self.scan(acct, id, prefix, rows, &what),
                Err(e) => self.out.errors.push(format!("{what}: {e}")),
            }
        }
    }

    fn scan(
        &mut self,
        acct: usize,
        id: AccountId,
        prefix: &[u8],
        rows: regionkv::Rows<Raw>,
        what: &str,
    ) {
        let allowed = self.model.accounts[acct].allowed.clone();
        let mut seen: BTreeSet<RowKey> = BTreeSet::new();
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
                self.row(what, (acct, region, key), &value, &mut seen);
            }
        }
        self.unseen(what, &seen, |(a, _, key)| {
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

    /// One scanned row of account `rk.0` against the model: once, naming its writer, with
    /// the model's value.
    fn row(&mut self, what: &str, rk: RowKey, value: &[u8], seen: &mut BTreeSet<RowKey>) {
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
            match self.model.rows.get(&rk) {
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

    /// Every model row in an enabled region that `filter` selects must have been `seen`.
    fn unseen(&mut self, what: &str, seen: &BTreeSet<RowKey>, filter: impl Fn(&RowKey) -> bool) {
        for rk in self.model.rows.keys() {
            if filter(rk) && !self.cat.is_disabled(rk.1) && !seen.contains(rk) {
                self.out
                    .missing
                    .push(format!("{what}: no row a{} {} {}", rk.0, rk.1, show(&rk.2)));
            }
        }
    }

    fn value(&mut self, ns: &str, value: &str) {
        let db = self.db;
        let want = self.model.owners.get(&(ns.to_owned(), value.to_owned()));
        let hit = db.find_unique(&self.table, ns, value);
        let taken = db.is_taken(ns, value);
        let unsettled = self.cat.unsettled;
        let what = format!("find_unique {ns}/{value}");
        let out = &mut self.out;
        match want {
            Some((_, region, _)) if self.cat.is_disabled(region) => {
                match hit {
                    Err(Error::RegionDisabled(_)) => {}
                    Err(Error::RegionUnsettled(_)) if unsettled => {}
                    Ok(h) => out.wrong.push(format!(
                        "{what} owned in disabled {region}: {:?}",
                        h.map(|h| h.account())
                    )),
                    Err(e) => out
                        .errors
                        .push(format!("{what} owned in disabled {region}: {e}")),
                }
                match taken {
                    Ok(true) => {}
                    Err(Error::RegionUnsettled(_)) if unsettled => {}
                    Ok(false) => out.missing.push(format!(
                        "is_taken {ns}/{value} owned in disabled {region}: false"
                    )),
                    Err(e) => out.errors.push(format!(
                        "is_taken {ns}/{value} owned in disabled {region}: {e}"
                    )),
                }
            }
            None if unsettled => {
                // May be refused; must never name an owner the model does not know.
                match hit {
                    // An entry left in flight by the crash names the disabled region.
                    Ok(None) | Err(Error::RegionUnsettled(_)) | Err(Error::RegionDisabled(_)) => {}
                    Ok(Some(h)) => out
                        .wrong
                        .push(format!("{what}: owner {:?}, model none", h.account())),
                    Err(e) => out.errors.push(format!("{what}: {e}")),
                }
                match taken {
                    Ok(_) | Err(Error::RegionUnsettled(_)) => {}
                    Err(e) => out.errors.push(format!("is_taken {ns}/{value}: {e}")),
                }
            }
            None => {
                match hit {
                    Ok(None) => {}
                    Ok(Some(h)) => out.wrong.push(format!(
                        "{what}: owner {} {:?} {}, model none",
                        h.account(),
                        db.region_name(h.region()),
                        show(h.key())
                    )),
                    Err(e) => out.errors.push(format!("{what}: {e}")),
                }
                match taken {
                    Ok(false) => {}
                    Ok(true) => out
                        .wrong
                        .push(format!("is_taken {ns}/{value}: true, model none")),
                    Err(e) => out.errors.push(format!("is_taken {ns}/{value}: {e}")),
                }
            }
            Some(rk) => {
                let (acct, region, key) = rk;
                match hit {
                    Ok(Some(h)) => {
                        let got_acct = self.ids.iter().position(|i| *i == Some(h.account()));
                        let got_region = db.region_name(h.region());
                        let record = h.record().to_vec();
                        let row = &self.model.rows[rk];
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
                match taken {
                    Ok(true) => {}
                    Ok(false) => out.missing.push(format!(
                        "is_taken {ns}/{value}: false, model a{acct} {region} {}",
                        show(key)
                    )),
                    Err(e) => out.errors.push(format!("is_taken {ns}/{value}: {e}")),
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

    fn scan_all(&mut self) {
        let what = "scan_all";
        let rows = match self.db.scan_all(&self.table) {
            Ok(rows) => rows,
            Err(e) => {
                self.out.errors.push(format!("{what}: {e}"));
                return;
            }
        };
        let mut seen: BTreeSet<RowKey> = BTreeSet::new();
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
                self.row(what, (acct, region, key), &value, &mut seen);
            }
        }
        self.unseen(what, &seen, |_| true);
    }
}
