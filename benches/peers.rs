//! regionkv against its peers on one workload, in one process run: a single-file redb
//! (the `redb` crate regionkv is built on), SQLite (`rusqlite`, bundled; WAL,
//! `synchronous=FULL`) and, for the batched load and the durable unique inserts, fjall 3
//! (an LSM tree; `OptimisticTxDatabase`, each transaction `PersistMode::SyncData`). Prints
//! one table: each operation's figure on every store and the ratio regionkv/peer (see the
//! unit column for which way is better).
//!
//! ```sh
//! cargo bench --bench peers                          # A = 1,000 accounts, R = 20,000 records
//! REGIONKV_PEERS_FULL=1 cargo bench --bench peers    # A = 10,000, R = 300,000
//! REGIONKV_PEERS_ACCOUNTS=2000 REGIONKV_PEERS_RECORDS=50000 cargo bench --bench peers
//! ```
//!
//! Workload: A accounts, homes round-robin over 3 regions (regionkv: `us`, `eu`, `ap`, one
//! file each; the peers keep everything in one file); R records of a 120-byte rkyv payload
//! (`License`), each owning one unique value (its license key), record `i` belonging to
//! account `i % A`. Every commit is durable: regionkv's own (one fsync per write), redb
//! `Durability::Immediate`, SQLite WAL with `synchronous=FULL`. The peers store the same
//! 120-byte payload under `account ++ key` and a unique-index row `license_key ++ value ->
//! record key` (redb: a get that must miss, then two inserts; SQLite: a `PRIMARY KEY (ns,
//! value)` table that refuses a duplicate), so they pay for uniqueness in the same commit
//! as the record. What they do not do: keep regions in separate files, check a CRC bound to
//! the row, validate the archive, keep per-account usage or the recovery markers regionkv
//! writes. Reads on the peers touch the bytes without validating them.
//!
//! Operations (in this order, on each store):
//! - create A accounts: regionkv `Db::create_accounts` (one synced commit); peers one
//!   transaction inserting the account rows and the name index.
//! - batched load of R records, 1,000 per batch across accounts: regionkv one region
//!   batch (`Db::batch_in`, all or none, one fsync) per region per 1,000 records
//!   ([`load_regionkv`]); peers one transaction per 1,000 rows.
//! - durable unique insert, 1 writer: the three stores interleaved, one op each per round
//!   (load spikes hit all alike); median.
//! - the same with 1, 2, 4, 8 and 32 writer threads, thread `t` writing accounts homed in
//!   region `t % 3` (peers: the same threads on their one file; SQLite one connection per
//!   thread, `BEGIN IMMEDIATE`, busy timeout; fjall one optimistic transaction per insert,
//!   the index key read in it so that two claims of a value conflict, retried on
//!   `Conflict`); ops/s over a fixed time.
//! - duplicate rejected: another account's insert of an owned value (regionkv
//!   `UniqueViolation` at Reserve, before any fsync; redb the index get hits and the
//!   transaction is dropped; SQLite the constraint fails and the transaction rolls back).
//! - point read with a snapshot per op: regionkv `db.read(acct)?.get(&t, key)` (routing,
//!   snapshot, CRC, validation); redb `begin_read` + `open_table` + `get`; SQLite a cached
//!   statement in autocommit.
//! - unique lookup -> record over 64 hot values: regionkv `db.find_unique`; peers the index
//!   row, then the record, a snapshot per op; then with a snapshot kept (regionkv a
//!   `View`, redb one read transaction).
//! - sweep of all records: regionkv `scan_all` (an iterator, one thread), `Db::sweep`
//!   (parallel, default threads) and `Db::sweep` with 1 thread; peers a full range / `SELECT`.
//!   Best of 3. The per-record figures below the table take the check apart.
//! - disk bytes of each store after a clean close; then the open of the cleanly closed
//!   store (median of 3; regionkv with its default page-checksum verification and without).
//!
//! Files live in a temporary folder under `<target>/bench-data` (override with
//! `REGIONKV_BENCH_DATA`), on the build's disk, never a tmpfs.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use regionkv::{AccountId, Db, Error, NewAccount, Table};
use rusqlite::{Connection, params};

type Res<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const NS: &str = "license_key";
const BATCH: u64 = 1_000;
const PAYLOAD: usize = 120;
const THREADS: [usize; 5] = [1, 2, 4, 8, 32];
const HOT: usize = 64;

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

// ---- workload ----------------------------------------------------------------------------

struct Sizes {
    accounts: u64,
    records: u64,
    /// Rounds of the interleaved single-op measurements.
    rounds: usize,
    reads: usize,
    cell: Duration,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()?
        .trim()
        .replace('_', "")
        .parse()
        .ok()
}

