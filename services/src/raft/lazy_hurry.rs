//! How a read hurries the lazy writes and learns when they are written.
//!
//! A lazy write (a checkout's commit) waits in the proposer for company
//! (`raft.lazy_write_ms`). A read of its order waits on it, so it hurries
//! it, and a follower's read index must cover it: the leader answers a
//! hurried read-index request only once the hurried entry is written. Else
//! the follower learns of the commit only with a later round (measured
//! with `loadtest/read_after_checkout.py`: a follower's read right after
//! its checkout took 5.3 ms on average, a leader's 1.3 ms; 2.3–2.6 ms at a
//! follower with the wait, docs/loadtest.md).
//!
//! Each lazy batch that waits for company gets an id. A hurry wakes the
//! batch waiting now (if any; nothing is stored for a later one, which
//! would lose it its company) and names it; `written` returns once that
//! batch's entry is written (applied here, or answered as failed).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify};

pub(super) struct LazyHurry {
    wake: Notify,
    /// The lazy batch waiting for company (0: none).
    waiting: AtomicU64,
    /// The newest lazy batch written.
    written: watch::Sender<u64>,
}

impl Default for LazyHurry {
    fn default() -> Self {
        Self {
            wake: Notify::new(),
            waiting: AtomicU64::new(0),
            written: watch::Sender::new(0),
        }
    }
}

impl LazyHurry {
    /// A lazy batch starts waiting for company as `id` (ids grow from 1):
    /// the returned future completes when it is hurried. Taken before the
    /// batch is named waiting, so no hurry in between is lost.
    pub fn waiting(&self, id: u64) -> Notified<'_> {
        let hurried = self.wake.notified();
        self.waiting.store(id, Ordering::Release);
        hurried
    }

    /// The batch waiting ended its wait (it goes into an entry now).
    pub fn went(&self) {
        self.waiting.store(0, Ordering::Release);
    }

    /// The entry of lazy batch `id` is written.
    pub fn written(&self, id: u64) {
        self.written.send_if_modified(|w| {
            let newer = id > *w;
            if newer {
                *w = id;
            }
            newer
        });
    }

    /// Hurries the lazy batch waiting for company, if there is one; its id.
    pub fn hurry(&self) -> Option<u64> {
        let id = self.waiting.load(Ordering::Acquire);
        if id == 0 {
            return None;
        }
        // Wakes the futures taken before (`waiting`), stores no permit.
        self.wake.notify_waiters();
        Some(id)
    }

    /// Returns once lazy batch `id`'s entry is written.
    pub async fn until_written(&self, id: u64) {
        let mut written = self.written.subscribe();
        // The sender lives as long as `self`.
        let _ = written.wait_for(|w| *w >= id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_hurry_with_no_batch_waiting_is_not_kept_for_the_next() {
        let lazy = LazyHurry::default();
        assert_eq!(lazy.hurry(), None);
        let hurried = lazy.waiting(1);
        let woken = tokio::time::timeout(Duration::from_millis(50), hurried).await;
        assert!(
            woken.is_err(),
            "woken by a hurry that came before it waited"
        );
    }

    #[tokio::test]
    async fn a_hurry_wakes_the_waiting_batch_even_before_it_is_polled() {
        let lazy = LazyHurry::default();
        let hurried = lazy.waiting(7);
        assert_eq!(lazy.hurry(), Some(7));
        let woken = tokio::time::timeout(Duration::from_millis(50), hurried).await;
        assert!(woken.is_ok(), "the hurry was lost");
        lazy.went();
        assert_eq!(lazy.hurry(), None, "nothing waits once the batch went");
    }

    #[tokio::test]
    async fn until_written_returns_once_that_batch_or_a_later_one_is_written() {
        let lazy = std::sync::Arc::new(LazyHurry::default());
        lazy.written(2);
        // Already written: at once.
        lazy.until_written(2).await;
        let waiter = tokio::spawn({
            let lazy = lazy.clone();
            async move { lazy.until_written(4).await }
        });
        lazy.written(3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "returned before batch 4 was written");
        lazy.written(5);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("returned once a later batch was written")
            .expect("the waiter ran");
    }
}
