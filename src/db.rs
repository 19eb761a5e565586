//! `Db`: the cheap-clone handle that routes every call to its partitions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::ReadableTable;

use crate::account::{Account, AccountState, NewAccount, now_secs};
use crate::budget::CacheBudget;
use crate::builder::Builder;
use crate::codec::value::Value;
use crate::error::{Error, Result};
use crate::limits::{check_account_name, check_table_name, check_unique};
use crate::partition::At;
use crate::partition::Partition;
use crate::partition::global::{CatalogEntry, unique_key};
use crate::partition::set::{Region, RegionSet, RegionSlot};
use crate::read::{Hit, Read, Rows};
use crate::reservation::recovery::RecoveryReport;
use crate::reservation::state::{Entry, State};
use crate::schema::{ACCOUNT_NAMES, ACCOUNTS};
use crate::table::{Table, digest};
use crate::types::{AccountId, RegionId};
use crate::write::Write;

/// Records an account holds (all regions) and records reserved by writes in flight.
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub records: u64,
    pub reserved: u64,
}

pub(crate) struct Options {
    pub max_value: usize,
    /// `Builder::compact_on_close`.
    pub compact_on_close: bool,
}

pub(crate) struct Inner {
    /// The store's folder (for `Debug`).
    pub dir: PathBuf,
    pub digest_key: [u8; 32],
    pub global: Partition,
    pub regions: RwLock<RegionSet>,
    pub accounts: crate::account::RoutingCache,
    pub usage: Mutex<HashMap<u64, Usage>>,
    pub coord: crate::reservation::coordinator::Coordinator,
    pub opts: Options,
    pub closed: AtomicBool,
    /// Set when a `close` recorded the clean close (a later `close` answers `Ok` only then).
    pub closed_clean: AtomicBool,
    /// Every operation that writes (commit, create_account, disable_region,
    /// forfeit_unsettled, the checkpoint timer) holds this shared from its `closed` check
    /// to its end; `close` takes it exclusively, so it waits for them, and none starts after.
    pub writers: RwLock<()>,
    pub timer: crate::reservation::timer::Timer,
    pub recovery: RecoveryReport,
    /// The partitions whose every page the open checked (see `Db::verified_at_open`).
    pub verified_at_open: Vec<String>,
    /// Holds this store's paths in the process-wide registry of open stores until drop.
    pub _registration: Arc<crate::partition::registry::Registration>,
    /// How the page-cache budget was shared at open.
    pub cache_budget: crate::budget::CacheBudget,
}

/// A region as listed by [`Db::regions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region's name.
    pub name: String,
    /// Its id, stable for the life of the store.
    pub id: RegionId,
    /// Whether its file is open in this process.
    pub enabled: bool,
}

/// Counters of an open store, from [`Db::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The epoch of this open (bumped at every open; part of every TxnId).
    pub epoch: u64,
    /// Unique-value transactions whose reservation or applied marker may still exist:
    /// in flight, or confirmed and not yet collected by a checkpoint.
    pub txns_live: usize,
    /// Transactions confirmed since the last checkpoint.
    pub txns_since_checkpoint: usize,
    /// Regions whose file is open.
    pub regions_open: usize,
    /// Regions in the catalog.
    pub regions_known: usize,
    /// Lookups of the unique-index cache that found the entry (or its absence) in memory.
    pub unique_cache_hits: u64,
    /// Lookups that read the global file (and filled the cache).
    pub unique_cache_misses: u64,
    /// Bytes the unique-index cache holds (never above
    /// [`Builder::unique_cache_size`](crate::Builder::unique_cache_size)).
    pub unique_cache_bytes: usize,
    /// Values the unique-index cache holds.
    pub unique_cache_entries: usize,
    /// Account lookups answered by the routing cache.
    pub routing_cache_hits: u64,
    /// Account lookups that read the global file.
    pub routing_cache_misses: u64,
    /// Bytes the routing cache holds (never above
    /// [`Builder::routing_cache_size`](crate::Builder::routing_cache_size)).
    pub routing_cache_bytes: usize,
    /// Accounts the routing cache holds.
    pub routing_cache_entries: usize,
}

