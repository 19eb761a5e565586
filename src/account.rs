//! Accounts (tenants): creation options, the stored row, and the routing cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::codec::bin::{Dec, Enc};
use crate::types::{AccountId, RegionId};

/// Options for [`Db::create_account`](crate::Db::create_account).
///
/// ```
/// use regionkv::NewAccount;
/// let acme = NewAccount::new("acme", "eu").allow("us").max_records(10_000);
/// # let _ = acme;
/// ```
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub(crate) name: String,
    pub(crate) home: String,
    pub(crate) allowed: Vec<String>,
    pub(crate) max_records: Option<u64>,
}

impl NewAccount {
    /// An account named `name` (unique across all regions) whose home region is `home`.
    pub fn new(name: impl Into<String>, home: impl Into<String>) -> Self {
        NewAccount {
            name: name.into(),
            home: home.into(),
            allowed: Vec::new(),
            max_records: None,
        }
    }

    /// Also allows data in `region` (the placement policy is home + allowed regions).
    pub fn allow(mut self, region: impl Into<String>) -> Self {
        self.allowed.push(region.into());
        self
    }

    /// Limits the number of records the account may hold, summed over all its regions.
    pub fn max_records(mut self, n: u64) -> Self {
        self.max_records = Some(n);
        self
    }
}

/// Lifecycle state of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountState {
    /// Normal operation.
    Active,
}

impl std::fmt::Display for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccountState::Active => f.write_str("active"),
        }
    }
}

/// An account as stored in the global partition; also the routing entry every request
/// consults (served from an in-memory cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub(crate) id: AccountId,
    pub(crate) name: String,
    pub(crate) home: RegionId,
    /// Home first, then the other allowed regions.
    pub(crate) allowed: Vec<RegionId>,
    pub(crate) max_records: Option<u64>,
    pub(crate) state: AccountState,
    pub(crate) created_at: u64,
}

impl Account {
    /// The account's id.
    pub fn id(&self) -> AccountId {
        self.id
    }
    /// The account's name, unique across all regions.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The home region: where [`Db::write`](crate::Db::write) and
    /// [`Read::get`](crate::Read::get) go.
    pub fn home(&self) -> RegionId {
        self.home
    }
    /// Every region the account may hold data in, home first.
    pub fn allowed(&self) -> &[RegionId] {
        &self.allowed
    }
    /// Whether the placement policy allows data in `region`.
    #[inline]
    pub fn allows(&self, region: RegionId) -> bool {
        self.allowed.contains(&region)
    }
    /// The record limit, if any.
    pub fn max_records(&self) -> Option<u64> {
        self.max_records
    }
    /// The lifecycle state.
    pub fn state(&self) -> AccountState {
        self.state
    }
    /// When the account was created.
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.created_at)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(1) // row version
            .bytes(self.name.as_bytes())
            .u16(self.home.0);
        e.raw(&(self.allowed.len() as u32).to_le_bytes());
        for r in &self.allowed {
            e.u16(r.0);
        }
        match self.max_records {
            Some(n) => e.u8(1).u64(n),
            None => e.u8(0).u64(0),
        };
        let (tag, a, b) = match self.state {
            AccountState::Active => (0u8, 0u16, 0u16),
        };
        e.u8(tag).u16(a).u16(b).u64(self.created_at);
        e.finish()
    }

    pub(crate) fn decode(id: AccountId, b: &[u8]) -> Option<Account> {
        let mut d = Dec(b);
        if d.u8()? != 1 {
            return None;
        }
        let name = d.string()?;
        let home = RegionId(d.u16()?);
        let n = d.count(2)?;
        let allowed = (0..n)
            .map(|_| d.u16().map(RegionId))
            .collect::<Option<Vec<_>>>()?;
        let has_max = d.u8()?;
        let max = d.u64()?;
        let state = match (d.u8()?, d.u16()?, d.u16()?) {
            // Tags 1 (moving: from, to) and 2 (erasing) are reserved for tenant lifecycle.
            (0, _, _) => AccountState::Active,
            _ => return None,
        };
        let created_at = d.u64()?;
        d.end()?;
        Some(Account {
            id,
            name,
            home,
            allowed,
            max_records: (has_max != 0).then_some(max),
            state,
            created_at,
        })
    }
}

/// id -> account, bounded by a byte budget (CLOCK eviction): accounts are written only by
/// this process (redb locks the files to one process), and only when created, so a
/// cached account is never outdated; an evicted one is read again from the global file.
pub(crate) struct RoutingCache {
    clock: crate::clock::Clock<u64, Arc<Account>>,
}

impl RoutingCache {
    /// A cache of at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        RoutingCache {
            clock: crate::clock::Clock::new(budget),
        }
    }

    #[inline]
    pub fn get(&self, id: AccountId) -> Option<Arc<Account>> {
        self.clock.get(&id.0)
    }

    pub fn put(&self, account: Arc<Account>) {
        let charge = std::mem::size_of::<Account>()
            + 16 // the Arc's counts
            + account.name.len()
            + account.allowed.len() * std::mem::size_of::<RegionId>();
        self.clock.insert(account.id.0, account, charge);
    }

    /// (hits, misses).
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.clock.hits.load(Relaxed),
            self.clock.misses.load(Relaxed),
        )
    }

    /// (bytes cached, accounts cached).
    pub fn usage(&self) -> (usize, usize) {
        self.clock.usage()
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_row_round_trip() {
        let a = Account {
            id: AccountId(3),
            name: "acme".into(),
            home: RegionId(2),
            allowed: vec![RegionId(2), RegionId(1)],
            max_records: Some(10),
            state: AccountState::Active,
            created_at: 1234,
        };
        let b = a.encode();
        assert_eq!(Account::decode(AccountId(3), &b), Some(a));
        for cut in 0..b.len() {
            assert_eq!(Account::decode(AccountId(3), &b[..cut]), None);
        }
    }
}
