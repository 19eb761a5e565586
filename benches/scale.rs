//! How regionkv's costs grow with the size of the store, next to a single-file redb holding
//! the same rows, in one process run. Prints three growth tables:
//!
//! - **records** (100k -> 300k; full: 100k -> 1M -> 10M) in 3 regions, 1,000 accounts, each
//!   record a 100-byte rkyv payload owning one unique value: random `get` with a fresh
//!   `Read` per op, random `find_unique`, one 1,000-record region batch (one fsync), disk
//!   bytes per record after a clean close (and the global file's share), RSS.
//! - **regions** (3 -> 100 -> 1,000): 10,000 accounts spread round-robin, 10 records each:
//!   open time of the cleanly closed store, file descriptors it holds, a fresh `Read` of a
//!   random account plus one `get`, RSS after the open and after the reads, the page-cache
//!   budget per partition.
//! - **accounts** (10k -> 100k; full: 10k -> 100k -> 1M) in 3 regions, one record each:
//!   bulk creation (`Db::create_accounts`, 10,000 per commit), one durable
//!   `create_account` (median), a fresh `Read` + `get` of a random account, routing cache
//!   hits/misses, RSS per account.
//!
//! ```sh
//! cargo bench --bench scale                         # small sizes, a few minutes on 2 cores
//! REGIONKV_SCALE=full cargo bench --bench scale     # 1,000 regions, 1M accounts, 10M records
//! REGIONKV_SCALE_ONLY=regions cargo bench --bench scale   # one table (records|regions|accounts)
//! REGIONKV_SCALE_RECORDS=100000,1000000 cargo bench --bench scale   # other sizes (also
//!                                                   # REGIONKV_SCALE_REGIONS, _ACCOUNTS)
//! ```
//!
//! The redb peer is one file holding the same rows under `account ++ key` plus a unique
//! index `namespace ++ value -> account ++ key`, loaded in big transactions, read with
//! `begin_read` + `open_table` + `get` per op, with a page cache as large as regionkv's
//! whole budget (so it never has less memory than regionkv). Reads of both stores are
//! interleaved op by op over the same random keys, so load spikes of a shared machine hit
//! both alike; the ratio is regionkv / redb for the same run.
//!
//! Files live in a temporary folder under `<target>/bench-data` (override with
//! `REGIONKV_BENCH_DATA`), on the build's disk, never a tmpfs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use redb::{Durability, ReadableDatabase, TableDefinition};
use regionkv::{AccountId, Db, NewAccount, Table};

/// Counts the heap bytes live, so the table can say what an open store holds in memory
/// (RSS alone hides it: freed memory of an earlier store is reused by the allocator).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes live now, in MiB.
fn heap_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1u64 << 20) as f64
}

type Res<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const NS: &str = "license_key";
const PAYLOAD: usize = 100;
/// regionkv's default total page-cache budget (`Builder::cache_size`), given to the peer too.
const CACHE: usize = 256 << 20;

#[derive(regionkv::rkyv::Archive, regionkv::rkyv::Serialize, regionkv::Schema)]
#[rkyv(crate = regionkv::rkyv)]
struct License {
    id: u64,
    seats: u32,
    key: String,
    note: String,
}

const LICENSES: Table<License> =
    Table::<License>::new("licenses").unique(NS, |l| Some(l.key.as_bytes()));

const P_ACCOUNTS: TableDefinition<u64, &[u8]> = TableDefinition::new("accounts");
const P_NAMES: TableDefinition<&str, u64> = TableDefinition::new("account_names");
const P_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const P_UNIQUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("unique_index");

// ---- helpers -----------------------------------------------------------------------------

fn license_key(i: u64) -> String {
    let mix = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    format!("LK-{i:010}-{mix:08X}")
}

/// The note's length that makes the archived record exactly `PAYLOAD` bytes.
fn note_len() -> usize {
    let with = |n: usize| {
        let l = License {
            id: 0,
            seats: 0,
            key: license_key(0),
            note: "n".repeat(n),
        };
        regionkv::rkyv::to_bytes::<regionkv::rkyv::rancor::Error>(&l)
            .map(|b| b.len())
            .unwrap_or(0)
    };
    let base = with(32) - 32;
    PAYLOAD.saturating_sub(base).max(9)
}

fn license(i: u64, note_len: usize) -> License {
    let mut note = format!("tenant licence {i} ");
    note.truncate(note_len);
    while note.len() < note_len {
        note.push('.');
    }
    License {
        id: i,
        seats: (i % 500) as u32,
        key: license_key(i),
        note,
    }
}

