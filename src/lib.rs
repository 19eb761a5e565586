//! # regionkv
//!
//! An embedded key-value store for multi-tenant services that must keep each tenant's
//! data in a chosen region while enforcing uniqueness and limits across all regions.
//!
//! ```
//! use regionkv::{Db, NewAccount, Table, Unique};
//!
//! #[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
//! #[rkyv(crate = regionkv::rkyv)]
//! struct License { key: String, seats: u32 }
//! const LICENSES: Table<License> = Table::new("licenses");
//!
//! # let dir = tempfile::tempdir()?;
//! let db = Db::builder().region("us").region("eu").default_region("us").open(dir.path())?;
//! let acme = db.create_account(NewAccount::new("acme", "eu").allow("us"))?;
//!
//! let mut w = db.write(acme)?;            // the account's home region: eu
//! let lic = License { key: "K-123".into(), seats: 5 };
//! w.insert_unique(&LICENSES, b"lic-1", &lic, &[Unique::new("license_key", "K-123")])?;
//! w.commit()?;                            // one fsync, atomic across both files
//!
//! let r = db.read(acme)?;
//! let rec = r.get(&LICENSES, b"lic-1")?.unwrap();   // zero-copy: &ArchivedLicense
//! assert_eq!(rec.seats, 5);
//! let hit = db.find_unique(&LICENSES, "license_key", "K-123")?.unwrap();
//! assert_eq!(hit.account(), acme);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Records: schema, evolution, updates, declared unique values, keys
//!
//! ```
//! use regionkv::{Db, Error, NewAccount, Schema, Table, Upgrade};
//! use regionkv::rkyv;
//!
//! // `derive(...)` inside `#[rkyv(...)]` derives on the archived type (here: to compare
//! // archived plans); `rkyv::Deserialize` allows owned copies.
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
//! #[rkyv(crate = regionkv::rkyv, derive(Debug, PartialEq))]
//! enum Plan { Free, Pro }
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
//! #[rkyv(crate = regionkv::rkyv)]
//! struct LicenseV1 { key: String, seats: u32 }
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Schema)]
//! #[rkyv(crate = regionkv::rkyv)]
//! struct License { key: String, seats: u32, plan: Plan }
//!
//! impl Upgrade<License> for LicenseV1 {
//!     fn upgrade(old: &ArchivedLicenseV1) -> License {
//!         License { key: old.key.to_string(), seats: old.seats.to_native(), plan: Plan::Free }
//!     }
//! }
//!
//! const LICENSES_V1: Table<LicenseV1> = Table::new("licenses");
//! const LICENSES: Table<License> = Table::<License>::new("licenses")
//!     .version(2)
//!     .upgrade_from::<LicenseV1>(1)
//!     .unique("license_key", |l| Some(l.key.as_bytes()));
//!
//! # let dir = tempfile::tempdir()?;
//! let db = Db::builder().region("eu").open(dir.path())?;
//! let acme = db.create_account(NewAccount::new("acme", "eu"))?;
//! // A record written before the schema change.
//! let mut w = db.write(acme)?;
//! w.insert(&LICENSES_V1, "lic-1", &LicenseV1 { key: "K-1".into(), seats: 5 })?;
//! w.commit()?;
//!
//! let mut w = db.write(acme)?;
//! w.insert(&LICENSES, "lic-3", &License { key: "K-3".into(), seats: 5, plan: Plan::Pro })?;
//! w.commit()?;                                       // claims "K-3": a declared unique value
//! assert!(db.is_taken("license_key", "K-3")?);
//!
//! let r = db.read(acme)?;
//! let old = r.get(&LICENSES, "lic-1")?.unwrap();      // a v1 record, read upgraded
//! assert!(old.is_upgraded() && old.plan == ArchivedPlan::Free);
//! let rec = r.get(&LICENSES, "lic-3")?.unwrap();      // in place
//! assert_eq!(rec.plan, ArchivedPlan::Pro);           // archived comparison
//! let owned: License = rec.deserialize()?;           // an owned copy
//! assert_eq!(owned.seats, 5);
//! drop((old, rec, r));
//!
//! // Another type for the same table is refused, never read as data.
//! let e = db.read(acme)?.get(&LICENSES_V1, "lic-3").map(|_| ()).unwrap_err();
//! assert!(matches!(e, Error::SchemaMismatch { .. }));
//!
//! // Read-modify-write; a change in between would be `Error::Conflict` (retried here).
//! db.update(acme, &LICENSES, "lic-3", |old| {
//!     let mut l = old?.deserialize().ok()?;
//!     l.key = "K-3b".into();                         // moves the declared unique value
//!     Some(l)
//! })?;
//! assert!(!db.is_taken("license_key", "K-3")? && db.is_taken("license_key", "K-3b")?);
//!
//! assert!(!db.is_taken("license_key", "K-1")?);     // lic-1 was written without it
//! assert_eq!(db.migrate(&LICENSES)?.rewritten, 1);   // lic-1 rewritten as v2 ...
//! assert!(db.is_taken("license_key", "K-1")?);      // ... owning its declared value
//! assert!(db.audit()?.is_clean());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Architecture
//!
//! One redb file per region (`<dir>/regions/<name>.redb`) holds the tenants' records; a
//! global file (`<dir>/global.redb`) holds the region catalog, accounts and the unique
//! index, which stores keyed digests, never values. A write that claims or releases
//! unique values runs a two-phase reservation protocol whose commit point is the single
//! synced commit of the region; the global index is derived and rebuilt at open from the
//! applied markers the regions keep. See `docs/design.md` for formats and invariants.
//! [`layout`] names the files; [`testing`] has the in-memory storage that simulates power
//! loss and I/O faults, for testing a service's crash handling against this engine.
//!
//! ## rkyv format
//!
//! regionkv pins rkyv's format features (`little_endian`, `pointer_width_32`,
//! `unaligned`): records are read in place from redb's unaligned pages. If your crate
//! also depends on rkyv, enable the same features or derive through the re-export with
//! `#[rkyv(crate = regionkv::rkyv)]`.

