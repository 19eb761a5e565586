//! Writes: buffered operations on one account in one region, committed in a redb
//! transaction of that region (shared with the writes committed at the same moment, see
//! `commit`), running the reservation protocol when unique values change.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::account::Account;
use crate::codec::envelope;
use crate::codec::value::Value;
use crate::commit::Job;
use crate::db::{Db, Inner};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::limits::{check_key, check_table_name, check_unique, check_value_size};
use crate::partition::At;
use crate::partition::region::{
    Marker, MarkerClaim, Owned, data_key, data_key_into, decode_owned, encode_owned, owned_key,
};
use crate::partition::schemas::{self, Declared};
use crate::partition::set::Region;
use crate::read::{Record, Snapshot, open_checked};
use crate::reservation::coordinator::{
    ClaimReq, ReleaseReq, Reservation, ReserveFail, ReserveReq, ReserveTxn,
};
use crate::schema::*;
use crate::table::{Table, Unique};
use crate::types::{AccountId, RegionId};

/// A user table open in a region write transaction.
type DataTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

#[derive(Debug)]
enum Op {
    Put {
        value: Vec<u8>,
        /// `None`: keep whatever unique values the record owns. `Some`: the record owns
        /// exactly these afterwards (claims and releases are the difference).
        uniques: Option<Vec<Owned>>,
    },
    Remove,
}

/// A write on one account in one region. Operations are buffered and checked as they are
/// added; [`Write::commit`] applies them all or none. Dropping a `Write` discards it.
///
/// ```
/// # use regionkv::{Db, NewAccount, Raw, Table, Unique};
/// # let dir = tempfile::tempdir()?;
/// # let db = Db::builder().region("us").open(dir.path())?;
/// # let acme = db.create_account(NewAccount::new("acme", "us"))?;
/// const USERS: Table<Raw> = Table::new("users");
/// let mut w = db.write(acme)?;
/// w.insert_unique(&USERS, b"u1", b"ann", &[Unique::new("email", "ann@example.com")])?;
/// w.commit()?;
/// // Changing the email releases the old one and claims the new one, atomically.
/// let mut w = db.write(acme)?;
/// w.insert_unique(&USERS, b"u1", b"ann", &[Unique::new("email", "ann@example.org")])?;
/// w.commit()?;
/// assert!(!db.is_taken("email", "ann@example.com")?);
/// assert!(db.is_taken("email", "ann@example.org")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Write {
    db: Db,
    account: Account,
    region: Arc<Region>,
    ops: BTreeMap<(&'static str, Vec<u8>), Op>,
    /// The schema of each table this write touches (one per table name).
    schemas: Vec<Declared>,
    /// The region snapshot [`Write::get`] reads, taken at the first read.
    snapshot: Option<Snapshot>,
    /// What each record read through [`Write::get`] was (a digest of its stored bytes;
    /// `None`: absent). Commit fails with [`Error::Conflict`] if any changed since.
    reads: BTreeMap<(&'static str, Vec<u8>), Option<[u8; 32]>>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("account", &self.account.id())
            .field("region", &self.region.part.name)
            .field("ops", &self.ops.len())
            .finish()
    }
}

/// Undoes a quota reservation unless the write committed.
pub(crate) struct QuotaTicket<'a> {
    inner: &'a Inner,
    account: u64,
    reserved: u64,
    pub armed: bool,
}

impl Drop for QuotaTicket<'_> {
    fn drop(&mut self) {
        if self.armed && self.reserved > 0 {
            let mut usage = self.inner.usage.lock();
            let u = usage.entry(self.account).or_default();
            u.reserved = u.reserved.saturating_sub(self.reserved);
        }
    }
}

impl Write {
    pub(crate) fn new(db: Db, account: Account, region: RegionId) -> Result<Write> {
        let region = db.inner.region(region)?;
        region.part.check()?;
        Ok(Write {
            db,
            account,
            region,
            ops: BTreeMap::new(),
            schemas: Vec::new(),
            snapshot: None,
            reads: BTreeMap::new(),
        })
    }

    /// The region this write goes to.
    pub fn region(&self) -> RegionId {
        self.region.id
    }

    /// The account this write belongs to.
    pub fn account(&self) -> AccountId {
        self.account.id()
    }

    /// Checks a table handle against the other operations of this write: one table name,
    /// one schema. The handle is checked against what the region records at commit.
    fn declare<V: Value>(&mut self, table: &Table<V>) -> Result<()> {
        check_table_name(table.name())?;
        let d = Declared::of(table);
        match self.schemas.iter().find(|s| s.table == d.table) {
            Some(s) if *s == d => Ok(()),
            Some(s) => Err(self.in_write_mismatch(s, &d)),
            None => {
                self.schemas.push(d);
                Ok(())
            }
        }
    }

