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

/// Default page-cache budget of a store, shared by all its open partitions
/// ([`Builder::cache_size`]).
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
/// Defaults: page-cache budget 256 MiB in total (shared by the open partitions), values
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
    pub(crate) compact_on_close: bool,
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
            compact_on_close: true,
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

    /// The page-cache budget of the whole store, in bytes (default [`DEFAULT_CACHE_BYTES`],
    /// 256 MiB; redb's own default is 1 GiB per file): the redb page caches (read cache and
    /// write buffer) of all open partition files together never exceed it.
    ///
    /// It is shared at open, once (redb cannot resize a cache later): every open partition
    /// (the global file and each enabled region; disabled regions take nothing) gets
    /// [`MIN_PARTITION_CACHE`](crate::MIN_PARTITION_CACHE) (64 KiB), 1/64 of the budget
    /// (64 KiB to 1 MiB) is held back for [`Db::verify`](crate::Db::verify)'s transient
    /// view of a file, and the rest goes to the partitions in proportion to their file
    /// sizes at open (evenly in a new store; a region created by this open gets the floor
    /// until the next). [`Db::cache_budget`](crate::Db::cache_budget) lists the shares.
    /// The routing and unique-index caches ([`Builder::routing_cache_size`],
    /// [`Builder::unique_cache_size`]) have budgets of their own, on top of this one.
    ///
    /// The minimum is `(regions + 2) × MIN_PARTITION_CACHE`: one floor per open region,
    /// one for the global file, one for verification. [`Builder::open`] refuses less with
    /// [`Error::Config`] naming it, before any file is read or written.
    ///
    /// ```
    /// # use regionkv::{Db, Error, MIN_PARTITION_CACHE};
    /// # let dir = tempfile::tempdir()?;
    /// let b = Db::builder().region("us").region("eu");
    /// let r = b.clone().cache_size(4 * MIN_PARTITION_CACHE - 1).open(dir.path());
    /// assert!(matches!(r, Err(Error::Config(_))));
    /// let db = b.cache_size(4 << 20).open(dir.path())?;
    /// assert!(db.cache_budget().used() <= 4 << 20);
    /// # db.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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

    /// Whether [`Db::close`](crate::Db::close) compacts every file (default `true`).
    ///
    /// Unique writes commit the global file without a sync twice per group, and redb
    /// reuses the pages those commits free only after a synced commit, so a running store's
    /// files carry free pages (the global file about its own size again between
    /// checkpoints). A clean close gives them back with redb's `compact` (crash safe; it
    /// moves pages only): about half the disk of the peers workload. It costs time
    /// proportional to the files' size at close (17.8 MB of files: about 1 s on a loaded
    /// 2-core machine, against 43 ms without). Turn it off when a fast close matters more
    /// than the disk; the free pages are then reused by later writes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// let db = regionkv::Db::builder().region("eu").compact_on_close(false).open(dir.path())?;
    /// db.close()?; // quick: the files keep their free pages
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compact_on_close(mut self, on: bool) -> Self {
        self.compact_on_close = on;
        self
    }

    /// Checkpoint after this many region commits with unique writes (default 1,024; a
    /// group commit or a region batch of many accounts is one), after 16 times as many
    /// unique writes (a batch counts one per account part: this bounds the markers a
    /// recovery replays), or after this much time (default 1 s), whichever comes first. A
    /// checkpoint is one synced global commit, plus one synced marker deletion per region
    /// written since the last one.
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
    /// file) are given one file, when the default region is disabled, when the store is
    /// already open in this process, or when [`Builder::cache_size`] is below its minimum; [`Error::InvalidArgument`] for a bad region name or
    /// an empty path; [`Error::Io`] for a folder that cannot be created; storage errors.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<Db> {
        crate::open::open(self, dir.as_ref())
    }
}
