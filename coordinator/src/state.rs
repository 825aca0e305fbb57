//! A coordinator's state: its service, the spec, the client of its own
//! Raft group and of the services it calls, its node-down protocol and its
//! event log — and the methods its handlers (`routes`, `checkout`, `admin`,
//! `server`) reach them through. It imports no handler.

use std::collections::HashMap;
use std::sync::Arc;

use cart_common::http::InternalClient;
use cart_common::{ApiError, ClusterSpec, Service};
use cart_services::client::{PeerService, ServiceClient};

use crate::events::EventLog;
use crate::health::Health;

pub struct Coordinator {
    service: Service,
    spec: ClusterSpec,
    /// This coordinator's admin address (it counts itself as reachable).
    admin_addr: String,
    /// This service's own Raft groups, one per shard.
    own: ServiceClient,
    /// The other services this one calls.
    peers: HashMap<Service, PeerService>,
    health: Arc<Health>,
    events: Arc<EventLog>,
    /// For admin calls forwarded to other coordinators.
    admin_client: InternalClient,
}

impl Coordinator {
    pub fn new(spec: &ClusterSpec, service: Service, index: u16) -> Self {
        let name = format!("{service}-coordinator-{index}");
        let events = Arc::new(EventLog::new(name, spec.health.events_kept));
        let health = Arc::new(Health::new(spec, service, events.clone()));
        let peers = match service {
            Service::Order => [Service::Payment, Service::Stock]
                .into_iter()
                .map(|s| (s, PeerService::new(spec, s)))
                .collect(),
            _ => HashMap::new(),
        };
        Self {
            service,
            spec: spec.clone(),
            admin_addr: spec
                .coordinator(service, index)
                .map(|c| c.admin)
                .unwrap_or_default(),
            own: ServiceClient::new(spec, service).with_health(health.clone()),
            peers,
            health,
            events,
            admin_client: InternalClient::new(
                std::time::Duration::from_millis(spec.limits.connect_timeout_ms),
                std::time::Duration::from_millis(spec.limits.bulk_timeout_ms),
            ),
        }
    }

    /// The service this coordinator fronts.
    pub fn service(&self) -> Service {
        self.service
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// This coordinator's admin address.
    pub fn admin_addr(&self) -> &str {
        &self.admin_addr
    }

    /// The client of this service's own Raft groups.
    pub fn own(&self) -> &ServiceClient {
        &self.own
    }

    /// The client of another service this one calls.
    pub fn peer(&self, service: Service) -> Result<&PeerService, ApiError> {
        self.peers.get(&service).ok_or_else(|| {
            ApiError::internal(format!("{} has no route to {service}", self.service))
        })
    }

    /// This service's node-down protocol.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The cluster events this coordinator records and merges.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// For admin calls forwarded to other coordinators.
    pub fn admin_client(&self) -> &InternalClient {
        &self.admin_client
    }
}
