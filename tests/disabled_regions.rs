//! Disabled regions must not lose acknowledged claims, must
//! not let acknowledged writes slip past `disable_region` / `close`, and must keep the
//! record counts of a region opened at a custom path.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::T;
use regionkv::testing::SimStorage;
use regionkv::{AccountId, Builder, Db, Error, NewAccount, Unique};

const DIR: &str = "/store";
const X: &str = "x@example.com";

fn sim_builder(sim: &SimStorage) -> Builder {
    Db::builder().storage(sim.clone())
}

fn open_all(sim: &SimStorage) -> Db {
    sim_builder(sim)
        .region("us")
        .region("eu")
        .region("ap")
        .open(DIR)
        .expect("open us, eu, ap")
}

fn open_eu_disabled(sim: &SimStorage) -> Result<Db, Error> {
    sim_builder(sim)
        .region("us")
        .region("ap")
        .disable_region("eu")
        .open(DIR)
}

fn claim(db: &Db, acct: AccountId, key: &[u8], value: &str) -> Result<(), Error> {
    let mut w = db.write(acct)?;
    w.insert_unique(&T, key, b"rec", &[Unique::new("email", value)])?;
    w.commit()
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
    claim(&db, a, b"ka", X).expect("a claims x");
    assert!(db.is_taken("email", X).unwrap());
    (db, a, b)
}

/// With eu disabled after a crash, `X` (claimed by a, home eu) must stay protected; then,
/// with eu enabled again, there must be exactly one owner: a.
fn check_claim_protected_while_eu_disabled(
    sim: &SimStorage,
    a: AccountId,
    b: AccountId,
) -> Vec<String> {
    let mut problems = Vec::new();
    let db = open_eu_disabled(sim).expect("open with eu disabled after the crash");
    let taken = db.is_taken("email", X);
    if matches!(taken, Ok(false)) {
        problems.push(
            "is_taken(email, x) is Ok(false) while eu (the owner's region) is disabled".into(),
        );
    }
    let second = claim(&db, b, b"kb", X);
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

// ---------------------------------------------------------------------------------------
// A crash, then an open with a region disabled, loses that region's claims.
// ---------------------------------------------------------------------------------------

#[test]
fn crash_then_open_with_owner_region_disabled_keeps_the_claim() {
    let sim = SimStorage::new();
    let (db, a, b) = store_with_claim(&sim);
    sim.crash();
    drop(db);
    let problems = check_claim_protected_while_eu_disabled(&sim, a, b);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn claim_stays_protected_after_a_long_run_of_plain_writes_then_a_crash() {
    // Default checkpoint budget: nothing but a unique write ever syncs the global
    // partition, so the claim's only durable trace is the marker in eu, however long ago
    // it was acknowledged.
    let sim = SimStorage::new();
    let (db, a, b) = store_with_claim(&sim);
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
    sim.crash();
    drop(db);
    let problems = check_claim_protected_while_eu_disabled(&sim, a, b);
    assert!(problems.is_empty(), "after {i} plain writes: {problems:#?}");
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
    let dup = claim(&db, b, b"kb", X);
    assert!(dup.is_err(), "b claimed x: {dup:?}");
    claim(&db, b, b"kb", "y@example.com").expect("b claims another value");
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

// ---------------------------------------------------------------------------------------
// `disable_region` and `close` do not wait for writes inside `commit`.
// ---------------------------------------------------------------------------------------

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
        let db = sim_builder(&sim)
            .region("us")
            .region("eu")
            .open(DIR)
            .unwrap();
        let a = db
            .create_account(
                NewAccount::new(format!("a{round}"), "us")
                    .allow("eu")
                    .max_records(2),
            )
            .unwrap();
        let commits = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let db = db.clone();
                let commits = commits.clone();
                std::thread::spawn(move || {
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
                })
            })
            .collect();
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
        let db = sim_builder(&sim)
            .region("us")
            .region("eu")
            .open(DIR)
            .unwrap();
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
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let db = db.clone();
                let commits = commits.clone();
                std::thread::spawn(move || {
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
                })
            })
            .collect();
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

// ---------------------------------------------------------------------------------------
// A region opened with `region_at`, disabled at open, gets its counts from the
// default path.
// ---------------------------------------------------------------------------------------

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

    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .open(&dir)
        .unwrap();
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

// ---------------------------------------------------------------------------------------
// A scan in progress when its region is disabled.
// ---------------------------------------------------------------------------------------

/// Seen while writing concurrent_catalog.rs (not one of the original findings): a scan started before
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
            w.insert(&T, &[k], b"row").unwrap();
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
