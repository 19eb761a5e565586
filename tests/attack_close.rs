//! Adversarial review (attack2) of what landed last: the compaction at a clean close
//! (`Db::close`, `Partition::compact_when_released`, `Drop for Partition`), the exact
//! page-cache budget (`Builder::cache_size`, `Db::cache_budget`), the slab-backed routing
//! cache (inline account names and regions, their spill) and the closed-store checks of
//! reads. The round found two breaks, both fixed, their tests kept under names that say
//! what holds now: a region file was never compacted when a handle holding its snapshot
//! (a `Record`, `Hit`, `View`, `Read`, `Write`, `Batch`, a scan) outlived the close (the
//! region was released, and tried to compact, while that snapshot's read transaction or
//! its opened tables lived: redb refused with a transaction in progress, silently); and a
//! clone's `close` after a failed close answered `Ok`.

mod common;

use common::sim::{quiet_builder, sim_global, sim_region};
use common::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};

const DIR: &str = "/attack-close";

/// What redb's own `compact` leaves of `bytes` (a copy on a real file).
fn compacted_len(bytes: &[u8]) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("copy.redb");
    std::fs::write(&path, bytes).expect("write copy");
    let mut db = redb::Database::open(&path).expect("open copy");
    db.compact().expect("compact copy");
    drop(db);
    std::fs::metadata(&path).expect("copy").len() as usize
}

fn open_us_eu(sim: &SimStorage) -> Db {
    quiet_builder(sim)
        .region("us")
        .region("eu")
        .default_region("us")
        .open(DIR)
        .expect("open")
}

fn big(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i:05}-").into_bytes();
    v.resize(1500, b'a' + (i % 26) as u8);
    v
}

fn key(i: usize) -> Vec<u8> {
    format!("k-{i:05}").into_bytes()
}

/// Fills `us` with 300 records of 1.5 KB and removes two of every three: the region file
/// holds free pages that a compaction gives back. Returns the account and the keys kept.
fn fragment_us(db: &Db) -> (AccountId, Vec<usize>) {
    let a = db
        .create_account(NewAccount::new("frag", "us"))
        .expect("account");
    for chunk in (0..300).collect::<Vec<_>>().chunks(10) {
        let mut w = db.write(a).expect("write");
        for &i in chunk {
            w.insert(&T, key(i), &big(i)).expect("buffer");
        }
        w.commit().expect("commit");
    }
    for chunk in (0..300)
        .filter(|i| i % 3 != 0)
        .collect::<Vec<_>>()
        .chunks(10)
    {
        let mut w = db.write(a).expect("write");
        for &i in chunk {
            w.remove(&T, key(i)).expect("buffer");
        }
        w.commit().expect("commit");
    }
    (a, (0..300).filter(|i| i % 3 == 0).collect())
}

fn us_bytes(sim: &SimStorage) -> Vec<u8> {
    sim.live_bytes(sim_region(DIR, "us")).expect("us file")
}

/// Every kept record is there with its value, the removed ones are gone, audit clean.
fn check_fragmented(db: &Db, a: AccountId, kept: &[usize]) {
    let r = db.read(a).expect("read");
    for i in 0..300 {
        let got = r.get(&T, key(i)).expect("get");
        if kept.contains(&i) {
            assert_eq!(&*got.expect("kept record lost"), &big(i)[..], "record {i}");
        } else {
            assert!(got.is_none(), "removed record {i} is back");
        }
    }
    drop(r);
    assert!(db.audit().expect("audit").is_clean());
}

/// Control for the compaction tests below: a clean close with no handle left compacts the region
/// file down to what redb's compact makes of it, and changes no record (I3).
#[test]
fn clean_close_compacts_a_fragmented_region_and_keeps_every_record() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (a, kept) = fragment_us(&db);
    let running = us_bytes(&sim);
    let floor = compacted_len(&running);
    assert!(
        running.len() > floor + 16 * 4096,
        "the workload left no free pages in us ({} bytes, compact: {floor})",
        running.len()
    );
    db.close().expect("close");
    let closed = us_bytes(&sim);
    assert!(
        closed.len() <= compacted_len(&closed) + 2 * 4096 && closed.len() < running.len(),
        "the close did not compact us: {} bytes running, {} closed, compact makes {floor}",
        running.len(),
        closed.len()
    );
    let db = open_us_eu(&sim);
    check_fragmented(&db, a, &kept);
    db.close().expect("close");
}

