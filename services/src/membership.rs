//! Membership changes on the leader: add a node (as a learner, wait until it
//! has caught up, then promote it to voter) and remove one. Both go through
//! openraft's joint consensus, so the group keeps a majority throughout, and
//! both are idempotent: adding a voter or removing a non-member is answered
//! with the current membership.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use cart_common::admin::{AddNode, MembershipChanged};
use cart_common::ApiError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};

use crate::api::RemoveMember;
use crate::metrics::METRICS;
use crate::node::http::not_leader;
use crate::node::shards::ShardMember;
use crate::node::state::Member;
use crate::raft::{NodeId, Raft};

/// How long a new learner may take to catch up before it is promoted. A
/// 100k-key snapshot installs in seconds; this leaves room for much more.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(100);

type Metrics = RaftMetrics<NodeId, BasicNode>;

pub(crate) async fn add(ShardMember(n): ShardMember, Json(req): Json<AddNode>) -> Response {
    let Some(addr) = req.addr.filter(|a| !a.is_empty()) else {
        return ApiError::bad_request("missing_addr", "the node's address is required")
            .into_response();
    };
    let result = add_voter(n.raft(), req.id, addr).await;
    finish("add", &n, result)
}

pub(crate) async fn remove(ShardMember(n): ShardMember, Json(req): Json<RemoveMember>) -> Response {
    let result = remove_member(n.raft(), req.id).await;
    finish("remove", &n, result)
}

pub(crate) enum Failure {
    Raft(RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>),
    Refused(ApiError),
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>> for Failure {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Self {
        Failure::Raft(e)
    }
}

/// (log index of the membership entry, whether anything changed)
pub(crate) type Changed = (u64, bool);

fn finish(change: &str, n: &Member, result: Result<Changed, Failure>) -> Response {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Failure::Raft(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            "not_leader"
        }
        Err(_) => "failed",
    };
    n.metrics()
        .of_family(&METRICS.membership_changes, &[change, outcome])
        .inc();
    match result {
        Ok((log_index, did)) => Json(changed(n, log_index, did)).into_response(),
        Err(Failure::Refused(e)) => e.into_response(),
        Err(Failure::Raft(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            not_leader(f)
        }
        Err(Failure::Raft(e)) => {
            tracing::warn!(change, error = %e, "membership change failed");
            ApiError::unavailable(format!("membership change failed: {e}")).into_response()
        }
    }
}

fn changed(n: &Member, log_index: u64, did: bool) -> MembershipChanged {
    let m = n.raft().metrics().borrow().clone();
    let membership = m.membership_config.membership();
    MembershipChanged {
        service: n.service().to_string(),
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        log_index,
        changed: did,
    }
}

fn current(raft: &Raft) -> (BTreeSet<NodeId>, BTreeSet<NodeId>, u64) {
    let m = raft.metrics().borrow().clone();
    let log_index = m.membership_config.log_id().map_or(0, |l| l.index);
    let membership = m.membership_config.membership();
    (
        membership.voter_ids().collect(),
        membership.learner_ids().collect(),
        log_index,
    )
}

pub(crate) async fn add_voter(raft: &Raft, id: NodeId, addr: String) -> Result<Changed, Failure> {
    let (voters, _, log_index) = current(raft);
    if voters.contains(&id) {
        return Ok((log_index, false));
    }
    tracing::info!(id, %addr, "adding node as learner");
    let added = raft.add_learner(id, BasicNode { addr }, false).await?;
    // Promote only once the learner holds the log up to its own addition:
    // a voter that is far behind would stall commits.
    let wait = raft
        .wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| caught_up(m, id, added.log_id.index),
            "new learner catches up",
        )
        .await;
    if let Err(e) = wait {
        return Err(Failure::Refused(ApiError::unavailable(format!(
            "node {id} did not catch up within {CATCH_UP_TIMEOUT:?} ({e}); it stays a learner"
        ))));
    }
    tracing::info!(id, "promoting caught-up learner to voter");
    let promoted = raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await?;
    Ok((promoted.log_id.index, true))
}

fn caught_up(m: &Metrics, id: NodeId, upto: u64) -> bool {
    // No longer leader: stop waiting; the promotion will answer "not leader".
    let Some(replication) = &m.replication else {
        return true;
    };
    replication
        .get(&id)
        .and_then(|matched| matched.as_ref())
        .is_some_and(|l| l.index >= upto)
}

pub(crate) async fn remove_member(raft: &Raft, id: NodeId) -> Result<Changed, Failure> {
    let (voters, learners, log_index) = current(raft);
    let change = if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(Failure::Refused(ApiError::bad_request(
                "last_voter",
                format!("node {id} is the group's only voter"),
            )));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if learners.contains(&id) {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        return Ok((log_index, false));
    };
    tracing::info!(id, "removing node from the group");
    let removed = raft.change_membership(change, false).await?;
    Ok((removed.log_id.index, true))
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Raft(e) => write!(f, "{e}"),
            Failure::Refused(e) => write!(f, "{e}"),
        }
    }
}
