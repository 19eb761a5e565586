//! The checkpoint timer: a background thread that runs a checkpoint once the time budget is
//! spent with work to checkpoint, so the window in which confirmed claims live only in
//! unsynced global commits (and in the regions' markers) is bounded by time, not by the
//! next unique write. It holds a weak reference to the store; `Db::close` stops and joins
//! it, dropping the last handle stops it.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::db::Inner;

#[derive(Default)]
pub(crate) struct Timer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Timer {
    /// Starts the thread (once). `interval` is the checkpoint time budget.
    pub fn start(&self, inner: Weak<Inner>, interval: Duration) {
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
                    if inner.coord.checkpoint_overdue() {
                        let _gate = inner.writers.read();
                        if inner.check_open().is_ok() && !inner.global.is_poisoned() {
                            // A failure poisons the global partition; the next write reports it.
                            let _ = inner.checkpoint();
                        }
                    }
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
