//! A node's member of one shard's Raft group: its storage, proposer,
//! consistency replica and checker, and (order nodes) checkout sagas —
//! opened from the spec, and the methods the node's handlers call. A node
//! process holds one member per shard of its service (`node::shards`). It
//! knows nothing of HTTP routes: the handlers (`node::http`,
//! `consistency::api`, `membership`) import it, never the other way round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use cart_common::shard::Shard;
use cart_common::spec::{NodeId, StorageBackend};
use cart_common::{ClusterSpec, Service};
use openraft::{BasicNode, Config, SnapshotPolicy};

use super::NodeOptions;
use crate::api::{FollowerProgress, NodeStatus};
use crate::consistency::{checker::Checker, replica::Replica, wire::Operation};
use crate::domain::{self, Command, Outcome, Query, StoreError, Table};
use crate::metrics::{GroupMetrics, METRICS};
use crate::raft::handover::{preferred_leader, Handover};
use crate::raft::lease::{Fence, Refused, RestartHold};
use crate::raft::log_store::{NodeLog, LOG_DIR};
use crate::raft::network::Network;
use crate::raft::progress::Progress;
use crate::raft::proposer::{ProposeError, Proposer};
use crate::raft::read_barrier::ReadBarrier;
use crate::raft::read_index::FollowerReads;
use crate::raft::read_lease::ReadLease;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;
use crate::request_key::RequestKey;
use crate::saga::Sagas;
use crate::storage::{self, Backend, Health};

pub(crate) struct Member {
    service: Service,
    id: NodeId,
    shard: Shard,
    addr: String,
    raft: Raft,
    backend: Arc<dyn Backend>,
    health: Arc<Health>,
    dir: PathBuf,
    /// The node's Raft log, which this member's group shares with the
    /// node's other shards.
    log: Arc<NodeLog>,
    replica: Arc<Replica>,
    checker: Arc<Checker>,
    fault_injection: bool,
    admin_token: String,
    proposer: Proposer,
    fence: Fence,
    progress: Arc<Progress>,
    /// The order group's checkout sagas (order nodes only).
    sagas: Option<Arc<Sagas>>,
    /// Linearizable reads served here as leader, their rounds shared.
    reads: Arc<ReadBarrier>,
    /// Leaders spread over the nodes (`raft::handover`).
    handover: Handover,
    /// Reads served here as a follower; `None` when the spec turns them off.
    follower_reads: Option<FollowerReads>,
    /// This shard's series of the node's metrics.
    metrics: GroupMetrics,
    /// What `/status` reports from the storage; from a MongoDB server read
    /// at most every `STORED_SUMMARY_TTL` (coordinators probe several times
    /// a second).
    stored: Mutex<Option<(Instant, StoredSummary)>>,
}

#[derive(Clone, Default)]
struct StoredSummary {
    table_sizes: BTreeMap<String, u64>,
    last_check: Option<cart_common::admin::CheckReport>,
    recent_checks: Vec<cart_common::admin::CheckReport>,
}

const STORED_SUMMARY_TTL: Duration = Duration::from_secs(2);
/// The longest a hurried read waits for the lazy writes it hurried: an
/// entry that cannot commit (no majority) fails the read's round anyway.
const HURRY_WAIT: Duration = Duration::from_secs(1);

