//! Rows of the global partition: meta counters, the region catalog, unique-index keys.

use redb::{ReadableTable, Table};

use crate::codec::bin::{Dec, Enc};
use crate::error::{Error, Result};

/// A region as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CatalogEntry {
    pub id: u16,
    pub enabled: bool,
    /// Set once the region's file has been created; a created region whose file is missing
    /// is an error (a lost file), not a region to create anew. An entry not yet created is
    /// a plan an interrupted open left: it names no data, and an open that does not list
    /// the region ignores it.
    pub created: bool,
    /// The file's path when it was given with `Builder::region_at` (`None`: the default
    /// `<dir>/regions/<name>.redb`), as of the last open that listed the region: where a
    /// region disabled at open is read for its record counts.
    pub path: Option<std::path::PathBuf>,
}

impl CatalogEntry {
    /// `[id u16][enabled u8][created u8]`, then `[path: len32 + UTF-8]` if a path is set
    /// (rows written before paths were recorded have none).
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u16(self.id).u8(self.enabled as u8).u8(self.created as u8);
        if let Some(p) = self.path.as_ref().and_then(|p| p.to_str()) {
            e.bytes(p.as_bytes());
        }
        e.finish()
    }
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut d = Dec(b);
        let mut c = CatalogEntry {
            id: d.u16()?,
            enabled: d.u8()? != 0,
            created: d.u8()? != 0,
            path: None,
        };
        if d.end().is_none() {
            c.path = Some(std::path::PathBuf::from(d.string()?));
        }
        d.end()?;
        Some(c)
    }
}

pub(crate) fn get_u64(t: &impl ReadableTable<&'static str, &'static [u8]>, k: &str) -> Result<u64> {
    let v = t
        .get(k)
        .map_err(|e| Error::corrupt("global", format!("meta `{k}`: {e}")))?
        .ok_or_else(|| Error::corrupt("global", format!("meta `{k}` missing")))?;
    let b: [u8; 8] = v
        .value()
        .try_into()
        .map_err(|_| Error::corrupt("global", format!("meta `{k}` malformed")))?;
    Ok(u64::from_le_bytes(b))
}

pub(crate) fn put_u64(
    t: &mut Table<&'static str, &'static [u8]>,
    k: &str,
    v: u64,
) -> redb::Result<()> {
    t.insert(k, v.to_le_bytes().as_slice()).map(|_| ())
}

/// `[ns_len u8][ns][digest 16]`: the key of a unique entry.
pub(crate) fn unique_key(ns: &str, digest: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + ns.len() + 16);
    k.push(ns.len() as u8);
    k.extend_from_slice(ns.as_bytes());
    k.extend_from_slice(digest);
    k
}

/// Splits a unique key back into namespace and digest.
pub(crate) fn split_unique_key(k: &[u8]) -> Option<(&str, [u8; 16])> {
    let n = *k.first()? as usize;
    if k.len() != 1 + n + 16 {
        return None;
    }
    let ns = std::str::from_utf8(&k[1..1 + n]).ok()?;
    Some((ns, k[1 + n..].try_into().ok()?))
}

/// `[txn u128 BE][unique key]`: rows of the INFLIGHT and TOMBSTONES tables, ordered by txn.
pub(crate) fn txn_key(txn: u128, ukey: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(16 + ukey.len());
    k.extend_from_slice(&txn.to_be_bytes());
    k.extend_from_slice(ukey);
    k
}

pub(crate) fn split_txn_key(k: &[u8]) -> Option<(u128, &[u8])> {
    if k.len() < 16 {
        return None;
    }
    Some((u128::from_be_bytes(k[..16].try_into().ok()?), &k[16..]))
}
