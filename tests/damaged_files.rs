//! Hostile files: damaged, foreign and misplaced partition files.
//!
//! A small store (3 regions, 4 accounts, plain and unique records) is built once on the
//! in-memory [`SimStorage`] and closed cleanly; every case plants its files, one of them
//! damaged (truncated, a page zeroed, a byte flipped, replaced by another file, ...), and
//! then:
//! - opens the store and, if that succeeds, runs every read (`get`, `get_in`, `scan`,
//!   `find_unique`, `scan_all`, `audit`) and a small write: each returns `Ok` or an
//!   `Error`, never panics; every `Ok` read returns exactly the seeded data. Damaged
//!   pages are opened both ways: with `verify_on_open(true)` (every page checked at open:
//!   no seeded data may read as absent either) and with the default (pages trusted: the
//!   damage is met by the reads and writes themselves). Without the check, damage to an
//!   index page or to an internal row may read as data that is not there; such a case
//!   passes only if `Db::verify` (on a fresh open of the same files) names the damaged
//!   partition;
//! - if the open is refused: no file was modified (bytes compared before and after, and
//!   no file created or removed);
//! - if the damaged file is a region: the store opened with that region disabled works in
//!   the other regions (reads and writes) and leaves the damaged file as it was.
//!
//! Each case runs on its own thread inside `catch_unwind`, with a time limit, so that one
//! test reports every case that panicked or hung (with the phase it was in) instead of
//! stopping at the first. Real files are used only where a case needs them (a directory
//! at a file's path, file permissions).

mod common;

use common::T;
use common::files::{
    NOTES, Node, Snapshot, diff_files, edit_with_redb, plain_redb_file, sim_snapshot, snapshot,
};
use common::model::{
    Acct, Catalog, Commit, Model, Outcome as Predicted, Probes, Rec, classify, compare,
    execute_commit,
};
use common::rng::Rng;
use common::sim::sim_region;
use redb::ReadableTable;
use regionkv::layout::{global_file, region_file};
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Unique};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, mpsc};
use std::time::Duration;

const DIR: &str = "/hostile";

const REGIONS: [&str; 3] = ["us", "eu", "ap"];

const NS: &str = "email";

/// A unique value the seed claims and releases again.
const GONE: &str = "gone@example.com";

const PAGE: usize = 4096;

/// A case that takes longer than this is reported as hung.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// Account i: (name, home, other allowed regions).
const ACCOUNTS: [(&str, &str, &[&str]); 4] = [
    ("a0", "us", &["eu"]),
    ("a1", "eu", &["ap"]),
    ("a2", "ap", &["us", "eu"]),
    ("a3", "us", &[]),
];

/// File path -> bytes, for every file of a store.
type Files = BTreeMap<PathBuf, Vec<u8>>;

#[derive(Clone)]
struct Seed {
    files: Files,
    /// What the seeded store holds (account indices as in `ACCOUNTS`).
    model: Model,
    /// The id of each account, by index.
    ids: Vec<AccountId>,
}

impl Seed {
    fn ids(&self) -> Vec<Option<AccountId>> {
        self.ids.iter().map(|i| Some(*i)).collect()
    }
}

fn path_of(part: &str) -> PathBuf {
    match part {
        "global" => global_file(Path::new(DIR)),
        r => region_file(Path::new(DIR), r),
    }
}

/// Whether `Write::commit` and `Write::get` contain redb's panics (`src/write.rs` runs
/// them through `Partition::contain`). Until they do, a panic in the `write` phase ends
/// its case and is reported, not failed; set this to `true` once they do.
const WRITE_RS_CONTAINED: bool = false;

fn builder() -> Builder {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b.default_region("us")
}

fn value_for(acct: usize, region: &str, i: usize) -> Vec<u8> {
    // Sizes from empty to several KiB, so records span pages and overflow pages exist.
    let len = [0, 1, 17, 100, 700, 3000, 5000, 40][i % 8];
    let tag = format!("{acct}/{region}/{i}:");
    tag.bytes().cycle().take(len).collect()
}

/// Builds the seed store. Two seeds differ only in their random store id (the second is
/// "another store"); the digest key is fixed so that the layout of the unique index, and
/// with it what each damaged byte hits, is the same on every run.
fn build_seed() -> Seed {
    let sim = SimStorage::new();
    let db = builder()
        .digest_key([0x5A; 32])
        .storage(sim.clone())
        .open(DIR)
        .expect("seed open");
    let accounts = ACCOUNTS
        .iter()
        .map(|(_, home, others)| Acct::new(home, others))
        .collect();
    let mut model = Model::new(NOTES.name(), &REGIONS, accounts);
    let ids: Vec<AccountId> = ACCOUNTS
        .iter()
        .map(|(name, home, others)| {
            let mut new = NewAccount::new(*name, *home);
            for o in *others {
                new = new.allow(*o);
            }
            db.create_account(new).expect("create account")
        })
        .collect();
    let accounts = model.accounts.clone();
    let home = accounts[0].home;
    let mut seed_commit = |c: Commit| {
        execute_commit(&db, &NOTES, ids[c.acct], &c).expect("seed commit");
        assert_eq!(model.commit(&c), Predicted::Ok, "{c:?}");
    };
    for (ai, a) in accounts.iter().enumerate() {
        for &region in &a.allowed {
            // Several commits per region: more redb transactions, more pages.
            for batch in 0..3 {
                let recs = (0..4)
                    .map(|j| {
                        let i = batch * 4 + j;
                        // Plain records, and every third one owning a unique value.
                        let uniques = (i % 3 == 0).then(|| {
                            vec![(NS.to_owned(), format!("u{ai}-{region}-{i}@example.com"))]
                        });
                        Rec::Put {
                            key: format!("k{i:02}").into_bytes(),
                            value: value_for(ai, region, i),
                            uniques,
                        }
                    })
                    .collect();
                seed_commit(Commit {
                    acct: ai,
                    region,
                    recs,
                });
            }
        }
    }
    // A record and its value removed again: freed pages and tombstones in the files.
    seed_commit(Commit {
        acct: 0,
        region: home,
        recs: vec![Rec::Put {
            key: b"gone".to_vec(),
            value: b"x".to_vec(),
            uniques: Some(vec![(NS.to_owned(), GONE.to_owned())]),
        }],
    });
    seed_commit(Commit {
        acct: 0,
        region: home,
        recs: vec![Rec::Remove {
            key: b"gone".to_vec(),
        }],
    });
    assert!(db.audit().unwrap().is_clean(), "seed store audits clean");
    db.close().expect("seed close");
    let files = sim
        .paths()
        .into_iter()
        .map(|p| {
            let b = sim.live_bytes(&p).unwrap();
            (p, b)
        })
        .collect();
    Seed { files, model, ids }
}

