//! Adversarial review of the newest surfaces: the unique-index cache and the routing cache
//! (`src/reservation/cache.rs`, `src/clock.rs`, `src/account.rs`), `Db::view` / `View`,
//! `Db::create_accounts`, quotas across the parts of a group, cheap open and containment
//! (`verify_on_open(false)`, `Db::verify` while writes run), and sweeps.
//!
//! The round found 8 breaks of documented promises, all fixed; their tests are kept under
//! names that say what holds now (a `View`'s and a `Write`'s reads, a sweep's setup and a
//! sweep that meets a damaged page are contained and fence the region; a `Read` taken
//! before `close` reads nothing after it; cached routing and unique answers refuse a
//! fenced global file; the unique-index cache's memory stays flat while hot values are
//! invalidated and filled again: its eviction ring grew by a key per refill until the
//! slab-backed CLOCK, whose slots are allocated once). The others are attacks the code withstood, kept because they
//! assert something no other test does (tiny budgets, every storage fault of a bulk
//! create, verify racing writers, ...).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::sim::{claim, put, quiet_builder, quiet_us_eu, remove, sim_global, sim_region};
use common::*;
use regionkv::testing::{FaultOn, SimStorage};
use regionkv::{AccountId, Db, Error, NewAccount, Unique};

// ---------------------------------------------------------------------------------------
// A per-thread count of live heap bytes: what one thread allocated and did not free. Used
// to measure the memory a cache keeps beside its budget (the cache's work in these tests
// runs on the test's own thread: a lone writer leads its own group commit, and the quiet
// builder's checkpoint timer never fires).

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the only addition is
// a thread-local counter of plain integers (const-initialised, no destructor, so touching
// it never allocates nor re-enters the allocator). `try_with` tolerates threads whose
// locals are being torn down. A wrong forward would crash every test of this binary.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: `ptr` was returned by `System.alloc` with this layout (every allocation
        // of this binary goes through `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes this thread holds now.
fn live_bytes() -> isize {
    LIVE.with(|l| l.get())
}

#[test]
fn the_counting_allocator_counts_what_a_thread_keeps() {
    let before = live_bytes();
    let kept = vec![0u8; 100_000];
    let held = live_bytes() - before;
    assert!(held >= 100_000, "{held}");
    drop(kept);
    assert!(live_bytes() - before < 1_000);
}

// ---------------------------------------------------------------------------------------
// Kit.

const DIR: &str = "/attack";

fn open(sim: &SimStorage) -> Db {
    quiet_us_eu(sim, DIR).expect("open")
}

fn open_cache(sim: &SimStorage, unique: usize, routing: usize) -> Db {
    quiet_builder(sim)
        .region("us")
        .region("eu")
        .unique_cache_size(unique)
        .routing_cache_size(routing)
        .open(DIR)
        .expect("open")
}

/// Flips one byte `off` bytes into every copy of `needle` in `bytes`; how many there were.
fn damage_every_copy(bytes: &mut [u8], needle: &[u8], off: usize) -> usize {
    let hits: Vec<usize> = common::files::find_all(bytes, needle).collect();
    for &at in &hits {
        bytes[at + off] ^= 0x5A;
    }
    hits.len()
}

/// A payload whose first 200 bytes occur nowhere else.
fn marker(seed: u64) -> Vec<u8> {
    Rng(seed).bytes(2000)
}

// ---------------------------------------------------------------------------------------
// View and containment.

/// Containment (docs/design.md 3a): a partition found damaged "refuses reads and writes
/// (`Error::Corrupt`) until the store is reopened", and "a snapshot of a damaged partition
/// is refused by the mark at its next use" (`partition/contain.rs`). A `Read` holding eu's
/// snapshot obeys; a `View` holding eu's snapshot must too: `View::get` after `Db::verify`
/// fenced eu must be `Corrupt`, never a record read from the fenced file (and never
/// outside containment, where a redb panic would unwind through the API).
#[test]
fn view_get_refuses_a_region_fenced_after_its_snapshot() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let (e, _u) = common::sim::e_and_u(&db);
    put(&db, e, "eu", b"fine").unwrap();
    let m = marker(0xA77A_C4E5);
    let mut w = db.write(e).unwrap();
    w.insert(&T, b"big", m.as_slice()).unwrap();
    w.commit().unwrap();
    // Both keep eu's snapshot.
    let view = db.view().unwrap();
    let kept = db.read(e).unwrap();
    assert!(view.get(e, &T, b"fine").unwrap().is_some());
    assert!(kept.get(&T, b"fine").unwrap().is_some());
    // Damage on eu's medium, found by verify: eu is fenced.
    let eu = sim_region(DIR, "eu");
    let mut bytes = sim.live_bytes(&eu).unwrap();
    assert!(damage_every_copy(&mut bytes, &m[..200], 700) >= 1);
    sim.set_bytes(&eu, bytes);
    let report = db.verify().unwrap();
    assert_eq!(report.damaged.len(), 1, "{report}");
    assert_eq!(report.damaged[0].partition, "eu", "{report}");
    // A fresh read and the kept Read are refused.
    assert!(matches!(
        db.read(e).unwrap().get(&T, b"fine"),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(kept.get(&T, b"fine"), Err(Error::Corrupt { .. })));
    // The view must be too.
    let got = view.get(e, &T, b"fine");
    assert!(
        matches!(got, Err(Error::Corrupt { .. })),
        "View::get read the fenced region eu: {:?}",
        got.map(|r| r.map(|r| r.payload().to_vec()))
    );
}

/// Closing (`Db::close`): "Other clones see `Error::Closed` from then on". A `View` obeys
/// (`View::get` checks). A `Read` taken before the close and not used yet has no snapshot:
/// its first `get` after the close must not open a new snapshot of a closed store; expected
/// `Error::Closed`, as for the `View`.
#[test]
fn a_read_taken_before_close_reads_nothing_after_it() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let (e, _u) = common::sim::e_and_u(&db);
    put(&db, e, "eu", b"k").unwrap();
    let view = db.view().unwrap();
    let r = db.read(e).unwrap();
    db.clone().close().unwrap();
    assert!(matches!(view.get(e, &T, b"k"), Err(Error::Closed)));
    assert!(matches!(db.read(e), Err(Error::Closed)));
    let got = r.get(&T, b"k");
    assert!(
        matches!(got, Err(Error::Closed)),
        "a Read read a closed store: {:?}",
        got.map(|r| r.map(|r| r.payload().to_vec()))
    );
}

