//! Raft RPCs between nodes over HTTP+JSON, carrying the cluster-internal
//! secret so that a stray client cannot forge Raft messages.

use std::sync::Arc;
use std::time::Duration;

use cart_common::http::InternalClient;
use cart_common::paths::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::progress::Progress;
use super::{NodeId, TypeConfig};
use crate::metrics::METRICS;

#[derive(Clone)]
pub struct Network {
    client: InternalClient,
    /// Records whether each peer answered, for the leader's report of
    /// followers it cannot reach.
    progress: Arc<Progress>,
}

impl Network {
    pub fn new(secret: &str, progress: Arc<Progress>) -> Self {
        Self {
            // Per-RPC deadlines come from openraft's RPCOption.
            client: InternalClient::new(Duration::from_millis(500), Duration::from_secs(60))
                .with_secret(secret),
            progress,
        }
    }
}

pub struct Connection {
    net: Network,
    target: NodeId,
    addr: String,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self.send(path, req, option).await;
        // A remote Raft error is still an answer: the peer is reachable.
        let answered = !matches!(result, Err(RPCError::Unreachable(_) | RPCError::Network(_)));
        self.net.progress.rpc_result(self.target, answered);
        if !answered {
            METRICS.raft_rpc_failures.with_label_values(&[path]).inc();
        }
        result
    }

    async fn send<Req, Resp, E>(
        &self,
        path: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result = self
            .net
            .client
            .post(&self.addr, path, req)
            .timeout(option.hard_ttl())
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                return Err(if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                });
            }
        };
        if !response.status().is_success() {
            let e = std::io::Error::other(format!("{path} answered {}", response.status()));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let body: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
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
        self.call(APPEND_PATH, &req, &option).await
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