#![warn(missing_docs)]

// The derive names `::regionkv::...`; this makes those paths work inside the crate too.
extern crate self as regionkv;

mod account;
mod audit;
pub mod backends;
mod batch;
mod budget;
mod builder;
mod clock;
mod codec;
mod commit;
mod db;
mod error;
mod key;
pub mod layout;
mod limits;
mod migrate;
mod open;
mod partition;
mod read;
mod reservation;
mod schema;
mod sweep;
mod table;
pub mod testing;
mod types;
mod verify;
mod view;
mod write;

pub use account::{Account, AccountState, NewAccount};
pub use audit::{AuditReport, Finding, FindingKind};
pub use backends::{FileStorage, Storage};
pub use batch::Batch;
pub use budget::{CacheBudget, CacheShare, MIN_PARTITION_CACHE};
pub use builder::{
    Builder, DEFAULT_CACHE_BYTES, DEFAULT_ROUTING_CACHE_BYTES, DEFAULT_UNIQUE_CACHE_BYTES,
};
#[doc(hidden)]
pub use codec::shape::__private;
pub use codec::shape::{Schema, schema_label};
pub use codec::value::{Raw, Value};
pub use commit::{MAX_GROUP_BYTES, MAX_GROUP_WRITES};
pub use db::{Db, ForfeitReport, RegionInfo, Stats};
pub use error::{Collision, Error, Result, SchemaInfo};
pub use key::Key;
pub use limits::{
    DEFAULT_MAX_VALUE, MAX_ACCOUNT_NAME, MAX_KEY, MAX_NAMESPACE, MAX_REGION_NAME, MAX_TABLE_NAME,
    MAX_UNIQUE_VALUE,
};
pub use migrate::{
    DEFAULT_MIGRATE_BATCH, LeftBehind, MAX_MIGRATE_PASSES, MigrateProgress, MigrateReport,
};
pub use read::{Hit, Read, Record, Row, Rows};
/// `#[derive(Schema)]`: see [`Schema`].
pub use regionkv_derive::Schema;
pub use reservation::recovery::{LostClaim, RecoveryReport};
pub use schema::FORMAT_VERSION;
pub use sweep::{Sweep, SweepReport};
pub use table::{MAX_DECLARED_UNIQUES, MAX_OLD_VERSIONS, Table, Unique, Upgrade};
pub use types::{AccountId, RegionId};
pub use verify::{Damage, VerifyProgress, VerifyReport};
pub use view::View;
pub use write::{UPDATE_ATTEMPTS, Write};

/// The rkyv crate regionkv is built with (format features pinned): derive your records'
/// `Archive` and `Serialize` through it with `#[rkyv(crate = regionkv::rkyv)]`.
pub use rkyv;

/// Decodes a value as stored under `key` of `account` in `table` (envelope + payload)
/// without a store: checks the header and the CRC (which covers the row's table and key
/// too), that the record's schema version is the handle's, then validates the payload.
/// Total: any input gives `Ok` or an error ([`Error::Corrupt`]; [`Error::SchemaMismatch`]
/// for a record of another schema version). For tools and fuzzing.
pub fn decode_value<'v, V: Value>(
    table: &Table<V>,
    account: AccountId,
    key: &[u8],
    bytes: &'v [u8],
) -> Result<&'v V::View> {
    let dkey = partition::region::data_key(account.get(), key);
    let binding = codec::envelope::Binding {
        table: table.name(),
        key: &dkey,
    };
    // The version first, as a read from the store does: the payload of another version is
    // not interpreted as `V`.
    let unsealed = codec::envelope::unseal(bytes, V::CODEC, &binding)
        .map_err(|e| Error::corrupt("<bytes>", e.to_string()))?;
    let version = unsealed.version;
    if version != table.schema_version() {
        let d = partition::schemas::Declared::of(table);
        let mut stored = d.info();
        stored.version = version;
        stored.fingerprint = 0;
        stored.type_name = "(unknown without the store)".to_owned();
        return Err(Error::SchemaMismatch {
            table: table.name().to_owned(),
            partition: "<bytes>".to_owned(),
            stored: Box::new(stored),
            asked: Box::new(d.info()),
        });
    }
    V::view(unsealed.payload).map_err(|e| {
        Error::corrupt(
            "<bytes>",
            codec::envelope::EnvelopeError::Invalid(e).to_string(),
        )
    })
}

/// Encodes a value exactly as regionkv stores it under `key` of `account` in `table`
/// (envelope + payload, with the handle's schema version). For tools and fuzzing.
pub fn encode_value<V: Value>(
    table: &Table<V>,
    account: AccountId,
    key: &[u8],
    value: &V::Input,
) -> Result<Vec<u8>> {
    let payload = V::encode(value).map_err(Error::InvalidArgument)?;
    let dkey = partition::region::data_key(account.get(), key);
    let binding = codec::envelope::Binding {
        table: table.name(),
        key: &dkey,
    };
    Ok(codec::envelope::seal::<V>(
        &binding,
        table.schema_version(),
        &payload,
    ))
}
