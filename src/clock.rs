//! A bounded, sharded in-memory cache with CLOCK eviction: the one implementation behind
//! the unique-index cache (`reservation::cache`) and the routing cache (`account`).
//!
//! Each entry is charged the bytes its owner says it takes (plus a fixed slot overhead);
//! the total never exceeds the budget. A fill can be made conditional on an epoch (see
//! [`Clock::fill_if`]) so that a reader whose snapshot may be outdated never overwrites
//! what an invalidation removed.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Shards of the cache (each with its own lock), so readers on many threads rarely meet.
const SHARDS: usize = 16;

/// Bytes counted per slot besides what its owner charges (map slot, ring slot).
pub(crate) const SLOT_OVERHEAD: usize = 64;

/// A fast hash for cache keys: account ids (dense counters) and unique keys (which end
/// with a keyed digest, spread and unknown to whoever chooses the values), so no
/// DoS-resistant hash is needed.
#[derive(Default, Clone, Copy)]
pub(crate) struct FoldHasher(u64);

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
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyHash = BuildHasherDefault<FoldHasher>;

pub(crate) struct Clock<K, V> {
    /// Bytes per shard.
    shard_budget: usize,
    shards: Vec<Mutex<Shard<K, V>>>,
    /// Bumped by every invalidation, before its keys are removed.
    epoch: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

struct Shard<K, V> {
    map: HashMap<K, Slot<V>, KeyHash>,
    /// CLOCK order of the keys (a key may appear after its slot was removed: skipped).
    ring: VecDeque<K>,
    bytes: usize,
}

impl<K, V> Default for Shard<K, V> {
    fn default() -> Self {
        Shard {
            map: HashMap::default(),
            ring: VecDeque::new(),
            bytes: 0,
        }
    }
}

struct Slot<V> {
    value: V,
    referenced: bool,
    size: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Clock<K, V> {
    /// A cache of at most `budget` bytes (0: nothing is cached).
    pub fn new(budget: usize) -> Self {
        Clock {
            shard_budget: budget / SHARDS,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<Shard<K, V>> {
        let h = KeyHash::default().hash_one(key);
        // The high bits pick the shard; the map of a shard uses all of them.
        &self.shards[(h >> 60) as usize % SHARDS]
    }

    /// The cached value of `key`, counted as a hit or a miss.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.shard_budget == 0 {
            return None;
        }
        let mut shard = self.shard(key).lock();
        let found = shard.map.get_mut(key).map(|slot| {
            slot.referenced = true;
            slot.value.clone()
        });
        drop(shard);
        match &found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        found
    }

    /// Read before a reader's snapshot begins; handed to [`Clock::fill_if`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches what a reader read in a snapshot that began after it read `epoch`, unless an
    /// invalidation happened since (then the reader's answer may be outdated).
    pub fn fill_if(&self, key: K, value: V, charge: usize, epoch: u64) {
        self.put(key, value, charge, Some(epoch));
    }

    /// Caches `value` unconditionally (the writer of the value itself).
    pub fn insert(&self, key: K, value: V, charge: usize) {
        self.put(key, value, charge, None);
    }

    fn put(&self, key: K, value: V, charge: usize, epoch: Option<u64>) {
        let size = charge + SLOT_OVERHEAD;
        if size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(&key).lock();
        // Under the shard lock: an invalidation that bumped the epoch after this check
        // removes its keys after it, so it removes this one too if it is one of them.
        if epoch.is_some_and(|e| e != self.epoch.load(Ordering::SeqCst)) {
            return;
        }
        let old = shard.map.insert(
            key.clone(),
            Slot {
                value,
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

    /// Forgets `keys`, which a commit (successful or not) may have changed.
    pub fn invalidate<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
    {
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

impl<K: Hash + Eq, V> Shard<K, V> {
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

    #[test]
    fn a_fill_after_an_invalidation_is_refused() {
        let c: Clock<u64, u64> = Clock::new(1 << 20);
        let e = c.epoch();
        c.invalidate([&7u64]);
        c.fill_if(7, 1, 8, e);
        assert_eq!(c.get(&7), None, "a fill from before the commit was kept");
        c.fill_if(7, 2, 8, c.epoch());
        assert_eq!(c.get(&7), Some(2));
        c.invalidate([&7u64]);
        assert_eq!(c.get(&7), None);
    }

    #[test]
    fn the_budget_is_never_exceeded_and_referenced_entries_stay() {
        let budget = 64 << 10;
        let c: Clock<u64, u64> = Clock::new(budget);
        c.insert(0, 0, 100);
        for i in 1..10_000u64 {
            c.insert(i, i, 100);
            assert_eq!(c.get(&0), Some(0), "a hot entry was evicted at {i}");
            assert!(c.usage().0 <= budget, "{} > {budget}", c.usage().0);
        }
        assert!(
            c.usage().1 > 50,
            "the cache holds almost nothing: {:?}",
            c.usage()
        );
        let off: Clock<u64, u64> = Clock::new(0);
        off.insert(1, 1, 8);
        assert_eq!(off.get(&1), None);
    }
}
