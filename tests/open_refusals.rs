//! A refused open changes nothing and leaks no file descriptor; the default region stays
//! enabled; one handle per store.
//!
//! The tests of this file take one lock: the descriptor count of the process is only
//! meaningful while no other test of the binary opens files.

mod common;

use regionkv::layout::{global_file, region_file};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::T;
use common::files::{diff_files, sim_snapshot, snapshot};
use common::refusal::{Env, Expect, Refusal, run_refusals};
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Builder, Db, Error, NewAccount, Unique};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn three() -> Builder {
    Db::builder().region("us").region("eu").region("ap")
}

/// A closed store with regions us, eu, ap, an account in each and a claimed value.
fn make_store(dir: &Path) {
    let db = three().open(dir).unwrap();
    for (i, r) in ["us", "eu", "ap"].into_iter().enumerate() {
        let a = db
            .create_account(NewAccount::new(format!("a{i}"), r))
            .unwrap();
        let mut w = db.write(a).unwrap();
        w.insert_unique(
            &T,
            b"k",
            b"v",
            &[Unique::new("email", format!("{r}@example.com").as_str())],
        )
        .unwrap();
        w.commit().unwrap();
    }
    db.close().unwrap();
}

/// The configuration the store was made with still opens, with its data.
fn old_config_opens(dir: &Path) -> Result<(), String> {
    let db = three()
        .open(dir)
        .map_err(|e| format!("the old configuration does not open: {e}"))?;
    let report = db.audit().map_err(|e| e.to_string())?;
    if !report.is_clean() {
        return Err(format!("old configuration: {report}"));
    }
    for r in ["us", "eu", "ap"] {
        if !db.is_taken("email", format!("{r}@example.com")).unwrap() {
            return Err(format!("old configuration: {r}'s value is not taken"));
        }
    }
    db.close().map_err(|e| e.to_string())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

// ---------------------------------------------------------------------------------------
// Every refused open leaks file descriptors.
// ---------------------------------------------------------------------------------------

#[test]
fn refused_opens_do_not_leak_file_descriptors() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let other = tmp.path().join("other");
    make_store(&dir);
    make_store(&other);
    // eu's file replaced by the eu file of another store.
    let eu = region_file(&dir, "eu");
    let eu_bytes = std::fs::read(&eu).unwrap();
    std::fs::copy(region_file(&other, "eu"), &eu).unwrap();
    let foreign = || three().open(&dir);
    // A region given a copy of another region's file (the same path twice is refused
    // before any file is looked at; a copy reaches the meta check).
    let us_copy = tmp.path().join("us-copy.redb");
    std::fs::copy(region_file(&dir, "us"), &us_copy).unwrap();
    let misplaced = || {
        Db::builder()
            .region("us")
            .region_at("eu", &us_copy)
            .region("ap")
            .open(&dir)
    };
    for _ in 0..3 {
        assert!(foreign().is_err());
        assert!(misplaced().is_err());
    }
    let before = open_fds();
    for _ in 0..100 {
        match foreign() {
            Err(Error::PartitionMismatch { .. }) => {}
            other => panic!("open with another store's eu file: {:?}", other.map(|_| ())),
        }
        match misplaced() {
            Err(Error::PartitionMismatch { .. }) => {}
            other => panic!("open with us's file as eu: {:?}", other.map(|_| ())),
        }
    }
    let after = open_fds();
    assert!(
        after <= before + 5,
        "200 refused opens: {before} descriptors open before, {after} after"
    );
    std::fs::write(&eu, eu_bytes).unwrap();
    old_config_opens(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// A refused open changes nothing: an existing store still opens as it was, a refused first
// open leaves the directory empty.
// ---------------------------------------------------------------------------------------

/// The folder of the store in a refusal case.
fn store_dir(env: &Env) -> PathBuf {
    env.at("store")
}

/// Set-up of the cases on an existing store.
fn existing_store(env: &Env) {
    make_store(&store_dir(env));
}

/// Set-up of the first-open cases: an empty folder.
fn empty_store_folder(env: &Env) {
    std::fs::create_dir(store_dir(env)).unwrap();
}

/// Follow-up of the cases on an existing store.
fn still_opens(env: &Env) -> Vec<String> {
    old_config_opens(&store_dir(env))
        .err()
        .into_iter()
        .collect()
}

#[test]
fn refused_opens_change_nothing() {
    let _serial = serial();
    let afile = |env: &Env| env.at("afile");
    // An empty path, which today resolves to the process's current directory.
    let cwd_tmp = std::env::current_dir().unwrap().join(".creating");
    let existed = cwd_tmp.exists();
    let cases = [
        Refusal::new(
            "two new regions on one path",
            Env::real,
            |env| {
                let p = env.at("elsewhere").join("shared.redb");
                three()
                    .region_at("sa", &p)
                    .region_at("af", &p)
                    .open(store_dir(env))
            },
            Expect::Refused {
                what: "Error::Config or Error::InvalidArgument, not blaming another process",
                matches: |e| {
                    matches!(e, Error::Config(_) | Error::InvalidArgument(_))
                        && !e.to_string().contains("another process")
                },
            },
        )
        .setup(existing_store)
        .after(|env| {
            let p = env.at("elsewhere").join("shared.redb");
            let mut problems = still_opens(env);
            if p.exists() {
                problems.push(format!("{} exists", p.display()));
            }
            problems
        }),
        // Under a regular file: looking for the file already fails (ENOTDIR).
        Refusal::new(
            "region under a regular file",
            Env::real,
            move |env| {
                three()
                    .region_at("sa", afile(env).join("sub").join("sa.redb"))
                    .open(store_dir(env))
            },
            Expect::ANY_ERROR,
        )
        .setup(move |env| {
            existing_store(env);
            std::fs::write(afile(env), b"a regular file").unwrap();
        })
        .after(still_opens),
        // A folder that does not exist and cannot be made (no mkdir in /proc, even for
        // root): the file looks merely missing until the open tries to create it.
        Refusal::new(
            "region in a folder that cannot be created",
            Env::real,
            |env| {
                three()
                    .region_at("sa", "/proc/self/regionkv-no-such-folder/sa.redb")
                    .open(store_dir(env))
            },
            Expect::ANY_ERROR,
        )
        .setup(existing_store)
        .after(still_opens),
        Refusal::new(
            "first open: two regions, one file",
            Env::real,
            |env| {
                let dir = store_dir(env);
                let p = dir.join("regions").join("shared.redb");
                Db::builder()
                    .region_at("us", &p)
                    .region_at("eu", p)
                    .open(&dir)
            },
            Expect::ANY_ERROR,
        )
        .setup(empty_store_folder),
        Refusal::new(
            "first open: a region at the global file",
            Env::real,
            |env| {
                let dir = store_dir(env);
                Db::builder()
                    .region("us")
                    .region_at("eu", global_file(&dir))
                    .open(&dir)
            },
            Expect::ANY_ERROR,
        )
        .setup(empty_store_folder),
        Refusal::new(
            "first open: empty path",
            Env::real,
            |env| {
                Db::builder()
                    .region("us")
                    .region_at("eu", "")
                    .open(store_dir(env))
            },
            Expect::Refused {
                what: "Error::InvalidArgument",
                matches: |e| matches!(e, Error::InvalidArgument(_)),
            },
        )
        .setup(empty_store_folder)
        .after(|_| {
            let mut problems = Vec::new();
            if !existed && cwd_tmp.exists() {
                let _ = std::fs::remove_file(&cwd_tmp);
                problems.push(format!("{} was created", cwd_tmp.display()));
            }
            problems
        }),
    ];
    run_refusals(&cases);
}

// ---------------------------------------------------------------------------------------
// The default region stays enabled, and so does at least one region.
// ---------------------------------------------------------------------------------------

/// Disables every region but the default through the open handle; at least one must stay
/// enabled whatever was refused.
fn enabled_after_disabling_everything(db: &Db) -> usize {
    for r in db.regions() {
        let _ = db.disable_region(&r.name);
    }
    db.regions().iter().filter(|r| r.enabled).count()
}

fn default_is_enabled(db: &Db) -> bool {
    let d = db.default_region();
    db.regions().iter().any(|r| r.id == d && r.enabled)
}

#[test]
fn default_region_cannot_be_disabled_at_open() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    Db::builder()
        .region("us")
        .region("eu")
        .open(&dir)
        .unwrap()
        .close()
        .unwrap();
    let before = snapshot(&dir);
    let r = Db::builder()
        .region("us")
        .disable_region("eu")
        .default_region("eu")
        .open(&dir);
    let mut problems = diff_files(&before, &snapshot(&dir));
    match r {
        Err(_) => {}
        Ok(db) => {
            problems.push(format!(
                "opened with the default region eu disabled (default enabled: {})",
                default_is_enabled(&db)
            ));
            let n = enabled_after_disabling_everything(&db);
            if n == 0 {
                problems.push("every region could then be disabled".into());
            }
            drop(db);
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn disabling_the_stored_default_at_open_keeps_an_enabled_default() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let db = Db::builder()
        .region("us")
        .region("eu")
        .default_region("eu")
        .open(&dir)
        .unwrap();
    assert_eq!(db.region_name(db.default_region()).as_deref(), Some("eu"));
    db.close().unwrap();
    let before = snapshot(&dir);
    // No default given: the stored one, eu, is being disabled.
    match Db::builder().region("us").disable_region("eu").open(&dir) {
        Err(e) => {
            // Refused: then nothing changed.
            let changes = diff_files(&before, &snapshot(&dir));
            assert!(changes.is_empty(), "refused ({e}) but {changes:?}");
        }
        Ok(db) => {
            let default = db.region_name(db.default_region());
            assert!(
                default_is_enabled(&db),
                "opened with eu disabled and the default region {default:?} disabled"
            );
            let n = enabled_after_disabling_everything(&db);
            assert!(n >= 1, "every region could be disabled");
            db.close().unwrap();
        }
    }
}

#[test]
fn at_least_one_region_stays_enabled() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    make_store(&dir);
    for default in ["us", "eu", "ap"] {
        let db = three().default_region(default).open(&dir).unwrap();
        let n = enabled_after_disabling_everything(&db);
        assert!(n >= 1, "default {default}: every region could be disabled");
        assert!(default_is_enabled(&db), "default {default} stays enabled");
        db.close().unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// One handle per store.
// ---------------------------------------------------------------------------------------

#[test]
fn second_handle_on_one_sim_store_is_refused() {
    let _serial = serial();
    let sim = SimStorage::new();
    let open = || {
        Db::builder()
            .storage(sim.clone())
            .region("us")
            .region("eu")
            .open("/store")
    };
    let first = open().unwrap();
    let a = first.create_account(NewAccount::new("a", "us")).unwrap();
    let second = open();
    assert!(
        second.is_err(),
        "a second handle opened while the first is alive"
    );
    drop(second);
    // The first handle still works.
    let mut w = first.write(a).unwrap();
    w.insert(&T, b"k", b"v").unwrap();
    w.commit().unwrap();
    first.close().unwrap();
    // Once it is closed and dropped, the store opens again.
    let again = open().expect("open after the first handle closed");
    again.close().unwrap();
}

#[test]
fn second_handle_on_one_file_store_is_refused() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let first = three().open(&dir).unwrap();
    let before_fds = open_fds();
    let second = three().open(&dir);
    assert!(
        second.is_err(),
        "a second handle opened while the first is alive"
    );
    drop(second);
    assert!(
        open_fds() <= before_fds + 1,
        "the refused open leaked files"
    );
    first.close().unwrap();
    three().open(&dir).unwrap().close().unwrap();
}

// ---------------------------------------------------------------------------------------
// A crash in the middle of an open that changes the configuration.
// ---------------------------------------------------------------------------------------

/// For every crash point of the open `new` (on a store made with `old`): the new
/// configuration opens afterwards with a clean audit, and if the crash left every file as
/// it was, the old configuration opens too.
fn crash_mid_open_sweep(old: fn(Builder) -> Builder, new: fn(Builder) -> Builder) -> usize {
    const DIR: &str = "/store";
    let mut points = 0;
    for n in 0..1000u64 {
        let sim = SimStorage::new();
        let b = || Db::builder().storage(sim.clone()).digest_key([3; 32]);
        {
            let db = old(b()).open(DIR).unwrap();
            for (i, r) in ["us", "eu"].into_iter().enumerate() {
                let a = db
                    .create_account(NewAccount::new(format!("a{i}"), r))
                    .unwrap();
                let mut w = db.write(a).unwrap();
                w.insert_unique(
                    &T,
                    b"k",
                    b"v",
                    &[Unique::new("email", format!("{r}@example.com").as_str())],
                )
                .unwrap();
                w.commit().unwrap();
            }
            db.close().unwrap();
        }
        let before = sim_snapshot(&sim);
        sim.fail_after(n, FaultOn::Any);
        let r = new(b()).open(DIR);
        let tripped = sim.fault_tripped();
        drop(r);
        sim.crash();
        points += 1;
        let untouched = sim_snapshot(&sim) == before;
        let old_opens = match old(b()).open(DIR) {
            Ok(db) => {
                db.close().unwrap();
                Ok(())
            }
            Err(e) => Err(e),
        };
        if untouched && let Err(e) = &old_opens {
            panic!(
                "n={n}: the crash left every file as it was, but the old configuration is refused: {e}"
            );
        }
        let db = new(b()).open(DIR).unwrap_or_else(|e| {
            panic!("n={n}: the new configuration does not open: {e} (old: {old_opens:?})")
        });
        let report = db.audit().unwrap();
        assert!(report.is_clean(), "n={n}: {report}");
        for r in ["us", "eu"] {
            let taken = db.is_taken("email", format!("{r}@example.com"));
            assert!(
                !matches!(taken, Ok(false)),
                "n={n}: {r}'s value is free after the crash"
            );
        }
        db.close().unwrap();
        if !tripped {
            break;
        }
    }
    points
}

#[test]
fn crash_while_adding_a_region_leaves_a_store_that_opens() {
    let _serial = serial();
    let points = crash_mid_open_sweep(
        |b| b.region("us").region("eu"),
        |b| b.region("us").region("eu").region("sa"),
    );
    assert!(points > 1);
}

#[test]
fn crash_while_adding_a_region_and_disabling_one_leaves_a_store_that_opens() {
    let _serial = serial();
    let points = crash_mid_open_sweep(
        |b| b.region("us").region("eu"),
        |b| b.region("us").region("sa").disable_region("eu"),
    );
    assert!(points > 1);
}
