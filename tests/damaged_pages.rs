//! Damaged pages of a cleanly closed store, opened with the default (no page check at open:
//! `Builder::verify_on_open(false)`), so that the damage is met by reads and writes after
//! a successful open rather than by the open.
//!
//! A store (regions us, eu, ap; an account homed in each and allowed in a second; records
//! of many sizes, every third owning a unique value) is built once on [`SimStorage`] and
//! closed cleanly. Each case damages one page of one file (zeroed, 24 bytes overwritten at
//! a random place in it, or another page of the file copied over it) and then:
//!
//! 1. opens the store; a refused open is an `Error` and leaves every byte as it was;
//! 2. reads everything ([`compare`] with what was written): no read returns data other than
//!    what was written (a value, an owner, a row of another account or key); data read as
//!    absent and read errors are counted;
//! 3. reads every record once more, one by one: an error names the damaged partition, never
//!    another one;
//! 4. writes, in every region of every account, a plain record and one owning a fresh
//!    unique value: each commit is `Ok` or an `Error`; one that is `Ok` reads back as
//!    written (or as an error), and the seeded data still reads as in 2;
//! 5. if the damaged partition was found damaged (an `Error::Corrupt` naming it): every
//!    other region keeps working (a write and its read back in each; a unique one too when
//!    the damage is in a region, so the global file is intact);
//! 6. `Db::verify` on a fresh open of the damaged files names the damaged partition and no
//!    other whenever step 2 met the damage (an error, or data read as absent), and never
//!    names another partition.
//!
//! Every case runs on its own thread inside `catch_unwind`: a panic anywhere is a failure
//! (writes included: `Write::get` and the group commit contain redb's panics). The other tests check `Db::verify` (in a running
//! store, on its latest commit, on real files whose locks it must keep),
//! `verified_at_open` after a power loss, and `verify_on_open(true)`.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::files::find_all;
use common::model::{Acct, Catalog, Commit, Model, Outcome as Predicted, Probes, Rec};
use common::rng::Rng;
use common::{compare, execute_commit, panic_message};
use regionkv::layout::{global_file, region_file};
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Raw, Table, Unique};

const DIR: &str = "/damaged-pages";
const REGIONS: [&str; 3] = ["us", "eu", "ap"];
const PARTS: [&str; 4] = ["global", "us", "eu", "ap"];
const NS: &str = "email";
const PAGE: usize = 4096;

/// The seeded records.
const NOTES: Table<Raw> = Table::new("notes");
/// What the cases write after the damage (not in the model: its rows are checked apart).
const AFTER: Table<Raw> = Table::new("after");

/// Account i: (name, home, other allowed region).
const ACCOUNTS: [(&str, &str, &str); 3] =
    [("a0", "us", "eu"), ("a1", "eu", "ap"), ("a2", "ap", "us")];

type Files = BTreeMap<PathBuf, Vec<u8>>;

struct Seed {
    files: Files,
    model: Model,
    ids: Vec<AccountId>,
}

fn path_of(part: &str) -> PathBuf {
    match part {
        "global" => global_file(Path::new(DIR)),
        r => region_file(Path::new(DIR), r),
    }
}

fn builder(sim: &SimStorage) -> Builder {
    let mut b = Db::builder();
    for r in REGIONS {
        b = b.region(r);
    }
    b.default_region("us")
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, Duration::from_secs(3600))
}

fn value_for(acct: usize, region: &str, i: usize) -> Vec<u8> {
    // From empty to several pages: leaf, branch and overflow pages in every region file.
    let len = [0, 1, 17, 100, 700, 3000, 9000, 40][i % 8];
    let tag = format!("{acct}/{region}/{i}:");
    tag.bytes().cycle().take(len).collect()
}

