//! Open time of a cleanly closed store, by number of regions.
//!
//! For each region count it builds a store with that many regions (two accounts per
//! region, ten 100-byte records each, every account with a unique value, so each region
//! file has records, `_owned` rows and `_usage`), closes it, then opens and closes it
//! `REGIONKV_OPEN_RUNS` times (default 3) and prints the median and the minimum of the
//! opens, and the median of the clean closes.
//!
//! Run: `cargo run --release --example open_regions`
//! (`REGIONKV_OPEN_REGIONS=3,100,1000` the region counts, the default;
//! `REGIONKV_OPEN_RUNS=3`; `REGIONKV_OPEN_DIR=PATH` keeps the stores in a given folder,
//! each built once and reused; default a temporary folder).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regionkv::{Db, NewAccount, Raw, Table, Unique};

const DATA: Table<Raw> = Table::new("data");
const ACCOUNTS_PER_REGION: usize = 2;
const RECORDS_PER_ACCOUNT: u64 = 10;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i:04}")).collect()
}

fn builder(regions: &[String]) -> regionkv::Builder {
    let mut b = Db::builder();
    for r in regions {
        b = b.region(r.as_str());
    }
    b.default_region(regions[0].as_str())
}

fn build(dir: &Path, regions: &[String]) -> regionkv::Result<()> {
    let db = builder(regions).open(dir)?;
    let accounts = db.create_accounts(
        (0..regions.len() * ACCOUNTS_PER_REGION)
            .map(|i| NewAccount::new(format!("t{i}"), regions[i % regions.len()].as_str())),
    )?;
    let value = [0x5Au8; 100];
    for (i, &acct) in accounts.iter().enumerate() {
        let mut w = db.write(acct)?;
        for k in 1..RECORDS_PER_ACCOUNT {
            w.insert(&DATA, (i as u64, k), value.as_slice())?;
        }
        let email = format!("t{i}@example.com");
        w.insert_unique(
            &DATA,
            (i as u64, 0u64),
            value.as_slice(),
            &[Unique::new("email", &email)],
        )?;
        w.commit()?;
    }
    db.close()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> regionkv::Result<()> {
    let counts: Vec<usize> = std::env::var("REGIONKV_OPEN_REGIONS")
        .unwrap_or_else(|_| "3,100,1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("REGIONKV_OPEN_REGIONS: numbers, comma-separated")
        })
        .collect();
    let runs: usize = std::env::var("REGIONKV_OPEN_RUNS")
        .map_or(3, |s| s.parse().expect("REGIONKV_OPEN_RUNS: a number"))
        .max(1);
    let tmp;
    let root: PathBuf = match std::env::var_os("REGIONKV_OPEN_DIR") {
        Some(d) => d.into(),
        None => {
            tmp = tempfile::tempdir().expect("a temporary folder");
            tmp.path().to_owned()
        }
    };
    println!("| regions | open ms (median of {runs}) | open ms (min) | per region ms | close ms |");
    println!("|---|---|---|---|---|");
    for n in counts {
        let regions = names(n);
        let dir = root.join(format!("regions-{n}"));
        if !regionkv::layout::global_file(&dir).exists() {
            let t = Instant::now();
            build(&dir, &regions)?;
            eprintln!("built {n} regions in {:?}", t.elapsed());
        }
        // One open first, so that every timed run reads from a warm page cache.
        builder(&regions).open(&dir)?.close()?;
        let (mut opens, mut closes) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let db = builder(&regions).open(&dir)?;
            opens.push(t.elapsed());
            let t = Instant::now();
            db.close()?;
            closes.push(t.elapsed());
        }
        let min = *opens.iter().min().expect("runs >= 1");
        let med = median(opens);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {n} | {:.1} | {:.1} | {:.2} | {:.1} |",
            ms(med),
            ms(min),
            ms(med) / n as f64,
            ms(median(closes))
        );
    }
    Ok(())
}
