//! Checkout at the coordinator: hand it to the order group's leader, which
//! runs the saga (`cart_services::saga`) and answers once it has ended, and
//! shape the answer. A retry with the same request id joins the same
//! transaction, so it is safe to resend anywhere.

use std::time::Duration;

use cart_common::ApiError;
use cart_services::domain::{CheckoutState, Reply};

use crate::metrics::METRICS;
use crate::routes::reply;
use crate::server::Coordinator;

pub async fn run(c: &Coordinator, rid: &str, order_id: &str) -> Result<(), ApiError> {
    let wait = Duration::from_millis(c.spec.limits.checkout_timeout_ms);
    let result = match reply(c.own.checkout(rid, order_id, wait).await) {
        Ok(Reply::Checkout(checkout)) => match checkout.state {
            CheckoutState::Committed => Ok("paid"),
            CheckoutState::Aborted { error, message, .. } => {
                Err(ApiError::bad_request(&error, message))
            }
            // The leader answers only once the saga has ended.
            other => Err(ApiError::internal(format!(
                "checkout answered while {other:?}"
            ))),
        },
        Ok(Reply::Paid { newly: false }) => Ok("already_paid"),
        Ok(other) => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(o) => *o,
        Err(e) if e.status.is_client_error() => match e.body.error.as_str() {
            "insufficient_credit" => "insufficient_credit",
            "insufficient_stock" => "insufficient_stock",
            _ => "rejected",
        },
        Err(_) => "failed",
    };
    METRICS.checkouts.with_label_values(&[outcome]).inc();
    result.map(|_| ())
}
