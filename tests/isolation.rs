//! I5 isolation: no read reachable with one account's handle returns
//! another account's data.
//!
//! A property test over random accounts (3 to 5, each with a random home and allowed
//! regions among 3) and random writes (insert, insert_unique, remove, some to regions the
//! policy denies, and reopens), with user keys crafted to look like other accounts' keys:
//! keys that begin with the 8 big-endian bytes of another account id, the empty key, keys
//! of 1 to 16 0xFF bytes, keys equal to another account's full stored key (its id ++ its
//! user key), and keys that begin with the account's own id. Afterwards, for every account
//! A, every read through `db.read(A)` (`get`, `get_in` for every region, `scan`,
//! `scan_prefix` with crafted prefixes) yields exactly the rows a `BTreeMap` model says A
//! holds, each scanned row tagged with A; `find_unique`, `is_taken` and `scan_all` name the
//! right owner of every row and value.

use std::collections::BTreeMap;

use proptest::prelude::*;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const DIR: &str = "/isolation";
const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const ITEMS: Table<Raw> = Table::new("items");
const NS: &str = "handle";
/// Unique values `handle-0` .. `handle-5`: few, so claims collide across accounts.
const UNIQUES: u8 = 6;
/// Plain keys `k0` .. `k3`.
const PLAIN: u8 = 4;
/// Suffixes appended to another account's id.
const SUFFIXES: [&[u8]; 5] = [b"", b"\x00", b"\xff\xff\xff", b"k1", b"\xff"];

/// A user key, resolved against the real account ids once the accounts exist.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySpec {
    Plain(u8),
    Empty,
    /// `n` bytes of 0xFF (1..=16).
    Ff(u8),
    /// Another account's id (big-endian) ++ a suffix.
    OtherPrefix {
        other: usize,
        suffix: usize,
    },
    /// Another account's full stored key: its id ++ one of its plain keys.
    OtherFull {
        other: usize,
        plain: u8,
    },
    /// The account's own id ++ a plain key.
    OwnPrefix(u8),
}

fn plain(p: u8) -> Vec<u8> {
    format!("k{p}").into_bytes()
}

impl KeySpec {
    fn resolve(&self, me: usize, ids: &[AccountId]) -> Vec<u8> {
        let id = |i: usize| ids[i % ids.len()].get().to_be_bytes().to_vec();
        match self {
            KeySpec::Plain(p) => plain(*p),
            KeySpec::Empty => Vec::new(),
            KeySpec::Ff(n) => vec![0xFF; *n as usize],
            KeySpec::OtherPrefix { other, suffix } => {
                let mut k = id(*other);
                k.extend_from_slice(SUFFIXES[*suffix]);
                k
            }
            KeySpec::OtherFull { other, plain: p } => {
                let mut k = id(*other);
                k.extend_from_slice(&plain(*p));
                k
            }
            KeySpec::OwnPrefix(p) => {
                let mut k = id(me);
                k.extend_from_slice(&plain(*p));
                k
            }
        }
    }
}

fn key_spec() -> impl Strategy<Value = KeySpec> {
    prop_oneof![
        3 => (0..PLAIN).prop_map(KeySpec::Plain),
        1 => Just(KeySpec::Empty),
        2 => (1u8..=16).prop_map(KeySpec::Ff),
        3 => (0usize..5, 0..SUFFIXES.len())
            .prop_map(|(other, suffix)| KeySpec::OtherPrefix { other, suffix }),
        3 => (0usize..5, 0..PLAIN).prop_map(|(other, plain)| KeySpec::OtherFull { other, plain }),
        1 => (0..PLAIN).prop_map(KeySpec::OwnPrefix),
    ]
}

/// Every key an account can hold in this test (for exhaustive `get`s).
fn universe(me: usize, ids: &[AccountId]) -> Vec<Vec<u8>> {
    let mut specs: Vec<KeySpec> = (0..PLAIN).map(KeySpec::Plain).collect();
    specs.push(KeySpec::Empty);
    specs.extend((1..=16).map(KeySpec::Ff));
    for other in 0..ids.len() {
        specs.extend((0..SUFFIXES.len()).map(|suffix| KeySpec::OtherPrefix { other, suffix }));
        specs.extend((0..PLAIN).map(|plain| KeySpec::OtherFull { other, plain }));
    }
    specs.extend((0..PLAIN).map(KeySpec::OwnPrefix));
    let mut keys: Vec<Vec<u8>> = specs.iter().map(|s| s.resolve(me, ids)).collect();
    keys.sort();
    keys.dedup();
    keys
}