impl Member {
    /// Opens the shard's storage, starts this node's member of the shard's
    /// Raft group (forming the group from the spec if it is node 1 of a
    /// pristine one), its proposer, checker and sagas, and the background
    /// tasks that follow them.
    pub(super) async fn open(
        spec: &ClusterSpec,
        service: Service,
        id: NodeId,
        shard: Shard,
        addr: String,
        options: NodeOptions,
        log: Arc<NodeLog>,
    ) -> anyhow::Result<Arc<Member>> {
        let dir = spec.shard_data_dir(service, id, shard);
        // The Raft log always lives in the node's directory; the replicated
        // state in the backend the spec chooses (the embedded store by default).
        let fresh = log.is_empty(shard);
        let health = Arc::new(Health::default());
        let backend = storage::open(spec, service, id, shard, fresh, health.clone()).await?;
        let window_ms = spec.raft.request_id_window_secs.saturating_mul(1000);
        let replica = Arc::new(Replica::default());
        Replica::init_metrics();
        let metrics = GroupMetrics::of(shard);
        let sm = StateMachine::new(
            backend.clone(),
            dir.clone(),
            window_ms,
            id,
            replica.clone(),
            metrics.clone(),
        );
        // Before Raft asks what is applied: the embedded state starts from the
        // last snapshot, and Raft re-applies the log from there.
        sm.restore()?;
        let et = spec.raft.election_timeout_ms;
        // The replicas of a group reach the same entry count together; staggering
        // their thresholds (by up to 40%) keeps their snapshot builds, a full scan
        // each, from landing on the machine at once.
        let snapshot_every =
            spec.raft.snapshot_every + spec.raft.snapshot_every / 10 * ((id - 1) % 5);
        let election_timeout_max = et + et / 2;
        let config = Config {
            cluster_name: format!("{service}/{shard}"),
            heartbeat_interval: spec.raft.heartbeat_ms,
            election_timeout_min: et,
            election_timeout_max,
            // Until the restart hold is known to be over (`allow_campaigns`).
            enable_elect: false,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
            max_in_snapshot_log_to_keep: spec.raft.snapshot_every / 2,
            // A follower further behind than this gets a snapshot instead of
            // entries; past a snapshot's worth it could never catch up by entries.
            replication_lag_threshold: spec.raft.snapshot_every.saturating_mul(2).max(5000),
            // Snapshots of 100k-key tables travel in 1 MiB chunks; the last one
            // also covers installing the whole table on the follower.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: 30_000,
            ..Default::default()
        }
        .validate()?;
        let progress = Arc::new(Progress::default());
        let lease = spec
            .raft
            .lease_reads
            .then(|| Arc::new(ReadLease::new(Duration::from_millis(et))));
        let raft = Raft::new(
            id,
            Arc::new(config),
            Network::new(
                &spec.cluster.internal_secret,
                shard,
                progress.clone(),
                (spec.raft.max_append_kib as usize).saturating_mul(1024),
                metrics.clone(),
                lease.clone(),
            ),
            log.store(shard, progress.clone())?,
            sm.clone(),
        )
        .await?;

        // The shard's preferred leader (`raft::handover`; node 1 for a
        // single shard) forms a pristine group from the spec, and so
        // campaigns first. Once formed, the membership in the log wins over
        // the spec.
        let former = preferred_leader(spec.nodes(service).into_iter().map(|n| n.id), shard);
        let had_state = raft.is_initialized().await?;
        // A node that may have accepted a leader's appends before it
        // restarted holds its votes for as long as it would have refused
        // them then (`raft::lease`, `raft::read_lease`).
        let hold = lease.is_some().then(|| RestartHold {
            until: Instant::now() + Duration::from_millis(election_timeout_max),
            had_state,
        });
        if former == Some(id) && !options.join && !had_state {
            let members: BTreeMap<NodeId, BasicNode> = spec
                .nodes(service)
                .into_iter()
                .map(|n| (n.id, BasicNode { addr: n.addr }))
                .collect();
            tracing::info!(?members, %shard, "initializing new Raft group");
            if let Err(e) = raft.initialize(members).await {
                tracing::warn!(error = %e, "initialize refused");
            }
        }

        let fence = Fence::new(spec.raft.election_timeout_ms, hold, metrics.clone());
        let proposer = Proposer::start(
            raft.clone(),
            sm.clone(),
            fence.clone(),
            metrics.clone(),
            Duration::from_millis(spec.raft.lazy_write_ms),
        );
        let reads = Arc::new(ReadBarrier::new(raft.clone(), id, lease));
        let sagas = (service == Service::Order).then(|| {
            Arc::new(Sagas::new(
                spec,
                id,
                raft.clone(),
                proposer.clone(),
                backend.clone(),
                health.clone(),
                reads.clone(),
            ))
        });
        if let Some(sagas) = &sagas {
            tokio::spawn(sagas.clone().sweep());
        }
        let checker = Arc::new(Checker::new(
            spec,
            service,
            id,
            shard,
            raft.clone(),
            proposer.clone(),
        ));
        tokio::spawn(checker.clone().schedule(progress.clone()));
        let handover = Handover::new(
            spec,
            service,
            shard,
            raft.clone(),
            fence.clone(),
            health.clone(),
            progress.clone(),
        );
        tokio::spawn(handover.clone().run());
        tokio::spawn(export_raft_metrics(
            raft.clone(),
            progress.clone(),
            fence.clone(),
            shard,
        ));
        tokio::spawn(allow_campaigns(
            raft.clone(),
            fence.clone(),
            health.clone(),
            Duration::from_millis(et / 4 * (id % 3)),
        ));
        tokio::spawn(follow_storage_health(
            raft.clone(),
            fence.clone(),
            health.clone(),
        ));
        tokio::spawn(ping_storage(backend.clone()));
        Ok(Arc::new(Member {
            service,
            id,
            shard,
            addr,
            raft,
            backend,
            health,
            dir,
            log,
            replica,
            checker,
            fault_injection: options.fault_injection,
            admin_token: spec.cluster.admin_token.clone(),
            proposer,
            fence,
            progress,
            sagas,
            reads,
            handover,
            follower_reads: FollowerReads::new(spec, shard, metrics.clone()),
            metrics,
            stored: Mutex::new(None),
        }))
    }

