//! Memory of a store that keeps creating accounts and writing records: a heap profile
//! (counting global allocator) and the RSS curve, with the system allocator.
//!
//! For each phase it prints, per operation: allocations and bytes allocated (transient
//! and long-lived together), the live heap it left behind (long-lived bytes), the size
//! classes allocated, and the process RSS (from `/proc/self/status`) at each checkpoint,
//! with the RSS `malloc_trim(0)` would leave (glibc only: freed memory the allocator kept).
//!
//! Run: `cargo run --release --example memory -- --accounts 100000 --records 1000000`
//! (`--routing-cache BYTES`, `--unique-cache BYTES`, `--cache BYTES` for the budgets;
//! `--batch N` records per commit, default 1000; `--dir PATH` for the files, default a
//! temporary folder; `--trim` calls `malloc_trim(0)` at each checkpoint to show how
//! much of the RSS is freed memory the allocator kept).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use regionkv::{AccountId, Db, NewAccount, Raw, Table};

/// The system allocator, counting.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Allocations by size class: <=64, <=256, <=1K, <=4K, <=16K, <=64K, <=256K, larger.
static CLASSES: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn class(size: usize) -> usize {
    match size {
        0..=64 => 0,
        65..=256 => 1,
        257..=1024 => 2,
        1025..=4096 => 3,
        4097..=16384 => 4,
        16385..=65536 => 5,
        65537..=262144 => 6,
        _ => 7,
    }
}

