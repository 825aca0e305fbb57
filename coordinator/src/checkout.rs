//! Checkout at the coordinator: hand it to the order group's leader, which
//! runs the saga (`cart_services::saga`) and answers once it has ended, and
//! shape the answer. A retry with the same request id joins the same
//! transaction, so it is safe to resend anywhere.
//!
//! The bounds nest so that nobody gives up before the one it waits for has
//! answered: the leader waits `checkout_timeout_ms` for its saga, then hands
//! back the transaction id; the coordinator waits `checkout_follow_ms`
//! longer, following that transaction (or a new leader) to its end; the
//! gateway's `gateway_timeout_ms` exceeds both. So while a majority of every
//! group is up, the client gets the saga's definite outcome, and only a saga
//! still unfinished after the coordinator's whole wait is a 503
//! (`checkout_pending`, retry with the same id).

use std::time::{Duration, Instant};

use cart_common::backoff::Backoff;
use cart_common::ApiError;
use cart_services::api::CheckoutReply;
use cart_services::domain::{Checkout, CheckoutState, Reply};
use cart_services::request_key::RequestKey;
use tracing::Instrument;

use crate::metrics::METRICS;
use crate::routes::reply;
use crate::state::Coordinator;

/// Pauses between asking again about an unfinished transaction.
const FOLLOW_FIRST: Duration = Duration::from_millis(20);
const FOLLOW_MAX: Duration = Duration::from_millis(250);

pub async fn run(c: &Coordinator, key: &RequestKey, order_id: &str) -> Result<(), ApiError> {
    let limits = &c.spec().limits;
    let wait = Duration::from_millis(
        limits
            .checkout_timeout_ms
            .saturating_add(limits.checkout_follow_ms),
    );
    let give_up = Instant::now() + wait;
    let result = match c.own().checkout(key, order_id, wait).await {
        Ok(CheckoutReply::Ended(outcome)) => ended(reply(Ok(outcome))),
        Ok(CheckoutReply::Unfinished { tx_id }) => {
            let span = tracing::info_span!("checkout.follow", tx_id = %tx_id);
            follow(c, key, order_id, &tx_id, give_up)
                .instrument(span)
                .await
        }
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

/// The answer to a checkout whose saga ended (or never began).
fn ended(reply: Result<Reply, ApiError>) -> Result<&'static str, ApiError> {
    match reply? {
        Reply::Checkout(checkout) => finished(&checkout).unwrap_or_else(|| {
            Err(ApiError::internal(format!(
                "checkout answered while {:?}",
                checkout.state
            )))
        }),
        Reply::Paid { newly: false } => Ok("already_paid"),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

/// The outcome of a checkout that has ended; `None` while it runs.
fn finished(checkout: &Checkout) -> Option<Result<&'static str, ApiError>> {
    match &checkout.state {
        CheckoutState::Committed => Some(Ok("paid")),
        CheckoutState::Aborted { error, message, .. } => {
            Some(Err(ApiError::bad_request(error, message.clone())))
        }
        CheckoutState::Started | CheckoutState::Aborting { .. } => None,
    }
}

/// Follows a transaction the leader could not finish in its bound, until it
/// ends or `give_up`: by asking the order leader again under the same request
/// key, which joins the same transaction and waits on it (a long poll at the
/// leader, no read rounds: polling reads of every unfinished checkout would
/// load the leader most when it is already slow).
async fn follow(
    c: &Coordinator,
    key: &RequestKey,
    order_id: &str,
    tx_id: &str,
    give_up: Instant,
) -> Result<&'static str, ApiError> {
    METRICS.checkouts_followed.inc();
    let mut backoff = Backoff::new(FOLLOW_FIRST, FOLLOW_MAX);
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        if left < FOLLOW_MAX {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "checkout_pending",
                "the checkout has not ended yet; it goes on — retry with the same X-Request-Id \
                 for its outcome (it is never applied twice)",
            ));
        }
        match c.own().checkout(key, order_id, left).await {
            Ok(CheckoutReply::Ended(outcome)) => return ended(reply(Ok(outcome))),
            Ok(CheckoutReply::Unfinished { .. }) => {}
            // Not answered this time (a leader change): ask again.
            Err(e) => tracing::debug!(tx_id, error = %e, "following checkout"),
        }
        backoff.wait().await;
    }
}
