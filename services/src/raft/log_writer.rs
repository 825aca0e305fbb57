//! Group commit for the Raft log: one thread owns the segment files and
//! writes whatever has queued up since its last write with one `write` and
//! one `fdatasync`.
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

use super::log_engine::{Encoded, Segments};
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
    /// Starts the writer thread of `segments`, which tells `state` where
    /// each entry it wrote went.
    pub fn start(segments: Segments, state: Arc<Mutex<LogState>>) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(segments, state, jobs))
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
fn run(mut segments: Segments, state: Arc<Mutex<LogState>>, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let started = Instant::now();
        let result = {
            let _span = tracing::debug_span!("raft.log_flush", jobs = batch.len()).entered();
            segments.write(batch.iter().flat_map(|job| &job.records))
        };
        METRICS
            .log_flush_seconds
            .observe(started.elapsed().as_secs_f64());
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
                state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .written(&written);
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
