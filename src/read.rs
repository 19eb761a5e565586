//! Reads: snapshots, zero-copy records, scans.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use redb::{AccessGuard, ReadOnlyTable, TableDefinition};

use crate::account::Account;
use crate::codec::envelope::{HEADER_LEN, corrupt_value};
use crate::codec::value::Value;
use crate::db::{Db, Inner};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::limits::check_table_name;
use crate::partition::schemas::{self, Declared, Payload};
use crate::partition::set::Region;
use crate::partition::{At, Partition};
use crate::schema::user_table_name;
use crate::table::Table;
use crate::types::{AccountId, RegionId};

type Bytes = &'static [u8];
type DataTable = ReadOnlyTable<Bytes, Bytes>;

/// A stored record, read in place: derefs to `V::Archived` (or `[u8]` for
/// [`Raw`](crate::Raw)) inside redb's page, with no copy and no deserialization. Its
/// checksum, schema version and archive were validated when it was read.
///
/// A record of an older schema version that the table handle reads through an upgrade
/// ([`Table::upgrade_from`](crate::Table::upgrade_from)) is the exception: it is the
/// upgraded value, re-encoded and owned ([`Record::is_upgraded`]), not zero-copy, until
/// [`Db::migrate`](crate::Db::migrate) rewrites the table.
///
/// The record keeps its snapshot (and so the pages it points into) alive, also after the
/// [`Read`], scan or lookup that produced it is dropped; drop it when done.
pub struct Record<V: Value> {
    held: Held,
    _value: PhantomData<fn() -> V>,
}

enum Held {
    /// In place. Field order is drop order: the page guard before its snapshot.
    Page {
        guard: AccessGuard<'static, Bytes>,
        _snapshot: Snapshot,
    },
    /// An upgraded old record: an owned payload, validated for `V`.
    Upgraded(Vec<u8>),
    /// A value a write buffered, read back: an owned payload, validated for `V`.
    Buffered(Vec<u8>),
}

pub(crate) use crate::partition::set::Snapshot;

impl<V: Value> Record<V> {
    /// `data_key`: the row's key, `account ++ user key` (the envelope's CRC covers it).
    /// The table's schema rows were checked against `d` when its table was opened; the
    /// record itself is checked by [`check_record`].
    pub(crate) fn new(
        guard: AccessGuard<'static, Bytes>,
        snapshot: &Snapshot,
        part: &Partition,
        d: &Declared,
        data_key: &[u8],
    ) -> Result<Self> {
        let held = match check_record::<V>(part, snapshot, d, guard.value(), data_key)? {
            Checked::InPlace(_) => Held::Page {
                guard,
                _snapshot: snapshot.clone(),
            },
            Checked::Upgraded(new) => Held::Upgraded(new),
        };
        Ok(Record {
            held,
            _value: PhantomData,
        })
    }

    /// An owned payload (a value a write buffered), validated for `V`.
    pub(crate) fn from_payload(payload: Vec<u8>) -> Result<Self> {
        V::view(&payload).map_err(|e| Error::corrupt("<write>", e))?;
        Ok(Record {
            held: Held::Buffered(payload),
            _value: PhantomData,
        })
    }

    /// The encoded payload (the rkyv archive, or the raw bytes), without the envelope.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        match &self.held {
            Held::Page { guard, .. } => &guard.value()[HEADER_LEN..],
            Held::Upgraded(p) | Held::Buffered(p) => p,
        }
    }

    /// Whether this is an older record read through its table's upgrade: an owned,
    /// re-encoded value rather than the stored bytes read in place.
    pub fn is_upgraded(&self) -> bool {
        matches!(self.held, Held::Upgraded(_))
    }

    /// Whether this is the stored bytes read in place (zero-copy): not an upgraded old
    /// record, nor a value a [`Write`](crate::Write) buffered and read back.
    pub fn is_in_place(&self) -> bool {
        matches!(self.held, Held::Page { .. })
    }

    /// The value through validated access again (what `Deref` returns, checked once
    /// more by rkyv); mostly for tests.
    pub fn validated(&self) -> Result<&V::View> {
        V::view(self.payload()).map_err(|e| Error::corrupt("?", e))
    }
}

