//! Disabled regions: they refuse reads and writes and keep their data; they do not lose
//! acknowledged claims; `disable_region` and `close` let no acknowledged write slip past;
//! record counts of a region opened at a custom path survive; many regions, some disabled
//! at open and some at run time.

mod common;

use common::T;
use common::files::*;
use common::sim::*;
use regionkv::layout::region_file;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Unique};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ======================================================================================
// Disabled regions must not lose acknowledged claims, must
// not let acknowledged writes slip past `disable_region` / `close`, and must keep the
// record counts of a region opened at a custom path.
// ======================================================================================

const DIR: &str = "/store";

const X: &str = "x@example.com";

fn sim_builder(sim: &SimStorage) -> Builder {
    Db::builder().storage(sim.clone())
}

fn open_all(sim: &SimStorage) -> Db {
    open_us_eu_ap_sim(sim, DIR)
}

fn open_eu_disabled(sim: &SimStorage) -> Result<Db, Error> {
    sim_builder(sim)
        .region("us")
        .region("ap")
        .disable_region("eu")
        .open(DIR)
}

/// Copies every file of `sim` as the running process sees it, at this instant.
fn copy_sim(sim: &SimStorage) -> SimStorage {
    let copy = SimStorage::new();
    for p in sim.paths() {
        if let Some(bytes) = sim.live_bytes(&p) {
            copy.set_bytes(&p, bytes);
        }
    }
    copy
}

/// Creates a (home eu) and b (home us), and a claims `X` on record `ka`.
fn store_with_claim(sim: &SimStorage) -> (Db, AccountId, AccountId) {
    let db = open_all(sim);
    let a = db.create_account(NewAccount::new("a", "eu")).unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    claim_home(&db, a, b"ka", X).expect("a claims x");
    assert!(db.is_taken("email", X).unwrap());
    (db, a, b)
}

/// A crash of `db`; then, with eu disabled, `X` (claimed by a, home eu) must stay
/// protected, and with eu enabled again there must be exactly one owner: a.
fn crash_then_check_claim_protected_while_eu_disabled(
    sim: &SimStorage,
    db: Db,
    a: AccountId,
    b: AccountId,
) -> Vec<String> {
    sim.crash();
    drop(db);
    let mut problems = Vec::new();
    let db = open_eu_disabled(sim).expect("open with eu disabled after the crash");
    let taken = db.is_taken("email", X);
    if matches!(taken, Ok(false)) {
        problems.push(
            "is_taken(email, x) is Ok(false) while eu (the owner's region) is disabled".into(),
        );
    }
    let second = claim_home(&db, b, b"kb", X);
    if second.is_ok() {
        problems.push("b claimed x (acknowledged by a before the crash): Ok".into());
    }
    let _ = db.close();

    let db = open_all(sim);
    let report = db.audit().unwrap();
    if !report.is_clean() {
        problems.push(format!("after re-enabling eu: {report}"));
    }
    match db.find_unique(&T, "email", X) {
        Ok(Some(hit)) if hit.account() == a && hit.key() == b"ka" => {}
        Ok(Some(hit)) => problems.push(format!(
            "after re-enabling eu, x is owned by {:?}/{:?}, not a/ka",
            hit.account(),
            String::from_utf8_lossy(hit.key())
        )),
        other => problems.push(format!(
            "after re-enabling eu, find_unique(x) = {:?}",
            other.map(|h| h.is_some())
        )),
    }
    db.close().unwrap();
    problems
}

/// [`store_with_claim`], then `between` on the store and a's id (it says what it did, for
/// the message), then [`crash_then_check_claim_protected_while_eu_disabled`]: no problem.
fn assert_claim_protected_through_a_crash(between: impl FnOnce(&Db, AccountId) -> String) {
    let sim = SimStorage::new();
    let (db, a, b) = store_with_claim(&sim);
    let what = between(&db, a);
    let problems = crash_then_check_claim_protected_while_eu_disabled(&sim, db, a, b);
    assert!(problems.is_empty(), "{what}: {problems:#?}");
}

#[test]
fn crash_then_open_with_owner_region_disabled_keeps_the_claim() {
    assert_claim_protected_through_a_crash(|_, _| "crash right after the claim".into());
}

