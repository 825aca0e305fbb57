//! The Raft group of one service: openraft's type configuration, the log
//! entry format, and the storage and network adapters.

mod append_budget;
mod commit_push;
pub mod handover;
mod lazy_hurry;
pub mod lease;
pub mod log_engine;
mod log_import;
mod log_state;
pub mod log_store;
mod log_writer;
pub mod network;
pub mod progress;
pub mod proposer;
pub mod read_barrier;
pub mod read_index;
pub mod read_lease;
pub mod snapshot;
pub mod state_machine;

use serde::{Deserialize, Serialize};
use std::io::Cursor;

use crate::domain::{Command, Outcome};

/// Current version of `LogCommand`; a node refuses to apply a newer one
/// rather than misread it. Version 2: an entry carries `Proposals`.
/// Version 3: a client write carries its operation's fingerprint, and an
/// order holds at most `domain::order::MAX_LINES` lines. Version 4: a
/// command that keeps its own record (`Command::keeps_own_record`: the
/// saga's steps and decisions, the forgets) is not remembered by request id.
pub const LOG_FORMAT_VERSION: u16 = 4;
/// The first format whose self-recording commands are not remembered.
pub const FORMAT_OWN_RECORDS: u16 = 4;

/// One client write as it sits in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCommand {
    pub v: u16,
    /// Remembered for a window so that a retry applies once.
    pub request_id: String,
    /// The client operation the id was given for (`request_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<u64>,
    /// The proposing leader's wall clock; only used to forget old request ids.
    pub ts_ms: u64,
    pub cmd: Command,
}

impl LogCommand {
    pub fn key(&self) -> crate::request_key::RequestKey {
        crate::request_key::RequestKey {
            request_id: self.request_id.clone(),
            fingerprint: self.fingerprint,
        }
    }
}

impl std::fmt::Display for LogCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{:?}", self.request_id, self.cmd)
    }
}

/// What one Raft entry carries: client writes proposed together, applied in
/// order, each under its own request id with its own outcome. Under load the
/// leader's proposer batches concurrent writes into one entry, so they share
/// one log append, one fsync per replica and one apply transaction; when idle
/// an entry holds one write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposals(pub Vec<LogCommand>);

impl From<LogCommand> for Proposals {
    fn from(command: LogCommand) -> Self {
        Self(vec![command])
    }
}

impl std::fmt::Display for Proposals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => one.fmt(f),
            many => write!(f, "{} writes", many.len()),
        }
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Proposals,
        R = Vec<Outcome>,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

pub(crate) fn storage_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    let e = std::io::Error::other(e.to_string());
    openraft::StorageIOError::new(subject, verb, &e).into()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Log entries for the log's unit tests.
#[cfg(test)]
pub(crate) mod test_entries {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::{NodeId, Proposals, TypeConfig};

    pub fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// An entry of no writes at `index` of `term`.
    pub fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Normal(Proposals(Vec::new())),
        }
    }
}
