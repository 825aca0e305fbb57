//! The leader's way into its group's log: batches concurrent client writes
//! into Raft entries.
//!
//! openraft 0.9 appends each `client_write` as its own entry and waits for
//! that entry's fsync before it takes the next one, so one entry per write
//! caps a group at one fsync per write and queues everything else behind
//! it. Here writes wait in a queue while the group is busy; whatever has
//! queued goes into the next entry, so under load many writes share one
//! append, one fsync on each replica and one apply transaction, and when
//! idle a write goes out alone at once. One entry is in Raft at a time:
//! openraft fsyncs each entry separately, so a second entry in flight costs
//! a second fsync where waiting would have put its writes into the next
//! batch (measured: 193 against 158–165 addItem+checkout/s with 2, 4 or 8
//! in flight, `examples/cross_service`; 902 against 864 ok/s at 1000 users).
//!
//! A *lazy* write (`propose_lazy`: one no request waits on, such as a
//! checkout's commit, answered once its steps applied) that would go out
//! alone waits up to `lazy_write_ms` for another write to share its entry:
//! at a steady checkout rate each commit rides with the next checkout's
//! begin, one entry per checkout on the order group instead of two. A
//! read waiting on it hurries it (`lazy_hurry`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState};
use strum::{IntoStaticStr, VariantArray};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use super::lazy_hurry::LazyHurry;
use super::lease::{Fence, Refused};
use super::state_machine::StateMachine;
use super::{now_ms, LogCommand, NodeId, Proposals, Raft, LOG_FORMAT_VERSION};
use crate::domain::{Command, Outcome};
use crate::metrics::{GroupMetrics, METRICS};
use crate::request_key::RequestKey;
use cart_common::metrics::{precreate, Label};

/// Most writes in one entry: bounds an entry's size and its apply time.
const MAX_BATCH: usize = 256;
/// Entries handed to Raft and not yet applied, at most (see above).
const IN_FLIGHT: usize = 1;
/// Writes waiting for an entry, at most; beyond it a write is refused at
/// once (429) rather than queued without bound. About 40 full entries: far
/// more than a healthy group drains in a second.
pub const MAX_QUEUED: usize = 10_000;

/// Why a write to the own group did not happen.
#[derive(Clone, Debug)]
pub enum ProposeError {
    NotLeader(ForwardToLeader<NodeId, BasicNode>),
    Unavailable(String),
    /// The queue of writes waiting for an entry is full.
    Overloaded,
}

type Answer = oneshot::Sender<Result<Outcome, ProposeError>>;

/// A write waiting for an entry.
struct Queued {
    cmd: LogCommand,
    answer: Answer,
    /// Nobody waits on it: it may wait for company (`propose_lazy`).
    lazy: bool,
}

/// Handle to the node's proposer; cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    raft: Raft,
    sm: StateMachine,
    fence: Fence,
    queue: mpsc::Sender<Queued>,
    metrics: GroupMetrics,
    /// Ends a lazy write's wait for company at once (`hurry`).
    lazy: Arc<LazyHurry>,
}

impl Proposer {
    /// Starts the batching task of `raft`'s group; a leader cut off from
    /// its group for longer than `fence` takes no writes (`lease`); a lazy
    /// write waits up to `lazy_wait` for company.
    pub fn start(
        raft: Raft,
        sm: StateMachine,
        fence: Fence,
        metrics: GroupMetrics,
        lazy_wait: Duration,
    ) -> Self {
        let (queue, waiting) = mpsc::channel(MAX_QUEUED);
        precreate(
            &METRICS.lazy_write_wait,
            LazyEnd::all().map(|end| [metrics.shard.as_str(), end.as_str()]),
        );
        let lazy = Arc::new(LazyHurry::default());
        let batching = Batching {
            raft: raft.clone(),
            fence: fence.clone(),
            metrics: metrics.clone(),
            lazy_wait,
            lazy: lazy.clone(),
        };
        let batching = batching.run(waiting);
        tokio::spawn(batching);
        Self {
            raft,
            sm,
            fence,
            queue,
            metrics,
            lazy,
        }
    }

