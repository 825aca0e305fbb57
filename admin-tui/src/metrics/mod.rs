//! The numbers of the Traffic, Transactions and Cluster views, from the
//! `/metrics` pages (Prometheus text) of every coordinator and every node:
//! rates and p99s from the difference between two scrapes of the same
//! process, kept for the last few minutes, and each node's latest gauges.
//!
//! `page` (`cart_common::metrics_page`, shared with the load tests) parses
//! a page; `Traffic` turns rounds of scrapes into rates and p99s.

mod traffic;

pub use cart_common::metrics_page as page;
pub use page::{quantile, Page};
pub use traffic::{CheckoutOutcome, Metric, NodeKey, NodeLoad, Point, Traffic, HISTORY};
