//! `cart-checker`: histories of operations against the cart API, and the
//! checks run on them after a fault run (Jepsen's way): every operation with the time it
//! was invoked and the time it completed, its arguments and its answer, or
//! no answer at all (a timeout: it may or may not have happened).
//!
//! - [`linearizable`]: per key, is there an order of the operations, each
//!   placed between its invocation and its completion, in which every
//!   answer is the one a single copy of the value would give?
//! - [`bank`]: is every unit of stock and credit accounted for by the
//!   orders that were paid, and is every checkout answered "paid" paid?
//!
//! A lost acknowledged write of stock or credit shows as a key that is not
//! linearizable: a history ends with a read of every key after the faults
//! heal, and that read must see every acknowledged write.

pub mod api;
pub mod bank;
pub mod linearizable;
pub mod record;

use serde::{Deserialize, Serialize};

/// One operation of a history. Times are microseconds from the start of
/// the run, on the recording client's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (connection or task) that ran it; a client runs one
    /// operation at a time.
    pub client: u32,
    pub invoked_us: u64,
    /// `None`: no answer came (timed out, connection lost); the operation
    /// may have taken effect at any time after its invocation, or never.
    pub completed_us: Option<u64>,
    pub call: Call,
    pub answer: Answer,
}

/// What was asked. Keys name one value: `stock/<item id>` or
/// `credit/<user id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// `GET /stock/find/<item>` or `GET /payment/find_user/<user>`.
    Read { key: String },
    /// `POST /stock/add/<item>/<n>` or `POST /payment/add_funds/<user>/<n>`.
    Add { key: String, amount: i64 },
    /// `POST /stock/subtract/<item>/<n>` or `POST /payment/pay/<user>/<n>`:
    /// refused, changing nothing, when the value is less than `amount`.
    Subtract { key: String, amount: i64 },
}

impl Call {
    pub fn key(&self) -> &str {
        match self {
            Self::Read { key } | Self::Add { key, .. } | Self::Subtract { key, .. } => key,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Answer {
    /// A read's value.
    Value { value: i64 },
    /// A write applied (2xx).
    Ok,
    /// A write refused by the business rules (4xx): nothing changed.
    Refused,
    /// No definite answer (timeout, 5xx, lost connection): it may or may
    /// not have happened.
    Unknown,
}
