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
//! `scan_prefix` with crafted prefixes) yields exactly the rows the kit's model
//! (`common::model`) says A holds, each scanned row tagged with A; `find_unique`, `is_taken`
//! and `scan_all` name the right owner of every row and value. Every value names its writer
//! (`Values::NameWriter`), so a leaked row is recognisable as such.

mod common;

use common::REGIONS;
use common::model::{
    Acct, Catalog, Commit, Model, Probes, Rec, Values, classify, compare, execute_commit,
    writer_value,
};
use proptest::prelude::*;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Db, NewAccount, Raw, Table};

const DIR: &str = "/isolation";
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

fn unique_value(u: u8) -> String {
    format!("handle-{u}")
}

fn open(sim: &SimStorage) -> Db {
    Db::builder()
        .region(REGIONS[0])
        .region(REGIONS[1])
        .region(REGIONS[2])
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
        let mut accounts = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let mut new = NewAccount::new(format!("acct{i}"), REGIONS[s.home]);
            let allowed: Vec<&'static str> = s.allowed().iter().map(|r| REGIONS[*r]).collect();
            for r in &allowed {
                new = new.allow(*r);
            }
            ids.push(db.create_account(new).expect("create account"));
            accounts.push(Acct::new(REGIONS[s.home], &allowed));
        }
        let mut model = Model::new(ITEMS.name(), &REGIONS, accounts);
        // A record's value names its writer, so a leaked row is recognisable.
        model.values = Values::NameWriter;
        World {
            sim,
            handle: Some(db),
            ids,
            specs,
            model,
        }
    }

    /// Runs `op` against the store and the model: the store must accept exactly what the
    /// model does (a write to a region outside the account's is `PlacementDenied`, a claim
    /// of a value another record owns a `UniqueViolation`).
    fn apply(&mut self, op: &Op) {
        let n = self.ids.len();
        let (acct, region, rec) = match op {
            Op::Reopen => {
                if let Some(db) = self.handle.take() {
                    db.close().expect("close");
                }
                self.handle = Some(open(&self.sim));
                return;
            }
            Op::Insert {
                acct,
                region,
                key,
                val,
            } => {
                let acct = acct % n;
                let rec = Rec::Put {
                    key: key.resolve(acct, &self.ids),
                    value: writer_value(acct, *val),
                    uniques: None,
                };
                (acct, *region, rec)
            }
            Op::InsertUnique {
                acct,
                region,
                key,
                val,
                uniq,
            } => {
                let acct = acct % n;
                let rec = Rec::Put {
                    key: key.resolve(acct, &self.ids),
                    value: writer_value(acct, *val),
                    uniques: Some(
                        uniq.map(|u| (NS.to_owned(), unique_value(u)))
                            .into_iter()
                            .collect(),
                    ),
                };
                (acct, *region, rec)
            }
            Op::Remove { acct, region, key } => {
                let acct = acct % n;
                let rec = Rec::Remove {
                    key: key.resolve(acct, &self.ids),
                };
                (acct, *region, rec)
            }
        };
        let commit = Commit {
            acct,
            region: REGIONS[region],
            recs: vec![rec],
        };
        let r = execute_commit(self.db(), &ITEMS, self.ids[acct], &commit);
        let want = self.model.commit(&commit);
        assert_eq!(classify(&r), Some(want), "{op:?}: the store said {r:?}");
    }

    /// Prefixes every account scans: the empty one, 0x00, runs of 0xFF, every account id
    /// and pieces of it, and every key an account could hold.
    fn prefixes(&self) -> Vec<Vec<u8>> {
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
        p.extend(self.keys());
        p.sort();
        p.dedup();
        p
    }

    /// Every key any account could hold.
    fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = (0..self.ids.len())
            .flat_map(|a| universe(a, &self.ids))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every read of every account against the model (point reads of every key any account
    /// could hold in every region, scans of crafted prefixes, every unique value,
    /// `scan_all`), then the audit.
    fn check(&self) {
        let db = self.db();
        let probes = Probes {
            keys: self.keys(),
            prefixes: self.prefixes(),
            values: (0..UNIQUES)
                .map(|u| (NS.to_owned(), unique_value(u)))
                .collect(),
        };
        let ids: Vec<Option<AccountId>> = self.ids.iter().map(|i| Some(*i)).collect();
        let found = compare(db, &ids, &self.model, &Catalog::default(), &probes, &|_| {});
        if let Err(e) = found.into_result() {
            panic!("ids {:?}: {e}", self.ids);
        }
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
