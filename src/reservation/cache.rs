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

pub(crate) struct UniqueCache {
    clock: Clock<Arc<[u8]>, Option<Arc<Entry>>>,
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

    /// The cached entry of unique key `key`: `Some(None)` if the value is cached as free.
    pub fn get(&self, key: &[u8]) -> Option<Option<Arc<Entry>>> {
        self.clock.get(key)
    }

    /// Read before a reader's global snapshot begins; handed to [`UniqueCache::fill`].
    pub fn epoch(&self) -> u64 {
        self.clock.epoch()
    }

    /// Caches what a reader read for `key` in a snapshot that began after it read `epoch`,
    /// unless the index changed since (then the reader's answer may be outdated).
    pub fn fill(&self, key: &[u8], entry: Option<Arc<Entry>>, epoch: u64) {
        let charge = key.len() + 16 + entry.as_deref().map_or(0, entry_size);
        self.clock.fill_if(Arc::from(key), entry, charge, epoch);
    }

    /// Forgets `keys`, which a commit of the index (successful or not) may have changed.
    pub fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        self.clock.invalidate(keys);
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
        c.invalidate([b"k".as_slice()]);
        c.fill(b"k", Some(entry(1)), e);
        assert!(
            c.get(b"k").is_none(),
            "a fill from before the commit was kept"
        );
        c.fill(b"k", Some(entry(2)), c.epoch());
        assert_eq!(c.get(b"k").unwrap().unwrap().loc.key, vec![2]);
        c.invalidate([b"k".as_slice()]);
        assert!(c.get(b"k").is_none());
        c.fill(b"free", None, c.epoch());
        assert!(matches!(c.get(b"free"), Some(None)));
        let budget = 64 << 10;
        let c = UniqueCache::new(budget);
        for i in 0..10_000u32 {
            c.fill(&i.to_be_bytes(), Some(entry(i as u8)), c.epoch());
            assert!(c.usage().0 <= budget);
        }
    }
}
