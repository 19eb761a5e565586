//! The on-disk schema, on one screen. A change here is a format change: bump
//! [`FORMAT_VERSION`] and keep a fixture of the old format in tests.

use redb::TableDefinition;

/// Format version written into every partition's meta table. A file of another version is
/// refused. Version 2: record envelopes carry a schema version, regions have `_schemas`.
pub const FORMAT_VERSION: u32 = 2;

/// Every partition: `key -> bytes`. Keys below.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("_meta");
pub(crate) const META_FORMAT: &str = "format_version"; // u32 LE
pub(crate) const META_DB_UUID: &str = "db_uuid"; // 16 bytes
pub(crate) const META_KIND: &str = "kind"; // 1 byte: KIND_GLOBAL | KIND_REGION
pub(crate) const META_REGION_NAME: &str = "region_name"; // utf-8 (region partitions)
pub(crate) const META_REGION_ID: &str = "region_id"; // u16 LE (region partitions)
pub(crate) const META_DIGEST_KEY: &str = "digest_key"; // 32 bytes (global)
pub(crate) const META_EPOCH: &str = "epoch"; // u64 LE (global), bumped and synced at every open
pub(crate) const META_NEXT_ACCOUNT: &str = "next_account"; // u64 LE (global)
pub(crate) const META_NEXT_REGION: &str = "next_region"; // u16 LE (global)
pub(crate) const META_DEFAULT_REGION: &str = "default_region"; // utf-8 (global)
/// Region partitions: u128 LE, the TxnId of the last unique write applied there (written
/// with its marker). A file whose value is below what the global partition has seen of
/// the region (`_region_seen`) is an older copy of the region: refused at open.
pub(crate) const META_LAST_TXN: &str = "last_txn";
/// Global: 1 byte, 1 when the last process closed the store cleanly (`Db::close`), 0 from
/// every open until then. After an end without `close` (a crash, a failed sync), a region
/// file may hold a commit a power loss would undo: a region disabled at that open cannot
/// have its record counts read from it.
pub(crate) const META_CLEAN_CLOSE: &str = "clean_close";

pub(crate) const KIND_GLOBAL: u8 = 1;
pub(crate) const KIND_REGION: u8 = 2;

// ---- global partition ----

/// Region catalog: name -> `[id u16 LE][enabled u8][created u8]`.
pub(crate) const REGIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("_regions");
/// Accounts: id -> encoded account row (see `account.rs`).
pub(crate) const ACCOUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("_accounts");
/// Account names (unique across all regions) -> id.
pub(crate) const ACCOUNT_NAMES: TableDefinition<&str, u64> = TableDefinition::new("_account_names");
/// Unique index: `[ns_len u8][ns][digest 16]` -> encoded entry (`reservation/state.rs`).
/// Never holds a plaintext value.
pub(crate) const UNIQUE_NAME: &str = "_unique";
pub(crate) const UNIQUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new(UNIQUE_NAME);
/// In-flight reservations: `[txn u128 BE][unique key]` -> (). Lets recovery find Pending and
/// Releasing entries without scanning the whole index.
pub(crate) const INFLIGHT: TableDefinition<&[u8], ()> = TableDefinition::new("_inflight");
/// Tombstones by age: `[txn u128 BE][unique key]` -> (). Lets a checkpoint drop old
/// tombstones with one range scan. A row whose entry was since re-claimed is stale and
/// simply removed.
pub(crate) const TOMBSTONES: TableDefinition<&[u8], ()> = TableDefinition::new("_tombstones");

/// Regions that may hold applied markers the durable global state does not cover:
/// region -> epoch of the marking. Set (synced) by the first unique write in a region after
/// each checkpoint; cleared by the next checkpoint, or by the recovery that replays that
/// region's markers. A recovery that finds a row for a disabled region cannot settle its
/// claims: the store refuses to call any value free until the region returns or an
/// operator forfeits its claims.
pub(crate) const DIRTY: TableDefinition<u16, u64> = TableDefinition::new("_dirty");

/// The newest unique write of each region that the global partition durably reflects:
/// region -> TxnId (u128), raised by every checkpoint (the txns it covers) and every
/// recovery (the markers it replayed). A region file whose `last_txn` is older was
/// restored from an older copy: the index describes writes it does not hold.
pub(crate) const REGION_SEEN: TableDefinition<u16, u128> = TableDefinition::new("_region_seen");

/// Regions with a commit whose outcome is unknown (it failed inside its commit): region
/// -> (). Written (synced) when it happens. Such a file may hold, in its live image, a
/// commit that a power loss undoes: its record counts cannot be frozen from it while it is
/// disabled (they are unknown then). Cleared by the first open that has the region
/// enabled, after a synced commit of the region has made its contents durable.
pub(crate) const DOUBTFUL: TableDefinition<u16, ()> = TableDefinition::new("_doubtful");

/// Record counts of disabled regions: (region, account) -> records, recorded when the
/// region was disabled (its file is not read while disabled). A row with account
/// [`FROZEN_SENTINEL`] marks a region whose counts were recorded.
pub(crate) const FROZEN_USAGE: TableDefinition<(u16, u64), u64> =
    TableDefinition::new("_frozen_usage");
pub(crate) const FROZEN_SENTINEL: u64 = u64::MAX;

// ---- region partitions ----

/// Applied markers: txn (u128, so ordered by TxnId) -> encoded marker (claims and releases,
/// digests only). Written in the same transaction as the data they cover.
pub(crate) const MARKERS: TableDefinition<u128, &[u8]> = TableDefinition::new("_markers");
/// Unique values owned by a record: `[table_len u8][table][account u64 BE][user key]` ->
/// encoded list of (namespace, digest, plaintext). The plaintext stays in the region.
pub(crate) const OWNED_NAME: &str = "_owned";
pub(crate) const OWNED: TableDefinition<&[u8], &[u8]> = TableDefinition::new(OWNED_NAME);
/// What each user table holds: (table, schema version) -> `[codec u8][fingerprint u64
/// LE][type name utf-8]` (`partition/schemas.rs`). Written with a table's first row; never
/// changed.
pub(crate) const SCHEMAS: TableDefinition<(&str, u16), &[u8]> = TableDefinition::new("_schemas");
/// Per-account usage in this region: account -> (records, bytes).
pub(crate) const USAGE: TableDefinition<u64, (u64, u64)> = TableDefinition::new("_usage");

/// Prefix of the redb table that holds a user table's rows, so user tables can never
/// collide with the internal ones above.
pub(crate) const USER_TABLE_PREFIX: &str = "t/";

pub(crate) fn user_table_name(name: &str) -> String {
    let mut s = String::with_capacity(USER_TABLE_PREFIX.len() + name.len());
    s.push_str(USER_TABLE_PREFIX);
    s.push_str(name);
    s
}
