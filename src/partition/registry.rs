//! The per-process registry of open stores: a second open of a store whose files this
//! process holds is refused (after a short wait for a handle being dropped), whatever the
//! storage backend's locking does.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::LazyLock;

use parking_lot::{Condvar, Mutex};

use crate::backends::ReadOnly;
use crate::error::{Error, Result};

type RegistryKey = ((usize, u64), PathBuf);

static OPEN_FILES: LazyLock<(Mutex<HashSet<RegistryKey>>, Condvar)> =
    LazyLock::new(|| (Mutex::new(HashSet::new()), Condvar::new()));

/// How long an open waits for another handle of the same store that is being dropped (its
/// last reference may be held for a moment by its checkpoint thread) before refusing.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The files one open store holds in the registry; released on drop. Shared (`Arc`) by
/// the store and every region and snapshot of it, so the files stay registered while any
/// record, row or hit still holds a region file open, after the `Db` itself is gone.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    keys: Vec<RegistryKey>,
}

impl Registration {
    /// Registers every path (already resolved) of one store, or none: `Err` names a path
    /// another open store of this process holds.
    pub fn acquire(storage: ReadOnly<'_>, paths: &[PathBuf]) -> Result<Registration> {
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
