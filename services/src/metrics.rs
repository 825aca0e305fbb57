//! Node metrics, declared once through the common helper. A node process
//! hosts one Raft group per shard of its service: the series of one
//! group's work carry its `shard` label (bound once per member in
//! `GroupMetrics`), and the node's shared resources (its one log, its HTTP
//! server) do not.

use std::sync::LazyLock;

use cart_common::metrics::{
    counter, counter_vec, gauge, gauge_vec, histogram, histogram_vec, precreate, Label,
    LATENCY_BUCKETS,
};
use cart_common::paths::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use cart_common::shard::Shard;
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

/// The label of a series of one shard's group.
const SHARD: &[&str] = &["shard"];

pub struct NodeMetrics {
    pub applied_entries: IntCounterVec,
    pub applied_writes: IntCounterVec,
    pub duplicate_requests: IntCounterVec,
    pub request_id_conflicts: IntCounterVec,
    pub proposals_refused: IntCounterVec,
    pub snapshots_built: IntCounterVec,
    pub snapshots_installed: IntCounterVec,
    pub raft_rpc_failures: IntCounterVec,
    pub raft_append_splits: IntCounterVec,
    pub raft_commit_pushes_folded: IntCounterVec,
    pub term: IntGaugeVec,
    pub last_applied: IntGaugeVec,
    pub committed: IntGaugeVec,
    pub membership_changes: IntCounterVec,
    pub last_log_index: IntGaugeVec,
    pub is_leader: IntGaugeVec,
    pub leader_cut_off: IntGaugeVec,
    pub cut_off_refusals: IntCounterVec,
    pub entries_abandoned: IntCounterVec,
    pub votes_refused: IntCounterVec,
    pub votes_held: IntCounterVec,
    pub log_flush_seconds: Histogram,
    pub log_flush_entries: Histogram,
    pub log_buffered_writes: IntCounter,
    pub log_resident_bytes: IntGauge,
    pub log_entries_evicted: IntCounter,
    pub log_disk_reads: IntCounter,
    pub proposal_batch_writes: HistogramVec,
    pub proposal_queue: IntGaugeVec,
    pub proposals_in_flight: IntGaugeVec,
    pub write_seconds: HistogramVec,
    pub follower_reads: IntCounterVec,
    pub follower_read_seconds: HistogramVec,
    pub lazy_write_wait: HistogramVec,
    pub hurry_wait: HistogramVec,
}

