//! Parallel sweeps: every row of a table in every enabled region, read by a bounded set of
//! scoped threads ([`Db::sweep`], [`Db::scan_all_parallel`]).
//!
//! Each enabled region is read at one snapshot, all taken before the first row is visited
//! (as [`Db::scan_all`] takes them when it is called). A region's key range is cut into
//! contiguous units that tile it; the threads take units from a shared counter until none
//! is left, so regions of different sizes keep every thread busy. Each row goes through
//! [`check_record`], the check every read path uses (envelope CRC bound to the row, schema
//! version, rkyv validation), and the callback gets the validated view in place: no key
//! copy, no per-row reference counting.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata};

use crate::codec::value::Value;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::check_table_name;
use crate::partition::At;
use crate::partition::schemas::Declared;
use crate::partition::set::{Region, Snapshot};
use crate::read::{Checked, check_record, open_checked};
use crate::table::Table;
use crate::types::{AccountId, RegionId};

type Bytes = &'static [u8];

/// Units per thread, in all: enough that a thread finishing early finds work left.
const UNITS_PER_THREAD: usize = 4;
/// A region is not cut into units of fewer rows than this (a unit costs one range open).
const MIN_UNIT_ROWS: u64 = 4096;

/// A parallel sweep of one table over every enabled region: [`Db::sweep`] makes it,
/// [`Sweep::threads`] caps its threads, [`Sweep::run`] runs it.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use regionkv::{Db, NewAccount, Table};
///
/// #[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
/// #[rkyv(crate = regionkv::rkyv)]
/// struct License { key: String, seats: u32 }
/// const LICENSES: Table<License> = Table::new("licenses");
///
/// # let dir = tempfile::tempdir()?;
/// let db = Db::builder().region("us").region("eu").open(dir.path())?;
/// for (name, home) in [("acme", "us"), ("globex", "eu")] {
///     let a = db.create_account(NewAccount::new(name, home))?;
///     let mut w = db.write(a)?;
///     w.insert(&LICENSES, "lic-1", &License { key: format!("K-{name}"), seats: 5 })?;
///     w.commit()?;
/// }
///
/// let seats = AtomicU64::new(0);
/// let report = db.sweep(&LICENSES).threads(4).run(|_region, _account, _key, lic| {
///     seats.fetch_add(u64::from(lic.seats.to_native()), Ordering::Relaxed);
///     Ok::<(), regionkv::Error>(())
/// })?;
/// assert_eq!((report.rows, seats.into_inner()), (2, 10));
/// assert!(report.threads >= 1 && report.threads <= 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a sweep does nothing until `run`"]
pub struct Sweep<'a, V: Value> {
    db: &'a Db,
    table: &'a Table<V>,
    threads: usize,
}

impl<V: Value> std::fmt::Debug for Sweep<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweep")
            .field("table", &self.table.name())
            .field("threads", &self.threads)
            .finish()
    }
}

/// What a [`Sweep`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Rows visited (each passed to the callback once).
    pub rows: u64,
    /// Every enabled region, in region id order, with the rows visited there (0 when the
    /// table does not exist in it).
    pub regions: Vec<(String, u64)>,
    /// Disabled regions, not read (their files are not open), as [`Db::scan_all`] skips
    /// them.
    pub skipped: Vec<String>,
    /// Threads that read rows, the calling thread included: at most the cap given to
    /// [`Sweep::threads`], [`std::thread::available_parallelism`] and the number of units
    /// the regions were cut into.
    pub threads: usize,
}

impl Db {
    /// A parallel sweep of every row of `table` in every enabled region; see [`Sweep`].
    /// By default it uses up to [`std::thread::available_parallelism`] threads.
    ///
    /// Compared with [`Db::scan_all`] (an iterator on the calling thread): the same rows, each
    /// enabled region read at one snapshot taken when the sweep starts, disabled regions
    /// skipped alike (listed in [`SweepReport::skipped`]), every record checked alike (a
    /// damaged record is the same error); but rows arrive in no particular order, from
    /// several threads, and the first error (the store's or the callback's) stops the sweep
    /// and is returned, where `scan_all` yields it as one item and goes on.
    pub fn sweep<'a, V: Value>(&'a self, table: &'a Table<V>) -> Sweep<'a, V> {
        Sweep {
            db: self,
            table,
            threads: usize::MAX,
        }
    }

