//! Identifier newtypes.

use std::fmt;

/// A region's id: assigned once in the global catalog, never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RegionId(pub(crate) u16);

impl RegionId {
    /// The raw two-byte id.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// An account (tenant) id, allocated by the global partition.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct AccountId(pub(crate) u64);

impl AccountId {
    /// The raw id.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Builds an id from its raw value (for ids kept by the caller, e.g. in a URL).
    pub fn from_raw(raw: u64) -> Self {
        AccountId(raw)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Identifies one run of the reservation protocol: `(epoch, seq)`, ordered. The epoch is
/// bumped at every open so a TxnId never repeats.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(crate) struct TxnId {
    pub epoch: u64,
    pub seq: u64,
}

impl TxnId {
    pub fn to_u128(self) -> u128 {
        ((self.epoch as u128) << 64) | self.seq as u128
    }

    pub fn from_u128(v: u128) -> Self {
        TxnId {
            epoch: (v >> 64) as u64,
            seq: v as u64,
        }
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_order_matches_u128_order() {
        let a = TxnId { epoch: 1, seq: 9 };
        let b = TxnId { epoch: 2, seq: 0 };
        assert!(a < b);
        assert!(a.to_u128() < b.to_u128());
        assert_eq!(TxnId::from_u128(b.to_u128()), b);
    }
}