    pub(crate) fn service(&self) -> Service {
        self.service
    }

    pub(crate) fn shard(&self) -> Shard {
        self.shard
    }

    /// This node's member of its Raft group (RPCs, membership changes).
    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This replica's consistency digests and repairs.
    pub(crate) fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Linearizable reads at this node as leader (`raft::read_barrier`).
    pub(crate) fn reads(&self) -> &ReadBarrier {
        &self.reads
    }

    /// Leaders spread over the nodes: this member's part.
    pub(crate) fn handover(&self) -> &Handover {
        &self.handover
    }

    /// This shard's series of the node's metrics.
    pub(crate) fn metrics(&self) -> &GroupMetrics {
        &self.metrics
    }

    /// How this node serves reads as a follower; `None`: it does not.
    pub(crate) fn follower_reads(&self) -> Option<&FollowerReads> {
        self.follower_reads.as_ref()
    }

    /// The order group's checkout sagas; `None` on payment and stock nodes.
    pub(crate) fn sagas(&self) -> Option<&Arc<Sagas>> {
        self.sagas.as_ref()
    }

    pub(crate) fn storage_healthy(&self) -> bool {
        self.health.is_healthy()
    }

    /// Returns once the storage is known to fail.
    pub(crate) async fn storage_failing(&self) {
        let _ = self.health.watch().wait_for(|healthy| !healthy).await;
    }

    /// Proposes a write to the group (leader only).
    pub(crate) async fn propose(
        &self,
        key: &RequestKey,
        cmd: Command,
    ) -> Result<Outcome, ProposeError> {
        self.proposer.propose(key, cmd).await
    }

    /// Answers a query from this replica's own state, without consensus.
    pub(crate) fn query_local(&self, query: &Query) -> Result<Outcome, StoreError> {
        self.backend
            .reader()
            .and_then(|view| domain::query(view.as_ref(), query))
    }

    /// Whether `query` reads an order this replica does not hold paid (its
    /// checkout may be undecided at the leader, begun after what this
    /// follower applied): the follower's read round then hurries the
    /// leader's lazy writes, and its read index covers the decision (one
    /// round, not a plain one and then a hurried one).
    pub(crate) fn awaits_decision(&self, query: &Query) -> bool {
        match query {
            Query::FindOrder { order_id } if self.service == Service::Order => {
                crate::saga::decided_read::maybe_undecided(self.backend.as_ref(), order_id)
            }
            _ => false,
        }
    }

    /// Waits, on an order node, until `order_id` has no undecided checkout
    /// here (`saga::decided_read`): before a linearizable read of it. A
    /// follower names its `leader`, whose commit index it asks for again
    /// while it waits.
    pub(crate) async fn wait_for_decision(&self, order_id: &str, leader: Option<&str>) {
        if self.service != Service::Order {
            return;
        }
        // The decision may be a commit waiting for company in the leader's
        // queue (`raft.lazy_write_ms`): a read waits on it, so it goes now.
        let refresh = || async {
            match (&self.follower_reads, leader) {
                (Some(reads), Some(leader)) => {
                    // A failed round only means waiting for the next one.
                    let _ = reads.catch_up(&self.raft, leader, true).await;
                }
                _ => self.hurry_lazy_writes().await,
            }
        };
        crate::saga::decided_read::wait(&self.raft, self.backend.as_ref(), order_id, refresh).await;
    }

    /// Writes the lazy writes waiting in this leader's queue at once;
    /// returns once they are written (or after `HURRY_WAIT`), so a read
    /// index taken next covers them.
    pub(crate) async fn hurry_lazy_writes(&self) {
        self.proposer.hurry(HURRY_WAIT).await;
    }

    /// Why this node, a leader cut off from its group, refuses a read
    /// (`raft::lease`); `None` when it may serve it.
    pub(crate) fn read_refusal(&self) -> Option<String> {
        self.fence
            .refusal(&self.raft.metrics().borrow(), Refused::Read)
    }

