//! The bank invariants of a checkout run, checked on the state read back
//! after the run (and after every fault healed):
//!
//! - every unit of stock is accounted for: an item's stock at the start is
//!   its stock now plus what the paid orders took of it;
//! - every unit of credit is accounted for: a user's credit at the start is
//!   their credit now plus the totals of their paid orders; so no order is
//!   paid without its money, and none charged without being paid;
//! - no acknowledged checkout lost: every order answered "paid" (2xx) is
//!   paid.
//!
//! A checkout without a definite answer may have gone either way; the
//! order's own `paid` flag, read back, says which, and the sums must agree
//! with it.

use std::collections::{BTreeMap, BTreeSet};

/// An order as read back after the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub user: String,
    pub total: i64,
    pub items: Vec<(String, i64)>,
    pub paid: bool,
}

/// What the run started from, what it read back, and what it was told.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    pub stock_before: BTreeMap<String, i64>,
    pub stock_after: BTreeMap<String, i64>,
    pub credit_before: BTreeMap<String, i64>,
    pub credit_after: BTreeMap<String, i64>,
    pub orders: Vec<Order>,
    /// Orders whose checkout was answered 2xx.
    pub answered_paid: BTreeSet<String>,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `before` ≠ `after` + what paid orders took.
    Stock {
        item: String,
        before: i64,
        after: i64,
        sold: i64,
    },
    /// `before` ≠ `after` + the user's paid totals.
    Credit {
        user: String,
        before: i64,
        after: i64,
        charged: i64,
    },
    /// Answered paid, but not paid: an acknowledged checkout lost.
    LostCheckout { order: String },
    /// A key read back that the run did not start with, or the reverse.
    Unaccounted { key: String },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stock {
                item,
                before,
                after,
                sold,
            } => write!(
                f,
                "item {item}: stock {before} at the start, {after} now, {sold} sold"
            ),
            Self::Credit {
                user,
                before,
                after,
                charged,
            } => write!(
                f,
                "user {user}: credit {before} at the start, {after} now, {charged} paid for orders"
            ),
            Self::LostCheckout { order } => {
                write!(f, "order {order} was answered paid but is not paid")
            }
            Self::Unaccounted { key } => write!(f, "{key} is not both at the start and now"),
        }
    }
}

/// Every broken invariant of `ledger`; empty when all hold.
pub fn check(ledger: &Ledger) -> Vec<Violation> {
    let mut sold: BTreeMap<&str, i64> = BTreeMap::new();
    let mut charged: BTreeMap<&str, i64> = BTreeMap::new();
    for order in ledger.orders.iter().filter(|o| o.paid) {
        *charged.entry(&order.user).or_default() += order.total;
        for (item, qty) in &order.items {
            *sold.entry(item).or_default() += qty;
        }
    }
    let mut violations = Vec::new();
    accounted(
        &ledger.stock_before,
        &ledger.stock_after,
        &sold,
        "stock",
        &mut violations,
        |item, before, after, sold| Violation::Stock {
            item,
            before,
            after,
            sold,
        },
    );
    accounted(
        &ledger.credit_before,
        &ledger.credit_after,
        &charged,
        "credit",
        &mut violations,
        |user, before, after, charged| Violation::Credit {
            user,
            before,
            after,
            charged,
        },
    );
    let paid: BTreeSet<&str> = ledger
        .orders
        .iter()
        .filter(|o| o.paid)
        .map(|o| o.id.as_str())
        .collect();
    for order in &ledger.answered_paid {
        if !paid.contains(order.as_str()) {
            violations.push(Violation::LostCheckout {
                order: order.clone(),
            });
        }
    }
    violations
}

/// `before = after + spent` for every key of either map.
fn accounted(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    spent: &BTreeMap<&str, i64>,
    what: &str,
    violations: &mut Vec<Violation>,
    broken: impl Fn(String, i64, i64, i64) -> Violation,
) {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let spent = spent.get(key.as_str()).copied().unwrap_or(0);
        match (before.get(key), after.get(key)) {
            (Some(&b), Some(&a)) if b == a + spent => {}
            (Some(&b), Some(&a)) => violations.push(broken(key.clone(), b, a, spent)),
            _ => violations.push(Violation::Unaccounted {
                key: format!("{what}/{key}"),
            }),
        }
    }
    // Spent on a key the run never had.
    for key in spent.keys().filter(|k| !before.contains_key(**k)) {
        if !after.contains_key(*key) {
            violations.push(Violation::Unaccounted {
                key: format!("{what}/{key}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item "i" (stock 10, price 2), users "a" and "b" (credit 10 each);
    /// order "o1" of a for 3 of i, order "o2" of b for 2 of i.
    fn ledger(o1_paid: bool, o2_paid: bool) -> Ledger {
        let order = |id: &str, user: &str, qty: i64, paid| Order {
            id: id.into(),
            user: user.into(),
            total: 2 * qty,
            items: vec![("i".into(), qty)],
            paid,
        };
        let sold = 3 * i64::from(o1_paid) + 2 * i64::from(o2_paid);
        Ledger {
            stock_before: BTreeMap::from([("i".into(), 10)]),
            stock_after: BTreeMap::from([("i".into(), 10 - sold)]),
            credit_before: BTreeMap::from([("a".into(), 10), ("b".into(), 10)]),
            credit_after: BTreeMap::from([
                ("a".into(), 10 - 6 * i64::from(o1_paid)),
                ("b".into(), 10 - 4 * i64::from(o2_paid)),
            ]),
            orders: vec![order("o1", "a", 3, o1_paid), order("o2", "b", 2, o2_paid)],
            answered_paid: BTreeSet::new(),
        }
    }

    #[test]
    fn a_run_whose_sums_agree_with_the_paid_orders_holds() {
        for (p1, p2) in [(false, false), (true, false), (true, true)] {
            let mut l = ledger(p1, p2);
            if p1 {
                l.answered_paid.insert("o1".into());
            }
            assert_eq!(check(&l), vec![], "{p1} {p2}");
        }
    }

    #[test]
    fn stock_taken_for_an_order_that_is_not_paid_is_found() {
        let mut l = ledger(true, false);
        *l.stock_after.get_mut("i").unwrap() -= 2;
        assert_eq!(
            check(&l),
            vec![Violation::Stock {
                item: "i".into(),
                before: 10,
                after: 5,
                sold: 3
            }]
        );
    }

    #[test]
    fn a_paid_order_whose_money_was_not_taken_is_found() {
        let mut l = ledger(true, true);
        *l.credit_after.get_mut("b").unwrap() += 4;
        assert_eq!(
            check(&l),
            vec![Violation::Credit {
                user: "b".into(),
                before: 10,
                after: 10,
                charged: 4
            }]
        );
    }

    #[test]
    fn a_checkout_answered_paid_that_is_not_paid_is_a_lost_write() {
        let mut l = ledger(true, false);
        l.answered_paid.insert("o2".into());
        assert_eq!(
            check(&l),
            vec![Violation::LostCheckout { order: "o2".into() }]
        );
    }

    #[test]
    fn a_key_missing_after_the_run_is_unaccounted() {
        let mut l = ledger(false, false);
        l.credit_after.remove("a");
        assert_eq!(
            check(&l),
            vec![Violation::Unaccounted {
                key: "credit/a".into()
            }]
        );
    }
}
