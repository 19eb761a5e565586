//! Test support: [`SimStorage`], an in-memory [`Storage`] that simulates power loss and
//! injects I/O faults, for this crate's tests, its fuzz targets and yours.
//!
//! Not for production data: everything lives in memory. It is public so that a service
//! can test its own crash handling against the same engine its users run. Fault injection
//! happens at the storage boundary, never through hooks inside the engine: the engine
//! under test is the engine users run.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use redb::StorageBackend;

use crate::backends::Storage;

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
/// use regionkv::Db;
/// use regionkv::testing::SimStorage;
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
    /// How long each `sync_data` takes, in microseconds (a real disk's flush).
    sync_micros: AtomicU64,
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
        let pause = self.storage.sync_micros.load(Ordering::Relaxed);
        if pause > 0 {
            std::thread::sleep(std::time::Duration::from_micros(pause));
        }
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

    /// Makes every later `sync_data` take `latency` (as a disk's flush does), so that
    /// concurrent commits overlap as they do on real storage.
    pub fn set_sync_latency(&self, latency: std::time::Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.inner.sync_micros.store(micros, Ordering::Relaxed);
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
