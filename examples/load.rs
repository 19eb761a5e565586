//! Sustained load: writer and reader threads on a 3-region store with
//! unique-value contention, then a verification of every acknowledged write.
//!
//! Writers mix plain inserts, `insert_unique` claims on a small shared pool of values (so
//! they collide: a value taken is a `UniqueViolation`, one in flight is `Busy`; both are
//! counted, not errors) and removes. Every key is written by one writer only, so each
//! writer knows the latest acknowledged state of its keys exactly. Readers do `get`s and
//! `find_unique`s and check that what they see is well-formed (a record's value starts
//! with its own key). At the end the store is closed and reopened: every acknowledged
//! record must be there with its last acknowledged value, every value acknowledged as
//! claimed must be found by `find_unique` with the right owner (and every other value
//! not), and `audit()` must be clean.
//!
//! Run: `cargo run --release --example load -- --seconds 30 --writers 4 --readers 4`
//! (`--accounts N`, `--dir PATH` to put the files on a given disk; default a temporary
//! folder). Exits non-zero if any verification fails. `tests/load_smoke.rs` runs the same
//! driver for a few seconds.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use regionkv::{AccountId, Db, Error, NewAccount, Raw, Table, Unique};

const USERS: Table<Raw> = Table::new("users");
const NS: &str = "email";
const REGIONS: [&str; 3] = ["us", "eu", "ap"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long the writers and readers run.
    pub duration: Duration,
    /// Writer threads.
    pub writers: usize,
    /// Reader threads.
    pub readers: usize,
    /// Accounts, spread over the 3 regions (homes round-robin; every other account is
    /// allowed a second region).
    pub accounts: usize,
    /// Keys each writer uses per (account, region).
    pub keys: u32,
    /// Unique values shared by all writers.
    pub unique_pool: u32,
    /// Each thread does at least this many operations, however long they take (so that a
    /// test can require work to have happened without assuming anything about speed).
    pub min_ops_per_thread: u64,
    /// Where the store lives; a temporary folder if `None`.
    pub dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            duration: Duration::from_secs(30),
            writers: 4,
            readers: 4,
            accounts: 30,
            keys: 8,
            unique_pool: 128,
            min_ops_per_thread: 0,
            dir: None,
        }
    }
}

/// Latencies of one kind of operation, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    fn record(&mut self, since: Instant) {
        self.0.push(since.elapsed().as_nanos() as u64);
    }
    fn merge(&mut self, other: &Latencies) {
        self.0.extend_from_slice(&other.0);
    }
    /// Number of operations.
    pub fn count(&self) -> usize {
        self.0.len()
    }
    /// The `p`th percentile (nearest rank), in microseconds.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0
    }
}

/// What one run did and found.
#[derive(Debug, Default)]
pub struct Report {
    /// The configuration it ran with.
    pub threads: (usize, usize),
    /// Wall time of the load phase.
    pub elapsed: Duration,
    /// Where the files were.
    pub dir: PathBuf,
    /// Latencies per operation kind (writes: `insert`, `insert_unique`,
    /// `insert_unique (taken/busy)`, `remove`; reads: `get`, `find_unique`).
    pub latency: BTreeMap<&'static str, Latencies>,
    /// Writes whose commit returned Ok.
    pub writes_committed: u64,
    /// Claims refused because the value was owned (`UniqueViolation`).
    pub unique_violations: u64,
    /// Claims refused because the value was in flight (`Busy`).
    pub busy: u64,
    /// Reads done.
    pub reads: u64,
    /// After the reopen: records and unique values checked, and the audit's counts.
    pub verified_records: usize,
    /// Unique values checked after the reopen.
    pub verified_values: usize,
    /// Unique values acknowledged as owned at the end.
    pub owned_values: usize,
    /// Audit counts: (records, unique entries).
    pub audited: (u64, u64),
    /// Every verification failure or unexpected error.
    pub failures: Vec<String>,
}

