//! The `jobs.max_concurrent` running slots, handed out by priority: a queued write or
//! admin job starts before any queued read job, so a flood of read jobs cannot keep a
//! backup waiting. FIFO within a priority. (tokio's `Semaphore` is FIFO only.)
//!
//! Imports nothing of the crate.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Which line a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Priority {
    High = 0,
    Low = 1,
}

struct Inner {
    free: usize,
    /// Waiters by priority. Invariant: `free > 0` only when no live waiter is queued.
    waiting: [VecDeque<oneshot::Sender<()>>; 2],
}

pub(super) struct Slots {
    inner: Mutex<Inner>,
}

/// A running slot; freed on drop.
pub(super) struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// A queued acquisition. Dropped before it got its slot (the job was cancelled while
/// queued), it gives back a slot handed to it in the meantime.
struct Waiter {
    rx: oneshot::Receiver<()>,
    slots: Arc<Slots>,
    granted: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.granted {
            self.rx.close();
            if self.rx.try_recv().is_ok() {
                self.slots.release();
            }
        }
    }
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            inner: Mutex::new(Inner {
                free: n,
                waiting: [VecDeque::new(), VecDeque::new()],
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot (cancel-safe).
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Slot {
        loop {
            let rx = {
                let mut g = self.lock();
                if g.free > 0 {
                    g.free -= 1;
                    return Slot {
                        slots: self.clone(),
                    };
                }
                let (tx, rx) = oneshot::channel();
                g.waiting[priority as usize].push_back(tx);
                rx
            };
            let mut w = Waiter {
                rx,
                slots: self.clone(),
                granted: false,
            };
            if (&mut w.rx).await.is_ok() {
                w.granted = true;
                return Slot {
                    slots: self.clone(),
                };
            }
        }
    }

    /// Hands the slot to the first live waiter of the highest priority, or frees it.
    fn release(&self) {
        let mut g = self.lock();
        for queue in g.waiting.iter_mut() {
            while let Some(tx) = queue.pop_front() {
                if tx.send(()).is_ok() {
                    return;
                }
            }
        }
        g.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn high_priority_waiters_go_first_and_cancelled_ones_are_skipped() {
        let s = Slots::new(1);
        let held = s.acquire(Priority::Low).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |name: &'static str, p| {
            let (s, order) = (s.clone(), order.clone());
            tokio::spawn(async move {
                let _slot = s.acquire(p).await;
                order.lock().unwrap().push(name);
            })
        };
        let r1 = spawn("read1", Priority::Low);
        tokio::task::yield_now().await;
        let gone = spawn("cancelled", Priority::High);
        tokio::task::yield_now().await;
        let w1 = spawn("write1", Priority::High);
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        w1.await.unwrap();
        r1.await.unwrap();
        assert_eq!(*order.lock().unwrap(), vec!["write1", "read1"]);
        // Every slot came back.
        let _a = s.acquire(Priority::Low).await;
        assert_eq!(s.lock().free, 0);
    }
}
