//! Checkout as a sequence of steps with compensation: read the order, charge
//! the user, take the stock (all items or none), mark the order paid.
//!
//! Charging comes before stock so that a buyer who cannot pay never holds
//! stock another buyer could have had; stock is then never given back on the
//! hot path. Every step's request id derives from the checkout's, so a retry
//! of the same checkout request re-uses them and each step applies once.
//! Exactly-once under crashes (a saga persisted in the order group's log) is
//! the job of issue #4; here a crash between steps can leave a charge
//! without a paid order.

use cart_common::{ApiError, Service};
use cart_services::domain::{Command, Order, Query, Reply};

use crate::metrics::METRICS;
use crate::routes::reply;
use crate::server::Coordinator;

pub async fn run(c: &Coordinator, rid: &str, order_id: &str) -> Result<(), ApiError> {
    let mut result = steps(c, rid, order_id).await;
    // A concurrent checkout of the same order may have paid it while ours
    // was refused (its charge or stock got there first): the order is paid,
    // so the answer is 200, as for any checkout of a paid order.
    if matches!(&result, Err(e) if e.status.is_client_error()) && is_paid(c, order_id).await {
        result = Ok("already_paid");
    }
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

async fn is_paid(c: &Coordinator, order_id: &str) -> bool {
    let query = Query::FindOrder {
        order_id: order_id.to_string(),
    };
    matches!(reply(c.own.read(query).await), Ok(Reply::Order(o)) if o.paid)
}

async fn steps(c: &Coordinator, rid: &str, order_id: &str) -> Result<&'static str, ApiError> {
    let order = match reply(
        c.own
            .read(Query::FindOrder {
                order_id: order_id.to_string(),
            })
            .await,
    )? {
        Reply::Order(o) => o,
        other => return Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    };
    if order.paid {
        return Ok("already_paid");
    }
    let payment = c.peer(Service::Payment)?;
    let stock = c.peer(Service::Stock)?;

    reply(
        payment
            .write(
                &format!("{rid}:pay"),
                Command::Pay {
                    user_id: order.user_id.clone(),
                    amount: order.total_cost,
                },
            )
            .await,
    )?;

    let taken = stock
        .write(
            &format!("{rid}:stock"),
            Command::SubtractStockBatch {
                items: order.items.clone(),
            },
        )
        .await;
    if let Err(e) = reply(taken) {
        if e.status.is_client_error() {
            refund(c, rid, &order).await?;
        }
        return Err(e);
    }

    let marked = c
        .own
        .write(
            &format!("{rid}:paid"),
            Command::MarkPaid {
                order_id: order_id.to_string(),
            },
        )
        .await;
    match reply(marked) {
        Ok(Reply::Paid { newly: true }) => Ok("paid"),
        // Another checkout of the same order won the race: give back ours.
        Ok(Reply::Paid { newly: false }) => {
            restock(c, rid, &order).await?;
            refund(c, rid, &order).await?;
            Ok("already_paid")
        }
        Ok(other) => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
        Err(e) => {
            if e.status.is_client_error() {
                restock(c, rid, &order).await?;
                refund(c, rid, &order).await?;
            }
            Err(e)
        }
    }
}

async fn refund(c: &Coordinator, rid: &str, order: &Order) -> Result<(), ApiError> {
    let cmd = Command::AddFunds {
        user_id: order.user_id.clone(),
        amount: order.total_cost,
    };
    reply(
        c.peer(Service::Payment)?
            .write(&format!("{rid}:refund"), cmd)
            .await,
    )
    .map(|_| ())
}

async fn restock(c: &Coordinator, rid: &str, order: &Order) -> Result<(), ApiError> {
    let cmd = Command::AddStockBatch {
        items: order.items.clone(),
    };
    reply(
        c.peer(Service::Stock)?
            .write(&format!("{rid}:restock"), cmd)
            .await,
    )
    .map(|_| ())
}
