//! `Db::builder()`: options with documented defaults. The open sequence is `crate::open`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backends::Storage;
use crate::db::Db;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::limits::DEFAULT_MAX_VALUE;

/// Default total page-cache budget, split across all open partitions.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// Default memory of the unique-index cache ([`Builder::unique_cache_size`]).
pub const DEFAULT_UNIQUE_CACHE_BYTES: usize = 16 << 20;

/// Default memory of the routing cache ([`Builder::routing_cache_size`]).
pub const DEFAULT_ROUTING_CACHE_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub(crate) enum RegionSpec {
    Open { name: String, path: Option<PathBuf> },
    Disabled { name: String },
}

/// Configures and opens a [`Db`]. Created by [`Db::builder`].
///
/// Defaults: cache budget 256 MiB in total (split evenly over the open partitions), values
/// up to 16 MiB, a checkpoint every 1,024 unique writes or 1 s, whichever comes first, a
/// digest key generated once and kept in the global partition, every page verified at open
/// only for files not closed cleanly ([`Builder::verify_on_open`]).
#[derive(Debug, Clone)]
pub struct Builder {
    pub(crate) regions: Vec<RegionSpec>,
    pub(crate) default_region: Option<String>,
    pub(crate) cache_bytes: usize,
    pub(crate) unique_cache_bytes: usize,
    pub(crate) routing_cache_bytes: usize,
    pub(crate) max_value: usize,
    pub(crate) checkpoint_every: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) digest_key: Option<[u8; 32]>,
    pub(crate) storage: Option<Arc<dyn Storage>>,
    pub(crate) verify_on_open: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            regions: Vec::new(),
            default_region: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
            unique_cache_bytes: DEFAULT_UNIQUE_CACHE_BYTES,
            routing_cache_bytes: DEFAULT_ROUTING_CACHE_BYTES,
            max_value: DEFAULT_MAX_VALUE,
            checkpoint_every: 1024,
            checkpoint_interval: Duration::from_secs(1),
            digest_key: None,
            storage: None,
            verify_on_open: false,
        }
    }
}

impl Builder {
    /// Opens region `name` at `<dir>/regions/<name>.redb`.
    pub fn region(mut self, name: impl Into<String>) -> Self {
        self.regions.push(RegionSpec::Open {
            name: name.into(),
            path: None,
        });
        self
    }

    /// Opens region `name` at `path` (e.g. a volume mounted in that region).
    pub fn region_at(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.regions.push(RegionSpec::Open {
            name: name.into(),
            path: Some(path.into()),
        });
        self
    }

    /// Marks region `name` disabled (recorded in the catalog): its file is not opened, its
    /// data stays, and reads and writes to it return [`Error::RegionDisabled`]. A region
    /// the catalog knows must be listed with [`Builder::region`] or disabled here.
    pub fn disable_region(mut self, name: impl Into<String>) -> Self {
        self.regions
            .push(RegionSpec::Disabled { name: name.into() });
        self
    }

    /// The region new accounts and tools use when none is named. Defaults to the one
    /// recorded in the store, else the first region listed.
    pub fn default_region(mut self, name: impl Into<String>) -> Self {
        self.default_region = Some(name.into());
        self
    }

    /// Total page-cache budget in bytes, split over the open partitions (redb's own default
    /// is 1 GiB per file).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Memory for the unique-index cache (default [`DEFAULT_UNIQUE_CACHE_BYTES`], 16 MiB;
    /// 0 turns it off): global index entries that `find_unique` and `is_taken` read from
    /// memory instead of the global file, evicted by CLOCK, kept coherent by every commit
    /// (docs/design.md, "Unique-index cache"). Hits and misses are in
    /// [`Db::stats`](crate::Db::stats). About 250 bytes per cached value.
    pub fn unique_cache_size(mut self, bytes: usize) -> Self {
        self.unique_cache_bytes = bytes;
        self
    }

