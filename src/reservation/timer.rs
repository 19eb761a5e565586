//! The checkpoint timer: a background thread that runs a checkpoint once the time budget is
//! spent with work to checkpoint, so the window in which confirmed claims live only in
//! unsynced global commits (and in the regions' markers) is bounded by time, not by the
//! next unique write. It holds a weak reference to the store; `Db::close` stops and joins
//! it, dropping the last handle stops it.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// What the timer drives: the store, seen only through this (the protocol does not know
/// the store's type).
pub(crate) trait Checkpointed: Send + Sync + 'static {
    /// Runs a checkpoint if the time budget is spent with work to checkpoint.
    fn checkpoint_if_overdue(&self);
}

#[derive(Default)]
pub(crate) struct Timer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Timer {
    /// Starts the thread (once). `interval` is the checkpoint time budget.
    pub fn start<T: Checkpointed>(&self, inner: Weak<T>, interval: Duration) {
        let stop = self.stop.clone();
        // Wake at least every 100 ms to notice a stop; check the budget on each wake.
        let tick = interval.clamp(Duration::from_millis(1), Duration::from_millis(100));
        let spawned = std::thread::Builder::new()
            .name("regionkv-checkpoint".into())
            .spawn(move || {
                loop {
                    {
                        let (lock, cv) = &*stop;
                        let mut stopped = lock.lock();
                        if !*stopped {
                            cv.wait_for(&mut stopped, tick);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    let Some(inner) = inner.upgrade() else { return };
                    inner.checkpoint_if_overdue();
                }
            });
        // Without the thread, checkpoints still run on the write path and at close.
        if let Ok(h) = spawned {
            *self.handle.lock() = Some(h);
        }
    }

    /// Asks the thread to stop, without waiting (from `Drop`, possibly on the thread itself).
    pub fn stop(&self) {
        let (lock, cv) = &*self.stop;
        *lock.lock() = true;
        cv.notify_all();
    }

    /// Stops the thread and waits for it to end.
    pub fn stop_and_join(&self) {
        self.stop();
        let h = self.handle.lock().take();
        if let Some(h) = h
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}
