//! Stock: items with a price and a stock level.

use std::collections::BTreeMap;

use cart_common::shard::{part_holds, ShardPart};
use serde::{Deserialize, Serialize};

use super::steps::{compensate_once, run_once, Effect};
use super::{
    check_batch_size, get_value, put_value, Command, Outcome, Rejection, RejectionCode, Reply,
    StateStore, StoreError, Table,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub stock: i64,
    pub price: i64,
}

pub(super) fn apply(
    store: &mut dyn StateStore,
    cmd: &Command,
    ts_ms: u64,
) -> Result<Outcome, StoreError> {
    match cmd {
        Command::CreateItem { item_id, price } => create(store, item_id, *price),
        Command::AddStock { item_id, amount } => change(store, &[(item_id.clone(), *amount)], 1),
        Command::SubtractStock { item_id, amount } => {
            change(store, &[(item_id.clone(), *amount)], -1)
        }
        Command::TakeStock { tx_id, items } => {
            let effect = Effect::TakeStock {
                items: items.clone(),
            };
            run_once(store, tx_id, ts_ms, effect, |s| change(s, items, -1))
        }
        Command::ReturnStock { tx_id } => compensate_once(store, tx_id, ts_ms, give_back),
        Command::BatchInitItems {
            n,
            starting_stock,
            price,
            part,
        } => batch_init(store, *n, *starting_stock, *price, *part),
        _ => Ok(Err(Rejection::new(
            RejectionCode::WrongService,
            "not a stock command",
        ))),
    }
}

fn create(store: &mut dyn StateStore, item_id: &str, price: i64) -> Result<Outcome, StoreError> {
    if price < 0 {
        return Ok(Err(Rejection::negative("price")));
    }
    if store.get(Table::Items, item_id)?.is_some() {
        return Ok(Err(Rejection::new(
            RejectionCode::Exists,
            format!("item {item_id:?} exists"),
        )));
    }
    put_value(store, Table::Items, item_id, &Item { stock: 0, price })?;
    Ok(Ok(Reply::Created {
        id: item_id.to_string(),
    }))
}

/// Adds (`sign` 1) or subtracts (`sign` -1) every quantity, all or nothing.
fn change(
    store: &mut dyn StateStore,
    items: &[(String, i64)],
    sign: i64,
) -> Result<Outcome, StoreError> {
    // Sum per item first: an item listed twice counts twice.
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, qty) in items {
        if *qty < 0 {
            return Ok(Err(Rejection::negative("amount")));
        }
        let total = wanted.entry(id).or_insert(0);
        match total.checked_add(*qty) {
            Some(t) => *total = t,
            None => return Ok(Err(Rejection::overflow("amount"))),
        }
    }
    let mut updated = Vec::with_capacity(wanted.len());
    for (id, qty) in wanted {
        let Some(mut item) = get_value::<Item>(store, Table::Items, id)? else {
            return Ok(Err(Rejection::not_found(
                RejectionCode::ItemNotFound,
                "item",
                id,
            )));
        };
        if sign < 0 {
            if item.stock < qty {
                return Ok(Err(Rejection::new(
                    RejectionCode::InsufficientStock,
                    // The reason and the item asked for, never a stock level.
                    format!("not enough stock of item {id:?}"),
                )));
            }
            item.stock -= qty;
        } else {
            match item.stock.checked_add(qty) {
                Some(s) => item.stock = s,
                None => return Ok(Err(Rejection::overflow("stock"))),
            }
        }
        updated.push((id, item));
    }
    for (id, item) in updated {
        put_value(store, Table::Items, id, &item)?;
    }
    Ok(Ok(Reply::Done))
}

/// Gives back what a `TakeStock` took. Saturates rather than fail: a
/// compensation must complete, and stock near i64::MAX is not a real shelf.
fn give_back(store: &mut dyn StateStore, effect: &Effect) -> Result<(), StoreError> {
    let Effect::TakeStock { items } = effect else {
        return Err(StoreError(format!("stock cannot undo {effect:?}")));
    };
    for (id, qty) in items {
        if let Some(mut item) = get_value::<Item>(store, Table::Items, id)? {
            item.stock = item.stock.saturating_add(*qty);
            put_value(store, Table::Items, id, &item)?;
        }
    }
    Ok(())
}