fn sizes() -> Sizes {
    let full = std::env::var("REGIONKV_PEERS_FULL").is_ok_and(|v| v == "1");
    let (a, r) = if full {
        (10_000, 300_000)
    } else {
        (1_000, 20_000)
    };
    let accounts = env_u64("REGIONKV_PEERS_ACCOUNTS").unwrap_or(a).max(3);
    let records = env_u64("REGIONKV_PEERS_RECORDS").unwrap_or(r).max(accounts);
    Sizes {
        accounts,
        records,
        rounds: if full { 600 } else { 200 },
        reads: if full { 200_000 } else { 50_000 },
        cell: Duration::from_millis(if full { 3_000 } else { 1_000 }),
    }
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
    // Strings over 8 bytes live out of line: the archive grows by one byte per byte.
    let base = with(32) - 32;
    PAYLOAD.saturating_sub(base).max(9)
}

fn license_key(i: u64) -> String {
    let mix = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    format!("LK-{i:010}-{mix:08X}")
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

/// The peers' record key: `account BE ++ record id BE`.
fn peer_key(account: u64, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&account.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn peer_unique_key(value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(NS.len() + 1 + value.len());
    k.extend_from_slice(NS.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
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

// ---- the stores --------------------------------------------------------------------------

struct Ctx {
    sizes: Sizes,
    note_len: usize,
    dir: PathBuf,
}

impl Ctx {
    fn kv_dir(&self) -> PathBuf {
        self.dir.join("regionkv")
    }
    fn redb_path(&self) -> PathBuf {
        self.dir.join("peer.redb")
    }
    fn sqlite_path(&self) -> PathBuf {
        self.dir.join("peer.sqlite")
    }
    fn fjall_path(&self) -> PathBuf {
        self.dir.join("peer.fjall")
    }
    /// Account index of record `i`.
    fn owner(&self, i: u64) -> u64 {
        i % self.sizes.accounts
    }
    fn license(&self, i: u64) -> License {
        license(i, self.note_len)
    }
}

fn open_kv(ctx: &Ctx, verify: bool) -> regionkv::Result<Db> {
    let mut b = Db::builder().verify_on_open(verify);
    for r in REGIONS {
        b = b.region(r);
    }
    b.open(ctx.kv_dir())
}

fn sqlite_conn(path: &Path) -> Res<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(60))?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("sqlite journal_mode is {mode}, not wal").into());
    }
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

fn sqlite_schema(c: &Connection) -> Res<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, home INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS records (account INTEGER NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (account, key)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS uniques (ns TEXT NOT NULL, value TEXT NOT NULL, account INTEGER NOT NULL, key BLOB NOT NULL, PRIMARY KEY (ns, value)) WITHOUT ROWID;",
    )?;
    Ok(())
}

fn redb_write(db: &redb::Database) -> Res<redb::WriteTransaction> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    Ok(txn)
}

/// One record and its index row in an open redb transaction; `false` if the value is
/// taken (nothing inserted).
fn redb_put(txn: &redb::WriteTransaction, account: u64, i: u64, lk: &str, val: &[u8]) -> Res<bool> {
    let mut index = txn.open_table(P_UNIQUE)?;
    let ik = peer_unique_key(lk);
    if index.get(ik.as_slice())?.is_some() {
        return Ok(false);
    }
    let rk = peer_key(account, i);
    index.insert(ik.as_slice(), rk.as_slice())?;
    let mut records = txn.open_table(P_RECORDS)?;
    records.insert(rk.as_slice(), val)?;
    Ok(true)
}

fn redb_unique_insert(
    db: &redb::Database,
    account: u64,
    i: u64,
    lk: &str,
    val: &[u8],
) -> Res<bool> {
    let txn = redb_write(db)?;
    if !redb_put(&txn, account, i, lk, val)? {
        return Ok(false); // dropped: aborted
    }
    txn.commit()?;
    Ok(true)
}

fn sqlite_put(c: &Connection, account: u64, i: u64, lk: &str, val: &[u8]) -> rusqlite::Result<()> {
    let rk = i.to_be_bytes();
    c.prepare_cached("INSERT INTO uniques (ns, value, account, key) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![NS, lk, account as i64, &rk[..]])?;
    c.prepare_cached("INSERT INTO records (account, key, value) VALUES (?1, ?2, ?3)")?
        .execute(params![account as i64, &rk[..], val])?;
    Ok(())
}

/// One durable unique insert; `Ok(false)` if the value is taken (rolled back).
fn sqlite_unique_insert(c: &Connection, account: u64, i: u64, lk: &str, val: &[u8]) -> Res<bool> {
    c.execute_batch("BEGIN IMMEDIATE")?;
    match sqlite_put(c, account, i, lk, val) {
        Ok(()) => {
            c.execute_batch("COMMIT")?;
            Ok(true)
        }
        Err(e) => {
            c.execute_batch("ROLLBACK")?;
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
                Ok(false)
            } else {
                Err(e.into())
            }
        }
    }
}

