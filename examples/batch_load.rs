//! The batched load of `benches/peers.rs` alone (issue 10's "batched load with unique values
//! across accounts" target), regionkv against a single-file redb, in one process run.
//!
//! Workload (the bench's): A accounts, homes round-robin over 3 regions; R records of a
//! 120-byte rkyv payload with one declared unique value each (`license_key`); records
//! `i` belongs to account `i % A`; 1,000 records per chunk. regionkv commits each chunk as
//! one region batch (`Db::batch_in`, all or none, one fsync) per region the chunk's
//! accounts live in, one after the other (`--parallel`: the chunk's batches together with
//! `Db::commit_batches`, the regions' commits at the same time); the peer one `Durability::Immediate` transaction per chunk, the record
//! and its index row (`license_key ++ value -> record key`, checked first).
//!
//! ```text
//! cargo run --release --example batch_load                       # A = 1,000, R = 20,000, 3 rounds
//! cargo run --release --example batch_load -- --accounts 10000 --records 60000 --rounds 1
//! cargo run --release --example batch_load -- --only regionkv    # for `perf record -g`
//! cargo run --release --example batch_load -- --parallel         # Db::commit_batches
//! ```
//!
//! Each round loads a fresh store of each kind (regionkv first, then redb), in a temporary
//! folder under `--dir` (default: `$CARGO_TARGET_DIR/bench-data` or `target/bench-data`,
//! the build's disk, never a tmpfs). Prints µs per record of each and their ratio per round,
//! then the median round.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Durability, ReadableTable, TableDefinition};
use regionkv::{AccountId, Db, NewAccount, Table};

type Res<T> = Result<T, Box<dyn StdError + Send + Sync>>;

const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const NS: &str = "license_key";
const BATCH: u64 = 1_000;
const PAYLOAD: usize = 120;

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

const P_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const P_UNIQUE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("unique_index");

