//! openraft's `RaftLogStorage` over the node's redb database.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};
use redb::ReadableTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

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
    progress: Arc<Progress>,
}

impl LogStore {
    pub fn new(store: Store, progress: Arc<Progress>) -> Self {
        Self { store, progress }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(LOG_META).map_err(io)?;
        match table.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durable: bool,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(io)?;
        let txn = self.store.begin_write(durable)?;
        txn.open_table(LOG_META)
            .map_err(io)?
            .insert(key, bytes.as_slice())
            .map_err(io)?;
        txn.commit().map_err(io)
    }

    fn entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.store.begin_read()?;
        let table = txn.open_table(LOG).map_err(io)?;
        let mut out = Vec::new();
        for row in table.range::<u64>(range).map_err(io)? {
            let (_, v) = row.map_err(io)?;
            out.push(serde_json::from_slice(v.value()).map_err(io)?);
        }
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED)?;
        let txn = self.store.begin_read()?;
        let table = txn.open_table(LOG).map_err(io)?;
        let last = match table.last().map_err(io)? {
            Some((_, v)) => {
                let entry: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), StoreError> {
        let txn = self.store.begin_write(true)?;
        {
            let mut table = txn.open_table(LOG).map_err(io)?;
            for entry in entries {
                let bytes = serde_json::to_vec(&entry).map_err(io)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// Removes entries in `range`; `purged` records the new last purged id.
    fn remove(
        &self,
        range: (Bound<u64>, Bound<u64>),
        purged: Option<LogId<NodeId>>,
    ) -> Result<(), StoreError> {
        let txn = self.store.begin_write(true)?;
        {
            let mut table = txn.open_table(LOG).map_err(io)?;
            table.retain_in::<u64, _>(range, |_, _| false).map_err(io)?;
            if let Some(id) = purged {
                let bytes = serde_json::to_vec(&id).map_err(io)?;
                txn.open_table(LOG_META)
                    .map_err(io)?
                    .insert(LAST_PURGED, bytes.as_slice())
                    .map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }
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
        blocking(|| self.write_meta(VOTE, vote, true)).map_err(vote_err(ErrorVerb::Write))
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
        // for the leader), so it need not be fsynced on its own.
        blocking(|| self.write_meta(COMMITTED, &committed, false))
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
        let mut indexes = Vec::new();
        let entries = entries
            .into_iter()
            .inspect(|e| indexes.push(e.log_id.index));
        let result = blocking(|| self.append_entries(entries));
        match result {
            Ok(()) => {
                self.progress.appended(indexes);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(logs_err(ErrorVerb::Write)(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.progress.truncated(log_id.index);
        blocking(|| self.remove((Bound::Included(log_id.index), Bound::Unbounded), None))
            .map_err(logs_err(ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        blocking(|| {
            self.remove(
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(log_id),
            )
        })
        .map_err(logs_err(ErrorVerb::Delete))
    }
}
