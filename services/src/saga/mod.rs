//! The checkout saga, driven by the order group's Raft leader.
//!
//! A checkout is a record in the order group's log (`domain::checkout`)
//! written before the first step; every decision is logged before it is
//! acted on. The steps:
//!
//! 1. charge the user (payment) and take the stock of every item, all or
//!    none (stock), both at once: one consensus round in a row instead of
//!    two;
//! 2. when both have a definite answer: if both applied, the client is
//!    answered paid and the commit is logged (the order is marked paid in
//!    the same log entry; it may wait to share an entry with the next
//!    write, and reads of the order wait for it: `decided_read`); if either
//!    was refused, abort, undo the other one (refund the charge, or give
//!    the stock back), then finish the checkout as aborted and answer.
//!
//! Every step carries the transaction id and is retried with it until it
//! has a definite answer, never guessed as failed; the participants apply
//! each transaction's step and its compensation once, and a compensation
//! that arrives first refuses its step (`domain::steps`). The decision waits
//! for both answers, so nothing of a checkout moves after its abort is
//! logged except the compensation. docs/design.md argues why this stays
//! all-or-nothing and exactly-once.
//!
//! Whoever is leader drives every open checkout: the request that began it,
//! or, after a leader change, the sweeper of the new leader, which finds the
//! open ones in the log and finishes them without a client. A driver stops
//! as soon as its node is no longer leader. The sweeper also garbage-collects
//! finished checkouts and the participants' step records through the logs.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use cart_common::metrics::{
    counter, counter_vec, float_gauge, gauge, histogram, histogram_vec, precreate, Label,
    LATENCY_BUCKETS,
};
use cart_common::shard::Shard;
use cart_common::{ClusterSpec, Service};
use openraft::{BasicNode, ServerState};
use prometheus::{Gauge, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use strum::{IntoStaticStr, VariantArray};
use tokio::sync::watch;
use tracing::Instrument;

use crate::api::SagaRecovery;
use crate::client::PeerService;
use crate::domain::{
    self, Checkout, CheckoutReply, CheckoutState, Command, Query, RejectionCode, Reply, SagaStep,
};
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::read_barrier::ReadBarrier;
use crate::raft::{now_ms, NodeId, Raft};
use crate::request_key::RequestKey;
use crate::storage::{Backend, Health};
use cart_common::backoff::Backoff;

pub(crate) mod decided_read;
mod recovery;
mod turns;
use decided_read::ReadWait;
use recovery::Recoveries;
use turns::TakeTurns;

/// How often the leader looks for open checkouts nobody drives.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often the leader garbage-collects finished transactions, at most.
const FORGET_EVERY: Duration = Duration::from_secs(30);
/// Most open checkouts one sweep takes over.
const SWEEP_BATCH: usize = 10_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Where a checkout stands, as its driver publishes it.
#[derive(Clone, Debug)]
enum Progress {
    Running,
    /// Both steps applied: the checkout commits whoever leads, so it is
    /// answered paid now, while its commit is logged (`decided_read`).
    Paid,
    Finished(Checkout),
    /// This node stopped being leader; the new leader takes over.
    Stopped,
}

pub struct Sagas {
    id: NodeId,
    raft: Raft,
    proposer: Proposer,
    backend: Arc<dyn Backend>,
    /// No new checkout begins while the storage fails.
    health: Arc<Health>,
    /// Confirms this node leads with everything committed applied: for a
    /// checkout of a paid order (`answer_as_paid`) and a take-over.
    reads: Arc<ReadBarrier>,
    payment: PeerService,
    stock: PeerService,
    /// Sagas being driven here: their progress, and when each driver started
    /// (for the age of the oldest).
    running: Mutex<HashMap<String, (Instant, watch::Receiver<Progress>)>>,
    /// How long a checkout request waits for its saga's outcome.
    wait: Duration,
    /// Finished transactions are forgotten after this long.
    window_ms: u64,
    /// What each new leadership took over (for the node's status).
    recoveries: Recoveries,
    /// Which checkout may take stock next (stock in doubt is waited for).
    turns: TakeTurns,
}

/// What a saga sends to a participant or logs, as its request ids
/// (`{tx_id}:{step}`) and the `step` metric label name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum StepKind {
    Charge,
    TakeStock,
    /// Compensation of a charge.
    Refund,
    /// Compensation of a take of stock.
    ReturnStock,
    /// Logging a decision (commit, abort, finish) in the order group.
    Decide,
}

