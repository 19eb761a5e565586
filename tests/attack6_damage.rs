//! Adversarial review, round 6: damaged files (random byte flips) opened with
//! `verify_on_open(true)`, through the open-time checks (stale `last_txn`, `_doubtful`,
//! `clean_close`) and then audit / reads / a write / close: never a panic.
//!
//! passes (guard): damaged_files_verified_open_never_panics (2000 flips)
//!
//! The same sweep with `verify_on_open(false)` found that redb can abort the process
//! (a panic inside one of its destructors while unwinding): first in the open probe's close
//! (fixed: the probe's view fails every I/O once the look is over), then in the first
//! synced commit of the damaged global file itself (redb reading a damaged freed-page tree
//! in `extract_freed_pages`). That second one is redb's, reachable only with verification
//! off, and documented on `Builder::verify_on_open`; it is not kept as a test (it kills the
//! test process). Reproducer: this file's `run(false, 188)` in a child process (xorshift
//! seed as below): iteration 187 flips global.redb at 4103 (0x80), 100850 (0x02), 62268
//! (0x04) and aborts in `Builder::open`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");
const DIR: &str = "/d";

fn b(sim: &SimStorage, verify: bool) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .verify_on_open(verify)
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn base() -> Vec<(PathBuf, Vec<u8>)> {
    let sim = SimStorage::new();
    let db = b(&sim, true).region("us").region("eu").open(DIR).unwrap();
    let e = db
        .create_account(NewAccount::new("e", "eu").allow("us").max_records(50))
        .unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    for i in 0..20u32 {
        let (a, r) = if i % 2 == 0 { (e, "eu") } else { (u, "us") };
        let mut w = db.write_in(a, r).unwrap();
        w.insert_unique(
            &T,
            format!("k{i}").as_bytes(),
            b"payload",
            &[Unique::new("m", &format!("v{i}"))],
        )
        .unwrap();
        w.commit().unwrap();
    }
    db.checkpoint().unwrap();
    for i in 20..26u32 {
        let mut w = db.write_in(e, "eu").unwrap();
        w.insert_unique(
            &T,
            format!("k{i}").as_bytes(),
            b"payload",
            &[Unique::new("m", &format!("v{i}"))],
        )
        .unwrap();
        w.commit().unwrap();
    }
    // an unknown write in eu (doubtful row)
    sim.fail_file_after(format!("{DIR}/regions/eu.redb"), 0, FaultOn::Syncs);
    let mut w = db.write_in(e, "eu").unwrap();
    w.remove(&T, b"k0").unwrap();
    let _ = w.commit();
    sim.clear_fault();
    drop(db); // no clean close
    sim.paths()
        .into_iter()
        .map(|p| {
            let v = sim.live_bytes(&p).unwrap();
            (p, v)
        })
        .collect()
}

fn exercise(sim: &SimStorage, verify: bool, eu_disabled: bool) {
    let bl = b(sim, verify).region("us");
    let bl = if eu_disabled {
        bl.disable_region("eu")
    } else {
        bl.region("eu")
    };
    let Ok(db) = bl.open(DIR) else { return };
    let _ = db.audit();
    let _ = db.recovery_report();
    for i in 0..26u32 {
        let _ = db.find_unique(&T, "m", format!("v{i}"));
        let _ = db.is_taken("m", format!("v{i}"));
    }
    if let Ok(rows) = db.scan_all(&T) {
        for r in rows {
            let _ = r.map(|r| r.record().payload().len());
        }
    }
    if let Ok(Some(e)) = db.account_id("e") {
        if let Ok(rd) = db.read(e) {
            let _ = rd.get(&T, b"k2");
        }
        if let Ok(mut w) = db.write_in(e, "us") {
            let _ = w.insert_unique(&T, b"new", b"x", &[Unique::new("m", "v2")]);
            let _ = w.commit();
        }
    }
    let _ = db.forfeit_unsettled("eu");
    let _ = db.disable_region("eu");
    let _ = db.close();
}

fn run(verify: bool, iters: u64) -> Vec<String> {
    let files = base();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut panics = Vec::new();
    if std::env::var("DMG_TRACE").is_err() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    for it in 0..iters {
        let sim = SimStorage::new();
        let fi = next(files.len() as u64) as usize;
        let mut flips = Vec::new();
        for (i, (p, v)) in files.iter().enumerate() {
            let mut v = v.clone();
            if i == fi {
                for _ in 0..1 + next(3) {
                    let off = next(v.len() as u64) as usize;
                    let bit = 1u8 << next(8);
                    v[off] ^= bit;
                    flips.push((off, bit));
                }
            }
            sim.set_bytes(p, v);
        }
        let eu_dis = next(3) == 0;
        if std::env::var("DMG_TRACE").is_ok() {
            eprintln!(
                "it={it} file={} flips={flips:?} eu_dis={eu_dis}",
                files[fi].0.display()
            );
        }
        let r = catch_unwind(AssertUnwindSafe(|| exercise(&sim, verify, eu_dis)));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!(
                "it={it} file={} flips={flips:?} eu_disabled={eu_dis}: {msg}",
                files[fi].0.display()
            ));
        }
    }
    let _ = std::panic::take_hook();
    panics
}

#[test]
fn damaged_files_verified_open_never_panics() {
    let p = run(true, 2000);
    assert!(
        p.is_empty(),
        "{} panics with verify_on_open(true):\n{}",
        p.len(),
        p.join("\n")
    );
}