#[derive(Debug, Clone)]
struct AccountSpec {
    home: usize,
    /// Bit i set: region i is allowed too.
    extra: u8,
}

impl AccountSpec {
    fn allowed(&self) -> Vec<usize> {
        let mut v = vec![self.home];
        v.extend((0..3).filter(|r| *r != self.home && self.extra & (1 << r) != 0));
        v
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        acct: usize,
        region: usize,
        key: KeySpec,
        val: u8,
    },
    /// The record owns exactly `uniq` afterwards (`None`: releases what it owned).
    InsertUnique {
        acct: usize,
        region: usize,
        key: KeySpec,
        val: u8,
        uniq: Option<u8>,
    },
    Remove {
        acct: usize,
        region: usize,
        key: KeySpec,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..5, 0usize..3, key_spec(), any::<u8>())
            .prop_map(|(acct, region, key, val)| Op::Insert { acct, region, key, val }),
        4 => (0usize..5, 0usize..3, key_spec(), any::<u8>(), proptest::option::weighted(0.85, 0..UNIQUES))
            .prop_map(|(acct, region, key, val, uniq)| Op::InsertUnique { acct, region, key, val, uniq }),
        2 => (0usize..5, 0usize..3, key_spec())
            .prop_map(|(acct, region, key)| Op::Remove { acct, region, key }),
        1 => Just(Op::Reopen),
    ]
}

/// (account index, region index, user key).
type RowKey = (usize, usize, Vec<u8>);

#[derive(Debug, Default)]
struct Model {
    rows: BTreeMap<RowKey, (Vec<u8>, Option<u8>)>,
    owners: BTreeMap<u8, RowKey>,
}

fn unique_value(u: u8) -> String {
    format!("handle-{u}")
}

/// A record's value names its writer, so a leaked row is recognisable.
fn record_value(acct: usize, val: u8) -> Vec<u8> {
    format!("acct{acct}-val{val}").into_bytes()
}

fn open(sim: &SimStorage) -> Db {
    Db::builder()
        .region("us")
        .region("eu")
        .region("ap")
        .storage(sim.clone())
        .open(DIR)
        .expect("open")
}

struct World {
    sim: SimStorage,
    /// `None` only inside a reopen.
    handle: Option<Db>,
    ids: Vec<AccountId>,
    specs: Vec<AccountSpec>,
    model: Model,
}

impl World {
    fn db(&self) -> &Db {
        self.handle.as_ref().expect("open")
    }

