//! One redb file per partition: opening with the meta check, creating atomically, the
//! poison flag that refuses writes after an I/O failure, the damage flag that refuses
//! everything after redb panicked on a damaged page (`contain.rs`), and checking every
//! page of a file on demand ([`Partition::verify_file`]).
//!
//! This is the one internal interface the protocol talks to; a network-backed partition
//! (the global partition on a shared database, for one process per region site) could
//! replace it without touching the protocol.

pub(crate) mod catalog;
pub(crate) mod contain;
pub(crate) mod global;
pub(crate) mod region;
pub(crate) mod registry;
pub(crate) mod schemas;
pub(crate) mod set;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::backends::{DynBackend, ReadOnly, Storage};
use crate::error::{Error, Result};
use crate::schema::*;

/// An open partition file.
pub(crate) struct Partition {
    /// `global` or the region's name; used in errors.
    pub name: String,
    /// `Some` until the partition is dropped (`Drop` takes it to drop it carefully after a
    /// panic inside redb).
    db: Option<Database>,
    poisoned: AtomicBool,
    /// Why the partition is damaged, once it is: redb panicked while using it (see
    /// [`Partition::contain`]) or [`Partition::verify_file`] found a page that fails its
    /// checksum. A damaged partition refuses reads and writes ([`Error::Corrupt`]).
    damaged: OnceLock<String>,
    /// Set by a clean `Db::close`: when the partition is released (its last handle
    /// dropped), redb's `compact` gives its free pages back before the file closes (see
    /// [`Partition::compact_when_released`]).
    compact_on_release: AtomicBool,
    /// Its file, for [`Partition::verify_file`].
    storage: Arc<dyn Storage>,
    path: PathBuf,
    /// The store's verification look, for [`Partition::verify_file`].
    looks: Looks,
    /// Schema checks of user tables that passed (see [`SchemaChecks`]).
    pub schemas: SchemaChecks,
    /// The newest snapshot, shared by the reads that begin before the next commit (see
    /// [`SharedReads`]).
    reads: Arc<SharedReads>,
}

/// The partition's newest read snapshot, shared by every read that begins before the next
/// commit: a fresh `Read`, `View`, lookup or scan then costs no redb `begin_read` and no
/// `open_table` (with many region files those meet cold structures and dominated a fresh
/// read: docs/design.md, "Shared snapshots").
///
/// Coherence: `generation` is even while no commit runs; every commit of the partition
/// goes through [`Txn::commit`], which makes it odd (and drops the kept snapshot) before
/// redb's commit and even again after it returns, whatever the outcome. A snapshot begun
/// after reading an even generation `g` is kept tagged `g` (only if the generation is
/// still `g` once it began, checked under the slot's lock, so nothing is stored after a
/// commit dropped the slot), and a read may take it only while the generation is still
/// `g`: no commit started since the snapshot's reader read `g`, so it holds every commit
/// that returned before that read, and so every commit that returned before this one.
/// While a commit runs (odd), reads begin their own snapshots, as without this.
///
/// Memory: the kept snapshot is the newest, so it pins no page a later commit freed; a
/// commit drops it (redb can then reuse what the next commit frees), and the partition
/// drops it first when it is released (a clean close's compaction needs no live read).
#[derive(Default)]
pub(crate) struct SharedReads {
    generation: AtomicU64,
    newest: parking_lot::RwLock<Option<(u64, Arc<SharedRead>)>>,
}

impl SharedReads {
    /// Held across a commit: odd, the kept snapshot dropped; even again when dropped.
    fn committing(&self) -> Committing<'_> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let old = self.newest.write().take();
        // Ends its read transaction (if no read holds it) outside the lock.
        drop(old);
        Committing(self)
    }
}

struct Committing<'a>(&'a SharedReads);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        self.0.generation.fetch_add(1, Ordering::SeqCst);
    }
}

type DataTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// A table opened in a shared read: `Missing` when the partition has none.
#[derive(Clone)]
enum Kept {
    Missing,
    /// Its root page is known to be small: kept until the snapshot is dropped.
    Strong(Arc<DataTable>),
    /// Its root page may be large: kept only while a read holds it.
    Weak(Weak<DataTable>),
}

impl Kept {
    /// `Some` when the slot still answers: missing, or a table that is still alive.
    fn get(&self) -> Option<Option<Arc<DataTable>>> {
        match self {
            Kept::Missing => Some(None),
            Kept::Strong(t) => Some(Some(t.clone())),
            Kept::Weak(w) => w.upgrade().map(Some),
        }
    }