/// Loads records `from..to` into regionkv, `BATCH` records per batch (record `i` belongs to
/// account `i % A`). Today's API commits one `Write` per account per batch (each a durable
/// commit in the account's home region); the main engineer switches this to the region
/// batch API (one commit per region per batch). Returns the commits made.
fn load_regionkv(ctx: &Ctx, db: &Db, accounts: &[AccountId], from: u64, to: u64) -> Res<u64> {
    let mut commits = 0;
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        // One region batch per region the chunk's accounts live in: all or none, one
        // fsync each (the peers: one transaction per chunk).
        let mut by_region: BTreeMap<regionkv::RegionId, regionkv::Batch> = BTreeMap::new();
        for i in start..end {
            let id = accounts[ctx.owner(i) as usize];
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
            commits += 1;
        }
        start = end;
    }
    Ok(commits)
}

fn load_redb(ctx: &Ctx, db: &redb::Database, from: u64, to: u64) -> Res<()> {
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        let txn = redb_write(db)?;
        for i in start..end {
            let l = ctx.license(i);
            if !redb_put(&txn, ctx.owner(i) + 1, i, &l.key, &payload(&l)?)? {
                return Err(format!("redb: value of record {i} taken").into());
            }
        }
        txn.commit()?;
        start = end;
    }
    Ok(())
}

fn load_sqlite(ctx: &Ctx, c: &Connection, from: u64, to: u64) -> Res<()> {
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        c.execute_batch("BEGIN IMMEDIATE")?;
        for i in start..end {
            let l = ctx.license(i);
            sqlite_put(c, ctx.owner(i) + 1, i, &l.key, &payload(&l)?)?;
        }
        c.execute_batch("COMMIT")?;
        start = end;
    }
    Ok(())
}

// ---- the report --------------------------------------------------------------------------

// ---- fjall (the load and the durable unique inserts only) -------------------------------

/// The fjall peer: one optimistic-transaction database, a keyspace for the records and
/// one for the unique index (same keys and values as the redb peer).
struct Fjall {
    db: fjall::OptimisticTxDatabase,
    records: fjall::OptimisticTxKeyspace,
    unique: fjall::OptimisticTxKeyspace,
}

fn fjall_open(path: &Path) -> Res<Fjall> {
    let db = fjall::OptimisticTxDatabase::builder(path).open()?;
    let records = db.keyspace("records", fjall::KeyspaceCreateOptions::default)?;
    let unique = db.keyspace("unique_index", fjall::KeyspaceCreateOptions::default)?;
    Ok(Fjall {
        db,
        records,
        unique,
    })
}

/// A transaction whose commit is durable (`fdatasync` of the journal).
fn fjall_write(fj: &Fjall) -> Res<fjall::OptimisticWriteTx> {
    Ok(fj
        .db
        .write_tx()?
        .durability(Some(fjall::PersistMode::SyncData)))
}

/// One record and its index row in an open fjall transaction; `false` if the value is
/// taken (nothing inserted). The index key is read in the transaction, so a concurrent
/// claim of the same value is a conflict at commit.
fn fjall_put(
    fj: &Fjall,
    tx: &mut fjall::OptimisticWriteTx,
    account: u64,
    i: u64,
    lk: &str,
    val: &[u8],
) -> Res<bool> {
    use fjall::Readable;
    let ik = peer_unique_key(lk);
    if tx.get(&fj.unique, ik.as_slice())?.is_some() {
        return Ok(false);
    }
    let rk = peer_key(account, i);
    tx.insert(&fj.unique, ik, rk.to_vec());
    tx.insert(&fj.records, rk.to_vec(), val.to_vec());
    Ok(true)
}

/// One durable unique insert, retried on a conflict; `Ok(false)` if the value is taken.
fn fjall_unique_insert(fj: &Fjall, account: u64, i: u64, lk: &str, val: &[u8]) -> Res<bool> {
    loop {
        let mut tx = fjall_write(fj)?;
        if !fjall_put(fj, &mut tx, account, i, lk, val)? {
            return Ok(false); // dropped: rolled back
        }
        match tx.commit()? {
            Ok(()) => return Ok(true),
            Err(fjall::Conflict) => continue,
        }
    }
}

fn load_fjall(ctx: &Ctx, fj: &Fjall, from: u64, to: u64) -> Res<()> {
    let mut start = from;
    while start < to {
        let end = (start + BATCH).min(to);
        let mut tx = fjall_write(fj)?;
        for i in start..end {
            let l = ctx.license(i);
            if !fjall_put(fj, &mut tx, ctx.owner(i) + 1, i, &l.key, &payload(&l)?)? {
                return Err(format!("fjall: value of record {i} taken").into());
            }
        }
        if tx.commit()?.is_err() {
            return Err("fjall: a load batch conflicted".into());
        }
        start = end;
    }
    Ok(())
}

struct Line {
    op: String,
    unit: &'static str,
    kv: f64,
    redb: Option<f64>,
    sqlite: Option<f64>,
    /// Measured only for the load and the durable unique inserts.
    fjall: Option<f64>,
}

#[derive(Default)]
struct Report {
    lines: Vec<Line>,
    notes: Vec<String>,
}