impl<V> Record<V>
where
    V: Value<View = <V as rkyv::Archive>::Archived> + rkyv::Archive,
    <V as rkyv::Archive>::Archived:
        rkyv::Deserialize<V, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    /// An owned copy of the record (rkyv deserialization; the record type must derive
    /// `rkyv::Deserialize` too), e.g. to change it and insert it again.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if rkyv cannot deserialize the (validated) archive.
    pub fn deserialize(&self) -> Result<V> {
        rkyv::deserialize::<V, rkyv::rancor::Error>(&**self)
            .map_err(|e| Error::corrupt("?", format!("cannot deserialize the record: {e}")))
    }
}

impl<V: Value> Deref for Record<V> {
    type Target = V::View;

    #[inline]
    fn deref(&self) -> &V::View {
        // SAFETY: `Record::new` is the only constructor and it validated these bytes with
        // rkyv's checked access for `V` (after the envelope CRC, for a page). An
        // `AccessGuard` is immutable and pins the page it points into, so `value()` returns
        // the same bytes on every call; an owned payload is never changed. Tested by
        // `record_deref_matches_validated_access`.
        unsafe { V::view_unchecked(self.payload()) }
    }
}

impl<V: Value> std::fmt::Debug for Record<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Record({} bytes{})",
            self.payload().len(),
            if self.is_upgraded() { ", upgraded" } else { "" }
        )
    }
}

/// A stored record that passed every check for a handle: read in place, or an older
/// version's upgrade (an owned payload, validated for `V`).
pub(crate) enum Checked<'v, V: Value> {
    InPlace(&'v V::View),
    Upgraded(Vec<u8>),
}

/// Checks a stored value of table `d` under `data_key` (`account ++ user key`) as every read
/// path does, `get`, scans and sweeps alike: the envelope and its CRC (bound to the row, the
/// codec and the schema version), the record's schema version against the handle (its own:
/// in place; a declared old one: through the upgrade), then rkyv's validation of the payload
/// for `V`. Damage is [`Error::Corrupt`] naming partition, table and key; a version the
/// handle does not read is [`Error::SchemaMismatch`] (or `Corrupt` when not recorded). The
/// table's `_schemas` rows were checked against `d` when the table was opened, once per
/// snapshot, not here.
#[inline]
pub(crate) fn check_record<'v, V: Value>(
    part: &Partition,
    txn: &redb::ReadTransaction,
    d: &Declared,
    bytes: &'v [u8],
    data_key: &[u8],
) -> Result<Checked<'v, V>> {
    let invalid = |e: String| {
        corrupt_value(
            &part.name,
            d.table,
            data_key,
            format_args!("payload failed validation: {e}"),
        )
    };
    match schemas::read_payload(part, d, bytes, data_key) {
        Ok(Payload::Current(p)) => V::view(p).map(Checked::InPlace).map_err(invalid),
        Ok(Payload::Upgraded(new)) => match V::view(&new) {
            Ok(_) => Ok(Checked::Upgraded(new)),
            Err(e) => Err(invalid(e)),
        },
        Err(Ok(version)) => Err(schemas::record_version_error(
            part, txn, d, version, data_key,
        )),
        Err(Err(e)) => Err(e),
    }
}

/// Field order is drop order: the opened tables (each keeps the read transaction in
/// progress in redb) before the snapshot, which releases the region last.
pub(crate) struct Snap {
    /// Tables used so far (opened in the snapshot and shared by it), with the schema they
    /// were checked against: kept here too, so a kept `Read` or `View` takes no lock.
    tables: Vec<(Declared, Option<Arc<DataTable>>)>,
    /// `_owned`, once opened (`Some(None)`: not in this region).
    owned: Option<Option<Arc<DataTable>>>,
    pub txn: Snapshot,
    pub region: Arc<Region>,
}

impl Snap {
    /// `_owned` of this snapshot, opened on first use.
    pub fn owned(&mut self) -> Result<Option<&DataTable>> {
        if self.owned.is_none() {
            let part = &self.region.part;
            self.owned = Some(self.txn.read.internal(part, crate::schema::OWNED_NAME)?);
        }
        Ok(self.owned.as_ref().and_then(Option::as_ref).map(|t| &**t))
    }