/// One seed per test binary run; every case starts from a copy of it.
fn seed() -> &'static Seed {
    static SEED: std::sync::OnceLock<Seed> = std::sync::OnceLock::new();
    SEED.get_or_init(build_seed)
}

/// A second, unrelated store built the same way (another store id).
fn other_seed() -> &'static Seed {
    static SEED: std::sync::OnceLock<Seed> = std::sync::OnceLock::new();
    SEED.get_or_init(build_seed)
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics on case threads are recorded (message, location, backtrace if RUST_BACKTRACE is
/// set) instead of printed; panics elsewhere go to the default hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_case = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("case:"));
            if !on_case {
                return default(info);
            }
            let bt = std::backtrace::Backtrace::capture();
            let mut msg = info.to_string();
            if bt.status() == std::backtrace::BacktraceStatus::Captured {
                // Only the frames of redb and regionkv: where it panicked, and on which path.
                let frames: Vec<String> = bt
                    .to_string()
                    .lines()
                    .filter(|l| l.contains("redb::") || l.contains("regionkv::"))
                    .take(16)
                    .map(|l| format!("    {}", l.trim()))
                    .collect();
                msg.push_str(&format!("\n  backtrace:\n{}", frames.join("\n")));
            }
            if std::env::var_os("HOSTILE_VERBOSE").is_some() {
                eprintln!("panic on a case thread: {msg}");
            }
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
        }));
    });
}

/// The files of one case: simulated, or real files in a temporary directory.
enum Env {
    Sim(SimStorage),
    Real(tempfile::TempDir),
}

impl Env {
    fn sim(files: &Files) -> Env {
        let sim = SimStorage::new();
        for (p, b) in files {
            sim.set_bytes(p, b.clone());
        }
        Env::Sim(sim)
    }

    fn real(files: &Files) -> Env {
        let dir = tempfile::tempdir().unwrap();
        for (p, b) in files {
            let to = dir.path().join(p.strip_prefix(DIR).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::write(to, b).unwrap();
        }
        Env::Real(dir)
    }

    fn root(&self) -> PathBuf {
        match self {
            Env::Sim(_) => PathBuf::from(DIR),
            Env::Real(d) => d.path().to_owned(),
        }
    }

    /// The path of a partition file in this environment.
    fn path(&self, part: &str) -> PathBuf {
        self.root().join(path_of(part).strip_prefix(DIR).unwrap())
    }

    fn open(&self, b: Builder) -> Result<Db, Error> {
        match self {
            Env::Sim(sim) => b.storage(sim.clone()).open(DIR),
            Env::Real(d) => b.open(d.path()),
        }
    }

    /// Every file (and directory) of the case, by absolute path.
    fn snapshot(&self) -> Snapshot {
        match self {
            Env::Sim(sim) => sim_snapshot(sim),
            Env::Real(d) => snapshot(d.path())
                .into_iter()
                .map(|(rel, node)| (d.path().join(rel), node))
                .collect(),
        }
    }
}

/// How a case's files are planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Medium {
    Sim,
    Real,
}

/// Extra set-up on real files (after the files are written).
type Prepare = fn(&Env) -> Option<String>;

struct Case {
    name: String,
    /// The partition that was damaged (`global` or a region name).
    part: &'static str,
    files: Files,
    medium: Medium,
    prepare: Option<Prepare>,
    /// Open with `verify_on_open(true)`; else with the default (pages trusted).
    verify: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    name: String,
    /// The damaged partition, and whether the case opened with the page check.
    part: &'static str,
    verify: bool,
    /// Message, location (and backtrace) of a panic, with the phase it happened in.
    panicked: Option<String>,
    hung: Option<String>,
    /// The open's error, if it was refused.
    refused: Option<String>,
    /// Files a refused open (or an open with the damaged region disabled) modified.
    modified: Vec<String>,
    /// Reads that returned data other than the seeded data.
    wrong: Vec<String>,
    /// Reads of seeded data that returned `Ok(None)`: a silent wrong answer.
    missing: Vec<String>,
    /// Reads that returned an error.
    read_errors: usize,
    /// What `audit()` said: `Some(n)` findings, or `None` if it failed or did not run.
    audit_findings: Option<usize>,
    /// Whether the store opened with the damaged region disabled worked; `None` if not run.
    disabled: Option<Result<(), String>>,
    /// A note from the case's set-up (e.g. root ignoring permissions).
    note: Option<String>,
    /// The case opened without the page check: what `Db::verify`, run on a fresh open of
    /// the same files, named damaged (`None`: not run, or that open was refused).
    verify_found: Option<Vec<String>>,
    /// A panic in the `write` phase while `write.rs` does not contain them yet.
    write_panic: Option<String>,
}

