//! Whose turn it is to take stock, on the order leader.
//!
//! The saga charges and takes stock at once. A checkout whose charge is then
//! refused gives its stock back, so until its charge is answered the stock
//! it took is *in doubt*. A take refused while another checkout holds stock
//! in doubt could have succeeded had it waited: the refusal would depend on
//! timing, and the consistency scenario would sell less than the stock.
//! So a checkout sends its take only when no checkout registered before it
//! that shares one of its items is still in doubt (its charge unanswered,
//! or refused and its stock not yet given back). Charges never wait, and a
//! checkout whose charge is refused before its turn came takes nothing and
//! leaves the queue at once (`release_unheld`), so it holds nobody up.
//!
//! Registration order is a total order, so nobody waits for a checkout that
//! waits for them. The leader registers every open checkout when it takes
//! over (`load`), before any checkout of its own takes stock
//! (`wait_loaded`), so a checkout begun under an earlier leader is waited
//! for too. Only the leader drives sagas, so one leader's view is the
//! whole truth; docs/design.md argues the rest.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;

struct Turn {
    /// Registration order.
    seq: u64,
    items: Vec<String>,
    /// Its charge applied: its take, whenever it lands, is never given back.
    settled: bool,
    /// Its take may have been sent: it had its turn here, or it was open
    /// when this leader took over (an earlier leader may have sent it).
    may_hold: bool,
}

#[derive(Default)]
struct Queue {
    /// The leadership term the open checkouts were loaded for.
    loaded_for: Option<u64>,
    next_seq: u64,
    open: HashMap<String, Turn>,
}

impl Queue {
    fn add(&mut self, tx_id: &str, items: &[(String, i64)]) {
        if self.open.contains_key(tx_id) {
            return;
        }
        let turn = Turn {
            seq: self.next_seq,
            items: items.iter().map(|(id, _)| id.clone()).collect(),
            settled: false,
            may_hold: false,
        };
        self.next_seq += 1;
        self.open.insert(tx_id.to_string(), turn);
    }

    /// Whether a checkout registered before `tx_id`, sharing an item, still
    /// holds stock in doubt.
    fn must_wait(&self, tx_id: &str) -> bool {
        let Some(mine) = self.open.get(tx_id) else {
            return false;
        };
        self.open.values().any(|other| {
            other.seq < mine.seq
                && !other.settled
                && other.items.iter().any(|i| mine.items.contains(i))
        })
    }
}

#[derive(Default)]
pub struct TakeTurns {
    queue: Mutex<Queue>,
    changed: Notify,
}