fn batch_init(
    store: &mut dyn StateStore,
    n: u64,
    starting_stock: i64,
    price: i64,
    part: Option<ShardPart>,
) -> Result<Outcome, StoreError> {
    if let Err(r) = check_batch_size(n) {
        return Ok(Err(r));
    }
    if starting_stock < 0 || price < 0 {
        return Ok(Err(Rejection::negative("stock and price")));
    }
    let item = Item {
        stock: starting_stock,
        price,
    };
    let mut count = 0;
    for id in (0..n).map(|i| i.to_string()) {
        if part_holds(part, &id) {
            put_value(store, Table::Items, &id, &item)?;
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

    fn item(store: &MemoryStore, id: &str) -> Outcome {
        ask(store, Query::FindItem { item_id: id.into() })
    }

    fn stocked(stock: i64) -> MemoryStore {
        let mut s = MemoryStore::default();
        run(
            &mut s,
            Command::BatchInitItems {
                n: 2,
                starting_stock: stock,
                price: 5,
                part: None,
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn created_item_has_zero_stock_and_its_price() {
        let mut s = MemoryStore::default();
        run(
            &mut s,
            Command::CreateItem {
                item_id: "a".into(),
                price: 7,
            },
        )
        .unwrap();
        assert_eq!(item(&s, "a"), Ok(Reply::Item(Item { stock: 0, price: 7 })));
    }

    #[test]
    fn subtract_below_zero_is_refused_and_changes_nothing() {
        let mut s = stocked(3);
        let before = s.clone();
        let r = run(
            &mut s,
            Command::SubtractStock {
                item_id: "0".into(),
                amount: 4,
            },
        );
        assert_eq!(r.unwrap_err().error, "insufficient_stock");
        assert_eq!(s, before);
    }

    #[test]
    fn batch_subtract_is_all_or_nothing_and_counts_duplicates() {
        let mut s = stocked(3);
        let before = s.clone();
        // "1" listed twice: 2 + 2 > 3.
        let r = run(
            &mut s,
            Command::TakeStock {
                tx_id: "t1".into(),
                items: vec![("0".into(), 1), ("1".into(), 2), ("1".into(), 2)],
            },
        );
        assert_eq!(r.unwrap_err().error, "insufficient_stock");
        assert_eq!(s.table(Table::Items), before.table(Table::Items));
        run(
            &mut s,
            Command::TakeStock {
                tx_id: "t2".into(),
                items: vec![("0".into(), 1), ("1".into(), 1), ("1".into(), 2)],
            },
        )
        .unwrap();
        assert_eq!(item(&s, "0"), Ok(Reply::Item(Item { stock: 2, price: 5 })));
        assert_eq!(item(&s, "1"), Ok(Reply::Item(Item { stock: 0, price: 5 })));
    }

    #[test]
    fn batch_subtract_with_unknown_item_changes_nothing() {
        let mut s = stocked(3);
        let before = s.clone();
        let r = run(
            &mut s,
            Command::TakeStock {
                tx_id: "t3".into(),
                items: vec![("0".into(), 1), ("nope".into(), 1)],
            },
        );
        assert_eq!(r.unwrap_err().error, "item_not_found");
        assert_eq!(s.table(Table::Items), before.table(Table::Items));
    }

    #[test]
    fn add_past_i64_max_is_refused() {
        let mut s = stocked(i64::MAX - 1);
        let before = s.clone();
        let r = run(
            &mut s,
            Command::AddStock {
                item_id: "0".into(),
                amount: 2,
            },
        );
        assert_eq!(r.unwrap_err().error, "out_of_range");
        assert_eq!(s, before);
    }

    #[test]
    fn unknown_item_is_not_found() {
        let mut s = stocked(1);
        assert_eq!(item(&s, "9").unwrap_err().error, "item_not_found");
        let r = run(
            &mut s,
            Command::AddStock {
                item_id: "9".into(),
                amount: 1,
            },
        );
        assert_eq!(r.unwrap_err().error, "item_not_found");
    }
}
