//! A bounded, sharded in-memory cache with CLOCK eviction: the one implementation behind
//! the unique-index cache (`reservation::cache`) and the routing cache (`account`).
//!
//! Each entry is charged the bytes its owner says it takes (plus a fixed slot overhead);
//! the total never exceeds the budget. A fill can be made conditional on an epoch (see
//! [`Clock::fill_if`]) so that a reader whose snapshot may be outdated never overwrites
//! what an invalidation removed.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Shards of the cache (each with its own lock), so readers on many threads rarely meet.
const SHARDS: usize = 16;

/// Smallest budget of a shard: below `SHARDS` times this, the cache has fewer shards
/// (a power of two, at least one), so that a small budget still holds entries after each
/// shard's index is paid for.
const MIN_SHARD_BYTES: usize = 64 << 10;

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
    /// Bytes each entry is charged besides its owner's charge: its slot, its share of the
    /// index and of the free list (all allocated up front).
    fixed: usize,
    shards: Vec<Mutex<Shard<K, V>>>,
    /// Bumped by every invalidation, before its keys are removed.
    epoch: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// One shard: entries live in `slots`, a slab allocated once at its full capacity, found
/// through `index` (also allocated once, large enough that deletions never make it grow:
/// see [`Shard::new`]). Filling, replacing, evicting or invalidating an entry writes into
/// memory the shard already owns, so the cache makes no small long-lived allocations
/// between other code's transient buffers (which pinned freed memory in glibc's heap).
struct Shard<K, V> {
    index: HashMap<K, u32, KeyHash>,
    slots: Vec<Option<Slot<K, V>>>,
    /// Vacant slots (invalidated or evicted), reused before the slab grows.
    free: Vec<u32>,
    /// Entries the shard may hold: `slots` and `free` never grow beyond it.
    cap: usize,
    /// The index's capacity when it was made (tombstones may lower what it reports, a
    /// reallocation would raise it).
    index_cap: usize,
    /// The CLOCK hand: the next slot eviction looks at.
    hand: usize,
    bytes: usize,
}

struct Slot<K, V> {
    key: K,
    value: V,
    referenced: bool,
    size: usize,
}

impl<K: Hash + Eq, V> Shard<K, V> {
    /// A shard of `cap` entries, everything allocated now. The index is sized for twice
    /// `cap` so that hashbrown, when deletions have used up its free buckets, always
    /// rehashes in place (it does while the items are at most half its capacity) instead
    /// of allocating a larger table.
    fn new(cap: usize) -> Self {
        let index = HashMap::with_capacity_and_hasher(cap * 2, KeyHash::default());
        Shard {
            index_cap: index.capacity(),
            index,
            slots: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            cap,
            hand: 0,
            bytes: 0,
        }
    }

    /// Bytes of the index table (hashbrown: one bucket and one control byte per bucket,
    /// at least capacity * 8 / 7 buckets, plus a group of control bytes).
    fn index_bytes(&self) -> usize {
        let buckets = (self.index_cap * 8).div_ceil(7);
        (buckets + 16) * (std::mem::size_of::<(K, u32)>() + 1)
    }

    fn remove_at(&mut self, i: usize) {
        if let Some(slot) = self.slots[i].take() {
            self.index.remove(&slot.key);
            self.bytes -= slot.size;
            self.free.push(i as u32);
        }
    }

