//! The order, payment and stock domain as plain state machines: a command and
//! a key-value view of the replica's state in, a reply or a business
//! rejection out. No I/O, no clocks, no randomness that is not in the command,
//! so every replica applying the same log reaches the same state.

pub mod checkout;
pub mod checks;
pub mod order;
pub mod payment;
pub mod steps;
pub mod stock;

use cart_common::metrics::Label;
use cart_common::shard::ShardPart;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

pub use checkout::{Checkout, CheckoutReply, CheckoutState, SagaStep};
pub use checks::RepairRow;
pub use order::Order;
pub use payment::User;
pub use steps::{Effect, Step, StepState};
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
    /// Order group: transaction id → `Checkout`.
    Checkouts,
    /// Order group: order id → transaction id of its open checkout.
    OpenCheckouts,
    /// Order group: `time_key(finished, tx)` → nothing, to forget in order.
    CheckoutsByTime,
    /// Payment and stock groups: transaction id → `Step`.
    Steps,
    /// Payment and stock groups: `time_key(created, tx)` → nothing.
    StepsByTime,
    /// Every group: `time_key(finished, check id)` → `CheckReport`, the
    /// latest few consistency checks.
    Checks,
    /// Every group: request id → its remembered outcome, so a retried
    /// write applies once (kept by the state machine, not the domain).
    Requests,
    /// Every group: `time_key(ts, request id)` → nothing, to forget request
    /// ids in time order.
    RequestTimes,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Items => "items",
            Table::Users => "users",
            Table::Orders => "orders",
            Table::Checkouts => "checkouts",
            Table::OpenCheckouts => "open_checkouts",
            Table::CheckoutsByTime => "checkouts_by_time",
            Table::Steps => "steps",
            Table::StepsByTime => "steps_by_time",
            Table::Checks => "checks",
            Table::Requests => "requests",
            Table::RequestTimes => "request_times",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub const ALL: [Table; 11] = [
        Table::Items,
        Table::Users,
        Table::Orders,
        Table::Checkouts,
        Table::OpenCheckouts,
        Table::CheckoutsByTime,
        Table::Steps,
        Table::StepsByTime,
        Table::Checks,
        Table::Requests,
        Table::RequestTimes,
    ];
}

/// Storage failures are not business outcomes: they stop the replica.
#[derive(Clone, Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// What the domain needs from a replica's store: values by key, and keys in
/// order (for time indexes and open checkouts).
pub trait StateStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&mut self, table: Table, key: &str) -> Result<(), StoreError>;
    /// Up to `limit` keys from the start of `table`, below `below` if given.
    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
}

