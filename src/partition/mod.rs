//! One redb file per partition: opening with the meta check, creating atomically, and the
//! poison flag that refuses writes after an I/O failure.
//!
//! This is the one internal interface the protocol talks to; a network-backed partition
//! (the global partition on a shared database, for one process per region site) could
//! replace it without touching the protocol.

pub(crate) mod catalog;
pub(crate) mod global;
pub(crate) mod region;
pub(crate) mod registry;
pub(crate) mod schemas;
pub(crate) mod set;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::backends::{DynBackend, ReadOnly, Storage};
use crate::error::{Error, Result};
use crate::schema::*;

/// An open partition file.
pub(crate) struct Partition {
    /// `global` or the region's name; used in errors.
    pub name: String,
    pub db: Database,
    poisoned: AtomicBool,
    /// Schema checks of user tables that passed (see [`Partition::schema_checked`]).
    pub schemas: SchemaChecks,
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
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Refuses work after an I/O failure.
    pub fn check(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(Error::Poisoned(self.name.clone()));
        }
        Ok(())
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

    pub fn begin_write(&self) -> Result<WriteTransaction> {
        self.check()?;
        self.db.begin_write().at(self)
    }

    /// A write transaction that commits without fsync (made durable by a later synced
    /// commit of the same partition).
    pub fn begin_write_unsynced(&self) -> Result<WriteTransaction> {
        let mut w = self.begin_write()?;
        w.set_durability(redb::Durability::None).at(self)?;
        Ok(w)
    }

    pub fn commit(&self, w: WriteTransaction) -> Result<()> {
        w.commit().at(self)
    }

    /// Commits a change that no later step rebuilds (account creation, catalog changes):
    /// a failed commit may still be durable (redb may have written it before the failing
    /// sync), so its failure is [`Error::OutcomeUnknown`], never "nothing was written".
    pub fn commit_settled(&self, w: WriteTransaction) -> Result<()> {
        w.commit().map_err(|e| {
            let _ = self.err(redb::Error::PreviousIo); // poison, as for any I/O failure
            Error::OutcomeUnknown {
                partition: self.name.clone(),
                source: Box::new(e.into()),
            }
        })
    }

    pub fn begin_read(&self) -> Result<ReadTransaction> {
        self.db.begin_read().at(self)
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
    /// The file is the expected partition (meta checked, `inspect` ran).
    Checked,
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

/// Checks an existing partition file without modifying it: redb opens a copy-on-write view
/// of it read-write (repairing it if a crash left it unclean and, with `verify`, checking
/// every page checksum), then its meta is compared with `expect` and `inspect` may read
/// more from the same snapshot. A file that is not the expected partition, or is damaged,
/// is refused with every byte as it was.
pub(crate) fn probe(
    storage: ReadOnly<'_>,
    path: &Path,
    expect: &Expect,
    verify: bool,
    inspect: impl FnOnce(&ReadTransaction) -> Result<()>,
) -> Result<Probe> {
    let Some(ro) = storage.open(path).map_err(|e| storage_io(path, e))? else {
        return Ok(Probe::Missing);
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
    // redb trusts the pages it reads unless it verifies them, and a damaged page can make
    // it panic. A panic here becomes an error; the database and snapshot are leaked rather
    // than dropped while unwinding, because dropping them after such a panic panics again.
    let look = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut builder = redb_builder(1 << 20);
        builder.set_check_integrity_on_open(verify);
        match builder.create_with_backend(view) {
            Ok(db) => {
                // Leaked only if a panic unwinds through here; every return drops both
                // (and with them the file's descriptor).
                let db = std::mem::ManuallyDrop::new(db);
                let looked = match db.begin_read() {
                    Ok(txn) => {
                        let txn = std::mem::ManuallyDrop::new(txn);
                        let r = read_meta(path, &txn, expect).and_then(|()| inspect(&txn));
                        drop(std::mem::ManuallyDrop::into_inner(txn));
                        r
                    }
                    Err(e) => Err(Error::mismatch(path, format!("cannot read: {e}"))),
                };
                // The look is over: nothing redb does on close may touch the pages again.
                sealed.store(true, Ordering::Release);
                drop(std::mem::ManuallyDrop::into_inner(db));
                looked.map(|()| Probe::Checked)
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(already_open(path)),
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(what))) => {
                Err(Error::Corrupt {
                    partition: path.display().to_string(),
                    what,
                })
            }
            Err(e) => Err(Error::mismatch(
                path,
                format!("not a readable redb file: {e}"),
            )),
        }
    }));
    match look {
        Ok(r) => r,
        Err(_) => Err(Error::Corrupt {
            partition: path.display().to_string(),
            what: "damaged redb pages (redb panicked while reading them)".into(),
        }),
    }
}

/// Opens an existing partition file read-write (repairing it if a crash left it so) and
/// checks its meta. Call [`probe`] first, so that a wrong or damaged file is refused
/// untouched (the probe also ran redb's page-checksum check).
pub(crate) fn open_rw(
    storage: &dyn Storage,
    path: &Path,
    name: &str,
    cache: usize,
    expect: &Expect,
) -> Result<Partition> {
    let rw = storage
        .open(path, false)
        .map_err(|e| storage_io(path, e))?
        .ok_or_else(|| Error::mismatch(path, "file vanished while opening"))?;
    let db = redb_builder(cache)
        .create_with_backend(DynBackend(rw))
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => already_open(path),
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => Error::Corrupt {
                partition: name.to_owned(),
                what: format!("{}: {what}", path.display()),
            },
            e => Error::mismatch(path, format!("cannot open: {e}")),
        })?;
    let txn = db
        .begin_read()
        .map_err(|e| Error::mismatch(path, format!("cannot read: {e}")))?;
    read_meta(path, &txn, expect)?;
    drop(txn);
    Ok(Partition {
        name: name.to_owned(),
        db,
        poisoned: AtomicBool::new(false),
        schemas: SchemaChecks::default(),
    })
}

pub(crate) use crate::layout::creating_file as creating_path;

/// Creates a new partition file atomically: it is built and synced under a temporary name,
/// then renamed into place, so a crash never leaves a half-made partition at `path`.
pub(crate) fn create_new(
    storage: &dyn Storage,
    path: &Path,
    name: &str,
    cache: usize,
    meta: &[(&str, Vec<u8>)],
) -> Result<Partition> {
    let tmp = creating_path(path);
    // A crash-left attempt of this same creation (the open plan refuses any partition
    // whose own path is this name).
    storage.remove(&tmp).map_err(|e| storage_io(&tmp, e))?;
    {
        let backend = storage.create_new(&tmp).map_err(|e| storage_io(&tmp, e))?;
        let db = redb_builder(1 << 20)
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
    Ok(Partition {
        name: name.to_owned(),
        db,
        poisoned: AtomicBool::new(false),
        schemas: SchemaChecks::default(),
    })
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