    /// How a table just opened in a shared read is kept (see "Memory" in design.md,
    /// "Shared snapshots"). redb keeps an opened table's root page in memory, outside the
    /// page cache's budget once the cache evicts it. A root is larger than one 4 KiB page
    /// only when it is a leaf holding an entry that does not fit one page (redb 4.6 splits
    /// a branch above one page once it holds 3 keys, and keys are bounded by `MAX_KEY`; it
    /// builds a leaf of two or more entries that does not fit one page as two leaves). So
    /// a table of two or more entries, or of one small entry, is kept; a table whose
    /// single entry is large is kept only while a read holds it. One case this does not
    /// see (design.md says what it costs): redb inserts in place into a page allocated by
    /// the same write transaction while it has room, so one commit that writes a large
    /// entry and then small neighbours into a table that fits one leaf leaves a large
    /// leaf of several entries as the root.
    fn of(part: &Partition, t: Option<DataTable>) -> Result<(Kept, Option<Arc<DataTable>>)> {
        let Some(t) = t else {
            return Ok((Kept::Missing, None));
        };
        let strong = match redb::ReadableTableMetadata::len(&t).at(part)? {
            1 => match redb::ReadableTable::first(&t).at(part)? {
                Some((k, v)) => k.value().len() + v.value().len() <= SMALL_ROOT_ENTRY,
                None => true,
            },
            _ => true,
        };
        let t = Arc::new(t);
        let kept = if strong {
            Kept::Strong(t.clone())
        } else {
            Kept::Weak(Arc::downgrade(&t))
        };
        Ok((kept, Some(t)))
    }
}

/// The largest single entry (key and value bytes) a kept table's root may hold for the
/// table to be kept for the snapshot's life: it then fits one 4 KiB page.
const SMALL_ROOT_ENTRY: usize = 3 << 10;

/// Internal tables opened in a shared read, by name.
type InternalTables = Vec<(&'static str, Kept)>;

/// A read transaction with the tables opened in it so far, shared by the snapshots that
/// use it (`set::Snapshot`). Field order is drop order: the opened tables (each keeps the
/// transaction in progress in redb) before the transaction.
pub(crate) struct SharedRead {
    /// User tables opened (and schema-checked against the handle's `Declared`), `None`
    /// when the table does not exist in this snapshot.
    /// Each is kept as [`Kept::of`] decides: a table whose root may be one large page is
    /// held only while a read uses it.
    tables: parking_lot::Mutex<Vec<(schemas::Declared, Kept)>>,
    /// Internal tables opened (`_owned` of a region, `_unique` of the global), by name.
    internal: parking_lot::Mutex<InternalTables>,
    txn: ReadTransaction,
    /// The partition's schema-check generation when the transaction began.
    pub schema_gen: u64,
}

impl SharedRead {
    pub fn txn(&self) -> &ReadTransaction {
        &self.txn
    }

    /// User table `d.table`, opened and checked on first use in this transaction
    /// (`open`), then shared.
    pub fn table(
        &self,
        part: &Partition,
        d: &schemas::Declared,
        open: impl FnOnce() -> Result<Option<DataTable>>,
    ) -> Result<Option<Arc<DataTable>>> {
        let find = |list: &Vec<(schemas::Declared, Kept)>| {
            list.iter().find(|(x, _)| x == d).and_then(|(_, k)| k.get())
        };
        if let Some(t) = find(&self.tables.lock()) {
            return Ok(t);
        }
        // Opened outside the lock (it may read `_schemas`); two readers racing here both
        // open it, the first stored wins.
        let (kept, t) = Kept::of(part, open()?)?;
        let mut tables = self.tables.lock();
        if let Some(alive) = find(&tables) {
            return Ok(alive);
        }
        match tables.iter_mut().find(|(x, _)| x == d) {
            Some(slot) => slot.1 = kept,
            None => tables.push((*d, kept)),
        }
        Ok(t)
    }

    /// Internal table `name` (`_owned`, `_unique`), opened on first use in this
    /// transaction, then shared; `None` if the partition has none.
    pub fn internal(&self, part: &Partition, name: &'static str) -> Result<Option<Arc<DataTable>>> {
        let def = redb::TableDefinition::<&'static [u8], &'static [u8]>::new(name);
        let find = |list: &InternalTables| {
            list.iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, k)| k.get())
        };
        if let Some(t) = find(&self.internal.lock()) {
            return Ok(t);
        }
        let (kept, t) = Kept::of(part, part.read_table(&self.txn, def)?)?;
        let mut list = self.internal.lock();
        if let Some(alive) = find(&list) {
            return Ok(alive);
        }
        match list.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = kept,
            None => list.push((name, kept)),
        }
        Ok(t)
    }
}

/// A write transaction of a partition. Its [`commit`](Txn::commit) is the only way the
/// partition's contents change (redb's own `commit` is not reachable through it), so it
/// is where the shared snapshot is retired ([`SharedReads`]). Derefs to redb's
/// transaction for everything else; dropped uncommitted, it aborts (nothing changed).
pub(crate) struct Txn {
    w: WriteTransaction,
    reads: Arc<SharedReads>,
}

impl std::ops::Deref for Txn {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        &self.w
    }
}

impl std::ops::DerefMut for Txn {
    fn deref_mut(&mut self) -> &mut WriteTransaction {
        &mut self.w
    }
}

impl Txn {
    /// redb's commit, with the shared snapshot retired around it.
    pub fn commit(self) -> std::result::Result<(), redb::CommitError> {
        let _committing = self.reads.committing();
        self.w.commit()
    }
}

