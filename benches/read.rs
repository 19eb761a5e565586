//! Read path benchmarks, on 1,000,000 records of ~100 bytes in one region.
//!
//! - `raw_redb_get/{hot,random}`: a get on an already-open redb `ReadOnlyTable` holding the
//!   same stored bytes under the same 16-byte keys (`account BE ++ key`), touching only the
//!   value length. The floor.
//! - `regionkv_get_validated/{hot,random}`: `Read::get` on a `Table<Rec>` from one `Read`
//!   snapshot, reading one field of the archived record (CRC + rkyv validation included).
//! - `raw_redb_get_decode_value/{hot,random}`: the floor plus `regionkv::decode_value` on
//!   the slice (CRC + validation, no regionkv plumbing): (b) minus this is the cost of
//!   `Read` itself (snapshot and table lookup, key building, guard).
//! - `unchecked/*`: regionkv has no public unchecked get. `record_deref` is what a held
//!   `Record` costs per field access (unchecked rkyv access of bytes validated once);
//!   `record_validated` re-validates it; `decode_value` / `crc32_payload` /
//!   `rkyv_access_validated` take the validation apart on a fixed buffer.
//! - `account_routing`: `Db::account(id)`, served from the in-memory routing cache.
//! - `read_and_get/hot`: `db.read(acct)` + one `get` per op (a fresh snapshot per request).
//!
//! Hot = 64 keys cycled; random = a precomputed xorshift sequence over all 1M keys. Both
//! stores get the same page cache (512 MiB, more than either file), so "random" measures
//! B-tree descent over pages in memory, not disk reads.
//!
//! The data is built once and kept in `<target>/bench-data/read-1m` (override with
//! `REGIONKV_BENCH_DATA`); a `READY` marker lets later runs reuse it. Delete the folder
//! to rebuild.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};
use regionkv::{AccountId, Db, NewAccount, Table};

/// ~100 bytes archived: 8 + 4 + 8 (string header) + 80 (string bytes) = 100, plus the
/// 8-byte envelope: 108 bytes stored.
#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct Rec {
    id: u64,
    seats: u32,
    name: String,
}

const RECS: Table<Rec> = Table::new("recs");
const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

const N: u64 = 1_000_000;
const BATCH: u64 = 50_000;
const HOT: usize = 64;
const SEQ_LEN: usize = 1 << 20;
/// The plain redb file's cache; regionkv's store gets twice this for its two partitions,
/// shared by file size, so its region file (by far the bigger) gets at least as much.
/// Either cache is bigger than its file: both read from memory once warm.
const CACHE_PER_FILE: usize = 512 << 20;
/// Bump when the data set changes, so an old folder is rebuilt.
const DATA_VERSION: &str = "read-1m v1";

fn rec(i: u64) -> Rec {
    let mut name = format!("customer-{i:010}-");
    while name.len() < 80 {
        name.push((b'a' + (name.len() % 26) as u8) as char);
    }
    Rec {
        id: i,
        seats: (i % 1000) as u32,
        name,
    }
}

fn raw_key(acct: AccountId, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&acct.get().to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
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

fn open_db(dir: &Path) -> regionkv::Result<Db> {
    Db::builder()
        .region("us")
        .cache_size(2 * CACHE_PER_FILE)
        .open(dir.join("store"))
}

fn open_raw(dir: &Path, create: bool) -> Result<redb::Database, redb::DatabaseError> {
    let mut b = redb::Database::builder();
    b.set_cache_size(CACHE_PER_FILE);
    if create {
        b.create(dir.join("raw.redb"))
    } else {
        b.open(dir.join("raw.redb"))
    }
}

/// Reuses a complete data set if the marker says so and a sample reads back.
fn try_reuse(dir: &Path) -> Option<(Db, redb::Database, AccountId)> {
    let marker = std::fs::read_to_string(dir.join("READY")).ok()?;
    let mut lines = marker.lines();
    if lines.next()? != DATA_VERSION {
        return None;
    }
    let acct = AccountId::from_raw(lines.next()?.parse().ok()?);
    let db = open_db(dir).ok()?;
    let raw = open_raw(dir, false).ok()?;
    let probe = N - 1;
    let ok = db
        .read(acct)
        .ok()?
        .get(&RECS, probe.to_be_bytes())
        .ok()??
        .id
        .to_native()
        == probe;
    let raw_ok = raw
        .begin_read()
        .ok()?
        .open_table(RAW)
        .ok()?
        .get(raw_key(acct, probe).as_slice())
        .ok()?
        .is_some();
    (ok && raw_ok).then_some((db, raw, acct))
}

fn build(dir: &Path) -> (Db, redb::Database, AccountId) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create bench data dir");
    let t0 = Instant::now();
    let db = open_db(dir).expect("open regionkv");
    let acct = db
        .create_account(NewAccount::new("bench", "us"))
        .expect("create account");
    let raw = open_raw(dir, true).expect("create plain redb");
    let mut start = 0;
    while start < N {
        let end = (start + BATCH).min(N);
        let mut w = db.write(acct).expect("write");
        let txn = raw.begin_write().expect("raw write");
        {
            let mut t = txn.open_table(RAW).expect("raw table");
            for i in start..end {
                let r = rec(i);
                let bytes = regionkv::encode_value::<Rec>(
                    &RECS,
                    regionkv::AccountId::from_raw(0),
                    b"bench",
                    &r,
                )
                .expect("encode");
                t.insert(raw_key(acct, i).as_slice(), bytes.as_slice())
                    .expect("raw insert");
                w.insert(&RECS, i.to_be_bytes(), &r).expect("insert");
            }
        }
        txn.commit().expect("raw commit");
        w.commit().expect("commit");
        start = end;
    }
    std::fs::write(
        dir.join("READY"),
        format!("{DATA_VERSION}\n{}\n", acct.get()),
    )
    .expect("write marker");
    eprintln!(
        "built {N} records in regionkv and plain redb in {:.1?} ({})",
        t0.elapsed(),
        dir.display()
    );
    (db, raw, acct)
}

