//! Where partition files live: the [`Storage`] trait, the default [`FileStorage`], and
//! [`SimStorage`], an in-memory storage that simulates crashes and injects I/O faults for
//! tests and fuzzing.
//!
//! Fault injection happens here, at the storage boundary, never through hooks inside the
//! engine: the engine under test is the engine users run.

use std::collections::HashMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Opens and creates the files that hold partitions.
///
/// The default is [`FileStorage`]. Implement it to put partitions somewhere else, or use
/// [`SimStorage`] in tests.
///
/// # Exclusive access
///
/// A partition file must have one writer at a time. The engine keeps a per-process registry
/// of the files its open stores hold (keyed by [`Storage::instance_key`] and
/// [`Storage::resolve`]), so a second `open` of the same store in one process is refused
/// whatever the backend does. Across processes, exclusivity is the backend's job: a
/// backend handed out by `open(path, false)` or `create_new` should fail, or make redb's
/// lock calls fail, while another process holds the same file ([`FileStorage`] relies on
/// redb's file locks; [`SimStorage`] refuses a second read-write open of a file until the
/// first backend is dropped or the simulated process crashes).
pub trait Storage: Send + Sync + Debug + 'static {
    /// Opens an existing file; `Ok(None)` if there is none at `path`. With `read_only` the
    /// returned backend must not be able to modify the file.
    fn open(&self, path: &Path, read_only: bool) -> io::Result<Option<Box<dyn StorageBackend>>>;

    /// The path in the form that names one file: two paths that resolve to the same value
    /// are the same file. Used to refuse two regions (or a region and the global file) on
    /// one file, and as the key of the per-process registry. The default makes the path
    /// absolute and resolves `.` and `..` lexically.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(lexical_absolute(path))
    }

    /// Whether a file could be created at `path` (its folders included), checked before an
    /// open writes anything so that an open that cannot finish is refused untouched. The
    /// default says yes.
    fn check_creatable(&self, path: &Path) -> io::Result<()> {
        let _ = path;
        Ok(())
    }

    /// Storages that return the same key see the same files (the registry of open stores
    /// is keyed by it). The default is this value's address, which is right for a storage
    /// that is not cloned.
    fn instance_key(&self) -> (usize, u64) {
        (self as *const Self as *const () as usize, 0)
    }
    /// Creates a new, empty file (its parent folders too); fails if the file exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>>;
    /// Atomically renames `from` to `to` (durably, where the medium allows).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file; not an error if it does not exist.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// Partitions as ordinary files (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStorage;

impl Storage for FileStorage {
    fn open(&self, path: &Path, read_only: bool) -> io::Result<Option<Box<dyn StorageBackend>>> {
        if path.is_dir() {
            return Err(io::Error::other(format!(
                "{} is a directory, expected a partition file",
                path.display()
            )));
        }
        let file = match OpenOptions::new().read(true).write(!read_only).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Box::new(file_backend(file)?)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(file_backend(file)?))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)?;
        if let Some(parent) = to.parent() {
            // Make the rename itself durable.
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Resolves symbolic links in the part of the path that exists.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let abs = lexical_absolute(path);
        let mut existing = abs.as_path();
        let mut rest = Vec::new();
        loop {
            if let Ok(real) = std::fs::canonicalize(existing) {
                let mut out = real;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return Ok(abs),
            }
        }
    }

    /// The file name must fit the usual 255-byte limit, the nearest existing ancestor must
    /// be a folder that is not read-only, and nothing in between may exist as a non-folder.
    fn check_creatable(&self, path: &Path) -> io::Result<()> {
        let abs = lexical_absolute(path);
        if abs.file_name().is_some_and(|n| n.len() > 255) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidFilename,
                "file name longer than 255 bytes",
            ));
        }
        let mut cur = abs.parent();
        while let Some(dir) = cur {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {
                    if m.permissions().readonly() {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("{} is read-only", dir.display()),
                        ));
                    }
                    return Ok(());
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} exists and is not a folder", dir.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => cur = dir.parent(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn instance_key(&self) -> (usize, u64) {
        // One file system.
        (0, 0)
    }
}

/// `path` made absolute (against the current folder) with `.` and `..` resolved lexically.
pub(crate) fn lexical_absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let joined;
    let path = if path.is_absolute() {
        path
    } else {
        joined = std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path);
        &joined
    };
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn file_backend(file: File) -> io::Result<FileBackend> {
    FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))
}

/// Adapts a boxed backend to redb's `impl StorageBackend` parameters, forwarding every
/// method, the lock methods included (dropping them would silently lose file locking).
#[derive(Debug)]
pub(crate) struct DynBackend(pub Box<dyn StorageBackend>);

