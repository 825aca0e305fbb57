//! Leaders spread over the nodes. A service with several shards prefers, for
//! shard `s`, the `(s mod n)`-th of the shard's `n` voters in id order as
//! its leader: with as many shards as nodes, each node leads one, and the
//! leaders' work is spread rather than piled on one node.
//!
//! At start the preferred node forms the pristine group (`Member::open`),
//! so it campaigns first and leads. Afterwards, a leader that is not its
//! shard's preferred one (it won an election while the preferred node was
//! down) hands the leadership over once the preferred node is back: a
//! voter that holds the whole log and answers. openraft 0.9 has no
//! leadership transfer, so the leader makes the election happen:
//!
//! 1. it stops heartbeats and refuses writes and reads, and no longer
//!    refuses votes (`lease::Fence`), so its followers' leases (the longest
//!    election timeout) run out with nothing new in the log;
//! 2. it asks every follower (`HANDOVER_PATH`): the preferred node campaigns
//!    once the leases have run out; the others hold their own campaigns
//!    meanwhile, so that the preferred node's wins (its log is as long as
//!    any, and nobody else asks for votes);
//! 3. as soon as it sees another leader, or after a bound, it resumes
//!    (heartbeats back on, fence down).
//!
//! The shard takes no writes for about one lease (1.5 s by default); this
//! happens once per return of a node, never under a single-shard spec
//! (its one leader is wherever the elections put it, as before).

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use cart_common::http::InternalClient;
use cart_common::metrics::{counter_vec, precreate};
use cart_common::paths::HANDOVER_PATH;
use cart_common::shard::Shard;
use cart_common::ClusterSpec;
use openraft::ServerState;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::lease::Fence;
use super::progress::Progress;
use super::{NodeId, Raft};
use crate::storage::Health;

/// How often a leader looks at whether to hand over.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A leader leads this long before it hands over (no ping-pong right
/// after an election, and the returned node has time to catch up).
const HOLD: Duration = Duration::from_secs(5);
/// After a handover that did not move the leadership, the next try waits.
const RETRY_AFTER: Duration = Duration::from_secs(20);
/// The preferred node answered the leader within this.
const IN_TOUCH: Duration = Duration::from_secs(1);

struct HandoverMetrics {
    handovers: IntCounterVec,
}

static METRICS: LazyLock<HandoverMetrics> = LazyLock::new(|| HandoverMetrics {
    handovers: counter_vec(
        "raft_leader_handovers_total",
        "Leaderships this node handed to its shard's preferred leader (leaders spread over the \
         nodes, raft/handover.rs), by shard and result: done (another node leads), failed (no \
         new leader within the bound; this node led on).",
        &["shard", "result"],
    ),
});

/// The preferred leader of `shard` among `voters`.
pub fn preferred_leader(voters: impl IntoIterator<Item = NodeId>, shard: Shard) -> Option<NodeId> {
    let mut voters: Vec<NodeId> = voters.into_iter().collect();
    voters.sort_unstable();
    voters.dedup();
    let n = voters.len();
    (n > 0).then(|| voters[shard.index() % n])
}

/// What a leader asks its followers in a handover.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandoverRequest {
    /// The node that campaigns.
    pub to: NodeId,
    /// How long the leader's lease lasts at its followers: the node `to`
    /// campaigns after it, the others hold their campaigns that long and
    /// as long again.
    pub lease_ms: u64,
}

/// One shard's member's side of leaders spreading.
#[derive(Clone)]
pub struct Handover {
    id: NodeId,
    shard: Shard,
    raft: Raft,
    fence: Fence,
    health: Arc<Health>,
    progress: Arc<Progress>,
    client: InternalClient,
    /// The followers' lease: openraft's is the longest election timeout.
    lease: Duration,
    /// Whether the service has several shards (else leaders stay put).
    spread: bool,
}

impl Handover {
    pub fn new(
        spec: &ClusterSpec,
        service: cart_common::Service,
        shard: Shard,
        raft: Raft,
        fence: Fence,
        health: Arc<Health>,
        progress: Arc<Progress>,
    ) -> Self {
        let et = spec.raft.election_timeout_ms;
        let label = shard.to_string();
        precreate(
            &METRICS.handovers,
            ["done", "failed"].map(|r| [label.as_str(), r]),
        );
        // This node's id, as its Raft member knows it.
        let id = raft.metrics().borrow().id;
        Self {
            id,
            shard,
            raft,
            fence,
            health,
            progress,
            client: InternalClient::for_cluster(spec, Duration::from_millis(et)).for_shard(shard),
            lease: Duration::from_millis(et + et / 2),
            spread: spec.shards(service) > 1,
        }
    }