fn setup() -> (Db, redb::Database, AccountId) {
    let dir = data_root().join("read-1m");
    match try_reuse(&dir) {
        Some(s) => {
            eprintln!("reusing bench data in {}", dir.display());
            s
        }
        None => build(&dir),
    }
}

/// Indices: 64 hot keys spread over the key space, and a random sequence over all keys.
fn key_sets() -> (Vec<u64>, Vec<u64>) {
    let mut x = XorShift(0x9E37_79B9_7F4A_7C15);
    let hot = (0..HOT).map(|_| x.next() % N).collect();
    let random = (0..SEQ_LEN).map(|_| x.next() % N).collect();
    (hot, random)
}

fn benches(c: &mut Criterion) {
    let (db, raw, acct) = setup();
    let (hot, random) = key_sets();
    let sets: [(&str, Vec<u64>); 2] = [("hot", hot), ("random", random)];

    let raw_txn = raw.begin_read().expect("raw read");
    let raw_t = raw_txn.open_table(RAW).expect("raw table");
    let r = db.read(acct).expect("read");

    // (a) the floor: redb get, touch the length.
    {
        let mut g = c.benchmark_group("raw_redb_get");
        for (name, idx) in &sets {
            let keys: Vec<[u8; 16]> = idx.iter().map(|&i| raw_key(acct, i)).collect();
            let mask = keys.len() - 1;
            let mut n = 0usize;
            g.bench_function(*name, |b| {
                b.iter(|| {
                    let k = &keys[n & mask];
                    n = n.wrapping_add(1);
                    let v = raw_t.get(black_box(k.as_slice())).unwrap().unwrap();
                    black_box(v.value().len())
                })
            });
        }
        g.finish();
    }

    // (b) Read::get with CRC + validation, one field of the archived record.
    {
        let mut g = c.benchmark_group("regionkv_get_validated");
        for (name, idx) in &sets {
            let keys: Vec<[u8; 8]> = idx.iter().map(|&i| i.to_be_bytes()).collect();
            let mask = keys.len() - 1;
            let mut n = 0usize;
            g.bench_function(*name, |b| {
                b.iter(|| {
                    let k = &keys[n & mask];
                    n = n.wrapping_add(1);
                    let rec = r.get(&RECS, black_box(k.as_slice())).unwrap().unwrap();
                    black_box(rec.seats.to_native())
                })
            });
        }
        g.finish();
    }

    // Diagnostic: (a) + decode_value on the slice (validation without regionkv's Read).
    {
        let mut g = c.benchmark_group("raw_redb_get_decode_value");
        for (name, idx) in &sets {
            let keys: Vec<[u8; 16]> = idx.iter().map(|&i| raw_key(acct, i)).collect();
            let mask = keys.len() - 1;
            let mut n = 0usize;
            g.bench_function(*name, |b| {
                b.iter(|| {
                    let k = &keys[n & mask];
                    n = n.wrapping_add(1);
                    let v = raw_t.get(black_box(k.as_slice())).unwrap().unwrap();
                    let rec = regionkv::decode_value::<Rec>(
                        &RECS,
                        regionkv::AccountId::from_raw(0),
                        b"bench",
                        v.value(),
                    )
                    .unwrap();
                    black_box(rec.seats.to_native())
                })
            });
        }
        g.finish();
    }

    // (c) The unchecked path and the parts of validation, on one record.
    {
        let mut g = c.benchmark_group("unchecked");
        let key = 123_456u64.to_be_bytes();
        let held = r.get(&RECS, key).unwrap().unwrap();
        g.bench_function("record_deref", |b| {
            b.iter(|| black_box(black_box(&held).seats.to_native()))
        });
        g.bench_function("record_validated", |b| {
            b.iter(|| black_box(black_box(&held).validated().unwrap().seats.to_native()))
        });
        let buf = regionkv::encode_value::<Rec>(
            &RECS,
            regionkv::AccountId::from_raw(0),
            b"bench",
            &rec(123_456),
        )
        .unwrap();
        g.bench_function("decode_value", |b| {
            b.iter(|| {
                let v = regionkv::decode_value::<Rec>(
                    &RECS,
                    regionkv::AccountId::from_raw(0),
                    b"bench",
                    black_box(&buf),
                )
                .unwrap();
                black_box(v.seats.to_native())
            })
        });
        // The envelope header is 8 bytes; the payload is the rkyv archive.
        let payload = &buf[8..];
        g.bench_function("crc32_payload", |b| {
            b.iter(|| black_box(crc32fast::hash(black_box(payload))))
        });
        g.bench_function("rkyv_access_validated", |b| {
            b.iter(|| {
                let v = regionkv::rkyv::access::<ArchivedRec, regionkv::rkyv::rancor::Error>(
                    black_box(payload),
                )
                .unwrap();
                black_box(v.seats.to_native())
            })
        });
        // The error type regionkv validates with (`BoxedError`, for messages that say why).
        g.bench_function("rkyv_access_validated_boxed_error", |b| {
            b.iter(|| {
                let v = regionkv::rkyv::access::<ArchivedRec, regionkv::rkyv::rancor::BoxedError>(
                    black_box(payload),
                )
                .unwrap();
                black_box(v.seats.to_native())
            })
        });
        g.finish();
    }

    // (d) Routing from the in-memory cache.
    c.bench_function("account_routing", |b| {
        b.iter(|| black_box(db.account(black_box(acct)).unwrap()))
    });

    // A fresh snapshot per request: db.read + get (begin_read, open_table, get, validate).
    {
        let mut g = c.benchmark_group("read_and_get");
        let keys: Vec<[u8; 8]> = sets[0].1.iter().map(|&i| i.to_be_bytes()).collect();
        let mask = keys.len() - 1;
        let mut n = 0usize;
        g.bench_function("hot", |b| {
            b.iter(|| {
                let k = &keys[n & mask];
                n = n.wrapping_add(1);
                let r = db.read(black_box(acct)).unwrap();
                let rec = r.get(&RECS, black_box(k.as_slice())).unwrap().unwrap();
                black_box(rec.seats.to_native())
            })
        });
        g.finish();
    }

    interleaved(&raw_t, &r, acct, &sets);

    drop(r);
    drop(raw_t);
    drop(raw_txn);
}