    /// This leader's refusal of a vote request that would depose it while a
    /// majority still acknowledges it (`raft::lease`).
    pub(crate) fn refuse_vote(
        &self,
        req: &openraft::raft::VoteRequest<NodeId>,
    ) -> Option<openraft::raft::VoteResponse<NodeId>> {
        self.fence.refuse_vote(&self.raft.metrics().borrow(), req)
    }

    /// Whether this node is a leader cut off from its group.
    pub(crate) fn cut_off(&self) -> bool {
        self.fence
            .cut_off_ms(&self.raft.metrics().borrow())
            .is_some()
    }

    /// The leader this node knows of.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Starts a check, repair or rebuild (leader only); its id.
    pub(crate) fn start_check(&self, op: Operation) -> Result<String, ProposeError> {
        self.checker.start(op)
    }

    /// Whether this node serves the fault-injection hook.
    pub(crate) fn fault_injection(&self) -> bool {
        self.fault_injection
    }

    /// Whether `headers` carry the cluster's admin token.
    pub(crate) fn is_admin(&self, headers: &HeaderMap) -> bool {
        cart_common::http::has_bearer_token(headers, &self.admin_token)
    }

    /// Changes or deletes one stored row directly in this replica's store.
    pub(crate) fn corrupt(
        &self,
        table: Table,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.backend.corrupt(table, key, value)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the Raft member and deletes this node's data (storage backend
    /// and data dir); failures are logged, the wipe goes on.
    pub(crate) async fn wipe(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown before wipe");
        }
        if let Err(e) = self.backend.wipe() {
            tracing::error!(error = %e, "wiping the storage backend");
        }
        if let Err(e) = self.log.reset(self.shard).await {
            tracing::error!(error = %e.0, "wiping the shard's Raft log");
        }
        if let Err(e) = remove_shard_dir(&self.dir, self.shard) {
            tracing::error!(error = %e, "wiping the data dir");
        }
    }

    /// What `/status` reports. May wait on the storage: call it off the
    /// runtime's workers.
    pub(crate) fn status(&self) -> NodeStatus {
        let stored = self.stored_summary();
        let m = self.raft.metrics().borrow().clone();
        let members = m
            .membership_config
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let voters = m.membership_config.membership().voter_ids().collect();
        let replication = m.replication.as_ref().map(|followers| {
            followers
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, matched)| {
                    let matched = matched.as_ref().map(|l| l.index);
                    let lag = self.progress.lag(matched, m.last_log_index);
                    let contact = self.progress.contact(*id);
                    let progress = FollowerProgress {
                        matched,
                        lag_entries: lag.map(|l| l.0),
                        lag_seconds: lag.map(|l| l.1),
                        last_contact_ms_ago: contact.and_then(|c| c.last_ok_ms_ago),
                        failing: contact.is_some_and(|c| c.failing),
                    };
                    (*id, progress)
                })
                .collect()
        });
        NodeStatus {
            service: self.service.to_string(),
            shard: self.shard,
            shards: Vec::new(),
            id: self.id,
            addr: self.addr.clone(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            members,
            voters,
            committed: self.progress.committed(),
            replication,
            saga_recovery: self.sagas.as_ref().and_then(|s| s.last_recovery()),
            last_check: stored.last_check,
            recent_checks: stored.recent_checks,
            table_sizes: stored.table_sizes,
            storage: self.health.status(),
        }
    }

    /// This member's group in brief, for the node's status. May wait on
    /// the storage (its latest check): call it off the runtime's workers.
    pub(crate) fn role(&self) -> cart_common::admin::ShardRole {
        let m = self.raft.metrics().borrow().clone();
        cart_common::admin::ShardRole {
            shard: self.shard,
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
            last_check: self.stored_summary().last_check,
        }
    }

    /// Table sizes and the latest check, as last read from the storage; not
    /// read again while the storage fails (the probe must answer quickly).
    fn stored_summary(&self) -> StoredSummary {
        let Ok(mut cached) = self.stored.lock() else {
            return StoredSummary::default();
        };
        // The embedded store answers these from memory: always read afresh.
        // A server is asked at most every TTL.
        let ttl = match self.backend.kind() {
            StorageBackend::Embedded => Duration::ZERO,
            StorageBackend::Mongodb => STORED_SUMMARY_TTL,
        };
        let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl);
        if fresh || !self.health.is_healthy() {
            return cached.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        }
        // The first failure ends the refresh: the probe must answer quickly.
        let sizes: Result<BTreeMap<String, u64>, _> = Table::ALL
            .into_iter()
            .map(|t| Ok((t.name().to_string(), self.backend.count(t)?)))
            .collect::<Result<_, StoreError>>();
        let Ok(table_sizes) = sizes else {
            return cached.as_ref().map(|(_, s)| s.clone()).unwrap_or_default();
        };
        let (last_check, recent_checks) = checks(self.backend.as_ref());
        let summary = StoredSummary {
            table_sizes,
            last_check,
            recent_checks,
        };
        *cached = Some((Instant::now(), summary.clone()));
        summary
    }
}