/// The phase a case is in, for panic and hang reports.
#[derive(Clone, Default)]
struct Phase(Arc<Mutex<String>>);

impl Phase {
    fn set(&self, p: impl Into<String>) {
        *self.0.lock().unwrap() = p.into();
    }
    fn get(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// What the checks read besides the seeded data: a key never written (absent in every
/// region) and the unique value that was claimed and released again (free).
fn probes() -> Probes {
    Probes {
        keys: vec![b"never-written".to_vec()],
        prefixes: Vec::new(),
        values: vec![(NS.to_owned(), GONE.to_owned())],
    }
}

/// Runs every read against the seeded model ([`compare`]): wrong data and data read as
/// absent are findings, read errors are counted. Then the audit, and a small write per
/// account.
fn exercise(db: &Db, seed: &Seed, phase: &Phase, out: &mut Outcome) {
    let found = compare(
        db,
        &seed.ids(),
        &seed.model,
        &Catalog::default(),
        &probes(),
        &|p| phase.set(p),
    );
    out.wrong.extend(found.wrong);
    out.missing.extend(found.missing);
    out.read_errors += found.errors.len();
    phase.set("audit");
    match db.audit() {
        Ok(report) => out.audit_findings = Some(report.findings().len()),
        Err(_) => out.read_errors += 1,
    }
    // A small write per account: Ok or an error, never a panic (its data is not checked:
    // the damaged store is thrown away).
    for id in &seed.ids {
        phase.set(format!("write {id}"));
        if let Ok(mut w) = db.write(*id) {
            let _ = w.insert(&NOTES, b"after-damage", b"w");
            let _ = w.insert_unique(
                &NOTES,
                b"after-damage-u",
                b"u",
                &[Unique::new(NS, format!("after-{id}").as_str())],
            );
            let _ = w.commit();
        }
    }
}

/// The store opened with region `damaged` disabled: every read must answer as the model
/// says with that region disabled (its rows and values `RegionDisabled`, the others
/// exactly the seeded data), a plain and a unique write must succeed in every other region
/// of every account and be read back (the model with those writes, checked again), writes
/// in the damaged region must be refused, the audit must be clean, and the damaged file
/// must stay as it was.
fn disabled_check(
    env: &Env,
    damaged: &'static str,
    seed: &Seed,
    phase: &Phase,
    keep: &mut Vec<Db>,
) -> Result<(), String> {
    let damaged_path = env.path(damaged);
    let before = env.snapshot().get(&damaged_path).cloned();
    let mut b = Db::builder();
    for r in REGIONS.iter().filter(|r| **r != damaged) {
        b = b.region(*r);
    }
    let default = REGIONS.iter().copied().find(|r| *r != damaged).unwrap();
    b = b.disable_region(damaged).default_region(default);
    phase.set(format!("open with {damaged} disabled"));
    let db = env
        .open(b)
        .map_err(|e| format!("open with {damaged} disabled: {e}"))?;
    keep.push(db.clone());
    let cat = Catalog {
        disabled: vec![damaged],
        unsettled: false,
    };
    let ids = seed.ids();
    let mut model = seed.model.clone();
    let mut errs = Vec::new();
    let check = |model: &Model, when: &str, errs: &mut Vec<String>| {
        let found = compare(&db, &ids, model, &cat, &probes(), &|p| {
            phase.set(format!("disabled {when}: {p}"))
        });
        if let Err(e) = found.into_result() {
            errs.push(format!("{when}: {e}"));
        }
    };
    check(&model, "seeded data", &mut errs);
    for (acct, a) in seed.model.accounts.iter().enumerate() {
        let id = seed.ids[acct];
        for &region in &a.allowed {
            phase.set(format!("disabled: write {id} in {region}"));
            if region == damaged {
                let w = db.write_in(id, region);
                if !matches!(w, Err(Error::RegionDisabled(_))) {
                    errs.push(format!("write_in {id} {region}: {:?}", w.map(|_| ())));
                }
                continue;
            }
            let fresh = format!("fresh-{id}-{region}@example.com");
            let c = Commit {
                acct,
                region,
                recs: vec![
                    Rec::Put {
                        key: b"after-disable".to_vec(),
                        value: b"plain".to_vec(),
                        uniques: None,
                    },
                    Rec::Put {
                        key: b"after-disable-u".to_vec(),
                        value: b"uniq".to_vec(),
                        uniques: Some(vec![(NS.to_owned(), fresh)]),
                    },
                ],
            };
            let r = execute_commit(&db, &NOTES, id, &c);
            let want = model.commit(&c);
            if classify(&r) != Some(want) || want != Predicted::Ok {
                errs.push(format!("write in {region} by {id}: {r:?}, model {want:?}"));
            }
        }
    }
    check(&model, "after writes", &mut errs);
    phase.set("disabled: audit");
    match db.audit() {
        Ok(rep) if rep.is_clean() => {}
        Ok(rep) => errs.push(format!(
            "audit with {damaged} disabled: {:?}",
            rep.findings()
        )),
        Err(e) => errs.push(format!("audit with {damaged} disabled: {e}")),
    }
    phase.set("disabled: close");
    if let Err(e) = db.close() {
        errs.push(format!("close: {e}"));
    }
    let after = env.snapshot().get(&damaged_path).cloned();
    if before != after {
        errs.push(format!(
            "the disabled region's file {} was modified",
            damaged_path.display()
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// Every `Db` a case opens is also pushed to `keep`, which lives outside `catch_unwind`:
/// after a panic inside redb its mutexes are poisoned and dropping the database would
/// panic again while unwinding (an abort), so the caller leaks them instead.
fn run_inner(case: &Case, phase: &Phase, out: &mut Outcome, keep: &mut Vec<Db>) {
    let env = match case.medium {
        Medium::Sim => Env::sim(&case.files),
        Medium::Real => Env::real(&case.files),
    };
    if let Some(prep) = case.prepare {
        phase.set("prepare");
        out.note = prep(&env);
    }
    let seeded = seed();
    let before = env.snapshot();
    phase.set("open");
    match env.open(builder().verify_on_open(case.verify)) {
        Ok(db) => {
            keep.push(db.clone());
            exercise(&db, seeded, phase, out);
            phase.set("close");
            let _ = db.close();
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            out.refused = Some(msg);
            out.modified = diff_files(&before, &env.snapshot());
        }
    }
    if !case.verify && (out.read_errors > 0 || !out.missing.is_empty()) {
        // What the page check finds in the same files, opened afresh (the open above may
        // have written to them).
        let env = match case.medium {
            Medium::Sim => Env::sim(&case.files),
            Medium::Real => Env::real(&case.files),
        };
        if let Some(prep) = case.prepare {
            prep(&env);
        }
        phase.set("verify");
        if let Ok(db) = env.open(builder()) {
            keep.push(db.clone());
            out.verify_found = db
                .verify()
                .ok()
                .map(|r| r.damaged.into_iter().map(|d| d.partition).collect());
            let _ = db.close();
        }
        if let Env::Real(d) = &env {
            restore_permissions(d.path());
        }
    }
    let is_region = REGIONS.contains(&case.part);
    if is_region && (out.refused.is_some() || out.read_errors > 0) {
        // Start again from the planted files (a successful open above may have written).
        let env = match case.medium {
            Medium::Sim => Env::sim(&case.files),
            Medium::Real => Env::real(&case.files),
        };
        if let Some(prep) = case.prepare {
            prep(&env);
        }
        out.disabled = Some(disabled_check(&env, case.part, seeded, phase, keep));
        if let Env::Real(d) = &env {
            restore_permissions(d.path());
        }
    }
    // Restore permissions so the temporary directory can be removed.
    if let Env::Real(d) = &env {
        restore_permissions(d.path());
    }
}

fn restore_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (rel, n) in snapshot(dir) {
        let mode = if n == Node::Dir { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(dir.join(rel), std::fs::Permissions::from_mode(mode));
    }
}

/// Runs one case on its own thread, catching panics and hangs.
fn run_case(case: Case) -> Outcome {
    install_hook();
    if std::env::var_os("HOSTILE_VERBOSE").is_some() {
        eprintln!("case: {}", case.name);
    }
    let phase = Phase::default();
    let (tx, rx) = mpsc::channel();
    let name = case.name.clone();
    let p = phase.clone();
    std::thread::Builder::new()
        .name(format!("case:{name}"))
        .spawn(move || {
            let mut out = Outcome {
                name: case.name.clone(),
                part: case.part,
                verify: case.verify,
                ..Default::default()
            };
            let mut keep = Vec::new();
            let r = catch_unwind(AssertUnwindSafe(|| {
                run_inner(&case, &p, &mut out, &mut keep)
            }));
            if r.is_err() {
                let msg = LAST_PANIC
                    .with(|l| l.borrow_mut().take())
                    .unwrap_or_default();
                let msg = format!("in phase `{}`: {msg}", p.get());
                if !WRITE_RS_CONTAINED && p.get().starts_with("write ") {
                    out.write_panic = Some(msg);
                } else {
                    out.panicked = Some(msg);
                }
                std::mem::forget(keep);
            } else {
                drop(keep);
            }
            let _ = tx.send(out);
        })
        .unwrap();
    match rx.recv_timeout(CASE_LIMIT) {
        Ok(out) => out,
        // The thread is left running; the case is reported.
        Err(_) => Outcome {
            name: name.clone(),
            hung: Some(format!(
                "no result after {CASE_LIMIT:?}, phase `{}`",
                phase.get()
            )),
            ..Default::default()
        },
    }
}

/// One broken rule, for the grouped report.
struct Failure {
    rule: &'static str,
    case: String,
    /// What the failures of one group share (panic location, error kind, ...).
    signature: String,
    detail: String,
}

/// Replaces every run of digits by `#`, so failures that differ only in numbers group.
fn shape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_num = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_num {
                out.push('#');
            }
            in_num = true;
        } else {
            out.push(c);
            in_num = false;
        }
    }
    out
}

fn failures_of(o: &Outcome) -> Vec<Failure> {
    let mut v = Vec::new();
    let mut push = |rule, signature: String, detail: String| {
        v.push(Failure {
            rule,
            case: o.name.clone(),
            signature,
            detail,
        })
    };
    if let Some(p) = &o.panicked {
        // "in phase `get #3 ...`: panicked at <file:line:col>:\n<message>..."
        let phase = p
            .split('`')
            .nth(1)
            .unwrap_or("")
            .split(' ')
            .next()
            .unwrap_or("");
        let at = p
            .split("panicked at ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?");
        let at = at.rsplit("/src/").next().unwrap_or(at);
        push("PANIC", format!("in `{phase}` at {at}"), p.clone());
    }
    if let Some(h) = &o.hung {
        push("HUNG", shape(h), h.clone());
    }
    if !o.modified.is_empty() {
        let err = o.refused.as_deref().unwrap_or("");
        let detail = format!("refused with `{err}`; {}", o.modified.join("; "));
        let kind = err.split(':').take(3).collect::<Vec<_>>().join(":");
        push("MODIFIED BY A REFUSED OPEN", shape(&kind), detail);
    }
    let audit = match o.audit_findings {
        Some(n) => format!("(audit found {n} problems)"),
        None => "(audit failed)".to_owned(),
    };
    for w in &o.wrong {
        push(
            "WRONG DATA",
            w.split(' ').next().unwrap_or("").to_owned(),
            format!("{w} {audit}"),
        );
    }
    // Without the page check at open, damage to an index page or an internal row can read
    // as absent data: acceptable only where the page check on demand finds that damage.
    let found_by_verify = o
        .verify_found
        .as_ref()
        .is_some_and(|parts| parts.iter().any(|p| p == o.part));
    if o.verify || !found_by_verify {
        for m in &o.missing {
            let op = m.split(' ').next().unwrap_or("");
            push(
                "SEEDED DATA READ AS ABSENT",
                op.to_owned(),
                format!("{m} {audit}"),
            );
        }
    }
    if !o.verify && o.read_errors > 0 && !found_by_verify {
        push(
            "DAMAGE MET BY READS THAT DB::VERIFY DOES NOT FIND",
            format!("{:?}", o.verify_found),
            format!(
                "{} read errors; verify named {:?}",
                o.read_errors, o.verify_found
            ),
        );
    }
    if let Some(Err(e)) = &o.disabled {
        push("DISABLED REGION CHECK", shape(e), e.clone());
    }
    v
}

/// Runs every case; prints the counts (the number of cases, for the record)
/// and fails with every broken rule, grouped by rule and signature.
fn run_all(group: &str, cases: Vec<Case>) -> Vec<Outcome> {
    let n = cases.len();
    let outs: Vec<Outcome> = cases.into_iter().map(run_case).collect();
    let count = |f: &dyn Fn(&Outcome) -> bool| outs.iter().filter(|o| f(o)).count();
    let refused = count(&|o| o.refused.is_some());
    let opened = count(&|o| o.refused.is_none() && o.panicked.is_none() && o.hung.is_none());
    let with_errors = count(&|o| o.refused.is_none() && o.read_errors > 0);
    let disabled_runs = count(&|o| o.disabled.is_some());
    eprintln!(
        "hostile files [{group}]: {n} cases: {refused} refused, {opened} opened ({with_errors} \
         of them with read errors), {} panicked; {disabled_runs} re-opened with the damaged \
         region disabled; {} with absent data that Db::verify explains; {} panicked in a \
         write (write.rs does not contain them yet)",
        count(&|o| o.panicked.is_some()),
        count(&|o| !o.missing.is_empty() && !o.verify),
        count(&|o| o.write_panic.is_some()),
    );
    for o in &outs {
        if let Some(note) = &o.note {
            eprintln!("  note [{}]: {note}", o.name);
        }
        if let Some(p) = &o.write_panic {
            eprintln!(
                "  write panic [{}]: {}",
                o.name,
                p.lines().next().unwrap_or("")
            );
        }
    }
    let failures: Vec<Failure> = outs.iter().flat_map(failures_of).collect();
    let mut groups: BTreeMap<(&str, &str), Vec<&Failure>> = BTreeMap::new();
    for f in &failures {
        groups.entry((f.rule, &f.signature)).or_default().push(f);
    }
    let mut report = String::new();
    for ((rule, sig), fs) in &groups {
        let cases: BTreeSet<&str> = fs.iter().map(|f| f.case.as_str()).collect();
        let examples: Vec<&str> = cases.iter().take(4).copied().collect();
        report.push_str(&format!(
            "\n{rule}: {} cases ({} findings), {sig}\n  cases e.g.: {}\n  first: {}\n",
            cases.len(),
            fs.len(),
            examples.join(" | "),
            fs[0].detail.replace('\n', "\n    ")
        ));
    }
    if std::env::var_os("HOSTILE_VERBOSE").is_some() {
        for f in &failures {
            eprintln!("{} [{}]: {}", f.rule, f.case, f.detail);
        }
    }
    let broken: BTreeSet<&str> = failures.iter().map(|f| f.case.as_str()).collect();
    assert!(
        failures.is_empty(),
        "[{group}] {} of {n} cases broke a rule (HOSTILE_VERBOSE=1 lists every finding, \
         RUST_BACKTRACE=1 adds redb/regionkv frames to panics):{report}",
        broken.len()
    );
    outs
}

fn with_file(part: &'static str, bytes: Vec<u8>) -> Files {
    let mut files = seed().files.clone();
    files.insert(path_of(part), bytes);
    files
}

/// A case on simulated files, opened with the default (no page check at open).
fn sim_case(name: String, part: &'static str, files: Files) -> Case {
    Case {
        name,
        part,
        files,
        medium: Medium::Sim,
        prepare: None,
        verify: false,
    }
}

/// Every case twice: with the default open, and with `verify_on_open(true)`.
fn both_ways(cases: Vec<Case>) -> Vec<Case> {
    let verified: Vec<Case> = cases
        .iter()
        .map(|c| Case {
            name: format!("{} [verified open]", c.name),
            part: c.part,
            files: c.files.clone(),
            medium: c.medium,
            prepare: c.prepare,
            verify: true,
        })
        .collect();
    cases.into_iter().chain(verified).collect()
}

const PARTS: [&str; 4] = ["global", "us", "eu", "ap"];

fn original(part: &str) -> &'static [u8] {
    &seed().files[&path_of(part)]
}

#[test]
fn the_seed_store_opens_and_reads_correctly() {
    let outs = run_all(
        "control",
        vec![sim_case("pristine".into(), "global", seed().files.clone())],
    );
    let o = &outs[0];
    assert!(o.refused.is_none(), "{:?}", o.refused);
    assert_eq!((o.read_errors, o.missing.len()), (0, 0));
}

#[test]
fn truncated_files() {
    let mut cases = Vec::new();
    for part in PARTS {
        let b = original(part);
        let len = b.len();
        let mut lens: BTreeSet<usize> = [
            0,
            1,
            8,
            64,
            511,
            512,
            1024,
            PAGE - 1,
            PAGE,
            PAGE + 1,
            2 * PAGE,
            len / 4,
            len / 2,
            3 * len / 4,
            len.saturating_sub(PAGE), // last page missing
            len.saturating_sub(2 * PAGE),
            len - 1,
        ]
        .into_iter()
        .filter(|&l| l < len)
        .collect();
        // Every page boundary of the file, too.
        lens.extend((1..len / PAGE).map(|p| p * PAGE));
        for l in lens {
            cases.push(sim_case(
                format!("{part} truncated to {l} of {len} bytes"),
                part,
                with_file(part, b[..l].to_vec()),
            ));
        }
    }
    run_all("truncated", both_ways(cases));
}

#[test]
fn zeroed_pages() {
    let mut cases = Vec::new();
    for part in PARTS {
        let b = original(part);
        for p in 0..b.len().div_ceil(PAGE) {
            let mut d = b.to_vec();
            let end = ((p + 1) * PAGE).min(d.len());
            d[p * PAGE..end].fill(0);
            if d == b {
                continue; // the page was zero already: not a damaged file
            }
            cases.push(sim_case(
                format!("{part} page {p} zeroed"),
                part,
                with_file(part, d),
            ));
        }
    }
    run_all("zeroed pages", both_ways(cases));
}

#[test]
fn byte_flips() {
    let mut cases = Vec::new();
    for (i, part) in PARTS.into_iter().enumerate() {
        let b = original(part);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
        let mut offsets = BTreeSet::new();
        // The header and first page, where redb keeps its commit slots...
        while offsets.len() < 60 {
            offsets.insert(rng.below(PAGE.min(b.len())));
        }
        // ...and the whole file.
        while offsets.len() < 200 {
            offsets.insert(rng.below(b.len()));
        }
        for off in offsets {
            let mask = (rng.next_u64() as u8) | 1;
            let mut d = b.to_vec();
            d[off] ^= mask;
            cases.push(sim_case(
                format!("{part} byte {off} xor {mask:#04x}"),
                part,
                with_file(part, d),
            ));
        }
    }
    run_all("byte flips", both_ways(cases));
}

fn set_meta(bytes: &[u8], key: &str, value: &[u8]) -> Vec<u8> {
    edit_with_redb(bytes, |db| {
        let w = db.begin_write().unwrap();
        {
            let mut t = w
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("_meta"))
                .unwrap();
            assert!(t.get(key).unwrap().is_some(), "meta key {key} exists");
            t.insert(key, value).unwrap();
        }
        w.commit().unwrap();
    })
}

#[test]
fn foreign_misplaced_and_newer_files() {
    let other = other_seed();
    assert_ne!(other.files, seed().files, "two stores differ");
    let newer = (regionkv::FORMAT_VERSION + 1).to_le_bytes();
    let mut cases = Vec::new();
    for part in PARTS {
        let own = original(part);
        cases.push(sim_case(
            format!("{part}: empty file"),
            part,
            with_file(part, Vec::new()),
        ));
        cases.push(sim_case(
            format!("{part}: another store's {part}"),
            part,
            with_file(part, other.files[&path_of(part)].clone()),
        ));
        cases.push(sim_case(
            format!("{part}: newer format version"),
            part,
            with_file(part, set_meta(own, "format_version", &newer)),
        ));
        cases.push(sim_case(
            format!("{part}: format version 0"),
            part,
            with_file(part, set_meta(own, "format_version", &0u32.to_le_bytes())),
        ));
        cases.push(sim_case(
            format!("{part}: a plain redb file without meta"),
            part,
            with_file(part, plain_redb_file()),
        ));
        let mut rng = Rng(part.len() as u64 * 7919 + 1);
        cases.push(sim_case(
            format!("{part}: random bytes"),
            part,
            with_file(part, (0..own.len()).map(|_| rng.next_u64() as u8).collect()),
        ));
        cases.push(sim_case(
            format!("{part}: only the first page"),
            part,
            with_file(part, own[..PAGE.min(own.len())].to_vec()),
        ));
        let mut doubled = own.to_vec();
        doubled.extend_from_slice(own);
        cases.push(sim_case(
            format!("{part}: file followed by a copy of itself"),
            part,
            with_file(part, doubled),
        ));
        let mut padded = own.to_vec();
        padded.resize(own.len() + 3 * PAGE + 17, 0xA5);
        cases.push(sim_case(
            format!("{part}: trailing garbage"),
            part,
            with_file(part, padded),
        ));
        if part != "global" {
            cases.push(sim_case(
                format!("{part}: the global file given as region {part}"),
                part,
                with_file(part, original("global").to_vec()),
            ));
            cases.push(sim_case(
                format!("{part}: another store's global file as region {part}"),
                part,
                with_file(part, other.files[&path_of("global")].clone()),
            ));
            cases.push(sim_case(
                format!("{part}: region id changed in meta"),
                part,
                with_file(part, set_meta(own, "region_id", &99u16.to_le_bytes())),
            ));
            cases.push(sim_case(
                format!("{part}: store id changed in meta"),
                part,
                with_file(part, set_meta(own, "db_uuid", &[7u8; 16])),
            ));
            let mut files = seed().files.clone();
            files.remove(&path_of(part));
            cases.push(sim_case(format!("{part}: file missing"), part, files));
            for from in REGIONS.iter().filter(|r| **r != part) {
                cases.push(sim_case(
                    format!("{part}: this store's {from} file as {part}"),
                    part,
                    with_file(part, original(from).to_vec()),
                ));
                cases.push(sim_case(
                    format!("{part}: another store's {from} file as {part}"),
                    part,
                    with_file(part, other.files[&path_of(from)].clone()),
                ));
            }
        } else {
            for from in REGIONS {
                cases.push(sim_case(
                    format!("global: region file {from} given as the global file"),
                    part,
                    with_file(part, original(from).to_vec()),
                ));
            }
            cases.push(sim_case(
                "global: partition kind changed to region".into(),
                part,
                with_file(part, set_meta(own, "kind", &[2])),
            ));
            cases.push(sim_case(
                "global: digest key changed".into(),
                part,
                with_file(part, set_meta(own, "digest_key", &[9u8; 32])),
            ));
        }
    }
    run_all("foreign, misplaced and newer files", cases);
}

fn dir_instead_of(env: &Env, part: &str) -> Option<String> {
    let p = env.path(part);
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("inside"), b"x").unwrap();
    None
}