pub(crate) fn get_value<T: DeserializeOwned>(
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

pub(crate) fn put_value<T: Serialize>(
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
    /// Checkout step: subtract every listed quantity or none (an item listed
    /// twice counts twice), once per transaction.
    TakeStock {
        tx_id: String,
        items: Vec<(String, i64)>,
    },
    /// Compensation: give back what `TakeStock` of `tx_id` took, or refuse
    /// it in advance.
    ReturnStock {
        tx_id: String,
    },
    BatchInitItems {
        n: u64,
        starting_stock: i64,
        price: i64,
        /// Set when the command went to every shard: only this shard's ids.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<ShardPart>,
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
    /// Checkout step: charge the user, once per transaction.
    Charge {
        tx_id: String,
        user_id: String,
        amount: i64,
    },
    /// Compensation: give back what `Charge` of `tx_id` took, or refuse it
    /// in advance.
    Refund {
        tx_id: String,
    },
    /// Payment and stock: forget step records created before `before_ms`.
    ForgetSteps {
        before_ms: u64,
    },
    BatchInitUsers {
        n: u64,
        starting_money: i64,
        /// Set when the command went to every shard: only this shard's ids.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<ShardPart>,
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
    /// Opens a checkout of the order (or joins its open one).
    BeginCheckout {
        order_id: String,
        tx_id: String,
    },
    /// Every step applied: the order is paid.
    CommitCheckout {
        tx_id: String,
    },
    /// A step was refused: undo the ones before it.
    AbortCheckout {
        tx_id: String,
        failed: SagaStep,
        error: RejectionCode,
        message: String,
    },
    /// The compensations of an aborted checkout are done.
    FinishCheckout {
        tx_id: String,
    },
    /// Forget checkouts finished before `before_ms`.
    ForgetCheckouts {
        before_ms: u64,
    },
    /// Every replica digests its stored state at this log position
    /// (`consistency`); no change to the state.
    ComputeDigest {
        check_id: String,
    },
    /// Overwrites rows on replica `target` only, each only if it still holds
    /// what the check saw there; other replicas change nothing.
    RepairRows {
        check_id: String,
        target: u64,
        rows: Vec<RepairRow>,
    },
    /// A finished check's report.
    RecordCheck {
        report: cart_common::admin::CheckReport,
    },
    BatchInitOrders {
        n: u64,
        n_items: u64,
        n_users: u64,
        item_price: i64,
        seed: u64,
        /// Set when the command went to every shard: only this shard's ids.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        part: Option<ShardPart>,
    },
}

/// A linearizable read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Query {
    FindItem {
        item_id: String,
    },
    FindUser {
        user_id: String,
    },
    FindOrder {
        order_id: String,
    },
    FindCheckout {
        tx_id: String,
    },
    /// Started or aborting checkouts, at most `limit`.
    OpenCheckouts {
        limit: usize,
    },
    /// A payment or stock step record.
    FindStep {
        tx_id: String,
    },
    /// The latest consistency-check report.
    LatestCheck,
    /// One of the kept consistency-check reports, by its check id
    /// (`Reply::Check { report: None }` if none of them has it).
    FindCheck {
        check_id: String,
    },
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
    /// The order was already paid: nothing began. (Stored outcomes from
    /// before may still carry `"newly": false`; it is ignored.)
    Paid,
    Item(Item),
    User(User),
    Order(Order),
    Checkout(Checkout),
    Checkouts(Vec<Checkout>),
    Step(Step),
    Forgotten {
        count: u64,
    },
    /// A struct variant: serde cannot tag a newtype variant holding `None`.
    Check {
        report: Option<cart_common::admin::CheckReport>,
    },
}

/// The code of a business refusal, as answers (`error`), the log and metric
/// labels spell it (`as_str`, identical to its serde form).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, VariantArray, IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RejectionCode {
    Exists,
    WrongService,
    InvalidNumber,
    OutOfRange,
    InsufficientCredit,
    InsufficientStock,
    TooManyItems,
    AlreadyPaid,
    CheckoutInProgress,
    /// A saga decision that contradicts the one already taken.
    Conflict,
    /// A checkout step arriving after its compensation.
    TransactionAborted,
    ItemNotFound,
    UserNotFound,
    OrderNotFound,
    TransactionNotFound,
    StepNotFound,
    /// A request id reused for another operation (answered 409).
    RequestIdConflict,
    /// A log entry from a newer release.
    UnsupportedVersion,
}

impl std::fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets a code be compared with the string it is spelt as (tests, logs).
impl PartialEq<&str> for RejectionCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A business failure: answered with a 4xx, never a 5xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub error: RejectionCode,
    pub message: String,
}

impl Rejection {
    pub fn new(error: RejectionCode, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
        }
    }

    /// `error` is one of the `…_not_found` codes; `what` names the thing.
    fn not_found(error: RejectionCode, what: &str, id: &str) -> Self {
        Self::new(error, format!("{what} {id:?} not found"))
    }

    fn overflow(what: &str) -> Self {
        Self::new(
            RejectionCode::OutOfRange,
            format!("{what} would leave 0..=i64::MAX"),
        )
    }

    fn negative(what: &str) -> Self {
        Self::new(
            RejectionCode::InvalidNumber,
            format!("{what} must not be negative"),
        )
    }
}

impl Command {
    /// Whether applying it again answers from a record of its own, without
    /// changing anything: the saga's steps and compensations (one record per
    /// transaction at the participant, `steps`), its decisions (the
    /// checkout's state, `checkout`) and the forgets (nothing left to
    /// forget). Their request ids need not be remembered.
    pub fn keeps_own_record(&self) -> bool {
        matches!(
            self,
            Command::Charge { .. }
                | Command::Refund { .. }
                | Command::TakeStock { .. }
                | Command::ReturnStock { .. }
                | Command::CommitCheckout { .. }
                | Command::AbortCheckout { .. }
                | Command::FinishCheckout { .. }
                | Command::ForgetSteps { .. }
                | Command::ForgetCheckouts { .. }
        )
    }