impl Report {
    fn add(
        &mut self,
        op: impl Into<String>,
        unit: &'static str,
        kv: f64,
        redb: Option<f64>,
        sqlite: Option<f64>,
    ) {
        let l = Line {
            op: op.into(),
            unit,
            kv,
            redb,
            sqlite,
            fjall: None,
        };
        eprintln!(
            "  {:<44} {:>12} {:>12} {:>12}  {}",
            l.op,
            fmt(l.kv),
            l.redb.map_or("-".into(), fmt),
            l.sqlite.map_or("-".into(), fmt),
            l.unit
        );
        self.lines.push(l);
    }

    /// Adds fjall's figure to the line just added.
    fn fjall(&mut self, v: f64) {
        if let Some(l) = self.lines.last_mut() {
            eprintln!("  {:<44} {:>12} (fjall)", l.op, fmt(v));
            l.fjall = Some(v);
        }
    }

    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("  note: {s}");
        self.notes.push(s);
    }

    fn print(&self, header: &str) {
        println!("{header}");
        println!(
            "| {:<44} | {:<17} | {:>12} | {:>12} | {:>12} | {:>12} | {:>9} | {:>9} | {:>9} |",
            "op", "unit", "regionkv", "redb", "sqlite", "fjall", "kv/redb", "kv/sqlite", "kv/fjall"
        );
        println!(
            "|{:-<46}|{:-<19}|{:->14}|{:->14}|{:->14}|{:->14}|{:->11}|{:->11}|{:->11}|",
            "", "", "", "", "", "", "", "", ""
        );
        for l in &self.lines {
            let ratio = |p: Option<f64>| match p {
                Some(p) if p > 0.0 => format!("{:.2}", l.kv / p),
                _ => "-".into(),
            };
            println!(
                "| {:<44} | {:<17} | {:>12} | {:>12} | {:>12} | {:>12} | {:>9} | {:>9} | {:>9} |",
                l.op,
                l.unit,
                fmt(l.kv),
                l.redb.map_or("-".into(), fmt),
                l.sqlite.map_or("-".into(), fmt),
                l.fjall.map_or("-".into(), fmt),
                ratio(l.redb),
                ratio(l.sqlite),
                ratio(l.fjall)
            );
        }
        for n in &self.notes {
            println!("- {n}");
        }
    }
}

fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 100_000.0 {
        // Thousands separators for large figures.
        let s = format!("{:.0}", x);
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

// ---- the run -----------------------------------------------------------------------------

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: then only say so.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("benches/peers: run with `cargo bench --bench peers`");
        return Ok(());
    }
    let sizes = sizes();
    let root = data_root();
    std::fs::create_dir_all(&root)?;
    let tmp = tempfile::tempdir_in(&root)?;
    let ctx = Ctx {
        sizes,
        note_len: note_len(),
        dir: tmp.path().to_owned(),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rec_bytes = payload(&ctx.license(0))?.len();
    let header = format!(
        "regionkv peers: {cores} cores (available_parallelism), A = {} accounts, R = {} records of {rec_bytes} bytes (rkyv) with one unique value each, 3 regions; durable commits everywhere (redb Durability::Immediate, SQLite WAL + synchronous=FULL); files in {}",
        ctx.sizes.accounts,
        ctx.sizes.records,
        root.display()
    );
    eprintln!("{header}");
    let t_all = Instant::now();
    let mut rep = Report::default();
    let a = ctx.sizes.accounts;
    let r = ctx.sizes.records;

    let db = open_kv(&ctx, true)?;
    let pr = redb::Database::create(ctx.redb_path())?;
    let sq = sqlite_conn(&ctx.sqlite_path())?;
    sqlite_schema(&sq)?;
    let fj = fjall_open(&ctx.fjall_path())?;

    // -- create A accounts
    let t = Instant::now();
    let accounts = db.create_accounts(
        (0..a).map(|j| NewAccount::new(format!("tenant-{j:06}"), REGIONS[(j % 3) as usize])),
    )?;
    let kv_t = t.elapsed();
    let t = Instant::now();
    {
        let txn = redb_write(&pr)?;
        {
            let mut rows = txn.open_table(P_ACCOUNTS)?;
            let mut names = txn.open_table(P_NAMES)?;
            for j in 0..a {
                let name = format!("tenant-{j:06}");
                if names.get(name.as_str())?.is_some() {
                    return Err("redb: account name taken".into());
                }
                let mut row = name.clone().into_bytes();
                row.push((j % 3) as u8);
                rows.insert(j + 1, row.as_slice())?;
                names.insert(name.as_str(), j + 1)?;
            }
        }
        txn.commit()?;
    }
    let redb_t = t.elapsed();
    let t = Instant::now();
    {
        sq.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut st =
                sq.prepare_cached("INSERT INTO accounts (id, name, home) VALUES (?1, ?2, ?3)")?;
            for j in 0..a {
                st.execute(params![
                    (j + 1) as i64,
                    format!("tenant-{j:06}"),
                    (j % 3) as i64
                ])?;
            }
        }
        sq.execute_batch("COMMIT")?;
    }
    let sq_t = t.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    rep.add(
        format!("create {a} accounts (one commit)"),
        "ms (lower)",
        ms(kv_t),
        Some(ms(redb_t)),
        Some(ms(sq_t)),
    );

    // -- batched load
    let t = Instant::now();
    let commits = load_regionkv(&ctx, &db, &accounts, 0, r)?;
    let kv_t = t.elapsed().as_secs_f64();
    let t = Instant::now();
    load_redb(&ctx, &pr, 0, r)?;
    let redb_t = t.elapsed().as_secs_f64();
    let t = Instant::now();
    load_sqlite(&ctx, &sq, 0, r)?;
    let sq_t = t.elapsed().as_secs_f64();
    let t = Instant::now();
    load_fjall(&ctx, &fj, 0, r)?;
    let fj_t = t.elapsed().as_secs_f64();
    let rate = |s: f64| r as f64 / s;
    rep.add(
        format!("load {r} records, 1,000 per batch"),
        "records/s (higher)",
        rate(kv_t),
        Some(rate(redb_t)),
        Some(rate(sq_t)),
    );
    rep.fjall(rate(fj_t));
    rep.note(format!(
        "load: regionkv made {commits} durable commits (one region batch per region per 1,000 records), the peers {} ({:.1} s / {:.1} s / {:.1} s)",
        r.div_ceil(BATCH),
        kv_t,
        redb_t,
        sq_t
    ));

    // -- durable unique insert, 1 writer, interleaved
    let (mut tk, mut tr, mut ts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ctx.sizes.rounds {
        let i = r + round as u64;
        let owner = round as u64 % a;
        let l = ctx.license(i);
        let val = payload(&l)?;
        let t = Instant::now();
        let mut w = db.write(accounts[owner as usize])?;
        w.insert(&LICENSES, i, &l)?;
        w.commit()?;
        tk.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        if !redb_unique_insert(&pr, owner + 1, i, &l.key, &val)? {
            return Err("redb: fresh value taken".into());
        }
        tr.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        if !sqlite_unique_insert(&sq, owner + 1, i, &l.key, &val)? {
            return Err("sqlite: fresh value taken".into());
        }
        ts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rep.add(
        "durable unique insert, 1 writer (median)",
        "us/op (lower)",
        median(&mut tk),
        Some(median(&mut tr)),
        Some(median(&mut ts)),
    );

    // -- N writer threads over 3 regions
    for threads in THREADS {
        let base = 1_000_000_000u64 * (threads as u64);
        let kv = writers(&ctx, threads, base, |i, owner| {
            let mut w = db.write(accounts[owner as usize])?;
            w.insert(&LICENSES, i, &ctx.license(i))?;
            w.commit()?;
            Ok(())
        })?;
        let rd = writers(&ctx, threads, base, |i, owner| {
            let l = ctx.license(i);
            if !redb_unique_insert(&pr, owner + 1, i, &l.key, &payload(&l)?)? {
                return Err("redb: fresh value taken".into());
            }
            Ok(())
        })?;
        let sqp = ctx.sqlite_path();
        let sl = writers_with(
            &ctx,
            threads,
            base,
            || sqlite_conn(&sqp),
            |c, i, owner| {
                let l = ctx.license(i);
                if !sqlite_unique_insert(c, owner + 1, i, &l.key, &payload(&l)?)? {
                    return Err("sqlite: fresh value taken".into());
                }
                Ok(())
            },
        )?;
        let fjr = writers(&ctx, threads, base, |i, owner| {
            let l = ctx.license(i);
            if !fjall_unique_insert(&fj, owner + 1, i, &l.key, &payload(&l)?)? {
                return Err("fjall: fresh value taken".into());
            }
            Ok(())
        })?;
        rep.add(
            format!("durable unique insert, {threads} writer thread(s)"),
            "ops/s (higher)",
            kv,
            Some(rd),
            Some(sl),
        );
        rep.fjall(fjr);
    }

    // -- duplicate rejected
    let (mut tk, mut tr, mut ts) = (Vec::new(), Vec::new(), Vec::new());
    let dup_account = accounts[0];
    let mut x = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..ctx.sizes.rounds {
        // A value owned by another account than the one claiming it (account 0).
        let mut j = x.next() % r;
        if ctx.owner(j) == 0 {
            j = (j + 1) % r;
        }
        let mut l = ctx.license(r + 7_777_777);
        l.key = license_key(j);
        let val = payload(&l)?;
        let t = Instant::now();
        let mut w = db.write(dup_account)?;
        w.insert(&LICENSES, b"dup", &l)?;
        match w.commit() {
            Err(Error::UniqueViolation { .. }) => {}
            other => return Err(format!("regionkv duplicate: {other:?}").into()),
        }
        tk.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        if redb_unique_insert(&pr, 1, u64::MAX, &l.key, &val)? {
            return Err("redb accepted a duplicate".into());
        }
        tr.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        if sqlite_unique_insert(&sq, 1, u64::MAX, &l.key, &val)? {
            return Err("sqlite accepted a duplicate".into());
        }
        ts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rep.add(
        "duplicate rejected (median)",
        "us/op (lower)",
        median(&mut tk),
        Some(median(&mut tr)),
        Some(median(&mut ts)),
    );

    // -- point read, a snapshot per op
    let mut x = XorShift(0x9E37_79B9_7F4A_7C15);
    let ids: Vec<u64> = (0..ctx.sizes.reads).map(|_| x.next() % r).collect();
    let per_op = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / ids.len() as f64;
    let t = Instant::now();
    let mut sum = 0u64;
    for &i in &ids {
        let rec = db
            .read(accounts[ctx.owner(i) as usize])?
            .get(&LICENSES, i)?
            .ok_or("regionkv: record missing")?;
        sum += u64::from(rec.seats.to_native());
    }
    let kv = per_op(t);
    let t = Instant::now();
    for &i in &ids {
        let txn = pr.begin_read()?;
        let tbl = txn.open_table(P_RECORDS)?;
        let v = tbl
            .get(peer_key(ctx.owner(i) + 1, i).as_slice())?
            .ok_or("redb: record missing")?;
        sum += v.value().len() as u64;
    }
    let rd = per_op(t);
    let t = Instant::now();
    {
        let mut st =
            sq.prepare_cached("SELECT value FROM records WHERE account = ?1 AND key = ?2")?;
        for &i in &ids {
            let n: usize = st.query_row(
                params![(ctx.owner(i) + 1) as i64, &i.to_be_bytes()[..]],
                |row| Ok(row.get_ref(0)?.as_blob()?.len()),
            )?;
            sum += n as u64;
        }
    }
    let sl = per_op(t);
    black_box(sum);
    rep.add(
        "point read, snapshot per op",
        "ns/op (lower)",
        kv,
        Some(rd),
        Some(sl),
    );

    // -- unique lookup -> record, hot set
    let hot: Vec<String> = (0..HOT as u64)
        .map(|k| license_key(k * (r / HOT as u64)))
        .collect();
    let n = ctx.sizes.reads / 2;
    let per_op = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let t = Instant::now();
    for k in 0..n {
        let hit = db
            .find_unique(&LICENSES, NS, &hot[k % HOT])?
            .ok_or("regionkv: value not found")?;
        sum += u64::from(hit.record().seats.to_native());
    }
    let kv = per_op(t);
    let t = Instant::now();
    for k in 0..n {
        let txn = pr.begin_read()?;
        let index = txn.open_table(P_UNIQUE)?;
        let rk = index
            .get(peer_unique_key(&hot[k % HOT]).as_slice())?
            .ok_or("redb: value not found")?;
        let records = txn.open_table(P_RECORDS)?;
        let v = records.get(rk.value())?.ok_or("redb: record missing")?;
        sum += v.value().len() as u64;
    }
    let rd = per_op(t);
    let t = Instant::now();
    {
        let mut st = sq.prepare_cached(
            "SELECT r.value FROM uniques u JOIN records r ON r.account = u.account AND r.key = u.key WHERE u.ns = ?1 AND u.value = ?2",
        )?;
        for k in 0..n {
            let len: usize = st.query_row(params![NS, hot[k % HOT]], |row| {
                Ok(row.get_ref(0)?.as_blob()?.len())
            })?;
            sum += len as u64;
        }
    }
    let sl = per_op(t);
    black_box(sum);
    rep.add(
        format!("unique lookup -> record ({HOT} hot values)"),
        "ns/op (lower)",
        kv,
        Some(rd),
        Some(sl),
    );
    // The same with a snapshot kept across lookups: regionkv a `View` (index entries from
    // the unique-index cache, region snapshot reused); redb one read transaction with its
    // tables open; SQLite as above (it has no snapshot to keep outside a transaction).
    let view = db.view()?;
    let t = Instant::now();
    for k in 0..n {
        let hit = view
            .find_unique(&LICENSES, NS, &hot[k % HOT])?
            .ok_or("regionkv: value not found")?;
        sum += u64::from(hit.record().seats.to_native());
    }
    let kv_view = per_op(t);
    drop(view);
    let t = Instant::now();
    {
        let txn = pr.begin_read()?;
        let index = txn.open_table(P_UNIQUE)?;
        let records = txn.open_table(P_RECORDS)?;
        for k in 0..n {
            let rk = index
                .get(peer_unique_key(&hot[k % HOT]).as_slice())?
                .ok_or("redb: value not found")?;
            let v = records.get(rk.value())?.ok_or("redb: record missing")?;
            sum += v.value().len() as u64;
        }
    }
    let rd_shared = per_op(t);
    black_box(sum);
    rep.add(
        format!("unique lookup -> record ({HOT} hot), shared snapshot"),
        "ns/op (lower)",
        kv_view,
        Some(rd_shared),
        Some(sl),
    );

    // -- sweeps
    sweeps(&db, &pr, &sq, &mut rep)?;
    check_cost(&ctx, &mut rep)?;

    // -- disk bytes after a clean close, then the open of the closed stores
    db.close()?;
    drop(pr);
    drop(sq);
    drop(fj);
    rep.add(
        "disk bytes after a clean close",
        "MiB (lower)",
        dir_bytes(&ctx.kv_dir()) as f64 / 1048576.0,
        Some(dir_bytes(&ctx.redb_path()) as f64 / 1048576.0),
        Some(
            ["", "-wal", "-shm"]
                .iter()
                .map(|s| {
                    dir_bytes(&PathBuf::from(format!(
                        "{}{s}",
                        ctx.sqlite_path().display()
                    )))
                })
                .sum::<u64>() as f64
                / 1048576.0,
        ),
    );
    let opens = |f: &mut dyn FnMut() -> Res<()>| -> Res<f64> {
        let mut v = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(&mut v))
    };
    // Each closure opens, notes the time, and closes outside the timed part where it can.
    let kv_open = open_median(|| {
        let t = Instant::now();
        let db = open_kv(&ctx, true)?;
        let e = t.elapsed();
        db.close()?;
        Ok(e)
    })?;
    let kv_open_nv = open_median(|| {
        let t = Instant::now();
        let db = open_kv(&ctx, false)?;
        let e = t.elapsed();
        db.close()?;
        Ok(e)
    })?;
    let rd_open = opens(&mut || {
        let db = redb::Database::open(ctx.redb_path())?;
        black_box(db.begin_read()?.open_table(P_RECORDS)?.len()?);
        Ok(())
    })?;
    let sq_open = opens(&mut || {
        let c = sqlite_conn(&ctx.sqlite_path())?;
        let n: i64 = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        black_box(n);
        Ok(())
    })?;
    rep.add(
        "open, cleanly closed, verify_on_open(true)",
        "ms (lower)",
        kv_open,
        Some(rd_open),
        Some(sq_open),
    );
    rep.add(
        "open, cleanly closed, default (no verify)",
        "ms (lower)",
        kv_open_nv,
        Some(rd_open),
        Some(sq_open),
    );

    rep.note(format!("whole run {:.0} s", t_all.elapsed().as_secs_f64()));
    rep.print(&header);
    Ok(())
}

fn open_median(mut f: impl FnMut() -> Res<Duration>) -> Res<f64> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(f()?.as_secs_f64() * 1e3);
    }
    Ok(median(&mut v))
}

