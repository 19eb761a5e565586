//! `View`: region snapshots kept between lookups, for a hot path that validates unique
//! values (a license key, an API token) and reads their records without paying a new
//! snapshot per call; and the one implementation of `find_unique`.

use std::sync::Arc;

use crate::codec::value::Value;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::limits::check_table_name;
use crate::partition::At;
use crate::partition::region::{owned_key, owned_lists};
use crate::read::{Hit, Record, Snap, Snaps};
use crate::reservation::state::{Entry, Loc, State};
use crate::table::Table;
use crate::types::{AccountId, RegionId};

/// How many times a lookup reads the index entry again when it keeps moving.
const LOOKUP_ROUNDS: usize = 16;

/// A reusable read view: region snapshots taken on first use and kept between calls, and
/// the unique index read through its in-memory cache. For a thread that serves lookups
/// (`find_unique`, `get` of any account) and wants neither a new snapshot per call nor a
/// [`Read`](crate::Read) per account.
///
/// What it sees: the unique index as it is now (from the cache, coherent with every
/// commit); records as of the view's snapshot of their region. When the index names a
/// record the view's snapshot does not have yet (written after the view took it),
/// `find_unique` takes a new snapshot of that region and looks again, so a value claimed
/// before the call is always found. [`View::get`] reads at the view's snapshots: call
/// [`View::refresh`] to see writes committed after them. A region disabled at run time
/// after the view took its snapshot is not read any more: a `get` or `find_unique` called
/// after [`Db::disable_region`](crate::Db::disable_region) returned answers
/// [`Error::RegionDisabled`] for it, as for a region disabled before. Not `Sync` (one per
/// thread);
/// cheap to create, but the point is to keep it.
///
/// ```
/// # use regionkv::{Db, NewAccount, Raw, Table, Unique};
/// # let dir = tempfile::tempdir()?;
/// # let db = Db::builder().region("eu").open(dir.path())?;
/// const LICENSES: Table<Raw> = Table::new("licenses");
/// let acme = db.create_account(NewAccount::new("acme", "eu"))?;
/// let mut w = db.write(acme)?;
/// w.insert_unique(&LICENSES, "l1", b"pro", &[Unique::new("license", "K-1")])?;
/// w.commit()?;
/// let view = db.view()?;
/// for _ in 0..3 {
///     // One snapshot of eu for all three lookups; the index entry from memory.
///     let hit = view.find_unique(&LICENSES, "license", "K-1")?.expect("valid key");
///     assert_eq!((hit.account(), &**hit.record()), (acme, &b"pro"[..]));
/// }
/// assert!(view.find_unique(&LICENSES, "license", "K-2")?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct View {
    db: Db,
    snaps: Snaps,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("View")
    }
}

impl Db {
    /// A reusable read view (see [`View`]).
    ///
    /// # Errors
    /// [`Error::Closed`].
    pub fn view(&self) -> Result<View> {
        self.inner.check_open()?;
        Ok(View {
            db: self.clone(),
            snaps: Snaps::default(),
        })
    }
}

impl View {
    /// Drops the view's snapshots: the next calls see every write committed before them.
    pub fn refresh(&mut self) {
        self.snaps.clear();
    }

    /// Reads `key` of `account` from its home region, at the view's snapshot of it.
    ///
    /// # Errors
    /// Those of [`Read::get`](crate::Read::get), and [`Error::AccountUnknown`].
    pub fn get<V: Value>(
        &self,
        account: AccountId,
        table: &Table<V>,
        key: impl Key,
    ) -> Result<Option<Record<V>>> {
        let inner = &*self.db.inner;
        inner.check_open()?;
        let a = inner.route(account)?;
        let key = key.key_bytes();
        self.snaps.with(inner, a.home(), |snap| {
            // Reads this region only: a panic of redb here damages this region alone, and
            // a region fenced since the snapshot was taken refuses the read.
            let region = snap.region.clone();
            region.part.contain(|| snap.record(table, account.0, &key))
        })
    }

    /// Whether `value` is owned (or being claimed) in `namespace`: see
    /// [`Db::is_taken`](crate::Db::is_taken) (which this is).
    ///
    /// # Errors
    /// Those of [`Db::is_taken`](crate::Db::is_taken).
    pub fn is_taken(&self, namespace: &str, value: impl AsRef<[u8]>) -> Result<bool> {
        self.db.is_taken(namespace, value)
    }

