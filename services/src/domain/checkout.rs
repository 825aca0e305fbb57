//! The order group's side of the checkout saga: one record per transaction,
//! written before the first step and updated with the decision before it is
//! acted on.
//!
//! ```text
//! BeginCheckout ─▶ started ─CommitCheckout (order marked paid)─▶ committed
//!                     │
//!                     └─AbortCheckout─▶ aborting ─FinishCheckout─▶ aborted
//!                                       (compensations run here)
//! ```
//!
//! An order has at most one open checkout: a second `BeginCheckout` of the
//! same order joins the open one, so concurrent checkouts charge once. While
//! a checkout is open the order's items cannot change.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use super::order::Order;
use super::steps::{forget_before, time_key};
use super::{
    get_value, put_value, Outcome, Rejection, RejectionCode, Reply, StateStore, StoreError, Table,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub tx_id: String,
    pub order_id: String,
    /// What the steps do, fixed when the checkout begins.
    pub user_id: String,
    pub amount: i64,
    pub items: Vec<(String, i64)>,
    pub state: CheckoutState,
    pub started_ms: u64,
    #[serde(default)]
    pub finished_ms: Option<u64>,
}

impl Checkout {
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            CheckoutState::Committed | CheckoutState::Aborted { .. }
        )
    }
}

/// The saga's steps (sent at once). Part of the log format
/// (`AbortCheckout::failed`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, VariantArray, IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SagaStep {
    Charge,
    TakeStock,
}

/// The order leader's answer to a checkout, on the wire from node to
/// coordinator: the one shape every checkout answer takes on its way back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutReply {
    /// The saga committed: the order is paid.
    Paid,
    /// The order was paid before: nothing began.
    AlreadyPaid,
    /// Refused: before it began (the order does not exist, ...) or by a
    /// step (the saga aborted, its compensations done).
    Refused(Rejection),
    /// The saga began but did not end within the leader's bound; it goes on.
    /// The coordinator follows the transaction by its id.
    Unfinished { tx_id: String },
}

impl Checkout {
    /// The answer for a checkout that has ended; `None` while it runs.
    pub fn reply(&self) -> Option<CheckoutReply> {
        match &self.state {
            CheckoutState::Committed => Some(CheckoutReply::Paid),
            CheckoutState::Aborted { error, message, .. } => Some(CheckoutReply::Refused(
                Rejection::new(*error, message.clone()),
            )),
            CheckoutState::Started | CheckoutState::Aborting { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum CheckoutState {
    Started,
    Committed,
    /// Decided: `failed` was refused; the other step is being undone.
    Aborting {
        failed: SagaStep,
        error: RejectionCode,
        message: String,
    },
    Aborted {
        failed: SagaStep,
        error: RejectionCode,
        message: String,
    },
}

pub(super) fn begin(
    store: &mut dyn StateStore,
    order_id: &str,
    tx_id: &str,
    ts_ms: u64,
) -> Result<Outcome, StoreError> {
    let Some(order) = get_value::<Order>(store, Table::Orders, order_id)? else {
        return Ok(Err(Rejection::not_found(
            RejectionCode::OrderNotFound,
            "order",
            order_id,
        )));
    };
    if let Some(open) = open_checkout(store, order_id)? {
        return Ok(Ok(Reply::Checkout(open)));
    }
    if order.paid {
        return Ok(Ok(Reply::Paid));
    }
    if get_value::<Checkout>(store, Table::Checkouts, tx_id)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectionCode::Exists,
            format!("transaction {tx_id:?} exists"),
        )));
    }
    let checkout = Checkout {
        tx_id: tx_id.to_string(),
        order_id: order_id.to_string(),
        user_id: order.user_id.clone(),
        amount: order.total_cost,
        items: order.items.clone(),
        state: CheckoutState::Started,
        started_ms: ts_ms,
        finished_ms: None,
    };
    put_value(store, Table::Checkouts, tx_id, &checkout)?;
    store.put(Table::OpenCheckouts, order_id, tx_id.as_bytes())?;
    Ok(Ok(Reply::Checkout(checkout)))
}

