//! Free pages given back at a clean close (docs/design.md section 1, "Free pages and
//! compaction at a clean close"): the unsynced global commits of unique writes leave free
//! pages that redb can reuse only after a durable commit, so the global file grows between
//! checkpoints; a clean `Db::close` compacts every partition when it is released.
//!
//! - the space is really reclaimed: the global file after N unique writes and a close is
//!   smaller than while the store ran, and below a bound per entry;
//! - the compaction waits for the last snapshot (redb refuses to compact under a live read
//!   transaction) and then still happens;
//! - a crash at every storage operation of the close (final checkpoint, clean-close record,
//!   each partition's compaction) loses nothing: after reopening, the store matches the
//!   model (I1-I3) and its audit is clean.

mod common;

use common::sim::sim_global;
use common::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{Db, Unique};

const DIR: &str = "/compaction";

/// Distinct unique values claimed one write each, after the workload (keys and values the
/// workload's checker does not probe).
const BULK: usize = 60;

/// The table of the bulk claims (the workload's checker scans `T`).
const B: regionkv::Table<regionkv::Raw> = regionkv::Table::new("bulk");

fn open(sim: &SimStorage) -> Db {
    builder()
        .storage(sim.clone())
        // No checkpoint inside the run but the ones the test makes: the global file grows
        // by its unsynced commits until the close.
        .checkpoint_budget(1 << 20, std::time::Duration::from_secs(3600))
        .open(DIR)
        .expect("open")
}

fn bulk_key(i: usize) -> Vec<u8> {
    format!("bulk-{i:04}").into_bytes()
}

fn bulk_value(i: usize) -> String {
    format!("bulk-{i:04}@example.com")
}

fn claim_bulk(db: &Db, ids: &[regionkv::AccountId], n: usize) {
    for i in 0..n {
        let mut w = db.write(ids[i % ids.len()]).expect("write");
        w.insert_unique(
            &B,
            bulk_key(i),
            b"bulk",
            &[Unique::new("email", &bulk_value(i))],
        )
        .expect("buffer");
        w.commit().expect("claim");
    }
}

fn global_len(sim: &SimStorage) -> usize {
    sim.live_bytes(sim_global(DIR)).expect("global file").len()
}

/// Every bulk claim is there, owned by its record.
fn check_bulk(db: &Db, n: usize) -> Result<(), String> {
    for i in 0..n {
        let hit = db
            .find_unique(&B, "email", bulk_value(i))
            .map_err(|e| format!("find bulk {i}: {e}"))?
            .ok_or_else(|| format!("bulk value {i} lost"))?;
        if hit.key() != bulk_key(i).as_slice() {
            return Err(format!("bulk value {i} owned by another key"));
        }
    }
    Ok(())
}

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

#[test]
fn clean_close_gives_the_free_pages_of_unsynced_commits_back() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = create_accounts(&db);
    let n = 1500;
    claim_bulk(&db, &ids, n);
    let running = global_len(&sim);
    db.close().expect("close");
    let closed = global_len(&sim);
    // Nothing is left for redb's compact to give back (a close without the compaction
    // leaves ~15% here, at 1,500 entries written one per write into an empty index; the
    // peers workload leaves 58% of the global file free).
    let closed_bytes = sim.live_bytes(sim_global(DIR)).expect("global file");
    let floor = compacted_len(&closed_bytes);
    assert!(
        closed <= floor + 2 * 4096,
        "global file {closed} bytes after the close; redb's compact makes {floor} of it"
    );
    assert!(
        closed < running,
        "global file {running} bytes while running, {closed} after the close"
    );
    // 1,500 entries of ~80 bytes in a tree with random keys, plus the catalog.
    assert!(
        closed < 192 * n + 64 * 1024,
        "global file {closed} bytes after the close, for {n} entries"
    );
    // Nothing changed but the layout: every value is still owned, the audit is clean, and
    // a second clean close does not grow the file.
    let db = open(&sim);
    check_bulk(&db, n).unwrap();
    assert!(db.audit().expect("audit").is_clean());
    db.close().expect("close");
    let again = global_len(&sim);
    assert!(
        again <= closed + 4 * 4096,
        "a clean reopen and close grew the global file from {closed} to {again} bytes"
    );
}