/// I5 and snapshot consistency of a kept `View` across a transfer of a value between two
/// accounts in two regions, a release, a checkpoint and a disable: every hit is the record
/// of the account the index names now, with the bytes that record had at one snapshot;
/// never the previous owner's record; a value whose owner lives in a disabled region is
/// `RegionDisabled` (not the kept snapshot's record), and `is_taken` still says taken.
#[test]
fn a_kept_view_follows_transfers_and_never_returns_the_previous_owner() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let (e, u) = common::sim::e_and_u(&db);
    let view = db.view().unwrap();
    for round in 0..6u8 {
        let (who, region) = if round % 2 == 0 { (e, "eu") } else { (u, "us") };
        let mut w = db.write_in(who, region).unwrap();
        w.insert_unique(&T, b"owner", &[round], &[Unique::new("email", "moving@x")])
            .unwrap();
        w.commit().unwrap();
        let hit = view
            .find_unique(&T, "email", "moving@x")
            .unwrap()
            .expect("claimed");
        assert_eq!(
            hit.account(),
            who,
            "round {round}: another account's record"
        );
        assert_eq!(hit.key(), b"owner", "round {round}");
        // Stale is allowed (the view's snapshot of the region may be from an earlier
        // round, when this same record owned the value), but only a payload this record
        // had while it owned the value: one of this account's rounds, up to this one.
        let p = hit.record().payload()[0];
        assert!(
            p <= round && p % 2 == round % 2,
            "round {round}: payload {p}"
        );
        let fresh = db
            .find_unique(&T, "email", "moving@x")
            .unwrap()
            .expect("claimed");
        assert_eq!(
            fresh.record().payload(),
            &[round],
            "round {round}: a fresh lookup"
        );
        // Released: the index says free, whatever the kept snapshot holds.
        remove(&db, who, region, b"owner").unwrap();
        assert!(
            view.find_unique(&T, "email", "moving@x").unwrap().is_none(),
            "round {round}"
        );
        if round == 2 {
            db.checkpoint().unwrap();
        }
    }
    // Owned by a record of eu, then eu disabled: the kept view must not answer from its
    // snapshot of eu.
    let mut w = db.write_in(e, "eu").unwrap();
    w.insert_unique(&T, b"last", b"L", &[Unique::new("email", "moving@x")])
        .unwrap();
    w.commit().unwrap();
    assert_eq!(
        view.find_unique(&T, "email", "moving@x")
            .unwrap()
            .map(|h| h.account()),
        Some(e)
    );
    db.disable_region("eu").unwrap();
    assert!(matches!(
        view.find_unique(&T, "email", "moving@x"),
        Err(Error::RegionDisabled(_))
    ));
    assert!(db.is_taken("email", "moving@x").unwrap());
    // The other account cannot take it.
    let mut w = db.write_in(u, "us").unwrap();
    w.insert_unique(&T, b"steal", b"S", &[Unique::new("email", "moving@x")])
        .unwrap();
    assert!(matches!(w.commit(), Err(Error::UniqueViolation { .. })));
}

// ---------------------------------------------------------------------------------------
// The unique-index cache.

/// The unique-index cache's memory bound (docs/design.md 8: "the budget is per store and
/// never exceeded"; `clock.rs`: "the total never exceeds the budget"). A value whose entry
/// is invalidated and filled again, over and over (a hot value claimed and released), must
/// not make the cache hold more memory each time: the heap this thread keeps after 2,000
/// more claim / `is_taken` / release / `is_taken` cycles must stay flat (under 32 KiB of
/// growth), whatever the budget charges. The same loop with the cache off is the control:
/// it stays flat, so any growth with the cache on is the cache's. Observed: ~130 bytes
/// kept per cycle with the cache on (each fill after an invalidation pushes the key again
/// onto its shard's CLOCK ring, `Clock::put`; `Clock::invalidate` removes the map slot
/// only, and the ring is drained only by eviction, which never runs while the shard is
/// under its budget), none with it off.
#[test]
fn unique_cache_memory_stays_flat_through_invalidations() {
    let growth = |budget: usize| -> (isize, isize, regionkv::Stats) {
        let sim = SimStorage::new();
        let db = open_cache(&sim, budget, 1 << 20);
        let (e, _u) = common::sim::e_and_u(&db);
        let cycle = |n: usize| {
            for i in 0..n {
                claim(&db, e, "eu", b"hot", "hot@x").unwrap();
                assert!(db.is_taken("email", "hot@x").unwrap());
                remove(&db, e, "eu", b"hot").unwrap();
                assert!(!db.is_taken("email", "hot@x").unwrap());
                if i % 200 == 199 {
                    db.checkpoint().unwrap();
                }
            }
            db.checkpoint().unwrap();
            db.checkpoint().unwrap();
        };
        // Warm every buffer redb and the store keep.
        cycle(1_000);
        let a = live_bytes();
        cycle(2_000);
        let b = live_bytes();
        cycle(2_000);
        let c = live_bytes();
        (b - a, c - b, db.stats())
    };
    let (off1, off2, _) = growth(0);
    assert!(
        off1.max(off2) < 32 << 10,
        "control (cache off) not flat: {off1} then {off2} bytes per 2,000 cycles"
    );
    let (on1, on2, s) = growth(1 << 20);
    assert!(s.unique_cache_bytes <= 1 << 20, "{s:?}");
    assert!(
        on1.max(on2) < 32 << 10,
        "with the cache on the heap grew by {on1} then {on2} bytes per 2,000 cycles \
         (cache off: {off1}, {off2}) while the cache charged {} bytes for {} entries",
        s.unique_cache_bytes,
        s.unique_cache_entries
    );
}

/// I1/I2 through the cache at tiny budgets: with `unique_cache_size` of 0, of less than one
/// slot (nothing fits), of about one slot per shard (every fill evicts), and the default,
/// a random workload of claims, transfers, releases and groups over 3 regions gives the
/// model's results, and after every step every owner (`find_unique`, `is_taken`, through
/// the cache) is the model's.
#[test]
fn tiny_unique_cache_budgets_answer_as_the_model() {
    for budget in [0usize, 40, 16 * 240, 16 << 20] {
        for seed in 0..2u64 {
            let sim = SimStorage::new();
            let db = builder()
                .storage(sim.clone())
                .unique_cache_size(budget)
                .routing_cache_size(budget)
                .checkpoint_budget(8, Duration::from_secs(3600))
                .open("/tiny")
                .unwrap();
            let ids = create_accounts(&db);
            let mut model = Model::workload();
            for (i, op) in workload(seed * 31 + budget as u64, 120).iter().enumerate() {
                let r = execute(&db, &ids, op);
                model
                    .explain(op, &r)
                    .unwrap_or_else(|e| panic!("budget {budget} seed {seed} step {i}: {e}"));
                let want = model.apply(op);
                assert_eq!(
                    classify(&r),
                    Some(want),
                    "budget {budget} seed {seed} step {i} {op:?}: {r:?}"
                );
                check(&db, &ids, &model)
                    .unwrap_or_else(|e| panic!("budget {budget} seed {seed} step {i}: {e}"));
            }
            let s = db.stats();
            assert!(s.unique_cache_bytes <= budget, "{s:?}");
            assert!(s.routing_cache_bytes <= budget, "{s:?}");
            if budget <= 40 {
                assert_eq!((s.unique_cache_entries, s.routing_cache_entries), (0, 0));
            }
        }
    }
}