    /// [`Db::sweep`] with the default thread cap and the store's error type: calls `f` with
    /// the region, account, user key and validated record (in place) of every row of
    /// `table` in every enabled region, from up to
    /// [`std::thread::available_parallelism`] threads.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use regionkv::{Db, NewAccount, Raw, Table};
    ///
    /// const NOTES: Table<Raw> = Table::new("notes");
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// let a = db.create_account(NewAccount::new("acme", "eu"))?;
    /// let mut w = db.write(a)?;
    /// w.insert(&NOTES, "n1", b"hello")?;
    /// w.commit()?;
    ///
    /// let seen = Mutex::new(Vec::new());
    /// db.scan_all_parallel(&NOTES, |region, account, key, note| {
    ///     seen.lock().unwrap().push((db.region_name(region), account, key.to_vec(), note.to_vec()));
    ///     Ok(())
    /// })?;
    /// let eu = Some("eu".to_owned());
    /// assert_eq!(seen.into_inner().unwrap(), [(eu, a, b"n1".to_vec(), b"hello".to_vec())]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Sweep::run`].
    pub fn scan_all_parallel<V, F>(&self, table: &Table<V>, f: F) -> Result<SweepReport>
    where
        V: Value,
        F: Fn(RegionId, AccountId, &[u8], &V::View) -> Result<()> + Sync,
    {
        self.sweep(table).run(f)
    }
}

impl<'a, V: Value> Sweep<'a, V> {
    /// Caps the threads (the calling thread included; 0 counts as 1). The sweep never uses
    /// more than [`std::thread::available_parallelism`] either.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Calls `f(region, account, key, record)` once for every row: `key` is the user key,
    /// `record` the validated record read in place (for a record of an older schema
    /// version the table reads through an upgrade: the upgraded value). `f` runs on several
    /// threads at once (hence `Sync`: count with atomics, collect under a lock) and may
    /// return its own error type, which needs only `From<regionkv::Error>`.
    ///
    /// Every region's snapshot is taken, and its table opened and checked against its
    /// `_schemas` rows, before the first row is visited: such an error is returned with no
    /// row visited. A region disabled while the sweep runs is read to the end (the sweep
    /// holds its snapshot), as by a scan.
    ///
    /// A panic in `f` stops the sweep and is resumed on the calling thread once every
    /// thread has stopped.
    ///
    /// # Errors
    /// The first error stops the sweep (every thread stops before its next row) and is
    /// returned; rows visited until then were visited once each. The store's errors are
    /// those of [`Db::scan_all`]: [`Error::Closed`], [`Error::InvalidArgument`] for a bad
    /// table name, [`Error::SchemaMismatch`] for another type, [`Error::Corrupt`] for a
    /// damaged record (naming partition, table and key) or a region whose reading panicked
    /// (redb on a damaged page), storage errors.
    pub fn run<E, F>(self, f: F) -> std::result::Result<SweepReport, E>
    where
        E: From<Error> + Send,
        F: Fn(RegionId, AccountId, &[u8], &V::View) -> std::result::Result<(), E> + Sync,
    {
        self.fold(
            || (),
            |_, region, account, key, record| f(region, account, key, record),
        )
        .map(|(report, _)| report)
    }

