//! Clients of a service's Raft group, used by coordinators (their own
//! group, and other services') and by the order leader's checkout saga
//! (payment and stock): follow the leader, retry with the same request id,
//! and reach another service directly or through its coordinators.

pub mod group;
pub mod metrics;
pub mod peer;
pub mod service;

pub use group::{GroupClient, RouteFilter};
pub use peer::PeerService;
pub use service::ServiceClient;