/// (a) and (b) interleaved in blocks of 20,000 gets, over the same keys, so that load from
/// other work on the machine hits both alike: prints the median ns/op of each and the
/// median of the per-block ratios (a cross-check of the criterion figures, which run one
/// after the other).
fn interleaved(
    raw_t: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    r: &regionkv::Read,
    acct: AccountId,
    sets: &[(&str, Vec<u64>)],
) {
    const BLOCKS: usize = 40;
    const PER_BLOCK: usize = 20_000;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (name, idx) in sets {
        let raw_keys: Vec<[u8; 16]> = idx.iter().map(|&i| raw_key(acct, i)).collect();
        let keys: Vec<[u8; 8]> = idx.iter().map(|&i| i.to_be_bytes()).collect();
        let mask = keys.len() - 1;
        let (mut ta, mut tb, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        let mut n = 0usize;
        for _ in 0..BLOCKS {
            let start = Instant::now();
            for j in n..n + PER_BLOCK {
                let v = raw_t
                    .get(black_box(raw_keys[j & mask].as_slice()))
                    .unwrap()
                    .unwrap();
                black_box(v.value().len());
            }
            let a = start.elapsed().as_nanos() as f64 / PER_BLOCK as f64;
            let start = Instant::now();
            for j in n..n + PER_BLOCK {
                let rec = r
                    .get(&RECS, black_box(keys[j & mask].as_slice()))
                    .unwrap()
                    .unwrap();
                black_box(rec.seats.to_native());
            }
            let b = start.elapsed().as_nanos() as f64 / PER_BLOCK as f64;
            n += PER_BLOCK;
            ta.push(a);
            tb.push(b);
            ratio.push(b / a);
        }
        eprintln!(
            "interleaved {name:<6}: raw_redb_get median {:.0} ns/op, regionkv_get_validated median {:.0} ns/op, median ratio (b)/(a) {:.2}",
            median(&mut ta),
            median(&mut tb),
            median(&mut ratio)
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = read;
    config = config();
    targets = benches
}
criterion_main!(read);
