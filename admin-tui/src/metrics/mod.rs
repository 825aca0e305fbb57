//! The numbers of the Traffic, Transactions and Cluster views, from the
//! `/metrics` pages (Prometheus text) of every coordinator and every node:
//! rates and p99s from the difference between two scrapes of the same
//! process, kept for the last few minutes, and each node's latest gauges.
//!
//! `page` parses a page; `series` keeps the history; `Traffic` turns rounds
//! of scrapes into both.

pub mod page;
mod traffic;

pub use page::{quantile, Page};
pub use traffic::{CheckoutOutcome, Metric, NodeKey, NodeLoad, Point, Traffic, HISTORY};