    /// Record `key` of `account` in table `table`, read in place.
    pub fn record<V: Value>(
        &mut self,
        table: &Table<V>,
        account: u64,
        key: &[u8],
    ) -> Result<Option<Record<V>>> {
        let Snap {
            region,
            txn,
            tables,
            ..
        } = self;
        let (d, t) = snap_table(region, txn, tables, table)?;
        let Some(t) = t else {
            return Ok(None);
        };
        let mut stack = [0u8; 8 + STACK_KEY];
        let heap;
        let full: &[u8] = if key.len() <= STACK_KEY {
            stack[..8].copy_from_slice(&account.to_be_bytes());
            stack[8..8 + key.len()].copy_from_slice(key);
            &stack[..8 + key.len()]
        } else {
            heap = crate::partition::region::data_key(account, key);
            &heap
        };
        match t.get(full).at(&region.part)? {
            Some(guard) => Record::new(guard, txn, &region.part, d, full).map(Some),
            None => Ok(None),
        }
    }
}

/// Region snapshots taken on first use and kept (a [`Read`]'s, a [`View`](crate::View)'s).
#[derive(Default)]
pub(crate) struct Snaps {
    list: RefCell<Vec<Snap>>,
}

impl Snaps {
    /// Runs `f` on the snapshot of `region`, taking it first if there is none.
    ///
    /// # Errors
    /// [`Error::Closed`] once the store is closed (a `Read` or `View` taken before the
    /// close reads nothing after it, from a kept snapshot or a new one).
    pub fn with<T>(
        &self,
        inner: &Inner,
        region: RegionId,
        f: impl FnOnce(&mut Snap) -> Result<T>,
    ) -> Result<T> {
        inner.check_open()?;
        let mut snaps = self.list.borrow_mut();
        let idx = match snaps.iter().position(|s| s.region.id == region) {
            Some(i) => i,
            None => {
                let r = inner.region(region)?;
                let txn = r.part.contain(|| r.snapshot())?;
                snaps.push(Snap {
                    region: r,
                    txn,
                    tables: Vec::new(),
                    owned: None,
                });
                snaps.len() - 1
            }
        };
        // A region disabled at run time is read by nobody from then on, through a kept
        // snapshot too; the snapshot is dropped, so the file is released sooner.
        if let Err(e) = snaps[idx].region.check_enabled() {
            snaps.swap_remove(idx);
            return Err(e);
        }
        f(&mut snaps[idx])
    }

    /// Drops the snapshot of `region` (the next use takes a new one).
    pub fn forget(&self, region: RegionId) {
        self.list.borrow_mut().retain(|s| s.region.id != region);
    }

    /// Drops every snapshot.
    pub fn clear(&self) {
        self.list.borrow_mut().clear();
    }
}

/// The user table of handle `t` in the snapshot `txn` of `region`, opened and checked on
/// first use (remembered in `tables`), with the schema it was checked against.
#[inline]
fn snap_table<'s, V: Value>(
    region: &Region,
    txn: &Snapshot,
    tables: &'s mut Vec<(Declared, Option<Arc<DataTable>>)>,
    t: &Table<V>,
) -> Result<(&'s Declared, Option<&'s DataTable>)> {
    let idx = match tables.iter().position(|(n, _)| n.is_of(t)) {
        Some(i) => i,
        None => {
            let d = Declared::of(t);
            let table = shared_table(&region.part, txn, &d)?;
            tables.push((d, table));
            tables.len() - 1
        }
    };
    let (d, table) = &tables[idx];
    Ok((d, table.as_deref()))
}

/// User table `d.table` of a snapshot, opened and checked once per snapshot transaction
/// (shared by the snapshots and threads that use the transaction, see
/// [`SharedRead`](crate::partition::SharedRead)).
pub(crate) fn shared_table(
    part: &Partition,
    txn: &Snapshot,
    d: &Declared,
) -> Result<Option<Arc<DataTable>>> {
    txn.read.table(part, d, || open_checked(part, txn, d))
}

/// Opens user table `d.table` of a snapshot and checks its recorded schema against `d`;
/// `None` when the table does not exist in this region.
pub(crate) fn open_checked(
    part: &Partition,
    txn: &Snapshot,
    d: &Declared,
) -> Result<Option<DataTable>> {
    check_table_name(d.table)?;
    let tname = user_table_name(d.table);
    let def = TableDefinition::<Bytes, Bytes>::new(&tname);
    let Some(t) = part.read_table(txn, def)? else {
        return Ok(None);
    };
    if part.schemas.passed(d, txn.schema_gen()) {
        return Ok(Some(t));
    }
    let rows = redb::ReadableTableMetadata::len(&t).at(part)?;
    schemas::check_read(part, txn, d, rows)?;
    if rows > 0 {
        // Passed with a recorded schema row (not merely "empty, nothing recorded").
        part.schemas.pass(d, txn.schema_gen());
    }
    Ok(Some(t))
}

