//! Running one step of the open for every region over a few threads, with the outcome
//! (the results, or the error) that running it region by region in order would give.
//!
//! Why it is safe to parallelise the open's per-file work, and why the error is the same
//! one: workers claim the indices in increasing order from one counter, and once any
//! index failed no new index is claimed. So when `f` is the first index (in order) that
//! fails, every index below `f` was claimed before it and runs to the end: the error of
//! the lowest failing index is exactly the error a sequential loop would stop at, for
//! every failure that depends on the file alone (a foreign, stale or damaged file, one
//! missing). What only concurrency changes is which file of several meets a limit of
//! the process first (the file descriptor limit): it is still an `Error::Io` naming a
//! file that could not be opened.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// How many threads work through the regions' files at most (the calling thread being
/// one of them). The work is mostly waiting for the disk (the fsync redb does when it
/// opens a file read-write, reads of files not in the page cache), so more threads than
/// cores pay off; past a handful, the disk queue is the limit (measured in
/// docs/design.md, "What grows with the store").
pub(super) const THREADS: usize = 4;

/// Below this many items the work runs on the calling thread alone: a thread costs more
/// than a few files.
const MIN_PARALLEL: usize = 8;

/// `f(0)`, `f(1)`, ... `f(n - 1)` over up to [`THREADS`] threads. Returns the results in
/// index order up to and including the first index that failed (the results after it are
/// dropped, those before it kept): a caller that walks them in order and stops at the
/// first error sees what a sequential loop would have produced.
///
/// A panic of `f` (the callers' steps contain redb's panics themselves, so this would be a
/// bug of the step) becomes [`Error::Corrupt`] naming `name(i)`, as the open reports a
/// panic met while opening a file, never a panic through the open.
pub(super) fn in_order<T: Send>(
    n: usize,
    name: impl Fn(usize) -> String + Sync,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let slots: Vec<Mutex<Option<Result<T>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || {
        loop {
            if failed.load(Ordering::Acquire) {
                return;
            }
            let i = next.fetch_add(1, Ordering::AcqRel);
            if i >= n {
                return;
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i))).unwrap_or_else(
                |_| {
                    Err(Error::corrupt(
                        &name(i),
                        "the open panicked while opening this partition's file",
                    ))
                },
            );
            if r.is_err() {
                failed.store(true, Ordering::Release);
            }
            *slots[i].lock() = Some(r);
        }
    };
    let threads = if n < MIN_PARALLEL { 1 } else { THREADS.min(n) };
    std::thread::scope(|s| {
        // A thread that cannot be started is simply not there: the others, and this one,
        // do its share.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        work();
        for h in helpers {
            // `work` catches the panics of `f`; nothing else in it can panic.
            let _ = h.join();
        }
    });
    let mut out = Vec::with_capacity(n);
    for (i, slot) in slots.into_iter().enumerate() {
        match slot.into_inner() {
            Some(Ok(v)) => out.push(Ok(v)),
            Some(Err(e)) => {
                out.push(Err(e));
                return out;
            }
            // Unclaimed only after a failure at a lower index, which returned above.
            None => {
                out.push(Err(Error::corrupt(
                    &name(i),
                    "the open stopped before this partition's file",
                )));
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        for n in [0, 1, 7, 8, 100] {
            let got: Vec<usize> = in_order(n, |i| i.to_string(), |i| Ok(i * 3))
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, (0..n).map(|i| i * 3).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_first_failure_in_order_is_reported_whatever_finishes_first() {
        // Index 40 fails at once, index 10 fails slowly: the sequential answer is 10.
        for _ in 0..20 {
            let got = in_order(
                100,
                |i| i.to_string(),
                |i| {
                    if i == 10 {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    if i == 10 || i == 40 {
                        Err(Error::Config(format!("bad {i}")))
                    } else {
                        Ok(i)
                    }
                },
            );
            assert_eq!(got.len(), 11);
            assert!(got[..10].iter().all(|r| r.is_ok()));
            match &got[10] {
                Err(Error::Config(m)) => assert_eq!(m, "bad 10"),
                other => panic!("expected the error of index 10, got {other:?}"),
            }
        }
    }

    #[test]
    fn no_index_is_started_long_after_a_failure() {
        let ran = AtomicUsize::new(0);
        let got = in_order(
            10_000,
            |i| i.to_string(),
            |i| {
                ran.fetch_add(1, Ordering::Relaxed);
                if i == 0 {
                    Err(Error::Config("bad".into()))
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(got.len(), 1);
        // At most the indices the other workers had claimed before they saw the failure
        // (a handful each); a loop that ignored it would run all 10,000.
        assert!(
            ran.load(Ordering::Relaxed) < 1_000,
            "ran {}",
            ran.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn a_panicking_step_is_an_error_not_a_panic() {
        let got = in_order(
            50,
            |i| i.to_string(),
            |i| {
                if i == 20 {
                    panic!("a bug in the step");
                }
                Ok(i)
            },
        );
        assert_eq!(got.len(), 21);
        assert!(got[..20].iter().all(|r| r.is_ok()));
        match &got[20] {
            Err(Error::Corrupt { partition, .. }) => assert_eq!(partition, "20"),
            other => panic!("expected Corrupt naming 20, got {other:?}"),
        }
    }
}
