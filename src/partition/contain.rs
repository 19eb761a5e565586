//! Containment of redb panics: a damaged page that redb meets without having verified it
//! (the store opened without verifying every page: see `Builder::verify_on_open`) can make
//! it panic. Every redb call that can meet one runs inside [`Partition::contain`] (or
//! [`contain_any`] when a step touches several partitions): the panic becomes
//! [`Error::Corrupt`] naming the partition, and that partition is marked damaged, so it
//! refuses reads and writes from then on. Other partitions, and the process, go on.
//!
//! # Why unwind safety holds (the `AssertUnwindSafe`)
//!
//! What a panic inside redb can leave half-updated, and why nobody sees it:
//!
//! - **redb's own state of that database** (a mutex poisoned, a write transaction dropped
//!   while unwinding, its pages leaked, a page cache holding the damaged page): the
//!   partition is marked damaged before the error is returned, and every entry point
//!   checks the mark first ([`Partition::check_damaged`], inside `contain`,
//!   `begin_read`, `begin_write`), so nothing calls into that database again except its
//!   `Drop`, which runs inside `catch_unwind` (or is skipped while unwinding). redb itself
//!   is written for this: a table poisons its transaction when a panic unwinds through it,
//!   and a write transaction dropped while unwinding marks the database as needing a
//!   repair, so its close records no clean shutdown and the next open verifies the file.
//! - **regionkv's state touched inside the closure**: read snapshots and their table
//!   lists (a `RefCell`, whose borrow the unwinding releases; a snapshot of a damaged
//!   partition is refused by the mark at its next use), the routing cache (written only
//!   after a row decoded), parking_lot locks (released by the unwinding, never
//!   poisoned), the checkpoint's bookkeeping (a panic after it took its lists loses them:
//!   their markers and dirty rows then stay until the next open's recovery, which is the
//!   conservative direction). Writes (`write.rs`) keep what they changed in their own
//!   buffers until the region commit; their containment is documented there.
//! - **the files**: a panic inside a write transaction aborts it (it is dropped, never
//!   committed); a panic inside redb's `commit` has an unknown outcome, which is why the
//!   partition is poisoned as after any failed commit: recovery at the next open settles
//!   it as it settles a crash.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::Partition;
use crate::error::{Error, Result};

thread_local! {
    /// The partition whose transaction this thread began or committed last (its address):
    /// which of several partitions a panic in [`contain_any`] is blamed on.
    static LAST_USED: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// How many containments this thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// A panic of the caller's own code (an `Upgrade`) caught inside a containment, to be
    /// resumed when the outermost containment returns.
    static USER_PANIC: RefCell<Option<Box<dyn Any + Send>>> = const { RefCell::new(None) };
}

/// Runs the caller's own code (an `Upgrade::upgrade`) that may run inside a containment:
/// its panic is the caller's, not a damaged page's. Outside any containment it simply runs
/// (a panic unwinds as it would). Inside one, a panic is caught and kept, `None` is
/// returned (the caller turns it into an error that ends the contained step), and the
/// outermost containment resumes the panic once its step returned: the transactions of
/// the step are dropped on the normal path and no partition is marked damaged.
pub(crate) fn user_code<T>(f: impl FnOnce() -> T) -> Option<T> {
    if DEPTH.with(|d| d.get()) == 0 {
        return Some(f());
    }
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) => {
            USER_PANIC.with(|u| *u.borrow_mut() = Some(p));
            None
        }
    }
}

/// `catch_unwind` of a contained step, resuming a panic of the caller's own code (see
/// [`user_code`]) when the outermost containment returns.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> std::thread::Result<Result<T>> {
    DEPTH.with(|d| d.set(d.get() + 1));
    // Unwind safety: see the module documentation.
    let r = catch_unwind(AssertUnwindSafe(f));
    let outermost = DEPTH.with(|d| {
        d.set(d.get() - 1);
        d.get() == 0
    });
    if outermost && let Some(p) = USER_PANIC.with(|u| u.borrow_mut().take()) {
        std::panic::resume_unwind(p);
    }
    r
}

/// Notes that this thread uses `part` now (it begins or commits a transaction of it).
#[inline]
pub(super) fn touch(part: &Partition) {
    LAST_USED.with(|l| l.set(part as *const Partition as usize));
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

impl Partition {
    /// Runs `f`, whose redb calls use this partition, so that a panic inside it becomes
    /// [`Error::Corrupt`] naming this partition instead of unwinding into the caller. The
    /// partition is then damaged: it refuses reads and writes (`Error::Corrupt`) until the
    /// store is reopened; other partitions are untouched. A damaged partition refuses `f`
    /// without running it.
    ///
    /// `f` must use no other partition's redb database (a panic would be blamed on this
    /// one): use [`contain_any`] for steps that touch several. Nesting is fine: an inner
    /// `contain` turns its own panic into its error first.
    pub fn contain<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_damaged()?;
        match guarded(f) {
            Ok(r) => r,
            Err(payload) => Err(self.panicked(&panic_message(&*payload))),
        }
    }

    /// Marks the partition damaged after redb panicked using it, and returns the error.
    pub(crate) fn panicked(&self, msg: &str) -> Error {
        let why = format!("redb panicked on a damaged page: {msg}");
        self.mark_damaged(&why);
        Error::corrupt(
            &self.name,
            format!(
                "{why}; the partition refuses reads and writes until the store is reopened \
                 (Db::verify checks every page)"
            ),
        )
    }
}

/// How [`contain_any`] finds the partition a panic is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The one whose transaction the panicking thread began or committed last. Exact for
    /// steps that use one partition after the other (a checkpoint: the global file, then
    /// each region).
    LastUsed,
    /// The ones whose file fails [`Partition::verify_file`] (every candidate is checked),
    /// else the last used. For steps that interleave partitions; the caller must hold no
    /// write transaction of the candidates (the check holds one of each in turn).
    Verify,
}

/// Runs `f`, which may use any of `parts`, so that a panic inside it becomes
/// [`Error::Corrupt`] naming the partition it is blamed on (`blame`), which is marked
/// damaged; the others are untouched. Without a panic, `f`'s result as it is.
pub(crate) fn contain_any<T>(
    parts: &[&Partition],
    blame: Blame,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    LAST_USED.with(|l| l.set(0));
    let payload = match guarded(f) {
        Ok(r) => return r,
        Err(payload) => payload,
    };
    let msg = panic_message(&*payload);
    if blame == Blame::Verify {
        let mut first = None;
        for p in parts {
            if let Ok(super::FileCheck::Damaged { .. }) = p.verify_file() {
                let e = p.panicked(&msg);
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
    }
    let last = LAST_USED.with(|l| l.get());
    let culprit = parts
        .iter()
        .find(|p| **p as *const Partition as usize == last)
        .or(parts.first());
    match culprit {
        Some(p) => Err(p.panicked(&msg)),
        None => Err(Error::corrupt(
            "?",
            format!("redb panicked on a damaged page: {msg}"),
        )),
    }
}
