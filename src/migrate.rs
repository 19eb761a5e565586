//! `Db::migrate`: rewrites a table's records of older schema versions as the current
//! version, in bounded batches, each one synced region commit.
//!
//! A batch reads up to `batch` old records from a cursor, upgrades each through the table
//! handle's declared upgrade, and writes them back sealed with the current version (and the
//! accounts' byte counters adjusted) in one region write transaction. A crash loses at most
//! the batch in flight; running `migrate` again finds what is left (records of the current
//! version are skipped), so it is resumable without any saved cursor. A pass ends at the
//! table's end; passes repeat until one rewrites nothing, so records written at an old
//! version behind the cursor meanwhile are caught too.
//!
//! In a table that declares its unique values, an upgrade may change them (a field the
//! declaration reads). Such a record is not rewritten in the batch: it is rewritten after
//! the batch by an ordinary write of its account (the reservation protocol claims and
//! releases the difference), which also checks that the record is still the bytes the
//! batch read. A value another record owns leaves the record at its old version, listed in
//! [`MigrateReport::unique_conflicts`].

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::codec::envelope::{self, Binding};
use crate::codec::value::Value;
use crate::db::{Db, Inner};
use crate::error::{Error, Result};
use crate::partition::At;
use crate::partition::region::{decode_owned, owned_key};
use crate::partition::schemas::{self, Declared, Payload};
use crate::partition::set::Region;
use crate::schema::OWNED;
use crate::schema::{USAGE, user_table_name};
use crate::table::Table;
use crate::types::AccountId;
use crate::write::Write;

/// Unique values: (namespace, value).
type Values = Vec<(String, Vec<u8>)>;
/// The unique values a table's declarations take from a payload of the current version.
type DeclaredOf<'a> = dyn Fn(&[u8]) -> Result<Values> + 'a;

/// Records per batch of [`Db::migrate`].
pub const DEFAULT_MIGRATE_BATCH: usize = 1000;

/// What [`Db::migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Records rewritten as the current version.
    pub rewritten: u64,
    /// Regions whose table holds only current records now (the table absent counts).
    pub regions: Vec<String>,
    /// Disabled regions, not migrated (their files are not open): run again when enabled.
    pub skipped: Vec<String>,
    /// Records left at their old version because the unique values their upgrade declares
    /// cannot be claimed (owned by another record, or invalid).
    pub unique_conflicts: Vec<LeftBehind>,
}

/// A record [`Db::migrate`] left at its old version (see
/// [`MigrateReport::unique_conflicts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeftBehind {
    /// Its region.
    pub region: String,
    /// Its account.
    pub account: AccountId,
    /// Its user key.
    pub key: Vec<u8>,
    /// The namespace of the value another record owns, if that is the reason.
    pub namespace: Option<String>,
    /// Why, as the error of the write that tried to rewrite it says.
    pub reason: String,
}

/// How many passes over one region [`Db::migrate`] makes at most (a pass repeats when the
/// one before rewrote something, in case records were written behind its cursor).
pub const MAX_MIGRATE_PASSES: usize = 16;

/// Progress of [`Db::migrate_with`], after each committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrateProgress {
    /// The region the batch was in.
    pub region: String,
    /// Records rewritten by this call so far, in all regions.
    pub rewritten: u64,
    /// Records of the table in this region (old and current).
    pub region_records: u64,
}

