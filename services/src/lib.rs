//! The node: the order, payment and stock domain, the Raft group that
//! replicates it, its storage (embedded or MongoDB), and the node's HTTP server.

pub mod api;
pub mod client;
pub mod consistency;
pub mod domain;
mod membership;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod request_key;
pub mod saga;
pub mod storage;
#[cfg(test)]
mod test_spec;