    /// [`Sweep::run`] with a state per thread: each thread starts from `init()` and `f`
    /// changes it for every row that thread reads; the states come back (one per thread,
    /// in no particular order) for the caller to merge. Counts, sums and collections need
    /// no atomics nor locks in the callback this way.
    ///
    /// ```
    /// use regionkv::{Db, NewAccount, Raw, Table};
    ///
    /// const NOTES: Table<Raw> = Table::new("notes");
    /// # let dir = tempfile::tempdir()?;
    /// let db = Db::builder().region("us").region("eu").open(dir.path())?;
    /// for (name, home) in [("acme", "us"), ("globex", "eu")] {
    ///     let a = db.create_account(NewAccount::new(name, home))?;
    ///     let mut w = db.write(a)?;
    ///     w.insert(&NOTES, "n1", b"hello")?;
    ///     w.insert(&NOTES, "n2", b"bye")?;
    ///     w.commit()?;
    /// }
    /// let (report, bytes) = db.sweep(&NOTES).fold(
    ///     || 0usize,
    ///     |total, _region, _account, _key, note| {
    ///         *total += note.len();
    ///         Ok::<(), regionkv::Error>(())
    ///     },
    /// )?;
    /// assert_eq!((report.rows, bytes.iter().sum::<usize>()), (4, 16));
    /// assert_eq!(bytes.len(), report.threads);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Sweep::run`]; a panic in `init` is resumed like one in `f`.
    pub fn fold<S, E, I, F>(self, init: I, f: F) -> std::result::Result<(SweepReport, Vec<S>), E>
    where
        S: Send,
        E: From<Error> + Send,
        I: Fn() -> S + Sync,
        F: Fn(&mut S, RegionId, AccountId, &[u8], &V::View) -> std::result::Result<(), E> + Sync,
    {
        let Sweep { db, table, threads } = self;
        db.inner.check_open()?;
        check_table_name(table.name())?;
        let d = Declared::of(table);
        let setup = prepare(db, &d)?;
        let cap = threads
            .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let units = cut(&setup.parts, cap)?;
        let n = cap.min(units.len()).max(1);
        let shared = Shared {
            d: &d,
            parts: &setup.parts,
            units: &units,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            panic: Mutex::new(None),
        };
        let work = || worker::<V, S, E, I, F>(&shared, &init, &f);
        let states: Vec<Option<S>> = if n == 1 {
            vec![work()]
        } else {
            std::thread::scope(|s| {
                let mut handles = Vec::with_capacity(n - 1);
                for i in 1..n {
                    // A thread the system refuses is one fewer; the others share its units.
                    if let Ok(h) = std::thread::Builder::new()
                        .name(format!("regionkv-sweep-{i}"))
                        .spawn_scoped(s, work)
                    {
                        handles.push(h);
                    }
                }
                let mut states = vec![work()];
                // Workers catch their panics, so a join fails only if one could not even
                // run its guard; its state is then lost like a panicking worker's.
                states.extend(handles.into_iter().map(|h| h.join().ok().flatten()));
                states
            })
        };
        if let Some(p) = shared.panic.into_inner() {
            resume_unwind(p);
        }
        if let Some(e) = shared.error.into_inner() {
            return Err(e);
        }
        let regions: Vec<(String, u64)> = setup
            .regions
            .into_iter()
            .map(|(name, part)| {
                let rows = part
                    .and_then(|i| setup.parts.get(i))
                    .map_or(0, |p| p.rows.load(Ordering::Relaxed));
                (name, rows)
            })
            .collect();
        let threads = states.len();
        Ok((
            SweepReport {
                rows: regions.iter().map(|(_, n)| n).sum(),
                regions,
                skipped: setup.skipped,
                threads,
            },
            states.into_iter().flatten().collect(),
        ))
    }
}

/// One region's table at the sweep's snapshot. It holds its region: a region disabled
/// meanwhile keeps its file open until the sweep ends.
/// Field order is drop order: the table before its snapshot.
struct Part {
    table: ReadOnlyTable<Bytes, Bytes>,
    snapshot: Snapshot,
    region: Arc<Region>,
    rows: AtomicU64,
}

struct Setup {
    parts: Vec<Part>,
    /// Every enabled region by id: its name and its part, if the table exists there.
    regions: Vec<(String, Option<usize>)>,
    skipped: Vec<String>,
}

/// Takes every enabled region's snapshot and opens (and checks) its table, as
/// `Rows::all` does: a region disabled before this is skipped.
fn prepare(db: &Db, d: &Declared) -> Result<Setup> {
    // One read of the region set, and no other lock taken while it is held (a second
    // `regions.read()` here would deadlock against a waiting `disable_region`).
    let set: Vec<(String, Result<Arc<Region>>)> = {
        let regions = db.inner.regions.read();
        regions
            .by_id
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                s.as_ref()
                    .map(|(name, _)| (name.clone(), regions.get(RegionId(i as u16))))
            })
            .collect()
    };
    let mut setup = Setup {
        parts: Vec::new(),
        regions: Vec::new(),
        skipped: Vec::new(),
    };
    for (name, region) in set {
        let opened = region.and_then(|r| {
            // Reads this region only: a panic of redb here (a damaged page) damages this
            // region alone and is `Error::Corrupt`.
            let got = r.part.contain(|| {
                let snapshot = r.snapshot()?;
                let table = open_checked(&r.part, &snapshot, d)?;
                Ok(table.map(|table| (snapshot, table)))
            })?;
            Ok(got.map(|(snapshot, table)| Part {
                region: r,
                snapshot,
                table,
                rows: AtomicU64::new(0),
            }))
        });
        match opened {
            Ok(Some(p)) => {
                setup.parts.push(p);
                setup.regions.push((name, Some(setup.parts.len() - 1)));
            }
            Ok(None) => setup.regions.push((name, None)),
            Err(Error::RegionDisabled(_)) => setup.skipped.push(name),
            Err(e) => return Err(e),
        }
    }
    Ok(setup)
}

