//! The cart cluster's terminal admin console (`cart-admin`): watch the
//! cluster at a glance, drill in, and check, repair, rebuild, add or remove
//! nodes, through the coordinators' admin API (docs/admin-api.md).
//!
//! State and key handling (`app`, `keys`) are pure; rendering (`views`) is a
//! pure function of the state; the network and the terminal live at the
//! edges (`api`, `run`).

pub mod action;
pub mod api;
pub mod app;
pub mod cli;
pub mod failover;
pub mod format;
pub mod keys;
pub mod metrics;
pub mod run;
pub mod slow;
pub mod views;