const WRITE_KINDS: [&str; 4] = [
    "insert",
    "insert_unique",
    "insert_unique (taken/busy)",
    "remove",
];
const READ_KINDS: [&str; 2] = ["get", "find_unique"];

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn total(&self, kinds: &[&str]) -> Latencies {
        let mut all = Latencies::default();
        for k in kinds {
            if let Some(l) = self.latency.get(k) {
                all.merge(l);
            }
        }
        all
    }

    /// Prints the summary table.
    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "regionkv sustained load: {:.1} s, {} writers, {} readers, 3 regions ({}), files in {}",
            secs,
            self.threads.0,
            self.threads.1,
            REGIONS.join(", "),
            self.dir.display()
        );
        println!(
            "{:<28} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "operation", "count", "ops/s", "p50 µs", "p99 µs", "max µs"
        );
        let row = |name: &str, l: &Latencies| {
            println!(
                "{:<28} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
                name,
                l.count(),
                l.count() as f64 / secs,
                l.percentile_us(50.0),
                l.percentile_us(99.0),
                l.percentile_us(100.0)
            );
        };
        for k in WRITE_KINDS {
            if let Some(l) = self.latency.get(k) {
                row(&format!("  {k}"), l);
            }
        }
        row("writes (all)", &self.total(&WRITE_KINDS));
        for k in READ_KINDS {
            if let Some(l) = self.latency.get(k) {
                row(&format!("  {k}"), l);
            }
        }
        row("reads (all)", &self.total(&READ_KINDS));
        println!(
            "writes committed: {} ({:.1}/s); unique violations: {}; busy: {}",
            self.writes_committed,
            self.writes_committed as f64 / secs,
            self.unique_violations,
            self.busy
        );
        println!(
            "after reopen: {} records and {} unique values ({} owned) verified; audit checked \
             {} records and {} unique entries: {}",
            self.verified_records,
            self.verified_values,
            self.owned_values,
            self.audited.0,
            self.audited.1,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        for f in self.failures.iter().take(50) {
            println!("FAILURE: {f}");
        }
        if self.failures.len() > 50 {
            println!("... and {} more failures", self.failures.len() - 50);
        }
    }
}

/// Deterministic per-thread pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An account and the regions it may write to.
#[derive(Debug, Clone)]
struct Acct {
    id: AccountId,
    allowed: Vec<usize>,
}

/// (account index, region index, writer, key number).
type KeyId = (usize, usize, usize, u32);
/// The last acknowledged state of a key: its value and the unique value it owns.
type KeyState = Option<(Vec<u8>, Option<u32>)>;

fn user_key(writer: usize, n: u32) -> String {
    format!("w{writer}-k{n}")
}

fn unique_value(u: u32) -> String {
    format!("user{u}@example.com")
}

/// A record's value starts with its own key, so a reader can tell it is well-formed.
fn record_value(key: &str, seq: u64, rng: &mut Rng) -> Vec<u8> {
    let mut v = format!("{key}|{seq}|").into_bytes();
    let len = 48 + rng.below(192) as usize;
    v.resize(len.max(v.len()), b'.');
    v
}

fn well_formed(key: &[u8], value: &[u8]) -> bool {
    value.len() > key.len() && value.starts_with(key) && value[key.len()] == b'|'
}

#[derive(Default)]
struct WriterOut {
    keys: HashMap<KeyId, KeyState>,
    latency: BTreeMap<&'static str, Latencies>,
    committed: u64,
    violations: u64,
    busy: u64,
    errors: Vec<String>,
}

fn writer(db: Db, accts: Vec<Acct>, cfg: Config, w: usize, deadline: Instant) -> WriterOut {
    let mut out = WriterOut::default();
    let mut rng = Rng::new(1000 + w as u64);
    let mut ops = 0u64;
    while Instant::now() < deadline || ops < cfg.min_ops_per_thread {
        ops += 1;
        let a = rng.below(accts.len() as u64) as usize;
        let acct = &accts[a];
        let r = acct.allowed[rng.below(acct.allowed.len() as u64) as usize];
        let n = rng.below(cfg.keys as u64) as u32;
        let key = user_key(w, n);
        let kid = (a, r, w, n);
        let current = out.keys.get(&kid).cloned().flatten();
        let dice = rng.below(100);
        let start = Instant::now();
        let mut wr = match db.write_in(acct.id, REGIONS[r]) {
            Ok(wr) => wr,
            Err(e) => {
                out.errors.push(format!("writer {w}: write_in: {e}"));
                continue;
            }
        };
        let (kind, result, next): (&'static str, _, KeyState) = if dice < 40 {
            let value = record_value(&key, ops, &mut rng);
            let kept = current.as_ref().and_then(|c| c.1);
            let r = wr
                .insert(&USERS, key.as_bytes(), &value)
                .and_then(|_| wr.commit());
            ("insert", r, Some((value, kept)))
        } else if dice < 85 {
            let u = rng.below(cfg.unique_pool as u64) as u32;
            let value = record_value(&key, ops, &mut rng);
            let uv = unique_value(u);
            let r = wr
                .insert_unique(&USERS, key.as_bytes(), &value, &[Unique::new(NS, &uv)])
                .and_then(|_| wr.commit());
            ("insert_unique", r, Some((value, Some(u))))
        } else {
            let r = wr.remove(&USERS, key.as_bytes()).and_then(|_| wr.commit());
            ("remove", r, None)
        };
        let kind = match result {
            Ok(()) => {
                out.committed += 1;
                out.keys.insert(kid, next);
                kind
            }
            Err(Error::UniqueViolation { .. }) => {
                out.violations += 1;
                "insert_unique (taken/busy)"
            }
            Err(Error::Busy(_)) => {
                out.busy += 1;
                "insert_unique (taken/busy)"
            }
            Err(e) => {
                out.errors.push(format!("writer {w}: {kind} {key}: {e}"));
                kind
            }
        };
        out.latency.entry(kind).or_default().record(start);
    }
    out
}

