//! The cluster's event history as this coordinator knows it: the events it
//! observed itself, merged with those every other coordinator observed
//! (pulled by `sync_loop`, one long poll per peer: a pull waits at the
//! peer until it has a new event or `event_wait_ms` has passed, so an idle
//! cluster pulls seldom and an event still travels at once). Two
//! coordinators usually observe the same occurrence (both see node 2 go
//! down); `history` folds such observations into one event,
//! deterministically, so every coordinator that holds the same observations
//! shows the same history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use cart_common::admin::{Event, OwnEvents};
use cart_common::http::InternalClient;
use cart_common::paths::OWN_EVENTS_PATH;
use cart_common::spec::NodeId;
use cart_common::ClusterSpec;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;

use crate::metrics::METRICS;

/// The longest a pull may ask its peer to wait for a new event.
pub const MAX_EVENT_WAIT: Duration = Duration::from_secs(30);

/// Observations of the same kind of event on the same node this close in
/// time are one occurrence (unless they name it: a term or a check id).
const SAME_OCCURRENCE_MS: u64 = 5_000;

pub struct EventLog {
    /// This coordinator, e.g. `stock-coordinator-0`.
    pub name: String,
    /// `name@start-ms`: sequence numbers restart with each incarnation.
    pub incarnation: String,
    kept: usize,
    inner: Mutex<Inner>,
    /// The sequence number of this coordinator's newest own event, for the
    /// pulls waiting on it.
    newest: watch::Sender<u64>,
    /// Set when the process stops: waiting pulls are answered at once, so
    /// they do not hold up the server's drain.
    closing: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    next_seq: u64,
    own: VecDeque<(u64, Event)>,
    /// Every observation known, own and merged, by id.
    all: BTreeMap<String, Event>,
    /// Per peer admin address: its incarnation and the last sequence merged.
    cursors: HashMap<String, (String, u64)>,
    /// Per peer admin address: whether the last sync reached it.
    reachable: HashMap<String, bool>,
}

impl EventLog {
    pub fn new(name: String, kept: usize) -> Self {
        let incarnation = format!("{name}@{}", cart_services::raft::now_ms());
        Self {
            name,
            incarnation,
            kept: kept.max(1),
            inner: Mutex::new(Inner::default()),
            newest: watch::Sender::new(0),
            closing: watch::Sender::new(false),
        }
    }

    /// Records an event this coordinator observed, logs it and counts it.
    pub fn record(
        &self,
        service: &str,
        kind: &str,
        node: Option<NodeId>,
        message: String,
        detail: Value,
    ) -> Event {
        METRICS.events.with_label_values(&[service, kind]).inc();
        tracing::info!(service, kind, node, %message, "event");
        let mut inner = self.lock();
        inner.next_seq += 1;
        let seq = inner.next_seq;
        let event = Event {
            id: format!("{}#{seq}", self.incarnation),
            at_ms: cart_services::raft::now_ms(),
            service: service.to_string(),
            kind: kind.to_string(),
            node,
            observer: self.name.clone(),
            observers: vec![],
            message,
            detail,
        };
        inner.own.push_back((seq, event.clone()));
        while inner.own.len() > self.kept {
            inner.own.pop_front();
        }
        inner.all.insert(event.id.clone(), event.clone());
        self.trim(&mut inner);
        drop(inner);
        self.newest.send_replace(seq);
        event
    }

    /// This coordinator's own events after `after`; all of them if the asker
    /// knew an older incarnation.
    pub fn own_after(&self, after: u64, incarnation: Option<&str>) -> OwnEvents {
        let after = if self.is_current(incarnation) {
            after
        } else {
            0
        };
        let inner = self.lock();
        OwnEvents {
            incarnation: self.incarnation.clone(),
            events: inner
                .own
                .iter()
                .filter(|(seq, _)| *seq > after)
                .cloned()
                .collect(),
        }
    }