/// Makes a file read-only. Tests may run as root, whom permission bits do not stop: then
/// the open may legitimately succeed, and the note says so.
fn read_only(env: &Env, part: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let p = env.path(part);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    if std::fs::OpenOptions::new().write(true).open(&p).is_ok() {
        Some(format!(
            "{part} is mode 0444 but this user (root?) can still write it: the open may succeed"
        ))
    } else {
        None
    }
}

fn read_only_dir(env: &Env, _part: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let regions = env.root().join("regions");
    std::fs::set_permissions(&regions, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o555)).unwrap();
    None
}

#[test]
fn real_files_directories_and_permissions() {
    let mut cases = Vec::new();
    macro_rules! real {
        ($name:expr, $part:expr, $prep:expr) => {
            cases.push(Case {
                name: $name.to_string(),
                part: $part,
                files: seed().files.clone(),
                medium: Medium::Real,
                prepare: Some($prep),
                verify: false,
            })
        };
    }
    real!("global: a directory at global.redb", "global", |e| {
        dir_instead_of(e, "global")
    });
    real!("us: a directory at us.redb", "us", |e| dir_instead_of(
        e, "us"
    ));
    real!("eu: a directory at eu.redb", "eu", |e| dir_instead_of(
        e, "eu"
    ));
    real!("ap: a directory at ap.redb", "ap", |e| dir_instead_of(
        e, "ap"
    ));
    real!("global: read-only file", "global", |e| read_only(
        e, "global"
    ));
    real!("us: read-only file", "us", |e| read_only(e, "us"));
    real!("eu: read-only file", "eu", |e| read_only(e, "eu"));
    real!("ap: read-only file", "ap", |e| read_only(e, "ap"));
    real!(
        "global: read-only store and regions directories",
        "global",
        |e| read_only_dir(e, "global")
    );
    let outs = run_all("real files", cases);
    // Without root, a read-only partition is refused with an error (writes would fail);
    // as root, whatever happened was no panic and left no wrong data (checked above).
    for o in &outs {
        if o.name.contains("read-only file") && o.note.is_none() {
            assert!(o.refused.is_some(), "[{}] opened a read-only file", o.name);
        }
        if o.name.contains("directory at") {
            assert!(o.refused.is_some(), "[{}] opened", o.name);
        }
    }
}