pub static METRICS: LazyLock<NodeMetrics> =
    LazyLock::new(|| {
        NodeMetrics {
    applied_entries: counter_vec(
        "raft_applied_entries_total",
        "Log entries applied to this replica's state machine.",
        SHARD,
    ),
    applied_writes: counter_vec(
        "raft_applied_writes_total",
        "Client writes applied to this replica's state machine (an entry may carry several).",
        SHARD,
    ),
    duplicate_requests: counter_vec(
        "raft_duplicate_requests_total",
        "Writes whose request id was already applied; answered from memory, not applied again.",
        SHARD,
    ),
    request_id_conflicts: counter_vec(
        "raft_request_id_conflicts_total",
        "Writes refused because their request id was already used for another operation \
         (409 request_id_conflict); nothing applied.",
        SHARD,
    ),
    proposals_refused: counter_vec(
        "raft_proposals_refused_total",
        "Writes refused with 429 because the leader's queue of writes waiting for an entry was \
         full.",
        SHARD,
    ),
    snapshots_built: counter_vec(
        "raft_snapshots_built_total",
        "Snapshots this replica built (each lets the log before it be purged).",
        SHARD,
    ),
    snapshots_installed: counter_vec(
        "raft_snapshots_installed_total",
        "Snapshots this replica received from a leader and installed.",
        SHARD,
    ),
    raft_rpc_failures: counter_vec(
        "raft_rpc_failures_total",
        "Raft RPCs to a peer that failed (unreachable, timeout, bad status), by RPC path.",
        &["shard", "rpc"],
    ),
    raft_commit_pushes_folded: counter_vec(
        "raft_commit_pushes_folded_total",
        "Commit-index pushes to a follower answered by the leader's replication stream without \
         an RPC, because they followed an append the follower had just acknowledged; the index \
         rides with the next append or heartbeat.",
        SHARD,
    ),
    raft_append_splits: counter_vec(
        "raft_append_splits_total",
        "AppendEntries to a follower sent in smaller pieces, by reason: bytes (larger than \
         raft.max_append_kib encoded), unanswered (an earlier append to it got no answer in time).",
        &["shard", "reason"],
    ),
    term: gauge_vec("raft_term", "Current Raft term of this node.", &["shard"]),
    last_applied: gauge_vec(
        "raft_last_applied_index",
        "Index of the last log entry applied on this node.", &["shard"]),
    committed: gauge_vec(
        "raft_committed_index",
        "Highest log index this node knows to be committed.", &["shard"]),
    membership_changes: counter_vec(
        "raft_membership_changes_total",
        "Membership changes asked of this node, by change (add, remove) and result \
         (ok, not_leader, failed).",
        &["shard", "change", "result"],
    ),
    last_log_index: gauge_vec(
        "raft_last_log_index",
        "Index of the last log entry stored on this node.", &["shard"]),
    is_leader: gauge_vec(
        "raft_is_leader",
        "1 while this node leads the shard's group, else 0.", &["shard"]),
    leader_cut_off: gauge_vec(
        "raft_leader_cut_off",
        "1 while this node is leader but no majority of its group has acknowledged it for twice \
         the election timeout (it refuses writes and reads meanwhile), else 0.", &["shard"]),
    votes_refused: counter_vec(
        "raft_votes_refused_total",
        "Higher-term vote requests this leader refused while a majority still acknowledged it \
         (a candidate that cannot hear it, e.g. behind a one-way partition).",
        SHARD,
    ),
    votes_held: counter_vec(
        "raft_votes_held_total",
        "Vote requests this node refused in its restart hold: for the election timeout's upper \
         bound after it starts it neither votes nor campaigns (its leader's read lease may still \
         count on it); a node with no Raft state still grants term 1.",
        SHARD,
    ),
    cut_off_refusals: counter_vec(
        "raft_cut_off_refusals_total",
        "Writes and reads a leader cut off from its group refused with 503, by kind (write, read).",
        &["shard", "kind"],
    ),
    entries_abandoned: counter_vec(
        "raft_entries_abandoned_total",
        "Entries whose writers were answered before the entry was applied, by reason: cut_off \
         (503, the leader lost its majority) or deposed (421, another node leads); a retry under \
         the same request id finds the write if it committed.",
        &["shard", "reason"],
    ),
    log_flush_seconds: histogram(
        "raft_log_flush_duration_seconds",
        "Time to commit one group of queued Raft log writes (appends, vote, truncate, purge) \
         with fsync.",
        LATENCY_BUCKETS,
    ),
    log_flush_entries: histogram(
        "raft_log_flush_entries",
        "Log entries written by one group commit: how many appends shared one fsync.",
        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
    ),
    log_buffered_writes: counter(
        "raft_log_buffered_writes_total",
        "Raft log writes left in the page cache without an fsync of their own because nobody \
         waited on them (commit-index records); the next group commit makes them durable.",
    ),
    log_resident_bytes: gauge(
        "raft_log_resident_bytes",
        "Encoded bytes of the Raft log entries held in memory (the newest; older ones are read \
         from the segment files).",
    ),
    log_entries_evicted: counter(
        "raft_log_entries_evicted_total",
        "Raft log entries dropped from memory once on disk, to keep the resident bytes bounded.",
    ),
    log_disk_reads: counter(
        "raft_log_disk_reads_total",
        "Raft log entries read back from the segment files (for a follower behind, or a replay \
         after a restart) because they were no longer in memory.",
    ),
    proposal_queue: gauge_vec(
        "raft_proposal_queue_writes",
        "Writes waiting in the leader's queue for the next Raft entry (refused with 429 beyond \
         10000): a queue that stays long is a leader that cannot keep up.",
        SHARD,
    ),
    proposals_in_flight: gauge_vec(
        "raft_proposals_in_flight",
        "Entries of batched writes the leader handed to Raft and has not yet seen applied (at \
         most 1: see raft/proposer.rs).",
        SHARD,
    ),
    write_seconds: histogram_vec(
        "raft_write_duration_seconds",
        "Time of one write on the leader, from joining the queue to its applied outcome (queue \
         wait, append, replication to a majority, fsync, apply); remembered request ids are not \
         counted.",
        SHARD,
        LATENCY_BUCKETS,
    ),
    proposal_batch_writes: histogram_vec(
        "raft_proposal_batch_writes",
        "Client writes the leader put into one Raft entry (concurrent writes share an entry).",
        SHARD,
        &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 256.0],
    ),
    follower_reads: counter_vec(
        "raft_follower_reads_total",
        "Reads this replica took as a follower (raft.follower_reads), by how they ended: served \
         after catching up with the leader's read index, not_leader (421 with the leader's hint), \
         unavailable (the leader could not be asked or confirm itself), behind (not applied that \
         far within the election timeout; 503).",
        &["shard", "outcome"],
    ),
    lazy_write_wait: histogram_vec(
        "raft_lazy_write_wait_seconds",
        "Time a lazy write (a checkout's commit, its client answered) waited in the leader's \
         queue for another write to share its entry (raft.lazy_write_ms), by how the wait \
         ended: joined (it shares the next entry), alone (none came in time) or hurried (a read \
         of its order waits on it).",
        &["shard", "outcome"],
        LATENCY_BUCKETS,
    ),
    hurry_wait: histogram_vec(
        "raft_hurry_wait_seconds",
        "Time a read that hurried the lazy writes (one of its order's checkout's commit) waited \
         at the leader for their entry to be written, before its read index (at most 1 s).",
        SHARD,
        LATENCY_BUCKETS,
    ),
    follower_read_seconds: histogram_vec(
        "raft_follower_read_wait_seconds",
        "Time a follower read waits before its query: the read-index round with the leader and \
         the wait until this replica has applied that index.",
        SHARD,
        LATENCY_BUCKETS,
    ),
}
    });