impl StepKind {
    pub const COMPENSATIONS: [Self; 2] = [Self::Refund, Self::ReturnStock];
}

/// How a finished saga ended, as the `outcome` metric label names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum SagaOutcome {
    Committed,
    Aborted,
}

/// How a check of an order seen paid ended, as the `result` metric label
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum PaidCheck {
    Answered,
    ThroughLog,
}

impl Sagas {
    pub fn new(
        spec: &ClusterSpec,
        id: NodeId,
        raft: Raft,
        proposer: Proposer,
        backend: Arc<dyn Backend>,
        health: Arc<Health>,
        reads: Arc<ReadBarrier>,
    ) -> Self {
        init_series();
        Self {
            id,
            raft,
            proposer,
            backend,
            health,
            reads,
            payment: PeerService::new(spec, Service::Payment),
            stock: PeerService::new(spec, Service::Stock),
            turns: TakeTurns::default(),
            running: Mutex::new(HashMap::new()),
            wait: Duration::from_millis(spec.limits.checkout_timeout_ms),
            window_ms: spec.raft.request_id_window_secs.saturating_mul(1000),
            recoveries: Recoveries::default(),
        }
    }

    pub fn last_recovery(&self) -> Option<SagaRecovery> {
        self.recoveries.last()
    }

    /// Begins (or joins) the checkout of `order_id` and waits for its end.
    /// Once begun, it is answered (`CheckoutReply::Unfinished`) with the
    /// transaction to follow if it has not ended within the wait; an error
    /// means nothing is known to have begun: the client may retry with the
    /// same request id and will join the same transaction if one did.
    pub async fn checkout(
        self: &Arc<Self>,
        key: &RequestKey,
        order_id: &str,
    ) -> Result<CheckoutReply, ProposeError> {
        if !self.health.is_healthy() {
            return Err(ProposeError::Unavailable(
                "this node's storage is failing".into(),
            ));
        }
        if self.answer_as_paid(key, order_id).await {
            return Ok(CheckoutReply::AlreadyPaid);
        }
        let begin = Command::BeginCheckout {
            order_id: order_id.to_string(),
            tx_id: uuid::Uuid::new_v4().to_string(),
        };
        let checkout = match self.proposer.propose(key, begin).await? {
            Ok(Reply::Checkout(c)) => c,
            Ok(Reply::Paid) => return Ok(CheckoutReply::AlreadyPaid),
            Ok(other) => {
                return Err(ProposeError::Unavailable(format!(
                    "checkout began with an unexpected reply {other:?}"
                )))
            }
            Err(refused) => return Ok(CheckoutReply::Refused(refused)),
        };
        self.turns.register(&checkout.tx_id, &checkout.items);
        let mut progress = self.drive(&checkout.tx_id);
        let ended = tokio::time::timeout(self.wait, async {
            loop {
                let now = progress.borrow_and_update().clone();
                match now {
                    Progress::Paid => return Some(Some(CheckoutReply::Paid)),
                    Progress::Finished(c) => return Some(c.reply()),
                    Progress::Stopped => return None,
                    Progress::Running => {}
                }
                if progress.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        let unfinished = || CheckoutReply::Unfinished {
            tx_id: checkout.tx_id.clone(),
        };
        match ended {
            Ok(Some(reply)) => Ok(reply.unwrap_or_else(unfinished)),
            Ok(None) => match leader_hint(&self.raft) {
                Some(f) => Err(ProposeError::NotLeader(f)),
                // Begun: hand over what the coordinator can follow.
                None => Ok(unfinished()),
            },
            Err(_) => {
                METRICS.checkouts_handed_over.inc();
                tracing::debug!(
                    order_id,
                    tx_id = %checkout.tx_id,
                    wait = ?self.wait,
                    "checkout not finished within the wait; it goes on, handed over"
                );
                Ok(unfinished())
            }
        }
    }

    /// Whether to answer a checkout `AlreadyPaid` with no Raft write. A
    /// checkout of an order already paid changes nothing, yet it cost a log
    /// entry (its begin) on every order replica and its request id was
    /// remembered for the whole window: in the benchmark's workload, most
    /// checkouts after the first minutes. Now the leader answers it like a
    /// read: only an order this replica already sees paid is considered
    /// (others begin at once, at no extra cost), and a read round then
    /// confirms this node still leads and has applied everything committed
    /// before the request (a `batch_init` may have reset the order, or a
    /// retry used the id, meanwhile). Its request id is not remembered,
    /// like a read's (docs/api.md).
    async fn answer_as_paid(&self, key: &RequestKey, order_id: &str) -> bool {
        if !self.answerable_as_paid(key, order_id) {
            return false;
        }
        let confirmed = self
            .reads
            .confirm()
            .instrument(tracing::info_span!("saga.paid_check", order_id))
            .await
            .is_ok()
            && self.answerable_as_paid(key, order_id);
        let result = if confirmed {
            PaidCheck::Answered
        } else {
            PaidCheck::ThroughLog
        };
        METRICS
            .paid_checks
            .with_label_values(&[result.as_str()])
            .inc();
        confirmed
    }

    fn answerable_as_paid(&self, key: &RequestKey, order_id: &str) -> bool {
        let answerable = self.backend.reader().and_then(|view| {
            domain::checkout::answerable_as_paid(view.as_ref(), order_id, &key.request_id)
        });
        answerable.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the order; the checkout goes through the log");
            false
        })
    }

    /// Starts a driver for `tx_id` unless one runs; returns its progress.
    fn drive(self: &Arc<Self>, tx_id: &str) -> watch::Receiver<Progress> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = running.get(tx_id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Progress::Running);
        running.insert(tx_id.to_string(), (Instant::now(), rx.clone()));
        METRICS.sagas_in_flight.set(running.len() as i64);
        let sagas = self.clone();
        let tx_id = tx_id.to_string();
        // A child of the request that began it (one trace per checkout), or
        // a root of its own when a new leader resumes it.
        let span = tracing::info_span!("saga", tx_id = %tx_id);
        tokio::spawn(
            async move {
                let end = sagas.run(&tx_id, &tx).await;
                // A driver stopped by a leader change keeps its turn: should
                // this node lead again, the take-over reloads it anyway.
                if matches!(end, Progress::Finished(_)) || !sagas.is_open(&tx_id) {
                    sagas.turns.finish(&tx_id);
                }
                tx.send_replace(end);
                let mut running = sagas.running.lock().unwrap_or_else(|p| p.into_inner());
                running.remove(&tx_id);
                METRICS.sagas_in_flight.set(running.len() as i64);
                if running.is_empty() {
                    METRICS.oldest_in_flight.set(0.0);
                }
            }
            .instrument(span),
        );
        rx
    }