fn build_seed() -> Seed {
    let sim = SimStorage::new();
    let db = builder(&sim)
        .digest_key([7; 32])
        .open(DIR)
        .expect("seed open");
    let accounts = ACCOUNTS
        .iter()
        .map(|(_, home, other)| Acct::new(home, &[other]))
        .collect();
    let mut model = Model::new(NOTES.name(), &REGIONS, accounts);
    let ids: Vec<AccountId> = ACCOUNTS
        .iter()
        .map(|(name, home, other)| {
            db.create_account(NewAccount::new(*name, *home).allow(*other))
                .expect("create account")
        })
        .collect();
    for (ai, (_, home, other)) in ACCOUNTS.iter().enumerate() {
        for region in [*home, *other] {
            for batch in 0..4 {
                let recs = (0..6)
                    .map(|j| {
                        let i = batch * 6 + j;
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
                let c = Commit {
                    acct: ai,
                    region,
                    recs,
                };
                execute_commit(&db, &NOTES, ids[ai], &c).expect("seed commit");
                assert_eq!(model.commit(&c), Predicted::Ok, "{c:?}");
            }
        }
    }
    assert!(
        db.audit().unwrap().is_clean(),
        "the seed store audits clean"
    );
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

fn seed() -> &'static Seed {
    static SEED: std::sync::OnceLock<Seed> = std::sync::OnceLock::new();
    SEED.get_or_init(build_seed)
}

fn plant(files: &Files) -> SimStorage {
    let sim = SimStorage::new();
    for (p, b) in files {
        sim.set_bytes(p, b.clone());
    }
    sim
}

fn snapshot(sim: &SimStorage) -> Files {
    sim.paths()
        .into_iter()
        .map(|p| {
            let b = sim.live_bytes(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// The partition an error names, if it names one.
fn partition_of(e: &Error) -> Option<&str> {
    match e {
        Error::Corrupt { partition, .. }
        | Error::Storage { partition, .. }
        | Error::OutcomeUnknown { partition, .. } => Some(partition),
        Error::Poisoned(p) => Some(p),
        _ => None,
    }
}

/// One case: `part`'s file replaced by `bytes`.
struct Case {
    name: String,
    part: &'static str,
    files: Files,
}

/// What a case did, and the rules it broke.
#[derive(Default)]
struct Outcome {
    name: String,
    broken: Vec<String>,
    refused: bool,
    /// Step 2 met the damage (an error, or data read as absent).
    met: bool,
    /// Data read as absent in step 2.
    absent: usize,
    /// The damaged partition was found damaged (an `Error::Corrupt` naming it).
    fenced: bool,
}

/// Steps 1 to 5 of the module documentation on one open; the `Db` is pushed to `keep`
/// (dropped by the caller, or leaked after a panic).
fn exercise(case: &Case, out: &mut Outcome, keep: &mut Vec<Db>) {
    let seed = seed();
    let sim = plant(&case.files);
    let before = snapshot(&sim);
    let db = match builder(&sim).open(DIR) {
        Ok(db) => db,
        Err(e) => {
            out.refused = true;
            assert!(!e.to_string().is_empty());
            if snapshot(&sim) != before {
                out.broken
                    .push(format!("the open was refused ({e}) after modifying files"));
            }
            return;
        }
    };
    keep.push(db.clone());
    let ids: Vec<Option<AccountId>> = seed.ids.iter().map(|i| Some(*i)).collect();
    let probes = Probes {
        keys: vec![b"never-written".to_vec()],
        prefixes: vec![b"k0".to_vec()],
        values: vec![(NS.to_owned(), "free@example.com".to_owned())],
    };

    // 2. Everything, against what was written.
    let found = compare(
        &db,
        &ids,
        &seed.model,
        &Catalog::default(),
        &probes,
        &|_| {},
    );
    out.met = !found.errors.is_empty() || !found.missing.is_empty();
    out.absent = found.missing.len();
    for w in &found.wrong {
        out.broken.push(format!("wrong data: {w}"));
    }

    // 3. Every record once more: errors name the damaged partition only.
    let mut fenced = false;
    let mut note = |e: &Error, what: &str, broken: &mut Vec<String>| match partition_of(e) {
        Some(p) if p == case.part => fenced |= matches!(e, Error::Corrupt { .. }),
        Some(p) => broken.push(format!("{what}: an error naming `{p}`: {e}")),
        None => {}
    };
    for (&(acct, region, ref key), row) in &seed.model.rows {
        let what = format!("get_in a{acct} {region} {}", String::from_utf8_lossy(key));
        let got = db.read(seed.ids[acct]).and_then(|r| {
            r.get_in(region, &NOTES, key.as_slice())
                .map(|v| v.map(|v| v.to_vec()))
        });
        match got {
            Ok(Some(v)) if v == row.value => {}
            Ok(None) => {}
            Ok(Some(v)) => out.broken.push(format!(
                "{what}: {} bytes, not the {} written",
                v.len(),
                row.value.len()
            )),
            Err(e) => note(&e, &what, &mut out.broken),
        }
    }
    for (ns, value) in seed.model.owners.keys() {
        if let Err(e) = db.find_unique(&NOTES, ns, value) {
            note(&e, &format!("find_unique {value}"), &mut out.broken);
        }
    }

    // 4. Writes: Ok or an error; an Ok one reads back.
    let mut acked: Vec<(usize, &str, Vec<u8>, Vec<u8>)> = Vec::new();
    for (acct, (_, home, other)) in ACCOUNTS.iter().enumerate() {
        for region in [*home, *other] {
            let (key, value) = (format!("w-{region}").into_bytes(), b"after".to_vec());
            let unique = format!("after-{acct}-{region}@example.com");
            let r = (|| {
                let mut w = db.write_in(seed.ids[acct], region)?;
                w.insert(&AFTER, key.as_slice(), value.as_slice())?;
                w.insert_unique(
                    &AFTER,
                    b"unique",
                    value.as_slice(),
                    &[Unique::new(NS, &unique)],
                )?;
                w.commit()
            })();
            match r {
                Ok(()) => acked.push((acct, region, key, value)),
                Err(e) => note(&e, &format!("write a{acct} {region}"), &mut out.broken),
            }
        }
    }
    for (acct, region, key, value) in &acked {
        let got = db.read(seed.ids[*acct]).and_then(|r| {
            r.get_in(region, &AFTER, key.as_slice())
                .map(|v| v.map(|v| v.to_vec()))
        });
        match got {
            Ok(Some(v)) if v == *value => {}
            Err(e) => note(&e, "read back", &mut out.broken),
            other => out.broken.push(format!(
                "a{acct}'s acknowledged write in {region} reads back as {other:?}"
            )),
        }
    }
    let again = compare(
        &db,
        &ids,
        &seed.model,
        &Catalog::default(),
        &probes,
        &|_| {},
    );
    for w in &again.wrong {
        out.broken.push(format!("wrong data after the writes: {w}"));
    }
    out.fenced = fenced;

    // 5. Once the damaged partition is fenced, the others keep working.
    if fenced {
        for (acct, (_, home, other)) in ACCOUNTS.iter().enumerate() {
            for region in [*home, *other] {
                // With the global file fenced, an account that is not in the routing cache
                // cannot be looked up: that is the global file's job.
                if region == case.part || db.account(seed.ids[acct]).is_err() {
                    continue;
                }
                let unique =
                    (case.part != "global").then(|| format!("alive-{acct}-{region}@example.com"));
                let r = (|| {
                    let mut w = db.write_in(seed.ids[acct], region)?;
                    match &unique {
                        Some(u) => {
                            w.insert_unique(&AFTER, b"alive", b"yes", &[Unique::new(NS, u)])?
                        }
                        None => w.insert(&AFTER, b"alive", b"yes")?,
                    }
                    w.commit()?;
                    db.read(seed.ids[acct])?
                        .get_in(region, &AFTER, b"alive")
                        .map(|v| v.map(|v| v.to_vec()))
                })();
                match r {
                    Ok(Some(v)) if v == b"yes" => {}
                    other => out.broken.push(format!(
                        "`{}` is damaged, yet region {region} no longer works for a{acct}: {:?}",
                        case.part,
                        other.map(|o| o.map(|v| v.len()))
                    )),
                }
            }
        }
    }
    let _ = db.close();
}

/// Step 6: what `Db::verify` names on a fresh open of the case's files.
fn verify_names(case: &Case, keep: &mut Vec<Db>) -> Option<Vec<String>> {
    let sim = plant(&case.files);
    let db = builder(&sim).open(DIR).ok()?;
    keep.push(db.clone());
    let report = db.verify().ok()?;
    let _ = db.close();
    Some(report.damaged.into_iter().map(|d| d.partition).collect())
}

/// redb's panics that the store contains still reach the panic hook: on case threads it
/// stays quiet (a panic that escapes is reported by the case) unless DAMAGED_VERBOSE is set.
fn quiet_case_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_case = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("case:"));
            if !on_case || std::env::var_os("DAMAGED_VERBOSE").is_some() {
                default(info);
            }
        }));
    });
}

