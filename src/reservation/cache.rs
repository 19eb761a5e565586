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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::clock::Clock;
use crate::reservation::state::Entry;

/// What the cache is keyed by: the value's digest, the last 16 bytes of its unique key
/// (`namespace-length ++ namespace ++ digest`). The digest covers the namespace (keyed
/// BLAKE3 of its length, the namespace and the value), so it names one (namespace, value)
/// unless two differ only by a 128-bit keyed-hash collision, the collision the global
/// index already rules out (it stores the digest, never the value). Kept inline: a hit
/// compares 16 bytes in the map's bucket instead of following a pointer to a heap key,
/// and builds no key (measured: the cache's lookup was 22% of a kept `View`'s hot
/// `find_unique` over 10,000 values, most of it in cache misses on the key).
pub(crate) type Digest = [u8; 16];

pub(crate) struct UniqueCache {
    clock: Clock<Digest, Option<Arc<Entry>>>,
}

/// The digest a unique key ends with (`None` for bytes too short to be one).
fn digest_of(unique_key: &[u8]) -> Option<Digest> {
    let tail = unique_key.len().checked_sub(16)?;
    unique_key[tail..].try_into().ok()
}

/// The bytes an entry is charged (its key is charged apart).
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
            clock: Clock::new(budget),
        }
    }

    /// The cached entry of the value of digest `d`: `Some(None)` if it is cached as free.
    pub fn get(&self, d: &Digest) -> Option<Option<Arc<Entry>>> {
        self.clock.get(d)
    }

    /// Read before a reader's global snapshot begins; handed to [`UniqueCache::fill`].
    pub fn epoch(&self) -> u64 {
        self.clock.epoch()
    }

    /// Caches what a reader read for the value of digest `d` in a snapshot that began
    /// after it read `epoch`, unless the index changed since (then the reader's answer may
    /// be outdated).
    pub fn fill(&self, d: &Digest, entry: Option<Arc<Entry>>, epoch: u64) {
        let charge = std::mem::size_of::<Digest>() + 16 + entry.as_deref().map_or(0, entry_size);
        self.clock.fill_if(*d, entry, charge, epoch);
    }

    /// Forgets the unique keys `keys`, which a commit of the index (successful or not) may
    /// have changed.
    pub fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.clock
            .invalidate::<Digest, _>(keys.into_iter().filter_map(digest_of));
    }

    /// (hits, misses).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.clock.hits.load(Ordering::Relaxed),
            self.clock.misses.load(Ordering::Relaxed),
        )
    }

    /// (bytes cached, entries cached).
    pub fn usage(&self) -> (usize, usize) {
        self.clock.usage()
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
    fn entries_and_absences_are_cached_until_invalidated() {
        let c = UniqueCache::new(1 << 20);
        let e = c.epoch();
        let k = crate::partition::global::unique_key("ns", &[7; 16]);
        let d = digest_of(&k).unwrap();
        assert_eq!(d, [7; 16], "the digest is the unique key's tail");
        c.invalidate([k.as_slice()]);
        c.fill(&d, Some(entry(1)), e);
        assert!(
            c.get(&d).is_none(),
            "a fill from before the commit was kept"
        );
        c.fill(&d, Some(entry(2)), c.epoch());
        assert_eq!(c.get(&d).unwrap().unwrap().loc.key, vec![2]);
        c.invalidate([k.as_slice()]);
        assert!(c.get(&d).is_none());
        c.fill(&[9; 16], None, c.epoch());
        assert!(matches!(c.get(&[9; 16]), Some(None)));
        // Bytes too short to be a unique key invalidate nothing (and do not panic).
        c.invalidate([b"k".as_slice()]);
        assert!(matches!(c.get(&[9; 16]), Some(None)));
        let budget = 64 << 10;
        let c = UniqueCache::new(budget);
        for i in 0..10_000u32 {
            let mut d = [0u8; 16];
            d[..4].copy_from_slice(&i.to_be_bytes());
            c.fill(&d, Some(entry(i as u8)), c.epoch());
            assert!(c.usage().0 <= budget);
        }
    }
}