    fn new(specs: Vec<AccountSpec>) -> World {
        let sim = SimStorage::new();
        let db = open(&sim);
        let mut ids = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let mut new = NewAccount::new(format!("acct{i}"), REGIONS[s.home]);
            for r in s.allowed() {
                new = new.allow(REGIONS[r]);
            }
            ids.push(db.create_account(new).expect("create account"));
        }
        World {
            sim,
            handle: Some(db),
            ids,
            specs,
            model: Model::default(),
        }
    }

    fn apply(&mut self, op: &Op) {
        let n = self.ids.len();
        let (acct, region) = match op {
            Op::Reopen => {
                if let Some(db) = self.handle.take() {
                    db.close().expect("close");
                }
                self.handle = Some(open(&self.sim));
                return;
            }
            Op::Insert { acct, region, .. }
            | Op::InsertUnique { acct, region, .. }
            | Op::Remove { acct, region, .. } => (acct % n, *region),
        };
        let id = self.ids[acct];
        let allowed = self.specs[acct].allowed().contains(&region);
        let w = self.db().write_in(id, REGIONS[region]);
        if !allowed {
            assert!(
                matches!(w, Err(Error::PlacementDenied { .. })),
                "{op:?}: write_in a denied region: {:?}",
                w.map(|_| ())
            );
            return;
        }
        let mut w = w.expect("write_in an allowed region");
        let m = &mut self.model;
        match op {
            Op::Insert { key, val, .. } => {
                let key = key.resolve(acct, &self.ids);
                let value = record_value(acct, *val);
                w.insert(&ITEMS, &key, &value).unwrap();
                w.commit().expect("insert commits");
                let rk = (acct, region, key);
                let uniq = m.rows.get(&rk).and_then(|(_, u)| *u);
                m.rows.insert(rk, (value, uniq));
            }
            Op::InsertUnique { key, val, uniq, .. } => {
                let key = key.resolve(acct, &self.ids);
                let value = record_value(acct, *val);
                let rk = (acct, region, key.clone());
                let u = uniq.map(unique_value);
                let list: Vec<Unique<'_>> = u.iter().map(|u| Unique::new(NS, u)).collect();
                w.insert_unique(&ITEMS, &key, &value, &list).unwrap();
                let taken = uniq
                    .and_then(|u| m.owners.get(&u))
                    .is_some_and(|o| *o != rk);
                let r = w.commit();
                if taken {
                    assert!(
                        matches!(r, Err(Error::UniqueViolation { .. })),
                        "{op:?}: value owned elsewhere, commit said {r:?}"
                    );
                    return;
                }
                r.unwrap_or_else(|e| panic!("{op:?}: {e}"));
                if let Some((_, Some(old))) = m.rows.get(&rk) {
                    m.owners.remove(old);
                }
                if let Some(u) = uniq {
                    m.owners.insert(*u, rk.clone());
                }
                m.rows.insert(rk, (value, *uniq));
            }
            Op::Remove { key, .. } => {
                let key = key.resolve(acct, &self.ids);
                w.remove(&ITEMS, &key).unwrap();
                w.commit().expect("remove commits");
                if let Some((_, Some(old))) = m.rows.remove(&(acct, region, key)) {
                    m.owners.remove(&old);
                }
            }
            Op::Reopen => unreachable!(),
        }
    }

    /// The rows of account `a`, as (region, key, value), in key order per region.
    fn rows_of(&self, a: usize, prefix: &[u8]) -> Vec<(usize, Vec<u8>, Vec<u8>)> {
        let mut v: Vec<_> = self
            .model
            .rows
            .iter()
            .filter(|((acct, _, k), _)| *acct == a && k.starts_with(prefix))
            .map(|((_, r, k), (val, _))| (*r, k.clone(), val.clone()))
            .collect();
        v.sort();
        v
    }

    fn region_index(&self, id: regionkv::RegionId) -> usize {
        let name = self.db().region_name(id).expect("known region");
        REGIONS
            .iter()
            .position(|r| *r == name)
            .expect("one of ours")
    }

    fn prefixes(&self, a: usize) -> Vec<Vec<u8>> {
        let mut p: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x00],
            vec![0xFF],
            vec![0xFF; 2],
            vec![0xFF; 15],
            vec![0xFF; 16],
            vec![0xFF; 17],
            b"k".to_vec(),
        ];
        for id in &self.ids {
            let be = id.get().to_be_bytes();
            p.push(be.to_vec());
            p.push(be[..7].to_vec());
            p.push([&be[..], b"k"].concat());
            p.push([&be[..], &[0xFF]].concat());
        }
        // Every key the account could hold is a prefix too.
        p.extend(universe(a, &self.ids));
        p.sort();
        p.dedup();
        p
    }

    fn check(&self) {
        let db = self.db();
        for (a, &id) in self.ids.iter().enumerate() {
            let r = db.read(id).expect("read");
            assert_eq!(r.account(), id);
            let allowed = self.specs[a].allowed();
            let home = self.specs[a].home;
            // Point reads of every key any account could hold, in every region.
            for key in universe(a, &self.ids) {
                for (ri, region) in REGIONS.iter().enumerate() {
                    let got = r.get_in(region, &ITEMS, &key);
                    if !allowed.contains(&ri) {
                        assert!(
                            matches!(got, Err(Error::PlacementDenied { .. })),
                            "get_in {region} outside the policy of account {a}: {:?}",
                            got.map(|o| o.map(|r| r.to_vec()))
                        );
                        continue;
                    }
                    let got = got.expect("get_in").map(|rec| rec.to_vec());
                    let want = self
                        .model
                        .rows
                        .get(&(a, ri, key.clone()))
                        .map(|v| v.0.clone());
                    assert_eq!(
                        got, want,
                        "get_in {region} by account {a} ({id}) of key {key:02x?}"
                    );
                    if ri == home {
                        let got = r.get(&ITEMS, &key).expect("get").map(|rec| rec.to_vec());
                        assert_eq!(got, want, "get by account {a} of key {key:02x?}");
                    }
                }
            }
            // Scans: the whole account, and crafted prefixes.
            for prefix in self.prefixes(a) {
                let rows = if prefix.is_empty() {
                    r.scan(&ITEMS)
                } else {
                    r.scan_prefix(&ITEMS, &prefix)
                }
                .expect("scan");
                let mut got = Vec::new();
                for row in rows {
                    let row = row.expect("scanned row");
                    assert_eq!(
                        row.account(),
                        id,
                        "scan_prefix {prefix:02x?} by account {a} yielded a row of {} (key {:02x?})",
                        row.account(),
                        row.key()
                    );
                    got.push((
                        self.region_index(row.region()),
                        row.key().to_vec(),
                        row.record().to_vec(),
                    ));
                }
                got.sort();
                assert_eq!(
                    got,
                    self.rows_of(a, &prefix),
                    "scan_prefix {prefix:02x?} by account {a} ({id})"
                );
            }
        }
        // Unique values: the right owner, or none.
        for u in 0..UNIQUES {
            let value = unique_value(u);
            let hit = db.find_unique(&ITEMS, NS, &value).expect("find_unique");
            match (hit, self.model.owners.get(&u)) {
                (None, None) => {}
                (Some(h), Some((a, r, k))) => {
                    assert_eq!(h.account(), self.ids[*a], "owner of {value}");
                    assert_eq!(self.region_index(h.region()), *r, "region of {value}");
                    assert_eq!(h.key(), k.as_slice(), "key of {value}");
                    assert_eq!(
                        h.record().to_vec(),
                        self.model.rows[&(*a, *r, k.clone())].0,
                        "record of {value}"
                    );
                }
                (h, want) => panic!("find_unique {value}: got {h:?}, model owner {want:?}"),
            }
            assert_eq!(
                db.is_taken(NS, &value).unwrap(),
                self.model.owners.contains_key(&u),
                "is_taken {value}"
            );
        }
        // scan_all: every row tagged with its real owner.
        let mut all: Vec<RowKey> = Vec::new();
        for row in db.scan_all(&ITEMS).expect("scan_all") {
            let row = row.expect("row");
            let a = self
                .ids
                .iter()
                .position(|i| *i == row.account())
                .expect("row of a known account");
            let rk = (a, self.region_index(row.region()), row.key().to_vec());
            assert_eq!(
                Some(&row.record().to_vec()),
                self.model.rows.get(&rk).map(|v| &v.0),
                "scan_all row {rk:?}"
            );
            all.push(rk);
        }
        all.sort();
        let want: Vec<RowKey> = self.model.rows.keys().cloned().collect();
        assert_eq!(all, want, "scan_all rows");
        let report = db.audit().expect("audit");
        assert!(report.is_clean(), "audit: {:?}", report.findings());
    }
}