impl Db {
    /// Rewrites every record of `table` whose schema version is older than the handle's as
    /// the current version (through the upgrade the handle declares for it), in every
    /// enabled region, [`DEFAULT_MIGRATE_BATCH`] records per synced commit. Afterwards reads
    /// are zero-copy again and `audit()` reports no outdated record.
    ///
    /// Resumable: after a crash or an error, calling it again finishes the work.
    ///
    /// # Errors
    /// [`Error::SchemaMismatch`] if the table holds a version the handle neither is nor
    /// declares (nothing of that batch is written; earlier batches stay);
    /// [`Error::InvalidArgument`] for a bad table name or a batch of 0; storage errors.
    ///
    /// ```
    /// # use regionkv::{Db, NewAccount, Schema, Table, Upgrade};
    /// # use regionkv::rkyv;
    /// # #[derive(rkyv::Archive, rkyv::Serialize, Schema)]
    /// # #[rkyv(crate = regionkv::rkyv)]
    /// # struct V1 { n: u32 }
    /// # #[derive(rkyv::Archive, rkyv::Serialize, Schema)]
    /// # #[rkyv(crate = regionkv::rkyv)]
    /// # struct V2 { n: u64 }
    /// # impl Upgrade<V2> for V1 { fn upgrade(o: &ArchivedV1) -> V2 { V2 { n: o.n.to_native().into() } } }
    /// const OLD: Table<V1> = Table::new("items");
    /// const NEW: Table<V2> = Table::new("items").version(2).upgrade_from::<V1>(1);
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::builder().region("us").open(dir.path())?;
    /// # let a = db.create_account(NewAccount::new("a", "us"))?;
    /// # let mut w = db.write(a)?;
    /// # w.insert(&OLD, b"i1", &V1 { n: 7 })?;
    /// # w.commit()?;
    /// let r = db.read(a)?;
    /// assert!(r.get(&NEW, b"i1")?.unwrap().is_upgraded()); // owned, upgraded
    /// let report = db.migrate(&NEW)?;
    /// assert_eq!(report.rewritten, 1);
    /// let r = db.read(a)?;
    /// let rec = r.get(&NEW, b"i1")?.unwrap();
    /// assert!(!rec.is_upgraded());                          // in place again
    /// assert_eq!(rec.n, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn migrate<V: Value>(&self, table: &Table<V>) -> Result<MigrateReport> {
        self.migrate_with(table, DEFAULT_MIGRATE_BATCH, |_| {})
    }

    /// [`Db::migrate`] with `batch` records per commit, calling `progress` after each
    /// committed batch.
    ///
    /// # Errors
    /// Those of [`Db::migrate`].
    pub fn migrate_with<V: Value>(
        &self,
        table: &Table<V>,
        batch: usize,
        mut progress: impl FnMut(&MigrateProgress),
    ) -> Result<MigrateReport> {
        let inner = &*self.inner;
        inner.check_open()?;
        crate::limits::check_table_name(table.name())?;
        if batch == 0 {
            return Err(Error::invalid("migrate: a batch of 0 records"));
        }
        let d = Declared::of(table);
        d.check()?;
        let declared = |payload: &[u8]| -> Result<Values> {
            let view = V::view(payload).map_err(|e| Error::corrupt("<migrate>", e))?;
            Ok(table
                .declared_uniques()
                .filter_map(|u| (u.get)(view).map(|v| (u.namespace.to_owned(), v.to_vec())))
                .collect())
        };
        let declared: Option<&DeclaredOf<'_>> = match table.declares_uniques() {
            true => Some(&declared),
            false => None,
        };
        let mut report = MigrateReport::default();
        for (name, region) in regions(inner) {
            let Some(region) = region else {
                report.skipped.push(name);
                continue;
            };
            let ctx = Ctx {
                db: self,
                region: &region,
                d: &d,
                declared,
                batch,
            };
            let mut complete = false;
            for _ in 0..MAX_MIGRATE_PASSES {
                let before = report.unique_conflicts.len();
                match ctx.pass(&mut report, &mut progress)? {
                    Pass::Disabled => {
                        report.skipped.push(name.clone());
                        break;
                    }
                    Pass::Done {
                        rewrote: 0,
                        retry: false,
                    } => {
                        complete = report.unique_conflicts.len() == before;
                        break;
                    }
                    // Another pass, in case records were written behind the cursor or a
                    // record changed under a protocol rewrite; its conflicts replace this
                    // one's (the same records, found again).
                    Pass::Done { .. } => report.unique_conflicts.truncate(before),
                }
            }
            if complete {
                report.regions.push(name.clone());
            }
        }
        Ok(report)
    }
}

/// Every catalog region: its name and, when open, the region.
fn regions(inner: &Inner) -> Vec<(String, Option<Arc<Region>>)> {
    let set = inner.regions.read();
    set.by_id
        .iter()
        .flatten()
        .map(|(name, _)| {
            let r = set
                .names
                .get(name)
                .and_then(|&id| set.get(crate::types::RegionId(id)).ok());
            (name.clone(), r)
        })
        .collect()
}

enum Pass {
    /// The region was disabled meanwhile.
    Disabled,
    /// The pass reached the table's end: records rewritten; `retry`: a record changed
    /// under its protocol rewrite (another pass takes it).
    Done { rewrote: u64, retry: bool },
}

/// One region's migration.
struct Ctx<'a> {
    db: &'a Db,
    region: &'a Arc<Region>,
    d: &'a Declared,
    declared: Option<&'a DeclaredOf<'a>>,
    batch: usize,
}