impl TakeTurns {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new leader's start: every open checkout, in the order given, before
    /// anything registered under an earlier term. Once per term: a second
    /// load for the same term changes nothing (and returns false).
    pub fn load<'a>(
        &self,
        term: u64,
        open: impl IntoIterator<Item = (&'a str, &'a [(String, i64)])>,
    ) -> bool {
        let mut q = self.queue();
        if q.loaded_for == Some(term) {
            return false;
        }
        *q = Queue {
            loaded_for: Some(term),
            ..Queue::default()
        };
        for (tx_id, items) in open {
            q.add(tx_id, items);
            if let Some(t) = q.open.get_mut(tx_id) {
                t.may_hold = true;
            }
        }
        drop(q);
        self.changed.notify_waiters();
        true
    }

    /// Whether the open checkouts were loaded for leadership term `term`.
    pub fn loaded_for(&self, term: u64) -> bool {
        self.queue().loaded_for == Some(term)
    }

    /// A checkout that began here; a no-op if it is registered.
    pub fn register(&self, tx_id: &str, items: &[(String, i64)]) {
        self.queue().add(tx_id, items);
    }

    /// Its charge applied: it no longer holds anyone up.
    pub fn settle(&self, tx_id: &str) {
        if let Some(t) = self.queue().open.get_mut(tx_id) {
            t.settled = true;
        }
        self.changed.notify_waiters();
    }

    /// Its charge was refused: if its take was never sent, it holds nothing
    /// and leaves the queue (the caller must not send the take then).
    pub fn release_unheld(&self, tx_id: &str) {
        let mut q = self.queue();
        if q.open.get(tx_id).is_some_and(|t| !t.may_hold) {
            q.open.remove(tx_id);
            drop(q);
            self.changed.notify_waiters();
        }
    }

    /// Its saga ended (or stopped here): it holds nothing any more.
    pub fn finish(&self, tx_id: &str) {
        self.queue().open.remove(tx_id);
        self.changed.notify_waiters();
    }

    /// Waits until `tx_id` may take stock (registering it if it is not).
    pub async fn wait_turn(&self, tx_id: &str, items: &[(String, i64)]) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered as a waiter before looking, so no wake is missed.
            changed.as_mut().enable();
            {
                let mut q = self.queue();
                q.add(tx_id, items);
                if !q.must_wait(tx_id) {
                    if let Some(t) = q.open.get_mut(tx_id) {
                        t.may_hold = true;
                    }
                    return;
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn items(ids: &[&str]) -> Vec<(String, i64)> {
        ids.iter().map(|i| (i.to_string(), 1)).collect()
    }

    async fn turn_comes(turns: &TakeTurns, tx: &str, ids: &[&str]) -> bool {
        tokio::time::timeout(Duration::from_millis(50), turns.wait_turn(tx, &items(ids)))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_take_waits_for_an_earlier_checkout_in_doubt_on_a_shared_item() {
        let turns = TakeTurns::default();
        turns.register("a", &items(&["1", "2"]));
        turns.register("b", &items(&["2"]));
        turns.register("c", &items(&["3"]));
        assert!(turn_comes(&turns, "a", &["1", "2"]).await);
        assert!(turn_comes(&turns, "c", &["3"]).await, "no shared item");
        assert!(!turn_comes(&turns, "b", &["2"]).await, "a is in doubt");
        turns.settle("a");
        assert!(turn_comes(&turns, "b", &["2"]).await, "a was charged");
    }

    #[tokio::test]
    async fn an_earlier_checkout_in_doubt_holds_the_next_until_it_ends() {
        let turns = Arc::new(TakeTurns::default());
        turns.register("a", &items(&["1"]));
        turns.register("b", &items(&["1"]));
        let waiting = tokio::spawn({
            let turns = turns.clone();
            async move { turns.wait_turn("b", &items(&["1"])).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        turns.finish("a");
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("b's turn after a ended")
            .unwrap();
    }

    #[tokio::test]
    async fn a_refused_charge_before_its_turn_releases_the_next_at_once() {
        let turns = TakeTurns::default();
        turns.register("a", &items(&["1"]));
        turns.register("b", &items(&["1"]));
        turns.register("c", &items(&["1"]));
        // "b" had its turn after "a" settled: its take may be out.
        turns.settle("a");
        assert!(turn_comes(&turns, "b", &["1"]).await);
        turns.release_unheld("b");
        assert!(!turn_comes(&turns, "c", &["1"]).await, "b may hold stock");
        turns.finish("b");
        // "d" is refused its charge while waiting behind "c": it leaves.
        turns.register("d", &items(&["1"]));
        turns.register("e", &items(&["1"]));
        turns.settle("c");
        turns.release_unheld("d");
        assert!(turn_comes(&turns, "e", &["1"]).await);
    }

    #[tokio::test]
    async fn a_checkout_loaded_by_a_new_leader_is_not_released_by_a_refused_charge() {
        let turns = TakeTurns::default();
        let open = items(&["1"]);
        assert!(turns.load(3, [("old", &open[..])]));
        turns.register("new", &items(&["1"]));
        // An earlier leader may have sent its take.
        turns.release_unheld("old");
        assert!(!turn_comes(&turns, "new", &["1"]).await);
        turns.finish("old");
        assert!(turn_comes(&turns, "new", &["1"]).await);
    }

    #[tokio::test]
    async fn a_later_checkout_never_holds_an_earlier_one() {
        let turns = TakeTurns::default();
        turns.register("a", &items(&["1"]));
        turns.register("b", &items(&["1"]));
        assert!(turn_comes(&turns, "a", &["1"]).await);
    }

    #[tokio::test]
    async fn a_new_leader_orders_the_open_checkouts_it_loads_first() {
        let turns = TakeTurns::default();
        // Registered under the old term: forgotten by the load.
        turns.register("new", &items(&["1"]));
        let open = items(&["1"]);
        assert!(turns.load(7, [("old", &open[..])]));
        assert!(turns.loaded_for(7));
        assert!(!turns.loaded_for(8));
        turns.register("new", &items(&["1"]));
        assert!(!turn_comes(&turns, "new", &["1"]).await);
        // The sweeper's load after a checkout's own, in the same term.
        assert!(!turns.load(7, []), "loaded once per term");
        assert!(!turn_comes(&turns, "new", &["1"]).await, "not reset");
        turns.finish("old");
        assert!(turn_comes(&turns, "new", &["1"]).await);
    }

    #[tokio::test]
    async fn an_unregistered_checkout_registers_and_waits_its_turn() {
        let turns = TakeTurns::default();
        turns.register("a", &items(&["1"]));
        assert!(!turn_comes(&turns, "b", &["1"]).await);
        turns.settle("a");
        assert!(turn_comes(&turns, "b", &["1"]).await);
    }
}