/// The schema checks (`schemas::check_read`) that passed in a region, so that a new
/// snapshot does not read `_schemas` again for a table handle already checked. Valid
/// while `generation` is unchanged: a commit that registers a schema row makes it odd before and
/// even again after it ([`SchemaChecks::changing`]). A check that passed stays true when
/// rows are added (a registration adds versions, never changes a recorded one), so a
/// snapshot that reads a newer `_schemas` than the entry was checked on may still use it;
/// what matters is that no entry is stored from a check that overlapped a registration.
#[derive(Default)]
pub(crate) struct SchemaChecks {
    generation: AtomicU64,
    passed: parking_lot::Mutex<Vec<(crate::partition::schemas::Declared, u64)>>,
}

/// At most this many checks are kept per region (then the list starts again).
const SCHEMA_CHECKS: usize = 64;

impl SchemaChecks {
    /// The generation to read before a snapshot begins.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether `d` passed its check at generation `generation` (even: no registration running).
    pub fn passed(&self, d: &crate::partition::schemas::Declared, generation: u64) -> bool {
        generation.is_multiple_of(2)
            && generation == self.generation()
            && self
                .passed
                .lock()
                .iter()
                .any(|(p, g)| *g == generation && p == d)
    }

    /// Remembers that `d` passed on a snapshot begun at `generation`, if no registration ran since.
    pub fn pass(&self, d: &crate::partition::schemas::Declared, generation: u64) {
        let mut passed = self.passed.lock();
        if !generation.is_multiple_of(2) || generation != self.generation() {
            return;
        }
        passed.retain(|(_, g)| *g == generation);
        if passed.len() >= SCHEMA_CHECKS {
            passed.clear();
        }
        passed.push((*d, generation));
    }

    /// Held across a commit that registers schema rows.
    pub fn changing(&self) -> SchemaChange<'_> {
        self.generation.fetch_add(1, Ordering::SeqCst);
        SchemaChange(self)
    }
}

/// Ends a schema change when dropped (after the commit, whatever its outcome).
pub(crate) struct SchemaChange<'a>(&'a SchemaChecks);

impl Drop for SchemaChange<'_> {
    fn drop(&mut self) {
        self.0.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Partition({})", self.name)
    }
}

/// What a partition's meta table must say.
#[derive(Debug, Clone)]
pub(crate) struct Expect {
    pub kind: u8,
    /// `None` when opening the global partition, whose UUID defines the store.
    pub uuid: Option<[u8; 16]>,
    pub region: Option<(String, u16)>,
}

impl Partition {
    fn new(
        name: &str,
        db: Database,
        storage: &Arc<dyn Storage>,
        path: &Path,
        looks: &Looks,
    ) -> Partition {
        Partition {
            name: name.to_owned(),
            db: Some(db),
            poisoned: AtomicBool::new(false),
            damaged: OnceLock::new(),
            compact_on_release: AtomicBool::new(false),
            storage: storage.clone(),
            path: path.to_owned(),
            looks: looks.clone(),
            schemas: SchemaChecks::default(),
            reads: Arc::default(),
        }
    }

    /// Whether the partition refuses writes: after an I/O failure, a commit of unknown
    /// outcome, or damage.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Whether the partition is damaged (it refuses reads and writes).
    pub fn is_damaged(&self) -> bool {
        self.damaged.get().is_some()
    }