/// Deletes a shard's data dir. Shard 0's is the node's own directory,
/// which also holds the other shards' (`shard-k`), the node's shard count
/// and the node's Raft log (reset for the shard instead): those stay.
fn remove_shard_dir(dir: &Path, shard: Shard) -> std::io::Result<()> {
    if shard.0 != 0 {
        return std::fs::remove_dir_all(dir);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("shard-") || name == super::shards::SHARDS_FILE || name == LOG_DIR {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The latest check report, and the reports of the last minute.
fn checks(
    backend: &dyn Backend,
) -> (
    Option<cart_common::admin::CheckReport>,
    Vec<cart_common::admin::CheckReport>,
) {
    let Ok(view) = backend.reader() else {
        return (None, Vec::new());
    };
    let latest = match domain::query(view.as_ref(), &Query::LatestCheck) {
        Ok(Ok(domain::Reply::Check { report })) => report,
        _ => None,
    };
    let since = crate::raft::now_ms().saturating_sub(domain::checks::RECENT_CHECKS_WITHIN_MS);
    let recent = domain::checks::recent(view.as_ref(), since, domain::checks::RECENT_CHECKS)
        .unwrap_or_default();
    (latest, recent)
}

async fn export_raft_metrics(raft: Raft, progress: Arc<Progress>, fence: Fence, shard: Shard) {
    let label = shard.to_string();
    let shard_gauge = |g: &prometheus::IntGaugeVec| g.with_label_values(&[label.as_str()]);
    let mut rx = raft.metrics();
    loop {
        {
            let m = rx.borrow_and_update();
            let dead = match &m.running_state {
                Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
                Err(fatal) => Some(fatal),
            };
            if let Some(fatal) = dead {
                // A dead Raft core cannot recover in place: exit, so the node
                // is seen down and its supervisor restarts it from its log.
                tracing::error!(error = %fatal, "raft core stopped; exiting");
                std::process::exit(70);
            }
            shard_gauge(&METRICS.term).set(m.current_term as i64);
            shard_gauge(&METRICS.committed).set(progress.committed().map_or(0, |c| c as i64));
            shard_gauge(&METRICS.last_applied).set(m.last_applied.map_or(0, |l| l.index as i64));
            shard_gauge(&METRICS.last_log_index).set(m.last_log_index.unwrap_or(0) as i64);
            shard_gauge(&METRICS.is_leader).set(i64::from(m.current_leader == Some(m.id)));
            shard_gauge(&METRICS.leader_cut_off).set(i64::from(fence.cut_off_ms(&m).is_some()));
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Pings the storage every second: an idle node notices a failing storage
/// (and its recovery) without waiting for a write.
async fn ping_storage(backend: Arc<dyn Backend>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = backend.clone();
        // The result goes to the node's health; nothing else to do here.
        let _ = tokio::task::spawn_blocking(move || b.ping()).await;
    }
}

/// Lets the node campaign once its restart hold (if any) is over: it
/// starts with elections off (`Config::enable_elect`). The replicas of a
/// group restarted together would all campaign the moment their holds end
/// (openraft campaigns at once after a restart) and split the vote; each
/// waits `stagger` more, by its id.
async fn allow_campaigns(raft: Raft, fence: Fence, health: Arc<Health>, stagger: Duration) {
    if let Some(until) = fence.held_until() {
        tokio::time::sleep_until((until + stagger).into()).await;
    }
    raft.runtime_config()
        .elect(fence.may_campaign(health.is_healthy()));
}

/// While its storage fails a node neither campaigns nor sends heartbeats:
/// as leader it could not apply, so its followers elect another leader.
async fn follow_storage_health(raft: Raft, fence: Fence, health: Arc<Health>) {
    let mut watch = health.watch();
    while watch.changed().await.is_ok() {
        let healthy = *watch.borrow_and_update();
        tracing::warn!(
            healthy,
            "storage health changed; elections and heartbeats follow it"
        );
        raft.runtime_config().heartbeat(healthy);
        raft.runtime_config().elect(fence.may_campaign(healthy));
    }
}