    /// Memory for the routing cache (default [`DEFAULT_ROUTING_CACHE_BYTES`], 16 MiB; 0
    /// turns it off): the accounts (home, allowed regions, limit) every read and write
    /// looks up, 190 bytes each (more for a name over 38 bytes or over 11 regions),
    /// evicted by CLOCK; a miss reads the account from the global file. Its slots are
    /// allocated when the store opens and never per account, so memory does not grow with
    /// the number of tenants ever touched (docs/design.md, "Memory").
    /// Hits and misses are in [`Db::stats`](crate::Db::stats).
    pub fn routing_cache_size(mut self, bytes: usize) -> Self {
        self.routing_cache_bytes = bytes;
        self
    }

    /// Largest encoded value accepted by a write (default 16 MiB).
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value = bytes;
        self
    }

    /// Checkpoint after this many unique writes (default 1,024) or this much time
    /// (default 1 s), whichever comes first. A checkpoint is one synced global commit.
    pub fn checkpoint_budget(mut self, every: u64, interval: Duration) -> Self {
        self.checkpoint_every = every.max(1);
        self.checkpoint_interval = interval;
        self
    }

    /// The key of the digests that the global unique index stores instead of values. Used
    /// only when the store is created (it is then kept in the global partition); opening an
    /// existing store with a different key is an error.
    pub fn digest_key(mut self, key: [u8; 32]) -> Self {
        self.digest_key = Some(key);
        self
    }

    /// Whether every page checksum of every partition file is verified at each open
    /// (default: `false`).
    ///
    /// Either way, a file that was not closed cleanly (a crash, a power loss, a process
    /// killed) is verified: redb checks every page of such a file to recover it, and a
    /// damaged one is refused with [`Error::Corrupt`] before anything is written
    /// ([`Db::verified_at_open`] lists them). A cleanly closed file is as redb wrote it
    /// unless something changed it since (bit rot, a bad copy, another program): by
    /// default its pages are trusted, so an open costs the same whatever the store's size.
    /// `true` checks every file at every open (it reads every file once, in time
    /// proportional to the store's size: README, "Measured figures"), so such damage is
    /// refused up front.
    ///
    /// Without the check, damage is found when it is met: redb reports it, a record fails
    /// its own checksum, or redb panics on the page, which becomes [`Error::Corrupt`]
    /// naming the partition, and that partition alone refuses reads and writes from then
    /// on. Damage to a table's index pages, or to an internal row that has no checksum of
    /// its own, can also make a record or an owned unique value read as absent (the value
    /// then looks free), so run [`Db::verify`] after restoring files, on a schedule, or
    /// after any `Error::Corrupt`.
    pub fn verify_on_open(mut self, verify: bool) -> Self {
        self.verify_on_open = verify;
        self
    }

    /// Where partition files live (default: [`FileStorage`](crate::FileStorage), ordinary files).
    pub fn storage(mut self, storage: impl Storage) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Creates or opens the store in `dir`: `<dir>/global.redb` and one file per region.
    ///
    /// Opening is a plan, then its application. The plan writes nothing: it checks every
    /// name, path and choice (the same file given twice, the global file's path, a folder
    /// that cannot be created, the default region), and every existing file's identity
    /// and integrity, so **a refused open leaves every file as it was**. The application
    /// is crash-safe: interrupted anywhere, the store opens with its previous
    /// configuration, or the new one completes at its next open. Then recovery settles
    /// any unique write a crash interrupted.
    ///
    /// ```
    /// # use regionkv::{Db, Error};
    /// # let dir = tempfile::tempdir()?;
    /// Db::builder().region("us").region("eu").open(dir.path())?.close()?;
    /// // The default region cannot be disabled; nothing is written when refused.
    /// let r = Db::builder().region("us").disable_region("eu").default_region("eu").open(dir.path());
    /// assert!(matches!(r, Err(Error::Config(_))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::PartitionMismatch`] or [`Error::FormatVersion`] for a file that is not the
    /// expected partition; [`Error::Corrupt`] for a damaged one; [`Error::Config`] when the
    /// regions listed do not match the catalog (a known region neither listed nor
    /// disabled, a region's file missing), when two regions (or a region and the global
    /// file) are given one file, when the default region is disabled, or when the store is
    /// already open in this process; [`Error::InvalidArgument`] for a bad region name or
    /// an empty path; [`Error::Io`] for a folder that cannot be created; storage errors.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Db> {
        crate::open::open(self, dir.as_ref())
    }
}
