//! The order, payment and stock domain as plain state machines: a command and
//! a key-value view of the replica's state in, a reply or a business
//! rejection out. No I/O, no clocks, no randomness that is not in the command,
//! so every replica applying the same log reaches the same state.

pub mod order;
pub mod payment;
pub mod stock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use order::Order;
pub use payment::User;
pub use stock::Item;

/// The largest `n` a `batch_init` may ask for, so that applying one log
/// entry stays bounded (a few seconds at most).
pub const MAX_BATCH_INIT: u64 = 1_000_000;

/// The keyspaces of the replicated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Table {
    Items,
    Users,
    Orders,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Items, Table::Users, Table::Orders];
}

/// Storage failures are not business outcomes: they stop the replica.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// What the domain needs from a replica's store: get and put values by key.
pub trait StateStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;
}

fn get_value<T: DeserializeOwned>(
    store: &dyn StateStore,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.get(table, key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError(format!("corrupt {table:?} value for {key:?}: {e}"))),
    }
}

fn put_value<T: Serialize>(
    store: &mut dyn StateStore,
    table: Table,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|e| StoreError(e.to_string()))?;
    store.put(table, key, &bytes)
}

/// A state-changing command. Part of the Raft log format: add variants and
/// `#[serde(default)]` fields, never change the meaning of existing ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    CreateItem {
        item_id: String,
        price: i64,
    },
    AddStock {
        item_id: String,
        amount: i64,
    },
    SubtractStock {
        item_id: String,
        amount: i64,
    },
    /// Subtract every listed quantity or none (an item listed twice counts twice).
    SubtractStockBatch {
        items: Vec<(String, i64)>,
    },
    /// Give back what a `SubtractStockBatch` took (compensation).
    AddStockBatch {
        items: Vec<(String, i64)>,
    },
    BatchInitItems {
        n: u64,
        starting_stock: i64,
        price: i64,
    },
    CreateUser {
        user_id: String,
    },
    AddFunds {
        user_id: String,
        amount: i64,
    },
    Pay {
        user_id: String,
        amount: i64,
    },
    BatchInitUsers {
        n: u64,
        starting_money: i64,
    },
    CreateOrder {
        order_id: String,
        user_id: String,
    },
    AddItem {
        order_id: String,
        item_id: String,
        quantity: i64,
        price: i64,
    },
    MarkPaid {
        order_id: String,
    },
    BatchInitOrders {
        n: u64,
        n_items: u64,
        n_users: u64,
        item_price: i64,
        seed: u64,
    },
}

/// A linearizable read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Query {
    FindItem { item_id: String },
    FindUser { user_id: String },
    FindOrder { order_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Created {
        id: String,
    },
    Initialized {
        count: u64,
    },
    /// `newly` is false when the order was already paid.
    Paid {
        newly: bool,
    },
    Item(Item),
    User(User),
    Order(Order),
}

/// A business failure: answered with a 4xx, never a 5xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub error: String,
    pub message: String,
}

impl Rejection {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_string(),
            message: message.into(),
        }
    }

    fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            &format!("{what}_not_found"),
            format!("{what} {id:?} not found"),
        )
    }

    fn overflow(what: &str) -> Self {
        Self::new("out_of_range", format!("{what} would leave 0..=i64::MAX"))
    }

    fn negative(what: &str) -> Self {
        Self::new("invalid_number", format!("{what} must not be negative"))
    }
}

/// The result of one command or query, as replicated and as answered.
pub type Outcome = Result<Reply, Rejection>;

/// `Ok(Ok(..))` applied, `Ok(Err(..))` refused by the business rules with no
/// change, `Err(..)` the store failed.
pub fn apply(store: &mut dyn StateStore, cmd: &Command) -> Result<Outcome, StoreError> {
    match cmd {
        Command::CreateItem { .. }
        | Command::AddStock { .. }
        | Command::SubtractStock { .. }
        | Command::SubtractStockBatch { .. }
        | Command::AddStockBatch { .. }
        | Command::BatchInitItems { .. } => stock::apply(store, cmd),
        Command::CreateUser { .. }
        | Command::AddFunds { .. }
        | Command::Pay { .. }
        | Command::BatchInitUsers { .. } => payment::apply(store, cmd),
        Command::CreateOrder { .. }
        | Command::AddItem { .. }
        | Command::MarkPaid { .. }
        | Command::BatchInitOrders { .. } => order::apply(store, cmd),
    }
}

pub fn query(store: &dyn StateStore, query: &Query) -> Result<Outcome, StoreError> {
    Ok(match query {
        Query::FindItem { item_id } => get_value::<Item>(store, Table::Items, item_id)?
            .map(Reply::Item)
            .ok_or_else(|| Rejection::not_found("item", item_id)),
        Query::FindUser { user_id } => get_value::<User>(store, Table::Users, user_id)?
            .map(Reply::User)
            .ok_or_else(|| Rejection::not_found("user", user_id)),
        Query::FindOrder { order_id } => get_value::<Order>(store, Table::Orders, order_id)?
            .map(Reply::Order)
            .ok_or_else(|| Rejection::not_found("order", order_id)),
    })
}

fn check_batch_size(n: u64) -> Result<(), Rejection> {
    if n > MAX_BATCH_INIT {
        return Err(Rejection::new(
            "invalid_number",
            format!("n must be at most {MAX_BATCH_INIT}"),
        ));
    }
    Ok(())
}

/// An in-memory store for unit tests of the domain.
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default, Clone, PartialEq, Eq, Debug)]
    pub struct MemoryStore(pub BTreeMap<(u8, String), Vec<u8>>);

    fn tag(t: Table) -> u8 {
        t as u8
    }

    impl StateStore for MemoryStore {
        fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(&(tag(table), key.to_string())).cloned())
        }
        fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.0.insert((tag(table), key.to_string()), value.to_vec());
            Ok(())
        }
    }

    pub fn run(store: &mut MemoryStore, cmd: Command) -> Outcome {
        apply(store, &cmd).unwrap()
    }

    pub fn ask(store: &MemoryStore, q: Query) -> Outcome {
        query(store, &q).unwrap()
    }
}
