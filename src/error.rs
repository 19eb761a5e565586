//! The one error type of the crate.

use std::path::PathBuf;

use crate::types::AccountId;

/// Result alias used throughout regionkv.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in regionkv.
///
/// Expected outcomes that a caller acts on (a value is taken, a placement is denied, a quota
/// is reached, a retryable conflict) have their own variants; storage failures are kept apart
/// so that they are never confused with them. Use [`Error::is_retryable`] to decide whether
/// the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A unique value is already owned by a committed record. The error names the
    /// namespace and the record *of this write* that claimed the value (so a bulk import
    /// knows which of its records collided); which account or record owns it is not
    /// revealed. The message leaves the value out (it may be personal data).
    #[error(
        "unique value already taken in namespace `{namespace}` (claimed by key {:?} of table \
         `{}`)",
        String::from_utf8_lossy(&record.key),
        record.table
    )]
    UniqueViolation {
        /// The namespace of the value, e.g. `"email"`.
        namespace: String,
        /// The record of this write that claimed it, and the value as it was given.
        record: Box<Collision>,
    },
    /// The same unique value is claimed twice inside one write.
    #[error("unique value claimed twice in one write (namespace `{namespace}`)")]
    DuplicateInWrite {
        /// The namespace of the value.
        namespace: String,
    },
    /// A conflicting operation is in flight (another transaction holds a reservation on the
    /// same unique value, or the account is being moved). Retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// A record this write read ([`Write::get`](crate::Write::get)) was changed by another
    /// commit before this one: nothing was written. Retry the whole read-modify-write
    /// ([`Db::update`](crate::Db::update) does).
    #[error("conflict: record {key:?} of table `{table}` changed since this write read it")]
    Conflict {
        /// The table of the record.
        table: String,
        /// Its user key.
        key: Vec<u8>,
    },
    /// The account's placement policy does not allow data in this region.
    #[error("placement denied: account {account} may not store data in region `{region}`")]
    PlacementDenied {
        /// The account.
        account: AccountId,
        /// The region that was asked for.
        region: String,
    },
    /// No region of that name is known to this store.
    #[error("unknown region `{0}`")]
    RegionUnknown(String),
    /// The region is disabled: its file is not opened, its data stays untouched.
    #[error("region `{0}` is disabled")]
    RegionDisabled(String),
    /// A disabled region may hold unique claims that a crash left unsettled (its applied
    /// markers could not be replayed). Until it is enabled again, or an operator gives its
    /// claims up with [`Db::forfeit_unsettled`](crate::Db::forfeit_unsettled), no unique
    /// value can be claimed or reported free: the region might own it.
    #[error(
        "region `{0}` is disabled and may hold unique claims a crash left unsettled: no unique \
         value can be claimed or reported free until it is enabled again (or \
         Db::forfeit_unsettled gives its claims up)"
    )]
    RegionUnsettled(String),
    /// No account with that id exists.
    #[error("unknown account {0}")]
    AccountUnknown(AccountId),
    /// An account with that name already exists (names are unique across all regions).
    #[error("account name `{0}` is taken")]
    AccountNameTaken(String),
    /// The write would take the account past one of its limits.
    #[error("quota exceeded for account {account}: at most {limit} records")]
    QuotaExceeded {
        /// The account.
        account: AccountId,
        /// The limit that would be passed.
        limit: u64,
    },
    /// An argument is malformed (empty name, oversized key or value, bad region name, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The builder's configuration does not match the store on disk.
    #[error("configuration error: {0}")]
    Config(String),
    /// Stored bytes failed their checksum or validation, or redb met a damaged page (it
    /// reported it, or panicked on it: the panic is contained, and the partition then
    /// refuses reads and writes with this error until the store is reopened; other
    /// partitions go on). [`Db::verify`](crate::Db::verify) checks every page.
    #[error("corrupt data in partition `{partition}`: {what}")]
    Corrupt {
        /// Which partition (`global` or a region name).
        partition: String,
        /// What was found to be wrong, including table and key where known.
        what: String,
    },
    /// A file is not the partition it was expected to be (another store's file, a region
    /// file under another region's name, a global file given as a region, not a regionkv
    /// file at all). Nothing was modified.
    #[error("partition mismatch at {path}: {reason}")]
    PartitionMismatch {
        /// The file.
        path: PathBuf,
        /// What did not match.
        reason: String,
    },
    /// The file was written by another version of regionkv (a newer one, or one before
    /// format 2, whose records carry no schema version).
    #[error("{path} has format version {found}; this build reads format {supported}")]
    FormatVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The partition saw an I/O failure and refuses further writes until the store is
    /// reopened (recovery then settles any transaction whose outcome was unknown).
    #[error("partition `{0}` refuses writes after an earlier I/O failure; reopen the store")]
    Poisoned(String),
    /// A commit failed inside its commit: the change may or may not be durable (redb may
    /// have written it before the failing sync). `partition` is a region
    /// (a write; reopening the store settles it consistently in every partition) or
    /// `global` (account creation, a catalog change such as `disable_region`, a forfeit:
    /// look after reopening, e.g. `Db::account_id`). The partition is poisoned.
    #[error("outcome unknown: commit in partition `{partition}` failed: {source}")]
    OutcomeUnknown {
        /// The partition whose commit failed: a region's name or `global`.
        partition: String,
        /// The underlying failure.
        #[source]
        source: Box<redb::Error>,
    },
    /// A storage error from redb.
    #[error("storage error in partition `{partition}`: {source}")]
    Storage {
        /// Which partition.
        partition: String,
        /// The underlying failure.
        #[source]
        source: Box<redb::Error>,
    },
    /// A filesystem error outside redb (creating directories, renaming files).
    #[error("I/O error at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A table was read or written with another type than the one it holds in that
    /// region (another fingerprint, codec or schema version): the stored bytes are not
    /// interpreted. Nothing was written. Not retryable: the table handle's type or version
    /// must change (or the stored records be migrated).
    #[error(
        "schema mismatch in table `{table}` (partition `{partition}`): it holds {stored}, \
         asked for {asked}"
    )]
    SchemaMismatch {
        /// The user table.
        table: String,
        /// The region partition.
        partition: String,
        /// What the table holds there.
        stored: Box<SchemaInfo>,
        /// What the handle asked for.
        asked: Box<SchemaInfo>,
    },
    /// The store was closed with [`Db::close`](crate::Db::close).
    #[error("the store is closed")]
    Closed,
}

