//! Rows of a region partition: data keys, applied markers, owned unique values, usage.

use redb::ReadableTable;

use crate::codec::bin::{Dec, Enc};
use crate::error::{Error, Result};
use crate::schema::USAGE;

/// `[account u64 BE][user key]`: one tenant's rows are contiguous.
#[inline]
pub(crate) fn data_key_into(buf: &mut Vec<u8>, account: u64, key: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&account.to_be_bytes());
    buf.extend_from_slice(key);
}

pub(crate) fn data_key(account: u64, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + key.len());
    data_key_into(&mut v, account, key);
    v
}

/// `[table_len u8][table][account u64 BE][user key]`: key of a record's owned values.
pub(crate) fn owned_key(table: &str, account: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + table.len() + 8 + key.len());
    k.push(table.len() as u8);
    k.extend_from_slice(table.as_bytes());
    k.extend_from_slice(&account.to_be_bytes());
    k.extend_from_slice(key);
    k
}

pub(crate) fn split_owned_key(k: &[u8]) -> Option<(&str, u64, &[u8])> {
    let n = *k.first()? as usize;
    if k.len() < 1 + n + 8 {
        return None;
    }
    let table = std::str::from_utf8(&k[1..1 + n]).ok()?;
    let account = u64::from_be_bytes(k[1 + n..1 + n + 8].try_into().ok()?);
    Some((table, account, &k[1 + n + 8..]))
}

/// A unique value a record owns. The plaintext is kept here, in the record's region, so
/// `find_unique` can verify a digest hit and never return a wrong record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owned {
    pub ns: String,
    pub digest: [u8; 16],
    pub value: Vec<u8>,
}

pub(crate) fn encode_owned(list: &[Owned]) -> Vec<u8> {
    let mut e = Enc::new();
    e.raw(&(list.len() as u32).to_le_bytes());
    for o in list {
        e.bytes(o.ns.as_bytes()).raw(&o.digest).bytes(&o.value);
    }
    e.finish()
}

pub(crate) fn decode_owned(b: &[u8]) -> Option<Vec<Owned>> {
    let mut d = Dec(b);
    let n = d.count(24)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Owned {
            ns: d.string()?,
            digest: d.arr16()?,
            value: d.bytes()?.to_vec(),
        });
    }
    d.end()?;
    Some(v)
}

/// Whether the encoded list `b` lists `value` in namespace `ns`, without decoding it into
/// owned values (the lookup path): the same answer as `decode_owned(b)` then a search,
/// `None` for a row `decode_owned` refuses.
pub(crate) fn owned_lists(b: &[u8], ns: &str, value: &[u8]) -> Option<bool> {
    let mut d = Dec(b);
    let n = d.count(24)?;
    let mut found = false;
    for _ in 0..n {
        let o_ns = std::str::from_utf8(d.bytes()?).ok()?;
        d.arr16()?;
        let o_value = d.bytes()?;
        found |= o_ns == ns && o_value == value;
    }
    d.end()?;
    Some(found)
}

/// A claim in an applied marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MarkerClaim {
    pub ns: String,
    pub digest: [u8; 16],
    pub table: String,
    pub key: Vec<u8>,
}

/// The applied marker of one unique txn: written in the same region commit as the data,
/// it is the durable record the global index is rebuilt from. Digests only, no plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Marker {
    pub account: u64,
    pub claims: Vec<MarkerClaim>,
    pub releases: Vec<(String, [u8; 16])>,
}

impl Marker {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u64(self.account);
        e.raw(&(self.claims.len() as u32).to_le_bytes());
        for c in &self.claims {
            e.bytes(c.ns.as_bytes())
                .raw(&c.digest)
                .bytes(c.table.as_bytes())
                .bytes(&c.key);
        }
        e.raw(&(self.releases.len() as u32).to_le_bytes());
        for (ns, d) in &self.releases {
            e.bytes(ns.as_bytes()).raw(d);
        }
        e.finish()
    }

    pub fn decode(b: &[u8]) -> Option<Marker> {
        let mut d = Dec(b);
        let account = d.u64()?;
        let n = d.count(28)?;
        let mut claims = Vec::with_capacity(n);
        for _ in 0..n {
            claims.push(MarkerClaim {
                ns: d.string()?,
                digest: d.arr16()?,
                table: d.string()?,
                key: d.bytes()?.to_vec(),
            });
        }
        let n = d.count(20)?;
        let mut releases = Vec::with_capacity(n);
        for _ in 0..n {
            releases.push((d.string()?, d.arr16()?));
        }
        d.end()?;
        Some(Marker {
            account,
            claims,
            releases,
        })
    }
}

