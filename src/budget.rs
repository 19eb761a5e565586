//! The page-cache budget ([`Builder::cache_size`]): how it is shared among the partitions
//! of a store, decided once at open (docs/design.md, "The page-cache budget").
//!
//! redb bounds one `Database`'s page cache (read cache and write buffer together) by the
//! size given when it is opened, and cannot change it later. So the shares are decided at
//! open, from the only demand signal there is then, each file's size, and their sum, with
//! the cache of the one transient look a store runs at a time (a probe at open,
//! [`Db::verify`](crate::Db::verify)), never exceeds the budget.

#[cfg(doc)]
use crate::builder::Builder;
use crate::error::{Error, Result};

/// The smallest page cache a partition gets: 64 KiB (16 of redb's 4 KiB pages: a B-tree
/// path from root to leaf with room to spare, and a write buffer of 8 pages).
///
/// redb itself has no minimum (it works with a cache of a few pages, reading and writing
/// the file directly for the rest); this floor keeps a lookup's tree path cached. A
/// store with `n` open regions needs a budget of at least `(n + 2) ×` this: one floor
/// per partition (the regions and the global file) and one for the verification look.
pub const MIN_PARTITION_CACHE: usize = 64 << 10;

/// The largest cache of a verification look (a probe at open, [`Db::verify`](crate::Db::verify)).
const MAX_LOOK_CACHE: usize = 1 << 20;

/// How a store's page-cache budget is shared, from [`Db::cache_budget`](crate::Db::cache_budget).
///
/// ```
/// # use regionkv::Db;
/// # let dir = tempfile::tempdir()?;
/// let db = Db::builder().region("us").region("eu").cache_size(8 << 20).open(dir.path())?;
/// let budget = db.cache_budget();
/// assert_eq!(budget.total, 8 << 20);
/// assert!(budget.used() <= budget.total);
/// assert_eq!(budget.partitions.len(), 3); // global, us, eu
/// # db.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheBudget {
    /// The budget the builder was given ([`Builder::cache_size`]).
    pub total: usize,
    /// The cache of a verification look, held back from the partitions' shares: the
    /// checks of [`Db::verify`](crate::Db::verify) (and of a partition a redb panic
    /// blames) open a second, transient view of a file with this cache, one at a time.
    pub look: usize,
    /// Each open partition's page cache: `global` first, then the open regions in the
    /// builder's order. Disabled regions have none. As the open decided them: a region
    /// disabled later (`Db::disable_region`) stays listed, and its share stays unused
    /// (its cache is dropped with its file) until the next open.
    pub partitions: Vec<CacheShare>,
}

impl CacheBudget {
    /// The bytes given out: the look's cache plus every partition's share (never above
    /// [`CacheBudget::total`]).
    pub fn used(&self) -> usize {
        self.look + self.partitions.iter().map(|p| p.bytes).sum::<usize>()
    }
}

/// One partition's page cache, in [`CacheBudget::partitions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheShare {
    /// `global` or the region's name.
    pub partition: String,
    /// The size of its file when the store was opened (0 for a file created by that open):
    /// the weight its share was given by.
    pub file_bytes: u64,
    /// The bound of its redb page cache (read cache and write buffer together), in bytes.
    pub bytes: usize,
}

/// The smallest budget for `partitions` partitions (the global file included).
pub(crate) fn minimum(partitions: usize) -> Option<usize> {
    partitions.checked_add(1)?.checked_mul(MIN_PARTITION_CACHE)
}

/// The cache of the verification look for a budget of `total`: 1/64 of it, between
/// [`MIN_PARTITION_CACHE`] and 1 MiB.
pub(crate) fn look_cache(total: usize) -> usize {
    (total / 64).clamp(MIN_PARTITION_CACHE, MAX_LOOK_CACHE)
}

/// Refuses a budget below [`minimum`] for this many partitions.
pub(crate) fn check(total: usize, partitions: usize) -> Result<()> {
    match minimum(partitions) {
        Some(min) if total >= min => Ok(()),
        min => Err(Error::Config(format!(
            "cache_size of {total} bytes is below the minimum for {partitions} partitions \
             (the global file and {} regions): {} bytes, {} bytes (MIN_PARTITION_CACHE) for \
             each partition and one for verification",
            partitions.saturating_sub(1),
            min.map_or_else(|| "more than usize::MAX".to_owned(), |m| m.to_string()),
            MIN_PARTITION_CACHE
        ))),
    }
}