/// A global file whose digest key was changed (as one flipped byte in its meta would):
/// the store must refuse it, or go on finding every owned value and refusing a second
/// claim. Silently forgetting every claim would let a value get two owners (I1).
#[test]
fn changed_digest_key_must_not_allow_a_second_owner() {
    let files = with_file(
        "global",
        set_meta(original("global"), "digest_key", &[9u8; 32]),
    );
    let env = Env::sim(&files);
    let db = match env.open(builder()) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("refused: {e}");
            return;
        }
    };
    let seeded = seed();
    let ((_, value), (owner, _, _)) = seeded.model.owners.iter().next().unwrap();
    let owner = seeded.ids[*owner];
    let thief = seeded.ids.iter().copied().find(|a| *a != owner).unwrap();
    let found = db
        .find_unique(&NOTES, NS, value)
        .map(|h| h.map(|h| h.account()));
    let mut w = db.write(thief).unwrap();
    w.insert_unique(&NOTES, b"thief", b"x", &[Unique::new(NS, value)])
        .unwrap();
    let second_claim = w.commit();
    let audit = db.audit().unwrap();
    assert!(
        matches!(found, Ok(Some(a)) if a == owner) && second_claim.is_err(),
        "value {value} owned by {owner}: find_unique -> {found:?}; a claim by {} -> {:?}; \
         audit afterwards: {:?}",
        thief,
        second_claim,
        audit.findings()
    );
}

