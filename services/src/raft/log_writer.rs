//! Group commit for the Raft log: one thread owns every write to the log
//! tables and commits whatever has queued up since its last commit in one
//! fsynced redb transaction.
//!
//! openraft hands `append` a few entries at a time and wants it to return at
//! once, signalling durability later through a callback. Committing each
//! call on its own costs an fsync per client write and, done on the Raft
//! core's task, stalls the core for that fsync; under load the log then
//! caps the group's throughput. Here the core only queues; while one commit
//! is on disk the next calls queue behind it and share the next fsync.
//!
//! Jobs are committed in the order they were queued, so a truncate or purge
//! never overtakes an append queued before it.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::LogFlushed;
use openraft::{Entry, LogId};
use tokio::sync::oneshot;

use super::{NodeId, TypeConfig};
use crate::domain::StoreError;
use crate::metrics::METRICS;
use crate::storage::embedded::{Store, LOG, LOG_META};
use crate::storage::io;

/// Entries appended but perhaps not yet committed: readers see them at once,
/// as openraft requires of `append`.
#[derive(Default)]
pub struct Pending(Mutex<BTreeMap<u64, Entry<TypeConfig>>>);

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry<TypeConfig>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pending entries with an index in `range`.
    pub fn range(
        &self,
        range: (std::ops::Bound<u64>, std::ops::Bound<u64>),
    ) -> Vec<Entry<TypeConfig>> {
        self.lock().range(range).map(|(_, e)| e.clone()).collect()
    }

    pub fn last(&self) -> Option<LogId<NodeId>> {
        self.lock().values().next_back().map(|e| e.log_id)
    }

    /// Forgets entries from `index` on (a truncation).
    fn drop_from(&self, index: u64) {
        self.lock().split_off(&index);
    }

    /// Forgets entries up to and including `index` (a purge).
    fn drop_through(&self, index: u64) {
        let mut map = self.lock();
        *map = map.split_off(&index.saturating_add(1));
    }

    /// Forgets committed entries, unless a later append replaced them.
    fn committed(&self, ids: &[LogId<NodeId>]) {
        let mut map = self.lock();
        for id in ids {
            if map.get(&id.index).is_some_and(|e| e.log_id == *id) {
                map.remove(&id.index);
            }
        }
    }
}

type Done = oneshot::Sender<Result<(), StoreError>>;

enum Job {
    Append {
        ids: Vec<LogId<NodeId>>,
        rows: Vec<(u64, Vec<u8>)>,
        flushed: LogFlushed<TypeConfig>,
    },
    /// A `raft_log_meta` value; `done` (if any) hears once it is durable.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<Done>,
    },
    /// Removes the entries in `range`, recording `purged` as the last purged id.
    Remove {
        range: (std::ops::Bound<u64>, std::ops::Bound<u64>),
        purged: Option<(&'static str, Vec<u8>)>,
        done: Done,
    },
}

/// The queue to the writer thread; cloned into every log reader.
#[derive(Clone)]
pub struct LogWriter {
    queue: Sender<Job>,
    pending: Arc<Pending>,
}

impl LogWriter {
    /// Starts the writer thread of `store`'s log.
    pub fn start(store: Store) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        let pending = Arc::new(Pending::default());
        let thread_pending = pending.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(store, jobs, thread_pending))
            .map_err(io)?;
        Ok(Self { queue, pending })
    }

    pub fn pending(&self) -> &Pending {
        &self.pending
    }

    /// Queues entries: readable at once, `flushed` called once on disk.
    pub fn append(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        flushed: LogFlushed<TypeConfig>,
    ) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(entries.len());
        let mut ids = Vec::with_capacity(entries.len());
        for entry in &entries {
            rows.push((entry.log_id.index, serde_json::to_vec(entry).map_err(io)?));
            ids.push(entry.log_id);
        }
        {
            let mut pending = self.pending.lock();
            for entry in entries {
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.send(Job::Append { ids, rows, flushed })
    }

    /// Writes a meta value; with `durable`, returns once it is on disk.
    pub async fn put_meta(
        &self,
        key: &'static str,
        value: Vec<u8>,
        durable: bool,
    ) -> Result<(), StoreError> {
        if !durable {
            // Rides along with the next commit.
            return self.send(Job::Meta {
                key,
                value,
                done: None,
            });
        }
        let (done, heard) = oneshot::channel();
        self.send(Job::Meta {
            key,
            value,
            done: Some(done),
        })?;
        wait(heard).await
    }

    /// Removes log entries from `index` on (a conflicting suffix).
    pub async fn truncate(&self, index: u64) -> Result<(), StoreError> {
        self.pending.drop_from(index);
        let range = (std::ops::Bound::Included(index), std::ops::Bound::Unbounded);
        self.remove(range, None).await
    }

    /// Removes log entries up to `index`, remembering the purged id.
    pub async fn purge(
        &self,
        index: u64,
        purged: (&'static str, Vec<u8>),
    ) -> Result<(), StoreError> {
        self.pending.drop_through(index);
        let range = (std::ops::Bound::Unbounded, std::ops::Bound::Included(index));
        self.remove(range, Some(purged)).await
    }

    async fn remove(
        &self,
        range: (std::ops::Bound<u64>, std::ops::Bound<u64>),
        purged: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let (done, heard) = oneshot::channel();
        self.send(Job::Remove {
            range,
            purged,
            done,
        })?;
        wait(heard).await
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.queue
            .send(job)
            .map_err(|_| StoreError("the Raft log writer has stopped".into()))
    }
}

async fn wait(heard: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
    heard
        .await
        .unwrap_or_else(|_| Err(StoreError("the Raft log writer has stopped".into())))
}

/// The writer thread: takes every job queued so far, commits them in one
/// durable transaction, then tells each job's waiter. Ends when every
/// sender is gone (the node shuts down).
fn run(store: Store, jobs: Receiver<Job>, pending: Arc<Pending>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let started = Instant::now();
        let result = commit(&store, &batch);
        METRICS
            .log_flush_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut entries = 0;
        for job in batch {
            let outcome = result.clone();
            match job {
                Job::Append { ids, flushed, .. } => {
                    entries += ids.len();
                    if outcome.is_ok() {
                        pending.committed(&ids);
                    }
                    flushed.log_io_completed(outcome.map_err(|e| std::io::Error::other(e.0)));
                }
                Job::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(outcome);
                    }
                }
                Job::Remove { done, .. } => {
                    let _ = done.send(outcome);
                }
            }
        }
        if entries > 0 {
            METRICS.log_flush_entries.observe(entries as f64);
        }
        if let Err(e) = result {
            tracing::error!(error = %e.0, "Raft log commit failed");
        }
    }
}

fn commit(store: &Store, batch: &[Job]) -> Result<(), StoreError> {
    let _span = tracing::debug_span!("raft.log_flush", jobs = batch.len()).entered();
    let txn = store.begin_write(true)?;
    {
        let mut log = txn.open_table(LOG).map_err(io)?;
        let mut meta = txn.open_table(LOG_META).map_err(io)?;
        for job in batch {
            match job {
                Job::Append { rows, .. } => {
                    for (index, bytes) in rows {
                        log.insert(*index, bytes.as_slice()).map_err(io)?;
                    }
                }
                Job::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice()).map_err(io)?;
                }
                Job::Remove { range, purged, .. } => {
                    log.retain_in::<u64, _>(*range, |_, _| false).map_err(io)?;
                    if let Some((key, value)) = purged {
                        meta.insert(*key, value.as_slice()).map_err(io)?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(io)
}
