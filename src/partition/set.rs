//! The open regions of a store: each region's partition with its write gate, and the
//! catalog as this process sees it (which regions are open, disabled, the default).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;
use redb::ReadTransaction;

use crate::error::{Error, Result};
use crate::partition::registry::Registration;
use crate::partition::{Partition, SharedRead};
use crate::types::RegionId;

/// An open region partition.
pub(crate) struct Region {
    pub id: RegionId,
    pub part: Partition,
    /// Whether writes may commit here. A commit holds this shared from its region check to
    /// its last step; `Db::disable_region` takes it exclusively, so it waits for (drains)
    /// every write in flight before it freezes the region's record counts.
    pub writable: RwLock<bool>,
    /// Set by `Db::disable_region` (with `writable` held exclusively) when the region is
    /// disabled at run time: every read operation that begins from then on, through a
    /// snapshot taken before too, answers `RegionDisabled` (docs/design.md section 8,
    /// "Reads of a region disabled at run time"). One uncontended load per read; never
    /// cleared (a region is enabled again only by an open).
    disabled: AtomicBool,
    /// Every commit of a write goes through it: writes waiting at the same moment share
    /// one region transaction and one sync (group commit).
    pub committer: crate::commit::Committer,
    /// The store's files stay registered while this region (or a snapshot of it) lives.
    /// Declared after `part`: the file closes before the registration goes.
    hold: Arc<Registration>,
}

impl Region {
    pub fn new(id: RegionId, part: Partition, hold: Arc<Registration>) -> Region {
        Region {
            id,
            part,
            writable: RwLock::new(true),
            disabled: AtomicBool::new(false),
            committer: crate::commit::Committer::default(),
            hold,
        }
    }

    /// Marks the region disabled for reads (see `disabled`).
    pub fn mark_disabled(&self) {
        self.disabled.store(true, Ordering::Release);
    }

    /// [`Error::RegionDisabled`] once the region was disabled at run time.
    #[inline]
    pub fn check_enabled(&self) -> Result<()> {
        if self.disabled.load(Ordering::Acquire) {
            return Err(Error::RegionDisabled(self.part.name.clone()));
        }
        Ok(())
    }

    /// A read snapshot of the region, shared by the records read from it: the region's
    /// newest snapshot when no commit ran since it was taken ([`Partition::shared_read`]),
    /// else a new one. It keeps the region (and the store's files registered) until the
    /// last record of it is dropped: the partition is released after the snapshot's
    /// transaction ended, so the compaction a clean close asks for finds no read
    /// transaction alive.
    pub fn snapshot(self: &Arc<Self>) -> Result<Snapshot> {
        Ok(Arc::new(SnapshotInner {
            read: self.part.shared_read()?,
            _region: self.clone(),
            _hold: self.hold.clone(),
        }))
    }
}

/// A read transaction shared by the records read from it. redb frees and reuses the pages
/// of a snapshot once its transaction ends, even while a page guard from it is alive, so
/// every record holds its snapshot.
pub(crate) type Snapshot = Arc<SnapshotInner>;

pub(crate) struct SnapshotInner {
    /// Declared first: the transaction (and the tables opened in it) end before the region
    /// is released (a partition dropped while one of its read transactions lives could not
    /// compact: redb's `compact` refuses with a transaction in progress), and both before
    /// the registration is released. The region's kept newest snapshot may share it; the
    /// region drops that one before its partition is released.
    pub read: Arc<SharedRead>,
    _region: Arc<Region>,
    _hold: Arc<Registration>,
}

impl SnapshotInner {
    /// The region's schema-check generation when the transaction began.
    pub fn schema_gen(&self) -> u64 {
        self.read.schema_gen
    }
}

impl std::ops::Deref for SnapshotInner {
    type Target = ReadTransaction;
    fn deref(&self) -> &ReadTransaction {
        self.read.txn()
    }
}

pub(crate) enum RegionSlot {
    Open(Arc<Region>),
    Disabled,
}

/// The region catalog as this process sees it.
#[derive(Default)]
pub(crate) struct RegionSet {
    /// Indexed by RegionId: (name, slot).
    pub by_id: Vec<Option<(String, RegionSlot)>>,
    pub names: HashMap<String, u16>,
    pub default: u16,
    /// Disabled regions whose record counts are unknown (disabled at open with an
    /// unreadable file): accounts with a record limit that are allowed there cannot grow.
    pub usage_unknown: HashSet<u16>,
}

impl RegionSet {
    /// An open region, or why not. Takes no lock: the caller holds the set.
    pub fn get(&self, id: RegionId) -> Result<Arc<Region>> {
        match self.by_id.get(id.0 as usize) {
            Some(Some((_, RegionSlot::Open(r)))) => Ok(r.clone()),
            Some(Some((name, RegionSlot::Disabled))) => Err(Error::RegionDisabled(name.clone())),
            _ => Err(Error::RegionUnknown(id.to_string())),
        }
    }

    /// Why a transaction of region `id` cannot settle in this process, if it cannot: the
    /// region is disabled (`RegionUnsettled`), or poisoned by a commit of unknown outcome
    /// (`Poisoned`: a reopen settles it).
    pub fn stuck(&self, id: u16) -> Option<Error> {
        match self.by_id.get(id as usize) {
            Some(Some((n, RegionSlot::Disabled))) => Some(Error::RegionUnsettled(n.clone())),
            Some(Some((n, RegionSlot::Open(r)))) if r.part.is_poisoned() => {
                Some(Error::Poisoned(n.clone()))
            }
            _ => None,
        }
    }

    pub fn name(&self, id: u16) -> String {
        match self.by_id.get(id as usize) {
            Some(Some((n, _))) => n.clone(),
            _ => id.to_string(),
        }
    }
}
