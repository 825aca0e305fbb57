//! The coordinator: the front door of one service. It parses the public cart
//! API, routes each request to its Raft group's leader (following "not
//! leader" answers, retrying with the same request id), and is the door
//! between services (addItem's price lookup, checkout's steps). It watches
//! its service's nodes (the node-down protocol), merges cluster events with
//! the other coordinators and serves the admin API. It keeps no state that
//! matters: any coordinator can serve any request.

pub mod admin;
pub mod checkout;
pub mod events;
pub mod health;
pub mod metrics;
pub mod node_state;
pub mod params;
pub mod routes;
pub mod server;
pub mod state;
