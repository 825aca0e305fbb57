//! Payment: users with a credit balance.

use cart_common::shard::part_holds;
use serde::{Deserialize, Serialize};

use super::steps::{compensate_once, run_once, Effect};
use super::{
    check_batch_size, get_value, put_value, Command, Outcome, Rejection, RejectionCode, Reply,
    StateStore, StoreError, Table,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub credit: i64,
}

pub(super) fn apply(
    store: &mut dyn StateStore,
    cmd: &Command,
    ts_ms: u64,
) -> Result<Outcome, StoreError> {
    match cmd {
        Command::CreateUser { user_id } => {
            if store.get(Table::Users, user_id)?.is_some() {
                return Ok(Err(Rejection::new(
                    RejectionCode::Exists,
                    format!("user {user_id:?} exists"),
                )));
            }
            put_value(store, Table::Users, user_id, &User { credit: 0 })?;
            Ok(Ok(Reply::Created {
                id: user_id.clone(),
            }))
        }
        Command::AddFunds { user_id, amount } => change(store, user_id, *amount, 1),
        Command::Pay { user_id, amount } => change(store, user_id, *amount, -1),
        Command::Charge {
            tx_id,
            user_id,
            amount,
        } => {
            let effect = Effect::Charge {
                user_id: user_id.clone(),
                amount: *amount,
            };
            run_once(store, tx_id, ts_ms, effect, |s| {
                change(s, user_id, *amount, -1)
            })
        }
        Command::Refund { tx_id } => compensate_once(store, tx_id, ts_ms, refund),
        Command::BatchInitUsers {
            n,
            starting_money,
            part,
        } => {
            if let Err(r) = check_batch_size(*n) {
                return Ok(Err(r));
            }
            if *starting_money < 0 {
                return Ok(Err(Rejection::negative("starting money")));
            }
            let user = User {
                credit: *starting_money,
            };
            let mut count = 0;
            for id in (0..*n).map(|i| i.to_string()) {
                if part_holds(*part, &id) {
                    put_value(store, Table::Users, &id, &user)?;
                    count += 1;
                }
            }
            Ok(Ok(Reply::Initialized { count }))
        }
        _ => Ok(Err(Rejection::new(
            RejectionCode::WrongService,
            "not a payment command",
        ))),
    }
}

/// Gives back a charge. Saturates rather than fail: a compensation must
/// complete, and credit near i64::MAX is not a real account.
fn refund(store: &mut dyn StateStore, effect: &Effect) -> Result<(), StoreError> {
    let Effect::Charge { user_id, amount } = effect else {
        return Err(StoreError(format!("payment cannot undo {effect:?}")));
    };
    if let Some(mut user) = get_value::<User>(store, Table::Users, user_id)? {
        user.credit = user.credit.saturating_add(*amount);
        put_value(store, Table::Users, user_id, &user)?;
    }
    Ok(())
}

fn change(
    store: &mut dyn StateStore,
    user_id: &str,
    amount: i64,
    sign: i64,
) -> Result<Outcome, StoreError> {
    if amount < 0 {
        return Ok(Err(Rejection::negative("amount")));
    }
    let Some(mut user) = get_value::<User>(store, Table::Users, user_id)? else {
        return Ok(Err(Rejection::not_found(
            RejectionCode::UserNotFound,
            "user",
            user_id,
        )));
    };
    if sign < 0 {
        if user.credit < amount {
            return Ok(Err(Rejection::new(
                RejectionCode::InsufficientCredit,
                // The reason only: an answer never carries a balance.
                "not enough credit",
            )));
        }
        user.credit -= amount;
    } else {
        match user.credit.checked_add(amount) {
            Some(c) => user.credit = c,
            None => return Ok(Err(Rejection::overflow("credit"))),
        }
    }
    put_value(store, Table::Users, user_id, &user)?;
    Ok(Ok(Reply::Done))
}

#[cfg(test)]
mod tests {
    use super::super::memory::{ask, run, MemoryStore};
    use super::super::Query;
    use super::*;

    fn credit(s: &MemoryStore, id: &str) -> i64 {
        match ask(s, Query::FindUser { user_id: id.into() }) {
            Ok(Reply::User(u)) => u.credit,
            other => panic!("{other:?}"),
        }
    }

    fn funded(credit: i64) -> MemoryStore {
        let mut s = MemoryStore::default();
        run(
            &mut s,
            Command::BatchInitUsers {
                n: 3,
                starting_money: credit,
                part: None,
            },
        )
        .unwrap();
        s
    }

    #[test]
    fn new_user_has_zero_credit() {
        let mut s = MemoryStore::default();
        run(
            &mut s,
            Command::CreateUser {
                user_id: "u".into(),
            },
        )
        .unwrap();
        assert_eq!(credit(&s, "u"), 0);
    }

    #[test]
    fn pay_more_than_credit_is_refused_and_changes_nothing() {
        let mut s = funded(10);
        let r = run(
            &mut s,
            Command::Pay {
                user_id: "2".into(),
                amount: 11,
            },
        );
        assert_eq!(r.unwrap_err().error, "insufficient_credit");
        assert_eq!(credit(&s, "2"), 10);
        run(
            &mut s,
            Command::Pay {
                user_id: "2".into(),
                amount: 10,
            },
        )
        .unwrap();
        assert_eq!(credit(&s, "2"), 0);
    }

    #[test]
    fn funds_past_i64_max_are_refused() {
        let mut s = funded(i64::MAX);
        let r = run(
            &mut s,
            Command::AddFunds {
                user_id: "0".into(),
                amount: 1,
            },
        );
        assert_eq!(r.unwrap_err().error, "out_of_range");
        assert_eq!(credit(&s, "0"), i64::MAX);
    }

    #[test]
    fn unknown_user_and_oversized_batch_are_refused() {
        let mut s = funded(1);
        let r = run(
            &mut s,
            Command::AddFunds {
                user_id: "x".into(),
                amount: 1,
            },
        );
        assert_eq!(r.unwrap_err().error, "user_not_found");
        let r = run(
            &mut s,
            Command::BatchInitUsers {
                n: super::super::MAX_BATCH_INIT + 1,
                starting_money: 1,
                part: None,
            },
        );
        assert_eq!(r.unwrap_err().error, "invalid_number");
    }
}
