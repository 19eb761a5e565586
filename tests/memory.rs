//! Memory stays within the budgets while accounts are created (issue 15): one test in its
//! own binary, so the process's RSS is this workload's.
//!
//! The store is given small budgets (page cache, routing cache, unique-index cache); after
//! a warm-up, every further create is one durable commit of the global file, the pattern
//! that made RSS climb without bound when the routing cache's small long-lived allocations
//! sat between redb's transient commit buffers (glibc could reuse none of the freed
//! memory around them). The bound is the budgets, plus the documented per-account
//! allowance outside them (docs/design.md, "Memory"), plus generous slack for the
//! allocator and the test harness.

use regionkv::{Db, NewAccount};

/// Resident set size in bytes, from `/proc/self/status` (`VmRSS`, in kB: unlike
/// `/proc/self/statm` it needs no page size).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

const PAGE_CACHE: usize = 2 << 20;
const ROUTING_CACHE: usize = 1 << 20;
const UNIQUE_CACHE: usize = 256 << 10;
/// Memory per account outside the budgets that the store may keep (docs/design.md,
/// "Memory": none is kept; this allows for the allocator's own bookkeeping).
const PER_ACCOUNT: u64 = 64;
const SLACK: u64 = 6 << 20;
const WARM_UP: usize = 500;
const ACCOUNTS: usize = 8_000;

#[test]
fn rss_stays_within_the_budgets_while_accounts_are_created() {
    let Some(_) = rss() else {
        eprintln!("no /proc/self/statm: RSS cannot be measured on this system");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .cache_size(PAGE_CACHE)
        .routing_cache_size(ROUTING_CACHE)
        .unique_cache_size(UNIQUE_CACHE)
        .open(dir.path())
        .unwrap();
    let mut ids = Vec::with_capacity(ACCOUNTS);
    let create = |i: usize| {
        let home = if i.is_multiple_of(2) { "us" } else { "eu" };
        db.create_account(NewAccount::new(format!("tenant-{i:08}"), home))
            .unwrap()
    };
    for i in 0..WARM_UP {
        ids.push(create(i));
    }
    let before = rss().unwrap();
    for i in WARM_UP..ACCOUNTS {
        ids.push(create(i));
    }
    let after = rss().unwrap();
    let grown = after.saturating_sub(before);
    let bound = (PAGE_CACHE + ROUTING_CACHE + UNIQUE_CACHE) as u64
        + PER_ACCOUNT * (ACCOUNTS - WARM_UP) as u64
        + SLACK;
    eprintln!(
        "RSS {:.1} MiB -> {:.1} MiB over {} creates (bound {:.1} MiB)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        ACCOUNTS - WARM_UP,
        bound as f64 / 1048576.0
    );
    assert!(
        grown <= bound,
        "RSS grew {grown} bytes over {} creates, more than the budgets allow ({bound})",
        ACCOUNTS - WARM_UP
    );

    // The cache stayed in its budget, evicted, and every account still routes right.
    let stats = db.stats();
    assert!(stats.routing_cache_bytes <= ROUTING_CACHE);
    assert!(stats.routing_cache_entries > 0);
    assert!(
        stats.routing_cache_entries < ACCOUNTS,
        "a 1 MiB routing cache held all {ACCOUNTS} accounts: the test no longer evicts"
    );
    for (i, id) in ids.iter().enumerate().step_by(97) {
        let a = db.account(*id).unwrap();
        assert_eq!(a.name(), format!("tenant-{i:08}"));
        assert_eq!(
            a.home(),
            db.region_id(if i.is_multiple_of(2) { "us" } else { "eu" })
                .unwrap()
        );
    }
    db.close().unwrap();
}