/// An open regionkv store. Cheap to clone (`Arc` inside), `Send + Sync`.
///
/// ```
/// use regionkv::{Db, NewAccount, Raw, Table, Unique};
/// # let dir = tempfile::tempdir()?;
/// let db = Db::builder().region("us").region("eu").open(dir.path())?;
/// let acme = db.create_account(NewAccount::new("acme", "eu"))?;
///
/// const NOTES: Table<Raw> = Table::new("notes");
/// let mut w = db.write(acme)?;
/// w.insert(&NOTES, b"n1", b"hello")?;
/// w.insert_unique(&NOTES, b"n2", b"world", &[Unique::new("slug", "world")])?;
/// w.commit()?;
///
/// let r = db.read(acme)?;
/// assert_eq!(&*r.get(&NOTES, b"n1")?.unwrap(), b"hello");
/// let hit = db.find_unique(&NOTES, "slug", "world")?.unwrap();
/// assert_eq!(hit.account(), acme);
/// db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).finish()
    }
}

impl Inner {
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The routing entry of an account: from the cache, else from the global partition.
    #[inline]
    pub fn route(&self, id: AccountId) -> Result<Account> {
        // A fenced global file refuses reads, cached or not (one atomic load).
        self.global.check_damaged()?;
        if let Some(a) = self.accounts.get(id) {
            return Ok(a);
        }
        self.load_account(id)
    }

    #[cold]
    fn load_account(&self, id: AccountId) -> Result<Account> {
        self.global.contain(|| self.load_account_contained(id))
    }

    fn load_account_contained(&self, id: AccountId) -> Result<Account> {
        let txn = self.global.begin_read()?;
        let Some(t) = self.global.read_table(&txn, ACCOUNTS)? else {
            return Err(Error::AccountUnknown(id));
        };
        let row = t
            .get(id.0)
            .at(&self.global)?
            .ok_or(Error::AccountUnknown(id))?;
        let a = Account::decode(id, row.value())
            .ok_or_else(|| Error::corrupt("global", format!("account {id} row undecodable")))?;
        self.accounts.put(a.clone());
        Ok(a)
    }

    /// An open region, or why not.
    #[inline]
    pub fn region(&self, id: RegionId) -> Result<Arc<Region>> {
        self.regions.read().get(id)
    }

    pub fn region_id(&self, name: &str) -> Result<RegionId> {
        self.regions
            .read()
            .names
            .get(name)
            .map(|&id| RegionId(id))
            .ok_or_else(|| Error::RegionUnknown(name.to_owned()))
    }

    pub fn open_region_by_raw(&self, id: u16) -> Option<Arc<Region>> {
        self.region(RegionId(id)).ok()
    }

    /// Runs a checkpoint if its budget is spent. Failures poison the global partition and
    /// are reported by the next unique write; the write that triggered it stays committed.
    pub fn maybe_checkpoint(&self) {
        if self.coord.checkpoint_due() {
            let _ = self.checkpoint_with(false);
        }
    }

    /// A full checkpoint: every `_dirty` row is removed.
    pub fn checkpoint(&self) -> Result<()> {
        self.checkpoint_with(true)
    }

    /// `full = false` (the budget, the timer): the `_dirty` rows of regions written since
    /// the previous checkpoint stay (see `Coordinator::checkpoint`).
    pub fn checkpoint_with(&self, full: bool) -> Result<()> {
        // The global file, then each region with markers to delete, one after the other:
        // a panic is blamed on the partition last used.
        let open = self.open_regions();
        let mut parts = vec![&self.global];
        parts.extend(open.iter().map(|r| &r.part));
        crate::partition::contain::contain_any(
            &parts,
            crate::partition::contain::Blame::LastUsed,
            || {
                self.coord
                    .checkpoint(&self.global, |id| self.open_region_by_raw(id), full)
            },
        )
    }

