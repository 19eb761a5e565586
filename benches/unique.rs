//! Unique-value benchmarks, on real files in a temporary folder.
//!
//! - `durable_insert/regionkv_unique`: one `insert_unique` per commit, a fresh value each
//!   time: Reserve (global, unsynced) + Apply (region, synced) + Confirm (global,
//!   unsynced). With the default checkpoint budget (1,024 unique writes or 1 s, whichever
//!   comes first) the figure includes amortized checkpoints: one synced global commit plus
//!   one synced marker-deletion commit per region, run inline by the write that spends the
//!   budget, i.e. about 2 extra fsyncs per 1,024 writes. That is what a user pays.
//! - `durable_insert/regionkv_plain`: one `insert` per commit (one synced region commit,
//!   the global partition untouched).
//! - `durable_insert/redb_single_file_unique`: the same unique insert in one plain redb
//!   file: one write txn that gets the value from an index table (must be absent), inserts
//!   it there, inserts the row, and commits durably (one fsync). Keeps no regions apart.
//! - `batch_1000_unique/*`: 1,000 rows in one commit, each claiming its own fresh value
//!   (regionkv, and the single-file redb equivalent).
//! - `lookup/*`: `find_unique` hit and miss, `is_taken` hit and miss, over 10,000 owned
//!   values (the index entries come from the unique-index cache once warm);
//!   `view_find_unique_hit`: the same hit through a kept `View` (region snapshot reused);
//!   `redb_shared_snapshot_hit`: the single-file peer, index get + row get in one read
//!   transaction kept across lookups; `duplicate_rejected`: another account's `insert_unique` of an owned value,
//!   committed, must fail with `UniqueViolation` (no fsync on that path).
//!
//! The files live in a temporary folder under `<target>/bench-data` (override with
//! `REGIONKV_BENCH_DATA`), on the same disk as the build, never on a tmpfs.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("users");
const PLAIN_INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("unique_index");
const PLAIN_ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rows");

const NS: &str = "email";
const PREPOPULATED: u64 = 10_000;
const BATCH: u64 = 1_000;

/// A ~100-byte record.
fn value(i: u64) -> Vec<u8> {
    let mut v = format!("record {i:012} ").into_bytes();
    v.resize(100, b'.');
    v
}

fn data_root() -> PathBuf {
    if let Some(p) = std::env::var_os("REGIONKV_BENCH_DATA") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-data")
}

