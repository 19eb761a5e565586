//! `Db::audit`: an offline-style consistency check of every partition against the
//! invariants of docs/design.md (I1 uniqueness, I2 no orphans, I4 placement), the per-account
//! counters, the checksum of every stored value, and leftovers of the reservation protocol.
//!
//! Audit reads one snapshot of the global partition and one of each open region, after a
//! checkpoint. It never writes anything but that checkpoint and never stops at the first
//! problem: every row it can read is checked and every problem becomes a [`Finding`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableHandle};

use crate::account::Account;
use crate::codec::envelope::{self, EnvelopeError};
use crate::db::Db;
use crate::error::Result;
use crate::partition::At;
use crate::partition::Partition;
use crate::partition::global::{CatalogEntry, split_txn_key, split_unique_key, unique_key};
use crate::partition::region::{Marker, Owned, data_key, decode_owned, owned_key, split_owned_key};
use crate::partition::set::{Region, RegionSlot};
use crate::reservation::state::{Entry, Loc, State};
use crate::schema::*;
use crate::types::{AccountId, RegionId, TxnId};

type Bytes = &'static [u8];

/// What kind of problem a [`Finding`] reports, and which row it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FindingKind {
    /// I1: a unique value is owned by two records (listed in the `_owned` rows of both).
    /// Names the `_owned` row of a record that owns the value without holding its global
    /// entry.
    DuplicateOwner,
    /// I2: a committed unique entry whose record is missing, lives in an unknown region, or
    /// does not list the value among the values it owns. Names the `_unique` row of the
    /// global partition (key `[ns_len][ns][digest]`).
    OrphanEntry,
    /// I2: a record lists a unique value it owns (in its `_owned` row) but the global entry
    /// of that value is missing, a tombstone, or points to another record that does not own
    /// it. Names the `_owned` row.
    OrphanRecord,
    /// I4: a data row in a region its account's placement policy does not allow. Names the
    /// data row (`t/<table>`, key = account id big-endian ++ user key).
    Placement,
    /// A data row (or a committed unique entry) of an account that does not exist. Names
    /// that row.
    UnknownAccount,
    /// A per-account usage counter (`_usage`, key = account id big-endian) that differs
    /// from the rows the account holds in that region.
    Counter,
    /// A stored value whose envelope (version, codec byte, CRC32) is damaged. Names the
    /// data row.
    Checksum,
    /// A leftover of the reservation protocol after a checkpoint: an applied marker
    /// (`_markers`, key = TxnId big-endian), an in-flight row (`_inflight`) or a Pending or
    /// Releasing entry (`_unique`).
    InFlight,
    /// An internal row that cannot be decoded (unique entry, owned values, marker, account,
    /// catalog row, malformed key) or an internal table of the wrong type.
    Undecodable,
    /// A value a record owns whose stored digest is not the digest of its plaintext under
    /// the store's digest key (the key or the row was changed): uniqueness of that value
    /// is not enforced. Names the `_owned` row.
    DigestMismatch,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingKind::DuplicateOwner => "duplicate owner",
            FindingKind::OrphanEntry => "orphan entry",
            FindingKind::OrphanRecord => "orphan record",
            FindingKind::Placement => "placement",
            FindingKind::UnknownAccount => "unknown account",
            FindingKind::Counter => "counter",
            FindingKind::Checksum => "checksum",
            FindingKind::InFlight => "in flight",
            FindingKind::Undecodable => "undecodable",
            FindingKind::DigestMismatch => "digest mismatch",
        })
    }
}

