//! Raft RPCs between nodes over HTTP+JSON, carrying the cluster-internal
//! secret so that a stray client cannot forge Raft messages. Appends are
//! kept small enough to be answered within openraft's timeout
//! (`append_budget`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_common::http::InternalClient;
use cart_common::paths::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use cart_common::shard::Shard;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::append_budget::{AppendBudget, Split};
use super::commit_push::CommitPush;
use super::progress::Progress;
use super::read_lease::ReadLease;
use super::{NodeId, TypeConfig};
use crate::metrics::{GroupMetrics, METRICS};

#[derive(Clone)]
pub struct Network {
    client: InternalClient,
    /// Records whether each peer answered, for the leader's report of
    /// followers it cannot reach.
    progress: Arc<Progress>,
    /// The spec's bound on one encoded append (`raft.max_append_kib`).
    max_append_bytes: usize,
    metrics: GroupMetrics,
    /// Told of every append a follower accepted (`None`: no lease reads).
    lease: Option<Arc<ReadLease>>,
}

impl Network {
    /// The RPCs of `shard`'s group (every shard's group has its own).
    pub fn new(
        secret: &str,
        shard: Shard,
        progress: Arc<Progress>,
        max_append_bytes: usize,
        metrics: GroupMetrics,
        lease: Option<Arc<ReadLease>>,
    ) -> Self {
        Self {
            // Per-RPC deadlines come from openraft's RPCOption.
            client: InternalClient::new(Duration::from_millis(500), Duration::from_secs(60))
                .with_secret(secret)
                .for_shard(shard),
            progress,
            max_append_bytes,
            metrics,
            lease,
        }
    }
}

/// One replication stream's way to one peer (openraft makes one per
/// leader term and target).
pub struct Connection {
    net: Network,
    target: NodeId,
    addr: String,
    budget: AppendBudget,
    commit_push: CommitPush,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Why a peer gave no answer.
enum Failed {
    /// It could not be connected to (down, or restarting).
    Unreachable(reqwest::Error),
    /// It was reached, but the call timed out, broke or was refused.
    Network(NetworkError),
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req).map_err(RPCError::Network)?;
        self.call_encoded(path, body, option).await
    }

    /// Sends an encoded request and records whether the peer answered.
    async fn call_encoded<Resp, E>(
        &self,
        path: &'static str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = match self.send(path, body, option).await {
            Ok(answer) => match serde_json::from_slice(&answer) {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
                Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
            },
            Err(Failed::Unreachable(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(Failed::Network(e)) => Err(RPCError::Network(e)),
        };
        let answered = is_answer(&result);
        self.net.progress.rpc_result(self.target, answered);
        if !answered {
            self.net
                .metrics
                .of_family(&METRICS.raft_rpc_failures, &[path])
                .inc();
        }
        result
    }

    /// Posts `body` to the peer; its answer's body if it answered 2xx.
    async fn send(
        &self,
        path: &'static str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<bytes::Bytes, Failed> {
        let response = self
            .net
            .client
            .request(Method::POST, &self.addr, path)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(option.hard_ttl())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    Failed::Unreachable(e)
                } else {
                    Failed::Network(NetworkError::new(&e))
                }
            })?;
        if !response.status().is_success() {
            let e = std::io::Error::other(format!("{path} answered {}", response.status()));
            return Err(Failed::Network(NetworkError::new(&e)));
        }
        response
            .bytes()
            .await
            .map_err(|e| Failed::Network(NetworkError::new(&e)))
    }

    /// Sends `req`, or refuses it as too large with the number of entries
    /// to send instead (see `append_budget`).
    async fn append(
        &mut self,
        req: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        if self.commit_push.folds(req, Instant::now()) {
            self.net.metrics.commit_pushes_folded.inc();
            return Ok(AppendEntriesResponse::Success);
        }
        let entries = req.entries.len();
        if let Some(fit) = self.budget.before_encoding(entries) {
            return Err(too_large(fit, &self.net.metrics));
        }
        let body = encode(req).map_err(RPCError::Network)?;
        if let Some(fit) = self.budget.after_encoding(entries, body.len()) {
            return Err(too_large(fit, &self.net.metrics));
        }
        // Dropped unanswered when openraft's timeout fires first.
        let sending = self.budget.sending(entries);
        let sent_at = Instant::now();
        let result = self.call_encoded(APPEND_PATH, body, option).await;
        match &result {
            Err(RPCError::Unreachable(_)) => sending.unreached(),
            r if is_answer(r) => sending.answered(),
            _ => {} // timed out or broke: dropped unsettled, it halves the budget
        }
        let success = matches!(result, Ok(AppendEntriesResponse::Success));
        self.commit_push.sent(req, success, sent_at);
        // The follower took this leader's vote as its own, and so started its
        // lease (`read_lease`). A conflict would mean that too; not counted,
        // to lean on nothing but a plain acceptance.
        let accepted = matches!(
            result,
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
        );
        if let (true, Some(lease)) = (accepted, &self.net.lease) {
            let committed = req.leader_commit.map(|c| c.index);
            lease.acknowledged(self.target, &req.vote, sent_at, committed);
        }
        result
    }
}

/// A remote Raft error is still an answer: the peer is reachable.
fn is_answer<T, E: std::error::Error>(result: &RpcResult<T, E>) -> bool {
    !matches!(result, Err(RPCError::Unreachable(_) | RPCError::Network(_)))
}

fn encode<T: Serialize>(req: &T) -> Result<Vec<u8>, NetworkError> {
    serde_json::to_vec(req).map_err(|e| NetworkError::new(&e))
}

/// openraft retries at once with `entries` entries.
fn too_large<E: std::error::Error>(
    (entries, why): (u64, Split),
    metrics: &GroupMetrics,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    metrics
        .of_family(&METRICS.raft_append_splits, &[why.label()])
        .inc();
    tracing::debug!(entries, reason = why.label(), "append split");
    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
            budget: AppendBudget::new(self.max_append_bytes),
            commit_push: CommitPush::default(),
        }
    }
}

type Rpc<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<NodeId>> {
        self.append(&req, &option).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(SNAPSHOT_PATH, &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Rpc<VoteResponse<NodeId>> {
        self.call(VOTE_PATH, &req, &option).await
    }
}
