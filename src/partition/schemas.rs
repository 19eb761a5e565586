//! What each user table of a region holds: the `_schemas` rows, (table, schema version) ->
//! `[codec u8][fingerprint u64 LE][type name utf-8]`.
//!
//! The first write of a table in a region records the codec, the fingerprint and the name of
//! the type it is written with, under the table handle's schema version, in the same
//! transaction as its first row: a data table that exists has its schema row. Every read and
//! write then compares the handle's type with those rows and refuses another type with
//! [`Error::SchemaMismatch`] before any byte of a record is interpreted. Rows are never
//! changed once written.
//!
//! A handle reads the records of its own version in place, and those of the older versions
//! it declares (`Table::upgrade_from`, same fingerprint as recorded) through their upgrade.
//! A write registers the handle's version only when the handle can read every version the
//! table already records (or the table is empty): a type cannot be slipped into a table of
//! records it does not understand.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::codec::value::Value;
use crate::error::{Error, Result, SchemaInfo};
use crate::partition::{At, Partition};
use crate::schema::SCHEMAS;
use crate::table::{MAX_DECLARED_UNIQUES, MAX_OLD_VERSIONS, OldVersion, Table};

/// The schema a table handle asks for: its own version, and the older versions it reads
/// through an upgrade.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Declared {
    pub table: &'static str,
    pub version: u16,
    pub codec: u8,
    pub fingerprint: u64,
    pub type_name: &'static str,
    pub olds: [Option<OldVersion>; MAX_OLD_VERSIONS],
    /// The namespaces of the unique values the handle declares, sorted.
    pub uniques: [Option<&'static str>; MAX_DECLARED_UNIQUES],
}

impl PartialEq for Declared {
    /// Same table, same schema, same older versions (by version and fingerprint).
    fn eq(&self, o: &Declared) -> bool {
        let key = |d: &Declared| {
            d.olds
                .map(|x| x.map(|x| (x.version, x.codec, x.fingerprint)))
        };
        self.table == o.table
            && self.version == o.version
            && self.codec == o.codec
            && self.fingerprint == o.fingerprint
            && key(self) == key(o)
            && self.uniques == o.uniques
    }
}

impl Declared {
    pub fn of<V: Value>(t: &Table<V>) -> Self {
        let mut olds = [None; MAX_OLD_VERSIONS];
        for (slot, o) in olds.iter_mut().zip(t.old_versions()) {
            *slot = Some(*o);
        }
        let mut ns: Vec<&'static str> = t.declared_uniques().map(|u| u.namespace).collect();
        ns.sort_unstable();
        ns.dedup();
        let mut uniques = [None; MAX_DECLARED_UNIQUES];
        for (slot, n) in uniques.iter_mut().zip(ns) {
            *slot = Some(n);
        }
        Declared {
            table: t.name(),
            version: t.schema_version(),
            codec: V::CODEC,
            fingerprint: V::FINGERPRINT,
            type_name: V::TYPE_NAME,
            olds,
            uniques,
        }
    }

    /// Whether this is what [`Declared::of`] gives for `t`, without building it (the read
    /// path's per-get lookup of a table it already opened).
    #[inline]
    pub fn is_of<V: Value>(&self, t: &Table<V>) -> bool {
        (std::ptr::eq(self.table, t.name()) || self.table == t.name())
            && self.version == t.schema_version()
            && self.codec == V::CODEC
            && self.fingerprint == V::FINGERPRINT
            && self.same_olds(t)
            && self.same_uniques(t)
    }