// ======================================================================================
// damaged files (random byte flips) opened with `verify_on_open(true)` and with the default,
// through the open-time checks (stale `last_txn`, `_doubtful`, `clean_close`) and then
// audit / reads / a write / close: never a panic.
//
// Unverified, one of the 2000 aborts the process, and is skipped (KNOWN_ABORTS): iteration
// 187 flips global.redb at 4103 (0x80), 100850 (0x02), 62268 (0x04), a damaged entry of
// redb's freed-page tree. The first durable commit of the file (now the probe's trial
// commit, in its copy-on-write view; before it, the open's first synced global commit)
// panics in `WriteTransaction::extract_freed_pages`, and while that panic unwinds, redb
// 4.6's `Drop for ExtractIf` closes its range, reads the damaged page again and panics a
// second time: "panic in a destructor during cleanup", an abort no `catch_unwind` can
// stop. redb's, reachable only with verification off; documented on
// `Builder::verify_on_open`. Reproduce: `DMG_ONLY=187 cargo test --test damaged_files
// damaged_files_unverified -- --nocapture` (aborts). Earlier, the same sweep found an abort
// in the open probe's close (fixed: the probe's view fails every I/O once the look is over)
// and a panic in the close of a store whose global file was damaged (fixed: a partition's
// redb database is dropped inside `catch_unwind`).
// ======================================================================================