impl StorageBackend for DynBackend {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> io::Result<()> {
        self.0.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(s, e)
    }
}

/// Which storage operations count towards a [`SimStorage`] fault countdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    /// Writes and length changes.
    Writes,
    /// `sync_data` calls.
    Syncs,
    /// Both.
    Any,
}

/// An in-memory storage that simulates power loss and I/O failures.
///
/// Each file keeps a *live* image (what the process sees) and a *durable* image (what
/// survives a crash): `sync_data` copies live to durable, and [`SimStorage::crash`] throws
/// every live image away, so writes that were not synced are really lost, as in redb's own
/// crash-consistency tests. [`SimStorage::fail_after`] makes the Nth counted operation and
/// every later mutation fail, as a dying disk would. Cloning shares the same files.
///
/// ```
/// use regionkv::{Db, SimStorage};
/// let sim = SimStorage::new();
/// let db = Db::builder().region("us").storage(sim.clone()).open("/sim")?;
/// drop(db);
/// sim.crash(); // every unsynced write is gone; backends of the old Db are dead
/// let db = Db::builder().region("us").storage(sim.clone()).open("/sim")?;
/// # Ok::<(), regionkv::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    inner: Arc<SimInner>,
}

#[derive(Debug, Default)]
struct SimInner {
    files: Mutex<HashMap<PathBuf, Arc<SimFile>>>,
    generation: AtomicU64,
    fault: Mutex<Fault>,
    syncs: AtomicU64,
    writes: AtomicU64,
}

#[derive(Debug, Default)]
struct Fault {
    /// Counted operations left before the fault trips.
    countdown: Option<(u64, FaultOn)>,
    /// Only operations on this file count and fail (all files if `None`).
    file: Option<PathBuf>,
    tripped: bool,
}

#[derive(Debug, Default)]
struct SimFile {
    live: RwLock<Vec<u8>>,
    durable: Mutex<Vec<u8>>,
    syncs: AtomicU64,
    /// The generation of the simulated process whose read-write backend holds the file,
    /// if one does (the model of an exclusive file lock).
    writer: Mutex<Option<u64>>,
}

#[derive(Debug)]
struct SimBackend {
    file: Arc<SimFile>,
    path: PathBuf,
    storage: Arc<SimInner>,
    generation: u64,
    read_only: bool,
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        if !self.read_only {
            let mut w = self.file.writer.lock();
            if *w == Some(self.generation) {
                *w = None;
            }
        }
    }
}

fn sim_err(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O failure: {what}"))
}

impl SimInner {
    /// Counts one operation of kind `kind` on `path`; `Err` if the fault has tripped (now
    /// or before) for that file.
    fn count(&self, kind: FaultOn, path: &Path) -> io::Result<()> {
        let mut f = self.fault.lock();
        if f.file.as_deref().is_some_and(|p| p != path) {
            return Ok(());
        }
        if f.tripped {
            return Err(sim_err("device failed earlier"));
        }
        if let Some((left, on)) = f.countdown.as_mut()
            && (*on == FaultOn::Any || *on == kind)
        {
            if *left == 0 {
                f.tripped = true;
                return Err(sim_err("injected fault"));
            }
            *left -= 1;
        }
        Ok(())
    }
}

impl SimBackend {
    fn alive(&self) -> io::Result<()> {
        if self.storage.generation.load(Ordering::SeqCst) != self.generation {
            return Err(sim_err("the process that opened this file crashed"));
        }
        Ok(())
    }
    fn mutate(&self, kind: FaultOn) -> io::Result<()> {
        self.alive()?;
        if self.read_only {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"));
        }
        self.storage.count(kind, &self.path)
    }
}