/// A contiguous key range of one part: `[lo, hi)`, `None` unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    part: usize,
    lo: Option<[u8; 16]>,
    hi: Option<[u8; 16]>,
}

/// Cuts every part into units, about `UNITS_PER_THREAD * threads` in all, shared out by
/// the parts' row counts; a part of fewer than `MIN_UNIT_ROWS` rows per unit is cut less.
/// Units are interleaved across parts so that threads start in different regions.
fn cut(parts: &[Part], threads: usize) -> Result<Vec<Unit>> {
    let mut lens = Vec::with_capacity(parts.len());
    for p in parts {
        lens.push(p.region.part.contain(|| p.table.len().at(&p.region.part))?);
    }
    let total: u64 = lens.iter().sum::<u64>().max(1);
    let target = threads.saturating_mul(UNITS_PER_THREAD) as u64;
    let mut per_part = Vec::with_capacity(parts.len());
    for (i, (p, &len)) in parts.iter().zip(&lens).enumerate() {
        let mut n = if threads == 1 || len == 0 {
            1
        } else {
            (target.saturating_mul(len) / total)
                .min(len / MIN_UNIT_ROWS)
                .max(1)
        };
        let mut bounds = Vec::new();
        if n > 1 {
            let part = &p.region.part;
            let ends = part.contain(|| {
                let first = p.table.first().at(part)?;
                let last = p.table.last().at(part)?;
                Ok(match (first, last) {
                    (Some((lo, _)), Some((hi, _))) => {
                        Some((prefix_u128(lo.value()), prefix_u128(hi.value())))
                    }
                    _ => None,
                })
            })?;
            if let Some((lo, hi)) = ends {
                bounds = split_points(lo, hi, n);
            }
            n = bounds.len() as u64 + 1;
        }
        let mut units = Vec::with_capacity(n as usize);
        let mut lo = None;
        for b in bounds {
            let hi = Some(b.to_be_bytes());
            units.push(Unit { part: i, lo, hi });
            lo = hi;
        }
        units.push(Unit {
            part: i,
            lo,
            hi: None,
        });
        per_part.push(units.into_iter());
    }
    let mut out = Vec::new();
    loop {
        let before = out.len();
        for units in per_part.iter_mut() {
            out.extend(units.next());
        }
        if out.len() == before {
            return Ok(out);
        }
    }
}

/// The first 16 bytes of a key (zero-padded) as a big-endian number: keys compare as
/// these numbers do, up to ties within 16 bytes.
fn prefix_u128(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

/// Up to `n - 1` strictly increasing points that cut `[lo, hi]` into `n` even spans
/// (fewer when the span is too narrow). Only the balance depends on them: whatever they
/// are, the units they bound tile the whole key space.
fn split_points(lo: u128, hi: u128, n: u64) -> Vec<u128> {
    let span = hi.saturating_sub(lo);
    let n = u128::from(n.max(1));
    let step = span / n;
    if step == 0 {
        return Vec::new();
    }
    (1..n).map(|j| lo + step * j).collect()
}

struct Shared<'s, E> {
    d: &'s Declared,
    parts: &'s [Part],
    units: &'s [Unit],
    next: AtomicUsize,
    stop: AtomicBool,
    error: Mutex<Option<E>>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

impl<E> Shared<'_, E> {
    fn fail(&self, e: E) {
        self.stop.store(true, Ordering::Relaxed);
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// Takes units until none is left or the sweep stops; returns its state (`None` after a
/// panic). A panic in `init` or the callback is kept for the calling thread to resume; one
/// while reading (redb on a damaged page) is the region's `Corrupt`.
fn worker<V, S, E, I, F>(s: &Shared<'_, E>, init: &I, f: &F) -> Option<S>
where
    V: Value,
    E: From<Error>,
    I: Fn() -> S,
    F: Fn(&mut S, RegionId, AccountId, &[u8], &V::View) -> std::result::Result<(), E>,
{
    let in_callback = Cell::new(true);
    let current = Cell::new(None::<usize>);
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut state = init();
        in_callback.set(false);
        while !s.stop.load(Ordering::Relaxed) {
            let i = s.next.fetch_add(1, Ordering::Relaxed);
            let Some(unit) = s.units.get(i) else {
                break;
            };
            current.set(Some(unit.part));
            if let Err(e) = sweep_unit::<V, S, E, F>(s, unit, &mut state, f, &in_callback) {
                s.fail(e);
                break;
            }
        }
        state
    }));
    match run {
        Ok(state) => Some(state),
        Err(p) => {
            s.stop.store(true, Ordering::Relaxed);
            if in_callback.get() {
                let mut slot = s.panic.lock();
                if slot.is_none() {
                    *slot = Some(p);
                }
            } else {
                // redb panicked reading the part (a damaged page): the region is marked
                // damaged (it refuses reads and writes until reopened), as any contained
                // read would.
                let msg = format!(
                    "reading table `{}`: {}",
                    s.d.table,
                    crate::partition::contain::panic_message(&*p)
                );
                let e = match current.get().and_then(|i| s.parts.get(i)) {
                    Some(part) => part.region.part.panicked(&msg),
                    None => Error::corrupt("?", format!("a sweep panicked: {msg}")),
                };
                s.fail(E::from(e));
            }
            None
        }
    }
}