#[derive(Default)]
struct ReaderOut {
    latency: BTreeMap<&'static str, Latencies>,
    reads: u64,
    errors: Vec<String>,
}

fn reader(db: Db, accts: Vec<Acct>, cfg: Config, i: usize, deadline: Instant) -> ReaderOut {
    let mut out = ReaderOut::default();
    let mut rng = Rng::new(5000 + i as u64);
    let writers = cfg.writers.max(1) as u64;
    while Instant::now() < deadline || out.reads < cfg.min_ops_per_thread {
        out.reads += 1;
        if rng.below(100) < 70 {
            let a = rng.below(accts.len() as u64) as usize;
            let acct = &accts[a];
            let r = acct.allowed[rng.below(acct.allowed.len() as u64) as usize];
            let key = user_key(
                rng.below(writers) as usize,
                rng.below(cfg.keys as u64) as u32,
            );
            let start = Instant::now();
            let got = db.read(acct.id).and_then(|rd| {
                rd.get_in(REGIONS[r], &USERS, key.as_bytes())
                    .map(|o| o.map(|rec| well_formed(key.as_bytes(), &rec)))
            });
            out.latency.entry("get").or_default().record(start);
            match got {
                Ok(Some(false)) => out
                    .errors
                    .push(format!("reader {i}: get {key}: malformed value")),
                Ok(_) => {}
                Err(e) => out.errors.push(format!("reader {i}: get {key}: {e}")),
            }
        } else {
            let u = rng.below(cfg.unique_pool as u64) as u32;
            let start = Instant::now();
            let got = db.find_unique(&USERS, NS, unique_value(u)).map(|h| {
                h.map(|h| {
                    (
                        well_formed(h.key(), h.record()),
                        accts.iter().any(|a| a.id == h.account()),
                    )
                })
            });
            out.latency.entry("find_unique").or_default().record(start);
            match got {
                Ok(Some((true, true))) | Ok(None) => {}
                Ok(Some(what)) => out.errors.push(format!(
                    "reader {i}: find_unique {u}: (well-formed, known owner) = {what:?}"
                )),
                Err(e) => out.errors.push(format!("reader {i}: find_unique {u}: {e}")),
            }
        }
    }
    out
}

fn open(dir: &std::path::Path) -> regionkv::Result<Db> {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b.default_region(REGIONS[0]).open(dir)
}