impl StorageBackend for SimBackend {
    fn len(&self) -> io::Result<u64> {
        self.alive()?;
        Ok(self.file.live.read().len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.alive()?;
        let live = self.file.live.read();
        let start = usize::try_from(offset).map_err(|_| sim_err("offset"))?;
        let end = start
            .checked_add(out.len())
            .filter(|&e| e <= live.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
        out.copy_from_slice(&live[start..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mutate(FaultOn::Writes)?;
        let len = usize::try_from(len).map_err(|_| sim_err("length"))?;
        self.file.live.write().resize(len, 0);
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.mutate(FaultOn::Syncs)?;
        let live = self.file.live.read();
        let mut durable = self.file.durable.lock();
        durable.clear();
        durable.extend_from_slice(&live);
        self.file.syncs.fetch_add(1, Ordering::SeqCst);
        self.storage.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.mutate(FaultOn::Writes)?;
        let start = usize::try_from(offset).map_err(|_| sim_err("offset"))?;
        let end = start
            .checked_add(data.len())
            .ok_or_else(|| sim_err("offset"))?;
        let mut live = self.file.live.write();
        if live.len() < end {
            live.resize(end, 0);
        }
        live[start..end].copy_from_slice(data);
        self.storage.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl SimStorage {
    /// An empty simulated disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulates power loss: every file goes back to its durable image, backends handed out
    /// before are dead (every call on them fails), and any injected fault is cleared.
    pub fn crash(&self) {
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        for file in self.inner.files.lock().values() {
            let durable = file.durable.lock().clone();
            *file.live.write() = durable;
        }
        *self.inner.fault.lock() = Fault::default();
    }

    /// After `n` more counted operations succeed, the next one fails, and so does every
    /// later write, length change and sync (reads keep working), until [`SimStorage::crash`].
    pub fn fail_after(&self, n: u64, on: FaultOn) {
        *self.inner.fault.lock() = Fault {
            countdown: Some((n, on)),
            file: None,
            tripped: false,
        };
    }

    /// Like [`SimStorage::fail_after`], but only operations on the file at `path` count
    /// and fail: the other files keep working, as when one volume dies.
    pub fn fail_file_after(&self, path: impl AsRef<Path>, n: u64, on: FaultOn) {
        *self.inner.fault.lock() = Fault {
            countdown: Some((n, on)),
            file: Some(path.as_ref().to_owned()),
            tripped: false,
        };
    }

    /// Removes any pending fault without crashing.
    pub fn clear_fault(&self) {
        *self.inner.fault.lock() = Fault::default();
    }

    /// Whether an injected fault has fired.
    pub fn fault_tripped(&self) -> bool {
        self.inner.fault.lock().tripped
    }

    /// Total `sync_data` calls that succeeded, over all files.
    pub fn syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::SeqCst)
    }

    /// Successful `sync_data` calls on one file (0 if it does not exist).
    pub fn syncs_of(&self, path: impl AsRef<Path>) -> u64 {
        self.inner
            .files
            .lock()
            .get(path.as_ref())
            .map_or(0, |f| f.syncs.load(Ordering::SeqCst))
    }

    /// Total successful writes, over all files.
    pub fn writes(&self) -> u64 {
        self.inner.writes.load(Ordering::SeqCst)
    }

    /// The live bytes of a file (what the running process sees).
    pub fn live_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let files = self.inner.files.lock();
        files.get(path.as_ref()).map(|f| f.live.read().clone())
    }

    /// Replaces a file's live and durable bytes (to plant damaged files in tests).
    pub fn set_bytes(&self, path: impl AsRef<Path>, bytes: Vec<u8>) {
        let mut files = self.inner.files.lock();
        let file = files.entry(path.as_ref().to_owned()).or_default();
        *file.durable.lock() = bytes.clone();
        *file.live.write() = bytes;
    }

    /// The paths of all files.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = self.inner.files.lock().keys().cloned().collect();
        v.sort();
        v
    }

    fn backend(
        &self,
        path: &Path,
        file: Arc<SimFile>,
        read_only: bool,
    ) -> io::Result<Box<dyn StorageBackend>> {
        let generation = self.inner.generation.load(Ordering::SeqCst);
        if !read_only {
            // One read-write holder at a time, as a file lock gives; a crashed process's
            // lock is gone with it.
            let mut w = file.writer.lock();
            if *w == Some(generation) {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is already open for writing", path.display()),
                ));
            }
            *w = Some(generation);
        }
        Ok(Box::new(SimBackend {
            file,
            path: path.to_owned(),
            storage: self.inner.clone(),
            generation,
            read_only,
        }))
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, read_only: bool) -> io::Result<Option<Box<dyn StorageBackend>>> {
        let file = self.inner.files.lock().get(path).cloned();
        file.map(|f| self.backend(path, f, read_only)).transpose()
    }

    fn instance_key(&self) -> (usize, u64) {
        // Clones share the disk; a simulated crash ends the process that held it.
        (
            Arc::as_ptr(&self.inner) as usize,
            self.inner.generation.load(Ordering::SeqCst),
        )
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageBackend>> {
        self.inner.count(FaultOn::Writes, path)?;
        let mut files = self.inner.files.lock();
        if files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let file = Arc::new(SimFile::default());
        files.insert(path.to_owned(), file.clone());
        drop(files);
        self.backend(path, file, false)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        // A rename is a metadata operation made durable at once (FileStorage syncs the dir).
        self.inner.count(FaultOn::Syncs, to)?;
        let mut files = self.inner.files.lock();
        let file = files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        files.insert(to.to_owned(), file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.files.lock().remove(path);
        Ok(())
    }
}
