//! The participant side of the checkout saga (payment's charge, stock's
//! take): every step carries the transaction id, and the participant keeps
//! one record per transaction id, so that
//!
//! - a step applied twice has the effect of once (the second answers as the
//!   first did, also a refusal);
//! - a compensation undoes an applied step once, and for a step that never
//!   arrived leaves a tombstone, so a late arrival of that step is refused.
//!
//! Records are forgotten through the log (`ForgetSteps`) below a watermark
//! the order group's leader computes: older than any unfinished checkout and
//! than the longest possible retry.

use serde::{Deserialize, Serialize};

use super::{
    get_value, put_value, Outcome, Rejection, RejectionCode, Reply, StateStore, StoreError, Table,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub state: StepState,
    /// Log time of the entry that created the record.
    pub ts_ms: u64,
    /// What an applied step did, so that it can be undone.
    #[serde(default)]
    pub effect: Option<Effect>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    Applied,
    /// The business rules refused it; nothing changed, and it stays refused.
    Refused {
        error: RejectionCode,
        message: String,
    },
    /// Applied, then undone.
    Compensated,
    /// Compensated before it arrived: it will be refused if it does.
    Tombstone,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    Charge { user_id: String, amount: i64 },
    TakeStock { items: Vec<(String, i64)> },
}

/// Runs a step once per transaction id: `apply` makes the change (or
/// refuses it with no change) the first time; later deliveries get the
/// recorded answer.
pub(super) fn run_once(
    store: &mut dyn StateStore,
    tx_id: &str,
    ts_ms: u64,
    effect: Effect,
    apply: impl FnOnce(&mut dyn StateStore) -> Result<Outcome, StoreError>,
) -> Result<Outcome, StoreError> {
    if let Some(step) = get_value::<Step>(store, Table::Steps, tx_id)? {
        return Ok(recorded_answer(tx_id, &step.state));
    }
    let outcome = apply(store)?;
    let state = match &outcome {
        Ok(_) => StepState::Applied,
        Err(r) => StepState::Refused {
            error: r.error,
            message: r.message.clone(),
        },
    };
    let effect = outcome.is_ok().then_some(effect);
    record(
        store,
        tx_id,
        &Step {
            state,
            ts_ms,
            effect,
        },
    )?;
    Ok(outcome)
}

/// Undoes the step of `tx_id` once if it was applied, or leaves a tombstone
/// if it never arrived. Always succeeds: a compensation must not get stuck.
pub(super) fn compensate_once(
    store: &mut dyn StateStore,
    tx_id: &str,
    ts_ms: u64,
    undo: impl FnOnce(&mut dyn StateStore, &Effect) -> Result<(), StoreError>,
) -> Result<Outcome, StoreError> {
    match get_value::<Step>(store, Table::Steps, tx_id)? {
        None => {
            let tombstone = Step {
                state: StepState::Tombstone,
                ts_ms,
                effect: None,
            };
            record(store, tx_id, &tombstone)?;
        }
        Some(mut step) if step.state == StepState::Applied => {
            if let Some(effect) = &step.effect {
                undo(store, effect)?;
            }
            step.state = StepState::Compensated;
            put_value(store, Table::Steps, tx_id, &step)?;
        }
        // Refused, compensated or tombstoned: nothing to undo.
        Some(_) => {}
    }
    Ok(Ok(Reply::Done))
}

fn recorded_answer(tx_id: &str, state: &StepState) -> Outcome {
    match state {
        StepState::Applied => Ok(Reply::Done),
        StepState::Refused { error, message } => Err(Rejection::new(*error, message.clone())),
        StepState::Compensated | StepState::Tombstone => Err(Rejection::new(
            RejectionCode::TransactionAborted,
            format!("transaction {tx_id:?} was aborted"),
        )),
    }
}

fn record(store: &mut dyn StateStore, tx_id: &str, step: &Step) -> Result<(), StoreError> {
    put_value(store, Table::Steps, tx_id, step)?;
    store.put(Table::StepsByTime, &time_key(step.ts_ms, tx_id), &[])
}

/// Key of a time index: sorts by time, then id.
pub(crate) fn time_key(ts_ms: u64, id: &str) -> String {
    format!("{ts_ms:020}|{id}")
}

