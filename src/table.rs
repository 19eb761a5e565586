//! Typed table handles and unique-value claims.

use std::marker::PhantomData;

use crate::codec::value::Value;

/// A typed table: `const LICENSES: Table<License> = Table::new("licenses");`
///
/// Each region partition holds one redb table per user table; rows are keyed by
/// `account ++ key`, so one tenant's rows are contiguous. `V` is an rkyv-archivable type
/// with [`Schema`](crate::Schema) (read back in place as `V::Archived`) or
/// [`Raw`](crate::Raw) for plain bytes.
///
/// The first write of a table in a region records what it holds there: the codec, the
/// type's fingerprint and the schema version. A read or write through a handle of another
/// type is refused with [`Error::SchemaMismatch`](crate::Error::SchemaMismatch), never read
/// as data.
///
/// ```
/// use regionkv::{Raw, Schema, Table};
/// #[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, Schema)]
/// #[rkyv(crate = regionkv::rkyv)]
/// struct License { key: String, seats: u32 }
/// const LICENSES: Table<License> = Table::new("licenses");
/// const BLOBS: Table<Raw> = Table::new("blobs");
/// assert_eq!(LICENSES.name(), "licenses");
/// # let _ = BLOBS;
/// ```
pub struct Table<V: Value> {
    name: &'static str,
    version: u16,
    olds: [Option<OldVersion>; MAX_OLD_VERSIONS],
    uniques: [Option<UniqueField<V>>; MAX_DECLARED_UNIQUES],
    _value: PhantomData<fn() -> V>,
}

/// How many older schema versions one table handle can read.
pub const MAX_OLD_VERSIONS: usize = 8;
/// How many unique values one table can declare ([`Table::unique`]).
pub const MAX_DECLARED_UNIQUES: usize = 8;

/// A unique value a table declares: its namespace and how to read it from a record.
pub(crate) struct UniqueField<V: Value> {
    pub namespace: &'static str,
    pub get: for<'a> fn(&'a V::View) -> Option<&'a [u8]>,
}

impl<V: Value> Clone for UniqueField<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V: Value> Copy for UniqueField<V> {}