/// The single-file design: the row and its index entry in one durable redb commit.
fn plain_unique_insert(db: &redb::Database, rows: &[(Vec<u8>, Vec<u8>, Vec<u8>)]) {
    let txn = db.begin_write().unwrap();
    {
        let mut index = txn.open_table(PLAIN_INDEX).unwrap();
        let mut data = txn.open_table(PLAIN_ROWS).unwrap();
        for (key, email, val) in rows {
            let mut ikey = Vec::with_capacity(NS.len() + 1 + email.len());
            ikey.extend_from_slice(NS.as_bytes());
            ikey.push(0);
            ikey.extend_from_slice(email);
            assert!(index.get(ikey.as_slice()).unwrap().is_none(), "value taken");
            index.insert(ikey.as_slice(), key.as_slice()).unwrap();
            data.insert(key.as_slice(), val.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn plain_key(acct: u64, key: &[u8]) -> Vec<u8> {
    let mut k = acct.to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

fn prepopulate(db: &Db, a: AccountId) {
    let mut i = 0;
    while i < PREPOPULATED {
        let mut w = db.write(a).unwrap();
        for j in i..(i + BATCH).min(PREPOPULATED) {
            let email = format!("pre{j}@example.com");
            w.insert_unique(
                &T,
                format!("pre{j}").as_bytes(),
                &value(j),
                &[Unique::new(NS, &email)],
            )
            .unwrap();
        }
        w.commit().unwrap();
        i += BATCH;
    }
}

fn lookups(c: &mut Criterion, db: &Db, a: AccountId, b: AccountId, plain: &redb::Database) {
    let hits: Vec<String> = (0..PREPOPULATED)
        .map(|j| format!("pre{j}@example.com"))
        .collect();
    let misses: Vec<String> = (0..PREPOPULATED)
        .map(|j| format!("absent{j}@example.com"))
        .collect();
    let n = hits.len();

    let hit = db.find_unique(&T, NS, &hits[7]).unwrap().unwrap();
    assert_eq!(hit.account(), a);
    assert!(db.find_unique(&T, NS, &misses[7]).unwrap().is_none());

    let mut g = c.benchmark_group("lookup");
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut i = 0usize;
    g.bench_function("find_unique_hit", |bch| {
        bch.iter(|| {
            i += 1;
            let h = db.find_unique(&T, NS, &hits[i % n]).unwrap().unwrap();
            black_box(h.record().len())
        })
    });
    let view = db.view().unwrap();
    g.bench_function("view_find_unique_hit", |bch| {
        bch.iter(|| {
            i += 1;
            let h = view.find_unique(&T, NS, &hits[i % n]).unwrap().unwrap();
            black_box(h.record().len())
        })
    });
    let snapshot = plain.begin_read().unwrap();
    let index = snapshot.open_table(PLAIN_INDEX).unwrap();
    let rows = snapshot.open_table(PLAIN_ROWS).unwrap();
    g.bench_function("redb_shared_snapshot_hit", |bch| {
        bch.iter(|| {
            i += 1;
            let mut ikey = Vec::with_capacity(64);
            ikey.extend_from_slice(NS.as_bytes());
            ikey.push(0);
            ikey.extend_from_slice(hits[i % n].as_bytes());
            let key = index.get(ikey.as_slice()).unwrap().unwrap();
            let row = rows.get(key.value()).unwrap().unwrap();
            black_box(row.value().len())
        })
    });
    g.bench_function("find_unique_miss", |bch| {
        bch.iter(|| {
            i += 1;
            black_box(db.find_unique(&T, NS, &misses[i % n]).unwrap().is_none())
        })
    });
    g.bench_function("is_taken_hit", |bch| {
        bch.iter(|| {
            i += 1;
            black_box(db.is_taken(NS, &hits[i % n]).unwrap())
        })
    });
    g.bench_function("is_taken_miss", |bch| {
        bch.iter(|| {
            i += 1;
            black_box(db.is_taken(NS, &misses[i % n]).unwrap())
        })
    });
    // Account b claims a value account a owns: rejected at Reserve, before the region
    // commit, so no fsync (the region write txn is opened and rolled back).
    let rec = value(0);
    g.bench_function("duplicate_rejected", |bch| {
        bch.iter(|| {
            i += 1;
            let mut w = db.write(b).unwrap();
            w.insert_unique(&T, b"dup", &rec, &[Unique::new(NS, &hits[i % n])])
                .unwrap();
            match w.commit() {
                Err(Error::UniqueViolation { .. }) => {}
                other => panic!("expected UniqueViolation, got {other:?}"),
            }
        })
    });
    g.finish();
}

fn durable(c: &mut Criterion, db: &Db, a: AccountId, plain: &redb::Database) {
    let rec = value(1);
    let mut g = c.benchmark_group("durable_insert");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let mut n = 0u64;
    g.bench_function("regionkv_unique", |bch| {
        bch.iter(|| {
            n += 1;
            let email = format!("u{n}@example.com");
            let mut w = db.write(a).unwrap();
            w.insert_unique(
                &T,
                format!("u{n}").as_bytes(),
                &rec,
                &[Unique::new(NS, &email)],
            )
            .unwrap();
            w.commit().unwrap();
        })
    });
    g.bench_function("regionkv_plain", |bch| {
        bch.iter(|| {
            n += 1;
            let mut w = db.write(a).unwrap();
            w.insert(&T, format!("p{n}").as_bytes(), &rec).unwrap();
            w.commit().unwrap();
        })
    });
    g.bench_function("redb_single_file_unique", |bch| {
        bch.iter(|| {
            n += 1;
            let row = (
                plain_key(a.get(), format!("u{n}").as_bytes()),
                format!("u{n}@example.com").into_bytes(),
                rec.clone(),
            );
            plain_unique_insert(plain, std::slice::from_ref(&row));
        })
    });
    g.finish();
}

fn batched(c: &mut Criterion, db: &Db, a: AccountId, plain: &redb::Database) {
    let mut g = c.benchmark_group("batch_1000_unique");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(BATCH));
    let mut n = 0u64;
    g.bench_function("regionkv", |bch| {
        bch.iter(|| {
            let mut w = db.write(a).unwrap();
            for _ in 0..BATCH {
                n += 1;
                let email = format!("b{n}@example.com");
                w.insert_unique(
                    &T,
                    format!("b{n}").as_bytes(),
                    &value(n),
                    &[Unique::new(NS, &email)],
                )
                .unwrap();
            }
            w.commit().unwrap();
        })
    });
    g.bench_function("redb_single_file", |bch| {
        bch.iter(|| {
            let rows: Vec<_> = (0..BATCH)
                .map(|_| {
                    n += 1;
                    (
                        plain_key(a.get(), format!("b{n}").as_bytes()),
                        format!("b{n}@example.com").into_bytes(),
                        value(n),
                    )
                })
                .collect();
            plain_unique_insert(plain, &rows);
        })
    });
    g.finish();
}

/// The three durable inserts interleaved, one of each per round, so that disk latency
/// spikes from other work on the machine hit all three alike: printed as medians and the
/// median ratio (a cross-check of the criterion figures, which run one after the other).
fn interleaved(db: &Db, a: AccountId, plain: &redb::Database) {
    const ROUNDS: usize = 400;
    let rec = value(2);
    let mut t = [Vec::new(), Vec::new(), Vec::new()];
    for n in 0..ROUNDS {
        let start = Instant::now();
        let email = format!("i{n}@example.com");
        let mut w = db.write(a).unwrap();
        w.insert_unique(
            &T,
            format!("i{n}").as_bytes(),
            &rec,
            &[Unique::new(NS, &email)],
        )
        .unwrap();
        w.commit().unwrap();
        t[0].push(start.elapsed());

        let start = Instant::now();
        let row = (
            plain_key(a.get(), format!("i{n}").as_bytes()),
            email.into_bytes(),
            rec.clone(),
        );
        plain_unique_insert(plain, std::slice::from_ref(&row));
        t[1].push(start.elapsed());

        let start = Instant::now();
        let mut w = db.write(a).unwrap();
        w.insert(&T, format!("ip{n}").as_bytes(), &rec).unwrap();
        w.commit().unwrap();
        t[2].push(start.elapsed());
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() - 1) * p / 100].as_secs_f64() * 1e6
    };
    let names = [
        "regionkv_unique",
        "redb_single_file_unique",
        "regionkv_plain",
    ];
    let mut med = [0.0; 3];
    for (i, v) in t.iter_mut().enumerate() {
        med[i] = pct(v, 50);
        eprintln!(
            "interleaved {:<24} p10 {:>7.0} us  median {:>7.0} us  p90 {:>7.0} us",
            names[i],
            pct(v, 10),
            med[i],
            pct(v, 90)
        );
    }
    eprintln!(
        "interleaved median ratio regionkv_unique / redb_single_file_unique = {:.2}",
        med[0] / med[1]
    );
}

fn benches(c: &mut Criterion) {
    let root = data_root();
    std::fs::create_dir_all(&root).expect("bench data dir");
    let tmp = tempfile::tempdir_in(&root).expect("tempdir");
    let db = Db::builder()
        .region("us")
        .open(tmp.path().join("kv"))
        .expect("open");
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    let plain = redb::Database::create(tmp.path().join("plain.redb")).expect("plain redb");
    prepopulate(&db, a);
    let pre: Vec<_> = (0..PREPOPULATED)
        .map(|j| {
            (
                plain_key(a.get(), format!("pre{j}").as_bytes()),
                format!("pre{j}@example.com").into_bytes(),
                value(j),
            )
        })
        .collect();
    plain_unique_insert(&plain, &pre);

    lookups(c, &db, a, b, &plain);
    durable(c, &db, a, &plain);
    batched(c, &db, a, &plain);
    interleaved(&db, a, &plain);

    let stats = db.stats();
    eprintln!(
        "epoch {}, txns live {}, since checkpoint {}",
        stats.epoch, stats.txns_live, stats.txns_since_checkpoint
    );
    db.close().expect("close");
}

criterion_group!(unique, benches);
criterion_main!(unique);
