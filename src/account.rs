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
///
/// An account holds no heap memory unless its name is longer than
/// [`NAME_INLINE`](Self::NAME_INLINE) bytes or it allows more than
/// [`REGIONS_INLINE`](Self::REGIONS_INLINE) regions: the routing cache keeps accounts in
/// fixed-size slots allocated up front, so caching one allocates nothing that could pin
/// freed memory (docs/design.md, "Routing cache").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub(crate) id: AccountId,
    pub(crate) name: Name,
    pub(crate) home: RegionId,
    /// Home first, then the other allowed regions.
    pub(crate) allowed: Regions,
    pub(crate) max_records: Option<u64>,
    pub(crate) state: AccountState,
    pub(crate) created_at: u64,
}

impl Account {
    /// Names up to this many bytes are stored inside the account (longer ones on the heap).
    pub const NAME_INLINE: usize = NAME_INLINE;
    /// Up to this many allowed regions (home included) are stored inside the account.
    pub const REGIONS_INLINE: usize = REGIONS_INLINE;

    /// The account's id.
    pub fn id(&self) -> AccountId {
        self.id
    }
    /// The account's name, unique across all regions.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// The home region: where [`Db::write`](crate::Db::write) and
    /// [`Read::get`](crate::Read::get) go.
    pub fn home(&self) -> RegionId {
        self.home
    }
    /// Every region the account may hold data in, home first.
    pub fn allowed(&self) -> &[RegionId] {
        self.allowed.as_slice()
    }
    /// Whether the placement policy allows data in `region`.
    #[inline]
    pub fn allows(&self, region: RegionId) -> bool {
        self.allowed.as_slice().contains(&region)
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
            .bytes(self.name().as_bytes())
            .u16(self.home.0);
        e.raw(&(self.allowed.len() as u32).to_le_bytes());
        for r in self.allowed() {
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
        let name = Name::new(&d.string()?);
        let home = RegionId(d.u16()?);
        let n = d.count(2)?;
        let allowed = Regions::new(
            &(0..n)
                .map(|_| d.u16().map(RegionId))
                .collect::<Option<Vec<_>>>()?,
        );
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

const NAME_INLINE: usize = 38;
const REGIONS_INLINE: usize = 11;

/// An account name: inline up to [`NAME_INLINE`] bytes, else on the heap (rare: names are
/// at most 128 bytes, tenant names and slugs are usually short).
#[derive(Clone)]
pub(crate) enum Name {
    Inline { len: u8, bytes: [u8; NAME_INLINE] },
    Spilled(Arc<str>),
}

impl Name {
    pub fn new(s: &str) -> Name {
        if s.len() <= NAME_INLINE {
            let mut bytes = [0; NAME_INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Name::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Name::Spilled(Arc::from(s))
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` (a whole one: only `new` writes `bytes`), so always UTF-8.
            Name::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            Name::Spilled(s) => s,
        }
    }

    /// Heap bytes held (0 when inline).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Name::Inline { .. } => 0,
            Name::Spilled(s) => 16 + s.len(),
        }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Name {}
impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// An account's allowed regions: inline up to [`REGIONS_INLINE`], else on the heap.
#[derive(Clone)]
pub(crate) enum Regions {
    Inline {
        len: u8,
        ids: [RegionId; REGIONS_INLINE],
    },
    Spilled(Arc<[RegionId]>),
}

impl Regions {
    pub fn new(ids: &[RegionId]) -> Regions {
        if ids.len() <= REGIONS_INLINE {
            let mut inline = [RegionId(0); REGIONS_INLINE];
            inline[..ids.len()].copy_from_slice(ids);
            Regions::Inline {
                len: ids.len() as u8,
                ids: inline,
            }
        } else {
            Regions::Spilled(Arc::from(ids))
        }
    }

    pub fn as_slice(&self) -> &[RegionId] {
        match self {
            Regions::Inline { len, ids } => &ids[..*len as usize],
            Regions::Spilled(ids) => ids,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Heap bytes held (0 when inline).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Regions::Inline { .. } => 0,
            Regions::Spilled(ids) => 16 + std::mem::size_of_val::<[RegionId]>(ids),
        }
    }
}

impl PartialEq for Regions {
    fn eq(&self, other: &Regions) -> bool {
        self.as_slice() == other.as_slice()
    }
}
impl Eq for Regions {}
impl std::fmt::Debug for Regions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// id -> account, bounded by a byte budget (CLOCK eviction): accounts are written only by
/// this process (redb locks the files to one process), and only when created, so a
/// cached account is never outdated; an evicted one is read again from the global file.
///
/// Accounts are stored by value in the cache's preallocated slots (an [`Account`] is
/// inline up to [`Account::NAME_INLINE`] name bytes and [`Account::REGIONS_INLINE`]
/// regions), so a fill allocates nothing; only a spilled name or region list is charged
/// on top of the slot.
pub(crate) struct RoutingCache {
    clock: crate::clock::Clock<u64, Account>,
}

impl RoutingCache {
    /// A cache of at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        RoutingCache {
            clock: crate::clock::Clock::new(budget),
        }
    }

    #[inline]
    pub fn get(&self, id: AccountId) -> Option<Account> {
        self.clock.get(&id.0)
    }

    pub fn put(&self, account: Account) {
        let charge = account.name.heap_bytes() + account.allowed.heap_bytes();
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

    /// Bytes a cached account with an inline name and regions is charged.
    #[cfg(test)]
    pub fn entry_bytes(&self) -> usize {
        self.clock.fixed_charge()
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
            name: Name::new("acme"),
            home: RegionId(2),
            allowed: Regions::new(&[RegionId(2), RegionId(1)]),
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

    #[test]
    fn long_names_and_many_regions_spill_and_round_trip() {
        let short = Name::new("acme");
        assert_eq!((short.as_str(), short.heap_bytes()), ("acme", 0));
        let long = "x".repeat(NAME_INLINE + 1);
        let spilled = Name::new(&long);
        assert_eq!(spilled.as_str(), long);
        assert!(spilled.heap_bytes() > long.len());
        let edge = "é".repeat(NAME_INLINE / 2);
        assert_eq!(Name::new(&edge).as_str(), edge);
        assert_eq!(Name::new(&edge).heap_bytes(), 0);

        let few: Vec<RegionId> = (0..REGIONS_INLINE as u16).map(RegionId).collect();
        assert_eq!(Regions::new(&few).as_slice(), few.as_slice());
        assert_eq!(Regions::new(&few).heap_bytes(), 0);
        let many: Vec<RegionId> = (0..=REGIONS_INLINE as u16).map(RegionId).collect();
        assert_eq!(Regions::new(&many).as_slice(), many.as_slice());
        assert!(Regions::new(&many).heap_bytes() > 0);

        let a = Account {
            id: AccountId(9),
            name: spilled,
            home: RegionId(0),
            allowed: Regions::new(&many),
            max_records: None,
            state: AccountState::Active,
            created_at: 5,
        };
        assert_eq!(Account::decode(AccountId(9), &a.encode()), Some(a.clone()));
        let cache = RoutingCache::new(64 << 10);
        cache.put(a.clone());
        assert_eq!(cache.get(AccountId(9)), Some(a));
        assert!(
            cache.usage().0 > cache.entry_bytes(),
            "the spill is charged"
        );
    }

    #[test]
    fn an_inline_account_is_small() {
        // The slot size drives how many accounts a routing budget holds (README, design).
        assert!(
            std::mem::size_of::<Account>() <= 112,
            "{}",
            std::mem::size_of::<Account>()
        );
    }
}
