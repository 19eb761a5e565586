//! What an open partition costs in heap right after open: redb's per-database structures
//! (131 lock stripes of read cache and write buffer, allocator state) and regionkv's own,
//! which `Builder::cache_size` does not cover, plus the few pages the open read (those are
//! in the page cache, which it does). Measured by a counting allocator as the heap of a
//! reopened store with 1 region against one with 1 + `N`.
//!
//! `cargo run --release --example partition_overhead [N]` (default 256).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use regionkv::Db;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn heap_of_open(regions: usize) -> Result<usize, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let builder = (0..regions).fold(Db::builder(), |b, i| b.region(format!("r{i}")));
    builder.clone().open(dir.path())?.close()?;
    let before = LIVE.load(Ordering::Relaxed);
    let db = builder.open(dir.path())?;
    let after = LIVE.load(Ordering::Relaxed);
    db.close()?;
    Ok(after.saturating_sub(before))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(256);
    let one = heap_of_open(1)?;
    let many = heap_of_open(1 + n)?;
    println!(
        "heap after open: 1 region {one} B, {} regions {many} B: {} B per extra partition \
         (the pages the open itself read, now in the caches, included)",
        1 + n,
        many.saturating_sub(one) / n
    );
    Ok(())
}
