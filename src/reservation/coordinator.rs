//! Reserve (of a group), Confirm and Checkpoint: the global half of a unique write.
//!
//! None of these syncs except the checkpoint. The region commit (synced) is the commit
//! point; what the global partition loses in a crash, recovery rebuilds from the region's
//! applied markers.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redb::ReadableTable;

use crate::error::{Collision, Error, Result};
use crate::partition::At;
use crate::partition::Partition;
use crate::partition::global::unique_key;
use crate::reservation::cache::UniqueCache;
use crate::reservation::index::IndexWrite;
use crate::reservation::state::{self, Conflict, Entry, Loc, State};
use crate::schema::{DIRTY, MARKERS, REGION_SEEN};
use crate::types::TxnId;

/// A value a write claims.
#[derive(Debug, Clone)]
pub(crate) struct ClaimReq {
    pub ns: String,
    pub digest: [u8; 16],
    pub table: String,
    pub key: Vec<u8>,
    /// The value as the caller gave it (for the error of a collision; never stored here).
    pub value: Vec<u8>,
    /// The same write releases this value from another record of the same account.
    pub transfer: bool,
}

/// A value a write releases from the record `table`/`key` (of the write's account and
/// region) that lists it as owned.
#[derive(Debug, Clone)]
pub(crate) struct ReleaseReq {
    pub ns: String,
    pub digest: [u8; 16],
    pub table: String,
    pub key: Vec<u8>,
}

/// What one write asks Reserve for: its region and account, the values it claims and
/// the values it releases.
pub(crate) struct ReserveReq<'a> {
    pub region: u16,
    pub account: u64,
    pub claims: &'a [ClaimReq],
    pub releases: &'a [ReleaseReq],
}

/// A reservation made by Reserve; settled by Confirm (or, after a crash, by recovery).
#[derive(Debug)]
pub(crate) struct Reservation {
    pub txn: TxnId,
    pub region: u16,
    /// Unique keys this txn put in flight.
    keys: Vec<Vec<u8>>,
    /// The releases Reserve applied (the entry named the releasing record), for the marker.
    pub released: Vec<(String, [u8; 16])>,
}

/// A Reserve in progress: the global write transaction of one group of writes to one
/// region (see [`Coordinator::begin_reserve`]).
pub(crate) struct ReserveTxn<'c> {
    coord: &'c Coordinator,
    /// `None` once committed.
    w: Option<crate::partition::Txn>,
    region: u16,
    /// This Reserve writes the region's `_dirty` row and is synced.
    mark_dirty: bool,
    /// The txns reserved in it, in order.
    txns: Vec<TxnId>,
    /// The unique keys its entries changed (for the cache).
    touched: Vec<Vec<u8>>,
}

impl Drop for ReserveTxn<'_> {
    /// Dropped uncommitted (a refused or lost group, or a panic unwinding): nothing of it
    /// was written, so the `_dirty` row it would have written is not there either.
    fn drop(&mut self) {
        if self.w.take().is_some() && self.mark_dirty {
            self.coord.dirty.lock().remove(&self.region);
        }
    }
}

/// Why [`Coordinator::reserve_in`] reserved nothing.
#[derive(Debug)]
pub(crate) enum ReserveFail {
    /// The write is refused (a value taken or busy, the quota, a storage read): nothing of
    /// it was written; the group goes on without it.
    Refused(Error),
    /// A value is held by an earlier write of the same group: the write is retried in the
    /// next group, after that one settled (as if the two had run one after the other).
    Defer {
        /// The namespace of the value.
        namespace: String,
    },
    /// A write into the Reserve failed half-way: the whole group's Reserve is lost.
    Fatal(Error),
}

/// When a checkpoint runs: after `every` confirmed region commits (groups), after
/// `every × MARKERS_PER_COMMIT_BUDGET` confirmed txns (markers), or after `interval`,
/// whichever comes first (docs/design.md, "Checkpoint").
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointBudget {
    pub every: u64,
    pub interval: Duration,
}

