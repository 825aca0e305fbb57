//! A client of every shard of one service: routes each read and write to
//! the shard of its key (`cart_common::shard`), sends bulk creations and
//! garbage collection to every shard at once, and lets the checkout saga and
//! the admin API name a shard (a step's shard is the one its user or items
//! live on; a check's the one being checked).

use std::sync::Arc;
use std::time::Duration;

use cart_common::shard::{Shard, ShardPart};
use cart_common::{ApiError, ClusterSpec, Service};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::group::{GroupClient, RouteFilter};
use crate::api::CheckoutReply;
use crate::domain::{Command, Outcome, Query, Reply, Routing};
use crate::request_key::RequestKey;

pub struct ServiceClient {
    service: Service,
    /// One per shard, indexed by shard.
    groups: Vec<GroupClient>,
}

impl ServiceClient {
    pub fn new(spec: &ClusterSpec, service: Service) -> Self {
        Self {
            service,
            groups: Shard::all(spec.shards(service))
                .map(|shard| GroupClient::new(spec, service, shard))
                .collect(),
        }
    }

    /// Routes around the nodes `health` marks down (a node is down for
    /// every shard it hosts).
    pub fn with_health(self, health: Arc<dyn RouteFilter>) -> Self {
        Self {
            service: self.service,
            groups: self
                .groups
                .into_iter()
                .map(|g| g.with_health(health.clone()))
                .collect(),
        }
    }

    pub fn service(&self) -> Service {
        self.service
    }

    /// Every shard's client, in shard order.
    pub fn groups(&self) -> &[GroupClient] {
        &self.groups
    }

    /// The shard of this service holding `key`.
    pub fn shard_of(&self, key: &str) -> Shard {
        Shard::of(key, self.groups.len() as u16)
    }

    /// The client of `shard`; 400 when the service has no such shard.
    pub fn group(&self, shard: Shard) -> Result<&GroupClient, ApiError> {
        self.groups.get(shard.index()).ok_or_else(|| {
            ApiError::bad_request(
                "unknown_shard",
                format!(
                    "{} has shards 0..{}, not {shard}",
                    self.service,
                    self.groups.len()
                ),
            )
        })
    }

    /// A call that names no shard: only a single-shard service can take it.
    fn only_group(&self) -> Result<&GroupClient, ApiError> {
        match self.groups.as_slice() {
            [one] => Ok(one),
            _ => Err(ApiError::internal(format!(
                "{} has {} shards: this call must name one",
                self.service,
                self.groups.len()
            ))),
        }
    }

    /// A write at the shard of its key, or at every shard (`Routing`).
    pub async fn write(&self, key: &RequestKey, cmd: Command) -> Result<Outcome, ApiError> {
        match cmd.routing() {
            Routing::Key(k) => self.group(self.shard_of(k))?.write(key, cmd).await,
            Routing::EveryShard => self.write_everywhere(key, cmd).await,
            Routing::Named => self.only_group()?.write(key, cmd).await,
        }
    }

    /// A write at the shard the caller names.
    pub async fn write_to(
        &self,
        shard: Shard,
        key: &RequestKey,
        cmd: Command,
    ) -> Result<Outcome, ApiError> {
        self.group(shard)?.write(key, cmd).await
    }

    /// One write per shard, at once, under the same request id (each group
    /// remembers it on its own, so a retry applies once per shard). A
    /// failure or refusal at any shard is the answer; the coordinator's
    /// retry completes the shards that did not apply.
    async fn write_everywhere(&self, key: &RequestKey, cmd: Command) -> Result<Outcome, ApiError> {
        if let [one] = self.groups.as_slice() {
            return one.write(key, cmd).await;
        }
        let of = self.groups.len() as u16;
        let writes = self.groups.iter().map(|g| {
            let part = ShardPart {
                shard: g.shard(),
                of,
            };
            g.write(key, cmd.clone().for_part(part))
        });
        let outcomes = futures::future::join_all(writes).await;
        let mut created = 0;
        let mut first = None;
        for outcome in outcomes {
            match outcome? {
                Err(refused) => return Ok(Err(refused)),
                Ok(Reply::Initialized { count }) => created += count,
                Ok(reply) => {
                    first.get_or_insert(reply);
                }
            }
        }
        Ok(Ok(first.unwrap_or(Reply::Initialized { count: created })))
    }

    /// A linearizable read at the shard of its key.
    pub async fn read(&self, query: Query) -> Result<Outcome, ApiError> {
        match query.routing() {
            Routing::Key(k) => self.group(self.shard_of(k))?.read(query).await,
            Routing::EveryShard | Routing::Named => self.only_group()?.read(query).await,
        }
    }

    /// A linearizable read at the shard the caller names.
    pub async fn read_at(&self, shard: Shard, query: Query) -> Result<Outcome, ApiError> {
        self.group(shard)?.read(query).await
    }

    /// A checkout at the leader of the order's shard
    /// (`GroupClient::checkout`).
    pub async fn checkout(
        &self,
        key: &RequestKey,
        order_id: &str,
        wait: Duration,
    ) -> Result<CheckoutReply, ApiError> {
        self.group(self.shard_of(order_id))?
            .checkout(key, order_id, wait)
            .await
    }

    /// An admin call to the leader of `shard` (`GroupClient::admin`).
    pub async fn admin<B: Serialize, T: DeserializeOwned>(
        &self,
        shard: Shard,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.group(shard)?.admin(path, body).await
    }
}
