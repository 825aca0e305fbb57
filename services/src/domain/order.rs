//! Order: a user's list of items with a running total and a paid flag.

use cart_common::shard::{part_holds, ShardPart};
use serde::{Deserialize, Serialize};

use cart_common::rng::SplitMix64;

use super::{
    check_batch_size, get_value, put_value, Command, Outcome, Rejection, RejectionCode, Reply,
    StateStore, StoreError, Table,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub user_id: String,
    pub paid: bool,
    /// `(item_id, quantity)` pairs in the order they were added.
    pub items: Vec<(String, i64)>,
    pub total_cost: i64,
}

/// The most item lines an order holds (docs/api.md): bounds an order's size,
/// its checkout's steps and the answers that list it.
pub const MAX_LINES: usize = 100;

/// The refusal of an `AddItem` that would give an order more than
/// `MAX_LINES` lines; `None` for anything else.
pub fn over_line_limit(
    store: &dyn StateStore,
    cmd: &Command,
) -> Result<Option<Rejection>, StoreError> {
    let Command::AddItem { order_id, .. } = cmd else {
        return Ok(None);
    };
    let Some(order) = get_value::<Order>(store, Table::Orders, order_id)? else {
        return Ok(None);
    };
    Ok((order.items.len() >= MAX_LINES).then(|| {
        Rejection::new(
            RejectionCode::TooManyItems,
            format!("an order holds at most {MAX_LINES} item lines"),
        )
    }))
}

pub(super) fn apply(store: &mut dyn StateStore, cmd: &Command) -> Result<Outcome, StoreError> {
    match cmd {
        Command::CreateOrder { order_id, user_id } => {
            if store.get(Table::Orders, order_id)?.is_some() {
                return Ok(Err(Rejection::new(
                    RejectionCode::Exists,
                    format!("order {order_id:?} exists"),
                )));
            }
            let order = Order {
                user_id: user_id.clone(),
                paid: false,
                items: Vec::new(),
                total_cost: 0,
            };
            put_value(store, Table::Orders, order_id, &order)?;
            Ok(Ok(Reply::Created {
                id: order_id.clone(),
            }))
        }
        Command::AddItem {
            order_id,
            item_id,
            quantity,
            price,
        } => add_item(store, order_id, item_id, *quantity, *price),
        Command::BatchInitOrders {
            n,
            n_items,
            n_users,
            item_price,
            seed,
            part,
        } => batch_init(store, *n, *n_items, *n_users, *item_price, *seed, *part),
        _ => Ok(Err(Rejection::new(
            RejectionCode::WrongService,
            "not an order command",
        ))),
    }
}

fn add_item(
    store: &mut dyn StateStore,
    order_id: &str,
    item_id: &str,
    quantity: i64,
    price: i64,
) -> Result<Outcome, StoreError> {
    if quantity < 1 {
        return Ok(Err(Rejection::new(
            RejectionCode::InvalidNumber,
            "quantity must be at least 1",
        )));
    }
    if price < 0 {
        return Ok(Err(Rejection::negative("price")));
    }
    let Some(mut order) = get_value::<Order>(store, Table::Orders, order_id)? else {
        return Ok(Err(Rejection::not_found(
            RejectionCode::OrderNotFound,
            "order",
            order_id,
        )));
    };
    if order.paid {
        return Ok(Err(Rejection::new(
            RejectionCode::AlreadyPaid,
            format!("order {order_id:?} is paid and cannot change"),
        )));
    }
    // A checkout in flight charges what the order held when it began.
    if super::checkout::open_checkout(store, order_id)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectionCode::CheckoutInProgress,
            format!("order {order_id:?} is being checked out and cannot change"),
        )));
    }
    let Some(total) = quantity
        .checked_mul(price)
        .and_then(|cost| order.total_cost.checked_add(cost))
    else {
        return Ok(Err(Rejection::overflow("total_cost")));
    };
    order.total_cost = total;
    order.items.push((item_id.to_string(), quantity));
    put_value(store, Table::Orders, order_id, &order)?;
    Ok(Ok(Reply::Done))
}

