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
use cart_common::metrics::{precreate, Label};
use cart_common::ApiError;
use cart_services::api::CheckoutReply;
use cart_services::domain::RejectionCode;
use cart_services::request_key::RequestKey;
use tracing::Instrument;

use crate::metrics::METRICS;
use crate::routes::refusal;
use crate::state::Coordinator;
use cart_common::checkout::CheckoutOutcome;

/// Pauses between asking again about an unfinished transaction.
const FOLLOW_FIRST: Duration = Duration::from_millis(20);
const FOLLOW_MAX: Duration = Duration::from_millis(250);

/// The outcome of a refusal with `code`.
fn refused(code: RejectionCode) -> CheckoutOutcome {
    match code {
        RejectionCode::InsufficientCredit => CheckoutOutcome::InsufficientCredit,
        RejectionCode::InsufficientStock => CheckoutOutcome::InsufficientStock,
        _ => CheckoutOutcome::Rejected,
    }
}

/// Every outcome's series exists at 0 from start-up.
pub fn init_series() {
    precreate(
        &METRICS.checkouts,
        CheckoutOutcome::all().map(|o| [o.as_str()]),
    );
}

/// A checkout's outcome label and what the client gets.
type Ended = (CheckoutOutcome, Result<(), ApiError>);

pub async fn run(c: &Coordinator, key: &RequestKey, order_id: &str) -> Result<(), ApiError> {
    let limits = &c.spec().limits;
    let wait = Duration::from_millis(
        limits
            .checkout_timeout_ms
            .saturating_add(limits.checkout_follow_ms),
    );
    let give_up = Instant::now() + wait;
    let (outcome, result) = match c.own().checkout(key, order_id, wait).await {
        Ok(CheckoutReply::Unfinished { tx_id }) => {
            let span = tracing::info_span!("checkout.follow", tx_id = %tx_id);
            follow(c, key, order_id, &tx_id, give_up)
                .instrument(span)
                .await
        }
        Ok(reply) => ended(reply),
        Err(e) => failed(e),
    };
    METRICS
        .checkouts
        .with_label_values(&[outcome.as_str()])
        .inc();
    result
}

/// The answer to a checkout whose saga ended (or never began).
fn ended(reply: CheckoutReply) -> Ended {
    match reply {
        CheckoutReply::Paid => (CheckoutOutcome::Paid, Ok(())),
        CheckoutReply::AlreadyPaid => (CheckoutOutcome::AlreadyPaid, Ok(())),
        CheckoutReply::Refused(r) => (refused(r.error), Err(refusal(r))),
        CheckoutReply::Unfinished { tx_id } => failed(ApiError::internal(format!(
            "checkout {tx_id:?} answered as ended while unfinished"
        ))),
    }
}

fn failed(e: ApiError) -> Ended {
    let outcome = if e.status.is_client_error() {
        CheckoutOutcome::Rejected
    } else {
        CheckoutOutcome::Failed
    };
    (outcome, Err(e))
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
) -> Ended {
    METRICS.checkouts_followed.inc();
    let mut backoff = Backoff::new(FOLLOW_FIRST, FOLLOW_MAX);
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        if left < FOLLOW_MAX {
            return failed(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "checkout_pending",
                "the checkout has not ended yet; it goes on — retry with the same X-Request-Id \
                 for its outcome (it is never applied twice)",
            ));
        }
        match c.own().checkout(key, order_id, left).await {
            Ok(CheckoutReply::Unfinished { .. }) => {}
            Ok(reply) => return ended(reply),
            // Not answered this time (a leader change): ask again.
            Err(e) => tracing::debug!(tx_id, error = %e, "following checkout"),
        }
        backoff.wait().await;
    }
}