/// The cache never answers older than a commit that returned, with a budget of about one
/// slot per shard (every fill evicts another value) and readers filling it from many
/// values at once: after each commit returns, `is_taken` and `find_unique` of every value
/// are the truth, while reader threads keep filling and evicting.
#[test]
fn fills_racing_commits_with_evictions_never_keep_an_outdated_entry() {
    let sim = SimStorage::new();
    let db = open_cache(&sim, 16 * 300, 16 * 300);
    let (e, u) = common::sim::e_and_u(&db);
    let values: Vec<String> = (0..24).map(|i| format!("v{i}@x")).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (db, values, stop) = (&db, &values, &stop);
            s.spawn(move || {
                let view = db.view().unwrap();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let v = &values[i % values.len()];
                    let _ = db.is_taken("email", v);
                    let _ = view.find_unique(&T, "email", v);
                    i += 7;
                }
            });
        }
        let mut owner: Vec<Option<AccountId>> = vec![None; values.len()];
        let mut rng = Rng(0xCAC4E);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for step in 0..300 {
                let i = rng.below(values.len());
                let key = format!("k{i}");
                match owner[i] {
                    Some(who) => {
                        let region = if who == e { "eu" } else { "us" };
                        remove(&db, who, region, key.as_bytes()).unwrap();
                        owner[i] = None;
                    }
                    None => {
                        let (who, region) = if rng.below(2) == 0 {
                            (e, "eu")
                        } else {
                            (u, "us")
                        };
                        claim(&db, who, region, key.as_bytes(), &values[i]).unwrap();
                        owner[i] = Some(who);
                    }
                }
                for (j, v) in values.iter().enumerate() {
                    assert_eq!(
                        db.is_taken("email", v).unwrap(),
                        owner[j].is_some(),
                        "step {step} {v}"
                    );
                    let got = db.find_unique(&T, "email", v).unwrap().map(|h| h.account());
                    assert_eq!(got, owner[j], "step {step} {v}");
                }
            }
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    });
    let s = db.stats();
    assert!(s.unique_cache_bytes <= 16 * 300, "{s:?}");
    assert!(s.unique_cache_hits > 0, "{s:?}");
}

/// Cache coherence across every operator step that changes the index outside an ordinary
/// write: a value claimed in eu before a power loss, eu disabled at the reopen (unsettled),
/// lookups warmed while unsettled, `forfeit_unsettled`, a claim by another account, eu
/// back (its claim lost), checkpoints. At each step the cached answers equal those of a
/// store opened with the cache off.
#[test]
fn the_cache_agrees_with_no_cache_through_unsettle_forfeit_and_return() {
    let answers = |cache: usize| -> Vec<String> {
        let sim = SimStorage::new();
        let mut out = Vec::new();
        let ask = |db: &Db, out: &mut Vec<String>| {
            for v in ["a@x", "b@x", "free@x"] {
                out.push(format!("{v} taken {:?}", db.is_taken("email", v)));
                out.push(format!(
                    "{v} owner {:?}",
                    db.find_unique(&T, "email", v)
                        .map(|h| h.map(|h| (h.account(), h.key().to_vec())))
                ));
            }
        };
        let db = open_cache(&sim, cache, cache);
        let (e, u) = common::sim::e_and_u(&db);
        claim(&db, u, "us", b"kb", "b@x").unwrap();
        db.checkpoint().unwrap();
        ask(&db, &mut out);
        claim(&db, e, "eu", b"ka", "a@x").unwrap(); // marks eu dirty (synced)
        ask(&db, &mut out);
        sim.crash();
        drop(db);
        let db = quiet_builder(&sim)
            .region("us")
            .disable_region("eu")
            .unique_cache_size(cache)
            .open(DIR)
            .unwrap();
        ask(&db, &mut out);
        ask(&db, &mut out);
        out.push(format!(
            "forfeit {:?}",
            db.forfeit_unsettled("eu").map(|r| r.was_unsettled)
        ));
        ask(&db, &mut out);
        out.push(format!(
            "u claims a@x: {:?}",
            claim(&db, u, "us", b"ka2", "a@x")
        ));
        ask(&db, &mut out);
        db.checkpoint().unwrap();
        ask(&db, &mut out);
        db.close().unwrap();
        let db = open_cache(&sim, cache, cache);
        out.push(format!("lost {}", db.recovery_report().claims_lost.len()));
        ask(&db, &mut out);
        remove(&db, u, "us", b"ka2").unwrap();
        ask(&db, &mut out);
        db.checkpoint().unwrap();
        db.checkpoint().unwrap();
        ask(&db, &mut out);
        out
    };
    let off = answers(0);
    let on = answers(16 << 20);
    assert_eq!(on.len(), off.len());
    for (i, (a, b)) in on.iter().zip(&off).enumerate() {
        assert_eq!(a, b, "answer {i}: cached vs uncached");
    }
    // And the answers are the right ones at the interesting points.
    assert!(
        off.iter()
            .any(|l| l.starts_with("free@x taken Err(RegionUnsettled")),
        "{off:#?}"
    );
    assert!(off.iter().any(|l| l == "lost 1"), "{off:#?}");
}

// ---------------------------------------------------------------------------------------
// create_accounts.

