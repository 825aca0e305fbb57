//! openraft's `RaftLogStorage` over the node's redb database.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use redb::ReadableTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::log_writer::LogWriter;
use super::progress::Progress;
use super::{storage_error, NodeId, StorageError, TypeConfig};
use crate::domain::StoreError;
use crate::storage::embedded::{Store, LOG, LOG_META};
use crate::storage::io;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    store: Store,
    writer: LogWriter,
    progress: Arc<Progress>,
}

impl LogStore {
    /// The log of `store`, with its writer thread started.
    pub fn new(store: Store, progress: Arc<Progress>) -> Result<Self, StoreError> {
        let writer = LogWriter::start(store.clone())?;
        Ok(Self {
            store,
            writer,
            progress,
        })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(LOG_META).map_err(io)?;
        match table.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io),
        }
    }

    /// Committed entries in `range`, overlaid with those still queued.
    fn entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        // Queued first: an entry committed meanwhile is then in the table.
        let queued = self.writer.pending().range(range);
        let txn = self.store.begin_read()?;
        let table = txn.open_table(LOG).map_err(io)?;
        let mut out = BTreeMap::new();
        for row in table.range::<u64>(range).map_err(io)? {
            let (k, v) = row.map_err(io)?;
            out.insert(k.value(), serde_json::from_slice(v.value()).map_err(io)?);
        }
        out.extend(queued.into_iter().map(|e| (e.log_id.index, e)));
        Ok(out.into_values().collect())
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED)?;
        let queued = self.writer.pending().last();
        let txn = self.store.begin_read()?;
        let table = txn.open_table(LOG).map_err(io)?;
        let stored = match table.last().map_err(io)? {
            Some((_, v)) => {
                let entry: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io)?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: queued.max(stored).or(last_purged),
        })
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(io)
}

fn logs_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| storage_error(ErrorSubject::Logs, verb, e)
}

fn vote_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| storage_error(ErrorSubject::Vote, verb, e)
}

// redb calls block; nodes run on tokio's multi-threaded runtime, where
// `block_in_place` keeps the other tasks moving.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        blocking(|| self.entries(bounds)).map_err(logs_err(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        blocking(|| self.log_state()).map_err(logs_err(ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(vote_err(ErrorVerb::Write))?;
        self.writer
            .put_meta(VOTE, bytes, true)
            .await
            .map_err(vote_err(ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        blocking(|| self.read_meta(VOTE)).map_err(vote_err(ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.progress.set_committed(committed.map(|c| c.index));
        // Only an optimisation for restart (apply up to here without waiting
        // for the leader), so it rides along with the next log commit.
        let bytes = encode(&committed).map_err(logs_err(ErrorVerb::Write))?;
        self.writer
            .put_meta(COMMITTED, bytes, false)
            .await
            .map_err(logs_err(ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        blocking(|| self.read_meta::<Option<LogId<NodeId>>>(COMMITTED))
            .map(Option::flatten)
            .map_err(logs_err(ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.progress
            .appended(entries.iter().map(|e| e.log_id.index));
        self.writer
            .append(entries, callback)
            .map_err(logs_err(ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.progress.truncated(log_id.index);
        self.writer
            .truncate(log_id.index)
            .await
            .map_err(logs_err(ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let bytes = encode(&log_id).map_err(logs_err(ErrorVerb::Delete))?;
        self.writer
            .purge(log_id.index, (LAST_PURGED, bytes))
            .await
            .map_err(logs_err(ErrorVerb::Delete))
    }
}