/// `threads` writers for `ctx.sizes.cell`, thread `t` writing accounts homed in region
/// `t % 3`, fresh record ids from `base`; ops/s.
fn writers(
    ctx: &Ctx,
    threads: usize,
    base: u64,
    op: impl Fn(u64, u64) -> Res<()> + Sync,
) -> Res<f64> {
    writers_with(ctx, threads, base, || Ok(()), |_, i, owner| op(i, owner))
}

/// [`writers`] with a per-thread connection made by `open` before the clock starts.
fn writers_with<C>(
    ctx: &Ctx,
    threads: usize,
    base: u64,
    open: impl Fn() -> Res<C> + Sync,
    op: impl Fn(&mut C, u64, u64) -> Res<()> + Sync,
) -> Res<f64> {
    let next = AtomicU64::new(base);
    let ops = AtomicU64::new(0);
    let a = ctx.sizes.accounts;
    let barrier = std::sync::Barrier::new(threads + 1);
    let result: Res<f64> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (next, ops, barrier, open, op) = (&next, &ops, &barrier, &open, &op);
            handles.push(s.spawn(move || -> Res<()> {
                let conn = open();
                barrier.wait();
                let mut conn = conn?;
                let deadline = Instant::now() + ctx.sizes.cell;
                let region = (t % 3) as u64;
                let mut k = t as u64 / 3;
                let mut done = 0u64;
                while done == 0 || Instant::now() < deadline {
                    // Accounts homed in `region`: indices region, region + 3, ...
                    let owner = (region + 3 * (k % (a / 3).max(1))) % a;
                    k += 1;
                    op(&mut conn, next.fetch_add(1, Ordering::Relaxed), owner)?;
                    done += 1;
                }
                ops.fetch_add(done, Ordering::Relaxed);
                Ok(())
            }));
        }
        barrier.wait();
        let t = Instant::now();
        for h in handles {
            h.join().map_err(|_| "a writer thread panicked")??;
        }
        Ok(ops.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64())
    });
    result
}