/// The note's length that makes the archived record `PAYLOAD` bytes (as the bench does).
fn note_len() -> usize {
    let with = |n: usize| {
        let l = License {
            id: 0,
            seats: 0,
            key: "LK-0000000000-00000000".into(),
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
    let mix = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    let mut note = format!("tenant licence {i} ");
    note.truncate(note_len);
    while note.len() < note_len {
        note.push('.');
    }
    License {
        id: i,
        seats: (i % 500) as u32,
        key: format!("LK-{i:010}-{mix:08X}"),
        note,
    }
}

struct Opts {
    accounts: u64,
    records: u64,
    rounds: usize,
    only: Option<String>,
    dir: PathBuf,
    note: usize,
    /// Commit a chunk's region batches with `Db::commit_batches` (the regions at the same
    /// time) instead of one after the other (as benches/peers.rs does).
    parallel: bool,
}

fn opts() -> Res<Opts> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut o = Opts {
        accounts: 1_000,
        records: 20_000,
        rounds: 3,
        only: None,
        dir: target.join("bench-data"),
        note: note_len(),
        parallel: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--accounts" => o.accounts = val()?.parse()?,
            "--records" => o.records = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--only" => o.only = Some(val()?),
            "--dir" => o.dir = PathBuf::from(val()?),
            "--parallel" => o.parallel = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    o.accounts = o.accounts.max(3);
    Ok(o)
}

/// Loads R records into a new regionkv store; returns (seconds of the load, region commits).
fn run_regionkv(o: &Opts, dir: &Path) -> Res<(f64, u64)> {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    let db = b.open(dir)?;
    if std::env::var_os("BATCH_LOAD_SHOW_CACHE").is_some() {
        eprintln!("{:?}", db.cache_budget());
    }
    let accounts: Vec<AccountId> = db.create_accounts(
        (0..o.accounts)
            .map(|j| NewAccount::new(format!("tenant-{j:06}"), REGIONS[(j % 3) as usize])),
    )?;
    let homes: Vec<regionkv::RegionId> = accounts
        .iter()
        .map(|id| db.account(*id).map(|a| a.home()))
        .collect::<regionkv::Result<_>>()?;
    let names: Vec<String> = REGIONS.iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    let mut commits = 0;
    let mut start = 0;
    while start < o.records {
        let end = (start + BATCH).min(o.records);
        let mut batches: Vec<(regionkv::RegionId, regionkv::Batch)> = Vec::new();
        for i in start..end {
            let a = (i % o.accounts) as usize;
            let home = homes[a];
            let pos = match batches.iter().position(|(r, _)| *r == home) {
                Some(p) => p,
                None => {
                    let name = db.region_name(home).ok_or("region without a name")?;
                    debug_assert!(names.contains(&name));
                    batches.push((home, db.batch_in(&name)?));
                    batches.len() - 1
                }
            };
            batches[pos]
                .1
                .write(accounts[a])?
                .insert(&LICENSES, i, &license(i, o.note))?;
        }
        commits += batches.len() as u64;
        if o.parallel {
            for r in db.commit_batches(batches.into_iter().map(|(_, b)| b)) {
                r?;
            }
        } else {
            for (_, batch) in batches {
                batch.commit()?;
            }
        }
        start = end;
    }
    let secs = t.elapsed().as_secs_f64();
    // The line `strace` splits on: the load's I/O is what comes before it.
    eprintln!("batch_load: regionkv load done, closing");
    if db
        .find_unique(&LICENSES, NS, license(o.records - 1, o.note).key.as_bytes())?
        .is_none()
    {
        return Err("regionkv: the last value is not found".into());
    }
    db.close()?;
    Ok((secs, commits))
}

/// The peer: one redb file, one durable transaction per chunk.
fn run_redb(o: &Opts, path: &Path) -> Res<f64> {
    let db = redb::Database::create(path)?;
    let t = Instant::now();
    let mut start = 0;
    while start < o.records {
        let end = (start + BATCH).min(o.records);
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        for i in start..end {
            let l = license(i, o.note);
            let val = regionkv::rkyv::to_bytes::<regionkv::rkyv::rancor::Error>(&l)?;
            let account = i % o.accounts + 1;
            let mut index = txn.open_table(P_UNIQUE)?;
            let mut ik = NS.as_bytes().to_vec();
            ik.push(0);
            ik.extend_from_slice(l.key.as_bytes());
            if index.get(ik.as_slice())?.is_some() {
                return Err(format!("redb: value of record {i} taken").into());
            }
            let mut rk = [0u8; 16];
            rk[..8].copy_from_slice(&account.to_be_bytes());
            rk[8..].copy_from_slice(&i.to_be_bytes());
            index.insert(ik.as_slice(), rk.as_slice())?;
            let mut records = txn.open_table(P_RECORDS)?;
            records.insert(rk.as_slice(), val.as_slice())?;
        }
        txn.commit()?;
        start = end;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn main() -> Res<()> {
    let o = opts()?;
    std::fs::create_dir_all(&o.dir)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "batch_load: {cores} cores, A = {}, R = {}, {BATCH} records per chunk, {}, files under {}",
        o.accounts,
        o.records,
        if o.parallel {
            "region batches committed together (Db::commit_batches)"
        } else {
            "region batches committed one after the other"
        },
        o.dir.display()
    );
    let us = |s: f64| s * 1e6 / o.records as f64;
    let mut ratios = Vec::new();
    for round in 0..o.rounds {
        let tmp = tempfile::tempdir_in(&o.dir)?;
        let kv = match o.only.as_deref() {
            None | Some("regionkv") => Some(run_regionkv(&o, &tmp.path().join("regionkv"))?),
            _ => None,
        };
        let peer = match o.only.as_deref() {
            None | Some("redb") => Some(run_redb(&o, &tmp.path().join("peer.redb"))?),
            _ => None,
        };
        match (kv, peer) {
            (Some((k, commits)), Some(p)) => {
                // The target's ratio: regionkv's rate over redb's (>= 1.0 is at least as fast).
                let ratio = p / k;
                ratios.push(ratio);
                println!(
                    "round {round}: regionkv {:.2} µs/record ({commits} region commits), redb {:.2} µs/record, regionkv/redb rate {ratio:.3}x",
                    us(k),
                    us(p)
                );
            }
            (Some((k, commits)), None) => println!(
                "round {round}: regionkv {:.2} µs/record ({commits} region commits)",
                us(k)
            ),
            (None, Some(p)) => println!("round {round}: redb {:.2} µs/record", us(p)),
            (None, None) => return Err("--only takes regionkv or redb".into()),
        }
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        println!(
            "median regionkv/redb rate: {:.3}x over {} rounds",
            ratios[ratios.len() / 2],
            ratios.len()
        );
    }
    Ok(())
}