/// One shard's group's series on this node: the families of `METRICS`
/// that carry a `shard` label, with this shard's bound (the hot ones), and
/// the label itself for the families labelled further.
#[derive(Clone)]
pub struct GroupMetrics {
    /// The `shard` label's value.
    pub shard: String,
    pub applied_entries: IntCounter,
    pub applied_writes: IntCounter,
    pub duplicate_requests: IntCounter,
    pub request_id_conflicts: IntCounter,
    pub proposals_refused: IntCounter,
    pub snapshots_built: IntCounter,
    pub snapshots_installed: IntCounter,
    pub commit_pushes_folded: IntCounter,
    pub votes_refused: IntCounter,
    pub votes_held: IntCounter,
    pub proposal_queue: IntGauge,
    pub proposals_in_flight: IntGauge,
    pub write_seconds: Histogram,
    pub proposal_batch_writes: Histogram,
    pub follower_read_seconds: Histogram,
    pub hurry_wait: Histogram,
}

impl GroupMetrics {
    /// `shard`'s series, its alerting ones created at 0.
    pub fn of(shard: Shard) -> Self {
        let label = shard.to_string();
        let m = &*METRICS;
        let one = [label.as_str()];
        let group = Self {
            applied_entries: m.applied_entries.with_label_values(&one),
            applied_writes: m.applied_writes.with_label_values(&one),
            duplicate_requests: m.duplicate_requests.with_label_values(&one),
            request_id_conflicts: m.request_id_conflicts.with_label_values(&one),
            proposals_refused: m.proposals_refused.with_label_values(&one),
            snapshots_built: m.snapshots_built.with_label_values(&one),
            snapshots_installed: m.snapshots_installed.with_label_values(&one),
            commit_pushes_folded: m.raft_commit_pushes_folded.with_label_values(&one),
            votes_refused: m.votes_refused.with_label_values(&one),
            votes_held: m.votes_held.with_label_values(&one),
            proposal_queue: m.proposal_queue.with_label_values(&one),
            proposals_in_flight: m.proposals_in_flight.with_label_values(&one),
            write_seconds: m.write_seconds.with_label_values(&one),
            proposal_batch_writes: m.proposal_batch_writes.with_label_values(&one),
            follower_read_seconds: m.follower_read_seconds.with_label_values(&one),
            hurry_wait: m.hurry_wait.with_label_values(&one),
            shard: label,
        };
        group.init_series();
        group
    }

    /// The series of `family` for this shard and the further `labels`.
    pub fn of_family(&self, family: &IntCounterVec, labels: &[&str]) -> IntCounter {
        let mut all = Vec::with_capacity(1 + labels.len());
        all.push(self.shard.as_str());
        all.extend_from_slice(labels);
        family.with_label_values(&all)
    }

    /// Series operators alert on exist at 0 from start-up.
    fn init_series(&self) {
        let s = self.shard.as_str();
        precreate(
            &METRICS.raft_rpc_failures,
            [[s, APPEND_PATH], [s, VOTE_PATH], [s, SNAPSHOT_PATH]],
        );
        precreate(
            &METRICS.raft_append_splits,
            [[s, "bytes"], [s, "unanswered"]],
        );
        precreate(&METRICS.entries_abandoned, [[s, "cut_off"], [s, "deposed"]]);
        precreate(
            &METRICS.cut_off_refusals,
            crate::raft::lease::Refused::all().map(|k| [s, k.as_str()]),
        );
        precreate(
            &METRICS.membership_changes,
            ["add", "remove"].into_iter().flat_map(|change| {
                ["ok", "not_leader", "failed"].map(|result| [s, change, result])
            }),
        );
    }
}