fn run_case(case: Case) -> Outcome {
    quiet_case_threads();
    let (tx, rx) = mpsc::channel();
    let name = case.name.clone();
    std::thread::Builder::new()
        .name(format!("case:{name}"))
        .spawn(move || {
            let mut out = Outcome {
                name: case.name.clone(),
                ..Default::default()
            };
            let mut keep = Vec::new();
            let r = catch_unwind(AssertUnwindSafe(|| {
                exercise(&case, &mut out, &mut keep);
                if !out.refused {
                    match verify_names(&case, &mut keep) {
                        Some(named) => {
                            if named.iter().any(|p| p != case.part) {
                                out.broken.push(format!(
                                    "Db::verify names {named:?}, only `{}` was damaged",
                                    case.part
                                ));
                            }
                            if out.met && !named.iter().any(|p| p == case.part) {
                                out.broken.push(format!(
                                    "the reads met the damage ({} absent), Db::verify names \
                                     {named:?}",
                                    out.absent
                                ));
                            }
                        }
                        None if out.met => out
                            .broken
                            .push("the reads met the damage; Db::verify did not run".into()),
                        None => {}
                    }
                }
            }));
            match r {
                Ok(()) => drop(keep),
                Err(p) => {
                    out.broken.push(format!("PANIC: {}", panic_message(&*p)));
                    // Dropping a store redb panicked in may panic again while unwinding.
                    std::mem::forget(keep);
                }
            }
            let _ = tx.send(out);
        })
        .unwrap();
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| Outcome {
            name,
            broken: vec!["no result after 60 s".into()],
            ..Default::default()
        })
}

