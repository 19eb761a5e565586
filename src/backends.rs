//! Where partition files live: the [`Storage`] trait and the default [`FileStorage`].
//! The fault-injecting in-memory storage for tests is [`crate::testing::SimStorage`].

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Opens and creates the files that hold partitions.
///
/// The default is [`FileStorage`]. Implement it to put partitions somewhere else, or use
/// [`SimStorage`](crate::testing::SimStorage) in tests.
///
/// # Exclusive access
///
/// A partition file must have one writer at a time. The engine keeps a per-process registry
/// of the files its open stores hold (keyed by [`Storage::instance_key`] and
/// [`Storage::resolve`]), so a second `open` of the same store in one process is refused
/// whatever the backend does. Across processes, exclusivity is the backend's job: a
/// backend handed out by `open(path, false)` or `create_new` should fail, or make redb's
/// lock calls fail, while another process holds the same file ([`FileStorage`] relies on
/// redb's file locks; [`SimStorage`](crate::testing::SimStorage) refuses a second read-write open of a file until the
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

/// The read-only face of a [`Storage`]: all that phase 1 of open (the plan, which must
/// write nothing) is given. It cannot create, rename or remove a file, and every file it
/// opens is opened read-only.
#[derive(Clone, Copy)]
pub(crate) struct ReadOnly<'a>(&'a dyn Storage);

impl<'a> ReadOnly<'a> {
    pub fn new(storage: &'a dyn Storage) -> Self {
        ReadOnly(storage)
    }

    /// Opens `path` read-only; `None` if there is no file there.
    pub fn open(&self, path: &Path) -> io::Result<Option<Box<dyn StorageBackend>>> {
        self.0.open(path, true)
    }

    pub fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        self.0.resolve(path)
    }

    pub fn check_creatable(&self, path: &Path) -> io::Result<()> {
        self.0.check_creatable(path)
    }

    pub fn instance_key(&self) -> (usize, u64) {
        self.0.instance_key()
    }
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