/// Runs the load and the verification.
pub fn run(cfg: &Config) -> Report {
    let tmp;
    let dir = match &cfg.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().expect("temporary folder");
            tmp.path().to_owned()
        }
    };
    let mut report = Report {
        threads: (cfg.writers, cfg.readers),
        dir: dir.clone(),
        ..Default::default()
    };
    let db = match open(&dir) {
        Ok(db) => db,
        Err(e) => {
            report.failures.push(format!("open: {e}"));
            return report;
        }
    };
    let mut accts = Vec::new();
    for i in 0..cfg.accounts {
        let home = i % REGIONS.len();
        let mut allowed = vec![home];
        if i % 2 == 0 {
            allowed.push((home + 1) % REGIONS.len());
        }
        let mut new = NewAccount::new(format!("tenant-{i}"), REGIONS[home]);
        for r in &allowed[1..] {
            new = new.allow(REGIONS[*r]);
        }
        match db.create_account(new) {
            Ok(id) => accts.push(Acct { id, allowed }),
            Err(e) => {
                report.failures.push(format!("create_account {i}: {e}"));
                return report;
            }
        }
    }

    let start = Instant::now();
    let deadline = start + cfg.duration;
    let (writers, readers) = std::thread::scope(|s| {
        let ws: Vec<_> = (0..cfg.writers)
            .map(|w| {
                let (db, accts, cfg) = (db.clone(), accts.clone(), cfg.clone());
                s.spawn(move || writer(db, accts, cfg, w, deadline))
            })
            .collect();
        let rs: Vec<_> = (0..cfg.readers)
            .map(|i| {
                let (db, accts, cfg) = (db.clone(), accts.clone(), cfg.clone());
                s.spawn(move || reader(db, accts, cfg, i, deadline))
            })
            .collect();
        let ws: Vec<WriterOut> = ws
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect();
        let rs: Vec<ReaderOut> = rs
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .collect();
        (ws, rs)
    });
    report.elapsed = start.elapsed();

    // Every key's last acknowledged state, and the owner of every value.
    let mut keys: BTreeMap<KeyId, KeyState> = BTreeMap::new();
    for w in &writers {
        report.writes_committed += w.committed;
        report.unique_violations += w.violations;
        report.busy += w.busy;
        report.failures.extend(w.errors.iter().cloned());
        for (k, l) in &w.latency {
            report.latency.entry(k).or_default().merge(l);
        }
        keys.extend(w.keys.iter().map(|(k, v)| (*k, v.clone())));
    }
    for r in &readers {
        report.reads += r.reads;
        report.failures.extend(r.errors.iter().cloned());
        for (k, l) in &r.latency {
            report.latency.entry(k).or_default().merge(l);
        }
    }
    let mut owners: BTreeMap<u32, KeyId> = BTreeMap::new();
    for (k, state) in &keys {
        if let Some((_, Some(u))) = state
            && let Some(other) = owners.insert(*u, *k)
        {
            report.failures.push(format!(
                "I1: value {u} acknowledged as owned by both {other:?} and {k:?}"
            ));
        }
    }
    report.owned_values = owners.len();

    // Close, reopen, verify.
    if let Err(e) = db.close() {
        report.failures.push(format!("close: {e}"));
    }
    let db = match open(&dir) {
        Ok(db) => db,
        Err(e) => {
            report.failures.push(format!("reopen: {e}"));
            return report;
        }
    };
    for (&(a, r, w, n), state) in &keys {
        let key = user_key(w, n);
        let got = db.read(accts[a].id).and_then(|rd| {
            rd.get_in(REGIONS[r], &USERS, key.as_bytes())
                .map(|o| o.map(|rec| rec.to_vec()))
        });
        let want = state.as_ref().map(|s| s.0.clone());
        match got {
            Ok(got) if got == want => {}
            Ok(got) => report.failures.push(format!(
                "after reopen, account {a} region {} key {key}: {} bytes, acknowledged {}",
                REGIONS[r],
                got.map_or("absent".into(), |g| g.len().to_string()),
                want.map_or("absent".into(), |g| g.len().to_string())
            )),
            Err(e) => report
                .failures
                .push(format!("after reopen, get {key}: {e}")),
        }
        report.verified_records += 1;
    }
    for u in 0..cfg.unique_pool {
        let got = db
            .find_unique(&USERS, NS, unique_value(u))
            .map(|h| h.map(|h| (h.account(), db.region_name(h.region()), h.key().to_vec())));
        let want = owners.get(&u).map(|&(a, r, w, n)| {
            (
                accts[a].id,
                Some(REGIONS[r].to_owned()),
                user_key(w, n).into_bytes(),
            )
        });
        match got {
            Ok(got) if got == want => {}
            Ok(got) => report.failures.push(format!(
                "after reopen, find_unique {}: {got:?}, acknowledged owner {want:?}",
                unique_value(u)
            )),
            Err(e) => report
                .failures
                .push(format!("after reopen, find_unique {u}: {e}")),
        }
        report.verified_values += 1;
    }
    match db.scan_all(&USERS) {
        Ok(rows) => {
            let n = rows.filter(|r| r.is_ok()).count();
            let want = keys.values().filter(|s| s.is_some()).count();
            if n != want {
                report
                    .failures
                    .push(format!("scan_all: {n} rows, {want} acknowledged"));
            }
        }
        Err(e) => report.failures.push(format!("scan_all: {e}")),
    }
    match db.audit() {
        Ok(a) => {
            report.audited = (a.records_checked(), a.unique_entries_checked());
            for f in a.findings() {
                report.failures.push(format!("audit: {f}"));
            }
        }
        Err(e) => report.failures.push(format!("audit: {e}")),
    }
    if let Err(e) = db.close() {
        report.failures.push(format!("final close: {e}"));
    }
    report
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--seconds" => {
                let v = value()?;
                let s: f64 = v.parse().map_err(|e| format!("--seconds: {e}"))?;
                cfg.duration = Duration::from_secs_f64(s);
            }
            "--writers" => cfg.writers = num(value()?)? as usize,
            "--readers" => cfg.readers = num(value()?)? as usize,
            "--accounts" => cfg.accounts = num(value()?)?.max(1) as usize,
            "--dir" => cfg.dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                return Err(
                    "usage: load [--seconds S] [--writers W] [--readers R] [--accounts N] [--dir PATH]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(cfg)
}

fn main() {
    let cfg = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let report = run(&cfg);
    report.print();
    if !report.passed() {
        std::process::exit(1);
    }
}
