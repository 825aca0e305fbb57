//! What every process of the cart cluster shares: the cluster spec, the
//! metrics helper, the JSON error type, HTTP plumbing, process lifecycle and
//! the admin API wire types.

pub mod admin;
pub mod admin_client;
pub mod api_error;
pub mod backoff;
pub mod checkout;
pub mod http;
pub mod metrics;
pub mod metrics_page;
pub mod paths;
pub mod process;
pub mod rng;
pub mod shard;
pub mod spec;
pub mod telemetry;

pub use api_error::ApiError;
pub use spec::{ClusterSpec, Service};