/// The record of a write whose unique value was taken (see [`Error::UniqueViolation`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Collision {
    /// Its table.
    pub table: String,
    /// Its user key.
    pub key: Vec<u8>,
    /// The value it claimed, as the write gave it (never read from the index).
    pub value: Vec<u8>,
}

/// The schema of a table as stored or as asked (see [`Error::SchemaMismatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaInfo {
    /// The Rust type's name (not part of the fingerprint).
    pub type_name: String,
    /// `"rkyv"` or `"raw"`.
    pub codec: String,
    /// The schema version.
    pub version: u16,
    /// The type's [`Schema`](crate::Schema) fingerprint.
    pub fingerprint: u64,
    /// The namespaces of the unique values the table declares
    /// ([`Table::unique`](crate::Table::unique)), sorted; part of what a write must match.
    pub unique_namespaces: Vec<String>,
}

impl std::fmt::Display for SchemaInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} v{} ({}, fingerprint {:#018x}",
            self.type_name, self.version, self.codec, self.fingerprint
        )?;
        if !self.unique_namespaces.is_empty() {
            write!(f, ", declares unique {}", self.unique_namespaces.join(", "))?;
        }
        f.write_str(")")
    }
}

impl Error {
    /// Whether the same operation may succeed if retried later without any other change.
    ///
    /// `Busy` and `Conflict` are retryable; a unique violation, a denied placement, a
    /// schema mismatch or corruption are not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Busy(_) | Error::Conflict { .. })
    }

    pub(crate) fn corrupt(partition: &str, what: impl Into<String>) -> Self {
        Error::Corrupt {
            partition: partition.to_owned(),
            what: what.into(),
        }
    }

    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidArgument(what.into())
    }

    pub(crate) fn mismatch(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::PartitionMismatch {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static_and_small() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<Error>();
        assert!(
            std::mem::size_of::<Error>() <= 64,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn retryable_classification() {
        assert!(Error::Busy("x".into()).is_retryable());
        assert!(
            !Error::UniqueViolation {
                namespace: "email".into(),
                record: Box::default(),
            }
            .is_retryable()
        );
        assert!(!Error::Closed.is_retryable());
    }
}