fn sweeps(db: &Db, pr: &redb::Database, sq: &Connection, rep: &mut Report) -> Res<()> {
    let best = |f: &mut dyn FnMut() -> Res<u64>| -> Res<(f64, u64)> {
        let mut b = f64::MAX;
        let mut rows = 0;
        for _ in 0..3 {
            let t = Instant::now();
            rows = f()?;
            b = b.min(t.elapsed().as_secs_f64());
        }
        Ok((rows as f64 / b, rows))
    };
    let (scan, kv_rows) = best(&mut || {
        let mut n = 0;
        let mut seats = 0u64;
        for row in db.scan_all(&LICENSES)? {
            seats += u64::from(row?.record().seats.to_native());
            n += 1;
        }
        black_box(seats);
        Ok(n)
    })?;
    let mut threads_used = 0;
    let mut sweep_with = |threads: usize| {
        best(&mut || {
            let (report, seats) = db.sweep(&LICENSES).threads(threads).fold(
                || 0u64,
                |seats, _, _, _, rec| {
                    *seats += u64::from(rec.seats.to_native());
                    Ok::<(), Error>(())
                },
            )?;
            black_box(seats.iter().sum::<u64>());
            threads_used = threads_used.max(report.threads);
            Ok(report.rows)
        })
    };
    let (par, par_rows) = sweep_with(usize::MAX)?;
    let (one, _) = sweep_with(1)?;
    let (rd, rd_rows) = best(&mut || {
        let txn = pr.begin_read()?;
        let t = txn.open_table(P_RECORDS)?;
        let mut n = 0;
        let mut bytes = 0u64;
        for kv in t.range::<&[u8]>(..)? {
            let (k, v) = kv?;
            bytes += (k.value().len() + v.value().len()) as u64;
            n += 1;
        }
        black_box(bytes);
        Ok(n)
    })?;
    let (sl, sl_rows) = best(&mut || {
        let mut st = sq.prepare_cached("SELECT account, key, value FROM records")?;
        let mut rows = st.query([])?;
        let mut n = 0;
        let mut bytes = 0u64;
        while let Some(row) = rows.next()? {
            let a: i64 = row.get(0)?;
            bytes += a as u64
                + (row.get_ref(1)?.as_blob()?.len() + row.get_ref(2)?.as_blob()?.len()) as u64;
            n += 1;
        }
        black_box(bytes);
        Ok(n)
    })?;
    if par_rows != kv_rows {
        return Err(format!("sweep saw {par_rows} rows, scan_all {kv_rows}").into());
    }
    rep.add(
        "sweep all records: scan_all (1 thread)",
        "records/s (higher)",
        scan,
        Some(rd),
        Some(sl),
    );
    rep.add(
        format!("sweep all records: Db::sweep ({threads_used} threads)"),
        "records/s (higher)",
        par,
        Some(rd),
        Some(sl),
    );
    rep.add(
        "sweep all records: Db::sweep (1 thread)",
        "records/s (higher)",
        one,
        Some(rd),
        Some(sl),
    );
    let ns = |rate: f64| 1e9 / rate;
    rep.note(format!(
        "sweeps: regionkv {kv_rows} rows, redb {rd_rows}, sqlite {sl_rows} (R plus each store's own inserts of the timed sections); per record: plain redb range {:.0} ns (no check), regionkv scan_all {:.0} ns (+{:.0}), sweep on 1 thread {:.0} ns (+{:.0}), sweep on {threads_used} threads {:.0} ns wall",
        ns(rd),
        ns(scan),
        ns(scan) - ns(rd),
        ns(one),
        ns(one) - ns(rd),
        ns(par)
    ));
    Ok(())
}