/// Attacks "a snapshot that outlives `close` postpones the compaction to its own drop"
/// (design.md section 1) for a region file: a `Record` whose `Read` and `Db` are gone
/// keeps a region snapshot alive. Expected: when the record is dropped, the region file is
/// compacted (as the control above shows a close does).
#[test]
fn a_record_outliving_the_store_delays_the_region_compaction_until_dropped() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (a, kept) = fragment_us(&db);
    let r = db.read(a).expect("read");
    let rec = r.get(&T, key(0)).expect("get").expect("record 0");
    drop(r);
    db.close().expect("close with a record alive");
    assert_eq!(&*rec, &big(0)[..], "the record read after the close");
    drop(rec);
    let released = us_bytes(&sim);
    let floor = compacted_len(&released);
    // Nothing is lost either way.
    let db = open_us_eu(&sim);
    check_fragmented(&db, a, &kept);
    db.close().expect("close");
    assert!(
        released.len() <= floor + 2 * 4096,
        "us is {} bytes after the last record went; redb's compact makes {floor}: the \
         compaction was skipped",
        released.len()
    );
}

/// Same invariant, through a `View` (the hot-path handle) that is the last holder of the
/// store: expected, dropping it compacts the region it read.
#[test]
fn a_view_outliving_the_close_delays_the_region_compaction_until_dropped() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (a, kept) = fragment_us(&db);
    let view = db.view().expect("view");
    assert!(view.get(a, &T, key(3)).expect("view get").is_some());
    db.close().expect("close with a view alive");
    drop(view);
    let released = us_bytes(&sim);
    let floor = compacted_len(&released);
    let db = open_us_eu(&sim);
    check_fragmented(&db, a, &kept);
    db.close().expect("close");
    assert!(
        released.len() <= floor + 2 * 4096,
        "us is {} bytes after the view went; redb's compact makes {floor}: the compaction \
         was skipped",
        released.len()
    );
}

/// Attacks isolation of the registry and "a refused open changes nothing": while a record
/// of a closed store is alive, a second open of the same store in this process must be
/// refused with a clear error and write nothing; once the record goes, it opens and every
/// record and claim is there (I3).
#[test]
fn reopen_while_a_record_holds_the_closed_store_is_refused_and_writes_nothing() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let a = db.create_account(NewAccount::new("a", "eu")).expect("a");
    common::sim::claim(&db, a, "eu", b"k1", "a@x").expect("claim");
    let hit = db
        .find_unique(&T, "email", "a@x")
        .expect("find")
        .expect("claimed");
    db.close().expect("close");
    let before = common::files::sim_snapshot(&sim);
    let writes = sim.writes();
    match quiet_builder(&sim).region("us").region("eu").open(DIR) {
        Err(Error::Config(msg)) => assert!(msg.contains("already open"), "{msg}"),
        other => panic!("second open while a hit holds the store: {other:?}"),
    }
    assert_eq!(sim.writes(), writes, "the refused open wrote");
    common::files::assert_same_files(
        &before,
        &common::files::sim_snapshot(&sim),
        "refused reopen",
    );
    assert_eq!(hit.key(), b"k1");
    // Dropped on another thread: the release (and compaction) happens there.
    std::thread::spawn(move || drop(hit)).join().unwrap();
    let db = open_us_eu(&sim);
    let hit = db.find_unique(&T, "email", "a@x").expect("find");
    assert_eq!(hit.expect("claim lost").account(), a);
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
}

