//! Open time of a cleanly closed store, by size.
//!
//! Builds a store of about `--mb` MiB (regions `us` and `eu`, 1 KiB raw records in
//! batches of 1,000 per commit), closes it, then opens and closes it `--runs` times and
//! prints the open times (minimum and median), first with the defaults, then with
//! `Builder::verify_on_open(true)` (every page checksummed at open), and the time of
//! `Db::verify` on the open store.
//!
//! Run: `cargo run --release --example open_time -- --mb 200 --runs 7`
//! (`--dir PATH` keeps the store in a given folder, built once and reused; default a
//! temporary folder).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regionkv::{Db, NewAccount, Raw, Table};

const DATA: Table<Raw> = Table::new("data");
const REGIONS: [&str; 2] = ["us", "eu"];

fn builder() -> regionkv::Builder {
    Db::builder().region("us").region("eu").default_region("us")
}

fn build(dir: &Path, mb: usize) -> regionkv::Result<()> {
    let db = builder().open(dir)?;
    let accounts = db.create_accounts(
        (0..20).map(|i| NewAccount::new(format!("t{i}"), REGIONS[i % 2]).allow(REGIONS[1 - i % 2])),
    )?;
    let value = vec![0x5Au8; 1024];
    let records = mb * 1024;
    let mut written = 0usize;
    let mut batch = 0u64;
    while written < records {
        let acct = accounts[batch as usize % accounts.len()];
        let mut w = db.write(acct)?;
        for i in 0..1000u64 {
            let mut v = value.clone();
            v[..8].copy_from_slice(&(batch * 1000 + i).to_le_bytes());
            w.insert(&DATA, (batch, i), v.as_slice())?;
        }
        w.commit()?;
        written += 1000;
        batch += 1;
    }
    db.close()
}

fn file_bytes(dir: &Path) -> u64 {
    let mut total = std::fs::metadata(regionkv::layout::global_file(dir)).map_or(0, |m| m.len());
    for r in REGIONS {
        total += std::fs::metadata(regionkv::layout::region_file(dir, r)).map_or(0, |m| m.len());
    }
    total
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("min {:?}, median {:?}", v[0], v[v.len() / 2])
}

fn time_opens(dir: &Path, runs: usize, verify: Option<bool>) -> regionkv::Result<Vec<Duration>> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let b = match verify {
            Some(v) => builder().verify_on_open(v),
            None => builder(),
        };
        let t = Instant::now();
        let db = b.open(dir)?;
        times.push(t.elapsed());
        db.close()?;
    }
    Ok(times)
}

fn main() -> regionkv::Result<()> {
    let mut mb = 200usize;
    let mut runs = 7usize;
    let mut dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--mb" => mb = val().parse().expect("--mb N"),
            "--runs" => runs = val().parse().expect("--runs N"),
            "--dir" => dir = Some(PathBuf::from(val())),
            other => panic!("unknown argument {other}"),
        }
    }
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().expect("a temporary folder");
            tmp.path().to_owned()
        }
    };
    if !regionkv::layout::global_file(&dir).exists() {
        let t = Instant::now();
        build(&dir, mb)?;
        eprintln!("built {} MiB in {:?}", mb, t.elapsed());
    }
    println!(
        "store: {:.1} MiB in {} files at {}",
        file_bytes(&dir) as f64 / (1 << 20) as f64,
        1 + REGIONS.len(),
        dir.display()
    );
    // One open first, so every run reads from a warm page cache.
    time_opens(&dir, 1, None)?;
    println!(
        "open, defaults:              {}",
        stats(time_opens(&dir, runs, None)?)
    );
    println!(
        "open, verify_on_open(true):  {}",
        stats(time_opens(&dir, runs, Some(true))?)
    );
    let db = builder().open(&dir)?;
    let t = Instant::now();
    let report = db.verify()?;
    println!(
        "Db::verify on the open store: {:?} ({report:?})",
        t.elapsed()
    );
    db.close()
}
