//! Reads of an order wait for its checkout's decision.
//!
//! The saga answers a checkout as soon as both its steps applied, before
//! its commit is logged (one consensus round less on the answer's path;
//! docs/design.md argues why the outcome is then fixed). So for a moment
//! after the client hears "paid", a replica may still hold the order unpaid
//! with its checkout begun. A linearizable read of an order whose checkout
//! is begun and undecided therefore waits here until this replica has
//! applied the decision, and a client that heard "paid" never reads the
//! order unpaid. The wait is bounded: a checkout that cannot be decided (a
//! participant unreachable) is read as it stands after `MAX_WAIT`.

use std::future::Future;
use std::time::{Duration, Instant};

use cart_common::metrics::Label;
use strum::{IntoStaticStr, VariantArray};
use tracing::Instrument;

use super::METRICS;
use crate::domain;
use crate::raft::Raft;
use crate::storage::{Backend, StateStore, StoreError};

/// The longest a read waits for a decision.
const MAX_WAIT: Duration = Duration::from_secs(3);
/// A look at the state this often besides every apply, in case an apply's
/// notice came before its state was visible.
const POLL: Duration = Duration::from_millis(2);
/// How often a waiting read refreshes what it knows of the leader's commit
/// (the first time at once).
const REFRESH: Duration = Duration::from_millis(2);

/// How a read's wait for a checkout's decision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(super) enum ReadWait {
    Decided,
    /// Still undecided after the longest wait: read as it stands.
    Expired,
}

type OrderCheck = fn(&dyn StateStore, &str) -> Result<bool, StoreError>;

/// `check` of `order_id` on this replica's state; `unreadable` if the state
/// cannot be read (the read itself then reports the storage failure).
fn check(backend: &dyn Backend, order_id: &str, check: OrderCheck, unreadable: bool) -> bool {
    backend
        .reader()
        .and_then(|view| check(view.as_ref(), order_id))
        .unwrap_or(unreadable)
}

/// Whether `order_id`'s checkout is begun and undecided on this replica.
pub fn undecided(backend: &dyn Backend, order_id: &str) -> bool {
    check(backend, order_id, domain::checkout::undecided, false)
}

/// Whether a follower's read of `order_id` should hurry the leader's lazy
/// writes (`domain::checkout::maybe_undecided`).
pub fn maybe_undecided(backend: &dyn Backend, order_id: &str) -> bool {
    check(backend, order_id, domain::checkout::maybe_undecided, true)
}

/// Returns once `order_id` has no undecided checkout on this replica, or
/// after `MAX_WAIT`. At once and every `REFRESH` while undecided it runs
/// `refresh`: the leader writes its lazy writes now (the decision may be a
/// commit waiting for company), and on a follower a new read-index round,
/// whose heartbeats carry the leader's commit index (a follower otherwise
/// learns it with the next append or heartbeat, up to `heartbeat_ms` later
/// on an idle group).
pub async fn wait<F, R>(raft: &Raft, backend: &dyn Backend, order_id: &str, refresh: F)
where
    F: Fn() -> R,
    R: Future<Output = ()>,
{
    let undecided = || undecided(backend, order_id);
    let mut applied = raft.metrics();
    applied.borrow_and_update();
    if !undecided() {
        return;
    }
    let started = Instant::now();
    let mut refreshed: Option<Instant> = None;
    let outcome = async {
        loop {
            if refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
                refresh().await;
                refreshed = Some(Instant::now());
            }
            // Raft is shutting down: no more notices, look every POLL.
            if let Ok(Err(_)) = tokio::time::timeout(POLL, applied.changed()).await {
                tokio::time::sleep(POLL).await;
            }
            if !undecided() {
                return ReadWait::Decided;
            }
            if started.elapsed() >= MAX_WAIT {
                return ReadWait::Expired;
            }
        }
    }
    .instrument(tracing::info_span!("saga.read_wait", order_id))
    .await;
    if outcome == ReadWait::Expired {
        tracing::info!(
            order_id,
            "read of an order with an undecided checkout, after the wait"
        );
    }
    METRICS
        .read_wait
        .with_label_values(&[outcome.as_str()])
        .observe(started.elapsed().as_secs_f64());
}