/// A read snapshot of one account's data. Every region is read at the snapshot taken the
/// first time this `Read` touches it; nothing another account owns is reachable from here.
pub struct Read {
    db: Db,
    account: Account,
    snaps: Snaps,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Read(account {})", self.account.id())
    }
}

/// Keys up to this size are built on the stack.
const STACK_KEY: usize = 120;

impl Read {
    pub(crate) fn new(db: Db, account: Account) -> Self {
        Read {
            db,
            account,
            snaps: Snaps::default(),
        }
    }

    /// The account this snapshot reads.
    pub fn account(&self) -> AccountId {
        self.account.id()
    }

    fn with_snap<T>(&self, region: RegionId, f: impl FnOnce(&mut Snap) -> Result<T>) -> Result<T> {
        self.snaps.with(&self.db.inner, region, f)
    }

    /// Reads `key` from the account's home region.
    ///
    /// # Errors
    /// [`Error::Corrupt`] (naming partition, table and key) if the stored value fails its
    /// checksum or validation; [`Error::RegionDisabled`] if the home region is disabled,
    /// also when [`Db::disable_region`](crate::Db::disable_region) disabled it after this
    /// `Read` took its snapshot of it (see there).
    #[inline]
    pub fn get<V: Value>(&self, table: &Table<V>, key: impl Key) -> Result<Option<Record<V>>> {
        self.get_from(self.account.home(), table, &key.key_bytes())
    }

    /// Reads `key` from one of the account's allowed regions.
    ///
    /// # Errors
    /// [`Error::PlacementDenied`] if the policy does not include `region`, plus those of
    /// [`Read::get`].
    pub fn get_in<V: Value>(
        &self,
        region: &str,
        table: &Table<V>,
        key: impl Key,
    ) -> Result<Option<Record<V>>> {
        let id = self.db.inner.region_id(region)?;
        if !self.account.allows(id) {
            return Err(Error::PlacementDenied {
                account: self.account.id(),
                region: region.to_owned(),
            });
        }
        self.get_from(id, table, &key.key_bytes())
    }

    fn get_from<V: Value>(
        &self,
        region: RegionId,
        table: &Table<V>,
        key: &[u8],
    ) -> Result<Option<Record<V>>> {
        let account = self.account.id().0;
        self.with_snap(region, |snap| {
            // Reads this region only: a panic of redb here damages this region alone.
            let region = snap.region.clone();
            region.part.contain(|| snap.record(table, account, key))
        })
    }

    /// Every row of `table` this account holds, in each of its allowed regions (home
    /// first), each tagged with its region; keys in order within a region.
    ///
    /// A disabled region yields one [`Error::RegionDisabled`] item and the scan goes on
    /// with the others. The scan is one operation at the snapshots it takes when called: a
    /// region disabled while it runs is read to the end, one disabled before the call
    /// (also after this `Read` took its snapshot of it) yields `RegionDisabled`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad table name.
    pub fn scan<V: Value>(&self, table: &Table<V>) -> Result<Rows<V>> {
        self.scan_prefix(table, b"")
    }

    /// Like [`Read::scan`], limited to keys that start with `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad table name.
    pub fn scan_prefix<V: Value>(&self, table: &Table<V>, prefix: impl Key) -> Result<Rows<V>> {
        let prefix = prefix.key_bytes();
        let prefix: &[u8] = &prefix;
        check_table_name(table.name())?;
        let d = Declared::of(table);
        let account = self.account.id().0;
        let (lo, hi) = prefix_bounds(account, prefix);
        let mut parts = VecDeque::new();
        for &region in self.account.allowed() {
            let part = self.with_snap(region, |snap| {
                let Snap {
                    region,
                    txn,
                    tables,
                    ..
                } = snap;
                region.part.contain(|| {
                    let Some(t) = snap_table(region, txn, tables, table)?.1 else {
                        return Ok(None);
                    };
                    let range = match &hi {
                        Some(hi) => t.range::<&[u8]>(lo.as_slice()..hi.as_slice()),
                        None => t.range::<&[u8]>(lo.as_slice()..),
                    }
                    .at(&region.part)?;
                    Ok(Some((region.clone(), txn.clone(), range)))
                })
            });
            parts.push_back(match part {
                Ok(Some((region, snapshot, range))) => Ok(RangePart {
                    region,
                    snapshot,
                    range,
                    order: Order::within(lo.clone(), hi.clone()),
                }),
                Ok(None) => continue,
                Err(e) => Err(e),
            });
        }
        Ok(Rows {
            table: d,
            parts,
            current: None,
            _value: PhantomData,
        })
    }
}

