//! Group commit for a node's Raft log: one thread owns the segment files
//! and writes whatever every shard's group has queued up since its last
//! write with one `write` and one `fdatasync`.
//!
//! openraft hands `append` a few entries at a time and wants it to return at
//! once, signalling durability later through a callback. Syncing each call
//! on its own costs an fsync per client write and, done on the Raft core's
//! task, stalls the core for that fsync. Here the core only queues; while
//! one write is on disk the next calls queue behind it and share the next
//! sync.
//!
//! Jobs are written in the order they were queued, so a truncate or purge
//! never overtakes an append queued before it.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::LogFlushed;
use tokio::sync::oneshot;

use super::log_engine::{Encoded, Flush, Segments, Written};
use super::log_state::LogState;
use super::TypeConfig;
use crate::domain::StoreError;
use crate::metrics::METRICS;
use crate::storage::io;

/// Who hears that a job is on disk.
enum Done {
    /// openraft's callback for appended entries.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller awaiting durability (vote, truncate, purge).
    Heard(oneshot::Sender<Result<(), StoreError>>),
    /// Nobody: the record rides along with the next write.
    Nobody,
}

struct Job {
    records: Vec<Encoded>,
    done: Done,
}

/// The queue to the writer thread.
#[derive(Clone)]
pub struct LogWriter {
    queue: Sender<Job>,
}

impl LogWriter {
    /// Starts the writer thread of `segments`, which tells each shard's
    /// state (indexed by shard) where each of its entries went.
    pub fn start(
        segments: Segments,
        states: Vec<Arc<Mutex<LogState>>>,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(segments, states, jobs))
            .map_err(io)?;
        Ok(Self { queue })
    }

    /// Queues appended entries; `flushed` is called once they are on disk.
    pub fn append(
        &self,
        records: Vec<Encoded>,
        flushed: LogFlushed<TypeConfig>,
    ) -> Result<(), StoreError> {
        self.send(Job {
            records,
            done: Done::Flushed(flushed),
        })
    }

    /// Queues a record that needs no sync of its own.
    pub fn write_later(&self, record: Encoded) -> Result<(), StoreError> {
        self.send(Job {
            records: vec![record],
            done: Done::Nobody,
        })
    }

    /// Writes a record and returns once it is on disk.
    pub async fn write_durably(&self, record: Encoded) -> Result<(), StoreError> {
        let (done, heard) = oneshot::channel();
        self.send(Job {
            records: vec![record],
            done: Done::Heard(done),
        })?;
        heard.await.unwrap_or_else(|_| Err(stopped()))
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.queue.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> StoreError {
    StoreError("the Raft log writer has stopped".into())
}

/// The writer thread: takes every job queued so far, writes them in one
/// durable write, then tells each job's waiter. Ends when every sender is
/// gone (the node shuts down).
fn run(mut segments: Segments, states: Vec<Arc<Mutex<LogState>>>, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let started = Instant::now();
        // A batch nobody waits on (only commit-index records) needs no
        // fdatasync of its own: followers get a commit index after nearly
        // every entry, and syncing each one doubled their syncs.
        let flush = if batch.iter().all(|job| matches!(job.done, Done::Nobody)) {
            Flush::Buffered
        } else {
            Flush::Durable
        };
        let result = {
            let _span =
                tracing::debug_span!("raft.log_flush", jobs = batch.len(), ?flush).entered();
            segments.write_with(batch.iter().flat_map(|job| &job.records), flush)
        };
        match flush {
            Flush::Durable => METRICS
                .log_flush_seconds
                .observe(started.elapsed().as_secs_f64()),
            Flush::Buffered => METRICS.log_buffered_writes.inc(),
        }
        let entries = batch
            .iter()
            .flat_map(|job| &job.records)
            .filter(|r| r.is_entry())
            .count();
        if entries > 0 {
            METRICS.log_flush_entries.observe(entries as f64);
        }
        let result = match result {
            Ok(written) => {
                for (shard, state) in states.iter().enumerate() {
                    let theirs: Vec<Written> = written
                        .iter()
                        .filter(|w| w.shard.index() == shard)
                        .copied()
                        .collect();
                    if !theirs.is_empty() {
                        state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .written(&theirs);
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e.0, "Raft log write failed");
                Err(e)
            }
        };
        for job in batch {
            let outcome = result.clone();
            match job.done {
                Done::Flushed(flushed) => {
                    flushed.log_io_completed(outcome.map_err(|e| std::io::Error::other(e.0)))
                }
                Done::Heard(done) => {
                    let _ = done.send(outcome);
                }
                Done::Nobody => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::test_entries::id;
    use cart_common::shard::Shard;

    fn flushes() -> u64 {
        METRICS.log_flush_seconds.get_sample_count()
    }

    /// Waits until the writer thread has taken every job queued so far:
    /// a durable write queued after them returns once they are written.
    async fn drain(writer: &LogWriter) {
        let vote = openraft::Vote::new(1, 1);
        writer
            .write_durably(Encoded::vote(Shard(0), &vote).unwrap())
            .await
            .unwrap();
    }

    // Each test runs in a process of its own (nextest), so the node's
    // global metrics count only this test's writes.
    #[tokio::test]
    async fn a_commit_index_nobody_waits_on_gets_no_fsync_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (segments, states) = Segments::open(dir.path(), 1, usize::MAX).unwrap();
        let states = states
            .into_iter()
            .map(|s| Arc::new(Mutex::new(s)))
            .collect();
        let writer = LogWriter::start(segments, states).unwrap();
        drain(&writer).await;
        let (synced, buffered) = (flushes(), METRICS.log_buffered_writes.get());
        writer
            .write_later(Encoded::committed(Shard(0), Some(id(1, 1))).unwrap())
            .unwrap();
        // Let the writer take the commit index on its own, then count.
        let taken = async {
            while METRICS.log_buffered_writes.get() == buffered {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), taken)
            .await
            .expect("the writer took the commit index");
        assert_eq!(flushes(), synced, "no fsync for the commit index alone");
        drain(&writer).await;
        assert_eq!(flushes(), synced + 1, "a write someone waits on is synced");
    }
}