#[test]
fn claim_stays_protected_after_a_long_run_of_plain_writes_then_a_crash() {
    // Default checkpoint budget: nothing but a unique write ever syncs the global
    // partition, so the claim's only durable trace is the marker in eu, however long ago
    // it was acknowledged.
    assert_claim_protected_through_a_crash(|db, a| {
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < Duration::from_millis(1500) {
            let mut w = db.write(a).unwrap();
            w.insert(&T, format!("plain-{}", i % 64).as_bytes(), &i.to_le_bytes())
                .unwrap();
            w.commit().unwrap();
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        format!("after {i} plain writes")
    });
}

#[test]
fn clean_close_then_open_with_region_disabled_keeps_claims_and_allows_new_ones() {
    // Guard against a fix that is too blunt: a clean close leaves nothing unsettled.
    let sim = SimStorage::new();
    let (db, a, b) = store_with_claim(&sim);
    db.close().unwrap();

    let db = open_eu_disabled(&sim).expect("open with eu disabled after a clean close");
    assert!(
        db.is_taken("email", X).unwrap(),
        "x stays taken while eu is disabled"
    );
    let dup = claim_home(&db, b, b"kb", X);
    assert!(dup.is_err(), "b claimed x: {dup:?}");
    claim_home(&db, b, b"kb", "y@example.com").expect("b claims another value");
    assert!(db.is_taken("email", "y@example.com").unwrap());
    db.close().unwrap();

    let db = open_all(&sim);
    let report = db.audit().unwrap();
    assert!(report.is_clean(), "{report}");
    let hit = db.find_unique(&T, "email", X).unwrap().expect("x owned");
    assert_eq!((hit.account(), hit.key()), (a, &b"ka"[..]));
    let hit = db
        .find_unique(&T, "email", "y@example.com")
        .unwrap()
        .expect("y owned");
    assert_eq!((hit.account(), hit.key()), (b, &b"kb"[..]));
    db.close().unwrap();
}

/// Large values make each commit long, so that one is nearly always in flight.
fn big_value() -> Vec<u8> {
    vec![0x5a; 96 << 10]
}

fn wait_for(counter: &AtomicUsize, n: usize) {
    let start = Instant::now();
    while counter.load(Ordering::SeqCst) < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "writers made no progress"
        );
        std::thread::yield_now();
    }
}

/// `n` writer threads, thread `t` running `body(t, its handle of the store, commits)`;
/// returns their handles.
fn spawn_writers<R: Send + 'static>(
    db: &Db,
    n: usize,
    commits: &Arc<AtomicUsize>,
    body: impl Fn(usize, Db, Arc<AtomicUsize>) -> R + Clone + Send + 'static,
) -> Vec<std::thread::JoinHandle<R>> {
    (0..n)
        .map(|t| {
            let (db, commits, body) = (db.clone(), commits.clone(), body.clone());
            std::thread::spawn(move || body(t, db, commits))
        })
        .collect()
}

fn count_records(db: &Db, acct: AccountId) -> usize {
    let r = db.read(acct).unwrap();
    r.scan(&T)
        .unwrap()
        .inspect(|row| assert!(row.is_ok(), "{row:?}"))
        .count()
}

