//! A refused open changes nothing and leaks no file descriptor (refusals decided late in
//! the plan or by recovery's checks, damage in any table recovery reads, included); the
//! default region stays enabled; one handle per store.
//!
//! The tests of this file take one lock: the descriptor count of the process is only
//! meaningful while no other test of the binary opens files.

mod common;

use regionkv::layout::{global_file, region_file};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use common::T;
use common::files::{diff_files, edit_with_redb, sim_snapshot, snapshot};
use common::refusal::{Env, Expect, Refusal, run_refusals};
use common::sim::{
    claim, open_us_eu_sim, quiet_builder, quiet_us_eu, remove, sim_global, sim_region,
};
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Builder, Db, Error, NewAccount, Unique};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn three() -> Builder {
    Db::builder().region("us").region("eu").region("ap")
}

/// For each of `regions`, account `a{i}` homed there, whose record `k` claims
/// `{region}@example.com`.
fn account_and_claim_in_each(db: &Db, regions: &[&str]) {
    for (i, r) in regions.iter().enumerate() {
        let a = db
            .create_account(NewAccount::new(format!("a{i}"), *r))
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
}

/// A closed store with regions us, eu, ap, an account in each and a claimed value.
fn make_store(dir: &Path) {
    let db = three().open(dir).unwrap();
    account_and_claim_in_each(&db, &["us", "eu", "ap"]);
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
    let open = || open_us_eu_sim(&sim, "/store");
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
            account_and_claim_in_each(&db, &["us", "eu"]);
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

// ---------------------------------------------------------------------------------------
// Refusals that come from recovery or late in the plan: decided before the first write.
// ---------------------------------------------------------------------------------------

/// The folder of the simulated stores below.
const SIM_DIR: &str = "/attack";

/// Refused with `Error::Corrupt`.
const CORRUPT: Expect = Expect::Refused {
    what: "Error::Corrupt",
    matches: |e| matches!(e, Error::Corrupt { .. }),
};

/// Plants an applied-marker row that does not decode (valid pages and checksums).
fn plant_undecodable_marker(db: &redb::Database) {
    let w = db.begin_write().unwrap();
    {
        let def = redb::TableDefinition::<u128, &[u8]>::new("_markers");
        let mut t = w.open_table(def).unwrap();
        t.insert(u128::MAX, b"\xff\xff".as_slice()).unwrap();
    }
    w.commit().unwrap();
}

/// Rewrites the partition at `path` of `sim` through redb with `edit`.
fn edit_partition(sim: &SimStorage, path: &Path, edit: impl FnOnce(&redb::Database)) {
    let bytes = edit_with_redb(&sim.live_bytes(path).unwrap(), edit);
    sim.set_bytes(path, bytes);
}

/// The open of the cases below: the store's `us` plus a new region `ap`, so that an apply
/// would create ap's file and change the catalog.
fn open_us_and_new_ap(env: &Env) -> regionkv::Result<Db> {
    quiet_builder(env.sim_storage())
        .region("us")
        .region("ap")
        .open(SIM_DIR)
}

// Regression (fixed since): an undecodable marker refused the open only after apply had
//   changed the store.
/// "A refused open leaves every byte as it was" (docs/design.md, "Opening"): a region file
/// holds an applied marker that does not decode (its pages are valid: the probe and its
/// checksums pass; markers are only decoded by recovery), and the open also adds region
/// `ap`. It used to plan everything, reserve ap's id, create ap's file and commit the new
/// catalog before recovery refused it with `Error::Corrupt`; the old configuration was
/// refused afterwards. Now refused before the first write: the previous configuration (us
/// only) meets the same damage, not a changed catalog.
#[test]
fn undecodable_marker_refuses_the_open_only_after_apply_changed_the_store() {
    let _serial = serial();
    let cases = [Refusal::new(
        "undecodable marker in us, open adding ap",
        Env::sim,
        open_us_and_new_ap,
        CORRUPT,
    )
    .setup(|env| {
        let sim = env.sim_storage();
        let db = quiet_builder(sim).region("us").open(SIM_DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        claim(&db, a, "us", b"k", "v@x").unwrap();
        db.close().unwrap();
        edit_partition(sim, &sim_region(SIM_DIR, "us"), plant_undecodable_marker);
    })
    .after(|env| {
        // The catalog did not change: the previous configuration is refused for the same
        // damage, not for an unlisted region `ap`.
        let old = quiet_builder(env.sim_storage()).region("us").open(SIM_DIR);
        match old {
            Err(Error::Corrupt { .. }) => Vec::new(),
            other => vec![format!(
                "the previous configuration: {:?}; expected the same Error::Corrupt",
                other.map(drop)
            )],
        }
    })];
    run_refusals(&cases);
}

// Guard: late plan refusals after a power loss change nothing.
/// A refused open changes nothing after a power loss left files a redb open would repair:
/// refusals decided late in the plan (the default region disabled, a digest key that
/// differs). The store then opens with its configuration and has kept its claims.
#[test]
fn late_plan_refusals_after_power_loss_change_nothing() {
    let _serial = serial();
    let crashed_store = |env: &Env| {
        let sim = env.sim_storage();
        let db = quiet_us_eu(sim, SIM_DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        claim(&db, a, "us", b"k", "v@x").unwrap();
        claim(&db, a, "us", b"k2", "w@x").unwrap();
        sim.crash();
        drop(db);
    };
    let reopens_with_claims = |env: &Env| {
        let db = quiet_us_eu(env.sim_storage(), SIM_DIR).unwrap();
        let mut problems = Vec::new();
        for v in ["v@x", "w@x"] {
            if !db.is_taken("email", v).unwrap() {
                problems.push(format!("{v} is no longer taken"));
            }
        }
        problems
    };
    let cases = [
        Refusal::new(
            "the default region disabled",
            Env::sim,
            |env| {
                quiet_builder(env.sim_storage())
                    .region("eu")
                    .disable_region("us")
                    .open(SIM_DIR)
            },
            Expect::CONFIG,
        )
        .setup(crashed_store)
        .after(reopens_with_claims),
        Refusal::new(
            "another digest key",
            Env::sim,
            |env| {
                quiet_builder(env.sim_storage())
                    .region("us")
                    .region("eu")
                    .digest_key([7; 32])
                    .open(SIM_DIR)
            },
            Expect::CONFIG,
        )
        .setup(crashed_store)
        .after(reopens_with_claims),
    ];
    run_refusals(&cases);
}

/// Replaces table `name` by one of another type holding one row.
fn retype(db: &redb::Database, name: &str) {
    let w = db.begin_write().unwrap();
    w.delete_table(redb::TableDefinition::<&[u8], &[u8]>::new(name))
        .ok();
    w.delete_table(redb::TableDefinition::<u128, &[u8]>::new(name))
        .ok();
    {
        let mut t = w
            .open_table(redb::TableDefinition::<&str, &str>::new(name))
            .unwrap();
        t.insert("wrong", "type").unwrap();
    }
    w.commit().unwrap();
}

/// Writes garbage over every entry of the global unique index.
fn garble_entries(db: &redb::Database) {
    let w = db.begin_write().unwrap();
    {
        let def = redb::TableDefinition::<&[u8], &[u8]>::new("_unique");
        let mut t = w.open_table(def).unwrap();
        let keys: Vec<Vec<u8>> = redb::ReadableTable::iter(&t)
            .unwrap()
            .map(|r| r.unwrap().0.value().to_vec())
            .collect();
        assert!(!keys.is_empty(), "the scenario needs index entries");
        for k in keys {
            t.insert(k.as_slice(), b"\x09\x09".as_slice()).unwrap();
        }
    }
    w.commit().unwrap();
}

/// A store (region us) left by a power loss with markers, a dirty row, a tombstone and
/// in-flight rows, then the partition `file` ("global" or a region) edited with `edit`.
fn damaged_after_power_loss(env: &Env, file: &str, edit: fn(&redb::Database)) {
    let sim = env.sim_storage();
    let db = quiet_builder(sim).region("us").open(SIM_DIR).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    claim(&db, a, "us", b"k0", "v0@x").unwrap();
    db.checkpoint().unwrap();
    claim(&db, a, "us", b"k1", "v1@x").unwrap(); // a marker, a dirty row
    remove(&db, a, "us", b"k0").unwrap(); // a release: a tombstone after Confirm
    sim.crash(); // the markers stay; the unsynced Confirms are gone
    drop(db);
    let path = if file == "global" {
        sim_global(SIM_DIR)
    } else {
        sim_region(SIM_DIR, file)
    };
    edit_partition(sim, &path, edit);
}

/// The class behind the undecodable marker: every table recovery and the open's last steps
/// read is checked in phase 1, so damage in any of them refuses the open (with
/// `Error::Corrupt`) before a write.
#[test]
fn damage_in_any_table_recovery_reads_refuses_the_open_before_any_write() {
    let _serial = serial();
    type Edit = fn(&redb::Database);
    let damage: [(&'static str, &'static str, Edit); 8] = [
        ("undecodable marker", "us", plant_undecodable_marker),
        (
            "entries the markers and in-flight rows name",
            "global",
            garble_entries,
        ),
        ("_markers of another type", "us", |db| {
            retype(db, "_markers")
        }),
        ("_usage of another type", "us", |db| retype(db, "_usage")),
        ("_unique of another type", "global", |db| {
            retype(db, "_unique")
        }),
        ("_inflight of another type", "global", |db| {
            retype(db, "_inflight")
        }),
        ("_tombstones of another type", "global", |db| {
            retype(db, "_tombstones")
        }),
        ("_dirty of another type", "global", |db| {
            retype(db, "_dirty")
        }),
    ];
    let cases = damage.map(|(name, file, edit)| {
        Refusal::new(name, Env::sim, open_us_and_new_ap, CORRUPT)
            .setup(move |env| damaged_after_power_loss(env, file, edit))
    });
    run_refusals(&cases);
}
