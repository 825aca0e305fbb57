//! Where a node keeps what it replicates: one trait, `Backend`, with two
//! implementations — the embedded in-memory store (default) and MongoDB (a
//! database per node). Everything above it (state machine, digests, repair,
//! queries, sagas) sees only the trait and the domain's `StateStore` views.
//!
//! The Raft log and vote stay in the node's segment log whatever the
//! backend (`raft::log_engine`): they must be fsynced on every append, and
//! a local append is far cheaper than a round trip to a server. What lives
//! where is described in docs/storage.md.

pub mod embedded;
pub mod health;
pub mod mongo;
mod overlay;

use std::sync::Arc;

use cart_common::shard::Shard;
use cart_common::spec::{ClusterSpec, NodeId, Service, StorageBackend};

pub use crate::domain::{StateStore, StoreError, Table};
pub use health::Health;

/// The state machine's own bookkeeping, written with every batch: the last
/// applied log id and the last membership (JSON).
pub const LAST_APPLIED: &str = "last_applied";
pub const MEMBERSHIP: &str = "membership";

/// Bookkeeping values to write together with a batch.
pub type Meta<'a> = &'a [(&'static str, Vec<u8>)];

/// A function applying one batch of commands through a write view; a
/// backend calls it exactly once per batch.
pub type ApplyFn<'a> = &'a mut dyn FnMut(&mut dyn StateStore) -> Result<(), StoreError>;

/// What a node keeps of its replicated state.
pub trait Backend: Send + Sync {
    fn kind(&self) -> StorageBackend;

    /// Whether the state is still there after the process restarts. The
    /// embedded store's is not: the state machine restores it from its
    /// snapshot, and the log replays the rest.
    fn survives_restart(&self) -> bool {
        true
    }

    /// A view for queries. Each read sees committed batches only.
    fn reader(&self) -> Result<Box<dyn StateStore + Send>, StoreError>;

    /// Applies one batch: `apply` runs the commands against a write view,
    /// then the writes and `meta` are committed as one unit: after a crash
    /// either all of them are visible or none is (redb: one transaction;
    /// MongoDB: a redo record, see `mongo`). Commits need not be durable
    /// until `flush`: the Raft log replays what a crash loses.
    /// `index` is the log index of the batch's last entry.
    fn apply(&self, index: u64, meta: Meta<'_>, apply: ApplyFn<'_>) -> Result<(), StoreError>;

    /// A bookkeeping value as of the last committed batch.
    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A consistent, unchanging view of every table and the bookkeeping as
    /// of the last committed batch, to digest or to ship as a snapshot.
    fn freeze(&self) -> Result<Arc<dyn Frozen>, StoreError>;

    /// Replaces the whole state with `rows` and `meta` (installing a
    /// snapshot), all or nothing; durably where the backend keeps its state
    /// itself (the embedded store's durable form is the snapshot file the
    /// state machine saves next).
    fn replace(
        &self,
        index: u64,
        rows: &mut dyn Iterator<Item = Row>,
        meta: Meta<'_>,
    ) -> Result<(), StoreError>;

    /// Makes every committed batch durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Keys in a table, for status and tests.
    fn count(&self, table: Table) -> Result<u64, StoreError>;

    /// Fault injection: changes (or deletes) one stored row directly,
    /// bypassing Raft and the bookkeeping, as disk corruption would.
    fn corrupt(&self, table: Table, key: &str, value: Option<&[u8]>) -> Result<(), StoreError>;

    /// Forgets everything this node stored here (before a rebuild).
    fn wipe(&self) -> Result<(), StoreError>;

    /// Checks that the storage answers (reported to the node's health), so
    /// an idle node notices a failure, and a recovery, on its own.
    fn ping(&self) -> Result<(), StoreError>;

    /// Fault injection for tests: the next `apply` stops at `at` and fails,
    /// as if the process died there; the backend must then be reopened.
    fn crash_next_apply(&self, at: CrashPoint);
}

/// Where a simulated crash stops a batch's commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Before the batch is committed: none of it may survive.
    BeforeCommit,
    /// Right after the commit point, before anything else (MongoDB: the
    /// redo header is written, no table yet): all of it must survive.
    AfterCommit,
    /// MongoDB: the tables are written, the bookkeeping not yet. redb: as
    /// `AfterCommit`. All of it must survive.
    MidApply,
}

/// One stored row: table, key, value bytes.
pub type Row = Result<(Table, String, Vec<u8>), StoreError>;

/// A frozen view of a backend.
pub trait Frozen: Send + Sync {
    /// Calls `f` with every row of `table`, in no particular order.
    fn scan(&self, table: Table, f: &mut dyn FnMut(&str, &[u8])) -> Result<(), StoreError>;

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Opens the backend the spec chooses for node `id` of `service`; `fresh`:
/// the node's Raft log was just created.
pub async fn open(
    spec: &ClusterSpec,
    service: Service,
    id: NodeId,
    shard: Shard,
    fresh: bool,
    health: Arc<Health>,
) -> Result<Arc<dyn Backend>, StoreError> {
    health.set_backend(spec.storage.backend.clone());
    match spec.storage.backend {
        StorageBackend::Embedded => Ok(Arc::new(embedded::Store::new())),
        StorageBackend::Mongodb => {
            let (url, db) = spec.storage.mongodb_of(service, id, shard);
            let timeout = std::time::Duration::from_millis(spec.storage.mongodb_timeout_ms);
            let backend = mongo::MongoBackend::open(&url, &db, timeout, health, fresh).await?;
            Ok(Arc::new(backend))
        }
    }
}

/// The reads of a view that never writes; `ReadOnly` makes it a
/// `StateStore` that refuses writes.
pub(crate) trait StateReader {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
}

impl<R: StateReader + ?Sized> StateReader for &R {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(table, key)
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        (**self).keys(table, below, limit)
    }
}

pub(crate) struct ReadOnly<R>(pub R);

impl<R: StateReader> StateStore for ReadOnly<R> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(table, key)
    }

    fn put(&mut self, _table: Table, _key: &str, _value: &[u8]) -> Result<(), StoreError> {
        Err(StoreError("read-only view".into()))
    }

    fn delete(&mut self, _table: Table, _key: &str) -> Result<(), StoreError> {
        Err(StoreError("read-only view".into()))
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.0.keys(table, below, limit)
    }
}

pub(crate) fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}