/// Whether a checkout of `order_id` under `request_id` can be answered
/// `AlreadyPaid` from this state with nothing written: the order is paid
/// and the group holds no record of the id. A retry of the checkout that
/// paid it (it joins its transaction) and an id used for another operation
/// (refused) are both answered through the log, as before.
pub fn answerable_as_paid(
    store: &dyn StateStore,
    order_id: &str,
    request_id: &str,
) -> Result<bool, StoreError> {
    let paid = get_value::<Order>(store, Table::Orders, order_id)?.is_some_and(|o| o.paid);
    Ok(paid && store.get(Table::Requests, request_id)?.is_none())
}

/// Whether `order_id` has a checkout begun and not yet decided: its order
/// may be marked paid any moment. The saga answers a checkout whose steps
/// both applied before its commit is logged (docs/design.md), so a read of
/// the order waits while this holds (`saga::decided_read`).
pub fn undecided(store: &dyn StateStore, order_id: &str) -> Result<bool, StoreError> {
    Ok(open_checkout(store, order_id)?.is_some_and(|c| c.state == CheckoutState::Started))
}

/// Whether this replica, possibly behind its leader, cannot rule out an
/// undecided checkout of `order_id` at the leader: unless it holds the order
/// paid, its checkout may have begun there and not yet be applied here. A
/// follower's read of such an order hurries the leader's lazy writes in
/// its one read-index round (`saga::decided_read`).
pub fn maybe_undecided(store: &dyn StateStore, order_id: &str) -> Result<bool, StoreError> {
    Ok(!get_value::<Order>(store, Table::Orders, order_id)?.is_some_and(|o| o.paid))
}

/// The open checkout of an order, if any.
pub(super) fn open_checkout(
    store: &dyn StateStore,
    order_id: &str,
) -> Result<Option<Checkout>, StoreError> {
    let Some(tx) = store.get(Table::OpenCheckouts, order_id)? else {
        return Ok(None);
    };
    let tx = String::from_utf8(tx).map_err(|e| StoreError(e.to_string()))?;
    get_value(store, Table::Checkouts, &tx)
}

