//! What each user table of a region holds: the `_schemas` rows, (table, schema version) ->
//! `[codec u8][fingerprint u64 LE][type name utf-8]`.
//!
//! The first write of a table in a region records the codec, the fingerprint and the name of
//! the type it is written with, under the table handle's schema version, in the same
//! transaction as its first row: a data table that exists has its schema row. Every read and
//! write then compares the handle's type with that row and refuses another type with
//! [`Error::SchemaMismatch`] before any byte of a record is interpreted. Rows are never
//! changed once written.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::codec::value::Value;
use crate::error::{Error, Result, SchemaInfo};
use crate::partition::{At, Partition};
use crate::schema::SCHEMAS;
use crate::table::Table;

/// The schema a table handle asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declared {
    pub table: &'static str,
    pub version: u16,
    pub codec: u8,
    pub fingerprint: u64,
    pub type_name: &'static str,
}

impl Declared {
    pub fn of<V: Value>(t: &Table<V>) -> Self {
        Declared {
            table: t.name(),
            version: t.schema_version(),
            codec: V::CODEC,
            fingerprint: V::FINGERPRINT,
            type_name: V::TYPE_NAME,
        }
    }

    fn row(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.type_name.len());
        v.push(self.codec);
        v.extend_from_slice(&self.fingerprint.to_le_bytes());
        v.extend_from_slice(self.type_name.as_bytes());
        v
    }

    fn matches(&self, s: &Stored) -> bool {
        s.codec == self.codec && s.fingerprint == self.fingerprint
    }

    pub fn info(&self) -> SchemaInfo {
        SchemaInfo {
            type_name: self.type_name.to_owned(),
            codec: codec_name(self.codec),
            version: self.version,
            fingerprint: self.fingerprint,
        }
    }
}

/// A `_schemas` row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub version: u16,
    pub codec: u8,
    pub fingerprint: u64,
    pub type_name: String,
}

impl Stored {
    pub fn decode(version: u16, b: &[u8]) -> Option<Stored> {
        if b.len() < 9 {
            return None;
        }
        let fingerprint = u64::from_le_bytes(b[1..9].try_into().ok()?);
        let type_name = std::str::from_utf8(&b[9..]).ok()?.to_owned();
        Some(Stored {
            version,
            codec: b[0],
            fingerprint,
            type_name,
        })
    }

    pub fn info(&self) -> SchemaInfo {
        SchemaInfo {
            type_name: self.type_name.clone(),
            codec: codec_name(self.codec),
            version: self.version,
            fingerprint: self.fingerprint,
        }
    }
}

pub(crate) fn codec_name(codec: u8) -> String {
    match codec {
        0 => "raw".to_owned(),
        1 => "rkyv".to_owned(),
        c => format!("codec {c}"),
    }
}