/// Record counts per account of a region, from its USAGE table.
pub(crate) fn region_usage(txn: &redb::ReadTransaction, region: &str) -> Result<Vec<(u64, u64)>> {
    let err = |e: &dyn std::fmt::Display| Error::corrupt(region, e.to_string());
    let mut v = Vec::new();
    if let Some(t) = crate::partition::table_if_exists(txn, USAGE).map_err(|e| err(&e))? {
        for row in t.iter().map_err(|e| err(&e))? {
            let (k, u) = row.map_err(|e| err(&e))?;
            let account = k.value();
            // redb walks the table by position: a damaged page it trusted could yield a
            // row twice (counted twice) or out of order.
            if v.last().is_some_and(|&(last, _)| last >= account) {
                return Err(Error::corrupt(
                    region,
                    "record counts (_usage) out of order: damaged pages",
                ));
            }
            v.push((account, u.value().0));
        }
    }
    Ok(v)
}

/// Record counts per account of one region: (account, records).
pub(crate) type AccountCounts = Vec<(u64, u64)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_owned_round_trip() {
        let m = Marker {
            account: 9,
            claims: vec![MarkerClaim {
                ns: "email".into(),
                digest: [3; 16],
                table: "users".into(),
                key: b"u1".to_vec(),
            }],
            releases: vec![("slug".into(), [4; 16])],
        };
        let b = m.encode();
        assert_eq!(Marker::decode(&b), Some(m));
        for cut in 0..b.len() {
            assert_eq!(Marker::decode(&b[..cut]), None);
        }
        let o = vec![Owned {
            ns: "email".into(),
            digest: [1; 16],
            value: b"a@b".to_vec(),
        }];
        assert_eq!(decode_owned(&encode_owned(&o)), Some(o));
    }

    /// The allocation-free check agrees with decoding then searching, on every row
    /// (valid ones, cut ones, damaged ones).
    #[test]
    fn owned_lists_agrees_with_decode_owned() {
        use proptest::prelude::*;
        let search = |b: &[u8], ns: &str, v: &[u8]| {
            decode_owned(b).map(|l| l.iter().any(|o| o.ns == ns && o.value == v))
        };
        proptest!(|(list in proptest::collection::vec(("[a-c]{0,3}", any::<[u8; 16]>(), proptest::collection::vec(0u8..3, 0..3)), 0..4),
                    ns in "[a-c]{0,3}", v in proptest::collection::vec(0u8..3, 0..3),
                    flip in any::<(usize, u8)>(), cut in any::<usize>())| {
            let list: Vec<Owned> = list.into_iter().map(|(ns, digest, value)| Owned { ns, digest, value }).collect();
            let b = encode_owned(&list);
            prop_assert_eq!(owned_lists(&b, &ns, &v), search(&b, &ns, &v));
            let mut damaged = b.clone();
            if !damaged.is_empty() {
                let i = flip.0 % damaged.len();
                damaged[i] ^= flip.1;
            }
            prop_assert_eq!(owned_lists(&damaged, &ns, &v), search(&damaged, &ns, &v));
            let c = cut % (b.len() + 1);
            prop_assert_eq!(owned_lists(&b[..c], &ns, &v), search(&b[..c], &ns, &v));
        });
    }

    #[test]
    fn keys_split_back() {
        let k = owned_key("users", 42, b"\xff\x00key");
        assert_eq!(
            split_owned_key(&k),
            Some(("users", 42, &b"\xff\x00key"[..]))
        );
        assert_eq!(data_key(1, b"x"), [0, 0, 0, 0, 0, 0, 0, 1, b'x']);
    }
}