fn run_all(group: &str, cases: Vec<Case>) {
    let n = cases.len();
    let outs: Vec<Outcome> = cases.into_iter().map(run_case).collect();
    let count = |f: &dyn Fn(&Outcome) -> bool| outs.iter().filter(|o| f(o)).count();
    eprintln!(
        "damaged pages [{group}]: {n} cases: {} refused at open, {} met by reads ({} with data \
         read as absent), {} fenced a partition",
        count(&|o| o.refused),
        count(&|o| o.met),
        count(&|o| o.absent > 0),
        count(&|o| o.fenced),
    );
    let broken: Vec<String> = outs
        .iter()
        .filter(|o| !o.broken.is_empty())
        .map(|o| format!("[{}] {}", o.name, o.broken.join("; ")))
        .collect();
    assert!(
        broken.is_empty(),
        "[{group}] {} of {n} cases broke a rule:\n{}",
        broken.len(),
        broken.join("\n")
    );
    // The sweep reached past the open: it tested what it is for.
    assert!(
        count(&|o| !o.refused) > n / 2,
        "[{group}] most damaged stores should open without the page check"
    );
}

/// Flips a byte `off` bytes into every copy of `needle` in `bytes` (redb's copy-on-write
/// leaves older copies of a page in free space; the live one is among them); returns how
/// many there were (at least one).
fn damage_every_copy(bytes: &mut [u8], needle: &[u8], off: usize) -> usize {
    let at: Vec<usize> = find_all(bytes, needle).collect();
    assert!(!at.is_empty(), "the bytes are in the file");
    for &i in &at {
        bytes[i + off] ^= 0x5A;
    }
    at.len()
}

fn with_part(part: &str, bytes: Vec<u8>) -> Files {
    let mut files = seed().files.clone();
    files.insert(path_of(part), bytes);
    files
}

#[test]
fn zeroed_pages_met_by_reads_and_writes() {
    let mut cases = Vec::new();
    for part in PARTS {
        let b = &seed().files[&path_of(part)];
        // Page 0 holds redb's header, which the open always reads.
        for p in 1..b.len() / PAGE {
            let mut d = b.clone();
            d[p * PAGE..(p + 1) * PAGE].fill(0);
            if d != *b {
                cases.push(Case {
                    name: format!("{part} page {p} zeroed"),
                    part,
                    files: with_part(part, d),
                });
            }
        }
    }
    let met = cases.len();
    run_all("zeroed", cases);
    assert!(met > 100, "{met} cases");
}

#[test]
fn overwritten_bytes_met_by_reads_and_writes() {
    let mut cases = Vec::new();
    for (i, part) in PARTS.into_iter().enumerate() {
        let b = &seed().files[&path_of(part)];
        let mut rng = Rng(0xDA4A_6E00 + i as u64);
        for p in 1..b.len() / PAGE {
            let at = p * PAGE + rng.below(PAGE - 24);
            let mut d = b.clone();
            d[at..at + 24].copy_from_slice(&rng.bytes(24));
            cases.push(Case {
                name: format!("{part} bytes {at}..+24 overwritten"),
                part,
                files: with_part(part, d),
            });
        }
    }
    run_all("overwritten", cases);
}