pub(super) fn commit(
    store: &mut dyn StateStore,
    tx_id: &str,
    ts_ms: u64,
) -> Result<Outcome, StoreError> {
    let mut checkout = match load(store, tx_id)? {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    match checkout.state {
        CheckoutState::Started => {}
        CheckoutState::Committed => return Ok(Ok(Reply::Checkout(checkout))),
        _ => return Ok(Err(conflict(&checkout, "commit"))),
    }
    let Some(mut order) = get_value::<Order>(store, Table::Orders, &checkout.order_id)? else {
        return Ok(Err(Rejection::not_found(
            RejectionCode::OrderNotFound,
            "order",
            &checkout.order_id,
        )));
    };
    order.paid = true;
    put_value(store, Table::Orders, &checkout.order_id, &order)?;
    checkout.state = CheckoutState::Committed;
    close(store, &mut checkout, ts_ms)?;
    Ok(Ok(Reply::Checkout(checkout)))
}

pub(super) fn abort(
    store: &mut dyn StateStore,
    tx_id: &str,
    failed: SagaStep,
    error: RejectionCode,
    message: &str,
) -> Result<Outcome, StoreError> {
    let mut checkout = match load(store, tx_id)? {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    match checkout.state {
        CheckoutState::Started => {
            checkout.state = CheckoutState::Aborting {
                failed,
                error,
                message: message.to_string(),
            };
            put_value(store, Table::Checkouts, tx_id, &checkout)?;
            Ok(Ok(Reply::Checkout(checkout)))
        }
        CheckoutState::Aborting { .. } | CheckoutState::Aborted { .. } => {
            Ok(Ok(Reply::Checkout(checkout)))
        }
        CheckoutState::Committed => Ok(Err(conflict(&checkout, "abort"))),
    }
}

/// Compensations are done: the abort is complete.
pub(super) fn finish(
    store: &mut dyn StateStore,
    tx_id: &str,
    ts_ms: u64,
) -> Result<Outcome, StoreError> {
    let mut checkout = match load(store, tx_id)? {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    if let CheckoutState::Aborting {
        failed,
        error,
        message,
    } = &checkout.state
    {
        checkout.state = CheckoutState::Aborted {
            failed: *failed,
            error: *error,
            message: message.clone(),
        };
        close(store, &mut checkout, ts_ms)?;
    }
    Ok(Ok(Reply::Checkout(checkout)))
}

/// Finished checkouts older than `before_ms` are forgotten.
pub(super) fn forget(store: &mut dyn StateStore, before_ms: u64) -> Result<Outcome, StoreError> {
    forget_before(store, Table::Checkouts, Table::CheckoutsByTime, before_ms)
}

pub(super) fn find(store: &dyn StateStore, tx_id: &str) -> Result<Outcome, StoreError> {
    Ok(load(store, tx_id)?.map(Reply::Checkout))
}

/// Every open checkout (started or aborting), for a new leader to finish.
pub(super) fn open(store: &dyn StateStore, limit: usize) -> Result<Outcome, StoreError> {
    let mut open = Vec::new();
    for order_id in store.keys(Table::OpenCheckouts, None, limit)? {
        if let Some(c) = open_checkout(store, &order_id)? {
            open.push(c);
        }
    }
    Ok(Ok(Reply::Checkouts(open)))
}

fn close(
    store: &mut dyn StateStore,
    checkout: &mut Checkout,
    ts_ms: u64,
) -> Result<(), StoreError> {
    checkout.finished_ms = Some(ts_ms);
    put_value(store, Table::Checkouts, &checkout.tx_id, checkout)?;
    store.delete(Table::OpenCheckouts, &checkout.order_id)?;
    store.put(
        Table::CheckoutsByTime,
        &time_key(ts_ms, &checkout.tx_id),
        &[],
    )
}

fn load(store: &dyn StateStore, tx_id: &str) -> Result<Result<Checkout, Rejection>, StoreError> {
    Ok(
        get_value::<Checkout>(store, Table::Checkouts, tx_id)?.ok_or_else(|| {
            Rejection::not_found(RejectionCode::TransactionNotFound, "transaction", tx_id)
        }),
    )
}

fn conflict(checkout: &Checkout, what: &str) -> Rejection {
    Rejection::new(
        RejectionCode::Conflict,
        format!(
            "cannot {what} transaction {:?}: it is {:?}",
            checkout.tx_id, checkout.state
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::super::memory::{ask, run, run_at, MemoryStore};
    use super::super::{Command, Query};
    use super::*;

    fn with_order() -> MemoryStore {
        let mut s = MemoryStore::default();
        let create = Command::CreateOrder {
            order_id: "o".into(),
            user_id: "u".into(),
        };
        run(&mut s, create).unwrap();
        let add = Command::AddItem {
            order_id: "o".into(),
            item_id: "i".into(),
            quantity: 2,
            price: 3,
        };
        run(&mut s, add).unwrap();
        s
    }

    fn begin(tx: &str) -> Command {
        Command::BeginCheckout {
            order_id: "o".into(),
            tx_id: tx.into(),
        }
    }

    fn checkout(outcome: Outcome) -> Checkout {
        match outcome {
            Ok(Reply::Checkout(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    fn open(s: &MemoryStore) -> Vec<Checkout> {
        match ask(s, Query::OpenCheckouts { limit: 10 }) {
            Ok(Reply::Checkouts(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_a_paid_order_under_an_unused_id_is_answerable_as_paid() {
        let mut s = with_order();
        let answerable = |s: &MemoryStore, order: &str, id: &str| {
            answerable_as_paid(s, order, id).expect("readable store")
        };
        assert!(!answerable(&s, "o", "c:fresh"), "unpaid");
        assert!(!answerable(&s, "no-such-order", "c:fresh"), "no order");
        run(&mut s, begin("t1")).unwrap();
        assert!(!answerable(&s, "o", "c:fresh"), "checkout open, not paid");
        let commit = Command::CommitCheckout { tx_id: "t1".into() };
        run(&mut s, commit).unwrap();
        assert!(answerable(&s, "o", "c:fresh"));
        // An id the group remembers goes through the log.
        s.put(Table::Requests, "c:used", b"{}").unwrap();
        assert!(!answerable(&s, "o", "c:used"));
    }

    #[test]
    fn an_order_is_undecided_from_its_begin_to_its_commit_or_abort() {
        let mut s = with_order();
        let undecided = |s: &MemoryStore| undecided(s, "o").expect("readable store");
        assert!(!undecided(&s), "no checkout");
        assert!(!undecided(&MemoryStore::default()), "no order");
        run(&mut s, begin("t1")).unwrap();
        assert!(undecided(&s));
        let abort = Command::AbortCheckout {
            tx_id: "t1".into(),
            failed: SagaStep::Charge,
            error: RejectionCode::InsufficientCredit,
            message: "poor".into(),
        };
        run(&mut s, abort).unwrap();
        assert!(
            !undecided(&s),
            "aborting is decided: the order stays unpaid"
        );
        run(&mut s, Command::FinishCheckout { tx_id: "t1".into() }).unwrap();
        run(&mut s, begin("t2")).unwrap();
        assert!(undecided(&s));
        run(&mut s, Command::CommitCheckout { tx_id: "t2".into() }).unwrap();
        assert!(!undecided(&s));
    }

    #[test]
    fn a_replica_rules_out_an_undecided_checkout_only_for_an_order_it_holds_paid() {
        let mut s = with_order();
        let maybe = |s: &MemoryStore| maybe_undecided(s, "o").expect("readable store");
        assert!(maybe(&s), "unpaid: it may have begun at the leader");
        assert!(maybe(&MemoryStore::default()), "unknown here: the same");
        run(&mut s, begin("t1")).unwrap();
        assert!(maybe(&s));
        run(&mut s, Command::CommitCheckout { tx_id: "t1".into() }).unwrap();
        assert!(!maybe(&s), "paid is decided for good");
    }

    #[test]
    fn begin_records_what_to_charge_and_a_second_begin_joins() {
        let mut s = with_order();
        let first = checkout(run(&mut s, begin("t1")));
        assert_eq!((first.amount, first.items.len()), (6, 1));
        assert_eq!(first.state, CheckoutState::Started);
        let second = checkout(run(&mut s, begin("t2")));
        assert_eq!(second.tx_id, "t1");
        assert_eq!(open(&s).len(), 1);
    }

    #[test]
    fn abort_then_finish_closes_and_a_new_checkout_may_begin() {
        let mut s = with_order();
        run(&mut s, begin("t1")).unwrap();
        let abort = Command::AbortCheckout {
            tx_id: "t1".into(),
            failed: SagaStep::TakeStock,
            error: RejectionCode::InsufficientStock,
            message: "none left".into(),
        };
        let aborting = checkout(run(&mut s, abort.clone()));
        assert!(matches!(aborting.state, CheckoutState::Aborting { .. }));
        // Still open until the compensations are done.
        assert_eq!(open(&s).len(), 1);
        let commit = Command::CommitCheckout { tx_id: "t1".into() };
        assert_eq!(run(&mut s, commit).unwrap_err().error, "conflict");
        let done = checkout(run(&mut s, Command::FinishCheckout { tx_id: "t1".into() }));
        assert!(matches!(done.state, CheckoutState::Aborted { .. }));
        assert!(open(&s).is_empty());
        assert_eq!(checkout(run(&mut s, begin("t2"))).tx_id, "t2");
    }

    #[test]
    fn commit_pays_the_order_once() {
        let mut s = with_order();
        run(&mut s, begin("t1")).unwrap();
        let commit = Command::CommitCheckout { tx_id: "t1".into() };
        assert_eq!(
            checkout(run(&mut s, commit.clone())).state,
            CheckoutState::Committed
        );
        assert_eq!(
            checkout(run(&mut s, commit)).state,
            CheckoutState::Committed
        );
        assert!(open(&s).is_empty());
        assert_eq!(run(&mut s, begin("t2")), Ok(Reply::Paid));
        let o = match ask(
            &s,
            Query::FindOrder {
                order_id: "o".into(),
            },
        ) {
            Ok(Reply::Order(o)) => o,
            other => panic!("{other:?}"),
        };
        assert!(o.paid);
    }

    #[test]
    fn finished_checkouts_are_forgotten_below_the_watermark() {
        let mut s = with_order();
        run_at(&mut s, begin("t1"), 1_000).unwrap();
        run_at(
            &mut s,
            Command::CommitCheckout { tx_id: "t1".into() },
            1_500,
        )
        .unwrap();
        let forget = Command::ForgetCheckouts { before_ms: 10_000 };
        assert_eq!(run(&mut s, forget), Ok(Reply::Forgotten { count: 1 }));
        assert!(ask(&s, Query::FindCheckout { tx_id: "t1".into() }).is_err());
        assert_eq!(begin_unknown_order(&mut s), "order_not_found");
    }

    fn begin_unknown_order(s: &mut MemoryStore) -> RejectionCode {
        let cmd = Command::BeginCheckout {
            order_id: "nope".into(),
            tx_id: "x".into(),
        };
        run(s, cmd).unwrap_err().error
    }
}