    /// Evicts one entry by CLOCK (a referenced entry gets a second chance). False if empty.
    fn evict_one(&mut self) -> bool {
        if self.index.is_empty() {
            return false;
        }
        // Two turns of the hand clear every reference bit, so one finds a victim.
        for _ in 0..2 * self.slots.len() {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match &mut self.slots[i] {
                Some(slot) if slot.referenced => slot.referenced = false,
                Some(_) => {
                    self.remove_at(i);
                    return true;
                }
                None => {}
            }
        }
        false
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Clock<K, V> {
    /// A cache of at most `budget` bytes (0: nothing is cached). Its slots and index are
    /// allocated now (pages are touched only as entries fill them).
    pub fn new(budget: usize) -> Self {
        let shards_n = (budget / MIN_SHARD_BYTES).clamp(1, SHARDS);
        // A power of two: `shard` picks one by the hash's top bits.
        let shards_n = 1 << shards_n.ilog2();
        let shard_budget = budget / shards_n;
        let slot = std::mem::size_of::<Option<Slot<K, V>>>() + std::mem::size_of::<u32>();
        // Worst case of the index per entry (see `Shard::new` and `index_bytes`): twice the
        // entries, up to twice that in buckets (power of two) after the 8/7 load factor.
        let index_worst = 5 * (std::mem::size_of::<(K, u32)>() + 1);
        let cap = shard_budget.saturating_sub(16 * index_worst) / (slot + index_worst);
        let shards: Vec<Mutex<Shard<K, V>>> =
            (0..shards_n).map(|_| Mutex::new(Shard::new(cap))).collect();
        let index_bytes = shards[0].lock().index_bytes();
        // cap * fixed <= cap * slot + index_bytes <= shard_budget, by the choice of cap.
        let fixed = slot + index_bytes.div_ceil(cap.max(1));
        Clock {
            shard_budget: if cap == 0 { 0 } else { shard_budget },
            fixed,
            shards,
            epoch: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Bytes an entry is charged besides its owner's charge.
    #[cfg(test)]
    pub fn fixed_charge(&self) -> usize {
        self.fixed
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<Shard<K, V>> {
        let h = KeyHash::default().hash_one(key);
        // The high bits pick the shard; the map of a shard uses all of them.
        &self.shards[(h >> 60) as usize & (self.shards.len() - 1)]
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
        let found = match shard.index.get(key) {
            Some(&i) => shard.slots[i as usize].as_mut().map(|slot| {
                slot.referenced = true;
                slot.value.clone()
            }),
            None => None,
        };
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
        let size = charge.saturating_add(self.fixed);
        if size > self.shard_budget {
            return;
        }
        let mut shard = self.shard(&key).lock();
        // Under the shard lock: an invalidation that bumped the epoch after this check
        // removes its keys after it, so it removes this one too if it is one of them.
        if epoch.is_some_and(|e| e != self.epoch.load(Ordering::SeqCst)) {
            return;
        }
        if let Some(&i) = shard.index.get(&key) {
            shard.remove_at(i as usize);
        }
        while shard.bytes + size > self.shard_budget
            || (shard.free.is_empty() && shard.slots.len() == shard.cap)
        {
            if !shard.evict_one() {
                return;
            }
        }
        let slot = Slot {
            key: key.clone(),
            value,
            referenced: false,
            size,
        };
        let i = match shard.free.pop() {
            Some(i) => {
                shard.slots[i as usize] = Some(slot);
                i
            }
            None => {
                shard.slots.push(Some(slot));
                (shard.slots.len() - 1) as u32
            }
        };
        shard.index.insert(key, i);
        shard.bytes += size;
    }

    /// Forgets `keys`, which a commit (successful or not) may have changed.
    pub fn invalidate<Q, B>(&self, keys: impl IntoIterator<Item = B>)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        B: Borrow<Q>,
    {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.shard_budget == 0 {
            return;
        }
        for key in keys {
            let key = key.borrow();
            let mut shard = self.shard(key).lock();
            if let Some(&i) = shard.index.get(key) {
                shard.remove_at(i as usize);
            }
        }
    }

    /// (bytes cached, entries cached).
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(b, n), s| {
            let s = s.lock();
            (b + s.bytes, n + s.index.len())
        })
    }

    /// Whether every shard still holds only the memory it allocated when the cache was
    /// made (the slab, free list and index never grew).
    #[cfg(test)]
    pub fn allocated_once(&self) -> bool {
        self.shards.iter().all(|s| {
            let s = s.lock();
            s.slots.capacity() == s.cap
                && s.free.capacity() == s.cap
                && s.index.capacity() <= s.index_cap
        })
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
        assert!(c.allocated_once(), "a shard allocated after it was made");
        let off: Clock<u64, u64> = Clock::new(0);
        off.insert(1, 1, 8);
        assert_eq!(off.get(&1), None);
    }

    #[test]
    fn churn_of_fills_invalidations_and_evictions_allocates_nothing_new() {
        // Small budget: every shard fills, evicts, and sees invalidations leave holes
        // (tombstones in its index) many times over.
        let budget = 32 << 10;
        let c: Clock<u64, [u8; 40]> = Clock::new(budget);
        assert!(c.fixed_charge() >= std::mem::size_of::<[u8; 40]>());
        for i in 0..200_000u64 {
            c.fill_if(i, [i as u8; 40], 0, c.epoch());
            if i.is_multiple_of(3) {
                c.invalidate([&(i / 2)]);
            }
            if i.is_multiple_of(7) {
                c.insert(i / 3, [1; 40], 8); // a replacement
            }
            assert!(c.usage().0 <= budget, "{} > {budget}", c.usage().0);
        }
        assert!(c.allocated_once(), "a shard allocated after it was made");
        let (bytes, entries) = c.usage();
        assert!(entries > 0 && bytes >= entries * c.fixed_charge());
        // What is cached is what was put last.
        for i in 199_000..200_000u64 {
            if let Some(v) = c.get(&i) {
                assert!(v == [i as u8; 40] || v == [1; 40], "{i}: {v:?}");
            }
        }
        // The memory the shards hold is within the budget.
        let held: usize = c
            .shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.cap * (std::mem::size_of::<Option<Slot<u64, [u8; 40]>>>() + 4) + s.index_bytes()
            })
            .sum();
        assert!(held <= budget, "the shards hold {held} > {budget}");
    }
}