fn count(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    ALLOC_BYTES.fetch_add(size as u64, Relaxed);
    LIVE.fetch_add(size as u64, Relaxed);
    CLASSES[class(size)].fetch_add(1, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc
// contract; the counters are plain atomics and allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes
        // through this allocator).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
        count(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout`; forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    allocs: u64,
    bytes: u64,
    live: u64,
    classes: [u64; 8],
}

fn snap() -> Snap {
    Snap {
        allocs: ALLOCS.load(Relaxed),
        bytes: ALLOC_BYTES.load(Relaxed),
        live: LIVE.load(Relaxed),
        classes: std::array::from_fn(|i| CLASSES[i].load(Relaxed)),
    }
}

/// Resident set size in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim takes a padding size and only returns free memory to
    // the kernel; it is safe to call at any time from any thread.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// RssAnon / RssFile / RssShmem in MiB, for the breakdown line.
fn rss_kinds() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    format!(
        "anon {:.1}, file {:.1}, shmem {:.1} MiB",
        get("RssAnon:") as f64 / 1024.0,
        get("RssFile:") as f64 / 1024.0,
        get("RssShmem:") as f64 / 1024.0
    )
}

/// The mappings holding more than 1 MiB of RSS (set MEMORY_SMAPS=1).
fn smaps() {
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut head = "";
    for l in s.lines() {
        if l.contains('-') && !l.ends_with(" kB") {
            head = l;
        } else if let Some(kb) = l.strip_prefix("Rss:") {
            let kb: u64 = kb
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if kb > 1024 {
                println!("  {kb:>8} kB  {head}");
            }
        }
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn report(what: &str, n: u64, from: Snap, base_rss: u64, do_trim: bool, t: Instant) {
    let now = snap();
    let per = |a: u64, b: u64| (a - b) as f64 / n.max(1) as f64;
    let rss_now = rss();
    let trimmed = if do_trim {
        trim();
        format!(", after malloc_trim {:.1} MiB", mib(rss()))
    } else {
        String::new()
    };
    println!(
        "{what:>10} {n:>8}: RSS {:7.1} MiB (+{:.1}), live heap {:6.1} MiB{trimmed}; \
         per op: {:.0} allocs, {:.0} B allocated, {:+.0} B live; {:.1} s\n{:>10}   RSS: {}",
        mib(rss_now),
        mib(rss_now.saturating_sub(base_rss)),
        mib(now.live),
        per(now.allocs, from.allocs),
        per(now.bytes, from.bytes),
        (now.live as f64 - from.live as f64) / n.max(1) as f64,
        t.elapsed().as_secs_f64(),
        "",
        rss_kinds(),
    );
}

fn classes(from: Snap, n: u64) {
    let now = snap();
    let names = [
        "<=64", "<=256", "<=1K", "<=4K", "<=16K", "<=64K", "<=256K", ">256K",
    ];
    let per: Vec<String> = names
        .iter()
        .zip(now.classes.iter().zip(from.classes.iter()))
        .map(|(n2, (a, b))| format!("{n2}: {:.1}", (a - b) as f64 / n.max(1) as f64))
        .collect();
    println!(
        "{:>10}   allocations per op by size: {}",
        "",
        per.join(", ")
    );
}

const RECORDS: Table<Raw> = Table::new("records");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut accounts: u64 = 30_000;
    let mut records: u64 = 0;
    let mut batch: u64 = 1000;
    let mut dir: Option<PathBuf> = None;
    let mut routing: Option<usize> = None;
    let mut unique: Option<usize> = None;
    let mut cache: Option<usize> = None;
    let mut do_trim = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--accounts" => accounts = val()?.parse()?,
            "--records" => records = val()?.parse()?,
            "--batch" => batch = val()?.parse()?,
            "--dir" => dir = Some(val()?.into()),
            "--routing-cache" => routing = Some(val()?.parse()?),
            "--unique-cache" => unique = Some(val()?.parse()?),
            "--cache" => cache = Some(val()?.parse()?),
            "--trim" => do_trim = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());

    let mut b = Db::builder().region("us").region("eu");
    if let Some(r) = routing {
        b = b.routing_cache_size(r);
    }
    if let Some(u) = unique {
        b = b.unique_cache_size(u);
    }
    if let Some(c) = cache {
        b = b.cache_size(c);
    }
    let db = b.open(&dir)?;
    let base_rss = rss();
    println!(
        "opened: RSS {:.1} MiB, live heap {:.1} MiB",
        mib(base_rss),
        mib(snap().live)
    );

    // Account creates, one durable commit each (the workload).
    let checkpoints = [1_000u64, 10_000, 30_000, 100_000, 300_000, 1_000_000];
    let t = Instant::now();
    let start = snap();
    let mut from = start;
    let mut last = 0;
    let mut ids: Vec<AccountId> = Vec::new();
    for i in 0..accounts {
        let home = if i.is_multiple_of(2) { "us" } else { "eu" };
        ids.push(db.create_account(NewAccount::new(format!("tenant-{i:08}"), home))?);
        let done = i + 1;
        if checkpoints.contains(&done) || done == accounts {
            report("creates", done, from, base_rss, do_trim, t);
            if last == 0 {
                classes(from, done - last);
            }
            from = snap();
            last = done;
        }
    }
    if accounts > 0 {
        report("all", accounts, start, base_rss, false, t);
        classes(start, accounts);
    }

    // Records: `batch` per durable commit, spread over the accounts.
    if records > 0 && !ids.is_empty() {
        let t = Instant::now();
        let start = snap();
        let mut from = start;
        let value = [7u8; 100];
        let mut written = 0u64;
        let mut next_report = 10_000u64;
        while written < records {
            let n = batch.min(records - written);
            let mut w = db.batch_in("us")?;
            for j in 0..n {
                let k = written + j;
                let acct = ids[(k as usize * 2) % ids.len()]; // even ids live in "us"
                w.write(acct)?
                    .insert(&RECORDS, k.to_be_bytes(), &value[..])?;
            }
            w.commit()?;
            written += n;
            if written >= next_report || written == records {
                report("records", written, from, base_rss, do_trim, t);
                from = snap();
                next_report *= 10;
            }
        }
        report("all", records, start, base_rss, false, t);
        classes(start, records);
    }
    let s = db.stats();
    println!(
        "routing cache: {} entries, {} bytes; unique cache: {} entries, {} bytes",
        s.routing_cache_entries,
        s.routing_cache_bytes,
        s.unique_cache_entries,
        s.unique_cache_bytes
    );
    if std::env::var_os("MEMORY_SMAPS").is_some() {
        smaps();
    }
    db.close()?;
    Ok(())
}