    fn encode<V: Value>(&self, table: &Table<V>, key: &[u8], value: &V::Input) -> Result<Vec<u8>> {
        let payload =
            V::encode(value).map_err(|e| Error::invalid(format!("cannot encode value: {e}")))?;
        check_value_size(payload.len(), self.db.inner.opts.max_value)?;
        let dkey = data_key(self.account.id().0, key);
        Ok(envelope::seal::<V>(
            &envelope::Binding {
                table: table.name(),
                key: &dkey,
            },
            table.schema_version(),
            &payload,
        ))
    }

    /// Inserts or replaces a record. In a table that declares its unique values
    /// ([`Table::unique`]) the record owns exactly the declared values of `value`
    /// afterwards (claimed and released as they change); otherwise a replaced record keeps
    /// the unique values it owns (use [`Write::insert_unique`] to change them).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad table name, a key over 4 KiB, a value over
    /// the configured limit or a bad declared value; [`Error::DuplicateInWrite`] if the
    /// declared values name one value twice; [`Error::SchemaMismatch`] if another operation
    /// of this write used the table with another type. Nothing is buffered then.
    pub fn insert<V: Value>(
        &mut self,
        table: &Table<V>,
        key: impl Key,
        value: &V::Input,
    ) -> Result<()> {
        let key = key.key_bytes();
        let key: &[u8] = &key;
        check_table_name(table.name())?;
        check_key(key)?;
        let value = self.encode::<V>(table, key, value)?;
        let declared = self.declared_uniques(table, &value)?;
        self.declare(table)?;
        let slot = (table.name(), key.to_vec());
        let uniques = match (declared, self.ops.get(&slot)) {
            (Some(list), _) => Some(list),
            // After a remove in the same write the record starts afresh, without values.
            (None, Some(Op::Remove)) => Some(Vec::new()),
            (None, Some(Op::Put { uniques, .. })) => uniques.clone(),
            (None, None) => None,
        };
        self.ops.insert(slot, Op::Put { value, uniques });
        Ok(())
    }