/// `[account ++ prefix, next)`: the key range of one account's keys that start with prefix.
fn prefix_bounds(account: u64, prefix: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut lo = account.to_be_bytes().to_vec();
    lo.extend_from_slice(prefix);
    // The smallest key greater than every key with this prefix: increment the last byte
    // that is not 0xFF, dropping the 0xFF bytes after it.
    let mut hi = lo.clone();
    while let Some(last) = hi.pop() {
        if last != 0xFF {
            hi.push(last + 1);
            return (lo, Some(hi));
        }
    }
    (lo, None)
}

/// One region's range of a scan. It holds its region: a region disabled meanwhile keeps
/// its file open until the scan is dropped (redb fails reads of a closed database).
/// Field order is drop order: the range before its snapshot.
struct RangePart {
    range: redb::Range<'static, Bytes, Bytes>,
    snapshot: Snapshot,
    region: Arc<Region>,
    order: Order,
}

/// What a range must yield: keys in `[lo, hi)`, each greater than the one before. redb
/// walks a range by position in the tree, so a damaged page it does not verify (a page
/// copied over another, a damaged branch) can make it yield rows again, out of order, or
/// from outside the range: another account's rows in this account's scan. Such a row is
/// refused as damage.
struct Order {
    lo: Vec<u8>,
    hi: Option<Vec<u8>>,
    /// The last key yielded; empty before the first (every data key has 8 bytes or more).
    last: Vec<u8>,
}

impl Order {
    fn within(lo: Vec<u8>, hi: Option<Vec<u8>>) -> Order {
        Order {
            lo,
            hi,
            last: Vec::new(),
        }
    }

    /// Whether `key` may come next; it is then the last key.
    fn admit(&mut self, key: &[u8]) -> bool {
        let ok = key >= self.lo.as_slice()
            && self.hi.as_deref().is_none_or(|hi| key < hi)
            && (self.last.is_empty() || key > self.last.as_slice());
        self.last.clear();
        self.last.extend_from_slice(key);
        ok
    }
}

/// Rows from one or more regions: `Read::scan` (one account) or `Db::scan_all` (every
/// account). Yields `Result<Row<V>>`.
pub struct Rows<V: Value> {
    table: Declared,
    parts: VecDeque<Result<RangePart>>,
    current: Option<RangePart>,
    _value: PhantomData<fn() -> V>,
}

impl<V: Value> Rows<V> {
    pub(crate) fn all(inner: &Inner, table: Declared) -> Self {
        let mut parts = VecDeque::new();
        // One read of the region set, and no other lock taken while it is held (a second
        // `regions.read()` here would deadlock against a waiting `disable_region`).
        let set: Vec<Result<Arc<Region>>> = {
            let regions = inner.regions.read();
            regions
                .by_id
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().map(|_| regions.get(RegionId(i as u16))))
                .collect()
        };
        for region in set {
            let part = region.and_then(|r| {
                r.part.contain(|| {
                    let txn = r.snapshot()?;
                    let Some(t) = open_checked(&r.part, &txn, &table)? else {
                        return Ok(None);
                    };
                    let range = t.range::<&[u8]>(..).at(&r.part)?;
                    Ok(Some(RangePart {
                        region: r.clone(),
                        snapshot: txn.clone(),
                        range,
                        order: Order::within(Vec::new(), None),
                    }))
                })
            });
            match part {
                Ok(Some(p)) => parts.push_back(Ok(p)),
                Ok(None) => {}
                Err(Error::RegionDisabled(_)) => {}
                Err(e) => parts.push_back(Err(e)),
            }
        }
        Rows {
            table,
            parts,
            current: None,
            _value: PhantomData,
        }
    }
}