/// Attacks the closed-store checks (I3, no panic through the API): handles taken before a
/// close of one clone (a `Read`, a `View`, an open `Write` with a buffered insert, a
/// `Batch`, another `Db` clone, a `Record`) are used after it and dropped on other
/// threads. Expected: reads and commits answer `Error::Closed` (the buffered writes leave
/// no trace), the record keeps its bytes, and after the last drop the store reopens with
/// exactly the acknowledged data, its global file compacted.
#[test]
fn handles_used_after_a_close_answer_closed_and_leave_no_trace() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let a = db.create_account(NewAccount::new("a", "us")).expect("a");
    for i in 0..50 {
        common::sim::claim(&db, a, "us", &key(i), &format!("v{i}@x")).expect("claim");
    }
    let clone = db.clone();
    let read = db.read(a).expect("read");
    let view = db.view().expect("view");
    let rec = read.get(&T, key(1)).expect("get").expect("record");
    let mut w = db.write(a).expect("write");
    w.insert_unique(&T, b"late-w", b"w", &[Unique::new("email", "late-w@x")])
        .expect("buffer");
    let mut batch = db.batch_in("us").expect("batch");
    batch
        .write(a)
        .expect("batch write")
        .insert(&T, b"late-b", b"b")
        .expect("buffer");
    db.close().expect("close");

    assert!(matches!(read.get(&T, key(2)), Err(Error::Closed)));
    assert!(matches!(view.get(a, &T, key(2)), Err(Error::Closed)));
    assert!(matches!(
        view.find_unique(&T, "email", "v2@x"),
        Err(Error::Closed)
    ));
    // `Write::get` answers `Closed` too (it read its snapshot before the fix).
    assert!(matches!(w.get(&T, key(2)), Err(Error::Closed)));
    assert!(matches!(w.commit(), Err(Error::Closed)));
    assert!(matches!(batch.commit(), Err(Error::Closed)));
    assert!(matches!(clone.read(a), Err(Error::Closed)));
    assert!(matches!(
        clone.is_taken("email", "v1@x"),
        Err(Error::Closed)
    ));
    assert!(matches!(clone.clone().close(), Ok(()) | Err(Error::Closed)));
    assert_eq!(&*rec, b"x");
    let global_at_close = sim.live_bytes(sim_global(DIR)).expect("global").len();

    let threads: Vec<_> = vec![
        std::thread::spawn(move || drop(read)),
        std::thread::spawn(move || drop(view)),
        std::thread::spawn(move || drop(clone)),
        std::thread::spawn(move || drop(rec)),
    ];
    for t in threads {
        t.join().expect("drop on another thread");
    }
    let global = sim.live_bytes(sim_global(DIR)).expect("global");
    assert!(
        global.len() <= compacted_len(&global) + 2 * 4096 && global.len() <= global_at_close,
        "global file not compacted after the last handle went"
    );
    let db = open_us_eu(&sim);
    let r = db.read(a).expect("read");
    assert!(
        r.get(&T, b"late-w").unwrap().is_none(),
        "a Closed write left a record"
    );
    assert!(
        r.get(&T, b"late-b").unwrap().is_none(),
        "a Closed batch left a record"
    );
    drop(r);
    assert!(
        !db.is_taken("email", "late-w@x").unwrap(),
        "a Closed write left a claim"
    );
    for i in 0..50 {
        let hit = db.find_unique(&T, "email", format!("v{i}@x")).unwrap();
        assert_eq!(hit.expect("claim lost").key(), key(i).as_slice());
    }
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
}

/// The model workload on a store of `REGIONS` over `sim`, without a fault.
fn build_model(sim: &SimStorage) -> (Db, Model) {
    let db = builder()
        .storage(sim.clone())
        .checkpoint_budget(1 << 20, std::time::Duration::from_secs(3600))
        .open(DIR)
        .expect("open");
    let ids = create_accounts(&db);
    let some: Vec<_> = ids.iter().copied().map(Some).collect();
    let mut model = Model::default();
    for step in group_steps(&workload(11, 30), 2) {
        let rs = execute_step(&db, &some, &step);
        for (op, r) in step.iter().zip(&rs) {
            let got = classify(r).unwrap_or_else(|| panic!("op {op:?}: {r:?}"));
            assert_eq!(model.apply(op), got, "op {op:?}");
        }
    }
    (db, model)
}

/// Attacks I1-I3 across a close whose compaction is postponed to the drop of a `Db`
/// clone on another thread: a fault at every storage operation from the close to the end
/// of that drop (final checkpoint, clean-close record, the four compactions run by the
/// other thread), then power loss. Expected: the store reopens, matches the model, and its
/// audit is clean, for every N.
#[test]
fn crash_at_every_operation_of_a_close_finished_by_a_clone_on_another_thread() {
    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let (db, model) = build_model(&sim);
        let clone = db.clone();
        sim.fail_after(n, FaultOn::Any);
        let _ = db.close();
        std::thread::spawn(move || drop(clone))
            .join()
            .expect("the compaction in the drop must not panic through");
        let tripped = sim.fault_tripped();
        sim.crash();
        sim.clear_fault();
        let db = builder()
            .storage(sim.clone())
            .open(DIR)
            .unwrap_or_else(|e| panic!("reopen after a fault at op {n}: {e}"));
        let ids = account_ids(&db);
        check(&db, &ids, &model).unwrap_or_else(|e| panic!("fault at op {n}: {e}"));
        let audit = db.audit().expect("audit");
        assert!(audit.is_clean(), "fault at op {n}: {audit}");
        db.close().expect("close after recovery");
        if !tripped {
            break;
        }
        n += 1;
    }
    assert!(n > 20, "the fault walk ended after {n} operations");
}

