//! Typed table handles and unique-value claims.

use std::marker::PhantomData;

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
pub struct Table<V: ?Sized> {
    name: &'static str,
    version: u16,
    _value: PhantomData<fn() -> V>,
}

impl<V: ?Sized> Table<V> {
    /// A table handle, of schema version 1. The name is checked when the table is first
    /// used: 1 to 64 bytes.
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            version: 1,
            _value: PhantomData,
        }
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
}

impl<V: ?Sized> Clone for Table<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V: ?Sized> Copy for Table<V> {}

impl<V: ?Sized> std::fmt::Debug for Table<V> {
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