/// Iterations of the unverified sweep that abort the process inside redb (above).
const KNOWN_ABORTS: &[u64] = &[187];

fn damage_builder(sim: &SimStorage, verify: bool) -> regionkv::Builder {
    Db::builder()
        .storage(sim.clone())
        .verify_on_open(verify)
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn damage_base() -> Vec<(PathBuf, Vec<u8>)> {
    let sim = SimStorage::new();
    let db = damage_builder(&sim, true)
        .region("us")
        .region("eu")
        .open(DIR)
        .unwrap();
    let e = db
        .create_account(NewAccount::new("e", "eu").allow("us").max_records(50))
        .unwrap();
    let u = db.create_account(NewAccount::new("u", "us")).unwrap();
    // Record `k<i>` owning value `v<i>` in namespace `m`.
    let claim = |a: AccountId, r: &str, i: u32| {
        let mut w = db.write_in(a, r).unwrap();
        w.insert_unique(
            &T,
            format!("k{i}").as_bytes(),
            b"payload",
            &[Unique::new("m", &format!("v{i}"))],
        )
        .unwrap();
        w.commit().unwrap();
    };
    for i in 0..20u32 {
        let (a, r) = if i % 2 == 0 { (e, "eu") } else { (u, "us") };
        claim(a, r, i);
    }
    db.checkpoint().unwrap();
    for i in 20..26u32 {
        claim(e, "eu", i);
    }
    // an unknown write in eu (doubtful row)
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Syncs);
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

fn exercise_damaged(sim: &SimStorage, verify: bool, eu_disabled: bool) {
    let bl = damage_builder(sim, verify).region("us");
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
            IN_COMMIT.with(|c| c.set(true));
            let _ = w.commit();
            IN_COMMIT.with(|c| c.set(false));
        }
    }
    let _ = db.forfeit_unsettled("eu");
    let _ = db.disable_region("eu");
    let _ = db.close();
}