/// Attacks I3 with a close racing writers on four threads: every write acknowledged
/// before the close must be there after a reopen (with its claim), every write after it
/// must answer `Error::Closed`, nothing else; the audit is clean.
#[test]
fn close_racing_writers_keeps_every_acknowledged_write() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let ids: Vec<AccountId> = (0..4)
        .map(|i| {
            db.create_account(NewAccount::new(format!("w{i}"), ["us", "eu"][i % 2]))
                .expect("account")
        })
        .collect();
    let start = std::sync::Arc::new(std::sync::Barrier::new(5));
    let threads: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(t, &a)| {
            let (db, start) = (db.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut acked = Vec::new();
                for i in 0.. {
                    let k = format!("t{t}-{i}");
                    let mut w = match db.write(a) {
                        Ok(w) => w,
                        Err(Error::Closed) => break,
                        Err(e) => panic!("write: {e}"),
                    };
                    w.insert_unique(&T, k.as_bytes(), b"v", &[Unique::new("email", &k)])
                        .expect("buffer");
                    match w.commit() {
                        Ok(()) => acked.push(k),
                        Err(Error::Closed) => break,
                        Err(e) => panic!("commit {k}: {e}"),
                    }
                }
                (a, acked)
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(std::time::Duration::from_millis(30));
    db.close().expect("close racing writers");
    let acked: Vec<(AccountId, Vec<String>)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let db = open_us_eu(&sim);
    let mut total = 0;
    for (a, keys) in &acked {
        let r = db.read(*a).expect("read");
        let mut n = 0;
        for row in r.scan(&T).expect("scan") {
            let row = row.expect("row");
            let k = String::from_utf8(row.key().to_vec()).unwrap();
            assert!(keys.contains(&k), "record {k} was never acknowledged");
            n += 1;
        }
        assert_eq!(n, keys.len(), "account {a}: acknowledged records lost");
        for k in keys {
            let hit = db.find_unique(&T, "email", k).expect("find");
            assert_eq!(hit.expect("claim lost").account(), *a);
        }
        total += n;
    }
    assert!(total > 0, "no write was acknowledged before the close");
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
}

/// Attacks "a poisoned partition is not compacted" and I3: a region's write fails (an
/// I/O error poisons it), then the store closes. Expected: the close answers (Ok or the
/// error), nothing panics, the file is not compacted in its failing state, and after a
/// crash and reopen every acknowledged write is there and the failed one left no trace.
#[test]
fn a_poisoned_region_at_close_loses_nothing() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (e, u) = common::sim::e_and_u(&db);
    for i in 0..20 {
        common::sim::claim(&db, e, "eu", &key(i), &format!("e{i}@x")).expect("claim eu");
        common::sim::claim(&db, u, "us", &key(i), &format!("u{i}@x")).expect("claim us");
    }
    sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Any);
    assert!(common::sim::claim(&db, e, "eu", b"failed", "failed@x").is_err());
    let eu_poisoned = sim.live_bytes(sim_region(DIR, "eu")).expect("eu").len();
    sim.clear_fault();
    let _ = db.close();
    let eu_after = sim.live_bytes(sim_region(DIR, "eu")).expect("eu").len();
    assert!(
        eu_after >= eu_poisoned,
        "a poisoned region was compacted ({eu_poisoned} -> {eu_after} bytes)"
    );
    sim.crash();
    let db = open_us_eu(&sim);
    for i in 0..20 {
        let he = db.find_unique(&T, "email", format!("e{i}@x")).unwrap();
        assert_eq!(he.expect("eu claim lost").account(), e);
        let hu = db.find_unique(&T, "email", format!("u{i}@x")).unwrap();
        assert_eq!(hu.expect("us claim lost").account(), u);
    }
    assert!(db.find_unique(&T, "email", "failed@x").unwrap().is_none());
    assert!(db.read(e).unwrap().get(&T, b"failed").unwrap().is_none());
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
}