    /// `own_after`, but with nothing to give yet it waits up to `wait` (at
    /// most `MAX_EVENT_WAIT`) for this coordinator's next event. An asker
    /// that does not know this incarnation is answered at once: it learns
    /// the incarnation (and that this coordinator is reachable) now.
    pub async fn own_after_waiting(
        &self,
        after: u64,
        incarnation: Option<&str>,
        wait: Duration,
    ) -> OwnEvents {
        if !self.is_current(incarnation) {
            return self.own_after(after, incarnation);
        }
        let (mut newest, mut closing) = (self.newest.subscribe(), self.closing.subscribe());
        // `wait_for` looks at the current value first: an event recorded
        // before the subscription is not missed.
        let waited = tokio::time::timeout(
            wait.min(MAX_EVENT_WAIT),
            newest.wait_for(|seq| *seq > after),
        );
        tokio::select! {
            _ = waited => {}
            _ = closing.wait_for(|closing| *closing) => {}
        }
        self.own_after(after, incarnation)
    }

    /// Answers every waiting pull now and every later one at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether the asker names this incarnation (else it knew an earlier
    /// one, or none, and gets everything).
    fn is_current(&self, incarnation: Option<&str>) -> bool {
        incarnation == Some(self.incarnation.as_str())
    }

    /// Where to resume pulling from `peer`: (incarnation, last seq).
    fn cursor(&self, peer: &str) -> Option<(String, u64)> {
        self.lock().cursors.get(peer).cloned()
    }

    pub fn merge(&self, peer: &str, batch: OwnEvents) {
        let mut inner = self.lock();
        let last = batch.events.iter().map(|(seq, _)| *seq).max();
        let prev = inner
            .cursors
            .get(peer)
            .filter(|(inc, _)| *inc == batch.incarnation)
            .map_or(0, |(_, seq)| *seq);
        inner.cursors.insert(
            peer.to_string(),
            (batch.incarnation, last.unwrap_or(prev).max(prev)),
        );
        for (_, event) in batch.events {
            inner.all.entry(event.id.clone()).or_insert(event);
        }
        self.trim(&mut inner);
    }

    fn set_reachable(&self, peer: &str, ok: bool) {
        self.lock().reachable.insert(peer.to_string(), ok);
    }

    /// Whether the last sync reached the coordinator at `admin_addr`; this
    /// coordinator counts as reachable.
    pub fn reachable(&self, admin_addr: &str) -> Option<bool> {
        self.lock().reachable.get(admin_addr).copied()
    }

    /// The merged history, newest first, optionally of one service.
    pub fn history(&self, service: Option<&str>, limit: usize) -> Vec<Event> {
        let raw: Vec<Event> = self.lock().all.values().cloned().collect();
        let mut merged = fold_observations(raw);
        merged.retain(|e| service.is_none_or(|s| e.service == s));
        merged.reverse();
        merged.truncate(limit);
        merged
    }

