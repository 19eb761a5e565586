//! Every size and name limit of the store, and the checks that enforce them, in one place.
//!
//! A name or value outside its limit is refused with [`Error::InvalidArgument`] before
//! anything is buffered or written.

use crate::error::{Error, Result};

/// Largest user key, in bytes.
pub const MAX_KEY: usize = 4096;
/// Default largest stored value (after encoding), in bytes; see
/// [`Builder::max_value_size`](crate::Builder::max_value_size).
pub const DEFAULT_MAX_VALUE: usize = 16 << 20;
/// Longest table name, in bytes.
pub const MAX_TABLE_NAME: usize = 64;
/// Longest unique namespace, in bytes.
pub const MAX_NAMESPACE: usize = 64;
/// Longest unique value, in bytes.
pub const MAX_UNIQUE_VALUE: usize = 1024;
/// Longest region name, in bytes (ASCII letters, digits, `-` and `_`: it names a file).
pub const MAX_REGION_NAME: usize = 64;
/// Longest account name, in bytes.
pub const MAX_ACCOUNT_NAME: usize = 128;

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(Error::invalid(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY}",
            key.len()
        )));
    }
    Ok(())
}

/// `max` is the store's configured limit.
pub(crate) fn check_value_size(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::invalid(format!(
            "value of {len} bytes exceeds the limit of {max}"
        )));
    }
    Ok(())
}

pub(crate) fn check_table_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TABLE_NAME {
        return Err(Error::invalid(format!(
            "table name must be 1 to {MAX_TABLE_NAME} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_unique(namespace: &str, value: &[u8]) -> Result<()> {
    if namespace.is_empty() || namespace.len() > MAX_NAMESPACE {
        return Err(Error::invalid(format!(
            "unique namespace must be 1 to {MAX_NAMESPACE} bytes, got {}",
            namespace.len()
        )));
    }
    if value.is_empty() || value.len() > MAX_UNIQUE_VALUE {
        return Err(Error::invalid(format!(
            "unique value must be 1 to {MAX_UNIQUE_VALUE} bytes, got {}",
            value.len()
        )));
    }
    Ok(())
}

pub(crate) fn check_region_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_REGION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(Error::invalid(format!(
            "region name `{name}` must be 1 to {MAX_REGION_NAME} ASCII letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

pub(crate) fn check_account_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ACCOUNT_NAME {
        return Err(Error::invalid(format!(
            "account name must be 1 to {MAX_ACCOUNT_NAME} bytes"
        )));
    }
    Ok(())
}