    /// Every open region (one read of the region set).
    pub fn open_regions(&self) -> Vec<Arc<Region>> {
        let set = self.regions.read();
        set.by_id
            .iter()
            .filter_map(|s| match s {
                Some((_, RegionSlot::Open(r))) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn digest(&self, ns: &str, value: &[u8]) -> [u8; 16] {
        digest(&self.digest_key, ns, value)
    }

    /// The settled or in-flight global entry of a unique value.
    /// From the unique-index cache when it holds the value, else from a global snapshot
    /// (and then cached).
    pub fn unique_entry(&self, ns: &str, value: &[u8]) -> Result<Option<Arc<Entry>>> {
        check_unique(ns, value)?;
        let d = self.digest(ns, value);
        let cache = &self.coord.cache;
        // A fenced global file refuses reads, cached or not (one atomic load).
        self.global.check_damaged()?;
        if let Some(hit) = cache.get(&d) {
            return Ok(hit);
        }
        let key = unique_key(ns, &d);
        // Read before the snapshot begins: a commit of the index after it refuses the fill.
        let epoch = cache.epoch();
        let entry = self
            .global
            .contain(|| {
                // The global's newest snapshot when no commit ran since it was taken (a
                // read-mostly store then opens neither a transaction nor `_unique` per
                // miss): as new as one begun now, so the epoch rule above holds as is.
                let read = self.global.shared_read()?;
                match read.internal(&self.global, crate::schema::UNIQUE_NAME)? {
                    Some(t) => crate::reservation::index::get_in(&self.global, &*t, &key),
                    None => Ok(None),
                }
            })?
            .map(Arc::new);
        cache.fill(&d, entry.clone(), epoch);
        Ok(entry)
    }
}

impl crate::reservation::timer::Checkpointed for Inner {
    fn checkpoint_if_overdue(&self) {
        if self.coord.checkpoint_overdue() {
            let _gate = self.writers.read();
            if self.check_open().is_ok() && !self.global.is_poisoned() {
                // A failure poisons the global partition; the next write reports it.
                let _ = self.checkpoint_with(false);
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.timer.stop();
        // Best effort: make the last unsynced global commits durable. Never fails, never
        // panics; if it cannot run, recovery at the next open rebuilds the same state.
        if !self.closed.load(Ordering::Acquire) && !self.global.is_poisoned() {
            let _ = self.checkpoint();
        }
    }
}

impl Db {
    /// Starts configuring a store.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Creates an account: its row and its unique name, in one synced global commit.
    ///
    /// ```
    /// # use regionkv::{Db, NewAccount, Error};
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// let acme = db.create_account(NewAccount::new("acme", "eu").allow("us").max_records(100))?;
    /// assert_eq!(db.account(acme)?.name(), "acme");
    /// assert!(matches!(db.create_account(NewAccount::new("acme", "us")), Err(Error::AccountNameTaken(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::AccountNameTaken`]; [`Error::RegionUnknown`] or [`Error::RegionDisabled`]
    /// for the home region (an allowed region may be disabled). A creation racing a
    /// [`Db::disable_region`] of its home is ordered with it: it commits before the disable
    /// begins (the disable waits for it), or it is refused with `RegionDisabled` and creates
    /// nothing; an account is never homed in a region disabled before it was created.
    /// [`Error::InvalidArgument`]
    /// for an empty or over-long name (1 to 128 bytes); [`Error::OutcomeUnknown`] if the
    /// synced commit failed (the account may exist after a reopen: look it up by name).
    pub fn create_account(&self, new: NewAccount) -> Result<AccountId> {
        self.create_accounts([new])?
            .pop()
            .ok_or_else(|| Error::invalid("internal: no account created"))
    }

    /// Creates many accounts in one synced commit of the global partition, all or none:
    /// the bulk path for imports (one fsync for the whole batch instead of one per account).
    /// Ids are given in order.
    ///
    /// ```
    /// # use regionkv::{Db, Error, NewAccount};
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// let ids = db.create_accounts((0..100).map(|i| NewAccount::new(format!("t{i}"), "eu")))?;
    /// assert_eq!(ids.len(), 100);
    /// assert_eq!(db.account_id("t7")?, Some(ids[7]));
    /// // One bad account refuses the whole batch.
    /// let r = db.create_accounts([NewAccount::new("new", "us"), NewAccount::new("t7", "us")]);
    /// assert!(matches!(r, Err(Error::AccountNameTaken(_))));
    /// assert_eq!(db.account_id("new")?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Db::create_account`], for any account of the batch (a name twice in the
    /// batch is [`Error::AccountNameTaken`]); nothing is created then.
    pub fn create_accounts(
        &self,
        news: impl IntoIterator<Item = NewAccount>,
    ) -> Result<Vec<AccountId>> {
        let inner = &*self.inner;
        let _store_gate = inner.writers.read();
        inner.check_open()?;
        let mut planned = Vec::new();
        for new in news {
            check_account_name(&new.name)?;
            let home = inner.region_id(&new.home)?;
            inner.region(home)?;
            let mut allowed = vec![home];
            for r in &new.allowed {
                let id = inner.region_id(r)?;
                if !allowed.contains(&id) {
                    allowed.push(id);
                }
            }
            planned.push((new, home, allowed));
        }
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        // The home regions' write gates, held shared until the commit is over: a
        // `disable_region` of a home either returned before (the region is refused here,
        // as if it had been disabled before the call) or waits for this creation to end.
        // Taken in region-id order, so two creations and two disables cannot wait on each
        // other in a cycle (a waiting writer blocks new readers).
        let mut homes: Vec<(RegionId, String)> = planned
            .iter()
            .map(|(n, h, _)| (*h, n.home.clone()))
            .collect();
        homes.sort_by_key(|(h, _)| h.0);
        homes.dedup_by_key(|(h, _)| h.0);
        let homes: Vec<(Arc<Region>, String)> = homes
            .into_iter()
            .map(|(h, name)| inner.region(h).map(|r| (r, name)))
            .collect::<Result<_>>()?;
        let mut _home_gates = Vec::with_capacity(homes.len());
        for (region, name) in &homes {
            let gate = region.writable.read();
            if !*gate {
                return Err(Error::RegionDisabled(name.clone()));
            }
            _home_gates.push(gate);
        }
        let global = &inner.global;
        let accounts = global.contain(|| {
            let w = global.begin_write()?;
            let first =
                crate::partition::catalog::reserve_account_ids(global, &w, planned.len() as u64)?;
            let accounts = {
                let mut names = w.open_table(ACCOUNT_NAMES).at(global)?;
                let mut rows = w.open_table(ACCOUNTS).at(global)?;
                let mut accounts = Vec::with_capacity(planned.len());
                for (i, (new, home, allowed)) in planned.into_iter().enumerate() {
                    // Checked against the rows of this batch too (inserted below as it goes).
                    if names.get(new.name.as_str()).at(global)?.is_some() {
                        return Err(Error::AccountNameTaken(new.name));
                    }
                    let id = AccountId(first + i as u64);
                    let account = Account {
                        id,
                        name: crate::account::Name::new(&new.name),
                        home,
                        allowed: crate::account::Regions::new(&allowed),
                        max_records: new.max_records,
                        state: AccountState::Active,
                        created_at: now_secs(),
                    };
                    names.insert(new.name.as_str(), id.0).at(global)?;
                    rows.insert(id.0, account.encode().as_slice()).at(global)?;
                    accounts.push(account);
                }
                accounts
            };
            global.commit_settled(w)?;
            Ok(accounts)
        })?;
        let ids = accounts.iter().map(|a| a.id).collect();
        for a in accounts {
            inner.accounts.put(a);
        }
        Ok(ids)
    }

    /// The account's row: name, home, allowed regions, limits, state.
    ///
    /// # Errors
    /// [`Error::AccountUnknown`].
    pub fn account(&self, id: AccountId) -> Result<Arc<Account>> {
        self.inner.check_open()?;
        self.inner.route(id).map(Arc::new)
    }

    /// Finds an account by name.
    ///
    /// # Errors
    /// Storage errors only; an unknown name is `Ok(None)`.
    pub fn account_id(&self, name: &str) -> Result<Option<AccountId>> {
        self.inner.check_open()?;
        let g = &self.inner.global;
        g.contain(|| {
            let txn = g.begin_read()?;
            let Some(t) = g.read_table(&txn, ACCOUNT_NAMES)? else {
                return Ok(None);
            };
            Ok(t.get(name).at(g)?.map(|v| AccountId(v.value())))
        })
    }

    /// A write in the account's home region. Nothing is written before
    /// [`Write::commit`].
    ///
    /// # Errors
    /// [`Error::AccountUnknown`], [`Error::RegionDisabled`].
    pub fn write(&self, account: AccountId) -> Result<Write> {
        self.inner.check_open()?;
        let a = self.inner.route(account)?;
        Write::new(self.clone(), a.clone(), a.home)
    }

    /// A write in another region the account's placement policy allows.
    ///
    /// # Errors
    /// [`Error::PlacementDenied`] if the policy does not allow `region`;
    /// [`Error::RegionUnknown`], [`Error::RegionDisabled`], [`Error::AccountUnknown`].
    pub fn write_in(&self, account: AccountId, region: &str) -> Result<Write> {
        self.inner.check_open()?;
        let a = self.inner.route(account)?;
        let r = self.inner.region_id(region)?;
        if !a.allows(r) {
            return Err(Error::PlacementDenied {
                account,
                region: region.to_owned(),
            });
        }
        Write::new(self.clone(), a, r)
    }

    /// A read snapshot of one account's data (a snapshot per region, taken on first use).
    ///
    /// # Errors
    /// [`Error::AccountUnknown`].
    pub fn read(&self, account: AccountId) -> Result<Read> {
        self.inner.check_open()?;
        let a = self.inner.route(account)?;
        Ok(Read::new(self.clone(), a))
    }

    /// Finds the record that owns `value` in `namespace`, if it lives in `table`.
    ///
    /// The global index holds only a digest; the hit is verified against the plaintext
    /// kept beside the record in its region, so a digest collision never returns a wrong
    /// record. The global entry comes from the unique-index cache when it holds it
    /// ([`Builder::unique_cache_size`](crate::Builder::unique_cache_size)), then the
    /// record from a new snapshot of its region; a hot path that looks up many values
    /// keeps a [`View`](crate::View) instead (its snapshots are reused).
    ///
    /// # Errors
    /// Those of [`View::find_unique`](crate::View::find_unique).
    pub fn find_unique<V: Value>(
        &self,
        table: &Table<V>,
        namespace: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Hit<V>>> {
        self.view()?.find_unique(table, namespace, value)
    }

    /// Whether `value` is owned (or being claimed) in `namespace`: one global point read.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or over-long namespace or value;
    /// [`Error::RegionUnsettled`] while a disabled region may hold claims a crash left
    /// unsettled, when the value looks free (the region might own it) or is owned by a
    /// record of that region (the region might have released it).
    pub fn is_taken(&self, namespace: &str, value: impl AsRef<[u8]>) -> Result<bool> {
        self.inner.check_open()?;
        let entry = self
            .inner
            .unique_entry(namespace, value.as_ref())?
            .filter(|e| e.state != State::Tombstone);
        if let Some(name) = entry
            .as_ref()
            .and_then(|e| self.inner.coord.unsettled_name(e.loc.region))
        {
            // Owned by a record of an unsettled region, whose unreplayed markers may have
            // released it: neither answer is known.
            return Err(Error::RegionUnsettled(name));
        }
        let taken = entry.is_some();
        if !taken {
            // "Free" is an answer only a settled store can give.
            self.inner.coord.check_settled()?;
        }
        Ok(taken)
    }

    /// Every row of `table` in every enabled region, each tagged with its region and
    /// account: for workers (expiry sweeps, counts).
    ///
    /// Regions disabled when it is called are skipped; a region disabled by
    /// [`Db::disable_region`] while the scan runs is read to the end (the scan is one
    /// operation at the snapshots taken when it was called).
    ///
    /// # Errors
    /// Storage errors; a row that fails its checksum is yielded as [`Error::Corrupt`].
    pub fn scan_all<V: Value>(&self, table: &Table<V>) -> Result<Rows<V>> {
        self.inner.check_open()?;
        check_table_name(table.name())?;
        Ok(Rows::all(
            &self.inner,
            crate::partition::schemas::Declared::of(table),
        ))
    }

    /// The id of a region by name.
    ///
    /// # Errors
    /// [`Error::RegionUnknown`].
    pub fn region_id(&self, name: &str) -> Result<RegionId> {
        self.inner.region_id(name)
    }

    /// The name of a region by id, if known.
    pub fn region_name(&self, id: RegionId) -> Option<String> {
        let set = self.inner.regions.read();
        match set.by_id.get(id.0 as usize) {
            Some(Some((name, _))) => Some(name.clone()),
            _ => None,
        }
    }

    /// Every region of the catalog, by id.
    pub fn regions(&self) -> Vec<RegionInfo> {
        let set = self.inner.regions.read();
        set.by_id
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref().map(|(name, slot)| RegionInfo {
                    name: name.clone(),
                    id: RegionId(i as u16),
                    enabled: matches!(slot, RegionSlot::Open(_)),
                })
            })
            .collect()
    }

    /// The default region.
    pub fn default_region(&self) -> RegionId {
        RegionId(self.inner.regions.read().default)
    }

    /// Disables a region while the store is open: it waits for the region's writes in
    /// flight (and account creations homed there), runs a checkpoint, records the choice
    /// and the region's record counts in the catalog. Re-enable it by listing it with
    /// [`Builder::region`] at the next open.
    ///
    /// Reads: every read *operation* that begins after it returned refuses the region
    /// with [`Error::RegionDisabled`], whatever handle it goes through — a new one, or a
    /// [`Read`](crate::Read), [`View`](crate::View) or [`Write`](crate::Write) whose
    /// snapshot of the region was taken before ([`Read::get`](crate::Read::get),
    /// [`Read::get_in`](crate::Read::get_in), [`View::get`](crate::View::get),
    /// [`View::find_unique`](crate::View::find_unique), [`Db::find_unique`],
    /// [`Write::get`](crate::Write::get); [`Read::scan`](crate::Read::scan) yields one
    /// `RegionDisabled` item for it and goes on with the other regions; [`Db::scan_all`]
    /// and [`Db::sweep`] skip it). An operation that began before is ordered before the
    /// disable and completes at its snapshot: a scan or sweep in progress reads the region
    /// to the end, and records and hits returned stay readable. The region's unique values
    /// stay taken ([`Db::is_taken`]). Writes there, and creations of accounts homed there,
    /// are refused the same way. Its file is released once the last record, scan or write
    /// holding it is dropped (a handle drops its snapshot of the region when it meets the
    /// disable).
    ///
    /// ```
    /// # use regionkv::{Db, Error, NewAccount};
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// let acme = db.create_account(NewAccount::new("acme", "us").allow("eu"))?;
    /// db.disable_region("eu")?;
    /// assert!(matches!(db.write_in(acme, "eu"), Err(Error::RegionDisabled(_))));
    /// assert!(matches!(db.disable_region("us"), Err(Error::Config(_)))); // the default
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::RegionUnknown`]; [`Error::Config`] for the default region;
    /// [`Error::OutcomeUnknown`] if the catalog commit failed: the region refuses writes in
    /// this process anyway, and may or may not be disabled after a reopen.
    pub fn disable_region(&self, name: &str) -> Result<()> {
        let inner = &*self.inner;
        let _store_gate = inner.writers.read();
        inner.check_open()?;
        let id = inner.region_id(name)?;
        if id.0 == inner.regions.read().default {
            return Err(Error::Config(format!(
                "region `{name}` is the default region and cannot be disabled"
            )));
        }
        let region = match inner.region(id) {
            Ok(r) => r,
            Err(Error::RegionDisabled(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Waits for every commit in flight in this region; later ones see it disabled.
        let mut writable = region.writable.write();
        if !*writable {
            return Ok(());
        }
        // Settle what can be settled before its markers become invisible: after this
        // checkpoint the global file durably covers every unique write of the region.
        inner.checkpoint()?;
        // Its record counts, with every write acknowledged so far, stay counted against
        // account limits while it is disabled. After a write whose outcome is unknown
        // (the partition is poisoned) the counts are unknown too: limited accounts allowed
        // there cannot grow until it returns.
        let counts = if region.part.is_poisoned() {
            None
        } else {
            let part = &region.part;
            Some(
                part.contain(|| crate::partition::region::region_usage(&part.begin_read()?, name))?,
            )
        };
        let global = &inner.global;
        let entry = global.contain(|| crate::partition::catalog::catalog_entry(global, name))?;
        let entry = CatalogEntry {
            enabled: false,
            ..entry
        };
        let persisted = global.contain(|| {
            crate::partition::catalog::persist_disable(global, name, &entry, counts.clone())
        });
        if let Err(e) = &persisted
            && !matches!(e, Error::OutcomeUnknown { .. })
        {
            // Nothing was written: the region stays enabled.
            return persisted;
        }
        // Disabled (or, if the catalog commit failed, perhaps disabled: the region refuses
        // writes from now on either way, so the counts recorded stay right).
        inner.coord.drop_tombstones.store(false, Ordering::Release);
        // Reads refuse it from here (kept snapshots too), before the set says so: a
        // lookup that found it open in the set still meets this flag.
        region.mark_disabled();
        *writable = false;
        drop(writable);
        let mut set = inner.regions.write();
        if let Some(Some((_, slot))) = set.by_id.get_mut(id.0 as usize) {
            *slot = RegionSlot::Disabled;
        }
        if counts.is_none() {
            set.usage_unknown.insert(id.0);
        }
        persisted
    }

    /// Gives up the unique claims a disabled region may hold unsettled after a crash, so
    /// that the rest of the store can claim values and call them free again (see
    /// [`Error::RegionUnsettled`]). Its in-flight reservations are rolled back too.
    ///
    /// This is the operator's decision that the region's last unsynced claims may be lost:
    /// when the region is enabled again, recovery replays its markers, and a claim whose
    /// value another record took meanwhile is taken off the region's record and listed in
    /// [`RecoveryReport::claims_lost`] of that open. Nothing is lost for values nobody
    /// took.
    ///
    /// # Errors
    /// [`Error::RegionUnknown`]; [`Error::Config`] for an enabled region (it has nothing
    /// unsettled); storage errors.
    pub fn forfeit_unsettled(&self, name: &str) -> Result<ForfeitReport> {
        let inner = &*self.inner;
        let _store_gate = inner.writers.read();
        inner.check_open()?;
        let id = inner.region_id(name)?;
        match inner.region(id) {
            Err(Error::RegionDisabled(_)) => {}
            Ok(_) => {
                return Err(Error::Config(format!(
                    "region `{name}` is enabled: its claims are settled, nothing to forfeit"
                )));
            }
            Err(e) => return Err(e),
        }
        let was_unsettled = inner.coord.is_unsettled(id.0);
        let global = &inner.global;
        let rolled_back = global.contain(|| inner.coord.forfeit(global, id.0))?;
        Ok(ForfeitReport {
            region: name.to_owned(),
            was_unsettled,
            in_flight_rolled_back: rolled_back,
        })
    }

    /// Runs a checkpoint now: one synced global commit, after which the applied markers it
    /// covers are deleted from their regions. Checkpoints also run on their own budget and
    /// at [`Db::close`].
    ///
    /// # Errors
    /// Storage errors.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.checkpoint()
    }

    /// Counters of this store: epoch, protocol transactions in flight, regions.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let (live, since) = inner.coord.counts();
        let cache = &inner.coord.cache;
        let cached = cache.usage();
        let (routing, routed) = (inner.accounts.counts(), inner.accounts.usage());
        let set = inner.regions.read();
        Stats {
            epoch: inner.coord.epoch,
            txns_live: live,
            txns_since_checkpoint: since,
            regions_open: set
                .by_id
                .iter()
                .filter(|s| matches!(s, Some((_, RegionSlot::Open(_)))))
                .count(),
            regions_known: set.by_id.iter().filter(|s| s.is_some()).count(),
            unique_cache_hits: cache.counts().0,
            unique_cache_misses: cache.counts().1,
            unique_cache_bytes: cached.0,
            unique_cache_entries: cached.1,
            routing_cache_hits: routing.0,
            routing_cache_misses: routing.1,
            routing_cache_bytes: routed.0,
            routing_cache_entries: routed.1,
        }
    }

    /// How the page-cache budget ([`Builder::cache_size`](crate::Builder::cache_size)) is
    /// shared: each open partition's redb page cache, decided at open by file size, and
    /// the cache held back for verification. Their sum never exceeds the budget.
    ///
    /// ```
    /// # use regionkv::Db;
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").open(dir.path())?;
    /// let budget = db.cache_budget();
    /// assert_eq!(budget.total, regionkv::DEFAULT_CACHE_BYTES);
    /// assert!(budget.used() <= budget.total);
    /// assert_eq!(budget.partitions[0].partition, "global");
    /// # db.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cache_budget(&self) -> CacheBudget {
        self.inner.cache_budget.clone()
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.recovery.clone()
    }

    /// Closes the store: stops the checkpoint timer, waits for every write in flight, runs
    /// a final checkpoint and records a clean close (the next open then trusts the record
    /// counts of regions it disables). Other clones see [`Error::Closed`] from then on; the
    /// files are released when the last clone and the last record or snapshot are dropped
    /// (until then, opening the store again in this process is refused).
    ///
    /// After a clean close (unless [`Builder::compact_on_close`](crate::Builder::compact_on_close)
    /// turned it off) each partition file is compacted when it is released (redb's
    /// `compact`: the free pages left by the unsynced commits of unique writes are given
    /// back and the file shrinks). That happens here if this is the last handle, otherwise
    /// when the last clone, record or snapshot is dropped, which then pays for it. The
    /// compaction changes no data and is crash safe (docs/design.md, section 1, "Free pages
    /// and compaction at a clean close"); if it fails, the file keeps its free pages.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier I/O failure of the global file,
    /// [`Error::Corrupt`] if it was found damaged; storage errors
    /// from the final checkpoint; [`Error::OutcomeUnknown`] if recording the clean close
    /// failed. The store is closed either way; nothing acknowledged is lost. A close after
    /// another clone's close answers `Ok` if that one recorded the clean close, else that
    /// close's error again (the global file's) or [`Error::Closed`].
    pub fn close(self) -> Result<()> {
        let inner = &*self.inner;
        // The timer takes `writers` shared: stop it before waiting for the writers.
        inner.timer.stop_and_join();
        // Waits for every write in flight; none starts after.
        let _no_writers = inner.writers.write();
        if inner.closed.swap(true, Ordering::AcqRel) {
            // Closed before (by this handle's clone): `Ok` only if that close recorded a
            // clean close; otherwise its error again when the global file says it, else
            // `Closed` (never an `Ok` for a close that did not happen).
            if inner.closed_clean.load(Ordering::Acquire) {
                return Ok(());
            }
            inner.global.check()?;
            return Err(Error::Closed);
        }
        // Poisoned (an I/O failure) or damaged: the error says which.
        inner.global.check()?;
        inner.checkpoint()?;
        let global = &inner.global;
        global.contain(|| crate::partition::catalog::mark_clean_close(global))?;
        inner.closed_clean.store(true, Ordering::Release);
        // Every commit is durable now: the free pages the unsynced global commits left
        // behind can be given back. Done when each partition is released (below, unless
        // another handle or a snapshot still holds the store), see
        // `Partition::compact_when_released`.
        if inner.opts.compact_on_close {
            global.compact_when_released();
            for r in inner.open_regions() {
                r.part.compact_when_released();
            }
        }
        Ok(())
    }
}

/// What [`Db::forfeit_unsettled`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForfeitReport {
    /// The region whose claims were given up.
    pub region: String,
    /// Whether it was unsettled (a crash left claims that could not be replayed).
    pub was_unsettled: bool,
    /// Its in-flight reservations rolled back.
    pub in_flight_rolled_back: usize,
}

/// Compile-time check: a `Db` handle can be shared and sent between threads.
#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync + Clone>() {}
    is::<Db>();
}