/// Most records one `Forget…` entry removes, so applying it stays quick; the
/// next one continues.
pub const FORGET_BATCH: usize = 10_000;

/// Removes the records of `records` indexed in `index` before `before_ms`.
pub(crate) fn forget_before(
    store: &mut dyn StateStore,
    records: Table,
    index: Table,
    before_ms: u64,
) -> Result<Outcome, StoreError> {
    let below = time_key(before_ms, "");
    let keys = store.keys(index, Some(&below), FORGET_BATCH)?;
    for key in &keys {
        if let Some((_, id)) = key.split_once('|') {
            store.delete(records, id)?;
        }
        store.delete(index, key)?;
    }
    Ok(Ok(Reply::Forgotten {
        count: keys.len() as u64,
    }))
}

pub(super) fn find(store: &dyn StateStore, tx_id: &str) -> Result<Outcome, StoreError> {
    Ok(get_value::<Step>(store, Table::Steps, tx_id)?
        .map(Reply::Step)
        .ok_or_else(|| Rejection::not_found(RejectionCode::StepNotFound, "step", tx_id)))
}

#[cfg(test)]
mod tests {
    use super::super::memory::{ask, run, run_at, MemoryStore};
    use super::super::{Command, Query};
    use super::*;

    fn credit(s: &MemoryStore) -> i64 {
        match ask(
            s,
            Query::FindUser {
                user_id: "0".into(),
            },
        ) {
            Ok(Reply::User(u)) => u.credit,
            other => panic!("{other:?}"),
        }
    }

    fn user_with(credit: i64) -> MemoryStore {
        let mut s = MemoryStore::default();
        let init = Command::BatchInitUsers {
            n: 1,
            starting_money: credit,
            part: None,
        };
        run(&mut s, init).unwrap();
        s
    }

    fn charge(tx: &str, amount: i64) -> Command {
        Command::Charge {
            tx_id: tx.into(),
            user_id: "0".into(),
            amount,
        }
    }

    fn refund(tx: &str) -> Command {
        Command::Refund { tx_id: tx.into() }
    }

    #[test]
    fn a_step_delivered_twice_applies_once() {
        let mut s = user_with(10);
        assert_eq!(run(&mut s, charge("t", 4)), Ok(Reply::Done));
        assert_eq!(run(&mut s, charge("t", 4)), Ok(Reply::Done));
        assert_eq!(credit(&s), 6);
    }

    #[test]
    fn a_refused_step_stays_refused_even_if_it_could_now_apply() {
        let mut s = user_with(1);
        assert_eq!(
            run(&mut s, charge("t", 4)).unwrap_err().error,
            "insufficient_credit"
        );
        run(
            &mut s,
            Command::AddFunds {
                user_id: "0".into(),
                amount: 10,
            },
        )
        .unwrap();
        assert_eq!(
            run(&mut s, charge("t", 4)).unwrap_err().error,
            "insufficient_credit"
        );
        assert_eq!(credit(&s), 11);
    }

    #[test]
    fn a_compensation_undoes_once() {
        let mut s = user_with(10);
        run(&mut s, charge("t", 4)).unwrap();
        run(&mut s, refund("t")).unwrap();
        run(&mut s, refund("t")).unwrap();
        assert_eq!(credit(&s), 10);
        // The step arriving again after its compensation is refused.
        assert_eq!(
            run(&mut s, charge("t", 4)).unwrap_err().error,
            "transaction_aborted"
        );
        assert_eq!(credit(&s), 10);
    }

    #[test]
    fn a_compensation_before_its_step_leaves_the_late_step_refused() {
        let mut s = user_with(10);
        run(&mut s, refund("t")).unwrap();
        assert_eq!(credit(&s), 10);
        assert_eq!(
            run(&mut s, charge("t", 4)).unwrap_err().error,
            "transaction_aborted"
        );
        assert_eq!(credit(&s), 10);
        match ask(&s, Query::FindStep { tx_id: "t".into() }) {
            Ok(Reply::Step(step)) => assert_eq!(step.state, StepState::Tombstone),
            other => panic!("{other:?}"),
        }
    }