impl Ctx<'_> {
    /// One pass over the table, batch after batch, to its end.
    fn pass(
        &self,
        report: &mut MigrateReport,
        progress: &mut impl FnMut(&MigrateProgress),
    ) -> Result<Pass> {
        let inner = &*self.db.inner;
        let mut cursor: Option<Vec<u8>> = None;
        let mut rewrote = 0;
        let mut retry = false;
        loop {
            let (batch, records) = {
                // As for a write: `Db::close` and `Db::disable_region` wait for this batch.
                let _store_gate = inner.writers.read();
                inner.check_open()?;
                let writable = self.region.writable.read();
                if !*writable {
                    return Ok(Pass::Disabled);
                }
                // One region's write transaction: a panic of redb damages this region alone.
                let part = &self.region.part;
                match part.contain(|| self.batch_commit(cursor.as_deref()))? {
                    Some(b) => b,
                    None => return Ok(Pass::Done { rewrote, retry }),
                }
            };
            let mut n = batch.rewritten;
            for r in batch.deferred {
                match self.rewrite_by_protocol(r, report)? {
                    Rewritten::Yes => n += 1,
                    Rewritten::No => {}
                    Rewritten::Changed => retry = true,
                    Rewritten::RegionDisabled => return Ok(Pass::Disabled),
                }
            }
            rewrote += n;
            report.rewritten += n;
            progress(&MigrateProgress {
                region: self.region.part.name.clone(),
                rewritten: report.rewritten,
                region_records: records,
            });
            match batch.next {
                Some(next) => cursor = Some(next),
                None => return Ok(Pass::Done { rewrote, retry }),
            }
        }
    }

    /// One batch after `cursor`, committed; `None` when the table is empty or absent.
    fn batch_commit(&self, cursor: Option<&[u8]>) -> Result<Option<(Batch, u64)>> {
        let part = &self.region.part;
        let d = self.d;
        let w = part.begin_write()?;
        let tname = user_table_name(d.table);
        let def = TableDefinition::<&[u8], &[u8]>::new(&tname);
        let mut registered = false;
        let batch = {
            let mut data = w.open_table(def).at(part)?;
            let records = data.len().at(part)?;
            if records == 0 {
                return Ok(None);
            }
            if schemas::check_write(part, &w, d, records)? {
                schemas::register(part, &w, d)?;
                registered = true;
            }
            let owned = w.open_table(OWNED).at(part)?;
            let batch = self.next_batch(&data, &owned, cursor)?;
            let mut bytes: HashMap<u64, i64> = HashMap::new();
            for r in &batch.rows {
                data.insert(r.key.as_slice(), r.value.as_slice()).at(part)?;
                *bytes.entry(r.account).or_default() += r.delta;
            }
            drop((data, owned));
            adjust_bytes(&w, part, &bytes)?;
            (batch, records)
        };
        let _schemas = registered.then(|| part.schemas.changing());
        part.commit(w)?;
        Ok(Some(batch))
    }

    /// Up to `batch` old records after `cursor`, upgraded.
    fn next_batch(
        &self,
        data: &redb::Table<'_, &'static [u8], &'static [u8]>,
        owned: &redb::Table<'_, &'static [u8], &'static [u8]>,
        cursor: Option<&[u8]>,
    ) -> Result<Batch> {
        use std::ops::Bound;
        let part = &self.region.part;

        let range = match cursor {
            Some(c) => data.range::<&[u8]>((Bound::Excluded(c), Bound::Unbounded)),
            None => data.range::<&[u8]>(..),
        }
        .at(part)?;
        let mut out = Batch {
            rows: Vec::new(),
            deferred: Vec::new(),
            rewritten: 0,
            next: None,
        };
        for row in range {
            let (k, v) = row.at(part)?;
            let (key, bytes) = (k.value(), v.value());
            let Some((value, payload)) = self.upgrade(key, bytes)? else {
                continue;
            };
            let account = key
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            let user_key = key.get(8..).unwrap_or_default().to_vec();
            match self.changed_uniques(owned, account, &user_key, &payload)? {
                Some(values) => out.deferred.push(Deferred {
                    account,
                    key: user_key,
                    value,
                    was: bytes.to_vec(),
                    values,
                }),
                None => {
                    out.rows.push(Rewrite {
                        key: key.to_vec(),
                        delta: value.len() as i64 - bytes.len() as i64,
                        value,
                        account,
                    });
                    out.rewritten += 1;
                }
            }
            if out.rows.len() + out.deferred.len() == self.batch {
                out.next = Some(key.to_vec());
                break;
            }
        }
        Ok(out)
    }

    /// The record `bytes` under `key` upgraded and sealed as the current version, with the
    /// upgraded payload; `None` if it is of the current version already.
    fn upgrade(&self, key: &[u8], bytes: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let part = &self.region.part;
        let d = self.d;
        let payload = match schemas::read_payload(part, d, bytes, key) {
            Ok(Payload::Current(_)) => return Ok(None),
            Ok(Payload::Upgraded(p)) => p,
            Err(Ok(version)) => {
                return Err(Error::SchemaMismatch {
                    table: d.table.to_owned(),
                    partition: part.name.clone(),
                    stored: Box::new(crate::error::SchemaInfo {
                        type_name: "(a version this handle does not declare)".to_owned(),
                        codec: schemas::codec_name(bytes.get(1).copied().unwrap_or(d.codec)),
                        version,
                        fingerprint: 0,
                        unique_namespaces: Vec::new(),
                    }),
                    asked: Box::new(d.info()),
                });
            }
            Err(Err(e)) => return Err(e),
        };
        let binding = Binding {
            table: d.table,
            key,
        };
        let value = envelope::seal_raw(&binding, d.codec, d.version, &payload);
        Ok(Some((value, payload)))
    }

    /// In a table that declares its unique values: the declared values of the upgraded
    /// `payload` when they are not what the record owns now (`None`: the same).
    fn changed_uniques(
        &self,
        owned: &redb::Table<'_, &'static [u8], &'static [u8]>,
        account: u64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<Option<Values>> {
        let Some(declared) = self.declared else {
            return Ok(None);
        };
        let part = &self.region.part;
        let mut want = declared(payload)?;
        let okey = owned_key(self.d.table, account, key);
        let mut have: Values = match owned.get(okey.as_slice()).at(part)? {
            Some(g) => decode_owned(g.value())
                .ok_or_else(|| Error::corrupt(&part.name, "undecodable owned-values row"))?
                .into_iter()
                .map(|o| (o.ns, o.value))
                .collect(),
            None => Vec::new(),
        };
        want.sort();
        have.sort();
        Ok((want != have).then_some(want))
    }

    /// Rewrites a deferred record by an ordinary write of its account. A value that cannot
    /// be claimed leaves it at its old version, reported; a record changed meanwhile is left
    /// to another pass.
    fn rewrite_by_protocol(&self, r: Deferred, report: &mut MigrateReport) -> Result<Rewritten> {
        let inner = &*self.db.inner;
        let account = inner.route(AccountId(r.account))?;
        let result = Write::new(self.db.clone(), account, self.region.id).and_then(|mut w| {
            w.put_sealed(*self.d, r.key.clone(), r.value, &r.values, &r.was)?;
            w.commit()
        });
        let left = |namespace: Option<String>, e: &Error| LeftBehind {
            region: self.region.part.name.clone(),
            account: AccountId(r.account),
            key: r.key.clone(),
            namespace,
            reason: e.to_string(),
        };
        match result {
            Ok(()) => Ok(Rewritten::Yes),
            Err(Error::UniqueViolation { namespace, record }) => {
                let ns = namespace.clone();
                let e = Error::UniqueViolation { namespace, record };
                report.unique_conflicts.push(left(Some(ns), &e));
                Ok(Rewritten::No)
            }
            Err(e @ (Error::DuplicateInWrite { .. } | Error::InvalidArgument(_))) => {
                report.unique_conflicts.push(left(None, &e));
                Ok(Rewritten::No)
            }
            Err(Error::Conflict { .. }) => Ok(Rewritten::Changed),
            Err(Error::RegionDisabled(_)) => Ok(Rewritten::RegionDisabled),
            Err(e) => Err(e),
        }
    }
}