    /// Inserts or replaces a record that owns exactly `uniques` afterwards: values it did
    /// not own are claimed, values it owned and no longer lists are released, in the same
    /// commit. An empty slice releases everything the record owned.
    ///
    /// In a table that declares its unique values ([`Table::unique`]) `uniques` must be
    /// exactly the declared values of `value` (in any order): use [`Write::insert`] there.
    ///
    /// # Errors
    /// Those of [`Write::insert`]; [`Error::InvalidArgument`] for a bad namespace or value,
    /// or a list that contradicts the table's declarations; [`Error::DuplicateInWrite`] if
    /// `uniques` names a value twice. A value that is taken is reported by
    /// [`Write::commit`].
    pub fn insert_unique<V: Value>(
        &mut self,
        table: &Table<V>,
        key: impl Key,
        value: &V::Input,
        uniques: &[Unique<'_>],
    ) -> Result<()> {
        let key = key.key_bytes();
        let key: &[u8] = &key;
        check_table_name(table.name())?;
        check_key(key)?;
        let value = self.encode::<V>(table, key, value)?;
        let owned = self.owned_list(uniques.iter().map(|u| (u.namespace, u.value)))?;
        if let Some(declared) = self.declared_uniques(table, &value)? {
            fn set(l: &[Owned]) -> Vec<(&str, &[u8])> {
                let mut v: Vec<(&str, &[u8])> = l
                    .iter()
                    .map(|o| (o.ns.as_str(), o.value.as_slice()))
                    .collect();
                v.sort();
                v
            }
            if set(&declared) != set(&owned) {
                return Err(Error::invalid(format!(
                    "table `{}` declares its unique values ({}); the list given contradicts \
                     them: use Write::insert",
                    table.name(),
                    declared
                        .iter()
                        .map(|o| o.ns.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        self.declare(table)?;
        self.ops.insert(
            (table.name(), key.to_vec()),
            Op::Put {
                value,
                uniques: Some(owned),
            },
        );
        Ok(())
    }

    /// Buffers an already sealed value of `d.table` under `key` that owns exactly
    /// `uniques`, to be written only if the record is still the bytes `was` (a read-set
    /// entry, as [`Write::get`] makes): `Db::migrate` rewriting a record whose declared
    /// unique values changed through its upgrade, by the protocol.
    pub(crate) fn put_sealed(
        &mut self,
        d: Declared,
        key: Vec<u8>,
        sealed: Vec<u8>,
        uniques: &[(String, Vec<u8>)],
        was: &[u8],
    ) -> Result<()> {
        let owned = self.owned_list(uniques.iter().map(|(n, v)| (n.as_str(), v.as_slice())))?;
        match self.schemas.iter().find(|s| s.table == d.table) {
            Some(s) if *s != d => return Err(self.in_write_mismatch(s, &d)),
            Some(_) => {}
            None => self.schemas.push(d),
        }
        self.reads
            .insert((d.table, key.clone()), Some(*blake3::hash(was).as_bytes()));
        self.ops.insert(
            (d.table, key),
            Op::Put {
                value: sealed,
                uniques: Some(owned),
            },
        );
        Ok(())
    }

    /// Checks and digests (namespace, value) claims; one value twice is refused.
    fn owned_list<'u>(
        &self,
        uniques: impl Iterator<Item = (&'u str, &'u [u8])>,
    ) -> Result<Vec<Owned>> {
        let mut owned = Vec::new();
        let mut seen = HashSet::new();
        for (ns, value) in uniques {
            check_unique(ns, value)?;
            if !seen.insert((ns, value)) {
                return Err(Error::DuplicateInWrite {
                    namespace: ns.to_owned(),
                });
            }
            owned.push(Owned {
                ns: ns.to_owned(),
                digest: self.db.inner.digest(ns, value),
                value: value.to_vec(),
            });
        }
        Ok(owned)
    }

    /// The values a table's declarations take from the sealed record `sealed`; `None` for a
    /// table without declarations.
    fn declared_uniques<V: Value>(
        &self,
        table: &Table<V>,
        sealed: &[u8],
    ) -> Result<Option<Vec<Owned>>> {
        if !table.declares_uniques() {
            return Ok(None);
        }
        let view = V::view(&sealed[envelope::HEADER_LEN..])
            .map_err(|e| Error::invalid(format!("cannot read the encoded value: {e}")))?;
        self.owned_list(
            table
                .declared_uniques()
                .filter_map(|u| (u.get)(view).map(|v| (u.namespace, v))),
        )
        .map(Some)
    }

    /// Removes a record (if present) and releases the unique values it owned.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad table name or key; [`Error::SchemaMismatch`]
    /// as for [`Write::insert`] (the table's recorded schema is checked at commit too).
    pub fn remove<V: Value>(&mut self, table: &Table<V>, key: impl Key) -> Result<()> {
        let key = key.key_bytes();
        let key: &[u8] = &key;
        check_table_name(table.name())?;
        check_key(key)?;
        self.declare(table)?;
        self.ops.insert((table.name(), key.to_vec()), Op::Remove);
        Ok(())
    }

    /// Reads `key` as this write sees it: its own buffered change of the record if it has
    /// one (an insert reads as the inserted value, owned; a remove as `None`), else the
    /// record in this write's region, from a snapshot taken at the write's first read.
    ///
    /// What a `get` read from the region is checked again at commit: if a concurrent commit
    /// changed the record (or created it) in between, [`Write::commit`] fails with the
    /// retryable [`Error::Conflict`] and writes nothing. So a value read, changed and
    /// inserted in one `Write` can never overwrite an update it did not see. See
    /// [`Write::update`] and [`Db::update`](crate::Db::update) (which retries).
    ///
    /// # Errors
    /// [`Error::SchemaMismatch`] if the table holds another type in this region (or this
    /// write used it with another type); [`Error::Corrupt`]; [`Error::InvalidArgument`]
    /// for a bad table name or key; [`Error::Closed`] once the store is closed (as its
    /// commit would be).
    pub fn get<V: Value>(&mut self, table: &Table<V>, key: impl Key) -> Result<Option<Record<V>>> {
        self.db.inner.check_open()?;
        let key = key.key_bytes();
        let key: &[u8] = &key;
        check_table_name(table.name())?;
        check_key(key)?;
        let d = Declared::of(table);
        if let Some(s) = self.schemas.iter().find(|s| s.table == d.table)
            && *s != d
        {
            return Err(self.in_write_mismatch(s, &d));
        }
        let slot = (table.name(), key.to_vec());
        if let Some(op) = self.ops.get(&slot) {
            return match op {
                Op::Put { value, .. } => {
                    Record::from_payload(value[envelope::HEADER_LEN..].to_vec()).map(Some)
                }
                Op::Remove => Ok(None),
            };
        }
        let region = self.region.clone();
        // A region disabled at run time is read by nobody from then on (its commit would
        // be refused too).
        region.check_enabled()?;
        let part = &region.part;
        let snapshot = &mut self.snapshot;
        let dkey = data_key(self.account.id().0, key);
        // Reads this region only: a panic of redb here (a damaged page) damages this
        // region alone and is `Error::Corrupt` (a fenced region refuses the read).
        let (record, seen) = part.contain(|| {
            let snap = match snapshot {
                Some(s) => s.clone(),
                None => {
                    let s = region.snapshot()?;
                    *snapshot = Some(s.clone());
                    s
                }
            };
            Ok(match open_checked(part, &snap, &d)? {
                None => (None, None),
                Some(t) => match t.get(dkey.as_slice()).at(part)? {
                    None => (None, None),
                    Some(g) => {
                        let digest = *blake3::hash(g.value()).as_bytes();
                        (Some(Record::new(g, &snap, part, &d, &dkey)?), Some(digest))
                    }
                },
            })
        })?;
        self.reads.entry(slot).or_insert(seen);
        Ok(record)
    }

    /// Read-modify-write of one record: `f` gets the record as [`Write::get`] reads it and
    /// returns the new value, or `None` to leave it as it is. Returns whether a value was
    /// buffered. The record keeps the unique values it owns (or, in a table that declares
    /// its unique values, owns those of the new value).
    ///
    /// ```
    /// # use regionkv::{Db, NewAccount, Schema, Table};
    /// # use regionkv::rkyv;
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
    /// #[rkyv(crate = regionkv::rkyv)]
    /// struct License { key: String, seats: u32 }
    /// const LICENSES: Table<License> = Table::new("licenses");
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::builder().region("eu").open(dir.path())?;
    /// # let acme = db.create_account(NewAccount::new("acme", "eu"))?;
    /// # let mut w = db.write(acme)?;
    /// # w.insert(&LICENSES, b"l1", &License { key: "K-1".into(), seats: 5 })?;
    /// # w.commit()?;
    /// let mut w = db.write(acme)?;
    /// w.update(&LICENSES, b"l1", |old| {
    ///     let mut l = old?.deserialize().ok()?; // an owned copy to change
    ///     l.seats = 500;
    ///     Some(l)
    /// })?;
    /// w.commit()?; // Error::Conflict (retryable) if l1 changed since the read
    /// assert_eq!(db.read(acme)?.get(&LICENSES, b"l1")?.unwrap().seats, 500);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Write::get`] and [`Write::insert`].
    pub fn update<V: Value, O: std::borrow::Borrow<V::Input>>(
        &mut self,
        table: &Table<V>,
        key: impl Key,
        f: impl FnOnce(Option<&Record<V>>) -> Option<O>,
    ) -> Result<bool> {
        let key = key.key_bytes();
        let key: &[u8] = &key;
        let old = self.get(table, key)?;
        match f(old.as_ref()) {
            Some(new) => {
                drop(old);
                self.insert(table, key, new.borrow())?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    #[cold]
    fn in_write_mismatch(&self, first: &Declared, d: &Declared) -> Error {
        Error::SchemaMismatch {
            table: d.table.to_owned(),
            partition: self.region.part.name.clone(),
            stored: Box::new(first.info()),
            asked: Box::new(d.info()),
        }
    }

    /// Number of buffered operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Validate: every record [`Write::get`] read from the region is still what it read
    /// (read in the region write transaction, which no other commit can change under us).
    fn validate_reads(&self, t: &mut GroupTables<'_>) -> Result<()> {
        let part = &self.region.part;
        let acct = self.account.id().0;
        let mut dkey = Vec::new();
        for ((tname, key), seen) in &self.reads {
            let data = t.data(part, tname)?;
            data_key_into(&mut dkey, acct, key);
            let now = data
                .get(dkey.as_slice())
                .at(part)?
                .map(|g| *blake3::hash(g.value()).as_bytes());
            if now != *seen {
                return Err(Error::Conflict {
                    table: tname.to_string(),
                    key: key.clone(),
                });
            }
        }
        Ok(())
    }

    /// Applies every buffered operation atomically, durable when this returns `Ok`.
    ///
    /// A write that changes no unique value is one synced commit of the region and touches
    /// the global partition not at all. A write that claims or releases values runs the
    /// reservation protocol: Reserve (global, unsynced), the region commit with its applied
    /// marker (synced: the commit point), Confirm (global, unsynced). Still one fsync.
    ///
    /// Writes committed to one region at the same moment (from several threads, or by
    /// [`Db::commit_each`]) share that commit: one region transaction, one Reserve, one
    /// fsync and one Confirm for the group (docs/design.md, "Group commit"). Each keeps its
    /// own outcome: one write's unique violation or conflict fails only that write.
    ///
    /// # Errors
    /// - [`Error::UniqueViolation`]: a value is owned by a committed record;
    /// - [`Error::Busy`] (retryable): a value is held by a transaction in flight;
    /// - [`Error::DuplicateInWrite`]: two records of this write claim the same value;
    /// - [`Error::QuotaExceeded`], [`Error::PlacementDenied`];
    /// - [`Error::SchemaMismatch`]: a table holds another type in this region;
    /// - [`Error::Conflict`] (retryable): a record read through [`Write::get`] changed;
    /// - [`Error::OutcomeUnknown`]: the region commit itself failed; the region refuses
    ///   writes until the store is reopened, and recovery then settles the write one way
    ///   in every partition;
    /// - storage errors.
    ///
    /// Every error but `OutcomeUnknown` means nothing was written.
    pub fn commit(self) -> Result<()> {
        let db = self.db.clone();
        let inner = &*db.inner;
        if self.ops.is_empty() {
            // Nothing to write: what it read cannot be overwritten by it.
            inner.check_open()?;
            return Ok(());
        }
        // Held to the end: `Db::close` waits for this commit, or this commit sees it closed.
        let _store_gate = inner.writers.read();
        inner.check_open()?;
        let region = self.region.clone();
        let done = region.committer.submit(vec![Job::One(self)]);
        let done = done.into_iter().next().unwrap_or_else(|| Err(internal()));
        if done.is_ok() {
            inner.maybe_checkpoint();
        }
        done
    }

    /// The weight of this write in a group (the bytes it buffers).
    pub(crate) fn weight(&self) -> usize {
        self.ops
            .iter()
            .map(|((_, k), op)| {
                k.len()
                    + match op {
                        Op::Put { value, .. } => value.len(),
                        Op::Remove => 0,
                    }
            })
            .sum()
    }

    /// Stages this write into a group's region transaction `w` (and, when it changes
    /// unique values, into the group's Reserve `g`, begun on first need): checks the
    /// account and what it read, plans, reserves, applies. Everything before `apply` only
    /// reads, so a refused write leaves `w` and `g` as they were; a failure while applying
    /// (`Step::Fatal`) leaves them half-changed.
    pub(crate) fn stage<'i>(
        &self,
        inner: &'i Inner,
        w: &mut GroupTables<'_>,
        g: &mut Option<ReserveTxn<'i>>,
        freed: u64,
        checked: &mut Vec<Declared>,
    ) -> Step<'i> {
        let refused = Step::Refused;
        let account = match self.current_account() {
            Ok(a) => a,
            Err(e) => return refused(e),
        };
        if let Err(e) = self.validate_reads(w) {
            return refused(e);
        }
        let plan = match self.plan(w, checked) {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        let mut ticket = QuotaTicket {
            inner,
            account: self.account.id().0,
            reserved: 0,
            armed: true,
        };
        let reservation = match self.reserve(inner, &account, &plan, &mut ticket, g, freed) {
            Ok(r) => r,
            Err(ReserveFail::Refused(e)) => return refused(e),
            Err(ReserveFail::Defer { namespace }) => return Step::Defer { namespace },
            Err(ReserveFail::Fatal(e)) => return Step::Fatal(e),
        };
        if let Err(e) = self.apply(w, &plan, reservation.as_ref()) {
            return Step::Fatal(e);
        }
        // Staged: its schemas hold in the group's transaction for the writes after it.
        for d in &self.schemas {
            if !checked.contains(d) {
                checked.push(*d);
            }
        }
        Step::Staged(Staged {
            plan,
            ticket,
            reservation,
        })
    }

    /// The account as it is now (it may have changed since this write was opened): still
    /// active, still allowed in this region, which is still enabled.
    fn current_account(&self) -> Result<Account> {
        let inner = &*self.db.inner;
        let account = inner.route(self.account.id())?;
        if !account.allows(self.region.id) {
            return Err(Error::PlacementDenied {
                account: account.id(),
                region: self.region.part.name.clone(),
            });
        }
        inner.region(self.region.id)?;
        Ok(account)
    }

    /// Plan: what the buffered operations change, read in the region write transaction
    /// before anything is written — record and byte deltas, the records' owned values
    /// after the write, and the claims and releases that takes. Refuses a value claimed
    /// twice; a value released by one record and claimed by another moves (a transfer).
    fn plan(&self, t: &mut GroupTables<'_>, checked: &[Declared]) -> Result<Plan> {
        let part = &self.region.part;
        let acct = self.account.id().0;
        let mut plan = Plan::default();
        // A schema an earlier write of the group staged (checked, and registered if it had
        // to be) is in this transaction already.
        for d in self.schemas.iter().filter(|d| !checked.contains(d)) {
            let rows = t.data(part, d.table)?.len().at(part)?;
            if schemas::check_write(part, t.w, d, rows)? {
                plan.register.push(*d);
            }
        }
        let mut dkey = Vec::new();
        for ((tname, key), op) in &self.ops {
            let data = t.data(part, tname)?;
            data_key_into(&mut dkey, acct, key);
            let old_len = data
                .get(dkey.as_slice())
                .at(part)?
                .map(|g| g.value().len() as i64);
            let new_owned: Option<&Vec<Owned>> = match op {
                Op::Put { value, uniques } => {
                    plan.delta_records += old_len.is_none() as i64;
                    plan.delta_bytes += value.len() as i64 - old_len.unwrap_or(0);
                    uniques.as_ref()
                }
                Op::Remove => {
                    if let Some(l) = old_len {
                        plan.delta_records -= 1;
                        plan.delta_bytes -= l;
                    }
                    None
                }
            };
            if !matches!(op, Op::Remove) && new_owned.is_none() {
                continue; // keeps whatever values it owns
            }
            let okey = owned_key(tname, acct, key);
            let old: Vec<Owned> = match t.owned(part)?.get(okey.as_slice()).at(part)? {
                Some(g) => decode_owned(g.value()).ok_or_else(|| {
                    Error::corrupt(
                        &part.name,
                        format!("owned values of table `{tname}` undecodable"),
                    )
                })?,
                None => Vec::new(),
            };
            let empty = Vec::new();
            let new = new_owned.unwrap_or(&empty);
            let same = |a: &Owned, b: &Owned| a.ns == b.ns && a.digest == b.digest;
            for o in old.iter().filter(|o| !new.iter().any(|n| same(n, o))) {
                plan.releases.push(ReleaseReq {
                    ns: o.ns.clone(),
                    digest: o.digest,
                    table: tname.to_string(),
                    key: key.clone(),
                });
            }
            for n in new.iter().filter(|n| !old.iter().any(|o| same(o, n))) {
                plan.claims.push(ClaimReq {
                    ns: n.ns.clone(),
                    digest: n.digest,
                    table: tname.to_string(),
                    key: key.clone(),
                    value: n.value.clone(),
                    transfer: false,
                });
            }
            if old != *new {
                plan.owned_updates.push((okey, new.clone()));
            }
        }
        // Two records of this write claiming one value: refuse before anything is written.
        let mut seen = HashSet::new();
        for c in &plan.claims {
            if !seen.insert((c.ns.as_str(), c.digest)) {
                return Err(Error::DuplicateInWrite {
                    namespace: c.ns.clone(),
                });
            }
        }
        // A value released by one record and claimed by another of this write moves.
        let Plan {
            claims, releases, ..
        } = &mut plan;
        releases.retain(|r| {
            match claims
                .iter_mut()
                .find(|c| c.ns == r.ns && c.digest == r.digest)
            {
                Some(c) => {
                    c.transfer = true;
                    false
                }
                None => true,
            }
        });
        Ok(plan)
    }

    /// Reserve: the quota, and for a write that changes unique values the global half of
    /// the protocol (with the quota checked inside the same global transaction), in the
    /// group's Reserve `g`.
    fn reserve<'i>(
        &self,
        inner: &'i Inner,
        account: &Account,
        plan: &Plan,
        ticket: &mut QuotaTicket<'_>,
        g: &mut Option<ReserveTxn<'i>>,
        freed: u64,
    ) -> std::result::Result<Option<Reservation>, ReserveFail> {
        if plan.claims.is_empty() && plan.releases.is_empty() {
            reserve_quota(inner, account, plan.delta_records, freed, ticket)
                .map_err(ReserveFail::Refused)?;
            return Ok(None);
        }
        let rt = match g {
            Some(rt) => rt,
            None => g.insert(
                inner
                    .coord
                    .begin_reserve(&inner.global, self.region.id.0)
                    .map_err(ReserveFail::Refused)?,
            ),
        };
        inner
            .coord
            .reserve_in(
                rt,
                &inner.global,
                ReserveReq {
                    region: self.region.id.0,
                    account: account.id().0,
                    claims: &plan.claims,
                    releases: &plan.releases,
                },
                &|id| inner.regions.read().stuck(id),
                || reserve_quota(inner, account, plan.delta_records, freed, ticket),
            )
            .map(Some)
    }

    /// Apply: the data, the owned values, the usage counters and (for a unique write) the
    /// applied marker, in the region write transaction. Nothing is durable before its
    /// commit.
    fn apply(
        &self,
        t: &mut GroupTables<'_>,
        plan: &Plan,
        reservation: Option<&Reservation>,
    ) -> Result<()> {
        let part = &self.region.part;
        let acct = self.account.id().0;
        for d in &plan.register {
            schemas::register(part, t.w, d)?;
        }
        let mut dkey = Vec::new();
        for ((tname, key), op) in &self.ops {
            let data = t.data(part, tname)?;
            data_key_into(&mut dkey, acct, key);
            match op {
                Op::Put { value, .. } => {
                    data.insert(dkey.as_slice(), value.as_slice()).at(part)?;
                }
                Op::Remove => {
                    data.remove(dkey.as_slice()).at(part)?;
                }
            }
        }
        let owned_t = t.owned(part)?;
        for (okey, list) in &plan.owned_updates {
            if list.is_empty() {
                owned_t.remove(okey.as_slice()).at(part)?;
            } else {
                owned_t
                    .insert(okey.as_slice(), encode_owned(list).as_slice())
                    .at(part)?;
            }
        }
        if plan.delta_records != 0 || plan.delta_bytes != 0 {
            let usage_t = t.usage(part)?;
            let (r, b) = usage_t
                .get(acct)
                .at(part)?
                .map(|g| g.value())
                .unwrap_or((0, 0));
            let r = (r as i64 + plan.delta_records).max(0) as u64;
            let b = (b as i64 + plan.delta_bytes).max(0) as u64;
            if r == 0 && b == 0 {
                usage_t.remove(acct).at(part)?;
            } else {
                usage_t.insert(acct, (r, b)).at(part)?;
            }
        }
        if let Some(res) = reservation {
            let marker = Marker {
                account: acct,
                claims: plan
                    .claims
                    .iter()
                    .map(|c| MarkerClaim {
                        ns: c.ns.clone(),
                        digest: c.digest,
                        table: c.table.clone(),
                        key: c.key.clone(),
                    })
                    .collect(),
                // Only the releases Reserve applied: a value whose entry names another
                // record is not this record's to release.
                releases: res.released.clone(),
            };
            t.markers(part)?
                .insert(res.txn.to_u128(), marker.encode().as_slice())
                .at(part)?;
        }
        Ok(())
    }

    /// After the commit point: the in-memory counters (Confirm is the group's).
    pub(crate) fn settle(&self, staged: &Staged<'_>) {
        let mut usage = self.db.inner.usage.lock();
        let u = usage.entry(self.account.id().0).or_default();
        u.reserved = u.reserved.saturating_sub(staged.ticket.reserved);
        u.records = (u.records as i64 + staged.plan.delta_records).max(0) as u64;
    }

    /// The region this write goes to.
    pub(crate) fn region_arc(&self) -> Arc<Region> {
        self.region.clone()
    }

    /// Whether this write belongs to `db`.
    pub(crate) fn same_store(&self, db: &Db) -> bool {
        Arc::ptr_eq(&self.db.inner, &db.inner)
    }

    /// The store this write belongs to.
    pub(crate) fn db(&self) -> Db {
        self.db.clone()
    }
}

/// What staging one write into a group gave.
pub(crate) enum Step<'i> {
    /// Applied to the group's transactions; durable with the group's commit.
    Staged(Staged<'i>),
    /// Refused: nothing of it was written; the group goes on without it.
    Refused(Error),
    /// A unique value it changes is held by an earlier write of the group: it runs in
    /// the next group.
    Defer {
        /// The value's namespace.
        namespace: String,
    },
    /// Failed half-way through changing the group's transactions: the group is lost.
    Fatal(Error),
}

/// A write staged into a group.
pub(crate) struct Staged<'i> {
    plan: Plan,
    /// Disarmed at the commit point.
    pub ticket: QuotaTicket<'i>,
    pub reservation: Option<Reservation>,
}

impl Staged<'_> {
    /// How many records of its account the write removes (net), to count as gone for the
    /// quota checks of the writes staged after it.
    pub fn frees(&self) -> u64 {
        (-self.plan.delta_records).max(0) as u64
    }

    /// Whether the write records a schema row (a table's first write, or a new version).
    pub fn registers(&self) -> bool {
        !self.plan.register.is_empty()
    }
}

/// Records `txn`, the newest unique txn of a group, as the region's last (once per group:
/// an open compares it with what the global index has seen of the region).
pub(crate) fn record_last_txn(
    part: &crate::partition::Partition,
    w: &redb::WriteTransaction,
    txn: crate::types::TxnId,
) -> Result<()> {
    let mut meta = w.open_table(META).at(part)?;
    meta.insert(META_LAST_TXN, txn.to_u128().to_le_bytes().as_slice())
        .at(part)?;
    Ok(())
}

/// What a write changes, decided before anything is written.
#[derive(Default)]
struct Plan {
    claims: Vec<ClaimReq>,
    releases: Vec<ReleaseReq>,
    /// Owned-value rows to write (an empty list removes the row).
    owned_updates: Vec<(Vec<u8>, Vec<Owned>)>,
    /// Tables this write creates in the region: their schema rows.
    register: Vec<Declared>,
    delta_records: i64,
    delta_bytes: i64,
}

/// Reserves `delta_records` new records of `account` against its limit, in memory under
/// one lock, so that concurrent writes in several regions cannot both pass a limit that
/// spans them. `freed`: records of the account that writes staged before this one in the
/// same group remove (they commit or fail with it, so they count as gone, as serially). A disabled region whose counts are unknown may hold records of the
/// account: the limit cannot be checked then, so a limited account cannot grow.
fn reserve_quota(
    inner: &Inner,
    account: &Account,
    delta_records: i64,
    freed: u64,
    ticket: &mut QuotaTicket<'_>,
) -> Result<()> {
    let add = delta_records.max(0) as u64;
    let Some(max) = account.max_records() else {
        return Ok(());
    };
    if add == 0 {
        return Ok(());
    }
    {
        let set = inner.regions.read();
        if let Some(r) = account
            .allowed()
            .iter()
            .find(|r| set.usage_unknown.contains(&r.get()))
        {
            return Err(Error::RegionDisabled(set.name(r.get())));
        }
    }
    let mut usage = inner.usage.lock();
    let u = usage.entry(account.id().0).or_default();
    if (u.records + u.reserved).saturating_sub(freed) + add > max {
        return Err(Error::QuotaExceeded {
            account: account.id(),
            limit: max,
        });
    }
    u.reserved += add;
    ticket.reserved = add;
    Ok(())
}

/// The region tables of one group's write transaction, each opened once for the whole
/// group (on first use) and shared by its writes' staging: redb's `open_table` is a lookup
/// in the transaction's table tree and a few allocations, and with every part of a
/// 1,000-account batch opening its data table, `_owned`, `_usage` and `_markers` two or
/// three times it was ~10% of the batch. Tables it does not hold (`_schemas`, `_meta`)
/// are opened by their users while it lives; it is dropped before the commit.
pub(crate) struct GroupTables<'t> {
    w: &'t redb::WriteTransaction,
    data: Vec<(&'static str, DataTable<'t>)>,
    owned: Option<redb::Table<'t, &'static [u8], &'static [u8]>>,
    usage: Option<redb::Table<'t, u64, (u64, u64)>>,
    markers: Option<redb::Table<'t, u128, &'static [u8]>>,
}

impl<'t> GroupTables<'t> {
    /// Nothing open yet in `w`.
    pub fn new(w: &'t redb::WriteTransaction) -> Self {
        GroupTables {
            w,
            data: Vec::new(),
            owned: None,
            usage: None,
            markers: None,
        }
    }

    /// User table `tname`.
    fn data(
        &mut self,
        part: &crate::partition::Partition,
        tname: &'static str,
    ) -> Result<&mut DataTable<'t>> {
        let i = match self.data.iter().position(|(n, _)| *n == tname) {
            Some(i) => i,
            None => {
                let name = user_table_name(tname);
                let t = self
                    .w
                    .open_table(TableDefinition::<&[u8], &[u8]>::new(&name))
                    .at(part)?;
                self.data.push((tname, t));
                self.data.len() - 1
            }
        };
        Ok(&mut self.data[i].1)
    }

    fn owned(
        &mut self,
        part: &crate::partition::Partition,
    ) -> Result<&mut redb::Table<'t, &'static [u8], &'static [u8]>> {
        open_once(&mut self.owned, self.w, OWNED, part)
    }

    fn usage(
        &mut self,
        part: &crate::partition::Partition,
    ) -> Result<&mut redb::Table<'t, u64, (u64, u64)>> {
        open_once(&mut self.usage, self.w, USAGE, part)
    }

    fn markers(
        &mut self,
        part: &crate::partition::Partition,
    ) -> Result<&mut redb::Table<'t, u128, &'static [u8]>> {
        open_once(&mut self.markers, self.w, MARKERS, part)
    }
}

fn open_once<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<redb::Table<'t, K, V>>,
    w: &'t redb::WriteTransaction,
    def: TableDefinition<'static, K, V>,
    part: &crate::partition::Partition,
) -> Result<&'s mut redb::Table<'t, K, V>> {
    if slot.is_none() {
        *slot = Some(w.open_table(def).at(part)?);
    }
    slot.as_mut().ok_or_else(internal)
}