/// What checking one stored record costs, on a buffer in cache: the CRC alone (one call
/// over the record's bytes, as regionkv now hashes them), rkyv's validated access alone,
/// and `regionkv::decode_value` (envelope + CRC bound to the row + version + validation,
/// plus its data-key allocation).
fn check_cost(ctx: &Ctx, rep: &mut Report) -> Res<()> {
    const N: u32 = 2_000_000;
    let l = ctx.license(12_345);
    let account = AccountId::from_raw(7);
    let key = 12_345u64.to_be_bytes();
    let stored = regionkv::encode_value(&LICENSES, account, &key, &l)?;
    let payload = &stored[8..];
    let time = |f: &mut dyn FnMut() -> u64| {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut acc = 0u64;
            for _ in 0..N {
                acc = acc.wrapping_add(f());
            }
            black_box(acc);
            best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(N));
        }
        best
    };
    let crc = time(&mut || u64::from(crc32fast::hash(black_box(&stored))));
    let rkyv = time(&mut || {
        regionkv::rkyv::access::<ArchivedLicense, regionkv::rkyv::rancor::Failure>(black_box(
            payload,
        ))
        .map_or(0, |v| u64::from(v.seats.to_native()))
    });
    let decode = time(&mut || {
        regionkv::decode_value(&LICENSES, account, &key, black_box(&stored))
            .map_or(0, |v| u64::from(v.seats.to_native()))
    });
    rep.note(format!(
        "check of one {}-byte stored record, cached: crc32 of its bytes in one call {crc:.1} ns, rkyv validated access {rkyv:.1} ns, regionkv::decode_value (envelope, CRC bound to table/account/key, version, validation, a key allocation) {decode:.1} ns",
        stored.len()
    ));
    Ok(())
}
