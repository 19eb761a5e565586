//! The unique-index cache: global index entries (or their absence) kept in memory for
//! `find_unique` and `is_taken`, bounded by a byte budget, coherent with every commit of
//! the index.
//!
//! Coherence. This process is the only writer of the embedded global partition, and every
//! commit that changes `_unique` goes through the coordinator, which calls
//! [`UniqueCache::invalidate`] with the keys it changed right after the commit (whether it
//! succeeded or not) and before the operation returns to its caller. A reader fills the
//! cache from its own global snapshot only if no invalidation happened since before that
//! snapshot began ([`UniqueCache::epoch`] read first, checked under the shard lock at the
//! fill). So an entry in the cache is what the index holds now, or what it held before a
//! commit that has not yet returned to its caller: the same answer a reader whose snapshot
//! began just before that commit would get.
//!
//! With a global partition shared by several processes (a replicated database) the same
//! interface holds, and the invalidations come from the database's change feed instead
//! of the local coordinator (docs/design.md, "Unique-index cache").

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::reservation::state::Entry;

/// Shards of the cache (each with its own lock), so readers on many threads rarely meet.
const SHARDS: usize = 16;

/// Bytes counted per cached slot besides its key and entry (map slot, ring slot, Arc).
const SLOT_OVERHEAD: usize = 96;

pub(crate) struct UniqueCache {
    /// Bytes per shard.
    shard_budget: usize,
    shards: Vec<Mutex<Shard>>,
    /// Bumped by every invalidation, before the keys are removed.
    epoch: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// A fast hash for unique keys. A key ends with a keyed digest (uniformly spread and
/// unknown to whoever chooses the values), so no DoS-resistant hash is needed.
#[derive(Default, Clone, Copy)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyHash = BuildHasherDefault<FoldHasher>;

#[derive(Default)]
struct Shard {
    map: HashMap<Arc<[u8]>, Slot, KeyHash>,
    /// CLOCK order of the keys (a key may appear after its slot was removed: skipped).
    ring: VecDeque<Arc<[u8]>>,
    bytes: usize,
}

struct Slot {
    entry: Option<Arc<Entry>>,
    referenced: bool,
    size: usize,
}

fn entry_size(e: &Entry) -> usize {
    std::mem::size_of::<Entry>()
        + e.loc.table.len()
        + e.loc.key.len()
        + e.prev.as_deref().map_or(0, entry_size)
}

impl UniqueCache {
    /// A cache of at most `budget` bytes (0: nothing is cached).
    pub fn new(budget: usize) -> Self {
        UniqueCache {
            shard_budget: budget / SHARDS,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let h = KeyHash::default().hash_one(key);
        // The high bits pick the shard; the map of a shard uses all of them.
        &self.shards[(h >> 60) as usize % SHARDS]
    }

    /// The cached entry of unique key `key`: `Some(None)` if the value is cached as free.
    pub fn get(&self, key: &[u8]) -> Option<Option<Arc<Entry>>> {
        if self.shard_budget == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock();
        let found = shard.map.get_mut(key).map(|slot| {
            slot.referenced = true;
            slot.entry.clone()
        });
        drop(shard);
        match &found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    /// Read before a reader's global snapshot begins; handed to [`UniqueCache::fill`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches what a reader read for `key` in a snapshot that began after it read `epoch`,
    /// unless the index changed since (then the reader's answer may be outdated).
    pub fn fill(&self, key: &[u8], entry: Option<Arc<Entry>>, epoch: u64) {
        let size = key.len() + SLOT_OVERHEAD + entry.as_deref().map_or(0, entry_size);
        if self.shard_budget == 0 || size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(key).lock();
        // Under the shard lock: an invalidation that bumped the epoch after this check
        // removes its keys after it, so it removes this one too if it is one of them.
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let key: Arc<[u8]> = Arc::from(key);
        let old = shard.map.insert(
            key.clone(),
            Slot {
                entry,
                referenced: false,
                size,
            },
        );
        match old {
            Some(old) => shard.bytes -= old.size,
            None => shard.ring.push_back(key),
        }
        shard.bytes += size;
        while shard.bytes > self.shard_budget {
            if !shard.evict_one() {
                break;
            }
        }
    }

    /// Forgets `keys`, which a commit of the index (successful or not) may have changed.
    pub fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.shard_budget == 0 {
            return;
        }
        for key in keys {
            let mut shard = self.shard(key).lock();
            if let Some(slot) = shard.map.remove(key) {
                shard.bytes -= slot.size;
            }
        }
    }

    /// (bytes cached, entries cached).
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(b, n), s| {
            let s = s.lock();
            (b + s.bytes, n + s.map.len())
        })
    }
}

impl Shard {
    /// Evicts one slot by CLOCK (a referenced slot gets a second chance). False if empty.
    fn evict_one(&mut self) -> bool {
        while let Some(key) = self.ring.pop_front() {
            let Some(slot) = self.map.get_mut(&key) else {
                continue; // removed by an invalidation
            };
            if slot.referenced {
                slot.referenced = false;
                self.ring.push_back(key);
                continue;
            }
            if let Some(slot) = self.map.remove(&key) {
                self.bytes -= slot.size;
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::state::Loc;
    use crate::types::TxnId;

    fn entry(n: u8) -> Arc<Entry> {
        Arc::new(Entry::committed(
            TxnId {
                epoch: 1,
                seq: n as u64,
            },
            Loc {
                account: n as u64,
                region: 0,
                table: "t".into(),
                key: vec![n],
            },
        ))
    }

    #[test]
    fn a_fill_after_an_invalidation_is_refused() {
        let c = UniqueCache::new(1 << 20);
        let e = c.epoch();
        c.invalidate([b"k".as_slice()]);
        c.fill(b"k", Some(entry(1)), e);
        assert!(
            c.get(b"k").is_none(),
            "a fill from before the commit was kept"
        );
        let e = c.epoch();
        c.fill(b"k", Some(entry(2)), e);
        assert_eq!(c.get(b"k").unwrap().unwrap().loc.key, vec![2]);
        c.invalidate([b"k".as_slice()]);
        assert!(c.get(b"k").is_none());
        c.fill(b"free", None, c.epoch());
        assert!(matches!(c.get(b"free"), Some(None)));
    }

    #[test]
    fn the_budget_is_never_exceeded() {
        let budget = 64 << 10;
        let c = UniqueCache::new(budget);
        for i in 0..10_000u32 {
            let k = i.to_be_bytes();
            c.fill(&k, Some(entry(i as u8)), c.epoch());
            if i % 3 == 0 {
                c.get(&k);
            }
            assert!(c.usage().0 <= budget, "{} > {budget}", c.usage().0);
        }
        assert!(
            c.usage().1 > 50,
            "the cache holds almost nothing: {:?}",
            c.usage()
        );
        let off = UniqueCache::new(0);
        off.fill(b"k", None, off.epoch());
        assert!(off.get(b"k").is_none());
    }
}