/// `Builder::compact_on_close(false)`: the close leaves the free pages in the file (more
/// than redb's compact would leave), nothing lost; the next close with the default
/// compacts it.
#[test]
fn compact_on_close_false_keeps_the_file_as_it_ran() {
    let sim = SimStorage::new();
    let plain = |on: bool| {
        builder()
            .storage(sim.clone())
            .checkpoint_budget(1 << 20, std::time::Duration::from_secs(3600))
            .compact_on_close(on)
            .open(DIR)
            .expect("open")
    };
    let db = plain(false);
    let ids = create_accounts(&db);
    let n = 600;
    claim_bulk(&db, &ids, n);
    db.close().expect("close");
    // (The close's synced checkpoint lets redb trim free pages at the end of the file,
    // so the file may shrink a little even so.)
    let kept = global_len(&sim);
    let floor = compacted_len(&sim.live_bytes(sim_global(DIR)).expect("global file"));
    assert!(
        floor < kept,
        "the close without compaction left nothing to compact ({kept} bytes, compact: {floor})"
    );
    let db = plain(true);
    check_bulk(&db, n).unwrap();
    db.close().expect("close");
    let closed = global_len(&sim);
    assert!(
        closed <= floor + 4 * 4096,
        "the default close left {closed} bytes; redb's compact makes {floor}"
    );
}

#[test]
fn compaction_waits_for_the_last_snapshot_then_happens() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = create_accounts(&db);
    claim_bulk(&db, &ids, 300);
    let running = global_len(&sim);
    // A view (it holds the store and a snapshot of the global index) and a hit (a record's
    // region snapshot) outlive the close.
    let view = db.view().expect("view");
    let hit = view
        .find_unique(&B, "email", bulk_value(7))
        .unwrap()
        .expect("claimed");
    db.close().expect("close with a snapshot alive");
    assert_eq!(hit.key(), bulk_key(7).as_slice());
    let held = global_len(&sim);
    assert!(
        held >= running,
        "the global file shrank ({running} -> {held}) while a snapshot held it"
    );
    drop(hit);
    drop(view);
    let released = sim.live_bytes(sim_global(DIR)).expect("global file");
    let floor = compacted_len(&released);
    assert!(
        released.len() < held && released.len() <= floor + 2 * 4096,
        "global file {running} bytes while running, {held} at the close, {} after the last \
         snapshot went (redb's compact makes {floor} of it)",
        released.len()
    );
    let db = open(&sim);
    check_bulk(&db, 300).unwrap();
    db.close().expect("close");
}

/// The workload, then the bulk claims, without a fault; returns the store and its model.
fn build(sim: &SimStorage) -> (Db, Model) {
    let db = open(sim);
    let ids = create_accounts(&db);
    let some: Vec<_> = ids.iter().copied().map(Some).collect();
    let mut model = Model::default();
    for step in group_steps(&workload(7, 40), 1) {
        let rs = execute_step(&db, &some, &step);
        for (op, r) in step.iter().zip(&rs) {
            let got = classify(r).unwrap_or_else(|| panic!("op {op:?}: {r:?}"));
            assert_eq!(model.apply(op), got, "op {op:?}");
        }
    }
    claim_bulk(&db, &ids, BULK);
    (db, model)
}

#[test]
fn crash_at_every_storage_operation_of_a_clean_close() {
    // The fault-free close: how many storage operations it makes, and that it compacts.
    let sim = SimStorage::new();
    let (db, _) = build(&sim);
    let (before, running) = (sim.writes(), global_len(&sim));
    db.close().expect("close");
    let close_ops = sim.writes() - before;
    let closed = sim.live_bytes(sim_global(DIR)).expect("global file");
    assert!(
        closed.len() < running && closed.len() <= compacted_len(&closed) + 2 * 4096,
        "the fault-free close did not compact the global file"
    );

    let mut n = 0u64;
    loop {
        let sim = SimStorage::new();
        let (db, model) = build(&sim);
        sim.fail_after(n, FaultOn::Any);
        // Whatever the close answers, nothing acknowledged may be lost.
        let _ = db.close();
        let tripped = sim.fault_tripped();
        sim.crash();
        sim.clear_fault();
        let db = builder()
            .storage(sim.clone())
            .open(DIR)
            .unwrap_or_else(|e| panic!("reopen after a crash at op {n} of the close: {e}"));
        let ids = account_ids(&db);
        check(&db, &ids, &model).unwrap_or_else(|e| panic!("crash at op {n} of the close: {e}"));
        check_bulk(&db, BULK).unwrap_or_else(|e| panic!("crash at op {n} of the close: {e}"));
        let audit = db.audit().expect("audit");
        assert!(audit.is_clean(), "crash at op {n} of the close: {audit}");
        db.close().expect("close after recovery");
        if !tripped {
            break;
        }
        n += 1;
    }
    assert!(
        n >= close_ops,
        "the fault walked {n} operations, the close makes {close_ops}"
    );
}