    /// Refuses reads and writes of a damaged partition.
    pub fn check_damaged(&self) -> Result<()> {
        match self.damaged.get() {
            Some(why) => Err(Error::corrupt(
                &self.name,
                format!(
                    "the partition was found damaged earlier ({why}); it refuses reads and \
                     writes until the store is reopened"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Refuses writes after an I/O failure, and everything after damage.
    pub fn check(&self) -> Result<()> {
        self.check_damaged()?;
        if self.is_poisoned() {
            return Err(Error::Poisoned(self.name.clone()));
        }
        Ok(())
    }

    /// Asks for the file to be compacted when the partition is released: called by a clean
    /// `Db::close` once every commit of the store is durable and the clean close is
    /// recorded. The compaction runs in `Drop`, when no snapshot, read transaction or
    /// other handle of the partition can be alive any more (redb's `compact` needs
    /// `&mut Database` and no live read transaction), before the file closes and before
    /// its registration is released. It changes no table: redb moves pages down and
    /// shrinks the file, in durable (two-phase) commits, so a crash or an I/O failure in
    /// the middle leaves the file at one of them, with the same contents (docs/design.md,
    /// section 1, "Free pages and compaction at a clean close").
    pub fn compact_when_released(&self) {
        self.compact_on_release.store(true, Ordering::Release);
    }

    /// The redb database; it is always there while the partition is alive.
    fn db(&self) -> Result<&Database> {
        self.db.as_ref().ok_or(Error::Closed)
    }

    /// Converts a redb error, poisoning the partition when it is an I/O failure.
    pub fn err(&self, e: impl Into<redb::Error>) -> Error {
        let e = e.into();
        match e {
            redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::Backend(_) => self.poison(),
            redb::Error::Corrupted(ref what) => {
                return Error::corrupt(&self.name, format!("redb: {what}"));
            }
            _ => {}
        }
        Error::Storage {
            partition: self.name.clone(),
            source: Box::new(e),
        }
    }

    pub fn begin_write(&self) -> Result<Txn> {
        self.check()?;
        contain::touch(self);
        let w = self.db()?.begin_write().at(self)?;
        Ok(Txn {
            w,
            reads: self.reads.clone(),
        })
    }

    /// A write transaction that commits without fsync (made durable by a later synced
    /// commit of the same partition).
    pub fn begin_write_unsynced(&self) -> Result<Txn> {
        let mut w = self.begin_write()?;
        w.set_durability(redb::Durability::None).at(self)?;
        Ok(w)
    }

    pub fn commit(&self, w: Txn) -> Result<()> {
        contain::touch(self);
        w.commit().at(self)
    }

    /// Commits a change that no later step rebuilds (account creation, catalog changes):
    /// a failed commit may still be durable (redb may have written it before the failing
    /// sync), so its failure is [`Error::OutcomeUnknown`], never "nothing was written".
    pub fn commit_settled(&self, w: Txn) -> Result<()> {
        contain::touch(self);
        w.commit().map_err(|e| {
            let _ = self.err(redb::Error::PreviousIo); // poison, as for any I/O failure
            Error::OutcomeUnknown {
                partition: self.name.clone(),
                source: Box::new(e.into()),
            }
        })
    }

    pub fn begin_read(&self) -> Result<ReadTransaction> {
        self.check_damaged()?;
        contain::touch(self);
        self.db()?.begin_read().at(self)
    }

    /// The newest snapshot, shared with the other reads that begin before the next commit
    /// (see [`SharedReads`]); a new one if none is kept or a commit is running.
    pub fn shared_read(&self) -> Result<Arc<SharedRead>> {
        self.check_damaged()?;
        let reads = &*self.reads;
        let generation = reads.generation.load(Ordering::SeqCst);
        let even = generation.is_multiple_of(2);
        if even
            && let Some((g, kept)) = &*reads.newest.read()
            && *g == generation
        {
            return Ok(kept.clone());
        }
        // Read before the transaction begins (see `SchemaChecks`).
        let schema_gen = self.schemas.generation();
        let read = Arc::new(SharedRead {
            tables: parking_lot::Mutex::new(Vec::new()),
            internal: parking_lot::Mutex::new(Vec::new()),
            txn: self.begin_read()?,
            schema_gen,
        });
        if even {
            let mut newest = reads.newest.write();
            // Still `generation`: no commit started since it was read, so none dropped the
            // slot after this point either (a commit takes this lock to drop it).
            if reads.generation.load(Ordering::SeqCst) == generation {
                let old = newest.replace((generation, read.clone()));
                drop(newest);
                drop(old);
            }
        }
        Ok(read)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // The kept snapshot first: nothing else can hold it now (every snapshot holds its
        // region), and a compaction needs no read transaction alive.
        drop(self.reads.newest.write().take());
        let Some(db) = self.db.take() else { return };
        if std::thread::panicking() {
            if self.is_damaged() {
                // A second panic while unwinding would abort the process: leak it instead.
                std::mem::forget(db);
            } else {
                // redb's close writes nothing while a panic unwinds.
                drop(db);
            }
            return;
        }
        let compact = self.compact_on_release.load(Ordering::Acquire)
            && !self.is_damaged()
            && !self.is_poisoned();
        // redb's close commits its allocator state: on a damaged file (trusted at open, or
        // met by a panic since) that commit can panic too, and so can a compaction.
        // Caught: the partition is going away, and the next open recovers a file whose
        // close did not finish (redb then checks every page of it). A compaction that
        // fails (an I/O error) leaves the file at its last durable commit, whose contents
        // are the same as before it: the free pages simply stay.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut db = db;
            if compact {
                let _ = db.compact();
            }
            drop(db)
        }));
    }
}

fn storage_io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: e,
    }
}