    /// Someone waits on the lazy writes after all (a read of an order whose
    /// commit is one of them): the batch waiting for company goes now, and
    /// this returns once its entry is written, or after `bound`.
    pub async fn hurry(&self, bound: Duration) {
        let Some(id) = self.lazy.hurry() else {
            return;
        };
        let started = Instant::now();
        let span = tracing::info_span!("raft.hurry_wait", batch = id);
        let _ = tokio::time::timeout(bound, self.lazy.until_written(id))
            .instrument(span)
            .await;
        self.metrics
            .hurry_wait
            .observe(started.elapsed().as_secs_f64());
    }

    /// Writes a command under `key`: answered from memory if its id was
    /// applied (or refused, if for another operation), else appended
    /// (batched with concurrent writes) and applied.
    pub async fn propose(&self, key: &RequestKey, cmd: Command) -> Result<Outcome, ProposeError> {
        self.write(key, cmd, false).await
    }

    /// `propose` for a write no request waits on: alone in the queue, it
    /// waits up to `lazy_write_ms` for another write to share its entry.
    pub async fn propose_lazy(
        &self,
        key: &RequestKey,
        cmd: Command,
    ) -> Result<Outcome, ProposeError> {
        self.write(key, cmd, true).await
    }

    async fn write(
        &self,
        key: &RequestKey,
        cmd: Command,
        lazy: bool,
    ) -> Result<Outcome, ProposeError> {
        // A remembered id is committed, whichever replica remembers it.
        match self.sm.remembered(key) {
            Ok(Some(outcome)) => return Ok(outcome),
            Ok(None) => {}
            Err(e) => {
                return Err(ProposeError::Unavailable(format!(
                    "replica store failed: {e}"
                )))
            }
        }
        if let Some(why) = self
            .fence
            .refusal(&self.raft.metrics().borrow(), Refused::Write)
        {
            return Err(ProposeError::Unavailable(why));
        }
        let (answer, heard) = oneshot::channel();
        let span = tracing::info_span!("raft.write", request_id = %key.request_id);
        let started = Instant::now();
        self.queue
            .try_send(Queued {
                cmd: command(key, cmd),
                answer,
                lazy,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.metrics.proposals_refused.inc();
                    ProposeError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => {
                    ProposeError::Unavailable("the proposer has stopped".into())
                }
            })?;
        self.metrics.proposal_queue.inc();
        let outcome = heard
            .instrument(span)
            .await
            .unwrap_or_else(|_| Err(ProposeError::Unavailable("the write was dropped".into())));
        self.metrics
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Appends a command in an entry of its own, not batched (a consistency
    /// check must sit alone at its log position); its log index.
    pub async fn append_alone(&self, key: &RequestKey, cmd: Command) -> Result<u64, String> {
        self.raft
            .client_write(command(key, cmd).into())
            .await
            .map(|r| r.log_id.index)
            .map_err(|e| format!("not logged: {e}"))
    }
}

fn command(key: &RequestKey, cmd: Command) -> LogCommand {
    LogCommand {
        v: LOG_FORMAT_VERSION,
        request_id: key.request_id.clone(),
        fingerprint: key.fingerprint,
        ts_ms: now_ms(),
        cmd,
    }
}

/// The group's batching task and what it needs.
struct Batching {
    raft: Raft,
    fence: Fence,
    metrics: GroupMetrics,
    lazy_wait: Duration,
    lazy: Arc<LazyHurry>,
}

impl Batching {
    /// Takes whatever has queued as one entry whenever fewer than
    /// `IN_FLIGHT` entries are in Raft; ends when every `Proposer` is gone.
    async fn run(self, mut waiting: mpsc::Receiver<Queued>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut lazy_batches = 0;
        while let Some(first) = waiting.recv().await {
            let mut batch = vec![first];
            let lazy_id = if self.waits_for_company(&batch) {
                lazy_batches += 1;
                self.keep_company(lazy_batches, &mut batch, &mut waiting)
                    .await;
                Some(lazy_batches)
            } else {
                None
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            while batch.len() < MAX_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let metrics = &self.metrics;
            metrics.proposal_queue.sub(batch.len() as i64);
            metrics.proposal_batch_writes.observe(batch.len() as f64);
            metrics.proposals_in_flight.inc();
            let (raft, fence, metrics) = (self.raft.clone(), self.fence.clone(), metrics.clone());
            let lazy = self.lazy.clone();
            let span = tracing::info_span!("raft.entry", writes = batch.len());
            let batch = batch.into_iter().map(|q| (q.cmd, q.answer)).collect();
            tokio::spawn(
                async move {
                    write_entry(&raft, &fence, &metrics, batch).await;
                    if let Some(id) = lazy_id {
                        lazy.written(id);
                    }
                    metrics.proposals_in_flight.dec();
                    drop(slot);
                }
                .instrument(span),
            );
        }
    }

    /// Whether `batch` is lazy writes only, which wait for company.
    fn waits_for_company(&self, batch: &[Queued]) -> bool {
        !self.lazy_wait.is_zero() && batch.iter().all(|q| q.lazy)
    }

    /// A batch of lazy writes (the `id`th) waits up to `lazy_wait` for a
    /// write someone waits on, which then shares its entry.
    async fn keep_company(
        &self,
        id: u64,
        batch: &mut Vec<Queued>,
        waiting: &mut mpsc::Receiver<Queued>,
    ) {
        let waited = Instant::now();
        let deadline = tokio::time::Instant::now() + self.lazy_wait;
        let hurried = self.lazy.waiting(id);
        tokio::pin!(hurried);
        let joined = loop {
            let next = tokio::select! {
                next = tokio::time::timeout_at(deadline, waiting.recv()) => next,
                () = &mut hurried => break LazyEnd::Hurried,
            };
            match next {
                Ok(Some(next)) => {
                    let eager = !next.lazy;
                    batch.push(next);
                    if eager || batch.len() >= MAX_BATCH {
                        break LazyEnd::Joined;
                    }
                }
                // Every proposer is gone: write what is here, then end.
                Ok(None) => break LazyEnd::Alone,
                Err(_) => break LazyEnd::Alone,
            }
        };
        self.lazy.went();
        METRICS
            .lazy_write_wait
            .with_label_values(&[self.metrics.shard.as_str(), joined.as_str()])
            .observe(waited.elapsed().as_secs_f64());
    }
}

/// How a lazy write's wait for company ended.
#[derive(Clone, Copy, VariantArray, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
enum LazyEnd {
    /// Another write someone waits on came, and shares the entry.
    Joined,
    /// None came within `lazy_write_ms`: the entry goes without one.
    Alone,
    /// A read waits on it (`Proposer::hurry`): the entry goes now.
    Hurried,
}

/// Writes one entry and hands each writer its own outcome. A leader cut
/// off from its group while the entry waits for a majority answers its
/// writers at once (503) instead of at their timeouts: the entry may still
/// commit if the partition heals first, which a retry under the same
/// request id then finds.
///
/// A leader deposed while its entry is in flight answers its writers at
/// once too (421, with the new leader): openraft 0.9 answers such an entry
/// only once the new leader's log commits or overwrites its index, which
/// waits for the new leader's next writes. Until then this entry would hold
/// the proposer's only slot, and every later write to this node, also once
/// it leads again, would queue behind it (a stall seen on 3 shards, where
/// leaders change hands at start).
async fn write_entry(
    raft: &Raft,
    fence: &Fence,
    metrics: &GroupMetrics,
    batch: Vec<(LogCommand, Answer)>,
) {
    let (commands, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let count = commands.len();
    // A node that does not lead gets its writers' answer (421) from
    // openraft at once; only a leader's entry is watched. (Read in place:
    // the metrics hold the membership, not worth a clone per entry.)
    let led = {
        let watch = raft.metrics();
        let m = watch.borrow();
        (m.state == ServerState::Leader).then_some(m.current_term)
    };
    let written = tokio::select! {
        written = raft.client_write(Proposals(commands)) => written,
        why = abandoned(raft, fence, led) => {
            metrics
                .of_family(&METRICS.entries_abandoned, &[why.label()])
                .inc();
            tracing::warn!(writes = count, reason = why.label(), "entry answered before it was applied");
            let refusal = why.into_error();
            for answer in answers {
                let _ = answer.send(Err(refusal.clone()));
            }
            return;
        }
    };
    let outcomes = match written {
        Ok(resp) if resp.data.len() == count => resp.data.into_iter().map(Ok).collect(),
        Ok(resp) => {
            let e = format!("{} outcomes for {count} writes", resp.data.len());
            vec![Err(ProposeError::Unavailable(e)); count]
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            vec![Err(ProposeError::NotLeader(f)); count]
        }
        Err(e) => vec![
            Err(ProposeError::Unavailable(format!(
                "write not committed: {e}"
            )));
            count
        ],
    };
    for (answer, outcome) in answers.into_iter().zip(outcomes) {
        // A writer that gave up (its request ended) no longer listens.
        let _ = answer.send(outcome);
    }
}

/// Why an entry's writers were answered before it was applied.
enum Abandoned {
    /// This leader has not heard from a majority for longer than its fence.
    CutOff(String),
    /// Another node leads now (or an election is on).
    Deposed(ForwardToLeader<NodeId, BasicNode>),
}

impl Abandoned {
    fn label(&self) -> &'static str {
        match self {
            Abandoned::CutOff(_) => "cut_off",
            Abandoned::Deposed(_) => "deposed",
        }
    }

    fn into_error(self) -> ProposeError {
        match self {
            Abandoned::CutOff(why) => ProposeError::Unavailable(format!(
                "{why}; the write may still commit: retry with the same request id"
            )),
            Abandoned::Deposed(hint) => ProposeError::NotLeader(hint),
        }
    }
}

/// Returns once this node is a leader cut off from its group, or no longer
/// the leader of the term it `led` when the entry was written (never, if
/// Raft stops first: the write then fails on its own). The term matters:
/// the metrics watch keeps only the latest state, so a node deposed and
/// elected again in between looks like a leader throughout.
async fn abandoned(raft: &Raft, fence: &Fence, led: Option<u64>) -> Abandoned {
    let Some(term) = led else {
        return std::future::pending().await;
    };
    let deposed = |m: &RaftMetrics<NodeId, BasicNode>| {
        m.state != ServerState::Leader || m.current_term != term
    };
    let mut metrics = raft.metrics();
    let seen = metrics
        .wait_for(|m| deposed(m) || fence.cut_off_ms(m).is_some())
        .await
        .map(|m| m.clone());
    let Ok(m) = seen else {
        return std::future::pending().await;
    };
    if deposed(&m) {
        return Abandoned::Deposed(forward_hint(&m));
    }
    match fence.refusal(&m, Refused::Write) {
        Some(why) => Abandoned::CutOff(why),
        None => std::future::pending().await,
    }
}

/// Where a node that does not lead sends its writers: the leader it knows
/// of, if any.
pub(crate) fn forward_hint(
    m: &RaftMetrics<NodeId, BasicNode>,
) -> ForwardToLeader<NodeId, BasicNode> {
    let leader_node = m
        .current_leader
        .and_then(|l| m.membership_config.membership().get_node(&l).cloned());
    ForwardToLeader {
        leader_id: m.current_leader,
        leader_node,
    }
}