fn account_spec() -> impl Strategy<Value = AccountSpec> {
    (0usize..3, 0u8..8).prop_map(|(home, extra)| AccountSpec { home, extra })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reads_never_cross_accounts(
        specs in proptest::collection::vec(account_spec(), 3..=5),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut w = World::new(specs);
        for op in &ops {
            w.apply(op);
            if matches!(op, Op::Reopen) {
                w.check();
            }
        }
        w.check();
    }
}

/// The crafted keys, all written, by accounts with adjacent ids: the boundary cases of the
/// key encoding without relying on the generator to find them.
#[test]
fn crafted_keys_of_adjacent_accounts() {
    let specs = vec![
        AccountSpec {
            home: 0,
            extra: 0b110,
        },
        AccountSpec {
            home: 0,
            extra: 0b110,
        },
        AccountSpec {
            home: 1,
            extra: 0b001,
        },
    ];
    let mut w = World::new(specs);
    let n = w.ids.len();
    let mut ops = Vec::new();
    for acct in 0..n {
        for (i, key) in [
            KeySpec::Empty,
            KeySpec::Ff(1),
            KeySpec::Ff(8),
            KeySpec::Ff(16),
        ]
        .into_iter()
        .chain((0..n).flat_map(|other| {
            (0..SUFFIXES.len()).map(move |suffix| KeySpec::OtherPrefix { other, suffix })
        }))
        .chain((0..n).map(|other| KeySpec::OtherFull { other, plain: 0 }))
        .chain([KeySpec::OwnPrefix(0), KeySpec::Plain(0)])
        .enumerate()
        {
            let region = w.specs[acct].home;
            ops.push(Op::InsertUnique {
                acct,
                region,
                key,
                val: i as u8,
                uniq: (i < UNIQUES as usize && acct == i % n).then_some(i as u8),
            });
        }
    }
    for op in &ops {
        w.apply(op);
    }
    w.check();
    w.apply(&Op::Reopen);
    w.check();
}