/// Attacks "a budget refused changes nothing" (design.md, "The page-cache budget"): a new
/// store, an existing store, and an existing store with a region added at that open, each
/// given one byte less than its minimum. Expected: `Error::Config` naming the minimum,
/// and not a byte, file or folder changed; the minimum itself opens, shares within it,
/// and a region disabled at open takes no share.
#[test]
fn a_refused_budget_changes_nothing_on_disk() {
    use regionkv::MIN_PARTITION_CACHE as MIN;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let b = || Db::builder().region("us").region("eu").default_region("us");
    // A new store: nothing created, not even its folder.
    match b().cache_size(4 * MIN - 1).open(&dir) {
        Err(Error::Config(msg)) => assert!(msg.contains(&(4 * MIN).to_string()), "{msg}"),
        other => panic!("budget below the minimum of a new store: {other:?}"),
    }
    assert!(!dir.exists(), "a refused open created {}", dir.display());
    let db = b()
        .cache_size(4 * MIN)
        .open(&dir)
        .expect("the minimum opens");
    let budget = db.cache_budget();
    assert!(budget.used() <= budget.total && budget.partitions.len() == 3);
    let a = db.create_account(NewAccount::new("a", "eu")).expect("a");
    common::sim::claim(&db, a, "eu", b"k", "a@x").expect("claim");
    db.close().expect("close");

    let before = common::files::snapshot(&dir);
    // The existing store.
    assert!(matches!(
        b().cache_size(4 * MIN - 1).open(&dir),
        Err(Error::Config(_))
    ));
    common::files::assert_same_files(&before, &common::files::snapshot(&dir), "existing");
    // A region added at this open: 5 partitions' worth is needed, 4 given.
    assert!(matches!(
        b().region("ap").cache_size(5 * MIN - 1).open(&dir),
        Err(Error::Config(_))
    ));
    common::files::assert_same_files(&before, &common::files::snapshot(&dir), "region added");
    // A disabled region takes nothing: global + us fit in 3 floors.
    let db = Db::builder()
        .region("us")
        .disable_region("eu")
        .cache_size(3 * MIN)
        .open(&dir)
        .unwrap_or_else(|e| panic!("eu disabled, 3 floors: {e}"));
    let budget = db.cache_budget();
    assert!(budget.used() <= 3 * MIN, "{budget:?}");
    assert!(
        budget.partitions.iter().all(|p| p.partition != "eu"),
        "{budget:?}"
    );
    db.close().expect("close");
    let db = b().cache_size(4 * MIN).open(&dir).expect("reopen");
    assert_eq!(
        db.find_unique(&T, "email", "a@x")
            .unwrap()
            .expect("claim")
            .account(),
        a
    );
    db.close().expect("close");
}

/// Attacks "shares never above the total" with many regions of very different sizes and
/// awkward budgets (primes just above the minimum, `usize::MAX`): expected, for each,
/// every partition at least the floor, look plus shares at most the total, and
/// `Db::verify` (which runs the look while every partition is open) clean.
#[test]
fn many_regions_awkward_budgets_never_exceed_the_total() {
    use regionkv::MIN_PARTITION_CACHE as MIN;
    let sim = SimStorage::new();
    let names: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    let b = || {
        let mut b = quiet_builder(&sim);
        for n in &names {
            b = b.region(n);
        }
        b.default_region("r00")
    };
    let db = b().cache_size(42 * MIN).open(DIR).expect("open");
    let a = db.create_account(NewAccount::new("big", "r07")).expect("a");
    for i in 0..40 {
        let mut w = db.write(a).expect("write");
        w.insert(&T, key(i), &big(i)).expect("buffer");
        w.commit().expect("commit");
    }
    db.close().expect("close");
    for total in [
        42 * MIN,
        42 * MIN + 1,
        42 * MIN + 4093,
        100 * MIN + 7919,
        usize::MAX,
    ] {
        let db = b().cache_size(total).open(DIR).expect("open");
        let budget = db.cache_budget();
        assert_eq!(budget.partitions.len(), 41);
        assert!(budget.used() <= total, "{total}: used {}", budget.used());
        assert!(
            budget.partitions.iter().all(|p| p.bytes >= MIN),
            "{budget:?}"
        );
        let r07 = budget
            .partitions
            .iter()
            .find(|p| p.partition == "r07")
            .unwrap();
        let r08 = budget
            .partitions
            .iter()
            .find(|p| p.partition == "r08")
            .unwrap();
        assert!(
            r07.bytes >= r08.bytes,
            "the bigger file got less: {budget:?}"
        );
        db.verify().expect("verify").check().expect("clean");
        db.close().expect("close");
    }
    assert!(matches!(
        b().cache_size(42 * MIN - 1).open(DIR),
        Err(Error::Config(_))
    ));
}

/// A name of exactly `len` bytes (multi-byte UTF-8 where it fits, to catch a char/byte mix-up).
fn name_of(len: usize, tag: usize) -> String {
    let mut s = format!("{tag:03}-");
    while s.len() + 2 <= len {
        s.push('é');
    }
    while s.len() < len {
        s.push('x');
    }
    assert_eq!(s.len(), len);
    s
}