/// Every schema row of `table`, by version.
pub(crate) fn stored_versions(
    part: &Partition,
    t: &impl ReadableTable<(&'static str, u16), &'static [u8]>,
    table: &str,
) -> Result<Vec<Stored>> {
    let mut out = Vec::new();
    for row in t.range((table, 0u16)..=(table, u16::MAX)).at(part)? {
        let (k, v) = row.at(part)?;
        let version = k.value().1;
        out.push(
            Stored::decode(version, v.value()).ok_or_else(|| undecodable(part, table, version))?,
        );
    }
    Ok(out)
}

#[cold]
fn undecodable(part: &Partition, table: &str, version: u16) -> Error {
    Error::corrupt(
        &part.name,
        format!("schema row of table `{table}` version {version} is undecodable"),
    )
}

#[cold]
fn mismatch(part: &Partition, d: &Declared, stored: &Stored) -> Error {
    Error::SchemaMismatch {
        table: d.table.to_owned(),
        partition: part.name.clone(),
        stored: Box::new(stored.info()),
        asked: Box::new(d.info()),
    }
}

/// What the schema rows say of a handle.
enum Verdict {
    Matches,
    /// No row for any version: the table was never written in this region.
    Unregistered,
    Mismatch(Error),
}

fn judge(
    part: &Partition,
    t: &impl ReadableTable<(&'static str, u16), &'static [u8]>,
    d: &Declared,
) -> Result<Verdict> {
    if let Some(g) = t.get((d.table, d.version)).at(part)? {
        let s = Stored::decode(d.version, g.value())
            .ok_or_else(|| undecodable(part, d.table, d.version))?;
        return Ok(if d.matches(&s) {
            Verdict::Matches
        } else {
            Verdict::Mismatch(mismatch(part, d, &s))
        });
    }
    // Another version is recorded: name the newest.
    Ok(match stored_versions(part, t, d.table)?.pop() {
        Some(s) => Verdict::Mismatch(mismatch(part, d, &s)),
        None => Verdict::Unregistered,
    })
}

#[cold]
fn no_schema_row(part: &Partition, table: &str) -> Error {
    Error::corrupt(
        &part.name,
        format!("table `{table}` holds rows but has no schema row"),
    )
}

/// For a read of a data table that exists in `txn`: the handle's schema must be the one
/// recorded.
pub(crate) fn check_read(part: &Partition, txn: &ReadTransaction, d: &Declared) -> Result<()> {
    let Some(t) = part.read_table(txn, SCHEMAS)? else {
        return Err(no_schema_row(part, d.table));
    };
    match judge(part, &t, d)? {
        Verdict::Matches => Ok(()),
        Verdict::Mismatch(e) => Err(e),
        Verdict::Unregistered => Err(no_schema_row(part, d.table)),
    }
}

/// For a write: `Ok(true)` when the table must be registered by this write (no schema row
/// and no rows yet), `Ok(false)` when the recorded schema is the handle's.
pub(crate) fn check_write(
    part: &Partition,
    w: &WriteTransaction,
    d: &Declared,
    data_rows: u64,
) -> Result<bool> {
    let t = w.open_table(SCHEMAS).at(part)?;
    match judge(part, &t, d)? {
        Verdict::Matches => Ok(false),
        Verdict::Mismatch(e) => Err(e),
        Verdict::Unregistered if data_rows == 0 => Ok(true),
        Verdict::Unregistered => Err(no_schema_row(part, d.table)),
    }
}

/// Records `d` (the write that first writes the table).
pub(crate) fn register(part: &Partition, w: &WriteTransaction, d: &Declared) -> Result<()> {
    let mut t = w.open_table(SCHEMAS).at(part)?;
    t.insert((d.table, d.version), d.row().as_slice())
        .at(part)?;
    Ok(())
}

/// The stored schema of `version` of `table` as `txn` sees it, for the message of a record
/// whose version is not the handle's.
pub(crate) fn stored(
    part: &Partition,
    txn: &ReadTransaction,
    table: &str,
    version: u16,
) -> Result<Option<Stored>> {
    let Some(t) = part.read_table(txn, SCHEMAS)? else {
        return Ok(None);
    };
    let Some(g) = t.get((table, version)).at(part)? else {
        return Ok(None);
    };
    Stored::decode(version, g.value())
        .map(Some)
        .ok_or_else(|| undecodable(part, table, version))
}

/// The error for a record of `table` whose envelope names schema `version` while the
/// handle asked for `d`: a mismatch naming the recorded schema of that version, or damage
/// when no such version is recorded.
#[cold]
pub(crate) fn record_version_error(
    part: &Partition,
    txn: &ReadTransaction,
    d: &Declared,
    version: u16,
    key: &[u8],
) -> Error {
    match stored(part, txn, d.table, version) {
        Ok(Some(s)) => mismatch(part, d, &s),
        Ok(None) => crate::codec::envelope::corrupt_value(
            &part.name,
            d.table,
            key,
            format_args!("record names schema version {version}, which is not recorded"),
        ),
        Err(e) => e,
    }
}