/// A damaged page of a cleanly closed store: the default open trusts it and opens, reads
/// that meet it fail with an error naming the region (never a panic, never other data),
/// `Db::verify` names the region, after which the region refuses reads and writes while the
/// others work; `verify_on_open(true)` refuses the same files at open.
#[test]
fn verify_finds_what_the_default_open_trusts() {
    let seed = seed();
    let eu = &seed.files[&path_of("eu")];
    // The page holding a0's 3000-byte record k05 in eu.
    let needle = value_for(0, "eu", 5);
    let mut damaged = eu.clone();
    damage_every_copy(&mut damaged, &needle[..64], 100);
    let files = with_part("eu", damaged);

    let sim = plant(&files);
    let refused = builder(&sim).verify_on_open(true).open(DIR);
    assert!(
        matches!(&refused, Err(Error::Corrupt { .. })),
        "verified open: {:?}",
        refused.map(|_| ())
    );

    let sim = plant(&files);
    let db = builder(&sim)
        .open(DIR)
        .expect("the default open trusts the pages");
    assert!(
        db.verified_at_open().is_empty(),
        "{:?}",
        db.verified_at_open()
    );
    let a0 = seed.ids[0];
    let got = db
        .read(a0)
        .unwrap()
        .get_in("eu", &NOTES, b"k05")
        .map(|v| v.map(|v| v.len()));
    assert!(
        matches!(&got, Err(Error::Corrupt { partition, .. }) if partition == "eu"),
        "{got:?}"
    );
    let report = db.verify().unwrap();
    assert_eq!(report.checked.len(), 4, "{report}");
    let named: Vec<&str> = report
        .damaged
        .iter()
        .map(|d| d.partition.as_str())
        .collect();
    assert_eq!(named, ["eu"], "{report}");
    assert!(matches!(report.check(), Err(Error::Corrupt { .. })));
    // eu is fenced now: even its intact records are refused, writes too.
    let r = db.read(a0).unwrap();
    assert!(matches!(
        r.get_in("eu", &NOTES, b"k01"),
        Err(Error::Corrupt { .. })
    ));
    let w = db.write_in(a0, "eu").and_then(|mut w| {
        w.insert(&AFTER, b"x", b"y")?;
        w.commit()
    });
    assert!(matches!(w, Err(Error::Corrupt { .. })), "{w:?}");
    // us and ap work: reads, plain and unique writes.
    let us = r.get_in("us", &NOTES, b"k05").unwrap().unwrap().to_vec();
    assert_eq!(us, value_for(0, "us", 5));
    for (acct, region) in [(0, "us"), (2, "ap"), (1, "ap")] {
        let mut w = db.write_in(seed.ids[acct], region).unwrap();
        w.insert_unique(
            &AFTER,
            b"k",
            b"v",
            &[Unique::new(NS, format!("ok-{acct}-{region}").as_str())],
        )
        .unwrap();
        w.commit().unwrap();
        let back = db
            .read(seed.ids[acct])
            .unwrap()
            .get_in(region, &AFTER, b"k")
            .unwrap();
        assert_eq!(back.as_deref().map(|v| v.to_vec()), Some(b"v".to_vec()));
    }
    // The second check reports what the first found.
    let again = db.verify().unwrap();
    assert_eq!(again.damaged.len(), 1, "{again}");
    db.close().unwrap();
}

/// `Db::verify` in a running store checks the file as it is on disk: damage that happens
/// while the store is open (here: the page of the partition's latest commit, written just
/// before) is found, although redb could fall back to the commit before it.
#[test]
fn verify_finds_damage_to_the_latest_commit_of_a_running_store() {
    let sim = plant(&seed().files);
    let db = builder(&sim).open(DIR).unwrap();
    let a1 = seed().ids[1];
    // Not periodic: its first 200 bytes occur once.
    let marker = Rng(0x1A7E_57C0).bytes(2000);
    let mut w = db.write_in(a1, "ap").unwrap();
    w.insert(&AFTER, b"latest", marker.as_slice()).unwrap();
    w.commit().unwrap();
    assert!(db.verify().unwrap().is_clean());
    let ap = path_of("ap");
    let mut bytes = sim.live_bytes(&ap).unwrap();
    assert_eq!(damage_every_copy(&mut bytes, &marker[..200], 500), 1);
    sim.set_bytes(&ap, bytes);
    let report = db.verify().unwrap();
    let named: Vec<&str> = report
        .damaged
        .iter()
        .map(|d| d.partition.as_str())
        .collect();
    assert_eq!(named, ["ap"], "{report}");
    // The other regions are not touched by it.
    let a0 = seed().ids[0];
    let mut w = db.write_in(a0, "us").unwrap();
    w.insert(&AFTER, b"still", b"fine").unwrap();
    w.commit().unwrap();
    db.close().unwrap();
}