    /// Which shard of its service the command goes to.
    pub fn routing(&self) -> Routing<'_> {
        match self {
            Command::CreateItem { item_id, .. }
            | Command::AddStock { item_id, .. }
            | Command::SubtractStock { item_id, .. } => Routing::Key(item_id),
            Command::CreateUser { user_id }
            | Command::AddFunds { user_id, .. }
            | Command::Pay { user_id, .. }
            | Command::Charge { user_id, .. } => Routing::Key(user_id),
            Command::CreateOrder { order_id, .. }
            | Command::AddItem { order_id, .. }
            | Command::BeginCheckout { order_id, .. } => Routing::Key(order_id),
            Command::BatchInitItems { .. }
            | Command::BatchInitUsers { .. }
            | Command::BatchInitOrders { .. }
            | Command::ForgetSteps { .. } => Routing::EveryShard,
            Command::TakeStock { .. }
            | Command::ReturnStock { .. }
            | Command::Refund { .. }
            | Command::CommitCheckout { .. }
            | Command::AbortCheckout { .. }
            | Command::FinishCheckout { .. }
            | Command::ForgetCheckouts { .. }
            | Command::ComputeDigest { .. }
            | Command::RepairRows { .. }
            | Command::RecordCheck { .. } => Routing::Named,
        }
    }

    /// The command as sent to one shard of `part.of` when it goes to every
    /// shard: a bulk creation makes only that shard's keys.
    pub fn for_part(mut self, part: ShardPart) -> Command {
        match &mut self {
            Command::BatchInitItems { part: p, .. }
            | Command::BatchInitUsers { part: p, .. }
            | Command::BatchInitOrders { part: p, .. } => *p = Some(part),
            _ => {}
        }
        self
    }
}

impl Query {
    /// Which shard of its service the query goes to.
    pub fn routing(&self) -> Routing<'_> {
        match self {
            Query::FindItem { item_id } => Routing::Key(item_id),
            Query::FindUser { user_id } => Routing::Key(user_id),
            Query::FindOrder { order_id } => Routing::Key(order_id),
            Query::FindCheckout { .. }
            | Query::OpenCheckouts { .. }
            | Query::FindStep { .. }
            | Query::LatestCheck
            | Query::FindCheck { .. } => Routing::Named,
        }
    }
}

/// Where a command or query goes among its service's shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing<'a> {
    /// The shard of this key (`cart_common::shard`).
    Key(&'a str),
    /// Every shard (bulk creations, garbage collection).
    EveryShard,
    /// The shard the caller names: a saga step's shard is the one its items
    /// or user live on, a check's the one being checked.
    Named,
}

/// The result of one command or query, as replicated and as answered.
pub type Outcome = Result<Reply, Rejection>;

/// `Ok(Ok(..))` applied, `Ok(Err(..))` refused by the business rules with no
/// change, `Err(..)` the store failed. `ts_ms` is the log entry's time (the
/// proposing leader's clock), the only clock the domain sees.
pub fn apply(store: &mut dyn StateStore, cmd: &Command, ts_ms: u64) -> Result<Outcome, StoreError> {
    match cmd {
        Command::CreateItem { .. }
        | Command::AddStock { .. }
        | Command::SubtractStock { .. }
        | Command::TakeStock { .. }
        | Command::ReturnStock { .. }
        | Command::BatchInitItems { .. } => stock::apply(store, cmd, ts_ms),
        Command::CreateUser { .. }
        | Command::AddFunds { .. }
        | Command::Pay { .. }
        | Command::Charge { .. }
        | Command::Refund { .. }
        | Command::BatchInitUsers { .. } => payment::apply(store, cmd, ts_ms),
        Command::ForgetSteps { before_ms } => {
            steps::forget_before(store, Table::Steps, Table::StepsByTime, *before_ms)
        }
        Command::BeginCheckout { order_id, tx_id } => {
            checkout::begin(store, order_id, tx_id, ts_ms)
        }
        Command::CommitCheckout { tx_id } => checkout::commit(store, tx_id, ts_ms),
        Command::AbortCheckout {
            tx_id,
            failed,
            error,
            message,
        } => checkout::abort(store, tx_id, *failed, *error, message),
        Command::FinishCheckout { tx_id } => checkout::finish(store, tx_id, ts_ms),
        Command::ForgetCheckouts { before_ms } => checkout::forget(store, *before_ms),
        // Their effects are the state machine's (they depend on the replica:
        // a digest of its store, a repair of one replica).
        Command::ComputeDigest { .. } | Command::RepairRows { .. } => Ok(Ok(Reply::Done)),
        Command::RecordCheck { report } => checks::record(store, report),
        Command::CreateOrder { .. } | Command::AddItem { .. } | Command::BatchInitOrders { .. } => {
            order::apply(store, cmd)
        }
    }
}