/// All or none, at every storage operation (I3): `create_accounts` of three accounts with
/// the disk failing at its n-th write or sync, then a power loss (or a plain restart):
/// after the reopen either all three names exist with the ids the call returned (when it
/// returned them) or none does, and no name maps to an id another name has. Meanwhile,
/// before the power loss, the caller uses whatever the failed call left visible: an
/// account it can still route to gets a record. After the reopen, accounts created anew
/// must not see that record (an id handed out twice would give the new tenant the old
/// one's data: I5), and every row must belong to an account that exists (I2).
#[test]
fn create_accounts_fault_at_every_storage_operation_is_all_or_none() {
    let mut n = 0u64;
    loop {
        for power_loss in [true, false] {
            let sim = SimStorage::new();
            let db = open(&sim);
            let base = db.create_account(NewAccount::new("base", "us")).unwrap();
            put(&db, base, "us", b"base").unwrap();
            sim.fail_after(n, FaultOn::Any);
            let r = db.create_accounts([
                NewAccount::new("x", "eu"),
                NewAccount::new("y", "us").allow("eu"),
                NewAccount::new("z", "eu").max_records(5),
            ]);
            let tripped = sim.fault_tripped();
            // Whatever is still routable gets a record (the caller may have looked up ids).
            let mut ghosts = Vec::new();
            for id in (base.get() + 1..base.get() + 4).map(AccountId::from_raw) {
                if db.account(id).is_ok() {
                    let mut w = match db.write(id) {
                        Ok(w) => w,
                        Err(_) => continue,
                    };
                    if w.insert(&T, b"secret", b"ghost").is_ok() && w.commit().is_ok() {
                        ghosts.push(id);
                    }
                }
            }
            if power_loss {
                sim.crash();
            } else {
                sim.clear_fault();
            }
            drop(db);
            let db = open(&sim);
            let found: Vec<Option<AccountId>> = ["x", "y", "z"]
                .iter()
                .map(|n| db.account_id(n).unwrap())
                .collect();
            let what = format!("fault at {n} (power loss {power_loss}): {r:?}, found {found:?}");
            match &r {
                Ok(ids) => {
                    assert_eq!(
                        found,
                        ids.iter().map(|i| Some(*i)).collect::<Vec<_>>(),
                        "{what}"
                    )
                }
                Err(Error::OutcomeUnknown { .. }) => assert!(
                    found.iter().all(Option::is_some) || found.iter().all(Option::is_none),
                    "{what}"
                ),
                Err(_) => assert!(found.iter().all(Option::is_none), "{what}"),
            }
            // New tenants never see another tenant's rows.
            let fresh = db
                .create_accounts(
                    (0..4).map(|i| NewAccount::new(format!("fresh{i}"), "eu").allow("us")),
                )
                .unwrap();
            for id in &fresh {
                assert!(
                    !found.contains(&Some(*id)),
                    "{what}: id {id:?} handed out twice"
                );
                let rows = common::sim::record_count(&db, *id);
                assert_eq!(
                    rows, 0,
                    "{what}: new account {id:?} sees rows (ghosts {ghosts:?})"
                );
            }
            for row in db.scan_all(&T).unwrap() {
                let row = row.unwrap();
                assert!(
                    db.account(row.account()).is_ok(),
                    "{what}: a row of account {:?}, which does not exist",
                    row.account()
                );
            }
            assert_eq!(
                db.read(base)
                    .unwrap()
                    .get(&T, b"base")
                    .unwrap()
                    .map(|r| r.payload().to_vec()),
                Some(b"x".to_vec())
            );
            drop(db);
            if !tripped {
                assert!(r.is_ok(), "{r:?}");
                assert!(n > 0);
                return;
            }
        }
        n += 1;
        assert!(n < 500, "create_accounts never completed");
    }
}

/// A refused `create_accounts` changes nothing, and leaves the routing cache and the name
/// index as they were, whatever the reason and wherever in the batch: a name twice, a name
/// taken, an unknown or disabled home, an unknown allowed region, a bad name; interleaved
/// with single creates. Afterwards every earlier account still routes with its own policy,
/// and an id is never handed out twice.
#[test]
fn refused_bulk_creates_change_nothing_and_ids_stay_unique() {
    let sim = SimStorage::new();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .region("ap")
        .routing_cache_size(0)
        .open(DIR)
        .unwrap();
    let mut known: Vec<(AccountId, String, String)> = Vec::new();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    known.push((a, "a".into(), "us".into()));
    db.disable_region("ap").unwrap();
    let long = "n".repeat(129);
    let bad: Vec<(&str, Vec<NewAccount>)> = vec![
        (
            "twice",
            vec![
                NewAccount::new("p", "us"),
                NewAccount::new("q", "eu"),
                NewAccount::new("p", "eu"),
            ],
        ),
        (
            "taken",
            vec![NewAccount::new("p", "us"), NewAccount::new("a", "eu")],
        ),
        (
            "unknown home",
            vec![NewAccount::new("p", "us"), NewAccount::new("q", "mars")],
        ),
        (
            "disabled home",
            vec![NewAccount::new("p", "us"), NewAccount::new("q", "ap")],
        ),
        (
            "unknown allowed",
            vec![
                NewAccount::new("p", "us"),
                NewAccount::new("q", "eu").allow("mars"),
            ],
        ),
        (
            "empty name",
            vec![NewAccount::new("p", "us"), NewAccount::new("", "eu")],
        ),
        (
            "long name",
            vec![
                NewAccount::new("p", "us"),
                NewAccount::new(long.as_str(), "eu"),
            ],
        ),
    ];
    for (round, (why, batch)) in bad.into_iter().enumerate() {
        let r = db.create_accounts(batch);
        assert!(r.is_err(), "{why}: {r:?}");
        for n in ["p", "q", ""] {
            assert_eq!(db.account_id(n).unwrap(), None, "{why}: {n} exists");
        }
        // A single create in between gets the next id, never one of a refused batch's.
        let name = format!("s{round}");
        let id = db
            .create_account(NewAccount::new(name.as_str(), "eu").allow("ap"))
            .unwrap();
        assert!(
            known.iter().all(|(k, _, _)| *k != id),
            "{why}: id {id:?} reused"
        );
        known.push((id, name, "eu".into()));
    }
    // An allowed region that is disabled is fine (documented).
    let ok = db
        .create_accounts([
            NewAccount::new("p", "us").allow("ap"),
            NewAccount::new("q", "eu"),
        ])
        .unwrap();
    known.push((ok[0], "p".into(), "us".into()));
    known.push((ok[1], "q".into(), "eu".into()));
    let huge = db
        .create_accounts((0..3_000).map(|i| NewAccount::new(format!("h{i}"), ["us", "eu"][i % 2])))
        .unwrap();
    for (i, id) in huge.iter().enumerate() {
        known.push((*id, format!("h{i}"), ["us", "eu"][i % 2].into()));
    }
    let mut ids: Vec<u64> = known.iter().map(|(i, _, _)| i.get()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), known.len(), "an id handed out twice");
    for (id, name, home) in known.iter().step_by(7) {
        let acct = db.account(*id).unwrap();
        assert_eq!(acct.name(), name);
        assert_eq!(acct.home(), db.region_id(home).unwrap());
        assert_eq!(db.account_id(name).unwrap(), Some(*id));
    }
    db.close().unwrap();
    let db = quiet_builder(&sim)
        .region("us")
        .region("eu")
        .disable_region("ap")
        .open(DIR)
        .unwrap();
    for (id, name, _) in known.iter().step_by(11) {
        assert_eq!(db.account(*id).unwrap().name(), name);
    }
}

// ---------------------------------------------------------------------------------------
// Db::verify while writes run.

/// Containment must not fence a healthy partition: `Db::verify` run again and again while
/// writers commit plain and unique writes in both regions (global commits unsynced, region
/// commits synced, checkpoints) reports every partition intact, fences nothing, and every
/// write still succeeds; afterwards the store audits clean and holds every write.
#[test]
fn verify_racing_writers_never_reports_a_healthy_partition() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let (e, u) = common::sim::e_and_u(&db);
    let stop = AtomicBool::new(false);
    let per_writer = 120u32;
    std::thread::scope(|s| {
        let writers: Vec<_> = [(e, "eu"), (u, "us")]
            .into_iter()
            .map(|(who, region)| {
                let db = &db;
                s.spawn(move || {
                    for i in 0..per_writer {
                        let key = format!("k{i}");
                        let r = if i % 3 == 0 {
                            claim(db, who, region, key.as_bytes(), &format!("{region}{i}@x"))
                        } else {
                            put(db, who, region, key.as_bytes())
                        };
                        r.unwrap_or_else(|e| panic!("{region} write {i}: {e}"));
                        if i % 40 == 39 {
                            db.checkpoint().unwrap();
                        }
                    }
                })
            })
            .collect();
        let verifier = s.spawn(|| {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let report = db.verify().unwrap();
                assert!(report.is_clean(), "run {runs}: {report}");
                runs += 1;
            }
            runs
        });
        for w in writers {
            if let Err(p) = w.join() {
                stop.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(p);
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(verifier.join().unwrap() > 0);
    });
    assert!(db.audit().unwrap().is_clean());
    for (who, region) in [(e, "eu"), (u, "us")] {
        assert_eq!(
            common::sim::record_count(&db, who),
            per_writer as u64,
            "{region}"
        );
        assert!(db.is_taken("email", format!("{region}0@x")).unwrap());
    }
    let _ = sim_global(DIR);
}