fn batch_init(
    store: &mut dyn StateStore,
    n: u64,
    n_items: u64,
    n_users: u64,
    item_price: i64,
    seed: u64,
    part: Option<ShardPart>,
) -> Result<Outcome, StoreError> {
    if let Err(r) = check_batch_size(n) {
        return Ok(Err(r));
    }
    if n_items == 0 || n_users == 0 {
        return Ok(Err(Rejection::new(
            RejectionCode::InvalidNumber,
            "n_items and n_users must be at least 1",
        )));
    }
    if item_price < 0 {
        return Ok(Err(Rejection::negative("item_price")));
    }
    let Some(total_cost) = item_price.checked_mul(2) else {
        return Ok(Err(Rejection::overflow("total_cost")));
    };
    // The seed is in the log entry, so every replica draws the same orders.
    // Every shard draws every order, so an order is the same whatever the
    // shard count; each keeps only its own.
    let mut rng = SplitMix64::new(seed);
    let mut count = 0;
    for i in 0..n {
        let a = rng.next_u64() % n_items;
        let b = rng.next_u64() % n_items;
        let user = rng.next_u64() % n_users;
        let order = Order {
            user_id: user.to_string(),
            paid: false,
            items: vec![(a.to_string(), 1), (b.to_string(), 1)],
            total_cost,
        };
        let id = i.to_string();
        if part_holds(part, &id) {
            put_value(store, Table::Orders, &id, &order)?;
            count += 1;
        }
    }
    Ok(Ok(Reply::Initialized { count }))
}

#[cfg(test)]
mod tests {
    use super::super::memory::{ask, run, MemoryStore};
    use super::super::Query;
    use super::*;

    fn order(s: &MemoryStore, id: &str) -> Order {
        match ask(
            s,
            Query::FindOrder {
                order_id: id.into(),
            },
        ) {
            Ok(Reply::Order(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    fn with_order() -> MemoryStore {
        let mut s = MemoryStore::default();
        run(
            &mut s,
            Command::CreateOrder {
                order_id: "o".into(),
                user_id: "u".into(),
            },
        )
        .unwrap();
        s
    }

    fn add(s: &mut MemoryStore, item: &str, quantity: i64, price: i64) -> Outcome {
        run(
            s,
            Command::AddItem {
                order_id: "o".into(),
                item_id: item.into(),
                quantity,
                price,
            },
        )
    }

    #[test]
    fn add_item_appends_the_pair_and_adds_quantity_times_price() {
        let mut s = with_order();
        add(&mut s, "i", 2, 5).unwrap();
        add(&mut s, "i", 1, 5).unwrap();
        let o = order(&s, "o");
        assert_eq!(o.items, vec![("i".to_string(), 2), ("i".to_string(), 1)]);
        assert_eq!(o.total_cost, 15);
        assert!(!o.paid);
    }

    #[test]
    fn total_cost_overflow_is_refused_and_changes_nothing() {
        let mut s = with_order();
        add(&mut s, "i", 1, i64::MAX).unwrap();
        let before = s.clone();
        assert_eq!(add(&mut s, "i", 1, 1).unwrap_err().error, "out_of_range");
        assert_eq!(
            add(&mut s, "j", 2, i64::MAX).unwrap_err().error,
            "out_of_range"
        );
        assert_eq!(s, before);
    }

    #[test]
    fn paid_order_cannot_change_and_pays_once() {
        let mut s = with_order();
        let begin = |tx: &str| Command::BeginCheckout {
            order_id: "o".into(),
            tx_id: tx.into(),
        };
        assert!(matches!(run(&mut s, begin("t1")), Ok(Reply::Checkout(_))));
        // Items cannot change while the checkout is open.
        assert_eq!(
            add(&mut s, "i", 1, 1).unwrap_err().error,
            "checkout_in_progress"
        );
        let commit = Command::CommitCheckout { tx_id: "t1".into() };
        assert!(matches!(run(&mut s, commit), Ok(Reply::Checkout(_))));
        assert!(order(&s, "o").paid);
        assert_eq!(run(&mut s, begin("t2")), Ok(Reply::Paid));
        assert_eq!(add(&mut s, "i", 1, 1).unwrap_err().error, "already_paid");
    }

    #[test]
    fn zero_quantity_is_refused() {
        let mut s = with_order();
        assert_eq!(add(&mut s, "i", 0, 1).unwrap_err().error, "invalid_number");
    }

    #[test]
    fn batch_init_is_deterministic_for_a_seed() {
        let cmd = Command::BatchInitOrders {
            n: 50,
            n_items: 10,
            n_users: 7,
            item_price: 3,
            seed: 42,
            part: None,
        };
        let (mut a, mut b) = (MemoryStore::default(), MemoryStore::default());
        run(&mut a, cmd.clone()).unwrap();
        run(&mut b, cmd).unwrap();
        assert_eq!(a, b);
        let o = order(&a, "49");
        assert_eq!(o.total_cost, 6);
        assert_eq!(o.items.len(), 2);
        assert!(o
            .items
            .iter()
            .all(|(i, q)| i.parse::<u64>().unwrap() < 10 && *q == 1));
        assert!(o.user_id.parse::<u64>().unwrap() < 7);
    }
}
