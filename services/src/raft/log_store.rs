//! openraft's `RaftLogStorage` over the node's segment log
//! (`log_engine`), one `LogStore` per shard over the node's one log
//! (`NodeLog`): every change is applied in memory at once (openraft
//! requires appended entries to be readable before they are durable) and
//! queued to the node's writer thread; a read takes the newest entries
//! from memory and older ones from the segment files (`log_state`).

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use cart_common::shard::Shard;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, Vote};

use super::log_engine::{Encoded, SegmentReader, Segments};
use super::log_import;
use super::log_state::{self, Planned};
use super::log_writer::LogWriter;
use super::progress::Progress;
use super::{storage_error, NodeId, StorageError, TypeConfig};
use crate::domain::StoreError;
use crate::metrics::METRICS;

/// The directory of a node's Raft log, inside its data directory.
pub const LOG_DIR: &str = "raft-log";

/// A node's one Raft log, shared by the groups of every shard it hosts.
pub struct NodeLog {
    /// Indexed by shard.
    states: Vec<Arc<Mutex<log_state::LogState>>>,
    dir: Arc<PathBuf>,
    writer: LogWriter,
}

impl NodeLog {
    /// Whether node directory `dir` holds no log yet (a new node, or a lost
    /// directory).
    pub fn is_new(dir: &Path) -> bool {
        !dir.join(LOG_DIR).exists() && !log_import::has_old_log(dir)
    }

    /// Opens the log in `dir/raft-log` for `shards` shards, first moving
    /// in the logs of earlier versions (a redb file in `dir`; each shard's
    /// own segment log in its `shard-k` directory), and starts its writer
    /// thread. Each shard keeps the newest `resident_bytes` of its entries
    /// (encoded) in memory.
    pub fn open(dir: &Path, shards: u16, resident_bytes: usize) -> Result<Self, StoreError> {
        let log_dir = dir.join(LOG_DIR);
        log_import::import_redb_log(dir, &log_dir)?;
        log_import::import_shard_logs(dir, &log_dir, shards)?;
        let (segments, states) = Segments::open(&log_dir, shards, resident_bytes)?;
        let states: Vec<_> = states
            .into_iter()
            .map(|s| Arc::new(Mutex::new(s)))
            .collect();
        Ok(Self {
            writer: LogWriter::start(segments, states.clone())?,
            states,
            dir: Arc::new(log_dir),
        })
    }

    /// Whether `shard`'s log holds nothing (a new member, or one wiped).
    pub fn is_empty(&self, shard: Shard) -> bool {
        self.states.get(shard.index()).is_none_or(|s| {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            s.vote.is_none() && s.last_log_id().is_none()
        })
    }

    /// `shard`'s log, for its Raft member.
    pub fn store(&self, shard: Shard, progress: Arc<Progress>) -> Result<LogStore, StoreError> {
        let state = self.states.get(shard.index()).cloned().ok_or_else(|| {
            StoreError(format!(
                "this node's log holds {} shard(s), not shard {shard}",
                self.states.len()
            ))
        })?;
        Ok(LogStore {
            shard,
            state,
            dir: self.dir.clone(),
            writer: self.writer.clone(),
            progress,
        })
    }

    /// Removes everything of `shard` from the log, durably: its member is
    /// wiped to be rebuilt from its group (the other shards' stay).
    pub async fn reset(&self, shard: Shard) -> Result<(), StoreError> {
        self.writer.write_durably(Encoded::reset(shard)).await
    }
}

/// One shard's log within its node's `NodeLog`.
#[derive(Clone)]
pub struct LogStore {
    shard: Shard,
    state: Arc<Mutex<log_state::LogState>>,
    /// The segment files, for entries no longer in memory.
    dir: Arc<PathBuf>,
    writer: LogWriter,
    progress: Arc<Progress>,
}

impl LogStore {
    fn state(&self) -> MutexGuard<'_, log_state::LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries in `range`, in order; fewer if a purge deleted the
    /// segment of one meanwhile. (How many go into one append is
    /// `append_budget`'s to decide.)
    fn read(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let planned = self.state().plan(range);
        let _span = planned
            .iter()
            .any(|p| matches!(p, Planned::OnDisk(_)))
            .then(|| tracing::debug_span!("raft.log_read_disk", entries = planned.len()).entered());
        let mut reader = SegmentReader::new(&self.dir);
        let mut entries = Vec::with_capacity(planned.len());
        for p in planned {
            match p {
                Planned::Here(e) => entries.push(e),
                Planned::OnDisk(at) => match reader.read(at)? {
                    Some(e) => {
                        METRICS.log_disk_reads.inc();
                        entries.push(e);
                    }
                    None => break,
                },
            }
        }
        Ok(entries)
    }
}

fn logs_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| storage_error(ErrorSubject::Logs, verb, e)
}

fn vote_err(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| storage_error(ErrorSubject::Vote, verb, e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        self.read(range).map_err(logs_err(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.state();
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let record = Encoded::vote(self.shard, vote).map_err(vote_err(ErrorVerb::Write))?;
        self.writer
            .write_durably(record)
            .await
            .map_err(vote_err(ErrorVerb::Write))?;
        self.state().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.state().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        self.progress.set_committed(committed.map(|c| c.index));
        self.state().committed = committed;
        // Only an optimisation for restart (apply up to here without waiting
        // for the leader), so it rides along with the next write.
        let record =
            Encoded::committed(self.shard, committed).map_err(logs_err(ErrorVerb::Write))?;
        self.writer
            .write_later(record)
            .map_err(logs_err(ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.state().committed)
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
        let records: Vec<Encoded> = entries
            .iter()
            .map(|e| Encoded::entry(self.shard, e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(logs_err(ErrorVerb::Write))?;
        self.progress
            .appended(entries.iter().map(|e| e.log_id.index));
        {
            let mut state = self.state();
            for (entry, record) in entries.into_iter().zip(&records) {
                state.append(entry, record.size());
            }
        }
        self.writer
            .append(records, callback)
            .map_err(logs_err(ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.progress.truncated(log_id.index);
        self.state().truncate(log_id.index);
        self.writer
            .write_durably(Encoded::truncate(self.shard, log_id.index))
            .await
            .map_err(logs_err(ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let record = Encoded::purge(self.shard, log_id).map_err(logs_err(ErrorVerb::Delete))?;
        self.state().purge(log_id);
        self.writer
            .write_durably(record)
            .await
            .map_err(logs_err(ErrorVerb::Delete))
    }
}