fn read_meta(path: &Path, txn: &ReadTransaction, expect: &Expect) -> Result<()> {
    let not_ours = |why: &str| Error::mismatch(path, why.to_string());
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Err(not_ours("no regionkv meta table: not a regionkv partition"));
        }
        Err(e) => return Err(not_ours(&format!("cannot read meta table: {e}"))),
    };
    let get = |k: &str| -> Result<Option<Vec<u8>>> {
        table
            .get(k)
            .map(|g| g.map(|v| v.value().to_vec()))
            .map_err(|e| not_ours(&format!("cannot read meta `{k}`: {e}")))
    };
    let format = get(META_FORMAT)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| not_ours("meta has no format version"))?;
    if format != FORMAT_VERSION {
        return Err(Error::FormatVersion {
            path: path.to_owned(),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let uuid: [u8; 16] = get(META_DB_UUID)?
        .and_then(|v| v.as_slice().try_into().ok())
        .ok_or_else(|| not_ours("meta has no store id"))?;
    let kind = get(META_KIND)?
        .filter(|v| v.len() == 1)
        .map(|v| v[0])
        .ok_or_else(|| not_ours("meta has no partition kind"))?;
    let kind_name = |k: u8| match k {
        KIND_GLOBAL => "a global partition",
        KIND_REGION => "a region partition",
        _ => "an unknown partition kind",
    };
    if kind != expect.kind {
        return Err(not_ours(&format!(
            "file is {}, expected {}",
            kind_name(kind),
            kind_name(expect.kind)
        )));
    }
    if let Some(want) = expect.uuid
        && want != uuid
    {
        return Err(not_ours("file belongs to another regionkv store"));
    }
    if let Some((want_name, want_id)) = &expect.region {
        let name = get(META_REGION_NAME)?
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| not_ours("region meta has no name"))?;
        let id = get(META_REGION_ID)?
            .and_then(|v| <[u8; 2]>::try_from(v.as_slice()).ok())
            .map(u16::from_le_bytes)
            .ok_or_else(|| not_ours("region meta has no id"))?;
        if &name != want_name || id != *want_id {
            return Err(not_ours(&format!(
                "file holds region `{name}` (id {id}), expected region `{want_name}` (id {want_id})"
            )));
        }
    }
    Ok(())
}

/// The verification look of one store (`Partition::verify_file`): the page cache of the
/// transient redb view it opens, held back from the partitions' shares of the budget
/// (`crate::budget`), and the lock that keeps looks one at a time, so that their caches
/// never add up beyond that one.
#[derive(Clone)]
pub(crate) struct Looks {
    cache: usize,
    one_at_a_time: Arc<parking_lot::Mutex<()>>,
}

impl Looks {
    pub fn new(cache: usize) -> Looks {
        Looks {
            cache,
            one_at_a_time: Arc::default(),
        }
    }
}

/// A redb builder whose page cache (read cache and write buffer together) is bounded by
/// `cache` bytes.
fn redb_builder(cache: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(cache);
    b
}

/// What a read-only look at a partition file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No file at the path.
    Missing,
    /// The file is the expected partition (meta checked, `inspect` ran). `verified`: every
    /// page checksum of its committed state was checked, because the caller asked, or
    /// because redb found the file not cleanly closed (it then verifies the file to find the
    /// last commit that is intact, and rebuilds its allocator state).
    Checked { verified: bool },
}

fn already_open(path: &Path) -> Error {
    Error::Config(format!(
        "{} is already open (by this or another process)",
        path.display()
    ))
}

/// A copy-on-write view of a file: reads see the file with this view's own writes laid
/// over it; writes, length changes and syncs never reach the file. redb can then open it
/// read-write — repair a file a crash left unclean, verify every page checksum — while the
/// file stays byte-for-byte as it was.
#[derive(Debug)]
struct Overlay {
    base: Box<dyn redb::StorageBackend>,
    base_len: u64,
    len: parking_lot::Mutex<u64>,
    writes: parking_lot::Mutex<Vec<(u64, Vec<u8>)>>,
    /// Set once the probe has looked: every later call fails. redb's close runs a commit
    /// that reads (and may trip over) damaged pages; failing its I/O makes it give up with
    /// an error instead of panicking inside a destructor, which would abort the process.
    sealed: std::sync::Arc<AtomicBool>,
}

impl Overlay {
    fn check(&self) -> std::io::Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(std::io::Error::other("probe finished"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for Overlay {
    fn len(&self) -> std::io::Result<u64> {
        self.check()?;
        Ok(*self.len.lock())
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.check()?;
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&e| e <= *self.len.lock())
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past end")
            })?;
        out.fill(0);
        let from_base = self.base_len.min(end).saturating_sub(offset) as usize;
        if from_base > 0 {
            self.base.read(offset, &mut out[..from_base])?;
        }
        for (o, data) in self.writes.lock().iter() {
            let (lo, hi) = ((*o).max(offset), (o + data.len() as u64).min(end));
            if lo < hi {
                out[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&data[(lo - o) as usize..(hi - o) as usize]);
            }
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        let mut cur = self.len.lock();
        if len < *cur {
            // Bytes cut off read back as zeros if the length grows again.
            self.writes
                .lock()
                .push((len, vec![0; (*cur - len) as usize]));
        }
        *cur = len;
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        let end = offset + data.len() as u64;
        let mut len = self.len.lock();
        *len = (*len).max(end);
        self.writes.lock().push((offset, data.to_vec()));
        Ok(())
    }
}

/// How [`look`] treats the pages of a file.
#[derive(Debug, Clone, Copy)]
struct Look<'a> {
    /// The page cache of the transient view, in bytes.
    cache: usize,
    /// Verify every page checksum (`set_check_integrity_on_open`).
    verify: bool,
    /// The file's latest commit must verify. Without it redb, finding that commit's pages
    /// damaged, falls back to the commit before it when it can (that is how it recovers a
    /// commit a crash cut short); for the file of a running partition, whose latest commit
    /// is synced, such a fallback means damage.
    latest_must_verify: bool,
    /// What the meta table must say; `None` skips the meta check.
    expect: Option<&'a Expect>,
}