/// What became of a protocol rewrite.
enum Rewritten {
    Yes,
    /// Left at its old version (reported).
    No,
    /// The record changed since the batch read it.
    Changed,
    RegionDisabled,
}

/// One batch: rows rewritten in place, records to rewrite by the protocol, and the key to
/// continue after (`None`: the table's end).
struct Batch {
    rows: Vec<Rewrite>,
    deferred: Vec<Deferred>,
    rewritten: u64,
    next: Option<Vec<u8>>,
}

/// A record whose upgrade changes its declared unique values.
struct Deferred {
    account: u64,
    key: Vec<u8>,
    /// The upgraded record, sealed.
    value: Vec<u8>,
    /// The stored bytes the batch read.
    was: Vec<u8>,
    /// The declared values of the upgraded record.
    values: Values,
}

/// A record rewritten as the current version.
struct Rewrite {
    key: Vec<u8>,
    value: Vec<u8>,
    account: u64,
    /// New length minus old length.
    delta: i64,
}

/// Adds each account's byte delta to its `_usage` row (records unchanged).
fn adjust_bytes(
    w: &redb::WriteTransaction,
    part: &crate::partition::Partition,
    bytes: &HashMap<u64, i64>,
) -> Result<()> {
    let mut usage = w.open_table(USAGE).at(part)?;
    for (&acct, &delta) in bytes {
        if delta == 0 {
            continue;
        }
        let (r, b) = usage
            .get(acct)
            .at(part)?
            .map(|g| g.value())
            .unwrap_or((0, 0));
        usage
            .insert(acct, (r, (b as i64 + delta).max(0) as u64))
            .at(part)?;
    }
    Ok(())
}