pub fn query(store: &dyn StateStore, query: &Query) -> Result<Outcome, StoreError> {
    Ok(match query {
        Query::FindItem { item_id } => get_value::<Item>(store, Table::Items, item_id)?
            .map(Reply::Item)
            .ok_or_else(|| Rejection::not_found(RejectionCode::ItemNotFound, "item", item_id)),
        Query::FindUser { user_id } => get_value::<User>(store, Table::Users, user_id)?
            .map(Reply::User)
            .ok_or_else(|| Rejection::not_found(RejectionCode::UserNotFound, "user", user_id)),
        Query::FindOrder { order_id } => get_value::<Order>(store, Table::Orders, order_id)?
            .map(Reply::Order)
            .ok_or_else(|| Rejection::not_found(RejectionCode::OrderNotFound, "order", order_id)),
        Query::FindCheckout { tx_id } => return checkout::find(store, tx_id),
        Query::OpenCheckouts { limit } => return checkout::open(store, *limit),
        Query::FindStep { tx_id } => return steps::find(store, tx_id),
        Query::LatestCheck => return checks::latest(store),
        Query::FindCheck { check_id } => return checks::find(store, check_id),
    })
}

fn check_batch_size(n: u64) -> Result<(), Rejection> {
    if n > MAX_BATCH_INIT {
        return Err(Rejection::new(
            RejectionCode::InvalidNumber,
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

    impl MemoryStore {
        /// One table's rows, to compare what a command changed.
        pub fn table(&self, table: Table) -> Vec<(String, Vec<u8>)> {
            self.0
                .iter()
                .filter(|((t, _), _)| *t == tag(table))
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect()
        }
    }

    impl StateStore for MemoryStore {
        fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.get(&(tag(table), key.to_string())).cloned())
        }
        fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
            self.0.insert((tag(table), key.to_string()), value.to_vec());
            Ok(())
        }
        fn delete(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
            self.0.remove(&(tag(table), key.to_string()));
            Ok(())
        }
        fn keys(
            &self,
            table: Table,
            below: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>, StoreError> {
            Ok(self
                .0
                .keys()
                .filter(|(t, k)| *t == tag(table) && below.is_none_or(|b| k.as_str() < b))
                .map(|(_, k)| k.clone())
                .take(limit)
                .collect())
        }
    }

    /// Applies at log time 1000.
    pub fn run(store: &mut MemoryStore, cmd: Command) -> Outcome {
        run_at(store, cmd, 1000)
    }

    pub fn run_at(store: &mut MemoryStore, cmd: Command, ts_ms: u64) -> Outcome {
        apply(store, &cmd, ts_ms).unwrap()
    }

    pub fn ask(store: &MemoryStore, q: Query) -> Outcome {
        query(store, &q).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_codes_serialize_as_their_names_and_back() {
        for code in RejectionCode::all() {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<RejectionCode>(&json).unwrap(), code);
        }
        let r = Rejection::new(RejectionCode::InsufficientCredit, "not enough credit");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({ "error": "insufficient_credit", "message": "not enough credit" })
        );
    }

    #[test]
    fn stored_already_paid_outcomes_with_newly_still_read() {
        let old: Outcome = serde_json::from_str(r#"{"Ok":{"kind":"paid","newly":false}}"#).unwrap();
        assert_eq!(old, Ok(Reply::Paid));
        assert_eq!(
            serde_json::from_str::<Outcome>(
                &serde_json::to_string(&Ok::<_, Rejection>(Reply::Paid)).unwrap()
            )
            .unwrap(),
            Ok(Reply::Paid)
        );
    }
}
