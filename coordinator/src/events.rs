//! The cluster's event history as this coordinator knows it: the events it
//! observed itself, merged with those every other coordinator observed
//! (pulled by `sync_loop`). Two coordinators usually observe the same
//! occurrence (both see node 2 go down); `history` folds such observations
//! into one event, deterministically, so every coordinator that holds the
//! same observations shows the same history.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use cart_common::admin::{Event, OwnEvents};
use cart_common::http::InternalClient;
use cart_common::paths::OWN_EVENTS_PATH;
use cart_common::spec::NodeId;
use cart_common::ClusterSpec;
use serde_json::Value;

use crate::metrics::METRICS;

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
        event
    }

    /// This coordinator's own events after `after`; all of them if the asker
    /// knew an older incarnation.
    pub fn own_after(&self, after: u64, incarnation: Option<&str>) -> OwnEvents {
        let after = if incarnation == Some(self.incarnation.as_str()) {
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

/// Pulls every other coordinator's new events, forever.
pub async fn sync_loop(log: std::sync::Arc<EventLog>, spec: ClusterSpec, own_admin: String) {
    let interval = Duration::from_millis(spec.health.event_sync_ms);
    let client = InternalClient::new(
        Duration::from_millis(spec.health.timeout_ms),
        Duration::from_millis(spec.health.timeout_ms.max(1000)),
    );
    let peers: Vec<String> = cart_common::Service::ALL
        .into_iter()
        .flat_map(|s| spec.coordinators(s))
        .map(|c| c.admin)
        .filter(|a| *a != own_admin)
        .collect();
    cart_common::metrics::precreate(
        &METRICS.event_sync_failures,
        peers.iter().map(|peer| [peer.as_str()]),
    );
    loop {
        let pulls = peers.iter().map(|peer| pull(&log, &client, peer));
        futures::future::join_all(pulls).await;
        tokio::time::sleep(interval).await;
    }
}

async fn pull(log: &EventLog, client: &InternalClient, peer: &str) {
    let (incarnation, after) = log.cursor(peer).unwrap_or_default();
    // Incarnations are `<service>-coordinator-<i>@<ms>`: query-safe.
    let path = format!("{OWN_EVENTS_PATH}?after={after}&incarnation={incarnation}");
    match client.get_json::<OwnEvents>(peer, &path).await {
        Ok(batch) => {
            log.set_reachable(peer, true);
            log.merge(peer, batch);
        }
        Err(e) => {
            if log.reachable(peer) != Some(false) {
                tracing::warn!(%peer, error = %e, "event sync failed");
            }
            log.set_reachable(peer, false);
            METRICS.event_sync_failures.with_label_values(&[peer]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
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
