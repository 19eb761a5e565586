//! The page-cache budget bounds real memory: reading a store far bigger than its budget
//! leaves the heap (counted by this binary's allocator) within the budget, plus a small
//! allowance for the reads' own buffers. Small and stable sizes: a 2 MiB budget over a
//! ~12 MiB region file.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use regionkv::{Db, NewAccount, Raw, Table};

/// Counts the bytes live on the heap, and the highest count since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters only observe sizes. A mistake in the forwarding (a wrong layout
// or pointer) would crash or corrupt every test of this binary, which allocates heavily.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes
        // through `alloc` above or `realloc` below).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const T: Table<Raw> = Table::new("t");

#[test]
fn reading_a_store_bigger_than_its_budget_stays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder().region("us").open(dir.path()).unwrap();
    let a = db.create_account(NewAccount::new("a", "us")).unwrap();
    let value = vec![5u8; 1200];
    for chunk in 0..10u32 {
        let mut w = db.write(a).unwrap();
        for i in 0..1000u32 {
            w.insert(&T, (chunk * 1000 + i).to_be_bytes(), &value[..])
                .unwrap();
        }
        w.commit().unwrap();
    }
    db.close().unwrap();
    let file = std::fs::metadata(dir.path().join("regions/us.redb"))
        .unwrap()
        .len() as usize;

    let budget = 2 << 20;
    assert!(file > 5 * budget, "the file ({file} B) dwarfs the budget");
    let db = Db::builder()
        .region("us")
        .cache_size(budget)
        .open(dir.path())
        .unwrap();
    assert!(db.cache_budget().used() <= budget);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    // Every page of the region file, twice, and point reads of the global's accounts.
    for _ in 0..2 {
        let r = db.read(a).unwrap();
        let mut n = 0;
        for row in r.scan(&T).unwrap() {
            assert_eq!(row.unwrap().record().len(), value.len());
            n += 1;
        }
        assert_eq!(n, 10_000);
    }
    let grown = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!("heap grew by {grown} B reading a {file} B file, budget {budget} B");
    // The allowance: a scan's own buffers and redb's per-read bookkeeping.
    let allowance = 1 << 20;
    assert!(
        grown <= budget + allowance,
        "heap grew by {grown} B reading a {file} B file with a {budget} B budget"
    );
    db.close().unwrap();
}