    /// Stock's step applies once and stays refused like payment's.
    #[test]
    fn stock_steps_apply_once_and_stay_refused() {
        let mut s = shelf(5);
        let take = |tx: &str, qty: i64| Command::TakeStock {
            tx_id: tx.into(),
            items: vec![("0".into(), qty)],
        };
        let stock = stock_of_item_0;
        run(&mut s, take("a", 2)).unwrap();
        run(&mut s, take("a", 2)).unwrap();
        assert_eq!(stock(&s), 3);
        assert_eq!(
            run(&mut s, take("b", 4)).unwrap_err().error,
            "insufficient_stock"
        );
        let add = Command::AddStock {
            item_id: "0".into(),
            amount: 10,
        };
        run(&mut s, add).unwrap();
        assert_eq!(
            run(&mut s, take("b", 4)).unwrap_err().error,
            "insufficient_stock"
        );
        assert_eq!(stock(&s), 13);
    }

    fn stock_of_item_0(s: &MemoryStore) -> i64 {
        match ask(
            s,
            Query::FindItem {
                item_id: "0".into(),
            },
        ) {
            Ok(Reply::Item(i)) => i.stock,
            other => panic!("{other:?}"),
        }
    }

    fn shelf(stock: i64) -> MemoryStore {
        let mut s = MemoryStore::default();
        let init = Command::BatchInitItems {
            n: 2,
            starting_stock: stock,
            price: 1,
            part: None,
        };
        run(&mut s, init).unwrap();
        s
    }

    /// The saga charges and takes stock at once, so a refused charge gives
    /// the stock back: once, every listed pair (an item listed twice too).
    #[test]
    fn returning_stock_undoes_the_take_once() {
        let mut s = shelf(5);
        let take = Command::TakeStock {
            tx_id: "t".into(),
            items: vec![("0".into(), 2), ("0".into(), 1), ("1".into(), 4)],
        };
        run(&mut s, take.clone()).unwrap();
        assert_eq!(stock_of_item_0(&s), 2);
        let give_back = Command::ReturnStock { tx_id: "t".into() };
        run(&mut s, give_back.clone()).unwrap();
        run(&mut s, give_back).unwrap();
        assert_eq!(s.table(Table::Items), shelf(5).table(Table::Items));
        assert_eq!(run(&mut s, take).unwrap_err().error, "transaction_aborted");
        assert_eq!(stock_of_item_0(&s), 5);
    }

    #[test]
    fn returning_stock_before_the_take_refuses_the_late_take() {
        let mut s = shelf(5);
        run(&mut s, Command::ReturnStock { tx_id: "t".into() }).unwrap();
        assert_eq!(stock_of_item_0(&s), 5);
        let take = Command::TakeStock {
            tx_id: "t".into(),
            items: vec![("0".into(), 2)],
        };
        assert_eq!(run(&mut s, take).unwrap_err().error, "transaction_aborted");
        assert_eq!(stock_of_item_0(&s), 5);
    }

    #[test]
    fn returning_a_refused_take_changes_nothing() {
        let mut s = shelf(1);
        let take = Command::TakeStock {
            tx_id: "t".into(),
            items: vec![("0".into(), 2)],
        };
        assert_eq!(run(&mut s, take).unwrap_err().error, "insufficient_stock");
        run(&mut s, Command::ReturnStock { tx_id: "t".into() }).unwrap();
        assert_eq!(stock_of_item_0(&s), 1);
    }

    #[test]
    fn records_below_the_watermark_are_forgotten() {
        let mut s = user_with(10);
        run_at(&mut s, charge("old", 1), 1_000).unwrap();
        run_at(&mut s, charge("new", 1), 5_000).unwrap();
        let forget = Command::ForgetSteps { before_ms: 2_000 };
        assert_eq!(run(&mut s, forget), Ok(Reply::Forgotten { count: 1 }));
        assert!(ask(
            &s,
            Query::FindStep {
                tx_id: "old".into()
            }
        )
        .is_err());
        assert!(ask(
            &s,
            Query::FindStep {
                tx_id: "new".into()
            }
        )
        .is_ok());
        assert_eq!(s.table(Table::StepsByTime).len(), 1);
    }
}