/// Shares `total` among partitions of these file sizes: the look's cache is held back,
/// every partition gets [`MIN_PARTITION_CACHE`], and the rest is split in proportion to
/// the file sizes (evenly when every file is empty or new). Rounded down, so the sum
/// never exceeds `total`.
///
/// # Errors
/// [`Error::Config`] for a budget below [`minimum`].
pub(crate) fn split(total: usize, names: Vec<String>, sizes: &[u64]) -> Result<CacheBudget> {
    let n = sizes.len();
    check(total, n)?;
    let floors = n * MIN_PARTITION_CACHE;
    // `check` leaves at least one floor above the partitions' floors.
    let look = look_cache(total).min(total - floors);
    let spread = (total - floors - look) as u128;
    let weight: u128 = sizes.iter().map(|&s| s as u128).sum();
    let partitions = names
        .into_iter()
        .zip(sizes)
        .map(|(partition, &file_bytes)| {
            // Evenly when every file is new or empty.
            let extra = (spread * file_bytes as u128)
                .checked_div(weight)
                .unwrap_or_else(|| spread / n as u128);
            CacheShare {
                partition,
                file_bytes,
                // At most `spread`, which fits in usize.
                bytes: MIN_PARTITION_CACHE + extra as usize,
            }
        })
        .collect();
    Ok(CacheBudget {
        total,
        look,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| i.to_string()).collect()
    }

    #[test]
    fn below_minimum_is_refused_naming_it() {
        let min = minimum(3).unwrap();
        assert_eq!(min, 4 * MIN_PARTITION_CACHE);
        let err = split(min - 1, names(3), &[1, 2, 3]).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains(&min.to_string())),
            "{err}"
        );
        let at = split(min, names(3), &[1, 2, 3]).unwrap();
        assert!(at.partitions.iter().all(|p| p.bytes == MIN_PARTITION_CACHE));
        assert_eq!(at.used(), min);
        let huge = split(usize::MAX, names(2), &[u64::MAX, u64::MAX]).unwrap();
        assert!(huge.total - huge.used() <= 2);
        assert!(check(usize::MAX, usize::MAX).is_err());
    }

    #[test]
    fn shares_follow_file_sizes_and_empty_files_get_the_floor() {
        let b = split(64 << 20, names(3), &[1 << 20, 3 << 20, 0]).unwrap();
        let [g, a, c] = [0, 1, 2].map(|i| b.partitions[i].bytes);
        assert!(a > g && g > c, "{b:?}");
        assert_eq!(c, MIN_PARTITION_CACHE);
        // 1:3 beyond the floors, to within rounding.
        assert!(((a - MIN_PARTITION_CACHE) / 3).abs_diff(g - MIN_PARTITION_CACHE) <= 1);
        assert_eq!(b.look, 1 << 20);
        // All new: even.
        let b = split(64 << 20, names(4), &[0; 4]).unwrap();
        assert!(b.partitions.windows(2).all(|w| w[0].bytes == w[1].bytes));
        assert!(b.used() <= b.total && b.total - b.used() < 4);
    }

    proptest! {
        #[test]
        fn never_above_the_budget(
            total in 0usize..(1 << 40),
            sizes in proptest::collection::vec(prop_oneof![Just(0u64), 0u64..(1 << 40), Just(u64::MAX)], 1..300),
        ) {
            match split(total, names(sizes.len()), &sizes) {
                Ok(b) => {
                    prop_assert!(b.used() <= total);
                    prop_assert!(b.look >= MIN_PARTITION_CACHE);
                    prop_assert!(b.partitions.iter().all(|p| p.bytes >= MIN_PARTITION_CACHE));
                    // Nothing much is left over: at most one byte per partition to rounding.
                    prop_assert!(total - b.used() <= sizes.len());
                }
                Err(Error::Config(_)) => prop_assert!(total < minimum(sizes.len()).unwrap()),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }
}