thread_local! {
    /// Whether `exercise_damaged` is inside `Write::commit` (see [`WRITE_RS_CONTAINED`]).
    static IN_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The panics of `iters` damaged stores (`run_flips`'s first list), and those inside a
/// `Write::commit` while write.rs does not contain them (its second).
fn run_flips(verify: bool, iters: u64) -> (Vec<String>, Vec<String>) {
    run_flips_skipping(verify, iters, &[])
}

/// [`run_flips`] without the iterations in `skip` (their damage is generated, not opened).
fn run_flips_skipping(verify: bool, iters: u64, skip: &[u64]) -> (Vec<String>, Vec<String>) {
    let files = damage_base();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut next = |m: u64| rng.next(m);
    let mut panics = Vec::new();
    let mut in_commit = Vec::new();
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
        // DMG_ONLY=n runs iteration n alone (skipped or not); DMG_SKIP=n,m skips more.
        let skipped = match std::env::var("DMG_ONLY") {
            Ok(only) => only != it.to_string(),
            Err(_) => {
                skip.contains(&it)
                    || std::env::var("DMG_SKIP")
                        .unwrap_or_default()
                        .split(',')
                        .any(|s| s == it.to_string())
            }
        };
        if skipped {
            continue;
        }
        if std::env::var("DMG_TRACE").is_ok() {
            eprintln!(
                "it={it} file={} flips={flips:?} eu_dis={eu_dis}",
                files[fi].0.display()
            );
        }
        IN_COMMIT.with(|c| c.set(false));
        let r = catch_unwind(AssertUnwindSafe(|| exercise_damaged(&sim, verify, eu_dis)));
        if let Err(p) = r {
            let msg = common::panic_message(&*p);
            let what = format!(
                "it={it} file={} flips={flips:?} eu_disabled={eu_dis}: {msg}",
                files[fi].0.display()
            );
            if !WRITE_RS_CONTAINED && IN_COMMIT.with(|c| c.get()) {
                in_commit.push(what);
            } else {
                panics.push(what);
            }
        }
    }
    (panics, in_commit)
}

// Guard: 2000 random byte flips, opened with verification on, never panic.
#[test]
fn damaged_files_verified_open_never_panics() {
    // The sweep runs on a "case:" thread so that the panic hook of this file records its
    // panics (they are reported below) instead of printing them, and leaves the hook of
    // the other tests of this binary in place.
    install_hook();
    let p = std::thread::Builder::new()
        .name("case: random byte flips".into())
        .spawn(|| run_flips(true, 2000))
        .unwrap()
        .join()
        .unwrap();
    let p = [p.0, p.1].concat();
    assert!(
        p.is_empty(),
        "{} panics with verify_on_open(true):\n{}",
        p.len(),
        p.join("\n")
    );
}

// The same 2000 damaged stores opened with the default (pages trusted): redb meets the
// damage while the store runs, and every panic it raises is contained (an error).
#[test]
fn damaged_files_unverified_open_never_panics() {
    install_hook();
    let (p, in_commit) = std::thread::Builder::new()
        .name("case: random byte flips, unverified".into())
        .spawn(|| run_flips_skipping(false, 2000, KNOWN_ABORTS))
        .unwrap()
        .join()
        .unwrap();
    for w in &in_commit {
        eprintln!("panic inside Write::commit (write.rs does not contain them yet): {w}");
    }
    assert!(
        p.is_empty(),
        "{} panics with verify_on_open(false):\n{}",
        p.len(),
        p.join("\n")
    );
}