    /// The age of the oldest saga driven here, as of this sweep: a saga
    /// stuck on a step shows as an age that keeps growing.
    fn export_oldest_age(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = running.values().map(|(started, _)| *started).min();
        METRICS
            .oldest_in_flight
            .set(oldest.map_or(0.0, |s| s.elapsed().as_secs_f64()));
    }

    /// Drives one checkout to its end, or until this node is not leader,
    /// publishing `Progress::Paid` on the way when both steps applied.
    async fn run(&self, tx_id: &str, progress: &watch::Sender<Progress>) -> Progress {
        loop {
            if !self.is_leader() {
                return Progress::Stopped;
            }
            let checkout = match self.load(tx_id) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    // Forgotten: finished longer ago than any retry window.
                    tracing::warn!(tx_id, "checkout record gone");
                    return Progress::Stopped;
                }
                Err(e) => {
                    tracing::error!(tx_id, error = %e, "cannot read checkout");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
            };
            let next = match &checkout.state {
                CheckoutState::Committed | CheckoutState::Aborted { .. } => {
                    finished(&checkout);
                    return Progress::Finished(checkout);
                }
                CheckoutState::Started => self.forward(&checkout).await,
                CheckoutState::Aborting { failed, .. } => self.compensate(&checkout, *failed).await,
            };
            let Some(decision) = next else {
                return Progress::Stopped;
            };
            // Every step applied, each with its record kept while the
            // checkout is open: any leader driving it from here gets the
            // same answers again and commits, so the client hears the
            // outcome now, one round before the commit is logged.
            if matches!(decision, Command::CommitCheckout { .. }) {
                progress.send_replace(Progress::Paid);
            }
            if !self.decide(tx_id, decision).await {
                return Progress::Stopped;
            }
        }
    }

    /// Runs the steps of a started checkout, both at once; returns the
    /// decision to log once both have a definite answer.
    async fn forward(&self, c: &Checkout) -> Option<Command> {
        let charge = Command::Charge {
            tx_id: c.tx_id.clone(),
            user_id: c.user_id.clone(),
            amount: c.amount,
        };
        let user_shard = self.payment.shard_of(&c.user_id);
        // Set when the charge is refused: a take still waiting for its turn
        // is then not sent (the checkout will abort, and holding its turn
        // would hold up every later checkout of the same items).
        let refused = watch::channel(false);
        let charged = async {
            let charged = self
                .step(
                    &self.payment,
                    user_shard,
                    StepKind::Charge,
                    &c.tx_id,
                    charge,
                )
                .await;
            match &charged {
                Some(Ok(_)) => self.turns.settle(&c.tx_id),
                Some(Err(_)) => {
                    let _ = refused.0.send(true);
                    self.turns.release_unheld(&c.tx_id);
                }
                None => {}
            }
            charged
        };
        let taken = async {
            let mut charge_refused = refused.0.subscribe();
            tokio::select! {
                biased;
                // The sender lives as long as this function: no spurious end.
                _ = charge_refused.wait_for(|r| *r) => return Some(None),
                turn = self.wait_turn(c) => turn?,
            }
            self.take_stock(c).await.map(Some)
        };
        let (charged, taken) = tokio::join!(charged, taken);
        // A refused charge names the abort when both are refused: a buyer
        // who cannot pay hears that first, as when the steps ran in turn.
        match (charged?, taken?) {
            (Err(refused), _) => Some(abort(c, SagaStep::Charge, refused)),
            (Ok(_), Some(Err(refused))) => Some(abort(c, SagaStep::TakeStock, refused)),
            (Ok(_), Some(Ok(_))) => Some(Command::CommitCheckout {
                tx_id: c.tx_id.clone(),
            }),
            // Not reached: the take is skipped only after a refused charge.
            // Stopping leaves the checkout open for the sweeper to resume.
            (Ok(_), None) => None,
        }
    }

    /// Takes the order's items from every stock shard they live on, at
    /// once, one step per shard (each its own record of the transaction at
    /// its shard). Applied when every shard applied; else the first
    /// refusal, once every shard has a definite answer (the abort then
    /// gives back what the others took). `None`: no longer leader.
    async fn take_stock(&self, c: &Checkout) -> Option<Result<Reply, domain::Rejection>> {
        let takes = stock_parts(&self.stock, &c.items)
            .into_iter()
            .map(|(shard, items)| {
                let take = Command::TakeStock {
                    tx_id: c.tx_id.clone(),
                    items,
                };
                self.step(&self.stock, shard, StepKind::TakeStock, &c.tx_id, take)
            });
        let mut taken = None;
        for answer in futures::future::join_all(takes).await {
            match answer? {
                Err(refused) => {
                    if !matches!(taken, Some(Err(_))) {
                        taken = Some(Err(refused));
                    }
                }
                Ok(reply) => {
                    taken.get_or_insert(Ok(reply));
                }
            }
        }
        taken
    }

    /// Waits until this checkout may take stock (`turns`): once the open
    /// checkouts of this leader's term are loaded, until no earlier checkout
    /// sharing an item holds stock in doubt. `None`: no longer leader.
    async fn wait_turn(&self, c: &Checkout) -> Option<()> {
        let started = Instant::now();
        let span = tracing::info_span!("saga.take_turn", tx_id = %c.tx_id);
        async {
            let term = loop {
                // Read in place: the metrics hold the membership and the
                // replication map, not worth a clone per checkout.
                let (term, applied_this_term) = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    let applied = m.last_applied.map(|l| l.leader_id.term);
                    (self.leadership(&m)?, applied == Some(m.current_term))
                };
                if self.turns.loaded_for(term) {
                    break term;
                }
                // The first take of a new term loads the open checkouts, once
                // an entry of the term is applied here (and with it every
                // entry before it: no open checkout is missed).
                if !applied_this_term {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else if let Err(e) = self.load_turns(term) {
                    tracing::warn!(error = %e, "cannot list open checkouts; retrying");
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            };
            // A turn is given up when this node stops leading the term it
            // waited in: the checkouts ahead of it are driven elsewhere now,
            // so their turns here would never end, and a driver left
            // waiting here would hold every retry that joins it on this
            // node (a follower joins a checkout it has applied) until
            // the retry's bound.
            let mut metrics = self.raft.metrics();
            tokio::select! {
                _ = self.turns.wait_turn(&c.tx_id, &c.items) => Some(()),
                _ = metrics.wait_for(|m| self.leadership(m) != Some(term)) => {
                    METRICS.turns_given_up.inc();
                    None
                }
            }
        }
        .instrument(span)
        .await?;
        METRICS
            .take_turn_wait
            .observe(started.elapsed().as_secs_f64());
        Some(())
    }

    /// Undoes the step that was not refused, then finishes the abort. Both
    /// steps had a definite answer before the abort was logged; undoing one
    /// that was refused too changes nothing (`domain::steps`), and for a
    /// checkout logged by a version that ran the steps in turn (a refused
    /// charge, stock never asked) it leaves a tombstone.
    ///
    /// With the stock on several shards, a refused take may have been
    /// refused by one shard only: the stock of every shard is given back
    /// too (a shard that refused changes nothing).
    async fn compensate(&self, c: &Checkout, failed: SagaStep) -> Option<Command> {
        let tx_id = &c.tx_id;
        let mut undos = Vec::new();
        let stock_shards: Vec<Shard> = stock_parts(&self.stock, &c.items)
            .into_iter()
            .map(|(shard, _)| shard)
            .collect();
        if failed == SagaStep::TakeStock {
            let user_shard = self.payment.shard_of(&c.user_id);
            let refund = Command::Refund {
                tx_id: tx_id.clone(),
            };
            undos.push((&self.payment, user_shard, StepKind::Refund, refund));
        }
        if failed == SagaStep::Charge || stock_shards.len() > 1 {
            for shard in stock_shards {
                let give_back = Command::ReturnStock {
                    tx_id: tx_id.clone(),
                };
                undos.push((&self.stock, shard, StepKind::ReturnStock, give_back));
            }
        }
        let undone = undos
            .into_iter()
            .map(|(service, shard, kind, undo)| async move {
                // A compensation always applies (or leaves a tombstone).
                let _ = self.step(service, shard, kind, tx_id, undo).await?;
                METRICS
                    .compensations
                    .with_label_values(&[kind.as_str()])
                    .inc();
                Some(())
            });
        for done in futures::future::join_all(undone).await {
            done?;
        }
        Some(Command::FinishCheckout {
            tx_id: c.tx_id.clone(),
        })
    }

    /// Sends a step until it has a definite answer (applied or refused),
    /// with the same request id every time. `None`: no longer leader.
    async fn step(
        &self,
        service: &PeerService,
        shard: Shard,
        kind: StepKind,
        tx_id: &str,
        cmd: Command,
    ) -> Option<Result<Reply, domain::Rejection>> {
        let step = kind.as_str();
        let key = RequestKey::internal(format!("{tx_id}:{step}"));
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            if !self.is_leader() {
                return None;
            }
            let span = tracing::info_span!("saga.step", step, tx_id, %shard);
            match service
                .write_to(shard, &key, cmd.clone())
                .instrument(span)
                .await
            {
                Ok(outcome) => return Some(outcome),
                Err(e) => {
                    METRICS.step_retries.with_label_values(&[step]).inc();
                    tracing::warn!(tx_id, step, error = %e, "saga step not answered; retrying");
                }
            }
            backoff.wait().await;
        }
    }

    /// Logs a decision; false if this node is no longer leader.
    async fn decide(&self, tx_id: &str, cmd: Command) -> bool {
        let key = RequestKey::internal(match &cmd {
            Command::CommitCheckout { .. } => format!("{tx_id}:commit"),
            Command::AbortCheckout { .. } => format!("{tx_id}:abort"),
            _ => format!("{tx_id}:finish"),
        });
        let decide = StepKind::Decide.as_str();
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        // A commit's client has its answer (`Progress::Paid`): it may wait
        // to share an entry with the next write.
        let lazy = matches!(cmd, Command::CommitCheckout { .. });
        loop {
            let proposed = if lazy {
                self.proposer.propose_lazy(&key, cmd.clone()).await
            } else {
                self.proposer.propose(&key, cmd.clone()).await
            };
            match proposed {
                Ok(_) => return true,
                Err(ProposeError::NotLeader(_)) => return false,
                Err(ProposeError::Overloaded) => {
                    METRICS.step_retries.with_label_values(&[decide]).inc();
                }
                Err(ProposeError::Unavailable(e)) => {
                    METRICS.step_retries.with_label_values(&[decide]).inc();
                    tracing::warn!(tx_id, error = %e, "saga decision not logged; retrying");
                }
            }
            if !self.is_leader() {
                return false;
            }
            backoff.wait().await;
        }
    }

    fn load(&self, tx_id: &str) -> Result<Option<Checkout>, String> {
        let view = self.backend.reader().map_err(|e| e.to_string())?;
        let found = domain::query(
            view.as_ref(),
            &Query::FindCheckout {
                tx_id: tx_id.to_string(),
            },
        );
        match found {
            Ok(Ok(Reply::Checkout(c))) => Ok(Some(c)),
            Ok(Err(_)) => Ok(None),
            Ok(Ok(other)) => Err(format!("unexpected {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `tx_id` is a checkout not yet finished (true if unreadable).
    fn is_open(&self, tx_id: &str) -> bool {
        match self.load(tx_id) {
            Ok(Some(c)) => !c.is_finished(),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    fn is_leader(&self) -> bool {
        self.leadership(&self.raft.metrics().borrow()).is_some()
    }

    /// The term this node leads, if it leads.
    fn leadership(&self, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Option<u64> {
        let term = (m.state == ServerState::Leader && m.current_leader == Some(self.id))
            .then_some(m.current_term)?;
        self.recoveries.saw_leading(term, now_ms());
        Some(term)
    }

    /// While leader: take over open checkouts nobody drives, and forget
    /// finished transactions below the watermark. Runs for the node's life.
    pub async fn sweep(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut led_term = None;
        let mut last_forget = Instant::now();
        loop {
            // Wake at once on a leadership change, else every sweep period.
            // The metrics also change with every entry appended or applied;
            // those wakes are not sweeps (under load they came thousands of
            // times a second, each listing the open checkouts).
            let next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
            let seen = self.leadership(&metrics.borrow_and_update());
            loop {
                match tokio::time::timeout_at(next_sweep, metrics.changed()).await {
                    Err(_elapsed) => break,
                    // Raft has shut down: so has this node.
                    Ok(Err(_closed)) => return,
                    Ok(Ok(())) if self.leadership(&metrics.borrow_and_update()) != seen => break,
                    Ok(Ok(())) => {}
                }
            }
            if !self.is_leader() {
                led_term = None;
                continue;
            }
            METRICS.sweeps.inc();
            self.export_oldest_age();
            let term = self.raft.metrics().borrow().current_term;
            if led_term != Some(term) {
                // New leadership: make sure everything committed before it
                // is applied here, so no open checkout is missed.
                if self.reads.confirm().await.is_err() {
                    continue;
                }
                if self.take_over(term) {
                    led_term = Some(term);
                }
            } else {
                // Young ones are being started by the request that began them.
                self.drive_undriven(SWEEP_EVERY * 2);
            }
            let forget_every =
                Duration::from_millis(self.window_ms / 4).clamp(SWEEP_EVERY, FORGET_EVERY);
            if last_forget.elapsed() >= forget_every {
                last_forget = Instant::now();
                self.forget().await;
            }
        }
    }

    /// A new leader resumes every checkout its predecessors left open
    /// (whether the sweeper or a client's retry ends up driving it).
    /// False if the open checkouts could not be listed (the sweeper tries
    /// again at its next round).
    fn take_over(self: &Arc<Self>, term: u64) -> bool {
        if let Err(e) = self.load_turns(term) {
            tracing::error!(error = %e, "cannot list open checkouts");
            return false;
        }
        self.drive_undriven(Duration::ZERO);
        true
    }

    /// Registers, once per leadership term, every open checkout whose stock
    /// may be in doubt, before any take of the term (`turns`), and records
    /// those begun in earlier terms as taken over (`recovery`). Whoever
    /// comes first in a new term loads: the sweeper's take-over, or a
    /// checkout about to take stock (whose own begin, or join, committed in
    /// this term was applied, and with it every checkout begun before).
    fn load_turns(&self, term: u64) -> Result<(), String> {
        if self.turns.loaded_for(term) {
            return Ok(());
        }
        let mut open = self.open_checkouts()?;
        // An abort for a refused take holds no stock.
        open.sort_by_key(|c| c.started_ms);
        let in_doubt = open.iter().filter(|c| {
            !matches!(
                c.state,
                CheckoutState::Aborting {
                    failed: SagaStep::TakeStock,
                    ..
                }
            )
        });
        let loaded = self.turns.load(
            term,
            in_doubt.map(|c| (c.tx_id.as_str(), c.items.as_slice())),
        );
        if loaded {
            let resumed = self.recoveries.took_over(term, &open, now_ms());
            if resumed > 0 {
                tracing::info!(
                    term,
                    resumed,
                    "resuming open checkouts after a leader change"
                );
                METRICS.sagas_recovered.inc_by(resumed);
            }
        }
        Ok(())
    }

    /// Starts drivers for open checkouts older than `min_age` that have none.
    fn drive_undriven(self: &Arc<Self>, min_age: Duration) {
        let young = now_ms().saturating_sub(min_age.as_millis() as u64);
        let open = match self.open_checkouts() {
            Ok(open) => open,
            Err(e) => {
                tracing::error!(error = %e, "cannot list open checkouts");
                return;
            }
        };
        for c in open.into_iter().filter(|c| c.started_ms <= young) {
            self.drive(&c.tx_id);
        }
    }

    fn open_checkouts(&self) -> Result<Vec<Checkout>, String> {
        let view = self.backend.reader().map_err(|e| e.to_string())?;
        match domain::query(view.as_ref(), &Query::OpenCheckouts { limit: SWEEP_BATCH }) {
            Ok(Ok(Reply::Checkouts(c))) => Ok(c),
            Ok(other) => Err(format!("unexpected {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Forgets, in all three groups, transactions older than every open
    /// checkout and than the longest a retry can take (the request-id
    /// window): nothing can still send a step for them.
    async fn forget(&self) {
        let oldest_open = match self.open_checkouts() {
            Ok(open) => open.iter().map(|c| c.started_ms).min(),
            Err(_) => return,
        };
        let now = now_ms();
        let watermark = oldest_open
            .unwrap_or(now)
            .min(now)
            .saturating_sub(self.window_ms);
        if watermark == 0 {
            return;
        }
        let key = RequestKey::internal(format!("forget:{watermark}"));
        let own = Command::ForgetCheckouts {
            before_ms: watermark,
        };
        let own = self.proposer.propose(&key, own).await;
        let steps = Command::ForgetSteps {
            before_ms: watermark,
        };
        let payment = self.payment.write(&key, steps.clone()).await;
        let stock = self.stock.write(&key, steps).await;
        let ok = own.is_ok() && payment.is_ok() && stock.is_ok();
        METRICS
            .forget_runs
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// The order's items grouped by the stock shard they live on, in shard
/// order; an order without items takes nothing from shard 0 (as a
/// single-shard cluster always did).
fn stock_parts(stock: &PeerService, items: &[(String, i64)]) -> Vec<(Shard, Vec<(String, i64)>)> {
    let mut parts: std::collections::BTreeMap<Shard, Vec<(String, i64)>> = Default::default();
    for (item, quantity) in items {
        parts
            .entry(stock.shard_of(item))
            .or_default()
            .push((item.clone(), *quantity));
    }
    if parts.is_empty() {
        parts.insert(Shard::default(), Vec::new());
    }
    parts.into_iter().collect()
}

fn abort(c: &Checkout, failed: SagaStep, refused: domain::Rejection) -> Command {
    Command::AbortCheckout {
        tx_id: c.tx_id.clone(),
        failed,
        error: refused.error,
        message: refused.message,
    }
}

fn finished(c: &Checkout) {
    let (outcome, reason) = match &c.state {
        CheckoutState::Committed => (SagaOutcome::Committed, NO_REASON),
        CheckoutState::Aborted { error, .. } => (SagaOutcome::Aborted, abort_reason(*error)),
        _ => return,
    };
    let outcome = outcome.as_str();
    METRICS.sagas.with_label_values(&[outcome, reason]).inc();
    let took = now_ms().saturating_sub(c.started_ms) as f64 / 1000.0;
    METRICS
        .saga_duration
        .with_label_values(&[outcome])
        .observe(took);
}

/// The `reason` label of a committed saga.
const NO_REASON: &str = "none";

/// Abort reasons as a bounded label set.
fn abort_reason(error: RejectionCode) -> &'static str {
    match error {
        RejectionCode::InsufficientCredit
        | RejectionCode::InsufficientStock
        | RejectionCode::UserNotFound
        | RejectionCode::ItemNotFound => error.as_str(),
        _ => "other",
    }
}

/// Series alerted on exist at 0 from the start.
fn init_series() {
    METRICS.sagas_recovered.inc_by(0);
    METRICS.sweeps.inc_by(0);
    METRICS.checkouts_handed_over.inc_by(0);
    METRICS.sagas_in_flight.set(0);
    METRICS.oldest_in_flight.set(0.0);
    precreate(&METRICS.forget_runs, [["ok"], ["failed"]]);
    precreate(&METRICS.paid_checks, PaidCheck::all().map(|r| [r.as_str()]));
    precreate(&METRICS.read_wait, ReadWait::all().map(|r| [r.as_str()]));
    precreate(&METRICS.step_retries, StepKind::all().map(|s| [s.as_str()]));
    precreate(
        &METRICS.saga_duration,
        SagaOutcome::all().map(|o| [o.as_str()]),
    );
    precreate(
        &METRICS.compensations,
        StepKind::COMPENSATIONS.map(|s| [s.as_str()]),
    );
    let aborted = SagaOutcome::Aborted.as_str();
    precreate(
        &METRICS.sagas,
        [
            [SagaOutcome::Committed.as_str(), NO_REASON],
            [aborted, abort_reason(RejectionCode::InsufficientCredit)],
            [aborted, abort_reason(RejectionCode::InsufficientStock)],
        ],
    );
}

pub(crate) fn leader_hint(
    raft: &Raft,
) -> Option<openraft::error::ForwardToLeader<NodeId, BasicNode>> {
    let hint = crate::raft::proposer::forward_hint(&raft.metrics().borrow());
    hint.leader_id.is_some().then_some(hint)
}

struct SagaMetrics {
    sagas: IntCounterVec,
    sagas_in_flight: IntGauge,
    oldest_in_flight: Gauge,
    sagas_recovered: IntCounter,
    turns_given_up: IntCounter,
    sweeps: IntCounter,
    checkouts_handed_over: IntCounter,
    saga_duration: HistogramVec,
    compensations: IntCounterVec,
    take_turn_wait: Histogram,
    read_wait: HistogramVec,
    paid_checks: IntCounterVec,
    step_retries: IntCounterVec,
    forget_runs: IntCounterVec,
}

/// Only order nodes touch these, so only they export them.
static METRICS: LazyLock<SagaMetrics> = LazyLock::new(|| SagaMetrics {
    sagas: counter_vec(
        "sagas_total",
        "Checkout sagas finished by this leader, by outcome (committed, aborted) and reason \
         (none, insufficient_credit, insufficient_stock, user_not_found, item_not_found, other).",
        &["outcome", "reason"],
    ),
    sagas_in_flight: gauge(
        "sagas_in_flight",
        "Checkout sagas this node is driving right now.",
    ),
    oldest_in_flight: float_gauge(
        "saga_oldest_in_flight_seconds",
        "Age of the oldest checkout saga this node is driving, as of its last sweep (once a \
         second); 0 when none runs.",
    ),
    sagas_recovered: counter(
        "sagas_recovered_total",
        "Open checkouts this node took over as leader without a client (after a leader change).",
    ),
    turns_given_up: counter(
        "saga_turns_given_up_total",
        "Takes that stopped waiting for their turn because this node stopped leading the order \
         group; the new leader drives them.",
    ),
    sweeps: counter(
        "saga_sweeps_total",
        "Sweeps of this leader for open checkouts nobody drives: one a sweep period (1 s), and \
         one at each leadership change.",
    ),
    checkouts_handed_over: counter(
        "saga_checkouts_handed_over_total",
        "Checkout requests this leader answered with the transaction id because the saga had not \
         ended within checkout_timeout_ms; the coordinator follows it to its end.",
    ),
    saga_duration: histogram_vec(
        "saga_duration_seconds",
        "Time from a checkout's begin to its end (commit, or abort with compensations done).",
        &["outcome"],
        LATENCY_BUCKETS,
    ),
    compensations: counter_vec(
        "saga_compensations_total",
        "Compensations a saga ran, by step (refund, return_stock).",
        &["step"],
    ),
    take_turn_wait: histogram(
        "saga_take_turn_wait_seconds",
        "Time a checkout's take of stock waited for its turn: for this leader to load the open \
         checkouts after an election, and for earlier checkouts sharing an item to have their \
         charge answered (their stock is in doubt until then).",
        LATENCY_BUCKETS,
    ),
    read_wait: histogram_vec(
        "saga_read_wait_seconds",
        "Time a read of an order waited for its checkout's decision (only reads of an order \
         whose checkout is begun and undecided wait), by how the wait ended: decided, or \
         expired (read as it stood after 3 s).",
        &["outcome"],
        LATENCY_BUCKETS,
    ),
    paid_checks: counter_vec(
        "saga_paid_checks_total",
        "Checkouts of orders this leader already saw paid, by result: answered (confirmed by a \
         read round and answered already paid, with no Raft write) or through_log (not \
         confirmed: the checkout went through the log as any other).",
        &["result"],
    ),
    step_retries: counter_vec(
        "saga_step_retries_total",
        "Saga steps resent with the same id for want of a definite answer, by step.",
        &["step"],
    ),
    forget_runs: counter_vec(
        "saga_forget_runs_total",
        "Garbage collections of finished transactions through the logs, by result.",
        &["result"],
    ),
});
