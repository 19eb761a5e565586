//! The open sequence: [`plan`] looks at every file and checks every choice without
//! writing a byte (a refused open changes nothing), then [`apply`] carries the plan out in
//! crash-safe steps and runs recovery.
//!
//! Also here: the per-process registry of open stores. The catalog's reads and writes
//! live with the global partition (`partition::catalog`).

mod apply;
mod plan;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use parking_lot::{Condvar, Mutex};

use crate::backends::{ReadOnly, Storage};
use crate::builder::Builder;
use crate::db::Db;
use crate::error::{Error, Result};

/// Opens (or creates) the store in `dir` as `b` describes.
pub(crate) fn open(b: Builder, dir: &Path) -> Result<Db> {
    let plan = plan::plan(&b, dir)?;
    apply::apply(plan, &b)
}

pub(crate) use crate::layout::region_file as default_path;

// ---- the per-process registry of open stores ----

type RegistryKey = ((usize, u64), PathBuf);

static OPEN_FILES: LazyLock<(Mutex<HashSet<RegistryKey>>, Condvar)> =
    LazyLock::new(|| (Mutex::new(HashSet::new()), Condvar::new()));

/// How long an open waits for another handle of the same store that is being dropped (its
/// last reference may be held for a moment by its checkpoint thread) before refusing.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The files one open store holds in the registry; released on drop.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    keys: Vec<RegistryKey>,
}

impl Registration {
    /// Registers every path (already resolved) of one store, or none: `Err` names a path
    /// another open store of this process holds.
    fn acquire(storage: ReadOnly<'_>, paths: &[PathBuf]) -> Result<Registration> {
        let scope = storage.instance_key();
        let (lock, released) = &*OPEN_FILES;
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        let mut open = lock.lock();
        while let Some(p) = paths.iter().find(|p| open.contains(&(scope, (*p).clone()))) {
            if released.wait_until(&mut open, deadline).timed_out() {
                return Err(Error::Config(format!(
                    "{} is already open in this process: use the open Db (it is Clone) or \
                     close it and drop every handle first",
                    p.display()
                )));
            }
        }
        let keys: Vec<RegistryKey> = paths.iter().map(|p| (scope, p.clone())).collect();
        open.extend(keys.iter().cloned());
        Ok(Registration { keys })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (lock, released) = &*OPEN_FILES;
        let mut open = lock.lock();
        for k in &self.keys {
            open.remove(k);
        }
        released.notify_all();
    }
}

/// The storage a builder names, or ordinary files.
pub(crate) fn storage_of(b: &Builder) -> Arc<dyn Storage> {
    b.storage
        .clone()
        .unwrap_or_else(|| Arc::new(crate::backends::FileStorage))
}