impl<V: Value> Table<V> {
    /// A table handle, of schema version 1. The name is checked when the table is first
    /// used: 1 to 64 bytes.
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            version: 1,
            olds: [const { None }; MAX_OLD_VERSIONS],
            uniques: [const { None }; MAX_DECLARED_UNIQUES],
            _value: PhantomData,
        }
    }

    /// Declares a unique value of every record: `get` reads it from the record (`None`: the
    /// record has no value in this namespace). Then [`Write::insert`](crate::Write::insert)
    /// claims and releases the declared values itself, so record and index cannot drift
    /// (a changed field releases the old value and claims the new one in the same commit),
    /// and [`Write::insert_unique`](crate::Write::insert_unique) is accepted only with the
    /// very list the declarations give.
    ///
    /// ```
    /// use regionkv::{Db, NewAccount, Schema, Table};
    /// # use regionkv::rkyv;
    /// #[derive(rkyv::Archive, rkyv::Serialize, Schema)]
    /// #[rkyv(crate = regionkv::rkyv)]
    /// struct User { email: String, name: String }
    ///
    /// // The turbofish names the record type for the closure.
    /// const USERS: Table<User> =
    ///     Table::<User>::new("users").unique("email", |u| Some(u.email.as_bytes()));
    /// # let dir = tempfile::tempdir()?;
    /// # let db = Db::builder().region("eu").open(dir.path())?;
    /// # let acme = db.create_account(NewAccount::new("acme", "eu"))?;
    /// let mut w = db.write(acme)?;
    /// w.insert(&USERS, b"u1", &User { email: "ann@example.com".into(), name: "Ann".into() })?;
    /// w.commit()?;
    /// assert!(db.is_taken("email", "ann@example.com")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Panics
    /// At compile time (in a `const`) after [`MAX_DECLARED_UNIQUES`] declarations.
    pub const fn unique(
        mut self,
        namespace: &'static str,
        get: for<'a> fn(&'a V::View) -> Option<&'a [u8]>,
    ) -> Self {
        let mut i = 0;
        while i < MAX_DECLARED_UNIQUES {
            if self.uniques[i].is_none() {
                self.uniques[i] = Some(UniqueField { namespace, get });
                return self;
            }
            i += 1;
        }
        panic!("too many unique values declared for one table");
    }

    /// Whether the table declares its unique values ([`Table::unique`]).
    pub const fn declares_uniques(&self) -> bool {
        self.uniques[0].is_some()
    }

    pub(crate) fn declared_uniques(&self) -> impl Iterator<Item = &UniqueField<V>> {
        self.uniques.iter().flatten()
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The schema version this handle reads and writes (recorded with every record and,
    /// with the type's fingerprint, in each region where the table exists).
    pub const fn schema_version(&self) -> u16 {
        self.version
    }

    /// The same table at schema `version` (1 by default): records it writes carry this
    /// version. Raise it whenever `V` changes shape, and declare how the older versions
    /// read with [`Table::upgrade_from`].
    ///
    /// # Panics
    /// At compile time (in a `const`) if `version` is 0.
    pub const fn version(mut self, version: u16) -> Self {
        assert!(version > 0, "schema versions start at 1");
        self.version = version;
        self
    }

    pub(crate) fn old_versions(&self) -> impl Iterator<Item = &OldVersion> {
        self.olds.iter().flatten()
    }
}

impl<V: Value<Input = V>> Table<V> {
    /// Declares that records of schema `version`, written with type `Old`, read through
    /// this handle as `V`, converted by [`Upgrade::upgrade`]. Such a read yields an owned,
    /// upgraded value (see [`Record::is_upgraded`](crate::Record::is_upgraded)): not
    /// zero-copy. [`Db::migrate`](crate::Db::migrate) rewrites old records as the current
    /// version so reads are zero-copy again.
    ///
    /// ```
    /// use regionkv::{Schema, Table, Upgrade};
    /// # use regionkv::rkyv;
    /// #[derive(rkyv::Archive, rkyv::Serialize, Schema)]
    /// #[rkyv(crate = regionkv::rkyv)]
    /// struct LicenseV1 { key: String, seats: u32 }
    ///
    /// #[derive(rkyv::Archive, rkyv::Serialize, Schema)]
    /// #[rkyv(crate = regionkv::rkyv)]
    /// struct License { key: String, seats: u32, max_seats: u32 }
    ///
    /// impl Upgrade<License> for LicenseV1 {
    ///     fn upgrade(old: &ArchivedLicenseV1) -> License {
    ///         let seats = old.seats.to_native();
    ///         License { key: old.key.to_string(), seats, max_seats: seats }
    ///     }
    /// }
    ///
    /// const LICENSES: Table<License> =
    ///     Table::new("licenses").version(2).upgrade_from::<LicenseV1>(1);
    /// # assert_eq!(LICENSES.schema_version(), 2);
    /// ```
    ///
    /// # Panics
    /// At compile time (in a `const`) if `version` is declared twice or more than
    /// [`MAX_OLD_VERSIONS`] versions are declared. A declared version not below the
    /// handle's own is refused when the table is used ([`Error::InvalidArgument`](crate::Error::InvalidArgument)).
    pub const fn upgrade_from<Old: Upgrade<V>>(mut self, version: u16) -> Self {
        let mut i = 0;
        while i < MAX_OLD_VERSIONS {
            match &self.olds[i] {
                Some(o) => assert!(o.version != version, "an old version is declared twice"),
                None => {
                    self.olds[i] = Some(OldVersion {
                        version,
                        codec: Old::CODEC,
                        fingerprint: Old::FINGERPRINT,
                        type_name: Old::TYPE_NAME,
                        read: upgrade_payload::<Old, V>,
                    });
                    return self;
                }
            }
            i += 1;
        }
        panic!("too many old versions declared for one table");
    }
}

/// How records of an older schema read as the current type: implement it for the old type.
///
/// `upgrade` receives the old record as stored (its archived form, validated) and returns
/// the current value. It runs on every read of an old record until
/// [`Db::migrate`](crate::Db::migrate) has rewritten the table; it must not fail (give
/// missing fields a default).
pub trait Upgrade<New>: Value {
    /// The current value for an old record.
    fn upgrade(old: &Self::View) -> New;
}

/// An older schema version a table reads through an upgrade (see [`Table::upgrade_from`]).
#[derive(Clone, Copy)]
pub(crate) struct OldVersion {
    pub version: u16,
    pub codec: u8,
    pub fingerprint: u64,
    pub type_name: &'static str,
    /// Validates an old payload and returns the payload of its upgraded value.
    pub read: fn(&[u8]) -> std::result::Result<Vec<u8>, String>,
}

impl std::fmt::Debug for OldVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OldVersion({} v{}, {:#018x})",
            self.type_name, self.version, self.fingerprint
        )
    }
}

fn upgrade_payload<Old: Upgrade<New>, New: Value<Input = New>>(
    payload: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let old = Old::view(payload)?;
    New::encode(&Old::upgrade(old))
}

impl<V: Value> Clone for Table<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V: Value> Copy for Table<V> {}

impl<V: Value> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.name)
    }
}

/// A unique value a record claims: `(namespace, value)`. Values are unique per namespace
/// across every account and region.
///
/// ```
/// use regionkv::Unique;
/// let u = Unique::new("license_key", "K-123");
/// assert_eq!(u.namespace(), "license_key");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unique<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) value: &'a [u8],
}

impl<'a> Unique<'a> {
    /// A claim of `value` in `namespace` (1..=64 bytes; the value 1..=1024 bytes).
    pub fn new(namespace: &'a str, value: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        Unique {
            namespace,
            value: value.as_ref(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &'a str {
        self.namespace
    }

    /// The value's bytes.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }
}

/// Keyed BLAKE3 digest of `(namespace, value)`, truncated to 128 bits: what the global
/// index stores instead of the value.
pub(crate) fn digest(key: &[u8; 32], namespace: &str, value: &[u8]) -> [u8; 16] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&[namespace.len() as u8]);
    h.update(namespace.as_bytes());
    h.update(value);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}