/// Reads one unit, checking every row and calling `f`.
fn sweep_unit<V, S, E, F>(
    s: &Shared<'_, E>,
    unit: &Unit,
    state: &mut S,
    f: &F,
    in_callback: &Cell<bool>,
) -> std::result::Result<(), E>
where
    V: Value,
    E: From<Error>,
    F: Fn(&mut S, RegionId, AccountId, &[u8], &V::View) -> std::result::Result<(), E>,
{
    let Some(p) = s.parts.get(unit.part) else {
        return Ok(());
    };
    let part = &p.region.part;
    let range = match (&unit.lo, &unit.hi) {
        (None, None) => p.table.range::<&[u8]>(..),
        (Some(lo), None) => p.table.range::<&[u8]>(lo.as_slice()..),
        (None, Some(hi)) => p.table.range::<&[u8]>(..hi.as_slice()),
        (Some(lo), Some(hi)) => p.table.range::<&[u8]>(lo.as_slice()..hi.as_slice()),
    }
    .at(part)?;
    let region = p.region.id;
    let mut rows = 0u64;
    let mut result = Ok(());
    for item in range {
        if s.stop.load(Ordering::Relaxed) {
            break;
        }
        let (k, v) = match item {
            Ok(kv) => kv,
            Err(e) => {
                result = Err(E::from(part.err(e)));
                break;
            }
        };
        let full = k.value();
        let Some((account, key)) = full.split_first_chunk::<8>() else {
            result = Err(E::from(Error::corrupt(
                &part.name,
                "row key shorter than 8 bytes",
            )));
            break;
        };
        let account = AccountId(u64::from_be_bytes(*account));
        let upgraded;
        let record: &V::View = match check_record::<V>(part, &p.snapshot, s.d, v.value(), full) {
            Ok(Checked::InPlace(view)) => view,
            Ok(Checked::Upgraded(new)) => {
                upgraded = new;
                match V::view(&upgraded) {
                    Ok(view) => view,
                    Err(e) => {
                        result = Err(E::from(Error::corrupt(&part.name, e)));
                        break;
                    }
                }
            }
            Err(e) => {
                result = Err(E::from(e));
                break;
            }
        };
        in_callback.set(true);
        let r = f(state, region, account, key, record);
        in_callback.set(false);
        if let Err(e) = r {
            result = Err(e);
            break;
        }
        rows += 1;
    }
    p.rows.fetch_add(rows, Ordering::Relaxed);
    result
}

#[cfg(test)]
mod tests {
    use super::{prefix_u128, split_points};

    #[test]
    fn split_points_increase_strictly_within_the_span() {
        for (lo, hi, n) in [
            (0u128, 1000u128, 4u64),
            (5, 6, 8),
            (7, 7, 3),
            (0, u128::MAX, 16),
            (u128::MAX - 3, u128::MAX, 2),
            (100, 50, 4),
        ] {
            let p = split_points(lo, hi, n);
            assert!(p.len() < n as usize, "{lo} {hi} {n}: {p:?}");
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
            assert!(p.iter().all(|&x| x > lo && x <= hi), "{lo} {hi}: {p:?}");
        }
        assert_eq!(split_points(0, 1000, 4), [250, 500, 750]);
        assert!(split_points(7, 7, 3).is_empty());
    }

    #[test]
    fn prefix_orders_as_keys_do() {
        let keys: [&[u8]; 6] = [
            b"",
            b"\x00",
            b"\x00\x00\x00\x00\x00\x00\x00\x01",
            b"\x00\x00\x00\x00\x00\x00\x00\x01abc",
            b"\x00\x00\x00\x00\x00\x00\x00\x02",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for w in keys.windows(2) {
            assert!(prefix_u128(w[0]) <= prefix_u128(w[1]), "{w:?}");
        }
    }
}