#[cold]
fn internal() -> Error {
    Error::invalid("internal: table handle missing")
}

/// How many times [`Db::update`] runs a read-modify-write that keeps conflicting.
pub const UPDATE_ATTEMPTS: usize = 32;

impl Db {
    /// Read-modify-write of one record of `account` in its home region, committed, and
    /// retried when a concurrent commit changed the record in between ([`Error::Conflict`]):
    /// `f` may run more than once, each time on the record as it is then. Returns whether
    /// a value was written (`f` returned `Some`).
    ///
    /// ```
    /// # use regionkv::{Db, NewAccount, Schema, Table};
    /// # use regionkv::rkyv;
    /// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
    /// #[rkyv(crate = regionkv::rkyv)]
    /// struct License { key: String, seats: u32 }
    /// const LICENSES: Table<License> = Table::new("licenses");
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::builder().region("eu").open(dir.path())?;
    /// # let acme = db.create_account(NewAccount::new("acme", "eu"))?;
    /// # let mut w = db.write(acme)?;
    /// # w.insert(&LICENSES, b"l1", &License { key: "K-1".into(), seats: 5 })?;
    /// # w.commit()?;
    /// db.update(acme, &LICENSES, b"l1", |old| {
    ///     let mut l = old?.deserialize().ok()?;
    ///     l.seats += 1;
    ///     Some(l)
    /// })?;
    /// assert_eq!(db.read(acme)?.get(&LICENSES, b"l1")?.unwrap().seats, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Write::update`] and [`Write::commit`]; `Conflict` only after
    /// [`UPDATE_ATTEMPTS`] attempts all conflicted.
    pub fn update<V: Value, O: std::borrow::Borrow<V::Input>>(
        &self,
        account: AccountId,
        table: &Table<V>,
        key: impl Key,
        mut f: impl FnMut(Option<&Record<V>>) -> Option<O>,
    ) -> Result<bool> {
        let key = key.key_bytes();
        let key: &[u8] = &key;
        let mut last = None;
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                // Let the commit that won go first: a random pause, growing with the
                // attempts, so that writers that keep colliding spread out.
                let cap_us = 20u64 << attempt.min(8);
                let r = getrandom::u64().unwrap_or(attempt as u64);
                std::thread::sleep(std::time::Duration::from_micros(r % cap_us));
            }
            let mut w = self.write(account)?;
            if !w.update(table, key, &mut f)? {
                return Ok(false);
            }
            match w.commit() {
                Ok(()) => return Ok(true),
                Err(e @ Error::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::invalid("update: no attempt ran")))
    }
}