fn payload(l: &License) -> Res<Vec<u8>> {
    Ok(regionkv::rkyv::to_bytes::<regionkv::rkyv::rancor::Error>(l)?.into_vec())
}

/// The peer's record key: `account BE ++ record id BE` (regionkv's row key is the same
/// `account ++ key`).
fn peer_key(account: u64, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn peer_unique_key(value: &str) -> Vec<u8> {
    [NS.as_bytes(), &[0], value.as_bytes()].concat()
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(md) = std::fs::metadata(p) else {
        return 0;
    };
    if md.is_file() {
        return md.len();
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_bytes(&e.path())).sum())
        .unwrap_or(0)
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

/// Resident set size of this process, in MiB (`/proc/self/statm`, second field, in pages).
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    (pages * 4096) as f64 / (1u64 << 20) as f64
}

/// Open file descriptors of this process (`/proc/self/fd`).
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 100_000.0 {
        let s = format!("{x:.0}");
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// A growth table: rows of (size, cells), printed as markdown at the end.
struct Grid {
    title: String,
    cols: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Grid {
    fn new(title: impl Into<String>, cols: &[&'static str]) -> Grid {
        Grid {
            title: title.into(),
            cols: cols.to_vec(),
            rows: Vec::new(),
        }
    }
    fn row(&mut self, cells: Vec<String>) {
        eprintln!("  {}", cells.join(" | "));
        self.rows.push(cells);
    }
    fn print(&self) {
        println!("\n{}\n", self.title);
        let w: Vec<usize> = (0..self.cols.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, String::len))
                    .chain([self.cols[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let s: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:>w$}", w = w[i]))
                .collect();
            println!("| {} |", s.join(" | "));
        };
        line(self.cols.clone());
        println!(
            "|{}|",
            w.iter()
                .map(|n| "-".repeat(n + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &self.rows {
            line(r.iter().map(String::as_str).collect());
        }
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

struct Ctx {
    note_len: usize,
    dir: PathBuf,
    full: bool,
}

impl Ctx {
    fn fresh(&self, name: &str) -> Res<PathBuf> {
        let p = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
    fn license(&self, i: u64) -> License {
        license(i, self.note_len)
    }
}

fn region_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i:04}")).collect()
}

fn open_kv(dir: &Path, regions: &[String]) -> regionkv::Result<Db> {
    let mut b = Db::builder().cache_size(CACHE);
    for r in regions {
        b = b.region(r.as_str());
    }
    b.default_region(regions[0].as_str()).open(dir)
}

fn open_peer(path: &Path) -> Res<redb::Database> {
    Ok(redb::Builder::new().set_cache_size(CACHE).create(path)?)
}

fn peer_write(db: &redb::Database) -> Res<redb::WriteTransaction> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// Creates `n` accounts homed round-robin over `regions`, `chunk` per `create_accounts`.
fn create_kv_accounts(db: &Db, regions: &[String], n: u64, from: u64) -> Res<Vec<AccountId>> {
    let mut ids = Vec::with_capacity(n as usize);
    let chunk = 10_000;
    let mut start = from;
    while start < from + n {
        let end = (start + chunk).min(from + n);
        ids.extend(db.create_accounts((start..end).map(|i| {
            NewAccount::new(
                format!("tenant-{i:08}"),
                regions[i as usize % regions.len()].as_str(),
            )
        }))?);
        start = end;
    }
    Ok(ids)
}

fn create_peer_accounts(db: &redb::Database, n: u64, from: u64) -> Res<()> {
    let chunk = 10_000;
    let mut start = from;
    while start < from + n {
        let end = (start + chunk).min(from + n);
        let txn = peer_write(db)?;
        {
            let mut rows = txn.open_table(P_ACCOUNTS)?;
            let mut names = txn.open_table(P_NAMES)?;
            for i in start..end {
                let name = format!("tenant-{i:08}");
                rows.insert(i + 1, name.as_bytes())?;
                names.insert(name.as_str(), i + 1)?;
            }
        }
        txn.commit()?;
        start = end;
    }
    Ok(())
}

/// Loads records `from..to` into regionkv: record `i` belongs to account `owner(i)`; one
/// region batch (`Db::batch_in`, one fsync) per region per `chunk` records.
fn load_kv(
    ctx: &Ctx,
    db: &Db,
    accounts: &[AccountId],
    owner: impl Fn(u64) -> u64,
    from: u64,
    to: u64,
    chunk: u64,
) -> Res<()> {
    let mut start = from;
    while start < to {
        let end = (start + chunk).min(to);
        let mut by_region: BTreeMap<regionkv::RegionId, regionkv::Batch> = BTreeMap::new();
        for i in start..end {
            let id = accounts[owner(i) as usize];
            let home = db.account(id)?.home();
            let batch = match by_region.entry(home) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let name = db.region_name(home).ok_or("region without a name")?;
                    v.insert(db.batch_in(&name)?)
                }
            };
            batch.write(id)?.insert(&LICENSES, i, &ctx.license(i))?;
        }
        for (_, batch) in by_region {
            batch.commit()?;
        }
        start = end;
    }
    Ok(())
}

/// The same rows into the peer, `chunk` per transaction (account `owner(i) + 1`).
fn load_peer(
    ctx: &Ctx,
    db: &redb::Database,
    owner: impl Fn(u64) -> u64,
    from: u64,
    to: u64,
    chunk: u64,
) -> Res<()> {
    let mut start = from;
    while start < to {
        let end = (start + chunk).min(to);
        let txn = peer_write(db)?;
        {
            let mut index = txn.open_table(P_UNIQUE)?;
            let mut records = txn.open_table(P_RECORDS)?;
            for i in start..end {
                let l = ctx.license(i);
                let rk = peer_key(owner(i) + 1, i);
                index.insert(peer_unique_key(&l.key).as_slice(), rk.as_slice())?;
                records.insert(rk.as_slice(), payload(&l)?.as_slice())?;
            }
        }
        txn.commit()?;
        start = end;
    }
    Ok(())
}

fn peer_get(db: &redb::Database, account: u64, i: u64) -> Res<usize> {
    let txn = db.begin_read()?;
    let t = txn.open_table(P_RECORDS)?;
    let v = t
        .get(peer_key(account, i).as_slice())?
        .ok_or("peer: record missing")?;
    Ok(v.value().len())
}

fn peer_find(db: &redb::Database, value: &str) -> Res<usize> {
    let txn = db.begin_read()?;
    let index = txn.open_table(P_UNIQUE)?;
    let rk = index
        .get(peer_unique_key(value).as_slice())?
        .ok_or("peer: value missing")?;
    let records = txn.open_table(P_RECORDS)?;
    let v = records.get(rk.value())?.ok_or("peer: record missing")?;
    Ok(v.value().len())
}

fn kv_get(db: &Db, account: AccountId, i: u64) -> Res<usize> {
    let r = db.read(account)?;
    let rec = r.get(&LICENSES, i)?.ok_or("regionkv: record missing")?;
    Ok(rec.note.len())
}

fn kv_find(db: &Db, value: &str) -> Res<usize> {
    let hit = db
        .find_unique(&LICENSES, NS, value)?
        .ok_or("regionkv: value missing")?;
    Ok(hit.record().note.len())
}

/// Mean µs per op of `kv` and `peer`, interleaved op by op over `ops` random picks (after
/// `ops / 10` warm-up picks each).
fn interleaved(
    ops: usize,
    seed: u64,
    mut kv: impl FnMut(u64) -> Res<usize>,
    mut peer: impl FnMut(u64) -> Res<usize>,
) -> Res<(f64, f64)> {
    let mut x = XorShift(seed | 1);
    for _ in 0..ops / 10 {
        let p = x.next();
        black_box(kv(p)?);
        black_box(peer(p)?);
    }
    let (mut tk, mut tp) = (0f64, 0f64);
    for _ in 0..ops {
        let p = x.next();
        let t = Instant::now();
        black_box(kv(p)?);
        tk += t.elapsed().as_secs_f64();
        let t = Instant::now();
        black_box(peer(p)?);
        tp += t.elapsed().as_secs_f64();
    }
    Ok((tk * 1e6 / ops as f64, tp * 1e6 / ops as f64))
}

// ---- the three tables --------------------------------------------------------------------

const RECORD_ACCOUNTS: u64 = 1_000;

fn records_table(ctx: &Ctx, sizes: &[u64], ops: usize) -> Res<Grid> {
    let mut g = Grid::new(
        "Records (3 regions, 1,000 accounts, 100-byte records with one unique value each; \
         get and find_unique: µs/op, a fresh snapshot per op, random over all records; \
         commit: one 1,000-record region batch vs one redb transaction, ms, median of 5; \
         disk: bytes per record after a clean close, the global file's share in brackets; \
         heap and RSS with both stores open)",
        &[
            "records",
            "get kv",
            "get redb",
            "ratio",
            "find_unique kv",
            "find redb",
            "ratio",
            "commit kv",
            "commit redb",
            "ratio",
            "disk B/rec kv",
            "(global)",
            "disk redb",
            "ratio",
            "heap MiB",
            "RSS MiB",
        ],
    );
    let regions = region_names(3);
    let owner = |i: u64| i % RECORD_ACCOUNTS;
    for &n in sizes {
        eprintln!("records: {n}");
        let dir = ctx.fresh("records")?;
        let kv_dir = dir.join("regionkv");
        let peer_path = dir.join("peer.redb");
        let t = Instant::now();
        let db = open_kv(&kv_dir, &regions)?;
        let accounts = create_kv_accounts(&db, &regions, RECORD_ACCOUNTS, 0)?;
        load_kv(ctx, &db, &accounts, owner, 0, n, 15_000)?;
        let kv_load = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let peer = open_peer(&peer_path)?;
        create_peer_accounts(&peer, RECORD_ACCOUNTS, 0)?;
        load_peer(ctx, &peer, owner, 0, n, 100_000)?;
        let peer_load = t.elapsed().as_secs_f64();
        eprintln!("  loaded: regionkv {kv_load:.1} s, redb {peer_load:.1} s");

        let (get_kv, get_peer) = interleaved(
            ops,
            n,
            |p| kv_get(&db, accounts[owner(p % n) as usize], p % n),
            |p| peer_get(&peer, owner(p % n) + 1, p % n),
        )?;
        let (find_kv, find_peer) = interleaved(
            ops,
            n ^ 0x5555,
            |p| kv_find(&db, &license_key(p % n)),
            |p| peer_find(&peer, &license_key(p % n)),
        )?;
        // One 1,000-record commit at this size, into the first region.
        let (mut ck, mut cp) = (Vec::new(), Vec::new());
        let in_first: Vec<u64> = (0..RECORD_ACCOUNTS).step_by(3).collect();
        for round in 0..5u64 {
            let base = n + round * 1_000;
            let t = Instant::now();
            let mut batch = db.batch_in(&regions[0])?;
            for j in 0..1_000u64 {
                let a = in_first[j as usize % in_first.len()];
                batch.write(accounts[a as usize])?.insert(
                    &LICENSES,
                    base + j,
                    &ctx.license(base + j),
                )?;
            }
            batch.commit()?;
            ck.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            load_peer(
                ctx,
                &peer,
                |i| in_first[(i - base) as usize % in_first.len()],
                base,
                base + 1_000,
                1_000,
            )?;
            cp.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (commit_kv, commit_peer) = (median(&mut ck), median(&mut cp));
        let (rss, heap) = (rss_mib(), heap_mib());
        db.close()?;
        drop(peer);
        let total = n + 5_000;
        let kv_bytes = dir_bytes(&kv_dir) as f64 / total as f64;
        let global =
            std::fs::metadata(regionkv::layout::global_file(&kv_dir))?.len() as f64 / total as f64;
        let peer_bytes = dir_bytes(&peer_path) as f64 / total as f64;
        g.row(vec![
            count(n),
            fmt(get_kv),
            fmt(get_peer),
            ratio(get_kv, get_peer),
            fmt(find_kv),
            fmt(find_peer),
            ratio(find_kv, find_peer),
            fmt(commit_kv),
            fmt(commit_peer),
            ratio(commit_kv, commit_peer),
            fmt(kv_bytes),
            fmt(global),
            fmt(peer_bytes),
            ratio(kv_bytes, peer_bytes),
            fmt(heap),
            fmt(rss),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(g)
}

const REGION_ACCOUNTS: u64 = 10_000;
const PER_ACCOUNT: u64 = 10;

fn regions_table(ctx: &Ctx, sizes: &[usize], ops: usize) -> Res<Grid> {
    let mut g = Grid::new(
        "Regions (10,000 accounts round-robin over the regions, 10 records each; open of the \
         cleanly closed store, ms, median of 3; fds: descriptors the open store holds; read: \
         a fresh Read of a random account + one get, µs/op, after every record was read once \
         (steady state), vs redb begin_read + get on one file with the same rows; the ratio \
         divided by the first row's, so machine load between rows cancels; heap: bytes the open store holds (counted by the bench's \
         allocator) right after the open and after the reads; RSS: the process; cache: the \
         total budget over the partitions)",
        &[
            "regions",
            "open ms",
            "fds",
            "fds/region",
            "read kv",
            "read redb",
            "ratio",
            "ratio / ratio at first",
            "heap open MiB",
            "heap read MiB",
            "KiB/region",
            "RSS MiB",
            "cache/partition MiB",
        ],
    );
    let total = REGION_ACCOUNTS * PER_ACCOUNT;
    let owner = |i: u64| i % REGION_ACCOUNTS;
    let dir = ctx.fresh("regions")?;
    let peer_path = dir.join("peer.redb");
    let peer = open_peer(&peer_path)?;
    create_peer_accounts(&peer, REGION_ACCOUNTS, 0)?;
    load_peer(ctx, &peer, owner, 0, total, 100_000)?;
    let mut first = None;
    for &r in sizes {
        eprintln!("regions: {r}");
        let regions = region_names(r);
        let kv_dir = dir.join(format!("regionkv-{r}"));
        let accounts = {
            let db = open_kv(&kv_dir, &regions)?;
            let accounts = create_kv_accounts(&db, &regions, REGION_ACCOUNTS, 0)?;
            load_kv(ctx, &db, &accounts, owner, 0, total, 20_000)?;
            db.close()?;
            accounts
        };
        let mut opens = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let db = open_kv(&kv_dir, &regions)?;
            opens.push(t.elapsed().as_secs_f64() * 1e3);
            db.close()?;
        }
        let (fd0, heap0) = (fds(), heap_mib());
        let t = Instant::now();
        let db = open_kv(&kv_dir, &regions)?;
        opens.push(t.elapsed().as_secs_f64() * 1e3);
        let (fd1, heap1) = (fds(), heap_mib());
        // Steady state: every account routed and every page read once, on both stores (a
        // cold first touch of each region file is the open's cost, not the read's).
        for i in 0..total {
            black_box(kv_get(&db, accounts[owner(i) as usize], i)?);
            black_box(peer_get(&peer, owner(i) + 1, i)?);
        }
        let (read_kv, read_peer) = interleaved(
            ops,
            r as u64,
            |p| kv_get(&db, accounts[owner(p % total) as usize], p % total),
            |p| peer_get(&peer, owner(p % total) + 1, p % total),
        )?;
        let heap2 = heap_mib();
        let base = *first.get_or_insert(read_kv / read_peer);
        let delta = fd1.saturating_sub(fd0);
        g.row(vec![
            r.to_string(),
            fmt(median(&mut opens)),
            delta.to_string(),
            format!("{:.2}", delta as f64 / r as f64),
            fmt(read_kv),
            fmt(read_peer),
            ratio(read_kv, read_peer),
            format!("{:.2}", read_kv / read_peer / base),
            fmt(heap1 - heap0),
            fmt(heap2 - heap0),
            fmt((heap2 - heap0) * 1024.0 / r as f64),
            fmt(rss_mib()),
            format!(
                "{:.2} ({} MiB / {})",
                (CACHE / (r + 1)).max(1 << 20) as f64 / (1u64 << 20) as f64,
                CACHE >> 20,
                r + 1
            ),
        ]);
        db.close()?;
        let _ = std::fs::remove_dir_all(&kv_dir);
    }
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(g)
}

fn accounts_table(ctx: &Ctx, sizes: &[u64], ops: usize) -> Res<Grid> {
    let mut g = Grid::new(
        "Accounts (3 regions, one record each; bulk: create_accounts, 10,000 per commit, \
         µs/account; one: a durable create_account at that size, µs, median of 50; read: a \
         fresh Read of a random account + one get, µs/op; routing: cache hit rate of those \
         reads (default 16 MiB budget) and its bytes per cached account; heap: bytes both open \
         stores hold after the reads (regionkv's caches and redb's page caches); RSS: the process)",
        &[
            "accounts",
            "bulk kv",
            "bulk redb",
            "ratio",
            "one kv",
            "one redb",
            "ratio",
            "read kv",
            "read redb",
            "ratio",
            "routing hits",
            "heap MiB",
            "routing B/account",
            "RSS MiB",
        ],
    );
    let regions = region_names(3);
    for &n in sizes {
        eprintln!("accounts: {n}");
        let dir = ctx.fresh("accounts")?;
        let kv_dir = dir.join("regionkv");
        let heap0 = heap_mib();
        let db = open_kv(&kv_dir, &regions)?;
        let peer = open_peer(&dir.join("peer.redb"))?;
        let t = Instant::now();
        let accounts = create_kv_accounts(&db, &regions, n, 0)?;
        let bulk_kv = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        let t = Instant::now();
        create_peer_accounts(&peer, n, 0)?;
        let bulk_peer = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        load_kv(ctx, &db, &accounts, |i| i, 0, n, 30_000)?;
        load_peer(ctx, &peer, |i| i, 0, n, 100_000)?;
        let (mut ok, mut op) = (Vec::new(), Vec::new());
        for j in 0..50u64 {
            let i = n + j;
            let t = Instant::now();
            db.create_account(NewAccount::new(
                format!("tenant-{i:08}"),
                regions[i as usize % 3].as_str(),
            ))?;
            ok.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            create_peer_accounts(&peer, 1, i)?;
            op.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let before = db.stats();
        let (read_kv, read_peer) = interleaved(
            ops,
            n,
            |p| kv_get(&db, accounts[(p % n) as usize], p % n),
            |p| peer_get(&peer, p % n + 1, p % n),
        )?;
        let after = db.stats();
        let hits = after.routing_cache_hits - before.routing_cache_hits;
        let misses = after.routing_cache_misses - before.routing_cache_misses;
        // Both stores are open: the peer's share is its page cache and a few handles.
        let heap = heap_mib() - heap0;
        g.row(vec![
            count(n),
            fmt(bulk_kv),
            fmt(bulk_peer),
            ratio(bulk_kv, bulk_peer),
            fmt(median(&mut ok)),
            fmt(median(&mut op)),
            ratio(median(&mut ok), median(&mut op)),
            fmt(read_kv),
            fmt(read_peer),
            ratio(read_kv, read_peer),
            format!(
                "{:.0}% ({} entries)",
                100.0 * hits as f64 / (hits + misses).max(1) as f64,
                after.routing_cache_entries
            ),
            fmt(heap),
            fmt(after.routing_cache_bytes as f64 / after.routing_cache_entries.max(1) as f64),
            fmt(rss_mib()),
        ]);
        db.close()?;
        drop(peer);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(g)
}

/// A comma-separated list of sizes from the environment (`_` allowed as a separator).
fn env_list(name: &str) -> Option<Vec<u64>> {
    let v = std::env::var(name).ok()?;
    v.split(',')
        .map(|x| x.trim().replace('_', "").parse().ok())
        .collect()
}

// ---- the run -----------------------------------------------------------------------------

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: then only say so.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/scale: run with `cargo bench --bench scale`");
        return Ok(());
    }
    let full = std::env::var("REGIONKV_SCALE").is_ok_and(|v| v == "full");
    let only = std::env::var("REGIONKV_SCALE_ONLY").ok();
    let want = |t: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == t));
    let root = data_root();
    std::fs::create_dir_all(&root)?;
    let tmp = tempfile::tempdir_in(&root)?;
    let ctx = Ctx {
        note_len: note_len(),
        dir: tmp.path().to_path_buf(),
        full,
    };
    let ops = env_list("REGIONKV_SCALE_OPS")
        .and_then(|v| v.first().copied())
        .map_or(if ctx.full { 50_000 } else { 20_000 }, |n| n as usize);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let header = format!(
        "regionkv scale ({}; {cores} cores; data in {}); cache budget {} MiB (regionkv total, \
         and the redb peer's); ratio = regionkv / single-file redb, same run",
        if ctx.full {
            "REGIONKV_SCALE=full"
        } else {
            "default sizes; REGIONKV_SCALE=full for the large ones"
        },
        root.display(),
        CACHE >> 20
    );
    eprintln!("{header}");
    let mut grids = Vec::new();
    if want("regions") {
        let sizes = env_list("REGIONKV_SCALE_REGIONS").unwrap_or(vec![3, 100, 1_000]);
        let sizes: Vec<usize> = sizes.into_iter().map(|n| n as usize).collect();
        grids.push(regions_table(&ctx, &sizes, ops)?);
    }
    if want("accounts") {
        let sizes = env_list("REGIONKV_SCALE_ACCOUNTS").unwrap_or(if ctx.full {
            vec![10_000, 100_000, 1_000_000]
        } else {
            vec![10_000, 100_000]
        });
        grids.push(accounts_table(&ctx, &sizes, ops)?);
    }
    if want("records") {
        let sizes = env_list("REGIONKV_SCALE_RECORDS").unwrap_or(if ctx.full {
            vec![100_000, 1_000_000, 10_000_000]
        } else {
            vec![100_000, 300_000]
        });
        grids.push(records_table(&ctx, &sizes, ops)?);
    }
    println!("{header}");
    for g in &grids {
        g.print();
    }
    Ok(())
}