    /// Finds the record that owns `value` in `namespace`, if it lives in `table`: the
    /// index entry (from memory when cached), verified against the plaintext kept beside
    /// the record in its region, so a digest collision never returns a wrong record.
    ///
    /// # Errors
    /// [`Error::RegionDisabled`] if the owner lives in a disabled region;
    /// [`Error::InvalidArgument`] for an empty or over-long namespace or value;
    /// [`Error::Corrupt`] if the record fails its checksum;
    /// [`Error::RegionUnsettled`] if the value looks free while a disabled region may
    /// hold claims a crash left unsettled; [`Error::Busy`] if the owner kept changing.
    pub fn find_unique<V: Value>(
        &self,
        table: &Table<V>,
        namespace: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Hit<V>>> {
        let inner = &*self.db.inner;
        inner.check_open()?;
        check_table_name(table.name())?;
        let value = value.as_ref();
        // The entry names the owner; the region is the truth. During a change of owner (a
        // transfer between two records of one account, committed in one region commit),
        // the entry is in flight and names the receiver, its `prev` the current owner:
        // exactly one of them owns the value at any region snapshot. If neither does at
        // the view's snapshot, the snapshot may predate the entry: look again at a new
        // one. If neither does at a new snapshot either, the entry moved on between the
        // two reads: read it again, until two reads agree (then the answer is stable:
        // nobody owns it at that snapshot).
        let mut last: Option<Arc<Entry>> = None;
        for _ in 0..LOOKUP_ROUNDS {
            let Some(entry) = inner.unique_entry(namespace, value)? else {
                inner.coord.check_settled()?;
                return Ok(None);
            };
            if entry.state == State::Tombstone {
                inner.coord.check_settled()?;
                return Ok(None);
            }
            if last.as_ref() == Some(&entry) {
                return Ok(None);
            }
            let mut candidates = vec![&entry.loc];
            if entry.state == State::Pending
                && let Some(prev) = entry.prev.as_deref()
                && prev.state == State::Committed
            {
                candidates.push(&prev.loc);
            }
            candidates.retain(|l| l.table == table.name());
            let Some(first) = candidates.first() else {
                return Ok(None);
            };
            let region = RegionId(first.region);
            // Reads this region only: a panic of redb here damages this region alone.
            let part = inner.region(region)?;
            let part = &part.part;
            let look = |snap: &mut Snap| -> Result<Option<Hit<V>>> {
                for loc in candidates.iter().filter(|l| l.region == region.0) {
                    if let Some(hit) = owner_at(snap, table, loc, namespace, value)? {
                        return Ok(Some(hit));
                    }
                }
                Ok(None)
            };
            if let Some(hit) = part.contain(|| self.snaps.with(inner, region, look))? {
                return Ok(Some(hit));
            }
            // Perhaps only the view's snapshot is older than the entry.
            self.snaps.forget(region);
            if let Some(hit) = part.contain(|| self.snaps.with(inner, region, look))? {
                return Ok(Some(hit));
            }
            last = Some(entry);
        }
        Err(Error::Busy(format!(
            "the owner of a value in namespace `{namespace}` kept changing during the lookup"
        )))
    }
}

/// The record at `loc` in the region snapshot `snap`, if it owns `value` in `namespace`
/// there (its `_owned` row lists the plaintext).
fn owner_at<V: Value>(
    snap: &mut Snap,
    table: &Table<V>,
    loc: &Loc,
    namespace: &str,
    value: &[u8],
) -> Result<Option<Hit<V>>> {
    let owns = {
        let region = snap.region.clone();
        let Some(owned) = snap.owned()? else {
            return Ok(None);
        };
        let okey = owned_key(&loc.table, loc.account, &loc.key);
        let Some(list) = owned.get(okey.as_slice()).at(&region.part)? else {
            return Ok(None);
        };
        owned_lists(list.value(), namespace, value)
            .ok_or_else(|| Error::corrupt(&region.part.name, "undecodable owned-values row"))?
    };
    if !owns {
        return Ok(None);
    }
    let Some(record) = snap.record(table, loc.account, &loc.key)? else {
        return Ok(None);
    };
    Ok(Some(Hit {
        account: AccountId(loc.account),
        region: snap.region.id,
        key: loc.key.clone(),
        record,
    }))
}