/// What [`look`] saw, besides `inspect`'s result.
struct Looked {
    /// Every page checksum was checked (asked for, or a repair after an unclean close).
    verified: bool,
    /// The file's length.
    bytes: u64,
}

/// Checks an existing partition file without modifying it: redb opens a copy-on-write view
/// of it read-write (repairing it if a crash left it unclean and, with `verify`, checking
/// every page checksum), then its meta is compared with `expect` and `inspect` may read
/// more from the same snapshot. A file that is not the expected partition, or is damaged,
/// is refused with every byte as it was.
///
/// `cache` bounds the view's page cache: an open probes before any partition is open, one
/// file at a time, so any part of the budget will do.
pub(crate) fn probe(
    storage: ReadOnly<'_>,
    path: &Path,
    expect: &Expect,
    verify: bool,
    cache: usize,
    inspect: impl FnOnce(&ReadTransaction) -> Result<()>,
) -> Result<Probe> {
    let how = Look {
        cache,
        verify,
        latest_must_verify: false,
        expect: Some(expect),
    };
    Ok(match look(storage, path, how, inspect)? {
        None => Probe::Missing,
        Some(l) => Probe::Checked {
            verified: l.verified,
        },
    })
}

/// The look of [`probe`] and [`Partition::verify_file`]; `None` if there is no file.
fn look(
    storage: ReadOnly<'_>,
    path: &Path,
    how: Look<'_>,
    inspect: impl FnOnce(&ReadTransaction) -> Result<()>,
) -> Result<Option<Looked>> {
    let Some(ro) = storage.open(path).map_err(|e| storage_io(path, e))? else {
        return Ok(None);
    };
    let base_len = ro.len().map_err(|e| storage_io(path, e))?;
    if base_len == 0 {
        return Err(Error::mismatch(
            path,
            "empty file: not a regionkv partition",
        ));
    }
    let sealed = std::sync::Arc::new(AtomicBool::new(false));
    let view = Overlay {
        base: ro,
        base_len,
        len: parking_lot::Mutex::new(base_len),
        writes: parking_lot::Mutex::new(Vec::new()),
        sealed: sealed.clone(),
    };
    // redb calls its repair callback exactly when it checks the file: asked to
    // (`verify`), or because the file was not closed cleanly. In that check (redb 4's
    // `Database::do_repair`), a progress below 0.6 after the start means the pages of the
    // latest commit failed their checksums and redb is about to fall back to the commit
    // before it.
    let repaired = Arc::new(AtomicBool::new(false));
    let latest_bad = Arc::new(AtomicBool::new(false));
    let callback = {
        let (repaired, latest_bad) = (repaired.clone(), latest_bad.clone());
        let strict = how.latest_must_verify;
        move |s: &mut redb::RepairSession| {
            repaired.store(true, Ordering::Release);
            if s.progress() > 0.0 && s.progress() < 0.6 {
                latest_bad.store(true, Ordering::Release);
                if strict {
                    s.abort();
                }
            }
        }
    };
    // redb trusts the pages it reads unless it verifies them, and a damaged page can make
    // it panic. A panic here becomes an error. The database and its snapshot are kept
    // outside the closure, so that a panic unwinds past them without dropping them
    // (dropping redb's handles while its own panic unwinds could panic again: an abort);
    // they are dropped below, once the view is sealed.
    let mut held_db: Option<Database> = None;
    let mut held_txn: Option<ReadTransaction> = None;
    let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = redb_builder(how.cache);
        builder.set_check_integrity_on_open(how.verify);
        builder.set_repair_callback(callback);
        match builder.create_with_backend(view) {
            Ok(db) => {
                let db: &Database = held_db.insert(db);
                let looked = match db.begin_read() {
                    Ok(txn) => {
                        let txn: &ReadTransaction = held_txn.insert(txn);
                        let r = match how.expect {
                            Some(expect) => read_meta(path, txn, expect),
                            None => Ok(()),
                        }
                        .and_then(|()| inspect(txn));
                        held_txn = None;
                        r
                    }
                    Err(e) => Err(Error::mismatch(path, format!("cannot read: {e}"))),
                };
                // A file whose pages were not all checked: one commit in the view reads
                // what the open's first commit of the file will read beyond the tables
                // (redb's allocator state and freed-page trees), so that damage there
                // refuses the open now, untouched, rather than in that commit.
                let verified = how.verify || repaired.load(Ordering::Acquire);
                match looked {
                    Ok(()) if !verified && how.expect.is_some() => trial_commit(path, db),
                    r => r,
                }
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(already_open(path)),
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(what))) => {
                Err(Error::Corrupt {
                    partition: path.display().to_string(),
                    what,
                })
            }
            Err(redb::DatabaseError::RepairAborted) => Err(Error::Corrupt {
                partition: path.display().to_string(),
                what: "the pages of the file's latest commit fail their checksums".into(),
            }),
            Err(e) => Err(Error::mismatch(
                path,
                format!("not a readable redb file: {e}"),
            )),
        }
    }));
    // The look is over: nothing redb does on close may touch the pages again (its close
    // commit fails instead of meeting a damaged page). After a panic, the drop itself may
    // panic on a lock that panic poisoned: that is caught too.
    sealed.store(true, Ordering::Release);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        drop(held_txn);
        drop(held_db);
    }));
    match looked {
        Ok(Ok(())) => Ok(Some(Looked {
            verified: how.verify || repaired.load(Ordering::Acquire),
            bytes: base_len,
        })),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Corrupt {
            partition: path.display().to_string(),
            what: "damaged redb pages (redb panicked while reading them)".into(),
        }),
    }
}