// ---------------------------------------------------------------------------------------
// Damaged pages met after a cheap open (verify_on_open(false), the default).

/// redb's page size.
const PAGE: usize = 4096;

/// A table that does not share a page with `T`'s records.
const OTHER: regionkv::Table<regionkv::Raw> = regionkv::Table::new("other");

/// Inserts record `key` of `OTHER` in `region`.
fn put_other(db: &Db, a: AccountId, region: &str, key: &[u8]) -> regionkv::Result<()> {
    let mut w = db.write_in(a, region)?;
    w.insert(&OTHER, key, b"o")?;
    w.commit()
}

/// A cleanly closed us+eu store on `sim` whose account `e` (home eu) holds records
/// `LEAF1`..`LEAF3` of `T` in eu and `u` (home us) one record; then eu's file damaged: the
/// leaf page(s) holding those keys claim 65,535 entries (redb reads entry offsets past
/// the page, which it does not check on ordinary reads). Returns (e, u).
fn store_with_a_damaged_leaf(sim: &SimStorage) -> (AccountId, AccountId) {
    let db = open(sim);
    let (e, u) = common::sim::e_and_u(&db);
    for k in [&b"LEAF1-7f3a"[..], b"LEAF2-7f3a", b"LEAF3-7f3a"] {
        put(&db, e, "eu", k).unwrap();
    }
    put(&db, u, "us", b"us-row").unwrap();
    db.close().unwrap();
    let eu = sim_region(DIR, "eu");
    let mut bytes = sim.live_bytes(&eu).unwrap();
    let mut pages: Vec<usize> = common::files::find_all(&bytes, b"LEAF2-7f3a")
        .map(|at| at / PAGE * PAGE)
        .filter(|&p| bytes[p] == 1) // a leaf page
        .collect();
    pages.dedup();
    assert!(!pages.is_empty(), "no leaf page holds the keys");
    for p in pages {
        bytes[p + 2] = 0xFF;
        bytes[p + 3] = 0xFF;
    }
    sim.set_bytes(&eu, bytes);
    (e, u)
}

/// Containment (docs/design.md 3a): "Every redb call that can meet an unverified page runs
/// inside `Partition::contain`"; a damaged page met by a read gives `Error::Corrupt` naming
/// the partition, never a panic through the public API. `Read::get` of the damaged leaf
/// obeys; `View::get` of the same record must too (it reads through the view's snapshot
/// without `contain`, src/view.rs `View::get`).
#[test]
fn view_get_of_a_damaged_page_is_corrupt() {
    let sim = SimStorage::new();
    let (e, _u) = store_with_a_damaged_leaf(&sim);
    let db = open(&sim);
    let view = db.view().unwrap();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        view.get(e, &T, b"LEAF2-7f3a").map(|r| r.is_some())
    }));
    match got {
        Ok(Err(Error::Corrupt { partition, .. })) => assert_eq!(partition, "eu"),
        Ok(other) => panic!("View::get of a damaged page: {other:?}"),
        Err(p) => panic!(
            "View::get of a damaged page panicked through the API: {}",
            panic_message(&*p)
        ),
    }
}

/// The same page met by `Read::get` (contained): `Corrupt` naming eu, eu fenced (a write
/// there is refused), us untouched. This is the behaviour the two tests around it hold
/// the other read paths to.
#[test]
fn read_get_of_a_damaged_page_is_corrupt_and_fences_only_that_region() {
    let sim = SimStorage::new();
    let (e, u) = store_with_a_damaged_leaf(&sim);
    let db = open(&sim);
    let got = db
        .read(e)
        .unwrap()
        .get(&T, b"LEAF2-7f3a")
        .map(|r| r.is_some());
    assert!(
        matches!(&got, Err(Error::Corrupt { partition, .. }) if partition == "eu"),
        "{got:?}"
    );
    let w = put_other(&db, e, "eu", b"after");
    assert!(matches!(w, Err(Error::Corrupt { .. })), "{w:?}");
    put_other(&db, u, "us", b"after").unwrap();
    assert!(db.read(u).unwrap().get(&T, b"us-row").unwrap().is_some());
}

/// Containment of sweeps: a sweep that meets the damaged page returns `Corrupt` naming eu
/// (it does), and — as every contained panic of redb does (`Partition::contain`: "the
/// partition is then damaged: it refuses reads and writes") — eu is fenced afterwards: a
/// write to eu must be `Corrupt`. Observed: the sweep catches redb's panic in its worker
/// (src/sweep.rs `worker`) without marking the partition damaged, and eu keeps taking
/// writes into the database redb just panicked in.
#[test]
fn a_sweep_that_meets_a_damaged_page_fences_the_region() {
    let sim = SimStorage::new();
    let (e, u) = store_with_a_damaged_leaf(&sim);
    let db = open(&sim);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.scan_all_parallel(&T, |_, _, _, _| Ok(()))
    }));
    match got {
        Ok(Err(Error::Corrupt { partition, .. })) => assert_eq!(partition, "eu"),
        Ok(other) => panic!("a sweep over a damaged page: {other:?}"),
        Err(p) => panic!("a sweep panicked through the API: {}", panic_message(&*p)),
    }
    put_other(&db, u, "us", b"after").unwrap();
    let w = put_other(&db, e, "eu", b"after");
    assert!(
        matches!(w, Err(Error::Corrupt { .. })),
        "eu took a write after redb panicked in it during a sweep: {w:?}"
    );
}

/// Containment of `Write::get` (the read of a read-modify-write, also behind `Db::update`):
/// the same damaged leaf met by it must be `Corrupt` naming eu, never a panic through the
/// API (src/write.rs `Write::get` reads its snapshot and table outside `contain`;
/// tests/damaged_pages.rs `WRITE_RS_CONTAINED` still tolerates it).
#[test]
fn write_get_of_a_damaged_page_is_corrupt() {
    let sim = SimStorage::new();
    let (e, _u) = store_with_a_damaged_leaf(&sim);
    let db = open(&sim);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = db.write(e)?;
        w.get(&T, b"LEAF2-7f3a").map(|r| r.is_some())
    }));
    match got {
        Ok(Err(Error::Corrupt { partition, .. })) => assert_eq!(partition, "eu"),
        Ok(other) => panic!("Write::get of a damaged page: {other:?}"),
        Err(p) => panic!(
            "Write::get of a damaged page panicked through the API: {}",
            panic_message(&*p)
        ),
    }
}