    fn same_olds<V: Value>(&self, t: &Table<V>) -> bool {
        let mut mine = self.old_versions();
        for o in t.old_versions() {
            match mine.next() {
                Some(m)
                    if (m.version, m.codec, m.fingerprint)
                        == (o.version, o.codec, o.fingerprint) => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }

    /// Same set of namespaces (`Declared::of` keeps them sorted and distinct).
    fn same_uniques<V: Value>(&self, t: &Table<V>) -> bool {
        let mine = || self.uniques.iter().flatten();
        t.declared_uniques()
            .all(|u| mine().any(|n| *n == u.namespace))
            && mine().all(|n| t.declared_uniques().any(|u| u.namespace == *n))
    }

    /// Checks what `Table`'s const builders cannot: every declared old version is below the
    /// handle's own.
    pub fn check(&self) -> Result<()> {
        match self.old_versions().find(|o| o.version >= self.version) {
            Some(o) => Err(Error::invalid(format!(
                "table `{}`: old schema version {} is not below the handle's version {}",
                self.table, o.version, self.version
            ))),
            None => Ok(()),
        }
    }

    pub fn old_versions(&self) -> impl Iterator<Item = &OldVersion> {
        self.olds.iter().flatten()
    }

    /// `codec` if an old version declares it.
    pub fn olds_codec(&self, codec: u8) -> Option<u8> {
        self.old_versions()
            .find(|o| o.codec == codec)
            .map(|o| o.codec)
    }

    pub fn old(&self, version: u16) -> Option<&OldVersion> {
        self.old_versions().find(|o| o.version == version)
    }

    fn declared_namespaces(&self) -> Vec<String> {
        self.uniques
            .iter()
            .flatten()
            .map(|n| n.to_string())
            .collect()
    }

    /// `[codec u8][fingerprint u64 LE][type name]`, then, for a table that declares unique
    /// values, `[0][n u8]([len u8][namespace])*` (a type name never holds a NUL byte).
    fn row(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.type_name.len());
        v.push(self.codec);
        v.extend_from_slice(&self.fingerprint.to_le_bytes());
        v.extend_from_slice(self.type_name.as_bytes());
        let ns: Vec<&str> = self.uniques.iter().flatten().copied().collect();
        if !ns.is_empty() {
            v.push(0);
            v.push(ns.len() as u8);
            for n in ns {
                v.push(n.len() as u8);
                v.extend_from_slice(n.as_bytes());
            }
        }
        v
    }

    pub fn info(&self) -> SchemaInfo {
        SchemaInfo {
            type_name: self.type_name.to_owned(),
            codec: codec_name(self.codec),
            version: self.version,
            fingerprint: self.fingerprint,
            unique_namespaces: self.declared_namespaces(),
        }
    }

    /// What this handle expects of recorded version `version`: `Some(true)` it reads it (in
    /// place or through an upgrade) and `s` matches, `Some(false)` it declares that version
    /// but `s` is another type, `None` it does not know that version. For a write, the
    /// handle's own version must also declare the unique values recorded with it: a handle
    /// that leaves a declaration out would keep records owning values they no longer hold.
    fn reads(&self, s: &Stored, write: bool) -> Option<bool> {
        if s.version == self.version {
            return Some(
                s.codec == self.codec
                    && s.fingerprint == self.fingerprint
                    && (!write || s.unique_namespaces == self.declared_namespaces()),
            );
        }
        self.old(s.version)
            .map(|o| s.codec == o.codec && s.fingerprint == o.fingerprint)
    }

    fn old_info(&self, version: u16) -> SchemaInfo {
        match self.old(version) {
            Some(o) => SchemaInfo {
                type_name: o.type_name.to_owned(),
                codec: codec_name(o.codec),
                version: o.version,
                fingerprint: o.fingerprint,
                unique_namespaces: Vec::new(),
            },
            None => self.info(),
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
    /// The unique namespaces the writing handle declared, sorted.
    pub unique_namespaces: Vec<String>,
}

impl Stored {
    pub fn decode(version: u16, b: &[u8]) -> Option<Stored> {
        if b.len() < 9 {
            return None;
        }
        let fingerprint = u64::from_le_bytes(b[1..9].try_into().ok()?);
        let rest = &b[9..];
        let (name, tail) = match rest.iter().position(|&c| c == 0) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let type_name = std::str::from_utf8(name).ok()?.to_owned();
        let mut unique_namespaces = Vec::new();
        if let Some(tail) = tail {
            let (&n, mut t) = tail.split_first()?;
            for _ in 0..n {
                let (&len, r) = t.split_first()?;
                let ns = r.get(..len as usize)?;
                unique_namespaces.push(std::str::from_utf8(ns).ok()?.to_owned());
                t = &r[len as usize..];
            }
            if !t.is_empty() {
                return None;
            }
        }
        Some(Stored {
            version,
            codec: b[0],
            fingerprint,
            type_name,
            unique_namespaces,
        })
    }

    pub fn info(&self) -> SchemaInfo {
        SchemaInfo {
            type_name: self.type_name.clone(),
            codec: codec_name(self.codec),
            version: self.version,
            fingerprint: self.fingerprint,
            unique_namespaces: self.unique_namespaces.clone(),
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
        asked: Box::new(d.old_info(stored.version)),
    }
}

#[cold]
fn no_schema_row(part: &Partition, table: &str) -> Error {
    Error::corrupt(
        &part.name,
        format!("table `{table}` holds rows but has no schema row"),
    )
}

/// What the schema rows of a table say of a handle.
struct Verdict {
    /// The handle's own version is recorded (as its type).
    current: bool,
    /// Every recorded version is one the handle reads.
    reads_all: bool,
    /// The recorded versions, oldest first.
    stored: Vec<Stored>,
}

/// Compares the recorded versions of `d.table` with the handle: a version the handle
/// declares but records as another type is a mismatch.
fn judge(
    part: &Partition,
    t: &impl ReadableTable<(&'static str, u16), &'static [u8]>,
    d: &Declared,
    write: bool,
) -> Result<Verdict> {
    d.check()?;
    let stored = stored_versions(part, t, d.table)?;
    let mut v = Verdict {
        current: false,
        reads_all: true,
        stored: Vec::new(),
    };
    for s in &stored {
        match d.reads(s, write) {
            Some(true) => v.current |= s.version == d.version,
            Some(false) => return Err(mismatch(part, d, s)),
            None => v.reads_all = false,
        }
    }
    v.stored = stored;
    Ok(v)
}

/// For a read of a data table that exists in `txn`: the handle must read at least one of
/// the recorded versions, and every version it declares must be recorded as its type.
/// Records of a version it does not know fail one by one (see [`record_version_error`]).
///
/// `data_rows`: the rows of the data table. An empty data table without schema rows (one
/// a write transaction opened without writing to it) reads as empty.
pub(crate) fn check_read(
    part: &Partition,
    txn: &ReadTransaction,
    d: &Declared,
    data_rows: u64,
) -> Result<()> {
    let Some(t) = part.read_table(txn, SCHEMAS)? else {
        return match data_rows {
            0 => Ok(()),
            _ => Err(no_schema_row(part, d.table)),
        };
    };
    let v = judge(part, &t, d, false)?;
    match v.stored.last() {
        None if data_rows == 0 => Ok(()),
        None => Err(no_schema_row(part, d.table)),
        Some(newest) if !v.current && !v.stored.iter().any(|s| d.reads(s, false) == Some(true)) => {
            Err(mismatch(part, d, newest))
        }
        Some(_) => Ok(()),
    }
}

/// For a write: `Ok(true)` when the handle's version must be registered by this write,
/// `Ok(false)` when it is recorded already. Registering needs a table the handle fully
/// reads: empty, or holding only versions it declares.
pub(crate) fn check_write(
    part: &Partition,
    w: &WriteTransaction,
    d: &Declared,
    data_rows: u64,
) -> Result<bool> {
    let t = w.open_table(SCHEMAS).at(part)?;
    let v = judge(part, &t, d, true)?;
    if v.current {
        return Ok(false);
    }
    match v.stored.last() {
        None if data_rows > 0 => Err(no_schema_row(part, d.table)),
        Some(newest) if !v.reads_all && data_rows > 0 => Err(mismatch(part, d, newest)),
        _ => Ok(true),
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

/// A stored record as a handle reads it: its own version's payload, in place, or an older
/// version's payload upgraded (not yet validated as the handle's type).
pub(crate) enum Payload<'v> {
    Current(&'v [u8]),
    Upgraded(Vec<u8>),
}

/// Checks a stored value of `d.table` under `data_key` (envelope and CRC, with the codec
/// of its version) and gives its payload as the handle `d` reads it. A record of a version
/// `d` neither is nor declares is `Err(Ok(version))`, for the caller to name; damage is
/// `Err(Err(Corrupt))`. The one place that decides how a record reads: `Record::new` and
/// `Db::migrate` both go through it.
pub(crate) fn read_payload<'v>(
    part: &Partition,
    d: &Declared,
    bytes: &'v [u8],
    data_key: &[u8],
) -> std::result::Result<Payload<'v>, std::result::Result<u16, Error>> {
    // A codec byte that is neither the handle's nor an old version's fails the envelope.
    let codec = match bytes.get(1) {
        Some(&c) if c == d.codec || d.olds_codec(c).is_some() => c,
        _ => d.codec,
    };
    let binding = crate::codec::envelope::Binding {
        table: d.table,
        key: data_key,
    };
    let u = crate::codec::envelope::unseal(bytes, codec, &binding).map_err(|e| {
        Err(crate::codec::envelope::corrupt_value(
            &part.name, d.table, data_key, e,
        ))
    })?;
    if u.version == d.version && codec == d.codec {
        return Ok(Payload::Current(u.payload));
    }
    match d.old(u.version) {
        Some(old) if old.codec == codec => {
            let read = old.read;
            let upgraded = crate::partition::contain::user_code(|| read(u.payload))
                .unwrap_or_else(|| Err("the table's upgrade panicked".to_owned()));
            upgraded.map(Payload::Upgraded).map_err(|e| {
                Err(crate::codec::envelope::corrupt_value(
                    &part.name,
                    d.table,
                    data_key,
                    format_args!("old payload failed validation: {e}"),
                ))
            })
        }
        _ => Err(Ok(u.version)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::value::Raw;
    use crate::table::Upgrade;

    #[derive(rkyv::Archive, rkyv::Serialize, crate::Schema)]
    #[rkyv(crate = rkyv)]
    struct A {
        n: u32,
    }

    #[derive(rkyv::Archive, rkyv::Serialize, crate::Schema)]
    #[rkyv(crate = rkyv)]
    struct B {
        n: u64,
    }

    impl Upgrade<B> for A {
        fn upgrade(old: &ArchivedA) -> B {
            B {
                n: old.n.to_native().into(),
            }
        }
    }

    impl Upgrade<B> for Raw {
        fn upgrade(_: &[u8]) -> B {
            B { n: 0 }
        }
    }

    /// The read path's shortcut `is_of` (no `Declared` built per get) must agree exactly
    /// with comparing the `Declared` it stands for: a wrong "same" would read records with
    /// another handle's upgrades or declarations.
    #[test]
    fn is_of_agrees_with_building_the_declaration() {
        const HANDLES: [Table<B>; 8] = [
            Table::new("t"),
            Table::new("u"),
            Table::new("t").version(2),
            Table::new("t").version(2).upgrade_from::<A>(1),
            Table::new("t").version(3).upgrade_from::<A>(1),
            Table::new("t")
                .version(3)
                .upgrade_from::<A>(1)
                .upgrade_from::<Raw>(2),
            Table::<B>::new("t").unique("n", |_| None),
            Table::<B>::new("t")
                .unique("n", |_| None)
                .unique("m", |_| None),
        ];
        for x in &HANDLES {
            let dx = Declared::of(x);
            for y in &HANDLES {
                assert_eq!(dx.is_of(y), dx == Declared::of(y), "{x:?} vs {y:?}");
            }
        }
        let dup = Table::<B>::new("t")
            .unique("n", |_| None)
            .unique("n", |_| None);
        assert!(Declared::of(&dup).is_of(&dup));
        assert!(
            Declared::of(&HANDLES[6]).is_of(&dup)
                == (Declared::of(&HANDLES[6]) == Declared::of(&dup))
        );
        let raw: Table<Raw> = Table::new("t");
        assert!(!Declared::of(&raw).is_of(&HANDLES[0]));
    }
}