/// Commits a change that changes nothing (the format version rewritten as it is) in the
/// probe's view of a file.
fn trial_commit(path: &Path, db: &Database) -> Result<()> {
    use redb::ReadableTable;
    let damaged = |e: redb::Error| Error::Corrupt {
        partition: path.display().to_string(),
        what: format!("a trial commit failed: {e}"),
    };
    let w = db.begin_write().map_err(|e| damaged(e.into()))?;
    {
        let mut meta = w.open_table(META).map_err(|e| damaged(e.into()))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| damaged(e.into()))?
            .map(|v| v.value().to_vec());
        if let Some(v) = format {
            meta.insert(META_FORMAT, v.as_slice())
                .map_err(|e| damaged(e.into()))?;
        }
    }
    w.commit().map_err(|e| damaged(e.into()))
}

/// What [`Partition::verify_file`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileCheck {
    /// Every page of the file's committed state passed its checksum.
    Intact { bytes: u64 },
    /// It did not, or the file could not be read as this partition's: why. The partition
    /// is marked damaged.
    Damaged { bytes: u64, what: String },
}

impl Partition {
    /// Checks every page checksum of this partition's file, without modifying it, while
    /// the store runs.
    ///
    /// The check reads the file as it is on disk (its last synced commit) through a
    /// copy-on-write view (as the open's probe does). A write transaction of the partition
    /// is held meanwhile, so no commit can free and reuse the pages of that commit under
    /// the check: writes to this partition wait for it (reads do not). A partition that
    /// refuses writes (poisoned) has no commit to wait for. A damaged partition is reported
    /// with what damaged it; one found damaged now is marked so (it then refuses reads and
    /// writes).
    ///
    /// The caller must not hold a write transaction of this partition.
    pub fn verify_file(&self) -> Result<FileCheck> {
        let bytes = || self.file_len();
        if let Some(why) = self.damaged.get() {
            return Ok(FileCheck::Damaged {
                bytes: bytes(),
                what: why.clone(),
            });
        }
        let hold = if self.is_poisoned() {
            None
        } else {
            // Not `begin_write`: that counts as the partition's use for attributing a panic.
            match self.contain(|| self.db()?.begin_write().at(self)) {
                Ok(w) => Some(w),
                Err(Error::Corrupt { what, .. }) => {
                    return Ok(FileCheck::Damaged {
                        bytes: bytes(),
                        what,
                    });
                }
                Err(e) => return Err(e),
            }
        };
        let how = Look {
            cache: self.looks.cache,
            verify: true,
            latest_must_verify: hold.is_some(),
            expect: None,
        };
        let looked = {
            let _one = self.looks.one_at_a_time.lock();
            look(ReadOnly::new(&*self.storage), &self.path, how, |_| Ok(()))
        };
        if let Some(w) = hold {
            // Nothing was written in it.
            let _ = self.contain(|| w.abort().at(self));
        }
        match looked {
            Ok(Some(l)) => Ok(FileCheck::Intact { bytes: l.bytes }),
            Ok(None) => Ok(self.found_damaged(bytes(), "its file is missing".into())),
            Err(Error::Io { path, source }) => Err(Error::Io { path, source }),
            Err(Error::Corrupt { what, .. }) => Ok(self.found_damaged(bytes(), what)),
            Err(e) => Ok(self.found_damaged(bytes(), e.to_string())),
        }
    }

    /// The length of its file (0 if it cannot be read).
    pub fn file_len(&self) -> u64 {
        ReadOnly::new(&*self.storage)
            .open(&self.path)
            .ok()
            .flatten()
            .and_then(|b| b.len().ok())
            .unwrap_or(0)
    }

    fn found_damaged(&self, bytes: u64, what: String) -> FileCheck {
        let what = format!("page check of {}: {what}", self.path.display());
        self.mark_damaged(&what);
        FileCheck::Damaged { bytes, what }
    }

    /// Marks the partition damaged (the first reason is kept) and poisoned.
    pub(crate) fn mark_damaged(&self, why: &str) {
        let _ = self.damaged.set(why.to_owned());
        self.poison();
    }
}