/// A table whose name occurs nowhere else in a region file but in its `_schemas` row and
/// in redb's table tree.
const SWEPT: regionkv::Table<regionkv::Raw> = regionkv::Table::new("swept-7f3a-table");

/// Containment of a sweep's setup: with eu's `_schemas` leaf damaged (65,535 entries
/// claimed) after a clean close, `Db::scan_all` of the table reports it as an error item
/// naming eu (its setup runs inside `contain`); `Db::sweep` must return `Corrupt` naming
/// eu too, never panic through the API (src/sweep.rs `prepare` opens each region's
/// snapshot and checks `_schemas` outside `contain`).
#[test]
fn a_sweep_setup_over_a_damaged_page_is_corrupt() {
    let damaged = || {
        let sim = SimStorage::new();
        let db = open(&sim);
        let (e, _u) = common::sim::e_and_u(&db);
        let mut w = db.write(e).unwrap();
        w.insert(&SWEPT, b"row", b"x").unwrap();
        w.commit().unwrap();
        db.close().unwrap();
        let eu = sim_region(DIR, "eu");
        let mut bytes = sim.live_bytes(&eu).unwrap();
        let name = SWEPT.name().as_bytes();
        let mut pages: Vec<usize> = common::files::find_all(&bytes, name)
            .filter(|&at| at < 2 || &bytes[at - 2..at] != b"t/") // not redb's table tree
            .map(|at| at / PAGE * PAGE)
            .filter(|&p| bytes[p] == 1)
            .collect();
        pages.dedup();
        assert!(!pages.is_empty(), "no _schemas leaf found");
        for p in pages {
            bytes[p + 2] = 0xFF;
            bytes[p + 3] = 0xFF;
        }
        sim.set_bytes(&eu, bytes);
        sim
    };
    // The reference: scan_all's setup is contained.
    let sim = damaged();
    let db = open(&sim);
    let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.scan_all(&SWEPT).map(|rows| {
            rows.filter_map(|r| r.err())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        })
    }));
    match first {
        Ok(Ok(errors)) => assert!(
            errors.iter().any(|e| e.contains("eu")),
            "scan_all over a damaged _schemas page: {errors:?}"
        ),
        Ok(Err(e)) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
        Err(p) => panic!("scan_all panicked: {}", panic_message(&*p)),
    }
    drop(db);
    // The sweep, on a fresh copy of the damaged store.
    let sim = damaged();
    let db = open(&sim);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        db.sweep(&SWEPT).run(|_, _, _, _| Ok::<(), Error>(()))
    }));
    match got {
        Ok(Err(Error::Corrupt { partition, .. })) => assert_eq!(partition, "eu"),
        Ok(other) => panic!("a sweep over a damaged _schemas page: {other:?}"),
        Err(p) => panic!(
            "a sweep's setup panicked through the API: {}",
            panic_message(&*p)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Batches, commit_each and unknown outcomes, through the cache.

/// Cache coherence after writes refused half-way (I3: a refused write leaves no trace):
/// values warmed in the cache as free, then a region batch whose second part collides
/// (the whole batch refused) and a `commit_each` whose middle write collides (the others
/// commit). Afterwards every cached answer is the truth: the batch's values free (another
/// account can claim them), `commit_each`'s committed values owned by their writers.
#[test]
fn writes_refused_half_way_leave_the_cache_true() {
    let sim = SimStorage::new();
    let db = open_cache(&sim, 1 << 20, 1 << 20);
    let ids = db
        .create_accounts(["a", "b", "c"].map(|n| NewAccount::new(n, "eu")))
        .unwrap();
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    claim(&db, c, "eu", b"held", "held@x").unwrap();
    for v in ["b1@x", "b2@x", "e1@x", "e3@x"] {
        assert!(!db.is_taken("email", v).unwrap());
        assert!(db.find_unique(&T, "email", v).unwrap().is_none());
    }
    let mut batch = db.batch_in("eu").unwrap();
    batch
        .write(a)
        .unwrap()
        .insert_unique(&T, b"k", b"x", &[Unique::new("email", "b1@x")])
        .unwrap();
    batch
        .write(b)
        .unwrap()
        .insert_unique(
            &T,
            b"k",
            b"x",
            &[Unique::new("email", "b2@x"), Unique::new("email", "held@x")],
        )
        .unwrap();
    assert!(matches!(batch.commit(), Err(Error::UniqueViolation { .. })));
    for v in ["b1@x", "b2@x"] {
        assert!(!db.is_taken("email", v).unwrap(), "{v}");
        assert!(db.find_unique(&T, "email", v).unwrap().is_none(), "{v}");
    }
    let w = |who: AccountId, v: &[&str]| {
        let mut w = db.write(who).unwrap();
        let u: Vec<Unique> = v.iter().map(|v| Unique::new("email", *v)).collect();
        w.insert_unique(&T, b"e", b"x", &u).unwrap();
        w
    };
    let out = db.commit_each([w(a, &["e1@x"]), w(b, &["e3@x", "held@x"]), w(b, &["e3@x"])]);
    assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
    assert!(
        matches!(out[1], Err(Error::UniqueViolation { .. })),
        "{out:?}"
    );
    let owner = |v: &str| db.find_unique(&T, "email", v).unwrap().map(|h| h.account());
    assert_eq!(owner("e1@x"), Some(a));
    assert_eq!(owner("e3@x"), Some(b));
    assert_eq!(owner("held@x"), Some(c));
    // The batch's values really are free: c claims them.
    claim(&db, c, "eu", b"c1", "b1@x").unwrap();
    claim(&db, c, "eu", b"c2", "b2@x").unwrap();
    assert_eq!(owner("b1@x"), Some(c));
    assert!(db.audit().unwrap().is_clean());
}

/// An unknown outcome (I3: "unknown ones settle one way"), read through the cache: a
/// claim whose region commit fails (eu's sync) is `OutcomeUnknown`. In this process, and
/// after a power loss or a plain restart, `is_taken` and `find_unique` must agree with each
/// other (an owner found means taken; free means no owner), and after the reopen the value
/// is either the writer's (its record there) or free (no record), never half.
#[test]
fn an_unknown_outcome_reads_one_way_through_the_cache() {
    for power_loss in [true, false] {
        let sim = SimStorage::new();
        let db = open_cache(&sim, 1 << 20, 1 << 20);
        let (e, u) = common::sim::e_and_u(&db);
        claim(&db, e, "eu", b"warm", "warm@x").unwrap();
        assert!(!db.is_taken("email", "x@x").unwrap()); // cached free
        sim.fail_file_after(sim_region(DIR, "eu"), 0, FaultOn::Syncs);
        let r = claim(&db, e, "eu", b"k", "x@x");
        assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
        let taken = db.is_taken("email", "x@x");
        let found = db
            .find_unique(&T, "email", "x@x")
            .map(|h| h.map(|h| h.account()));
        if let (Ok(false), Ok(Some(who))) = (&taken, &found) {
            panic!("free, yet owned by {who:?}");
        }
        // Nobody else can take it meanwhile.
        let other = claim(&db, u, "us", b"k", "x@x");
        assert!(
            other.is_err(),
            "a value of unknown outcome claimed by another: {other:?}"
        );
        if power_loss {
            sim.crash();
        } else {
            sim.clear_fault();
        }
        drop(db);
        let db = open_cache(&sim, 1 << 20, 1 << 20);
        let taken = db.is_taken("email", "x@x").unwrap();
        let found = db
            .find_unique(&T, "email", "x@x")
            .unwrap()
            .map(|h| h.account());
        let record = db.read(e).unwrap().get(&T, b"k").unwrap().is_some();
        assert_eq!(
            (taken, found, record),
            if record {
                (true, Some(e), true)
            } else {
                (false, None, false)
            },
            "power loss {power_loss}"
        );
        assert!(db.audit().unwrap().is_clean());
    }
}

/// Quotas across the parts of a group and a disabled region (docs/design.md 5, "Quotas"):
/// account `a` (max 4, us + eu) holds 1 record in us and 2 in eu; eu is disabled (its 2
/// stay counted). A `commit_each` of add, remove, add, add in us gives what committing
/// them one by one gives (ok, ok, ok, quota); a batch part that removes 1 and adds 2 is
/// refused whole; one that removes 1 and adds 1 passes. The limit holds after a reopen
/// with eu still disabled and after eu returns.
#[test]
fn quotas_across_group_parts_and_a_disabled_region() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let a = db
        .create_account(NewAccount::new("a", "us").allow("eu").max_records(4))
        .unwrap();
    put(&db, a, "us", b"u0").unwrap();
    put(&db, a, "eu", b"e0").unwrap();
    put(&db, a, "eu", b"e1").unwrap();
    db.disable_region("eu").unwrap();
    let add = |k: &[u8]| {
        let mut w = db.write_in(a, "us").unwrap();
        w.insert(&T, k, b"x").unwrap();
        w
    };
    let del = |k: &[u8]| {
        let mut w = db.write_in(a, "us").unwrap();
        w.remove(&T, k).unwrap();
        w
    };
    let out = db.commit_each([add(b"k1"), del(b"u0"), add(b"k2"), add(b"k3")]);
    assert!(out[..3].iter().all(Result::is_ok), "{out:?}");
    assert!(
        matches!(out[3], Err(Error::QuotaExceeded { .. })),
        "{out:?}"
    );
    let us_keys = |db: &Db| -> Vec<Vec<u8>> {
        db.read(a)
            .unwrap()
            .scan(&T)
            .unwrap()
            .filter_map(|r| r.ok())
            .map(|r| r.key().to_vec())
            .collect()
    };
    assert_eq!(us_keys(&db), vec![b"k1".to_vec(), b"k2".to_vec()]);
    let mut batch = db.batch_in("us").unwrap();
    let p = batch.write(a).unwrap();
    p.remove(&T, b"k1").unwrap();
    p.insert(&T, b"k4", b"x").unwrap();
    p.insert(&T, b"k5", b"x").unwrap();
    assert!(matches!(batch.commit(), Err(Error::QuotaExceeded { .. })));
    assert_eq!(us_keys(&db), vec![b"k1".to_vec(), b"k2".to_vec()]);
    let mut batch = db.batch_in("us").unwrap();
    let p = batch.write(a).unwrap();
    p.remove(&T, b"k1").unwrap();
    p.insert(&T, b"k4", b"x").unwrap();
    batch.commit().unwrap();
    assert!(matches!(
        put(&db, a, "us", b"k6"),
        Err(Error::QuotaExceeded { .. })
    ));
    db.close().unwrap();
    let db = common::sim::quiet_us_eu_off(&sim, DIR).unwrap();
    assert!(matches!(
        put(&db, a, "us", b"k6"),
        Err(Error::QuotaExceeded { .. })
    ));
    db.close().unwrap();
    let db = open(&sim);
    assert_eq!(common::sim::record_count(&db, a), 4);
    assert!(matches!(
        put(&db, a, "eu", b"e2"),
        Err(Error::QuotaExceeded { .. })
    ));
    common::sim::remove(&db, a, "eu", b"e0").unwrap();
    put(&db, a, "eu", b"e2").unwrap();
    assert!(matches!(
        put(&db, a, "us", b"k7"),
        Err(Error::QuotaExceeded { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Sweeps.

/// I5 in sweeps: many accounts in two regions, each record's payload its account id;
/// sweeps with several threads run while writers keep adding records and eu is disabled
/// half-way. Every row a sweep visits is handed to the callback under the account that
/// wrote it (payload = account), once, and a sweep started after the disable skips eu.
#[test]
fn sweeps_racing_writers_and_a_disable_hand_every_row_to_its_own_account() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let ids = db
        .create_accounts((0..8).map(|i| NewAccount::new(format!("s{i}"), ["us", "eu"][i % 2])))
        .unwrap();
    for (i, id) in ids.iter().enumerate() {
        let mut w = db.write(*id).unwrap();
        for k in 0..40u32 {
            w.insert(&T, k.to_be_bytes(), &id.get().to_le_bytes())
                .unwrap();
        }
        w.commit().unwrap();
        let _ = i;
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 1_000u32;
            while !stop.load(Ordering::Relaxed) {
                for id in &ids {
                    let Ok(mut w) = db.write(*id) else { continue };
                    w.insert(&T, n.to_be_bytes(), &id.get().to_le_bytes())
                        .unwrap();
                    let _ = w.commit();
                }
                n += 1;
            }
        });
        for round in 0..12 {
            if round == 6 {
                db.disable_region("eu").unwrap();
            }
            let seen = parking_lot::Mutex::new(std::collections::HashSet::new());
            let report = db
                .sweep(&T)
                .threads(4)
                .run(|_, account, key, rec| {
                    let owner = u64::from_le_bytes(rec[..8].try_into().unwrap());
                    assert_eq!(owner, account.get(), "a row under another account");
                    assert!(
                        seen.lock().insert((account, key.to_vec())),
                        "a row visited twice"
                    );
                    Ok::<(), Error>(())
                })
                .unwrap();
            assert_eq!(report.rows as usize, seen.lock().len());
            if round > 6 {
                assert_eq!(report.skipped, vec!["eu".to_string()], "round {round}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
}

/// The fence of a damaged global partition (docs/design.md 3a: a partition found damaged
/// "refuses reads and writes (`Error::Corrupt`) until the store is reopened"; `Db::verify`:
/// "Damaged partitions are reported and fenced"). After `Db::verify` reports the global
/// file damaged, a read of the global index must be `Corrupt` whether or not the cache
/// holds the value: here a fresh read of the global (`account_id`) is refused, but
/// `is_taken` of a value the unique-index cache holds still answers `Ok(true)` from
/// memory (src/db.rs `Inner::unique_entry` serves a cache hit before any check of the
/// partition; the routing cache does the same for `Db::account`).
#[test]
fn cached_lookups_refuse_a_fenced_global_partition() {
    let sim = SimStorage::new();
    let db = open(&sim);
    let name: String = Rng(0x006E_0BA1)
        .bytes(120)
        .iter()
        .map(|b| (b'a' + b % 26) as char)
        .collect();
    let e = db
        .create_account(NewAccount::new(name.as_str(), "eu"))
        .unwrap();
    claim(&db, e, "eu", b"k", "cached@x").unwrap();
    assert!(db.is_taken("email", "cached@x").unwrap()); // cached
    assert!(db.is_taken("email", "cached@x").unwrap());
    assert!(db.stats().unique_cache_hits > 0);
    db.checkpoint().unwrap();
    let global = sim_global(DIR);
    let mut bytes = sim.live_bytes(&global).unwrap();
    assert!(damage_every_copy(&mut bytes, &name.as_bytes()[..100], 50) >= 1);
    sim.set_bytes(&global, bytes);
    let report = db.verify().unwrap();
    assert!(
        report.damaged.iter().any(|d| d.partition == "global"),
        "{report}"
    );
    assert!(matches!(
        db.account_id("anyone"),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        db.is_taken("email", "other@x"),
        Err(Error::Corrupt { .. })
    ));
    let got = db.is_taken("email", "cached@x");
    assert!(
        matches!(got, Err(Error::Corrupt { .. })),
        "is_taken answered for the fenced global partition: {got:?}"
    );
}

/// Bulk creates interleaved with single creates on other threads, with overlapping names
/// and a routing cache of a few slots: each bulk call is all or none (its names all map
/// to the ids it returned, or it was refused `AccountNameTaken` and none of its own new
/// names exists from it), no name maps to two ids, no id is handed out twice, and every
/// account routes with its own home.
#[test]
fn bulk_and_single_creates_racing_stay_all_or_none() {
    let sim = SimStorage::new();
    let db = open_cache(&sim, 1 << 20, 16 * 200);
    let results = parking_lot::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..3usize {
            let (db, results) = (&db, &results);
            s.spawn(move || {
                for round in 0..30usize {
                    // Names shared between threads: "n{round}-{j}" collide across threads.
                    let batch: Vec<(String, &str)> = (0..4)
                        .map(|j| {
                            let name = if j == 0 {
                                format!("own{t}-{round}")
                            } else {
                                format!("n{round}-{j}")
                            };
                            (name, ["us", "eu"][(t + j) % 2])
                        })
                        .collect();
                    let r = if t == 2 {
                        // Singles: one name at a time.
                        batch
                            .iter()
                            .map(|(n, h)| db.create_account(NewAccount::new(n.as_str(), *h)))
                            .collect::<Vec<_>>()
                    } else {
                        match db.create_accounts(
                            batch.iter().map(|(n, h)| NewAccount::new(n.as_str(), *h)),
                        ) {
                            Ok(ids) => ids.into_iter().map(Ok).collect(),
                            Err(e) => vec![Err(e)],
                        }
                    };
                    results.lock().push((t, batch, r));
                }
            });
        }
    });
    let mut by_name: std::collections::HashMap<String, (AccountId, String)> = Default::default();
    for (t, batch, r) in results.into_inner() {
        if r.len() == 1 && batch.len() > 1 {
            // A refused bulk call: its own name (unique to it) must not exist.
            let e = r[0].as_ref().unwrap_err();
            assert!(matches!(e, Error::AccountNameTaken(_)), "thread {t}: {e}");
            assert_eq!(db.account_id(&batch[0].0).unwrap(), None, "{batch:?}");
            continue;
        }
        for ((name, home), r) in batch.into_iter().zip(r) {
            match r {
                Ok(id) => {
                    let before = by_name.insert(name.clone(), (id, home.to_string()));
                    assert!(
                        before.is_none(),
                        "{name} created twice: {before:?} and {id:?}"
                    );
                }
                Err(e) => assert!(matches!(e, Error::AccountNameTaken(_)), "{name}: {e}"),
            }
        }
    }
    let mut ids: Vec<u64> = by_name.values().map(|(i, _)| i.get()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an id handed out twice");
    for (name, (id, home)) in &by_name {
        assert_eq!(db.account_id(name).unwrap(), Some(*id), "{name}");
        let a = db.account(*id).unwrap();
        assert_eq!(
            (a.name(), a.home()),
            (name.as_str(), db.region_id(home).unwrap())
        );
    }
    assert!(db.stats().routing_cache_bytes <= 16 * 200);
}

/// "Fence only that partition", carried through the operator's remedy: after a read met
/// eu's damaged leaf (eu fenced), eu can be disabled at run time (its counts unknown: a
/// limited account allowed there cannot grow), unique writes and checkpoints in us go on
/// (the checkpoint cannot delete eu's markers and must not fail for it), the store closes
/// cleanly and reopens with eu disabled, us's data and owners intact.
#[test]
fn a_fenced_region_can_be_disabled_and_the_rest_goes_on() {
    let sim = SimStorage::new();
    let (e, u) = store_with_a_damaged_leaf(&sim);
    let db = open(&sim);
    // A unique write in eu that does not meet the leaf: its marker waits for a checkpoint.
    let mut w = db.write(e).unwrap();
    w.insert_unique(&OTHER, b"owner", b"o", &[Unique::new("email", "eu@x")])
        .unwrap();
    w.commit().unwrap();
    assert!(matches!(
        db.read(e).unwrap().get(&T, b"LEAF2-7f3a"),
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        put_other(&db, e, "eu", b"fenced"),
        Err(Error::Corrupt { .. })
    ));
    let limited = db
        .create_account(NewAccount::new("lim", "us").allow("eu").max_records(10))
        .unwrap();
    db.disable_region("eu").unwrap();
    assert!(matches!(
        put(&db, limited, "us", b"x"),
        Err(Error::RegionDisabled(_))
    ));
    for i in 0..5u8 {
        claim(&db, u, "us", &[b'c', i], &format!("us{i}@x")).unwrap();
        db.checkpoint().unwrap();
    }
    db.close().unwrap();
    let db = common::sim::quiet_us_eu_off(&sim, DIR).unwrap();
    for i in 0..5u8 {
        let hit = db.find_unique(&T, "email", format!("us{i}@x")).unwrap();
        assert_eq!(hit.map(|h| h.account()), Some(u));
    }
    assert!(db.read(u).unwrap().get(&T, b"us-row").unwrap().is_some());
    assert!(matches!(db.write(e), Err(Error::RegionDisabled(_))));
    // eu's value stays owned by its record (in a disabled region): nobody else takes it.
    assert!(db.is_taken("email", "eu@x").unwrap());
    assert!(claim(&db, u, "us", b"steal", "eu@x").is_err());
}