/// Attacks the inline `Account` (38-byte names, 11 regions inline, the spill above) and
/// I4 through the routing cache, at budgets 0, 1 byte, one slot and the default, with
/// four threads creating and routing accounts at once (fills racing evictions). Expected:
/// every account routes to exactly its own name, home and allowed set, a region outside
/// it is refused (`Error::RegionNotAllowed` or similar, never a write), and the cache
/// stays within its budget.
#[test]
fn routing_cache_inline_limits_and_spill_under_tiny_budgets_and_threads() {
    let regions: Vec<String> = (0..14).map(|i| format!("g{i:02}")).collect();
    for budget in [0usize, 1, 200, 16 << 20] {
        let sim = SimStorage::new();
        let mut b = quiet_builder(&sim).routing_cache_size(budget);
        for r in &regions {
            b = b.region(r);
        }
        let db = b.open(DIR).expect("open");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (db, regions) = (db.clone(), regions.clone());
                std::thread::spawn(move || {
                    let mut made = Vec::new();
                    for i in 0..24 {
                        let tag = t * 100 + i;
                        let len = [5, 37, 38, 39, 64, 128][i % 6];
                        let allowed = [0, 10, 11, 12, 13][i % 5];
                        let home = (t + i) % 14;
                        let mut n = NewAccount::new(name_of(len, tag), regions[home].clone());
                        let mut set = vec![home];
                        for r in (0..14).filter(|&r| r != home).take(allowed) {
                            n = n.allow(regions[r].clone());
                            set.push(r);
                        }
                        let id = db.create_account(n).expect("create");
                        made.push((id, name_of(len, tag), home, set));
                        // Route every account made so far (evicting under a tiny budget).
                        for (id, name, home, set) in &made {
                            let acct = db.account(*id).expect("route");
                            assert_eq!(acct.name(), name);
                            assert_eq!(db.account_id(name).unwrap(), Some(*id));
                            let home_name = db.region_name(acct.home()).expect("home listed");
                            assert_eq!(home_name, regions[*home], "home of {name}");
                            let mut got: Vec<String> = acct
                                .allowed()
                                .iter()
                                .map(|r| db.region_name(*r).expect("listed"))
                                .collect();
                            got.sort();
                            let mut want: Vec<String> =
                                set.iter().map(|&r| regions[r].clone()).collect();
                            want.sort();
                            assert_eq!(got, want, "allowed regions of {name}");
                            let outside = (0..14).find(|r| !set.contains(r));
                            if let Some(r) = outside {
                                assert!(db.write_in(*id, &regions[r]).is_err(), "I4: {name}");
                            }
                        }
                    }
                    made.len()
                })
            })
            .collect();
        let n: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(n, 96);
        let stats = db.stats();
        assert!(
            stats.routing_cache_bytes <= budget,
            "routing cache {} bytes over its budget {budget}",
            stats.routing_cache_bytes
        );
        db.close().expect("close");
    }
}

/// The same invariant for every other handle that can hold a region snapshot past the
/// close, each alone and dropped on another thread: a `Hit` of `Db::find_unique`, an
/// open `Write` that read a record, a `Batch` whose write read one, a `Db::scan_all`
/// iterator half consumed, a `Read` that read (the last holder of the store). Expected:
/// for each, the region file is compacted once the handle is dropped; the failure lists
/// the handles after which it was not.
#[test]
fn hits_writes_batches_scans_and_reads_outliving_the_close_delay_the_region_compaction() {
    type Hold = Box<dyn std::any::Any + Send>;
    type Make = fn(&Db, AccountId) -> Hold;
    let kinds: [(&str, Make); 5] = [
        ("hit", |db, _| {
            common::sim::claim(
                db,
                db.account_id("frag").unwrap().unwrap(),
                "us",
                b"h",
                "h@x",
            )
            .expect("claim");
            Box::new(db.find_unique(&T, "email", "h@x").unwrap().expect("hit"))
        }),
        ("write", |db, a| {
            let mut w = db.write(a).expect("write");
            assert!(w.get(&T, key(0)).unwrap().is_some());
            w.insert(&T, b"never", b"x").expect("buffer");
            Box::new(w)
        }),
        ("batch", |db, a| {
            let mut b = db.batch_in("us").expect("batch");
            assert!(b.write(a).unwrap().get(&T, key(0)).unwrap().is_some());
            Box::new(b)
        }),
        ("scan_all", |db, _| {
            let mut rows = db.scan_all(&T).expect("scan");
            assert!(rows.next().expect("a row").is_ok());
            Box::new(rows)
        }),
        ("read", |db, a| {
            let r = db.read(a).expect("read");
            assert!(r.get(&T, key(0)).unwrap().is_some());
            Box::new(r)
        }),
    ];
    let mut skipped = Vec::new();
    for (name, make) in kinds {
        let sim = SimStorage::new();
        let db = open_us_eu(&sim);
        let (a, kept) = fragment_us(&db);
        let held = make(&db, a);
        db.close().expect("close");
        std::thread::spawn(move || drop(held)).join().unwrap();
        let released = us_bytes(&sim);
        let floor = compacted_len(&released);
        let db = open_us_eu(&sim);
        let r = db.read(a).expect("read");
        assert!(
            r.get(&T, b"never").unwrap().is_none(),
            "{name}: a dropped write landed"
        );
        for &i in &kept {
            assert_eq!(
                &*r.get(&T, key(i)).unwrap().expect("kept"),
                &big(i)[..],
                "{name}"
            );
        }
        drop(r);
        assert!(db.audit().expect("audit").is_clean(), "{name}");
        db.close().expect("close");
        if released.len() > floor + 2 * 4096 {
            skipped.push(format!("{name}: {} bytes, compact {floor}", released.len()));
        }
    }
    assert!(
        skipped.is_empty(),
        "region not compacted after the last handle went: {skipped:?}"
    );
}