/// The markers a checkpoint interval may leave for a recovery to replay, per region commit
/// of the budget: a region batch of many accounts is one commit with one marker per
/// account, and counting its markers as commits made a 1,000-account batch checkpoint
/// every time (7 more syncs); counting commits alone would leave the markers unbounded.
pub(crate) const MARKERS_PER_COMMIT_BUDGET: u64 = 16;

/// What was confirmed since the last checkpoint.
#[derive(Default)]
struct Confirmed {
    /// (region, txn) of every confirmed txn: the markers the checkpoint deletes.
    txns: Vec<(u16, TxnId)>,
    /// Confirmed region commits (one per group with reservations).
    commits: u64,
}

pub(crate) struct Coordinator {
    pub epoch: u64,
    seq: AtomicU64,
    /// Txns whose reservation or marker may still exist anywhere: from the Reserve commit
    /// until their marker's deletion is durable (or a reopen's recovery settled them). The smallest is the low-water mark
    /// below which tombstones can be dropped.
    live: Mutex<BTreeMap<TxnId, u16>>,
    /// Confirmed since the last checkpoint.
    confirmed: Mutex<Confirmed>,
    last_checkpoint: Mutex<Instant>,
    checkpoint_lock: Mutex<()>,
    /// False while some region's markers cannot be seen (a disabled region): tombstones
    /// must then be kept, as a hidden marker may still need them.
    pub drop_tombstones: AtomicBool,
    pub budget: CheckpointBudget,
    /// Regions whose `_dirty` row is durable and not yet cleared by a checkpoint. Read and
    /// changed only under the global write lock (inside a global write transaction).
    dirty: Mutex<HashSet<u16>>,
    /// Regions that began a Reserve since the last checkpoint (changed under the global
    /// write lock, like `dirty`): a budget or timer checkpoint keeps their `_dirty` rows.
    active: Mutex<HashSet<u16>>,
    /// The unique-index entries `find_unique` and `is_taken` read from memory; every
    /// commit of the index below invalidates the keys it changed.
    pub cache: UniqueCache,
    /// Disabled regions that may hold unsettled claims (a `_dirty` row a recovery could not
    /// clear): (id, name). While any is listed, no value may be claimed or reported free.
    unsettled: RwLock<Vec<(u16, String)>>,
}

/// The error for a conflict with entry `cur`. A value held in flight by a transaction that
/// cannot settle in this process — its region is disabled, or poisoned by a commit of
/// unknown outcome — stays held until the region returns or the store is reopened: not a
/// retryable `Busy`, but the error `stuck` gives for that region.
fn conflict_err(
    c: Conflict,
    ns: &str,
    claim: Option<&ClaimReq>,
    cur: Option<&Entry>,
    stuck: &dyn Fn(u16) -> Option<Error>,
) -> Error {
    match c {
        Conflict::Taken => Error::UniqueViolation {
            namespace: ns.to_owned(),
            record: Box::new(Collision {
                table: claim.map(|c| c.table.clone()).unwrap_or_default(),
                key: claim.map(|c| c.key.clone()).unwrap_or_default(),
                value: claim.map(|c| c.value.clone()).unwrap_or_default(),
            }),
        },
        Conflict::Busy => match cur.and_then(|e| stuck(e.loc.region)) {
            Some(e) => e,
            None => Error::Busy(format!(
                "a unique value in namespace `{ns}` is held by a transaction in flight"
            )),
        },
    }
}

impl Coordinator {
    pub fn new(
        epoch: u64,
        budget: CheckpointBudget,
        drop_tombstones: bool,
        unsettled: Vec<(u16, String)>,
        cache_bytes: usize,
    ) -> Self {
        Coordinator {
            epoch,
            seq: AtomicU64::new(1),
            live: Mutex::new(BTreeMap::new()),
            confirmed: Mutex::new(Confirmed::default()),
            last_checkpoint: Mutex::new(Instant::now()),
            checkpoint_lock: Mutex::new(()),
            drop_tombstones: AtomicBool::new(drop_tombstones),
            budget,
            dirty: Mutex::new(HashSet::new()),
            active: Mutex::new(HashSet::new()),
            unsettled: RwLock::new(unsettled),
            cache: UniqueCache::new(cache_bytes),
        }
    }