    /// As leader, hands the leadership to the shard's preferred node when
    /// that is due. Runs for the node's life.
    pub async fn run(self) {
        if !self.spread {
            return;
        }
        let mut led_since: Option<(u64, Instant)> = None;
        let mut next_try = Instant::now();
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let Some(target) = self.due(&mut led_since) else {
                continue;
            };
            if Instant::now() < next_try {
                continue;
            }
            let span = tracing::info_span!("raft.handover", shard = %self.shard, to = target.0);
            let moved = self.hand_over(target).instrument(span).await;
            let result = if moved { "done" } else { "failed" };
            METRICS
                .handovers
                .with_label_values(&[self.shard.to_string().as_str(), result])
                .inc();
            if !moved {
                next_try = Instant::now() + RETRY_AFTER;
            }
        }
    }

    /// The preferred node and its address, when this node leads, has led
    /// for `HOLD`, and the preferred node is another voter holding the
    /// whole log and in touch.
    fn due(&self, led_since: &mut Option<(u64, Instant)>) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
            *led_since = None;
            return None;
        }
        let since = match *led_since {
            Some((term, at)) if term == m.current_term => at,
            _ => {
                *led_since = Some((m.current_term, Instant::now()));
                return None;
            }
        };
        if since.elapsed() < HOLD || !self.health.is_healthy() {
            return None;
        }
        let membership = m.membership_config.membership();
        let to = preferred_leader(membership.voter_ids(), self.shard)?;
        if to == self.id {
            return None;
        }
        let matched = m.replication.as_ref()?.get(&to)?.as_ref()?.index;
        let in_touch = self.progress.contact(to).is_some_and(|c| {
            !c.failing
                && c.last_ok_ms_ago
                    .is_some_and(|ms| u128::from(ms) < IN_TOUCH.as_millis())
        });
        let addr = m.membership_config.nodes().find(|(id, _)| **id == to)?.1;
        (Some(matched) == m.last_log_index && in_touch).then(|| (to, addr.addr.clone()))
    }

    /// Hands over to `to`; whether another node leads afterwards.
    async fn hand_over(&self, (to, to_addr): (NodeId, String)) -> bool {
        tracing::info!(shard = %self.shard, to, "handing the leadership to the shard's preferred node");
        self.fence.set_handing_over(true);
        self.raft.runtime_config().heartbeat(false);
        let request = HandoverRequest {
            to,
            lease_ms: self.lease.as_millis() as u64,
        };
        let followers: Vec<String> = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(_, n)| n.addr.clone())
                .collect()
        };
        let asks = followers.iter().map(|addr| {
            let request = &request;
            let to_addr = &to_addr;
            async move {
                let asked = self
                    .client
                    .post(addr, HANDOVER_PATH, request)
                    .send()
                    .await
                    .map(|r| r.status().is_success());
                if !matches!(asked, Ok(true)) {
                    tracing::warn!(%addr, ?asked, "a follower did not take the handover");
                }
                asked.unwrap_or(false) || addr != to_addr
            }
        });
        let preferred_asked = futures::future::join_all(asks)
            .await
            .into_iter()
            .all(|ok| ok);
        let moved = preferred_asked && self.wait_for_another_leader(self.lease * 3).await;
        self.raft
            .runtime_config()
            .heartbeat(self.health.is_healthy());
        self.fence.set_handing_over(false);
        if !moved {
            tracing::warn!(shard = %self.shard, to, "handover did not move the leadership; leading on");
        }
        moved
    }

    async fn wait_for_another_leader(&self, bound: Duration) -> bool {
        let mut metrics = self.raft.metrics();
        let id = self.id;
        let moved = tokio::time::timeout(
            bound,
            metrics.wait_for(|m| {
                m.state != ServerState::Leader || m.current_leader.is_some_and(|l| l != id)
            }),
        )
        .await;
        matches!(moved, Ok(Ok(_)))
    }

    /// A follower's part, asked by its leader: the preferred node campaigns
    /// once the leader's lease has run out here; any other holds its own
    /// campaigns for twice that, so that the preferred node's wins.
    pub fn follow(&self, request: HandoverRequest) {
        let me = self.clone();
        let lease = Duration::from_millis(request.lease_ms);
        tokio::spawn(async move {
            if request.to == me.id {
                tokio::time::sleep(lease + Duration::from_millis(200)).await;
                if me.fence.may_campaign(me.health.is_healthy())
                    && me.raft.metrics().borrow().state != ServerState::Leader
                {
                    tracing::info!(shard = %me.shard, "campaigning: the leader hands its leadership here");
                    if let Err(e) = me.raft.trigger().elect().await {
                        tracing::warn!(error = %e, "cannot campaign");
                    }
                }
            } else {
                me.raft.runtime_config().elect(false);
                tokio::time::sleep(lease * 2).await;
                me.raft
                    .runtime_config()
                    .elect(me.fence.may_campaign(me.health.is_healthy()));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_of_as_many_shards_as_nodes_prefers_another_node() {
        let voters = [3, 1, 2];
        let preferred: Vec<_> = (0..3)
            .map(|s| preferred_leader(voters, Shard(s)).unwrap())
            .collect();
        assert_eq!(preferred, vec![1, 2, 3]);
        assert_eq!(preferred_leader([1, 2, 3], Shard(4)), Some(2));
        assert_eq!(preferred_leader([5], Shard(2)), Some(5));
        assert_eq!(preferred_leader([], Shard(0)), None);
    }
}