/// Attacks a parallel sweep racing a close of another clone (sweeps now run contained):
/// expected, the sweep either visits exactly the store's rows or stops with
/// `Error::Closed`, never a panic or another row; once its clone is dropped the region is
/// compacted and every record is intact.
#[test]
fn a_sweep_racing_a_close_visits_exactly_the_rows_or_answers_closed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (a, kept) = fragment_us(&db);
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let sweeper = {
        let (db, seen) = (db.clone(), seen.clone());
        std::thread::spawn(move || {
            let r = db.scan_all_parallel(&T, |_, acct, k, v| {
                assert_eq!(acct, a);
                let i: usize = std::str::from_utf8(&k[2..]).unwrap().parse().unwrap();
                assert_eq!(v, &big(i)[..], "row {i}");
                seen.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok(())
            });
            r.map(|_| ())
        })
    };
    while seen.load(Ordering::SeqCst) < 5 {
        std::thread::yield_now();
    }
    db.close().expect("close while a sweep runs");
    match sweeper.join().expect("the sweep must not panic") {
        Ok(()) => assert_eq!(seen.load(Ordering::SeqCst), kept.len()),
        Err(Error::Closed) => assert!(seen.load(Ordering::SeqCst) <= kept.len()),
        Err(e) => panic!("sweep racing a close: {e}"),
    }
    let released = us_bytes(&sim);
    assert!(
        released.len() <= compacted_len(&released) + 2 * 4096,
        "us not compacted after the sweep's clone went"
    );
    let db = open_us_eu(&sim);
    check_fragmented(&db, a, &kept);
    db.close().expect("close");
}

/// Attacks the report of a failed close: the global file fails (an I/O error of a unique
/// write or of a checkpoint poisons it), `close` answers the error, and another clone then closes too.
/// Expected: the second close does not answer `Ok(())` (no clean close was recorded; it
/// should repeat the error or say `Closed`). After reopening, every acknowledged claim is
/// there (I3) and the failed one settled one way.
#[test]
fn a_second_close_after_a_failed_close_is_not_ok() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (e, _) = common::sim::e_and_u(&db);
    for i in 0..5 {
        common::sim::claim(&db, e, "eu", &key(i), &format!("e{i}@x")).expect("claim");
    }
    // An unsynced global commit may not reach the storage: the checkpoint does.
    sim.fail_file_after(sim_global(DIR), 0, FaultOn::Any);
    let failed = common::sim::claim(&db, e, "eu", b"failed", "failed@x");
    let ckpt = db.checkpoint();
    assert!(failed.is_err() || ckpt.is_err(), "{failed:?} {ckpt:?}");
    sim.clear_fault();
    let clone = db.clone();
    let first = db.close();
    assert!(first.is_err(), "close of a poisoned store: {first:?}");
    let second = clone.close();
    sim.crash();
    let db = open_us_eu(&sim);
    for i in 0..5 {
        let hit = db.find_unique(&T, "email", format!("e{i}@x")).unwrap();
        assert_eq!(hit.expect("claim lost").account(), e);
    }
    let failed = db.find_unique(&T, "email", "failed@x").unwrap();
    let rec = db.read(e).unwrap().get(&T, b"failed").unwrap().is_some();
    assert_eq!(failed.is_some(), rec, "the failed claim settled half way");
    drop(failed);
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
    assert!(
        second.is_err(),
        "the first close failed ({first:?}), a clone's close then answered {second:?}"
    );
}