    /// `Err(RegionUnsettled)` while a disabled region may hold unsettled claims: a value
    /// that looks free might be owned there.
    pub fn check_settled(&self) -> Result<()> {
        match self.unsettled.read().first() {
            Some((_, name)) => Err(Error::RegionUnsettled(name.clone())),
            None => Ok(()),
        }
    }

    /// Whether region `id` is listed as unsettled.
    pub fn is_unsettled(&self, id: u16) -> bool {
        self.unsettled.read().iter().any(|(r, _)| *r == id)
    }

    /// The name of region `id` if it is listed as unsettled.
    pub fn unsettled_name(&self, id: u16) -> Option<String> {
        self.unsettled
            .read()
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, n)| n.clone())
    }

    /// Gives up the unsettled claims of disabled region `id`: its `_dirty` row is removed
    /// and every in-flight entry of it rolled back, in one synced global commit. Returns the
    /// number of entries rolled back.
    pub fn forfeit(&self, global: &Partition, id: u16) -> Result<usize> {
        let w = global.begin_write()?;
        let mut rolled_back = Vec::new();
        {
            let mut dirty = w.open_table(DIRTY).at(global)?;
            dirty.remove(id).at(global)?;
            let mut index = IndexWrite::open(global, &w)?;
            for row in index.inflight_rows()? {
                let Some((t, ukey)) = &row.parsed else {
                    continue;
                };
                let cur = index.get(ukey)?;
                if let Some(e) = &cur
                    && e.txn == *t
                    && e.state.in_flight()
                    && e.loc.region == id
                {
                    index.apply(ukey, state::rollback(cur.as_ref(), *t))?;
                    index.remove_inflight(&row.raw)?;
                    rolled_back.push(ukey.clone());
                }
            }
        }
        let committed = global.commit_settled(w);
        self.cache.invalidate(rolled_back.iter().map(Vec::as_slice));
        committed?;
        self.unsettled.write().retain(|(r, _)| *r != id);
        Ok(rolled_back.len())
    }

    /// Begins a Reserve: one global write transaction that takes the reservations of a
    /// group of writes to region `region` ([`Coordinator::reserve_in`]), committed once by
    /// [`Coordinator::commit_reserve`] or dropped by [`Coordinator::abandon`].
    ///
    /// Under the global write lock from here on. The first unique write in a region after
    /// a checkpoint marks the region dirty, durably (this Reserve is then synced): from now
    /// until the next checkpoint its markers may hold claims the global file would lose in
    /// a crash, and a recovery that cannot read them must know that. Every other Reserve is
    /// unsynced.
    pub fn begin_reserve(&self, global: &Partition, region: u16) -> Result<ReserveTxn<'_>> {
        let mut w = global.begin_write()?;
        self.active.lock().insert(region);
        let mark_dirty = self.dirty.lock().insert(region);
        let begun = (|| -> Result<()> {
            if mark_dirty {
                let mut dirty = w.open_table(DIRTY).at(global)?;
                dirty.insert(region, self.epoch).at(global)?;
            } else {
                w.set_durability(redb::Durability::None).at(global)?;
            }
            Ok(())
        })();
        let rt = ReserveTxn {
            coord: self,
            w: Some(w),
            region,
            mark_dirty,
            txns: Vec::new(),
            touched: Vec::new(),
        };
        begun.map(|()| rt)
    }

    /// Reserves one write's claims and releases in `rt`: every claim in Pending, every
    /// release in Releasing, under a TxnId of its own, or nothing changed. `quota` runs
    /// after the unique checks, inside the same global transaction, so that concurrent
    /// writes in several regions cannot both pass a cross-region limit. `stuck` gives the
    /// error for a value held in flight by a region whose transactions cannot settle in
    /// this process (see `conflict_err`).
    ///
    /// Every value is checked before any is written: a refused write leaves `rt` as it was,
    /// and the other writes of the group keep their reservations.
    pub fn reserve_in(
        &self,
        rt: &mut ReserveTxn<'_>,
        global: &Partition,
        req: ReserveReq<'_>,
        stuck: &dyn Fn(u16) -> Option<Error>,
        quota: impl FnOnce() -> Result<()>,
    ) -> std::result::Result<Reservation, ReserveFail> {
        let ReserveReq {
            region,
            account,
            claims,
            releases,
        } = req;
        if region != rt.region {
            return Err(ReserveFail::Refused(Error::invalid(
                "internal: a reservation for another region than its group's",
            )));
        }
        // Allocated inside the global write lock: TxnId order is the order of reservations.
        let txn = TxnId {
            epoch: self.epoch,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        let Some(w) = rt.w.as_ref() else {
            return Err(ReserveFail::Refused(Error::invalid(
                "internal: a reservation after its Reserve committed",
            )));
        };
        let mut index = IndexWrite::open(global, w).map_err(ReserveFail::Refused)?;
        // A value held by an earlier write of this group: serially, that write would have
        // settled first. The write waits for the next group instead of failing.
        let held_here = |ns: &str, cur: Option<&Entry>| match cur {
            Some(e) if e.state.in_flight() && rt.txns.contains(&e.txn) => Err(ReserveFail::Defer {
                namespace: ns.to_owned(),
            }),
            _ => Ok(()),
        };
        let mut puts = Vec::with_capacity(claims.len() + releases.len());
        let mut released = Vec::new();
        for c in claims {
            let k = unique_key(&c.ns, &c.digest);
            let cur = index.get(&k).map_err(ReserveFail::Refused)?;
            held_here(&c.ns, cur.as_ref())?;
            if cur.as_ref().is_none_or(|e| e.state == State::Tombstone) {
                // Free as far as this index knows; an unsettled region might own it.
                self.check_settled().map_err(ReserveFail::Refused)?;
            }
            let loc = Loc {
                account,
                region,
                table: c.table.clone(),
                key: c.key.clone(),
            };
            let next = state::claim(cur.as_ref(), txn, loc, c.transfer).map_err(|x| {
                // Owned by a record of an unsettled region: that region's unreplayed
                // markers may have released it, so "taken" is not known.
                ReserveFail::Refused(
                    match cur.as_ref().and_then(|e| self.unsettled_name(e.loc.region)) {
                        Some(name) => Error::RegionUnsettled(name),
                        None => conflict_err(x, &c.ns, Some(c), cur.as_ref(), stuck),
                    },
                )
            })?;
            puts.push((k, next));
        }
        for r in releases {
            let k = unique_key(&r.ns, &r.digest);
            let cur = index.get(&k).map_err(ReserveFail::Refused)?;
            held_here(&r.ns, cur.as_ref())?;
            let owner = Loc {
                account,
                region,
                table: r.table.clone(),
                key: r.key.clone(),
            };
            if let Some(next) = state::release(cur.as_ref(), txn, &owner).map_err(|x| {
                ReserveFail::Refused(conflict_err(x, &r.ns, None, cur.as_ref(), stuck))
            })? {
                puts.push((k, next));
                released.push((r.ns.clone(), r.digest));
            }
        }
        quota().map_err(ReserveFail::Refused)?;
        // From the first change on, a failure leaves `rt` half-changed: the whole group
        // fails (nothing of it is committed).
        for (k, next) in &puts {
            index
                .put_in_flight(k, txn, next)
                .map_err(ReserveFail::Fatal)?;
        }
        rt.txns.push(txn);
        rt.touched.extend(puts.iter().map(|(k, _)| k.clone()));
        Ok(Reservation {
            txn,
            region,
            keys: puts.into_iter().map(|(k, _)| k).collect(),
            released,
        })
    }

    /// Commits the Reserve of a group (nothing to commit if no write of it reserved).
    ///
    /// The region has not been touched, and a failed commit poisons the global partition
    /// (no later write reaches the region through this coordinator, so a dirty flag
    /// missing on disk does no harm). Its txns stay live: their entries may be on disk. An
    /// unsynced Reserve that fails leaves nothing a reopen sees. A synced one (it marks the
    /// region dirty) may be durable: its in-flight entries and dirty row then stay until
    /// the region is open at a recovery, which rolls them back (no marker) — while the
    /// region is disabled they hold their values and make the store unsettled. So its
    /// failure is `OutcomeUnknown`, not "nothing was written".
    pub fn commit_reserve(&self, global: &Partition, mut rt: ReserveTxn<'_>) -> Result<()> {
        if rt.txns.is_empty() {
            return Ok(()); // dropped uncommitted
        }
        let Some(w) = rt.w.take() else {
            return Err(Error::invalid("internal: a Reserve committed twice"));
        };
        {
            let mut live = self.live.lock();
            for t in &rt.txns {
                live.insert(*t, rt.region);
            }
        }
        let committed = if rt.mark_dirty {
            global.commit_settled(w)
        } else {
            global.commit(w)
        };
        self.cache.invalidate(rt.touched.iter().map(Vec::as_slice));
        committed
    }

    /// Drops a Reserve uncommitted: nothing of it was written (see `ReserveTxn`'s drop).
    pub fn abandon(&self, rt: ReserveTxn<'_>) {
        drop(rt);
    }

    /// Confirm: the region commit of `done` (one group's reservations) is durable. One
    /// unsynced global commit.
    pub fn confirm(&self, global: &Partition, done: &[Reservation]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let w = global.begin_write_unsynced()?;
        {
            let mut index = IndexWrite::open(global, &w)?;
            for res in done {
                for k in &res.keys {
                    index.settle(k, res.txn, state::confirm)?;
                }
            }
        }
        let committed = global.commit(w);
        self.cache
            .invalidate(done.iter().flat_map(|r| r.keys.iter().map(Vec::as_slice)));
        committed?;
        let mut c = self.confirmed.lock();
        c.txns.extend(done.iter().map(|r| (r.region, r.txn)));
        c.commits += 1;
        Ok(())
    }

    /// Whether the checkpoint budget is spent: `every` confirmed region commits, or
    /// `every × MARKERS_PER_COMMIT_BUDGET` confirmed txns, or the interval.
    pub fn checkpoint_due(&self) -> bool {
        let (txns, commits) = {
            let c = self.confirmed.lock();
            (c.txns.len() as u64, c.commits)
        };
        txns > 0
            && (commits >= self.budget.every
                || txns >= self.budget.every.saturating_mul(MARKERS_PER_COMMIT_BUDGET)
                || self.last_checkpoint.lock().elapsed() >= self.budget.interval)
    }

    /// Whether the time budget is spent with work to checkpoint (the timer's test).
    pub fn checkpoint_overdue(&self) -> bool {
        (!self.confirmed.lock().txns.is_empty() || !self.dirty.lock().is_empty())
            && self.last_checkpoint.lock().elapsed() >= self.budget.interval
    }

    /// Checkpoint: one synced global commit, then the markers it covers are deleted from
    /// their regions, then tombstones older than every remaining marker are dropped (at the
    /// next checkpoint). `region` maps a region id to its open partition, if any.
    ///
    /// `full`: every `_dirty` row goes (an explicit checkpoint, `disable_region`, `close`).
    /// Otherwise (the budget or the timer) the rows of regions that began a Reserve since
    /// the previous checkpoint stay: they are being written, and removing a row makes the
    /// region's next Reserve a synced commit that flushes the global file's dirty pages
    /// again. A row thus stays at most two checkpoints past its region's last unique write
    /// (docs/design.md, "Dirty regions and unsettled claims").
    pub fn checkpoint(
        &self,
        global: &Partition,
        region: impl Fn(u16) -> Option<std::sync::Arc<crate::partition::set::Region>>,
        full: bool,
    ) -> Result<()> {
        let _one_at_a_time = self.checkpoint_lock.lock();
        let w = global.begin_write()?;
        // Taken while holding the global write lock: every txn in `covered` was confirmed
        // by a global commit that precedes this one, and every region in `clean` had its
        // last Reserve before it: this synced commit makes their global state durable, so
        // their dirty rows go in the same commit.
        let Confirmed {
            txns: covered,
            commits,
        } = std::mem::take(&mut *self.confirmed.lock());
        let active = std::mem::take(&mut *self.active.lock());
        let clean: HashSet<u16> = {
            let mut dirty = self.dirty.lock();
            let clean: HashSet<u16> = dirty
                .iter()
                .filter(|r| full || !active.contains(r))
                .copied()
                .collect();
            dirty.retain(|r| !clean.contains(r));
            clean
        };
        let restore = |this: &Self, covered: Vec<(u16, TxnId)>, clean: HashSet<u16>| {
            let mut c = this.confirmed.lock();
            c.txns.extend(covered);
            c.commits += commits;
            drop(c);
            this.dirty.lock().extend(clean);
            this.active.lock().extend(active.iter().copied());
        };
        let mut dropped = Vec::new();
        let staged = (|| -> Result<()> {
            if !clean.is_empty() {
                let mut dirty = w.open_table(DIRTY).at(global)?;
                for r in &clean {
                    dirty.remove(*r).at(global)?;
                }
            }
            if self.drop_tombstones.load(Ordering::Acquire) {
                let low = self.live.lock().keys().next().copied();
                dropped = IndexWrite::open(global, &w)?.drop_tombstones(low)?;
            }
            raise_seen(global, &w, covered.iter().map(|(r, t)| (*r, *t)))?;
            Ok(())
        })();
        if let Err(e) = staged {
            restore(self, covered, clean);
            return Err(e);
        }
        let committed = global.commit(w);
        // A tombstone and no entry read alike, but the cache mirrors the index exactly.
        self.cache.invalidate(dropped.iter().map(Vec::as_slice));
        if let Err(e) = committed {
            restore(self, covered, clean);
            return Err(e);
        }
        *self.last_checkpoint.lock() = Instant::now();
        let mut by_region: BTreeMap<u16, Vec<TxnId>> = BTreeMap::new();
        for (r, t) in covered {
            by_region.entry(r).or_default().push(t);
        }
        for (r, txns) in by_region {
            let Some(region) = region(r) else { continue };
            // Synced: once deleted durably the txns leave `live`, so the low-water mark can
            // advance. One fsync per region per checkpoint, never on a write's own path.
            let deleted = (|| -> Result<()> {
                let w = region.part.begin_write()?;
                {
                    let mut m = w.open_table(MARKERS).at(&region.part)?;
                    for t in &txns {
                        m.remove(t.to_u128()).at(&region.part)?;
                    }
                }
                region.part.commit(w)
            })();
            // A failure here (the region fenced or poisoned: it refuses every write until
            // the store is reopened, so retrying in this process cannot succeed) is not the
            // checkpoint's: its global commit made these txns durable, which is what the
            // checkpoint promises; the region reports its own failure on its own paths.
            // The txns stay in `live`, so no tombstone they might need is dropped, and the
            // markers stay in the file: the next open that reads the region replays them
            // (idempotent, the global file already holds their effect) and deletes them.
            // docs/design.md section 5, "Checkpoint"; tests/operator_races.rs.
            if deleted.is_ok() {
                let mut live = self.live.lock();
                for t in &txns {
                    live.remove(t);
                }
            }
        }
        Ok(())
    }

    /// (txns whose reservation or marker may still exist, txns confirmed since the last
    /// checkpoint).
    pub fn counts(&self) -> (usize, usize) {
        (self.live.lock().len(), self.confirmed.lock().txns.len())
    }
}

/// Raises `_region_seen` of each region to the newest of `txns` (region, txn) applied there.
pub(crate) fn raise_seen(
    global: &Partition,
    w: &redb::WriteTransaction,
    txns: impl Iterator<Item = (u16, TxnId)>,
) -> Result<()> {
    let mut newest: BTreeMap<u16, u128> = BTreeMap::new();
    for (r, t) in txns {
        let n = newest.entry(r).or_default();
        *n = (*n).max(t.to_u128());
    }
    if newest.is_empty() {
        return Ok(());
    }
    let mut seen = w.open_table(REGION_SEEN).at(global)?;
    for (r, t) in newest {
        let cur = seen.get(r).at(global)?.map(|g| g.value());
        if cur.is_none_or(|c| c < t) {
            seen.insert(r, t).at(global)?;
        }
    }
    Ok(())
}