/// One problem found by [`Db::audit`]: what, and where (partition, table, raw key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// `global` or the region's name.
    pub partition: String,
    /// The redb table of the row (`_unique`, `_owned`, `t/<table>`, ...), if the finding
    /// concerns one table.
    pub table: Option<String>,
    /// The raw key of the row in that table, if the finding concerns one row. Integer keys
    /// (`_accounts`, `_usage`, `_markers`) are given big-endian.
    pub key: Option<Vec<u8>>,
    /// A human-readable explanation. Never contains a plaintext unique value.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.kind, self.partition)?;
        if let Some(t) = &self.table {
            write!(f, "/{t}")?;
        }
        if let Some(k) = &self.key {
            write!(f, " key {}", show(k))?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The result of [`Db::audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    findings: Vec<Finding>,
    notes: Vec<String>,
    records: u64,
    entries: u64,
    unchecked: u64,
}

impl AuditReport {
    /// Whether no problem was found. Notes (such as disabled regions) do not count.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Every problem found, in the order found.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The findings of one kind.
    pub fn findings_of(&self, kind: FindingKind) -> impl Iterator<Item = &Finding> + '_ {
        self.findings.iter().filter(move |f| f.kind == kind)
    }

    /// Things the audit could not check and why (disabled regions); not findings.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Data rows checked (placement, checksum, counters), over every open region.
    pub fn records_checked(&self) -> u64 {
        self.records
    }

    /// Global unique entries checked.
    pub fn unique_entries_checked(&self) -> u64 {
        self.entries
    }

    /// Unique entries not checked because the region they name (or their whole txn's
    /// region) is disabled.
    pub fn unchecked(&self) -> u64 {
        self.unchecked
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            write!(f, "audit clean")?;
        } else {
            write!(f, "audit found {} problem(s)", self.findings.len())?;
        }
        write!(
            f,
            ": {} records and {} unique entries checked, {} unchecked (disabled regions)",
            self.records, self.entries, self.unchecked
        )?;
        for x in &self.findings {
            write!(f, "\n  - {x}")?;
        }
        for n in &self.notes {
            write!(f, "\n  note: {n}")?;
        }
        Ok(())
    }
}

/// Bytes as printable ASCII with escapes.
fn show(k: &[u8]) -> String {
    format!("\"{}\"", k.escape_ascii())
}

/// `account #N, key "..."` for a data key.
fn show_data_key(k: &[u8]) -> String {
    match k.get(..8) {
        Some(a) => {
            let a = u64::from_be_bytes(a.try_into().unwrap_or([0; 8]));
            format!("account #{a}, key {}", show(&k[8..]))
        }
        None => format!("key {}", show(k)),
    }
}

fn show_loc(loc: &Loc, region: &str) -> String {
    format!(
        "region `{region}`, table `{}`, account #{}, key {}",
        loc.table,
        loc.account,
        show(&loc.key)
    )
}

fn hex16(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a stored value's envelope is rejected, if it is. Either codec (raw or rkyv) is
/// accepted: the table's value type is not known here, so the payload itself is not
/// validated, only its header and checksum.
fn envelope_problem(v: &[u8], table: &str, data_key: &[u8]) -> Option<String> {
    let codec = match v.get(1) {
        Some(&c) if c <= 1 => c,
        _ => 0,
    };
    let table = table
        .strip_prefix(crate::schema::USER_TABLE_PREFIX)
        .unwrap_or(table);
    let binding = envelope::Binding {
        table,
        key: data_key,
    };
    match envelope::unseal(v, codec, &binding) {
        Ok(_) => None,
        Err(EnvelopeError::Codec { found, .. }) => Some(format!("unknown codec byte {found}")),
        Err(e) => Some(e.to_string()),
    }
}

/// Whether `e` is the global entry of a value owned by the record at `loc`: it points at
/// it (settled or in flight), or it is a transfer in flight away from it.
fn points_to(e: &Entry, loc: &Loc) -> bool {
    match e.state {
        State::Tombstone => false,
        State::Committed | State::Releasing => e.loc == *loc,
        State::Pending => {
            e.loc == *loc
                || e.prev
                    .as_ref()
                    .is_some_and(|p| p.state == State::Committed && p.loc == *loc)
        }
    }
}

/// Whether the placement policy allows rows of `a` in `region`.
fn placement_ok(a: &Account, region: RegionId) -> bool {
    a.allows(region)
}

/// A region snapshot: its `_owned` table, and user tables opened on first use.
struct Snap {
    name: String,
    region: Arc<Region>,
    txn: ReadTransaction,
    owned: Option<ReadOnlyTable<Bytes, Bytes>>,
    /// user table name (without prefix) -> table, `None` if it does not exist.
    data: HashMap<String, Option<ReadOnlyTable<Bytes, Bytes>>>,
}

impl Snap {
    fn data_row_exists(&mut self, table: &str, dkey: &[u8]) -> Result<bool> {
        if !self.data.contains_key(table) {
            let name = user_table_name(table);
            let t = match self
                .txn
                .open_table(TableDefinition::<Bytes, Bytes>::new(&name))
            {
                Ok(t) => Some(t),
                // Missing, or of the wrong type (reported by the region scan): no such row.
                Err(redb::TableError::Storage(e)) => return Err(self.region.part.err(e)),
                Err(_) => None,
            };
            self.data.insert(table.to_owned(), t);
        }
        match self.data.get(table) {
            Some(Some(t)) => Ok(t.get(dkey).at(&self.region.part)?.is_some()),
            _ => Ok(false),
        }
    }

    /// The values the record at `okey` owns: `Ok(None)` if it has no owned row, `Err` only
    /// for storage errors; an undecodable row reads as `Some(None)`.
    fn owned_list(&self, okey: &[u8]) -> Result<Option<Option<Vec<Owned>>>> {
        let Some(t) = &self.owned else {
            return Ok(None);
        };
        Ok(t.get(okey)
            .at(&self.region.part)?
            .map(|g| decode_owned(g.value())))
    }
}

/// An `_owned` row of a value whose global entry does not point back to it.
struct Suspect {
    region: String,
    okey: Vec<u8>,
    ns: String,
    digest: [u8; 16],
    why: String,
}

struct Auditor {
    report: AuditReport,
}

impl Auditor {
    fn find(
        &mut self,
        kind: FindingKind,
        partition: &str,
        table: Option<&str>,
        key: Option<&[u8]>,
        detail: impl Into<String>,
    ) {
        self.report.findings.push(Finding {
            kind,
            partition: partition.to_owned(),
            table: table.map(str::to_owned),
            key: key.map(<[u8]>::to_vec),
            detail: detail.into(),
        });
    }

    /// Opens an internal table: `None` if it does not exist; a table of the wrong type is
    /// a finding (and reads as absent).
    fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        part: &Partition,
        txn: &ReadTransaction,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Option<ReadOnlyTable<K, V>>> {
        match crate::partition::table_if_exists(txn, def) {
            Ok(t) => Ok(t),
            Err(redb::TableError::Storage(e)) => Err(part.err(e)),
            Err(e) => {
                self.find(
                    FindingKind::Undecodable,
                    &part.name,
                    Some(def.name()),
                    None,
                    format!("table cannot be opened: {e}"),
                );
                Ok(None)
            }
        }
    }
}

impl Db {
    /// Checks the whole store for consistency and returns what it found.
    ///
    /// Runs a checkpoint first (so the applied markers of confirmed writes are collected),
    /// then reads one snapshot of the global partition and one of each open region, and
    /// checks:
    ///
    /// - **I1 uniqueness**: no unique value is owned by two records;
    /// - **I2 no orphans**: every committed unique entry points to an existing record in
    ///   the region it names, and that record lists the value among those it owns; every
    ///   value a record owns has its committed entry pointing back to it;
    /// - **placement (I4)**: every data row belongs to a known account whose placement
    ///   policy allows the region the row is in;
    /// - **counters**: each account's usage row in each region (records, bytes) equals the
    ///   count and total stored size of its rows there;
    /// - **checksums**: every stored value has a valid envelope (version, codec, CRC32);
    /// - **leftovers**: no applied marker, in-flight row, Pending or Releasing entry is left
    ///   after the checkpoint;
    /// - every internal row decodes.
    ///
    /// Entries that point into a disabled region, and the rows of disabled regions, cannot
    /// be checked: they are counted in [`AuditReport::unchecked`] and listed in
    /// [`AuditReport::notes`], not reported as findings.
    ///
    /// Run it on a quiescent store (no writes in flight): the snapshots of different
    /// partitions are taken one after the other, so a write running concurrently can show
    /// up as a transient finding (an in-flight entry, or an entry and a record seen at
    /// different moments). Cost: one pass over every row of every open partition, plus
    /// two point reads per unique value.
    ///
    /// ```
    /// use regionkv::{Db, NewAccount, Raw, Table, Unique};
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// let acme = db.create_account(NewAccount::new("acme", "eu").allow("us"))?;
    /// const USERS: Table<Raw> = Table::new("users");
    /// let mut w = db.write(acme)?;
    /// w.insert_unique(&USERS, b"u1", b"ann", &[Unique::new("email", "ann@example.com")])?;
    /// w.commit()?;
    ///
    /// let report = db.audit()?;
    /// assert!(report.is_clean(), "{report}");
    /// assert_eq!(report.records_checked(), 1);
    /// assert_eq!(report.unique_entries_checked(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`](crate::Error::Closed); storage errors from the checkpoint or while
    /// reading (including [`Error::Corrupt`](crate::Error::Corrupt) when redb itself finds
    /// a damaged page). Problems in the data are findings, not errors.
    pub fn audit(&self) -> Result<AuditReport> {
        self.checkpoint()?;
        let inner = &*self.inner;

        // The catalog as this process sees it.
        let mut names: HashMap<u16, String> = HashMap::new();
        let mut open: Vec<Arc<Region>> = Vec::new();
        let mut disabled: Vec<(u16, String)> = Vec::new();
        {
            let set = inner.regions.read();
            for (i, slot) in set.by_id.iter().enumerate() {
                let Some((name, slot)) = slot else { continue };
                names.insert(i as u16, name.clone());
                match slot {
                    RegionSlot::Open(r) => open.push(r.clone()),
                    RegionSlot::Disabled => disabled.push((i as u16, name.clone())),
                }
            }
        }
        let region_name = |id: u16| -> String {
            names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| RegionId(id).to_string())
        };

        let mut a = Auditor {
            report: AuditReport::default(),
        };
        for (_, name) in &disabled {
            a.report.notes.push(format!(
                "region `{name}` is disabled: its rows and the unique entries that point into \
                 it are not checked"
            ));
        }

        // Snapshots: the global partition, then every open region.
        let global = &inner.global;
        let gtxn = global.begin_read()?;
        let mut snaps: HashMap<u16, Snap> = HashMap::new();
        for r in &open {
            let txn = r.part.begin_read()?;
            let owned = a.open(&r.part, &txn, OWNED)?;
            snaps.insert(
                r.id.0,
                Snap {
                    name: r.part.name.clone(),
                    region: r.clone(),
                    txn,
                    owned,
                    data: HashMap::new(),
                },
            );
        }

        // ---- global: accounts and catalog ----
        let mut accounts: HashMap<u64, Account> = HashMap::new();
        if let Some(t) = a.open(global, &gtxn, ACCOUNTS)? {
            for row in t.iter().at(global)? {
                let (k, v) = row.at(global)?;
                let id = k.value();
                match Account::decode(AccountId(id), v.value()) {
                    Some(acc) => {
                        accounts.insert(id, acc);
                    }
                    None => a.find(
                        FindingKind::Undecodable,
                        &global.name,
                        Some(ACCOUNTS.name()),
                        Some(&id.to_be_bytes()),
                        format!("account #{id}: row undecodable"),
                    ),
                }
            }
        }
        if let Some(t) = a.open(global, &gtxn, REGIONS)? {
            for row in t.iter().at(global)? {
                let (k, v) = row.at(global)?;
                if CatalogEntry::decode(v.value()).is_none() {
                    a.find(
                        FindingKind::Undecodable,
                        &global.name,
                        Some(REGIONS.name()),
                        Some(k.value().as_bytes()),
                        format!("region catalog row `{}` undecodable", k.value()),
                    );
                }
            }
        }
        let unique = a.open(global, &gtxn, UNIQUE)?;
        let get_entry = |k: &[u8]| -> Result<Option<Option<Entry>>> {
            match &unique {
                None => Ok(None),
                Some(t) => Ok(t.get(k).at(global)?.map(|g| Entry::decode(g.value()))),
            }
        };

        // ---- regions: data rows, counters, owned values, markers ----
        let mut suspects: HashMap<Vec<u8>, Vec<Suspect>> = HashMap::new();
        let mut ids: Vec<u16> = snaps.keys().copied().collect();
        ids.sort_unstable();
        for &rid in &ids {
            let (part_name, region) = {
                let s = &snaps[&rid];
                (s.name.clone(), s.region.clone())
            };
            let part = &region.part;
            let txn = &snaps[&rid].txn;

            // Data rows of every user table: placement, checksum, counters.
            let mut counted: HashMap<u64, (u64, u64)> = HashMap::new();
            let tables: Vec<String> = txn
                .list_tables()
                .at(part)?
                .map(|h| h.name().to_owned())
                .filter(|n| n.starts_with(USER_TABLE_PREFIX))
                .collect();
            for tname in &tables {
                let Some(t) = a.open(part, txn, TableDefinition::<Bytes, Bytes>::new(tname))?
                else {
                    continue;
                };
                for row in t.iter().at(part)? {
                    let (k, v) = row.at(part)?;
                    let (key, value) = (k.value(), v.value());
                    a.report.records += 1;
                    let Some(acct) = key
                        .get(..8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                    else {
                        a.find(
                            FindingKind::Undecodable,
                            &part_name,
                            Some(tname),
                            Some(key),
                            "data key shorter than its 8-byte account prefix",
                        );
                        continue;
                    };
                    let c = counted.entry(acct).or_default();
                    c.0 += 1;
                    c.1 += value.len() as u64;
                    match accounts.get(&acct) {
                        None => a.find(
                            FindingKind::UnknownAccount,
                            &part_name,
                            Some(tname),
                            Some(key),
                            format!("{}: no such account", show_data_key(key)),
                        ),
                        Some(acc) if !placement_ok(acc, RegionId(rid)) => a.find(
                            FindingKind::Placement,
                            &part_name,
                            Some(tname),
                            Some(key),
                            format!(
                                "{}: account `{}` may not store data in region `{part_name}`",
                                show_data_key(key),
                                acc.name()
                            ),
                        ),
                        Some(_) => {}
                    }
                    if let Some(why) = envelope_problem(value, tname, key) {
                        a.find(
                            FindingKind::Checksum,
                            &part_name,
                            Some(tname),
                            Some(key),
                            format!("{}: {why}", show_data_key(key)),
                        );
                    }
                }
            }

            // Usage counters against the rows.
            if let Some(t) = a.open(part, txn, USAGE)? {
                for row in t.iter().at(part)? {
                    let (k, v) = row.at(part)?;
                    let acct = k.value();
                    let stored = v.value();
                    let actual = counted.remove(&acct).unwrap_or((0, 0));
                    if stored != actual {
                        a.find(
                            FindingKind::Counter,
                            &part_name,
                            Some(USAGE.name()),
                            Some(&acct.to_be_bytes()),
                            format!(
                                "account #{acct}: usage says {} records / {} bytes, rows hold \
                                 {} / {}",
                                stored.0, stored.1, actual.0, actual.1
                            ),
                        );
                    }
                }
            }
            let mut missing: Vec<(u64, (u64, u64))> = counted.into_iter().collect();
            missing.sort_unstable();
            for (acct, actual) in missing {
                a.find(
                    FindingKind::Counter,
                    &part_name,
                    Some(USAGE.name()),
                    Some(&acct.to_be_bytes()),
                    format!(
                        "account #{acct}: no usage row, rows hold {} records / {} bytes",
                        actual.0, actual.1
                    ),
                );
            }

            // Leftover applied markers.
            if let Some(t) = a.open(part, txn, MARKERS)? {
                for row in t.iter().at(part)? {
                    let (k, v) = row.at(part)?;
                    let txn_id = TxnId::from_u128(k.value());
                    let key = k.value().to_be_bytes();
                    match Marker::decode(v.value()) {
                        Some(m) => a.find(
                            FindingKind::InFlight,
                            &part_name,
                            Some(MARKERS.name()),
                            Some(&key),
                            format!(
                                "applied marker of txn {txn_id} (account #{}, {} claims, {} \
                                 releases) left after a checkpoint",
                                m.account,
                                m.claims.len(),
                                m.releases.len()
                            ),
                        ),
                        None => a.find(
                            FindingKind::Undecodable,
                            &part_name,
                            Some(MARKERS.name()),
                            Some(&key),
                            format!("applied marker of txn {txn_id} undecodable"),
                        ),
                    }
                }
            }

            // Owned values: each must have its global entry pointing back (I1, I2).
            if let Some(t) = &snaps[&rid].owned {
                for row in t.iter().at(part)? {
                    let (k, v) = row.at(part)?;
                    let okey = k.value();
                    let Some((table, account, ukey_user)) = split_owned_key(okey) else {
                        a.find(
                            FindingKind::Undecodable,
                            &part_name,
                            Some(OWNED.name()),
                            Some(okey),
                            "owned-values key malformed",
                        );
                        continue;
                    };
                    let Some(list) = decode_owned(v.value()) else {
                        a.find(
                            FindingKind::Undecodable,
                            &part_name,
                            Some(OWNED.name()),
                            Some(okey),
                            format!(
                                "owned values of table `{table}`, account #{account}, key {} \
                                 undecodable",
                                show(ukey_user)
                            ),
                        );
                        continue;
                    };
                    let here = Loc {
                        account,
                        region: rid,
                        table: table.to_owned(),
                        key: ukey_user.to_vec(),
                    };
                    for o in &list {
                        if inner.digest(&o.ns, &o.value) != o.digest {
                            a.find(
                                FindingKind::DigestMismatch,
                                &part_name,
                                Some(OWNED.name()),
                                Some(okey),
                                format!(
                                    "a value in namespace `{}` does not hash to its stored digest",
                                    o.ns
                                ),
                            );
                        }
                        let ukey = unique_key(&o.ns, &o.digest);
                        let entry = match get_entry(&ukey)? {
                            // Reported by the scan of the unique index.
                            Some(None) => continue,
                            Some(Some(e)) => Some(e),
                            None => None,
                        };
                        let why = match &entry {
                            Some(e) if points_to(e, &here) => continue,
                            None => "has no global entry".to_owned(),
                            Some(e) if e.state == State::Tombstone => {
                                format!("has a tombstone (txn {}) as its global entry", e.txn)
                            }
                            Some(e) => {
                                // The entry names another record: does that one own it too?
                                let other = &e.loc;
                                let also = match snaps.get(&other.region) {
                                    Some(s) => s
                                        .owned_list(&owned_key(
                                            &other.table,
                                            other.account,
                                            &other.key,
                                        ))?
                                        .flatten(),
                                    None => None,
                                };
                                let elsewhere = show_loc(other, &region_name(other.region));
                                if also.is_some_and(|l| {
                                    l.iter().any(|x| x.ns == o.ns && x.digest == o.digest)
                                }) {
                                    a.find(
                                        FindingKind::DuplicateOwner,
                                        &part_name,
                                        Some(OWNED.name()),
                                        Some(okey),
                                        format!(
                                            "value in namespace `{}` (digest {}) owned by table \
                                             `{table}`, account #{account}, key {} and also by \
                                             the record its global entry names ({elsewhere})",
                                            o.ns,
                                            hex16(&o.digest),
                                            show(ukey_user)
                                        ),
                                    );
                                    continue;
                                }
                                format!("has a global entry naming another record ({elsewhere})")
                            }
                        };
                        suspects.entry(ukey).or_default().push(Suspect {
                            region: part_name.clone(),
                            okey: okey.to_vec(),
                            ns: o.ns.clone(),
                            digest: o.digest,
                            why: format!(
                                "value in namespace `{}` (digest {}) owned by table `{table}`, \
                                 account #{account}, key {} {why}",
                                o.ns,
                                hex16(&o.digest),
                                show(ukey_user)
                            ),
                        });
                    }
                }
            }
        }
        // Owned values without a proper entry: owned twice (I1) or orphans (I2).
        let mut suspects: Vec<(Vec<u8>, Vec<Suspect>)> = suspects.into_iter().collect();
        suspects.sort_by(|x, y| x.0.cmp(&y.0));
        for (_, group) in suspects {
            if group.len() == 1 {
                let s = &group[0];
                a.find(
                    FindingKind::OrphanRecord,
                    &s.region,
                    Some(OWNED.name()),
                    Some(&s.okey),
                    s.why.clone(),
                );
                continue;
            }
            for s in &group {
                a.find(
                    FindingKind::DuplicateOwner,
                    &s.region,
                    Some(OWNED.name()),
                    Some(&s.okey),
                    format!(
                        "{}; {} records own this value (namespace `{}`, digest {})",
                        s.why,
                        group.len(),
                        s.ns,
                        hex16(&s.digest)
                    ),
                );
            }
        }

        // ---- global: the unique index ----
        let disabled_ids: Vec<u16> = disabled.iter().map(|(id, _)| *id).collect();
        let mut in_flight: HashMap<Vec<u8>, Entry> = HashMap::new();
        if let Some(t) = &unique {
            for row in t.iter().at(global)? {
                let (k, v) = row.at(global)?;
                let ukey = k.value();
                let Some((ns, digest)) = split_unique_key(ukey) else {
                    a.find(
                        FindingKind::Undecodable,
                        &global.name,
                        Some(UNIQUE.name()),
                        Some(ukey),
                        "unique key malformed",
                    );
                    continue;
                };
                let what = format!("value in namespace `{ns}` (digest {})", hex16(&digest));
                let Some(e) = Entry::decode(v.value()) else {
                    a.find(
                        FindingKind::Undecodable,
                        &global.name,
                        Some(UNIQUE.name()),
                        Some(ukey),
                        format!("entry of {what} undecodable"),
                    );
                    continue;
                };
                if e.state != State::Tombstone && disabled_ids.contains(&e.loc.region) {
                    a.report.unchecked += 1;
                    if e.state.in_flight() {
                        in_flight.insert(ukey.to_vec(), e);
                    }
                    continue;
                }
                a.report.entries += 1;
                let loc = &e.loc;
                match e.state {
                    State::Tombstone => {}
                    State::Pending | State::Releasing => {
                        a.find(
                            FindingKind::InFlight,
                            &global.name,
                            Some(UNIQUE.name()),
                            Some(ukey),
                            format!(
                                "{what} is {} by txn {} for {} after a checkpoint",
                                if e.state == State::Pending {
                                    "being claimed"
                                } else {
                                    "being released"
                                },
                                e.txn,
                                show_loc(loc, &region_name(loc.region))
                            ),
                        );
                        in_flight.insert(ukey.to_vec(), e);
                    }
                    State::Committed => {
                        let rname = region_name(loc.region);
                        let orphan = |a: &mut Auditor, why: &str| {
                            a.find(
                                FindingKind::OrphanEntry,
                                &global.name,
                                Some(UNIQUE.name()),
                                Some(ukey),
                                format!(
                                    "committed entry of {what} (txn {}) names {}: {why}",
                                    e.txn,
                                    show_loc(loc, &rname)
                                ),
                            )
                        };
                        if !accounts.contains_key(&loc.account) {
                            a.find(
                                FindingKind::UnknownAccount,
                                &global.name,
                                Some(UNIQUE.name()),
                                Some(ukey),
                                format!(
                                    "committed entry of {what} names account #{}, which does not \
                                     exist",
                                    loc.account
                                ),
                            );
                        }
                        let Some(s) = snaps.get_mut(&loc.region) else {
                            orphan(&mut a, "no such region");
                            continue;
                        };
                        if !s.data_row_exists(&loc.table, &data_key(loc.account, &loc.key))? {
                            orphan(&mut a, "the record does not exist");
                            continue;
                        }
                        match s.owned_list(&owned_key(&loc.table, loc.account, &loc.key))? {
                            // Reported by the region scan.
                            Some(None) => {}
                            Some(Some(l)) if l.iter().any(|o| o.ns == ns && o.digest == digest) => {
                            }
                            _ => orphan(&mut a, "the record does not own this value"),
                        }
                    }
                }
            }
        }

        // ---- global: in-flight and tombstone rows ----
        if let Some(t) = a.open(global, &gtxn, INFLIGHT)? {
            for row in t.iter().at(global)? {
                let (k, _) = row.at(global)?;
                let key = k.value();
                let Some((txn, ukey)) = split_txn_key(key) else {
                    a.find(
                        FindingKind::Undecodable,
                        &global.name,
                        Some(INFLIGHT.name()),
                        Some(key),
                        "in-flight key malformed",
                    );
                    continue;
                };
                let txn = TxnId::from_u128(txn);
                let held = in_flight
                    .get(ukey)
                    .filter(|e| e.txn == txn && e.state.in_flight());
                if let Some(e) = held
                    && disabled_ids.contains(&e.loc.region)
                {
                    // Recovery leaves these until the region returns.
                    a.report.notes.push(format!(
                        "txn {txn} is in flight in disabled region `{}`; settled when it is \
                         enabled again",
                        region_name(e.loc.region)
                    ));
                    continue;
                }
                a.find(
                    FindingKind::InFlight,
                    &global.name,
                    Some(INFLIGHT.name()),
                    Some(key),
                    format!("txn {txn} still has an in-flight row after a checkpoint"),
                );
            }
        }
        if let Some(t) = a.open(global, &gtxn, TOMBSTONES)? {
            for row in t.iter().at(global)? {
                let (k, _) = row.at(global)?;
                if split_txn_key(k.value()).is_none() {
                    a.find(
                        FindingKind::Undecodable,
                        &global.name,
                        Some(TOMBSTONES.name()),
                        Some(k.value()),
                        "tombstone key malformed",
                    );
                }
            }
        }
        Ok(a.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::envelope::seal;
    use crate::codec::value::Raw;
    use crate::partition::region::MarkerClaim;
    use crate::{NewAccount, Table, Unique};

    #[test]
    fn envelope_problems() {
        let dkey = b"\0\0\0\0\0\0\0\x01k";
        let at = envelope::Binding {
            table: "t",
            key: dkey,
        };
        let problem = |v: &[u8]| envelope_problem(v, "t/t", dkey);
        let good = seal::<Raw>(&at, b"hello");
        assert_eq!(problem(&good), None);
        let mut rkyv_codec = good.clone();
        rkyv_codec[1] = 1; // the CRC does not cover the codec byte: codec 1 is accepted
        assert_eq!(problem(&rkyv_codec), None);
        let mut bad = good.clone();
        bad[1] = 9;
        assert!(problem(&bad).unwrap().contains("unknown codec byte 9"));
        let mut bad = good.clone();
        bad[7] ^= 1;
        assert!(problem(&bad).unwrap().contains("checksum"));
        assert!(problem(&good[..3]).is_some());
        assert!(problem(&[]).is_some());
        // The same bytes under another row.
        assert!(envelope_problem(&good, "t/t", b"\0\0\0\0\0\0\0\x02k").is_some());
        let mut bad = good;
        bad[0] = 2;
        assert!(problem(&bad).unwrap().contains("version"));
    }

    #[test]
    fn transfer_in_flight_points_to_its_source() {
        let t = |seq| TxnId { epoch: 1, seq };
        let loc = |key: &[u8]| Loc {
            account: 1,
            region: 1,
            table: "users".into(),
            key: key.to_vec(),
        };
        let c = Entry::committed(t(1), loc(b"a"));
        assert!(points_to(&c, &loc(b"a")));
        assert!(!points_to(&c, &loc(b"b")));
        let moving = crate::reservation::state::claim(Some(&c), t(2), loc(b"b"), true).unwrap();
        assert!(points_to(&moving, &loc(b"a")) && points_to(&moving, &loc(b"b")));
        assert!(!points_to(&Entry::tombstone(t(3)), &loc(b"a")));
    }

    /// A marker no checkpoint covers (its txn was never confirmed in this process) is a
    /// leftover. Written through the open store: a raw marker written while the store is
    /// closed is replayed and deleted by recovery at open.
    #[test]
    fn leftover_marker_is_in_flight() {
        const USERS: Table<Raw> = Table::new("users");
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder().region("us").open(dir.path()).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        let mut w = db.write(a).unwrap();
        w.insert_unique(&USERS, b"k", b"v", &[Unique::new("email", "a@b")])
            .unwrap();
        w.commit().unwrap();
        assert!(db.audit().unwrap().is_clean());

        let region = db.inner.region(db.region_id("us").unwrap()).unwrap();
        let txn = TxnId { epoch: 99, seq: 7 };
        let marker = Marker {
            account: a.0,
            claims: vec![MarkerClaim {
                ns: "email".into(),
                digest: db.inner.digest("email", b"a@b"),
                table: "users".into(),
                key: b"k".to_vec(),
            }],
            releases: vec![],
        };
        let w = region.part.begin_write().unwrap();
        {
            let mut t = w.open_table(MARKERS).unwrap();
            t.insert(txn.to_u128(), marker.encode().as_slice()).unwrap();
            t.insert(TxnId { epoch: 99, seq: 8 }.to_u128(), b"junk".as_slice())
                .unwrap();
        }
        region.part.commit(w).unwrap();

        let report = db.audit().unwrap();
        let kinds: Vec<_> = report.findings().iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FindingKind::InFlight, FindingKind::Undecodable],
            "{report}"
        );
        let f = &report.findings()[0];
        assert_eq!(f.partition, "us");
        assert_eq!(f.table.as_deref(), Some("_markers"));
        assert_eq!(
            f.key.as_deref(),
            Some(txn.to_u128().to_be_bytes().as_slice())
        );
        assert!(f.detail.contains("99.7"), "{f}");
    }
}