/// Which files an open verifies: none of a cleanly closed store by default, every one with
/// `verify_on_open(true)`, and after a power loss the files redb finds not closed cleanly,
/// whose damage is then refused at open although the default open trusts clean files.
#[test]
fn a_file_left_by_a_crash_is_verified_at_open() {
    let sim = plant(&seed().files);
    let db = builder(&sim).open(DIR).unwrap();
    assert_eq!(db.verified_at_open(), Vec::<String>::new());
    db.close().unwrap();
    let db = builder(&sim).verify_on_open(true).open(DIR).unwrap();
    assert_eq!(db.verified_at_open(), ["global", "us", "eu", "ap"]);
    // A write in eu, then a power loss: eu (written) and the global file (every open writes
    // it) are left unclean.
    let a1 = seed().ids[1];
    let mut w = db.write(a1).unwrap();
    w.insert(&AFTER, b"before-crash", b"x").unwrap();
    w.commit().unwrap();
    sim.crash();
    drop(db);
    let files = snapshot(&sim);
    let db = builder(&plant(&files)).open(DIR).unwrap();
    let verified = db.verified_at_open();
    assert!(
        verified.iter().any(|p| p == "global") && verified.iter().any(|p| p == "eu"),
        "{verified:?}"
    );
    drop(db);
    // The same crash-left files with a damaged page in eu: refused at open, untouched.
    let eu = &files[&path_of("eu")];
    let needle = value_for(1, "eu", 6);
    let mut d = eu.clone();
    damage_every_copy(&mut d, &needle[..64], 1000);
    let mut damaged = files.clone();
    damaged.insert(path_of("eu"), d);
    let sim = plant(&damaged);
    let r = builder(&sim).open(DIR);
    assert!(
        matches!(&r, Err(Error::Corrupt { .. })),
        "a damaged crash-left file: {:?}",
        r.map(|_| ())
    );
    assert!(snapshot(&sim) == damaged, "the refused open changed files");
}

#[test]
fn copied_pages_met_by_reads_and_writes() {
    let mut cases = Vec::new();
    for (i, part) in PARTS.into_iter().enumerate() {
        let b = &seed().files[&path_of(part)];
        let pages = b.len() / PAGE;
        let mut rng = Rng(0xC0_91ED + i as u64);
        for _ in 0..40 {
            let (from, to) = (1 + rng.below(pages - 1), 1 + rng.below(pages - 1));
            let mut d = b.clone();
            let src = d[from * PAGE..(from + 1) * PAGE].to_vec();
            d[to * PAGE..(to + 1) * PAGE].copy_from_slice(&src);
            if d != *b {
                cases.push(Case {
                    name: format!("{part} page {from} copied over page {to}"),
                    part,
                    files: with_part(part, d),
                });
            }
        }
    }
    run_all("copied", cases);
}

/// `Db::verify` on ordinary files while the store has them open: it reads them through
/// another descriptor, finds them intact, and the store keeps its file locks (another open
/// of a file is still refused).
#[test]
fn verify_on_real_files_keeps_them_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .open(dir.path())
        .unwrap();
    let a = db
        .create_account(NewAccount::new("acme", "eu").allow("us"))
        .unwrap();
    let mut w = db.write(a).unwrap();
    w.insert_unique(&AFTER, b"k", b"v", &[Unique::new(NS, "acme@example.com")])
        .unwrap();
    w.commit().unwrap();
    let mut seen = Vec::new();
    let report = db
        .verify_with(|p| seen.push((p.partition.clone(), p.done, p.total)))
        .unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        seen,
        [
            ("global".to_string(), 1, 3),
            ("us".into(), 2, 3),
            ("eu".into(), 3, 3)
        ]
    );
    assert!(report.bytes() > 0);
    for file in [global_file(dir.path()), region_file(dir.path(), "eu")] {
        let other = redb::Database::create(&file);
        assert!(other.is_err(), "{} opened a second time", file.display());
    }
    let r = db.read(a).unwrap();
    assert_eq!(r.get(&AFTER, b"k").unwrap().unwrap().to_vec(), b"v");
    db.close().unwrap();
}