impl<V: Value> Iterator for Rows<V> {
    type Item = Result<Row<V>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(RangePart {
                region,
                snapshot,
                range,
                order,
            }) = &mut self.current
            {
                let name = &region.part.name;
                let table = &self.table;
                // The next row, read and validated with redb's panics contained (they damage
                // this region alone): `Ok(None)` at the end of the range, `Ok(Some(row))` for
                // a row (an `Err` one, e.g. a failed checksum, and the scan goes on), `Err`
                // when the range cannot go on.
                let next = region.part.contain(|| match range.next() {
                    Some(Ok((k, v))) => {
                        let full = k.value();
                        if !order.admit(full) {
                            // The region's index is damaged: nothing it yields can be
                            // trusted, here or later.
                            let what = "damaged index pages: a scan met a key out of order \
                                        or outside its range";
                            region.part.mark_damaged(what);
                            return Err(Error::corrupt(name, what));
                        }
                        if full.len() < 8 {
                            return Ok(Some(Err(Error::corrupt(
                                name,
                                "row key shorter than 8 bytes",
                            ))));
                        }
                        let account = u64::from_be_bytes(full[..8].try_into().unwrap_or([0; 8]));
                        let key = full[8..].to_vec();
                        Ok(Some(
                            Record::new(v, snapshot, &region.part, table, full).map(|record| Row {
                                region: region.id,
                                account: AccountId(account),
                                key,
                                record,
                            }),
                        ))
                    }
                    Some(Err(e)) => Err(region.part.err(e)),
                    None => Ok(None),
                });
                match next {
                    Ok(Some(row)) => return Some(row),
                    Ok(None) => self.current = None,
                    Err(e) => {
                        self.current = None;
                        return Some(Err(e));
                    }
                }
            }
            match self.parts.pop_front()? {
                Ok(p) => self.current = Some(p),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// One row of a scan.
pub struct Row<V: Value> {
    region: RegionId,
    account: AccountId,
    key: Vec<u8>,
    record: Record<V>,
}

impl<V: Value> Row<V> {
    /// The region the row lives in.
    pub fn region(&self) -> RegionId {
        self.region
    }
    /// The account that owns the row.
    pub fn account(&self) -> AccountId {
        self.account
    }
    /// The user key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The record, read in place.
    pub fn record(&self) -> &Record<V> {
        &self.record
    }
    /// The record, owned.
    pub fn into_record(self) -> Record<V> {
        self.record
    }
}

impl<V: Value> std::fmt::Debug for Row<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row")
            .field("region", &self.region)
            .field("account", &self.account)
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish()
    }
}

/// A hit of [`Db::find_unique`](crate::Db::find_unique): who owns the value, where, and the
/// record itself.
pub struct Hit<V: Value> {
    pub(crate) account: AccountId,
    pub(crate) region: RegionId,
    pub(crate) key: Vec<u8>,
    pub(crate) record: Record<V>,
}

impl<V: Value> Hit<V> {
    /// The owning account.
    pub fn account(&self) -> AccountId {
        self.account
    }
    /// The region of the record.
    pub fn region(&self) -> RegionId {
        self.region
    }
    /// The record's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The record, read in place.
    pub fn record(&self) -> &Record<V> {
        &self.record
    }
}

impl<V: Value> std::fmt::Debug for Hit<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hit")
            .field("account", &self.account)
            .field("region", &self.region)
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Order, prefix_bounds};

    #[test]
    fn order_admits_increasing_keys_in_range_only() {
        let (lo, hi) = prefix_bounds(2, b"k");
        let mut o = Order::within(lo, hi);
        let key = |acct: u64, k: &[u8]| [&acct.to_be_bytes()[..], k].concat();
        assert!(o.admit(&key(2, b"k1")));
        assert!(o.admit(&key(2, b"k2")));
        assert!(!o.admit(&key(2, b"k2")), "the same key again");
        assert!(!o.admit(&key(2, b"k1")), "a key before the last");
        let mut o = Order::within(key(2, b"k"), Some(key(2, b"l")));
        assert!(!o.admit(&key(1, b"k9")), "another account, below the range");
        assert!(!o.admit(&key(3, b"k1")), "another account, above the range");
        let mut all = Order::within(Vec::new(), None);
        assert!(all.admit(&key(1, b"a")) && all.admit(&key(3, b"a")));
    }

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        let (lo, hi) = prefix_bounds(1, b"ab");
        assert_eq!(lo, [0, 0, 0, 0, 0, 0, 0, 1, b'a', b'b']);
        assert_eq!(hi.unwrap(), [0, 0, 0, 0, 0, 0, 0, 1, b'a', b'c']);
        let (_, hi) = prefix_bounds(1, b"a\xff");
        assert_eq!(hi.unwrap(), [0, 0, 0, 0, 0, 0, 0, 1, b'b']);
        let (_, hi) = prefix_bounds(1, b"");
        assert_eq!(hi.unwrap(), [0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(prefix_bounds(u64::MAX, b"").1, None);
    }
}