/// Opens an existing partition file read-write (repairing it if a crash left it so) and
/// checks its meta. Call [`probe`] first, so that a wrong or damaged file is refused
/// untouched (the probe also ran redb's page-checksum check when asked to).
pub(crate) fn open_rw(
    storage: &Arc<dyn Storage>,
    path: &Path,
    name: &str,
    cache: usize,
    looks: &Looks,
    expect: &Expect,
) -> Result<Partition> {
    let rw = storage
        .open(path, false)
        .map_err(|e| storage_io(path, e))?
        .ok_or_else(|| Error::mismatch(path, "file vanished while opening"))?;
    // The probe read what this open reads; a panic here (damage after the probe looked)
    // becomes an error like the probe's. The handles are kept outside the closure, so the
    // unwinding does not drop them; after a panic they are leaked: a drop could panic
    // again, and its close would write to a file this open refuses.
    let mut held_db: Option<Database> = None;
    let mut held_txn: Option<ReadTransaction> = None;
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = redb_builder(cache)
            .create_with_backend(DynBackend(rw))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => already_open(path),
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
                    Error::Corrupt {
                        partition: name.to_owned(),
                        what: format!("{}: {what}", path.display()),
                    }
                }
                e => Error::mismatch(path, format!("cannot open: {e}")),
            })?;
        let db: &Database = held_db.insert(db);
        match db.begin_read() {
            Ok(txn) => {
                let r = read_meta(path, held_txn.insert(txn), expect);
                held_txn = None;
                r
            }
            Err(e) => Err(Error::mismatch(path, format!("cannot read: {e}"))),
        }
    }));
    match opened {
        Ok(Ok(())) => match held_db {
            Some(db) => Ok(Partition::new(name, db, storage, path, looks)),
            None => Err(Error::mismatch(path, "cannot open")),
        },
        Ok(Err(e)) => {
            drop(held_db);
            Err(e)
        }
        Err(_) => {
            std::mem::forget((held_txn, held_db));
            Err(Error::corrupt(
                name,
                format!(
                    "{}: damaged redb pages (redb panicked while opening the file)",
                    path.display()
                ),
            ))
        }
    }
}

pub(crate) use crate::layout::creating_file as creating_path;

/// Creates a new partition file atomically: it is built and synced under a temporary name,
/// then renamed into place, so a crash never leaves a half-made partition at `path`.
pub(crate) fn create_new(
    storage: &Arc<dyn Storage>,
    path: &Path,
    name: &str,
    cache: usize,
    looks: &Looks,
    meta: &[(&str, Vec<u8>)],
) -> Result<Partition> {
    let tmp = creating_path(path);
    // A crash-left attempt of this same creation (the open plan refuses any partition
    // whose own path is this name).
    storage.remove(&tmp).map_err(|e| storage_io(&tmp, e))?;
    {
        let backend = storage.create_new(&tmp).map_err(|e| storage_io(&tmp, e))?;
        // The partition's own share: its database is not open yet, and this one is
        // dropped before it is.
        let db = redb_builder(cache)
            .create_with_backend(DynBackend(backend))
            .map_err(|e| storage_io(&tmp, std::io::Error::other(e.to_string())))?;
        let io = |e: redb::Error| storage_io(&tmp, std::io::Error::other(e.to_string()));
        let w = db.begin_write().map_err(|e| io(e.into()))?;
        {
            let mut t = w.open_table(META).map_err(|e| io(e.into()))?;
            for (k, v) in meta {
                t.insert(*k, v.as_slice()).map_err(|e| io(e.into()))?;
            }
        }
        w.commit().map_err(|e| io(e.into()))?;
    }
    storage
        .rename(&tmp, path)
        .map_err(|e| storage_io(path, e))?;
    let backend = storage
        .open(path, false)
        .map_err(|e| storage_io(path, e))?
        .ok_or_else(|| Error::mismatch(path, "file vanished after creation"))?;
    let db = redb_builder(cache)
        .create_with_backend(DynBackend(backend))
        .map_err(|e| storage_io(path, std::io::Error::other(e.to_string())))?;
    Ok(Partition::new(name, db, storage, path, looks))
}

/// The common meta rows of a new partition.
pub(crate) fn base_meta(uuid: [u8; 16], kind: u8) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (META_FORMAT, FORMAT_VERSION.to_le_bytes().to_vec()),
        (META_DB_UUID, uuid.to_vec()),
        (META_KIND, vec![kind]),
    ]
}

/// Opens a table of a read snapshot; `Ok(None)` when the table was never created (a
/// partition that has not written a table yet reads it as empty). The caller maps the
/// error (most use [`Partition::read_table`]).
pub(crate) fn table_if_exists<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Converts a redb result of one partition into ours: `.at(&part)?` for
/// `.at(&part)?` (an I/O failure poisons the partition, damage becomes
/// [`Error::Corrupt`]).
pub(crate) trait At<T> {
    fn at(self, part: &Partition) -> Result<T>;
}

impl<T, E: Into<redb::Error>> At<T> for std::result::Result<T, E> {
    fn at(self, part: &Partition) -> Result<T> {
        self.map_err(|e| part.err(e))
    }
}

impl Partition {
    /// Opens a table of a read snapshot; `None` when the table was never created (it reads
    /// as empty).
    pub fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        txn: &ReadTransaction,
        def: redb::TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
        table_if_exists(txn, def).at(self)
    }
}
