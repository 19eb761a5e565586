//! `Db::audit`: an offline-style consistency check of every partition against the
//! invariants of docs/design.md (I1 uniqueness, I2 no orphans, I4 placement), the per-account
//! counters, the checksum of every stored value, and leftovers of the reservation protocol.
//!
//! Audit reads one snapshot of the global partition and one of each open region, after a
//! checkpoint. It never writes anything but that checkpoint and never stops at the first
//! problem: every row it can read is checked and every problem becomes a [`Finding`].
//!
//! The checks are split by partition: [`global`] (catalogs, and the unique index from the
//! entry side), [`region`] (data rows, counters, markers, and owned values from the record
//! side), over the reads of the unique index in [`index`] and the shared row loop in [`scan`].

mod global;
mod index;
mod region;
mod scan;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::account::Account;
use crate::db::{Db, Inner};
use crate::error::Result;
use crate::partition::Partition;
use crate::partition::contain::{Blame, contain_any};
use crate::partition::set::{Region, RegionSlot};
use crate::reservation::state::Loc;
use crate::types::RegionId;

use index::Index;
use scan::Auditor;

/// The key and value type of the byte-keyed tables the audit reads.
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
    /// A data row whose schema does not read as its table's: its schema version is not
    /// recorded in `_schemas`, its codec is not the one recorded, or it is older than the
    /// newest recorded version (`Db::migrate` rewrites it); or a table with rows and no
    /// schema row at all. Names the data row (or the table).
    Schema,
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
            FindingKind::Schema => "schema",
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

/// `region `…`, table `…`, account #N, key "..."` for the record an entry names.
fn show_loc(loc: &Loc, region: &str) -> String {
    format!(
        "region `{region}`, table `{}`, account #{}, key {}",
        loc.table,
        loc.account,
        show(&loc.key)
    )
}

/// A 16-byte digest in lowercase hex.
fn hex16(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The regions as this process sees them (its region set, not the stored catalog).
struct Regions {
    /// Every configured region, open or disabled, by id.
    names: HashMap<u16, String>,
    /// The open regions, by id.
    open: Vec<Arc<Region>>,
    /// The ids of the disabled regions, with their names, by id.
    disabled: Vec<(u16, String)>,
}

impl Regions {
    /// Reads the region set of `inner`.
    fn of(inner: &Inner) -> Regions {
        let mut regions = Regions {
            names: HashMap::new(),
            open: Vec::new(),
            disabled: Vec::new(),
        };
        let set = inner.regions.read();
        for (i, slot) in set.by_id.iter().enumerate() {
            let Some((name, slot)) = slot else { continue };
            regions.names.insert(i as u16, name.clone());
            match slot {
                RegionSlot::Open(r) => regions.open.push(r.clone()),
                RegionSlot::Disabled => regions.disabled.push((i as u16, name.clone())),
            }
        }
        regions
    }

    /// The name of region `id`, or its number if this process does not know it.
    fn name(&self, id: u16) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| RegionId(id).to_string())
    }

    /// Whether region `id` is disabled (its rows, and the entries naming it, are unchecked).
    fn is_disabled(&self, id: u16) -> bool {
        self.disabled.iter().any(|(d, _)| *d == id)
    }
}

/// What the checks after the global catalog phase read: the store, its regions, the
/// accounts and the unique index of the global snapshot.
struct Ctx<'a> {
    /// The store (its global partition and digest key).
    inner: &'a Inner,
    /// The regions as this process sees them.
    regions: Regions,
    /// Every account that decodes, by id.
    accounts: HashMap<u64, Account>,
    /// The unique index of the global snapshot.
    index: Index<'a>,
}

impl Ctx<'_> {
    /// The global partition.
    fn global(&self) -> &Partition {
        &self.inner.global
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
        let regions = Regions::of(inner);
        // The checks read the global index and the regions interleaved: a panic of redb on a
        // damaged page is blamed on the partition whose file fails its page check.
        let open = regions.open.clone();
        let mut parts = vec![&inner.global];
        parts.extend(open.iter().map(|r| &r.part));
        contain_any(&parts, Blame::Verify, || audit_contained(inner, regions))
    }
}

/// [`Db::audit`] after its checkpoint.
fn audit_contained(inner: &Inner, regions: Regions) -> Result<AuditReport> {
    let mut a = Auditor::default();
    for (_, name) in &regions.disabled {
        a.note(format!(
            "region `{name}` is disabled: its rows and the unique entries that point into \
             it are not checked"
        ));
    }

    // Snapshots: the global partition, then every open region.
    let global = &inner.global;
    let gtxn = global.begin_read()?;
    let mut snaps = region::snapshots(&mut a, &regions.open)?;

    // The global catalogs, which every later check reads.
    let accounts = global::accounts(&mut a, global, &gtxn)?;
    global::catalog(&mut a, global, &gtxn)?;
    let index = Index::open(&mut a, global, &gtxn)?;
    let ctx = Ctx {
        inner,
        regions,
        accounts,
        index,
    };

    // Each region, by id; then the owned values without a proper entry (I1, I2).
    let mut ids: Vec<u16> = snaps.keys().copied().collect();
    ids.sort_unstable();
    let mut suspects = region::Suspects::default();
    for rid in ids {
        region::check(&mut a, &ctx, &snaps, rid, &mut suspects)?;
    }
    suspects.report(&mut a);

    // The unique index: entries (I2, leftovers), then in-flight and tombstone rows.
    let in_flight = global::entries(&mut a, &ctx, &mut snaps)?;
    global::leftovers(&mut a, &ctx, &gtxn, &in_flight)?;
    Ok(a.report)
}