/// Attacks the record quota across a close with a write in flight and a crash after
/// it: an account limited to 3 records holds 3, an open `Write` buffers a 4th across the
/// close. Expected: that write answers `Closed`; after a crash and reopen the account
/// still holds exactly 3, a 4th insert in the other region is refused (the quota spans
/// regions), and one removed makes room for one.
#[test]
fn the_record_quota_holds_across_a_close_a_dropped_write_and_a_crash() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let a = db
        .create_account(NewAccount::new("q", "us").allow("eu").max_records(3))
        .expect("a");
    for i in 0..3 {
        common::sim::put(&db, a, ["us", "eu"][i % 2], &key(i)).expect("put");
    }
    let mut w = db.write_in(a, "eu").expect("write");
    w.insert(&T, b"fourth", b"x").expect("buffer");
    db.close().expect("close");
    assert!(matches!(w.commit(), Err(Error::Closed)));
    sim.crash();
    let db = open_us_eu(&sim);
    assert_eq!(common::sim::record_count(&db, a), 3);
    let over = common::sim::put(&db, a, "eu", b"fourth");
    assert!(over.is_err(), "a 4th record past max_records(3): {over:?}");
    assert_eq!(common::sim::record_count(&db, a), 3);
    common::sim::remove(&db, a, "us", &key(0)).expect("remove");
    common::sim::put(&db, a, "eu", b"fourth").expect("room for one");
    assert!(common::sim::put(&db, a, "us", b"fifth").is_err());
    assert_eq!(common::sim::record_count(&db, a), 3);
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
}

/// Attacks "a damaged partition is not compacted" and the fencing of damage (I3 for the
/// other partitions, no panic through the API): a region file's pages are damaged under
/// the running store, `Db::verify` finds it (the region is fenced), then the store
/// closes. Expected: no panic (the close skips the compaction of the fenced file); the
/// reopen either refuses with `Error::Corrupt` naming the file (then it opens with the
/// region disabled, whose records are not served) or opens, and a read of the damaged
/// region answers its record, `Error::Corrupt` naming it, or (documented for damage met
/// without verification) nothing, never another value; the other region's records and
/// claims are intact either way.
#[test]
fn a_damaged_region_at_close_is_left_alone_and_fenced() {
    let sim = SimStorage::new();
    let db = open_us_eu(&sim);
    let (e, u) = common::sim::e_and_u(&db);
    for i in 0..40 {
        let mut w = db.write(e).expect("write");
        w.insert(&T, key(i), &big(i)).expect("buffer");
        w.commit().expect("commit");
        common::sim::claim(&db, u, "us", &key(i), &format!("u{i}@x")).expect("claim us");
    }
    let path = sim_region(DIR, "eu");
    let mut bytes = sim.live_bytes(&path).expect("eu");
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8192] {
        *b ^= 0x5A;
    }
    sim.set_bytes(&path, bytes);
    let report = db.verify().expect("verify");
    assert!(
        report.damaged.iter().any(|d| d.partition == "eu"),
        "verify missed the damage"
    );
    // Not asserted: the file's length. regionkv skips the compaction of a damaged
    // partition, but redb's own close still commits and may shrink the file.
    let _ = db.close();
    // The open refuses a file redb cannot open (naming it), or opens and fences it.
    let (db, eu_open) = match quiet_builder(&sim).region("us").region("eu").open(DIR) {
        Ok(db) => (db, true),
        Err(Error::Corrupt { partition, .. }) => {
            assert!(partition.contains("eu"), "the open blamed {partition}");
            let db = quiet_builder(&sim)
                .region("us")
                .disable_region("eu")
                .open(DIR)
                .expect("open with the damaged region disabled");
            (db, false)
        }
        Err(other) => panic!("reopen with a damaged eu: {other}"),
    };
    for i in 0..40 {
        let hit = db.find_unique(&T, "email", format!("u{i}@x")).unwrap();
        assert_eq!(hit.expect("us claim lost").key(), key(i).as_slice());
    }
    if eu_open {
        let r = db.read(e).expect("read");
        for i in 0..40 {
            match r.get(&T, key(i)) {
                Ok(Some(rec)) => assert_eq!(&*rec, &big(i)[..], "eu record {i}"),
                // Documented for unverified damage (`Builder::verify_on_open`): absent.
                Ok(None) => {}
                Err(Error::Corrupt { partition, .. }) => assert_eq!(partition, "eu"),
                Err(other) => panic!("eu record {i}: {other}"),
            }
        }
    } else {
        // The disabled region's records are not served (not from a cache either).
        let got = db
            .read(e)
            .and_then(|r| r.get(&T, key(0)).map(|x| x.is_some()));
        assert!(got.is_err(), "a record of the disabled region: {got:?}");
    }
}