    fn trim(&self, inner: &mut Inner) {
        // Keep the newest observations: every coordinator trims the same
        // way, so they keep the same ones once they hold the same set.
        let cap = self.kept * 4;
        if inner.all.len() <= cap {
            return;
        }
        let mut by_age: Vec<(u64, String)> = inner
            .all
            .values()
            .map(|e| (e.at_ms, e.id.clone()))
            .collect();
        by_age.sort();
        for (_, id) in by_age.into_iter().take(inner.all.len() - cap) {
            inner.all.remove(&id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated
        // in a way that matters for a history view; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Folds observations of the same occurrence by different coordinators into
/// one event, oldest first. Deterministic for a given set.
fn fold_observations(mut raw: Vec<Event>) -> Vec<Event> {
    raw.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    let mut out: Vec<Event> = Vec::with_capacity(raw.len());
    for event in raw {
        let same = out.iter_mut().rev().find(|e| same_occurrence(e, &event));
        match same {
            Some(first) => {
                if !first.observers.contains(&event.observer) {
                    first.observers.push(event.observer);
                }
            }
            None => {
                let mut event = event;
                event.observers = vec![event.observer.clone()];
                out.push(event);
            }
        }
    }
    out
}

fn same_occurrence(seen: &Event, new: &Event) -> bool {
    if seen.service != new.service
        || seen.kind != new.kind
        || seen.node != new.node
        || seen.observers.contains(&new.observer)
    {
        return false;
    }
    // Events that name their occurrence (a term, a check id) are the same
    // exactly when they name the same one.
    let key = |e: &Event| {
        e.detail
            .get("occurrence")
            .or_else(|| e.detail.get("term"))
            .cloned()
    };
    match (key(seen), key(new)) {
        (Some(a), Some(b)) => a == b,
        _ => new.at_ms.saturating_sub(seen.at_ms) <= SAME_OCCURRENCE_MS,
    }
}

/// Pulls every other coordinator's new events, forever: one long poll per
/// peer at a time, each peer on its own so a frozen one holds up no other.
pub async fn sync_loop(log: std::sync::Arc<EventLog>, spec: ClusterSpec, own_admin: String) {
    let wait = Duration::from_millis(spec.health.event_wait_ms).min(MAX_EVENT_WAIT);
    let pause = Duration::from_millis(spec.health.event_sync_ms);
    // A pull is answered within its wait; beyond that, the usual timeout.
    let client = InternalClient::new(
        Duration::from_millis(spec.health.timeout_ms),
        wait + Duration::from_millis(spec.health.timeout_ms.max(1000)),
    );
    let peers: Vec<String> = cart_common::Service::ALL
        .into_iter()
        .flat_map(|s| spec.coordinators(s))
        .map(|c| c.admin)
        .filter(|a| *a != own_admin)
        .collect();
    for series in [&METRICS.event_sync_failures, &METRICS.event_pulls] {
        cart_common::metrics::precreate(series, peers.iter().map(|peer| [peer.as_str()]));
    }
    let follows = peers.into_iter().map(|peer| {
        let (log, client) = (log.clone(), client.clone());
        async move {
            loop {
                let asked = tokio::time::Instant::now();
                let span = tracing::debug_span!("events.pull", %peer);
                let got = pull(&log, &client, &peer, wait).instrument(span).await;
                // New events: ask again at once. A failure, or nothing
                // and early (`event_wait_ms` 0, or a peer that does not
                // wait): pause, so no peer is asked in a tight loop.
                let early_and_empty = got == Some(0) && asked.elapsed() < (wait / 2).max(pause);
                if got.is_none() || early_and_empty {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    });
    futures::future::join_all(follows).await;
}

/// One pull from `peer`, waiting there up to `wait`: how many events it
/// brought, or `None` if it failed.
async fn pull(
    log: &EventLog,
    client: &InternalClient,
    peer: &str,
    wait: Duration,
) -> Option<usize> {
    let (incarnation, after) = log.cursor(peer).unwrap_or_default();
    // Incarnations are `<service>-coordinator-<i>@<ms>`: query-safe.
    let path = format!(
        "{OWN_EVENTS_PATH}?after={after}&incarnation={incarnation}&wait_ms={}",
        wait.as_millis()
    );
    match client.get_json::<OwnEvents>(peer, &path).await {
        Ok(batch) => {
            METRICS.event_pulls.with_label_values(&[peer]).inc();
            log.set_reachable(peer, true);
            let brought = batch.events.len();
            log.merge(peer, batch);
            Some(brought)
        }
        Err(e) => {
            if log.reachable(peer) != Some(false) {
                tracing::warn!(%peer, error = %e, "event sync failed");
            }
            log.set_reachable(peer, false);
            METRICS.event_sync_failures.with_label_values(&[peer]).inc();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn observed(log: &EventLog, kind: &str, node: u64) -> Event {
        log.record(
            "stock",
            kind,
            Some(node),
            format!("{kind} {node}"),
            Value::Null,
        )
    }

    #[test]
    fn two_coordinators_merge_to_the_same_history() {
        let a = EventLog::new("stock-coordinator-0".into(), 100);
        let b = EventLog::new("stock-coordinator-1".into(), 100);
        observed(&a, "node_down", 2);
        observed(&b, "node_down", 2);
        observed(&a, "node_up", 2);
        b.merge("a", a.own_after(0, None));
        a.merge("b", b.own_after(0, None));
        let ha = a.history(None, 10);
        assert_eq!(ha, b.history(None, 10));
        // One node_down observed twice, one node_up: newest first.
        assert_eq!(ha.len(), 2);
        assert_eq!(ha[0].kind, "node_up");
        assert_eq!(ha[1].observers.len(), 2);
    }

    #[test]
    fn pulling_resumes_after_the_last_merged_event() {
        let a = EventLog::new("a".into(), 100);
        let b = EventLog::new("b".into(), 100);
        observed(&a, "node_down", 1);
        b.merge("a", a.own_after(0, None));
        let (inc, seq) = b.cursor("a").unwrap();
        assert_eq!(seq, 1);
        observed(&a, "node_up", 1);
        assert_eq!(a.own_after(seq, Some(&inc)).events.len(), 1);
        // An unknown incarnation gets everything.
        assert_eq!(a.own_after(seq, Some("a@0")).events.len(), 2);
    }

    /// A pull of `log` by someone holding everything up to `after` of its
    /// current incarnation, waiting up to `wait`: what it got and how long
    /// it took (in paused time, so exact).
    async fn pull_of(log: &Arc<EventLog>, after: u64, wait: u64) -> (usize, Duration) {
        let started = tokio::time::Instant::now();
        let inc = log.incarnation.clone();
        let got = log
            .own_after_waiting(after, Some(&inc), Duration::from_secs(wait))
            .await;
        (got.events.len(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_pull_is_answered_by_the_next_event_not_its_timeout() {
        let log = Arc::new(EventLog::new("a".into(), 100));
        observed(&log, "node_down", 1);
        let recorder = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            observed(&recorder, "node_up", 1);
        });
        assert_eq!(pull_of(&log, 1, 10).await, (1, Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pull_with_nothing_new_waits_its_whole_time_then_answers_empty() {
        let log = Arc::new(EventLog::new("a".into(), 100));
        observed(&log, "node_down", 1);
        assert_eq!(pull_of(&log, 1, 5).await, (0, Duration::from_secs(5)));
        // Never longer than the cap, whatever the asker asks.
        assert_eq!(pull_of(&log, 1, 3600).await, (0, MAX_EVENT_WAIT));
    }

    #[tokio::test(start_paused = true)]
    async fn events_already_there_or_of_another_incarnation_are_answered_at_once() {
        let log = Arc::new(EventLog::new("a".into(), 100));
        // A first pull learns the incarnation even with no events yet.
        let started = tokio::time::Instant::now();
        let first = log
            .own_after_waiting(0, None, Duration::from_secs(10))
            .await;
        assert_eq!((first.events.len(), started.elapsed()), (0, Duration::ZERO));
        assert_eq!(first.incarnation, log.incarnation);
        observed(&log, "node_down", 1);
        observed(&log, "node_up", 1);
        assert_eq!(pull_of(&log, 1, 10).await, (1, Duration::ZERO));
        let started = tokio::time::Instant::now();
        let stale = log
            .own_after_waiting(2, Some("a@0"), Duration::from_secs(10))
            .await;
        assert_eq!((stale.events.len(), started.elapsed()), (2, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_answers_waiting_pulls_and_every_later_one_at_once() {
        let log = Arc::new(EventLog::new("a".into(), 100));
        let closer = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            closer.close();
        });
        assert_eq!(pull_of(&log, 0, 10).await, (0, Duration::from_secs(1)));
        assert_eq!(pull_of(&log, 0, 10).await, (0, Duration::ZERO));
    }

    #[test]
    fn leader_changes_are_the_same_occurrence_exactly_when_the_term_matches() {
        let a = EventLog::new("a".into(), 100);
        let b = EventLog::new("b".into(), 100);
        let term = |t: u64| serde_json::json!({ "term": t });
        a.record("stock", "leader_change", Some(1), "x".into(), term(2));
        b.record("stock", "leader_change", Some(1), "y".into(), term(2));
        b.record("stock", "leader_change", Some(1), "z".into(), term(3));
        a.merge("b", b.own_after(0, None));
        let history = a.history(Some("stock"), 10);
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].observers, vec!["a".to_string(), "b".to_string()]);
        assert!(a.history(Some("order"), 10).is_empty());
    }

    #[test]
    fn own_events_are_bounded() {
        let a = EventLog::new("a".into(), 3);
        for i in 0..10 {
            observed(&a, "node_down", i);
        }
        assert_eq!(a.own_after(0, None).events.len(), 3);
        assert!(a.history(None, 100).len() <= 12);
    }
}