#[test]
fn disable_region_waits_for_commits_in_flight() {
    const ROUNDS: usize = 10;
    const WRITERS: usize = 3;
    let sim = SimStorage::new();
    let mut problems = Vec::new();
    for round in 0..ROUNDS {
        // eu listed again: enabled (thawed) for this round.
        let db = open_us_eu_sim(&sim, DIR).unwrap();
        let a = db
            .create_account(
                NewAccount::new(format!("a{round}"), "us")
                    .allow("eu")
                    .max_records(2),
            )
            .unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let writers = spawn_writers(&db, WRITERS, &commits, move |t, db, commits| {
            let key = format!("k{t}").into_bytes();
            let value = big_value();
            // The state of `key` as of the last acknowledged commit.
            let mut present = false;
            loop {
                // Refused once eu is disabled (RegionDisabled today).
                let Ok(mut w) = db.write_in(a, "eu") else {
                    break;
                };
                if present {
                    w.remove(&T, &key).unwrap();
                } else {
                    w.insert(&T, &key, &value).unwrap();
                }
                match w.commit() {
                    Ok(()) => {
                        present = !present;
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::QuotaExceeded { .. }) => std::thread::yield_now(),
                    Err(e @ Error::OutcomeUnknown { .. }) => panic!("commit: {e}"),
                    // Refused, nothing written (RegionDisabled today).
                    Err(_) => break,
                }
            }
            (key, present)
        });
        wait_for(&commits, 4);
        db.disable_region("eu").unwrap();
        // What the files hold the instant disable_region returned.
        let snap = copy_sim(&sim);
        let finals: Vec<(Vec<u8>, bool)> = writers.into_iter().map(|h| h.join().unwrap()).collect();

        // 1. Every write acknowledged to eu was in eu when disable_region returned.
        match sim_builder(&snap).region("us").region("eu").open(DIR) {
            Ok(copy) => {
                let r = copy.read(a).unwrap();
                for (key, present) in &finals {
                    let got = r.get_in("eu", &T, key).unwrap().is_some();
                    if got != *present {
                        problems.push(format!(
                            "round {round}: key {} acknowledged as {} in eu, but eu held it \
                             {} when disable_region returned",
                            String::from_utf8_lossy(key),
                            if *present { "present" } else { "removed" },
                            if got { "present" } else { "absent" },
                        ));
                    }
                }
                drop(r);
                let _ = copy.close();
            }
            Err(e) => problems.push(format!(
                "round {round}: the files as of disable_region's return do not open: {e}"
            )),
        }
        db.close().unwrap();

        // 2. The counts recorded for the disabled eu are right: the account can grow in us
        //    only up to its limit of 2 records in total.
        let db = sim_builder(&sim)
            .region("us")
            .disable_region("eu")
            .open(DIR)
            .unwrap();
        for i in 0..3 {
            let mut w = db.write(a).unwrap();
            w.insert(&T, format!("us{i}").as_bytes(), b"v").unwrap();
            match w.commit() {
                Ok(()) => {}
                Err(Error::QuotaExceeded { .. }) => break,
                Err(e) => panic!("round {round}: write in us: {e}"),
            }
        }
        db.close().unwrap();
        let db = open_us_eu_sim(&sim, DIR).unwrap();
        let total = count_records(&db, a);
        if total > 2 {
            problems.push(format!(
                "round {round}: account with max_records(2) holds {total} records"
            ));
        }
        let report = db.audit().unwrap();
        if !report.is_clean() {
            problems.push(format!("round {round}: {report}"));
        }
        db.close().unwrap();
        if !problems.is_empty() {
            break;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn close_waits_for_commits_in_flight() {
    const ROUNDS: usize = 12;
    const WRITERS: usize = 2;
    let mut problems = Vec::new();
    for round in 0..ROUNDS {
        let sim = SimStorage::new();
        let db = sim_builder(&sim).region("us").open(DIR).unwrap();
        let a = db.create_account(NewAccount::new("a", "us")).unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let writers = spawn_writers(&db, WRITERS, &commits, move |t, db, commits| {
            let value = big_value();
            let mut acked = Vec::new();
            for i in 0.. {
                let key = format!("w{t}-{i}").into_bytes();
                // Refused once the store is closed (Closed).
                let Ok(mut w) = db.write(a) else {
                    break;
                };
                w.insert(&T, &key, &value).unwrap();
                match w.commit() {
                    Ok(()) => {
                        acked.push(key);
                        commits.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e @ Error::OutcomeUnknown { .. }) => panic!("commit: {e}"),
                    // Refused, nothing written (Closed today).
                    Err(_) => break,
                }
            }
            acked
        });
        wait_for(&commits, 4);
        db.clone().close().unwrap();
        // What the files hold the instant close returned.
        let snap = copy_sim(&sim);
        let acked: Vec<Vec<u8>> = writers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        drop(db);
        match sim_builder(&snap).region("us").open(DIR) {
            Ok(copy) => {
                let r = copy.read(a).unwrap();
                for key in &acked {
                    if r.get(&T, key).unwrap().is_none() {
                        problems.push(format!(
                            "round {round}: commit of {} returned Ok, but the store did not \
                             hold it when close() returned",
                            String::from_utf8_lossy(key)
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!(
                "round {round}: the files as of close's return do not open: {e}"
            )),
        }
        if !problems.is_empty() {
            break;
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn region_at_disabled_at_open_keeps_its_record_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let eu_path = tmp.path().join("elsewhere").join("eu.redb");
    let a = {
        let db = Db::builder()
            .region("us")
            .region_at("eu", &eu_path)
            .open(&dir)
            .unwrap();
        let a = db
            .create_account(NewAccount::new("a", "us").allow("eu").max_records(10))
            .unwrap();
        let mut w = db.write_in(a, "eu").unwrap();
        w.insert(&T, b"e0", b"in eu").unwrap();
        w.commit().unwrap();
        db.close().unwrap();
        a
    };
    assert!(eu_path.exists());

    let db = open_us_eu_off(&dir);
    // eu holds 1 record of a: exactly 9 more fit in us.
    let mut added = 0;
    for i in 0..12 {
        let mut w = db.write(a).unwrap();
        w.insert(&T, format!("us{i}").as_bytes(), b"v").unwrap();
        match w.commit() {
            Ok(()) => added += 1,
            Err(Error::QuotaExceeded { .. }) => break,
            Err(e) => panic!("growing write in us after {added} records: {e}"),
        }
    }
    assert_eq!(added, 9, "records added in us next to the 1 in disabled eu");
    db.close().unwrap();

    let db = Db::builder()
        .region("us")
        .region_at("eu", &eu_path)
        .open(&dir)
        .unwrap();
    assert_eq!(count_records(&db, a), 10);
    let report = db.audit().unwrap();
    assert!(report.is_clean(), "{report}");
    db.close().unwrap();
}

/// Found while writing the `scan_all` racing `disable_region` test (races.rs): a scan started before
/// `disable_region` fails with "Database has been closed" when it reaches the disabled
/// region, although `disable_region` promises to release the file only once the last read
/// using it ends.
#[test]
fn scan_in_progress_survives_disable_region() {
    let sim = SimStorage::new();
    let db = open_all(&sim);
    for (i, r) in ["us", "eu", "ap"].into_iter().enumerate() {
        let a = db
            .create_account(NewAccount::new(format!("a{i}"), r))
            .unwrap();
        let mut w = db.write(a).unwrap();
        for k in 0..10u8 {
            w.insert(&T, [k], b"row").unwrap();
        }
        w.commit().unwrap();
    }
    let mut scan = db.scan_all(&T).unwrap();
    let first = scan.next().expect("a first row").unwrap();
    assert_eq!(&**first.record(), b"row");
    db.disable_region("ap").unwrap();
    let mut rows = 1;
    for row in scan {
        let row = row.unwrap_or_else(|e| panic!("row {rows} of a scan begun before disable: {e}"));
        assert_eq!(&**row.record(), b"row");
        rows += 1;
    }
    assert_eq!(rows, 30, "the scan's snapshot holds every region's rows");
    db.close().unwrap();
}

// ======================================================================================
// Opening, reopening, the region catalog, wrong-partition files and
// disabled regions, through the public API only.
// ======================================================================================

#[test]
fn disabled_region_refuses_reads_and_writes_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (eu_tenant, us_tenant) = seed_store(dir.path());
    let eu_bytes = std::fs::read(region_file(dir.path(), "eu")).unwrap();

    let db = open_us_eu_off(dir.path());
    let disabled = |r: Result<_, Error>, what: &str| match r {
        Err(Error::RegionDisabled(name)) => assert_eq!(name, "eu", "{what}"),
        Err(e) => panic!("{what}: expected RegionDisabled, got {e:?}"),
        Ok(_) => panic!("{what}: expected RegionDisabled, got Ok"),
    };
    disabled(db.write_in(eu_tenant, "eu").map(|_| ()), "write_in eu");
    disabled(
        db.write(eu_tenant).map(|_| ()),
        "write to an eu-home account",
    );
    let r = db.read(eu_tenant).unwrap();
    disabled(
        r.get(&NOTES, b"k").map(|_| ()),
        "get for an eu-home account",
    );
    disabled(r.get_in("eu", &NOTES, b"k").map(|_| ()), "get_in eu");
    // A scan reports the disabled region and goes on with the others.
    let items: Vec<_> = r.scan(&NOTES).unwrap().collect();
    assert!(
        items
            .iter()
            .any(|i| matches!(i, Err(Error::RegionDisabled(_)))),
        "scan reports the disabled region"
    );
    // A new account cannot be homed in a disabled region.
    disabled(
        db.create_account(NewAccount::new("new-eu", "eu"))
            .map(|_| ()),
        "create_account home eu",
    );
    // Other regions work: the eu tenant's allowed us region and the us tenant.
    let mut w = db.write_in(eu_tenant, "us").unwrap();
    w.insert(&NOTES, b"while-eu-off", b"x").unwrap();
    w.commit().unwrap();
    // (`r` holds an older snapshot of us: read again.)
    assert!(r.get_in("us", &NOTES, b"while-eu-off").unwrap().is_none());
    drop(r);
    let r = db.read(eu_tenant).unwrap();
    assert_eq!(
        &*r.get_in("us", &NOTES, b"while-eu-off").unwrap().unwrap(),
        b"x"
    );
    let rb = db.read(us_tenant).unwrap();
    assert_eq!(&*rb.get(&NOTES, b"k").unwrap().unwrap(), b"us-value");
    let mut w = db.write(us_tenant).unwrap();
    w.insert(&NOTES, b"k2", b"us-2").unwrap();
    w.commit().unwrap();
    // scan_all skips the disabled region.
    let all: Vec<_> = db
        .scan_all(&NOTES)
        .unwrap()
        .map(|row| db.region_name(row.unwrap().region()).unwrap())
        .collect();
    assert!(all.iter().all(|r| r == "us"));
    assert_eq!(all.len(), 3);
    drop((r, rb));
    db.close().unwrap();
    // The disabled region's file was not touched.
    assert_eq!(
        std::fs::read(region_file(dir.path(), "eu")).unwrap(),
        eu_bytes
    );

    // Re-enabled: the data is still there.
    let db = open_us_eu(dir.path());
    assert!(db.regions().iter().all(|r| r.enabled));
    let r = db.read(eu_tenant).unwrap();
    assert_eq!(&*r.get(&NOTES, b"k").unwrap().unwrap(), b"eu-value");
    assert_eq!(
        &*r.get_in("us", &NOTES, b"while-eu-off").unwrap().unwrap(),
        b"x"
    );
    let mut w = db.write(eu_tenant).unwrap();
    w.insert(&NOTES, b"k3", b"eu-3").unwrap();
    w.commit().unwrap();
}

#[test]
fn disable_region_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (eu_tenant, us_tenant) = seed_store(dir.path());
    let db = open_us_eu(dir.path());
    // The default region cannot be disabled.
    assert!(matches!(db.disable_region("us"), Err(Error::Config(_))));
    assert!(matches!(
        db.disable_region("mars"),
        Err(Error::RegionUnknown(_))
    ));
    db.disable_region("eu").unwrap();
    // Idempotent.
    db.disable_region("eu").unwrap();
    assert!(
        !common::region_enabled(&db, "eu"),
        "eu is listed as disabled"
    );
    assert!(matches!(
        db.write_in(eu_tenant, "eu"),
        Err(Error::RegionDisabled(_))
    ));
    assert!(matches!(db.write(eu_tenant), Err(Error::RegionDisabled(_))));
    let r = db.read(eu_tenant).unwrap();
    assert!(matches!(r.get(&NOTES, b"k"), Err(Error::RegionDisabled(_))));
    assert!(matches!(
        r.get_in("eu", &NOTES, b"k"),
        Err(Error::RegionDisabled(_))
    ));
    let rb = db.read(us_tenant).unwrap();
    assert_eq!(&*rb.get(&NOTES, b"k").unwrap().unwrap(), b"us-value");
    drop((r, rb));
    db.close().unwrap();

    // Recorded in the catalog: opening without eu is fine now.
    let db = Db::builder().region("us").open(dir.path()).unwrap();
    assert!(
        !common::region_enabled(&db, "eu"),
        "eu is listed as disabled"
    );
    assert!(matches!(db.write(eu_tenant), Err(Error::RegionDisabled(_))));
    db.close().unwrap();

    // Listing it again re-enables it, with its data.
    let db = open_us_eu(dir.path());
    let r = db.read(eu_tenant).unwrap();
    assert_eq!(&*r.get(&NOTES, b"k").unwrap().unwrap(), b"eu-value");
}

#[test]
fn write_opened_before_runtime_disable_does_not_reach_the_region() {
    let dir = tempfile::tempdir().unwrap();
    let (eu_tenant, _) = seed_store(dir.path());
    let db = open_us_eu(dir.path());
    let mut w = db.write(eu_tenant).unwrap();
    w.insert(&NOTES, b"late", b"written after disable?")
        .unwrap();
    db.disable_region("eu").unwrap();
    // A write opened before the region was disabled is refused at commit.
    let committed = w.commit();
    assert!(
        matches!(committed, Err(Error::RegionDisabled(ref r)) if r == "eu"),
        "{committed:?}"
    );
    db.close().unwrap();
    let db = open_us_eu(dir.path());
    let r = db.read(eu_tenant).unwrap();
    let found = r.get(&NOTES, b"late").unwrap().is_some();
    assert_eq!(
        committed.is_ok(),
        found,
        "commit result {committed:?} disagrees with the data"
    );
}

// ======================================================================================
// public-API inputs at and over their limits; many regions.
// ======================================================================================

// Guard: fifty regions some disabled at open and at run time.
#[test]
fn fifty_regions_some_disabled_at_open_and_at_run_time() {
    let sim = SimStorage::new();
    let names: Vec<String> = (0..50).map(|i| format!("r{i:02}")).collect();
    let mut bl = quiet_builder(&sim);
    for n in &names {
        bl = bl.region(n);
    }
    let db = bl.open("/m").unwrap();
    let mut ids = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let a = db
            .create_account(
                NewAccount::new(format!("a{i}"), n)
                    .allow(&names[(i + 1) % 50])
                    .max_records(3),
            )
            .unwrap();
        let mut w = db.write(a).unwrap();
        w.insert_unique(&T, b"k", b"v", &[Unique::new("e", &format!("v{i}"))])
            .unwrap();
        w.commit().unwrap();
        ids.push(a);
    }
    for n in names.iter().skip(1).step_by(3) {
        db.disable_region(n).unwrap();
    }
    db.close().unwrap();
    sim.crash();
    let mut bl = quiet_builder(&sim);
    for (i, n) in names.iter().enumerate() {
        bl = if i % 3 == 2 {
            bl.disable_region(n)
        } else {
            bl.region(n)
        };
    }
    let db = bl.open("/m").unwrap();
    for (i, a) in ids.iter().enumerate() {
        let v = format!("v{i}");
        assert!(db.is_taken("e", &v).unwrap(), "v{i}");
        let enabled = i % 3 != 2; // i % 3 == 1: disabled at run time, enabled again now
        let hit = db.find_unique(&T, "e", &v);
        if enabled {
            assert_eq!(hit.unwrap().unwrap().account(), *a);
        } else {
            assert!(matches!(hit, Err(Error::RegionDisabled(_))), "{i}: {hit:?}");
        }
        let other = (i + 1) % 50;
        let mut w = db
            .write(ids[other])
            .unwrap_or_else(|_| db.write_in(ids[other], &names[(other + 1) % 50]).unwrap());
        w.insert_unique(&T, b"k2", b"v", &[Unique::new("e", &v)])
            .unwrap();
        let r = w.commit();
        assert!(
            matches!(
                r,
                Err(Error::UniqueViolation { .. }) | Err(Error::RegionDisabled(_))
            ),
            "{i}: {r:?}"
        );
    }
    assert!(db.audit().unwrap().is_clean());
}

// ======================================================================================
// A release in a disabled region, a claim elsewhere, a power loss and the return.
// ======================================================================================

// Guard: a release in a disabled region, a claim elsewhere, a power loss and the return.
/// I1/I2 with tombstones and a disabled region: eu releases v (confirmed, unsynced), us
/// claims v, power loss; reopen with eu disabled (unsettled: its release marker cannot be
/// seen). us's claim marker is replayed; tombstones are kept; checkpoints while eu is
/// disabled; eu returns: one owner (us), audit clean.
#[test]
fn release_in_disabled_region_then_claim_elsewhere_then_power_loss_and_return() {
    let sim = SimStorage::new();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let (e, u) = e_and_u(&db);
    claim(&db, e, "eu", b"e1", "v@x").unwrap();
    db.checkpoint().unwrap();
    let mut w = db.write(e).unwrap();
    w.insert_unique(&T, b"e1", b"y", &[]).unwrap();
    w.commit().unwrap();
    claim(&db, u, "us", b"u1", "v@x").unwrap();
    sim.crash();
    drop(db);

    let db = quiet_us_eu_off(&sim, DIR).unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), u);
    drop(hit); // it holds us's snapshot (and file) open
    db.checkpoint().unwrap();
    db.close().unwrap();
    let db = quiet_us_eu(&sim, DIR).unwrap();
    let hit = db.find_unique(&T, "email", "v@x").unwrap().unwrap();
    assert_eq!(hit.account(), u);
    let audit = db.audit().unwrap();
    assert!(audit.is_clean(), "{audit}");
}

/// A value released by a write whose Confirm a power loss undid, in a region that is
/// disabled at the next open: the durable index still names the record (as its owner, or
/// as releasing it), and the region's applied marker (which settles the release) cannot be
/// read. Whether the value is taken is then unknown: a claim of it, and `is_taken`, must
/// say `RegionUnsettled`, never `UniqueViolation` nor an answer (the release stands in the
/// region). When the region returns, the release is replayed and the value can be claimed.
/// Two rows: the release is the first unique write after a checkpoint (its Reserve is
/// synced: the index says Releasing), or not (its Reserve is lost too: Committed).
#[test]
fn value_released_in_a_region_disabled_after_power_loss_is_unknown_not_taken() {
    for first_after_checkpoint in [true, false] {
        let row = format!("first unique write after the checkpoint: {first_after_checkpoint}");
        let sim = SimStorage::new();
        let db = quiet_builder(&sim)
            .region("us")
            .region("eu")
            .open(DIR)
            .unwrap();
        let a = db
            .create_account(NewAccount::new("a", "us").allow("eu"))
            .unwrap();
        claim(&db, a, "us", b"k2", "v1@x").unwrap();
        db.checkpoint().unwrap(); // the claim is settled in the durable index
        if !first_after_checkpoint {
            claim(&db, a, "us", b"k0", "v0@x").unwrap(); // marks us dirty (synced)
        }
        remove(&db, a, "us", b"k2").unwrap(); // the release: synced in us, unsynced Confirm
        sim.crash(); // power loss while the store is open
        drop(db);
        let db = quiet_builder(&sim)
            .disable_region("us")
            .region("eu")
            .default_region("eu")
            .open(DIR)
            .unwrap();
        let r = claim(&db, a, "eu", b"k9", "v1@x");
        assert!(
            matches!(&r, Err(Error::RegionUnsettled(r)) if r == "us"),
            "{row}: claim of a value whose release may be unreplayed: {r:?}"
        );
        let t = db.is_taken("email", "v1@x");
        assert!(
            matches!(&t, Err(Error::RegionUnsettled(r)) if r == "us"),
            "{row}: is_taken of a value whose release may be unreplayed: {t:?}"
        );
        db.close().unwrap();
        let db = quiet_builder(&sim)
            .region("us")
            .region("eu")
            .open(DIR)
            .unwrap();
        assert!(!db.is_taken("email", "v1@x").unwrap(), "{row}");
        claim(&db, a, "eu", b"k9", "v1@x").unwrap();
        let audit = db.audit().unwrap();
        assert!(audit.is_clean(), "{row}: {audit}");
    }
}
