//! The MongoDB backend: a database per node, a collection per table, one
//! document per key: `{_id: key, v: <value bytes>, i: <log index that last
//! wrote it>}`, plus a `meta` collection for the applied log id and
//! membership.
//!
//! Standalone MongoDB has no multi-document transactions, so a batch is
//! committed through a redo record:
//!
//! 1. the batch's final writes (every key it touched, with its new value or
//!    a deletion) are stored in the `redo` collection, then a header
//!    (`meta._id = "redo"`: log index, chunk count, the bookkeeping) is
//!    written — a single-document write, so the batch is committed or not;
//! 2. the writes are applied to the tables, each conditional on the
//!    document's log index not being later than the batch's (`i <= n`), then
//!    the bookkeeping, then the header and the redo record are removed.
//!
//! A crash before the header leaves nothing applied (openraft re-applies
//! the entries from the log); a crash after it is finished at the next
//! start by replaying the record, which is idempotent (final values, never
//! deltas). A batch is therefore never applied twice, and a half-applied
//! batch is never read by the re-application of its own entries.
//!
//! Failures (unreachable server, timeout) are retried until they succeed for
//! everything the state machine depends on — the node is reported unhealthy
//! meanwhile — while queries fail fast with an error.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cart_common::spec::StorageBackend;
use futures::TryStreamExt;
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};

use super::overlay::{Overlay, Writes};
use super::{
    health, io, ApplyFn, Backend, CrashPoint, Frozen, Health, Meta, ReadOnly, Row, StateReader,
};
use crate::domain::{StateStore, StoreError, Table};

const META: &str = "meta";
const REDO: &str = "redo";
/// `_id` of the redo header in `meta`.
const REDO_HEADER: &str = "redo";
/// Rows per redo document and per write command: well under MongoDB's 16 MiB
/// document and 100,000-statement batch limits for our values.
const CHUNK_ROWS: usize = 2000;
/// Longest wait between retries of a failing operation.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

pub struct MongoBackend {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    timeout: Duration,
    health: Arc<Health>,
    runtime: tokio::runtime::Handle,
    /// Commits and freezes run one at a time, so a frozen view (read
    /// document by document) sees exactly one batch boundary.
    commit_lock: Mutex<()>,
    /// `crash_next_apply`'s armed crash point.
    crash: Mutex<Option<CrashPoint>>,
}

/// One key's final value in a batch; `None`: deleted.
type RedoRow = (Table, String, Option<Vec<u8>>);

/// A committed batch, as stored in the redo record.
struct Redo {
    index: u64,
    wipe: bool,
    rows: Vec<RedoRow>,
    meta: Vec<(String, Vec<u8>)>,
}

impl MongoBackend {
    /// Connects to `url`, uses database `db`, and finishes a batch a crash
    /// interrupted. Waits (retrying) until the server answers. `fresh`: the
    /// node's Raft log is new (a new or emptied data directory), so whatever
    /// the database holds belongs to a log that is gone and is cleared — the
    /// database starts afresh with the directory, as the embedded store does.
    pub async fn open(
        url: &str,
        db: &str,
        timeout: Duration,
        health: Arc<Health>,
        fresh: bool,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await.map_err(io)?;
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        options.app_name = Some(format!("cart-node-{db}"));
        let client = Client::with_options(options).map_err(io)?;
        let inner = Arc::new(Inner {
            db: client.database(db),
            timeout,
            health,
            runtime: tokio::runtime::Handle::current(),
            commit_lock: Mutex::new(()),
            crash: Mutex::new(None),
        });
        if fresh {
            tracing::info!(db, "new Raft log: clearing this node's MongoDB database");
            inner.retry_async("recover", || inner.clear()).await;
        }
        inner.retry_async("recover", || inner.recover()).await;
        Ok(Self { inner })
    }
}

impl Inner {
    fn table(&self, table: Table) -> Collection<Document> {
        self.db.collection(table.name())
    }

    fn meta_coll(&self) -> Collection<Document> {
        self.db.collection(META)
    }

    /// One operation with the configured timeout.
    async fn op<T, E: std::fmt::Display>(
        &self,
        fut: impl IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut.into_future()).await {
            Ok(r) => r.map_err(io),
            Err(_) => Err(StoreError(format!(
                "no answer from MongoDB within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    /// Runs `fut` on the runtime from synchronous code (the state machine
    /// applies inside `block_in_place`).
    fn block<F: Future>(&self, fut: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(fut))
    }

    /// Tries once, reporting the outcome to the node's health.
    fn once<T>(
        &self,
        name: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = self.block(fut);
        self.health.record(name, started.elapsed(), &result);
        result
    }

    /// Retries until it succeeds: for what the state machine cannot do
    /// without (a failed apply would stop the Raft group member).
    async fn retry_async<T, Fut>(&self, name: &'static str, mut f: impl FnMut() -> Fut) -> T
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            let result = f().await;
            self.health.record(name, started.elapsed(), &result);
            match result {
                Ok(v) => return v,
                Err(e) => {
                    tracing::warn!(op = name, error = %e, retry_in_ms = backoff.as_millis() as u64, "MongoDB operation failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn retry<T, Fut>(&self, name: &'static str, f: impl FnMut() -> Fut) -> T
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.block(self.retry_async(name, f))
    }

    async fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self
            .op(self.table(table).find_one(doc! {"_id": key}))
            .await?;
        Ok(found.map(|d| value_of(&d)).transpose()?.flatten())
    }

    async fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match below {
            Some(b) => doc! {"_id": {"$lt": b}},
            None => doc! {},
        };
        // Beyond 32 bits means "all" (some servers refuse larger limits).
        let limit = i32::try_from(limit).ok().map(i64::from);
        self.ids(&self.table(table), filter, limit).await
    }

    /// The keys of the documents matching `filter`, in key order.
    async fn ids<C: FromIterator<String>>(
        &self,
        coll: &Collection<Document>,
        filter: Document,
        limit: Option<i64>,
    ) -> Result<C, StoreError> {
        let docs: Vec<Document> = self
            .op(async {
                coll.find(filter)
                    .sort(doc! {"_id": 1})
                    .limit(limit.unwrap_or(0))
                    .projection(doc! {"_id": 1})
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        docs.iter()
            .map(|d| d.get_str("_id").map(str::to_string).map_err(io))
            .collect()
    }

    async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self
            .op(self.meta_coll().find_one(doc! {"_id": key}))
            .await?;
        Ok(found.map(|d| value_of(&d)).transpose()?.flatten())
    }

    /// Every row of `table`.
    async fn all(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let docs: Vec<Document> = self
            .op(async { self.table(table).find(doc! {}).await?.try_collect().await })
            .await?;
        docs.iter()
            .map(|d| {
                let key = d.get_str("_id").map_err(io)?.to_string();
                Ok((key, value_of(d)?.unwrap_or_default()))
            })
            .collect()
    }

    /// Commits a batch: stores its redo record, then applies it, stopping
    /// at an armed crash point. Every step is retried until it succeeds.
    fn commit(&self, name: &'static str, redo: &Redo) -> Result<(), StoreError> {
        let crash = self.crash.lock().ok().and_then(|mut c| c.take());
        let bookkeeping_only = redo.rows.is_empty() && !redo.wipe;
        if crash == Some(CrashPoint::BeforeCommit) {
            if !bookkeeping_only {
                self.retry(name, || self.write_redo_rows(redo));
            }
            return Err(StoreError("simulated crash before commit".into()));
        }
        if bookkeeping_only {
            // Single-document writes, repeatable.
            self.retry(name, || self.write_meta(&redo.meta));
            return match crash {
                Some(_) => Err(StoreError("simulated crash after commit".into())),
                None => Ok(()),
            };
        }
        self.retry(name, || self.write_redo(redo));
        if crash == Some(CrashPoint::AfterCommit) {
            return Err(StoreError("simulated crash after commit".into()));
        }
        if crash == Some(CrashPoint::MidApply) {
            self.retry(name, || self.write_tables(redo));
            return Err(StoreError("simulated crash before the bookkeeping".into()));
        }
        self.retry(name, || self.replay(redo));
        Ok(())
    }

    /// The redo record's rows, without the header that commits them.
    async fn write_redo_rows(&self, redo: &Redo) -> Result<usize, StoreError> {
        let chunks: Vec<Document> = redo
            .rows
            .chunks(CHUNK_ROWS)
            .enumerate()
            .map(|(i, rows)| {
                let rows: Vec<Document> = rows
                    .iter()
                    .map(|(t, k, v)| doc! {"t": t.name(), "k": k, "v": v.as_deref().map_or(Bson::Null, bytes)})
                    .collect();
                doc! {"_id": i as i64, "rows": rows}
            })
            .collect();
        let redo_coll = self.db.collection::<Document>(REDO);
        self.op(redo_coll.delete_many(doc! {})).await?;
        for chunk in chunks.chunks(8) {
            self.op(redo_coll.insert_many(chunk.to_vec())).await?;
        }
        Ok(chunks.len())
    }

    /// The redo record, then its header: the commit point.
    async fn write_redo(&self, redo: &Redo) -> Result<(), StoreError> {
        let chunks = self.write_redo_rows(redo).await?;
        let meta: Vec<Document> = redo
            .meta
            .iter()
            .map(|(k, v)| doc! {"k": k, "v": bytes(v)})
            .collect();
        let header = doc! {
            "_id": REDO_HEADER,
            "n": redo.index as i64,
            "wipe": redo.wipe,
            "chunks": chunks as i64,
            "meta": meta,
        };
        self.op(self
            .meta_coll()
            .replace_one(doc! {"_id": REDO_HEADER}, header)
            .upsert(true))
            .await?;
        Ok(())
    }

    /// Applies a committed redo record; repeatable.
    async fn replay(&self, redo: &Redo) -> Result<(), StoreError> {
        self.write_tables(redo).await?;
        self.write_meta(&redo.meta).await?;
        self.op(self.meta_coll().delete_one(doc! {"_id": REDO_HEADER}))
            .await?;
        self.op(self.db.collection::<Document>(REDO).delete_many(doc! {}))
            .await?;
        Ok(())
    }

    /// A redo record's writes to the tables; repeatable. Keys that exist
    /// are updated only if the log index they carry is not later than the
    /// batch's; new keys are inserted in bulk (a bulk insert is far cheaper
    /// than upserts on some servers). Nothing else writes meanwhile, so the
    /// keys found existing stay the keys that exist.
    async fn write_tables(&self, redo: &Redo) -> Result<(), StoreError> {
        if redo.wipe {
            for table in Table::ALL {
                self.op(self.table(table).delete_many(doc! {})).await?;
            }
        }
        let mut by_table: HashMap<Table, Vec<&RedoRow>> = HashMap::new();
        for row in &redo.rows {
            by_table.entry(row.0).or_default().push(row);
        }
        let n = redo.index as i64;
        // Readers may see an entry's tables written in part, so they are
        // written in `Table::ALL` order: a checkout's order row before its
        // checkout record before its open-checkout row. A read that finds
        // the checkout decided or no longer open then finds the order as
        // the decision left it (`saga::decided_read`).
        let mut by_table: Vec<(Table, Vec<&RedoRow>)> = by_table.into_iter().collect();
        by_table.sort_by_key(|(table, _)| Table::ALL.iter().position(|t| t == table));
        for (table, rows) in by_table {
            for chunk in rows.chunks(CHUNK_ROWS) {
                let coll = self.table(table);
                let (puts, deletes): (Vec<&RedoRow>, Vec<&RedoRow>) =
                    chunk.iter().copied().partition(|r| r.2.is_some());
                let deleted: Vec<&str> = deletes.iter().map(|r| r.1.as_str()).collect();
                if !deleted.is_empty() {
                    let filter = doc! {"_id": {"$in": deleted}, "i": {"$lte": n}};
                    self.op(coll.delete_many(filter)).await?;
                }
                let keys: Vec<&str> = puts.iter().map(|r| r.1.as_str()).collect();
                let existing = self.existing(&coll, &keys).await?;
                let mut updates = Vec::new();
                let mut inserts = Vec::new();
                for (_, key, value) in puts {
                    let v = bytes(value.as_deref().unwrap_or_default());
                    if existing.contains(key.as_str()) {
                        updates.push(doc! {
                            "q": {"_id": key, "i": {"$lte": n}},
                            "u": {"$set": {"v": v, "i": n}},
                        });
                    } else {
                        inserts.push(doc! {"_id": key, "v": v, "i": n});
                    }
                }
                if !updates.is_empty() {
                    let wanted = updates.len() as i64;
                    let cmd = doc! {"update": table.name(), "updates": updates, "ordered": false};
                    let reply = self.op(self.db.run_command(cmd)).await?;
                    if let Ok(errors) = reply.get_array("writeErrors") {
                        return Err(StoreError(format!("MongoDB refused updates: {errors:?}")));
                    }
                    // A key whose document carries a later index was not
                    // matched: that write is stale.
                    let matched = reply.get("n").and_then(number).unwrap_or(wanted);
                    health::stale_write_skipped(wanted.saturating_sub(matched).max(0) as u64);
                }
                if !inserts.is_empty() {
                    self.op(coll.insert_many(inserts)).await?;
                }
            }
        }
        Ok(())
    }

    /// Which of `keys` have a document.
    async fn existing(
        &self,
        coll: &Collection<Document>,
        keys: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if keys.is_empty() {
            return Ok(Default::default());
        }
        self.ids(coll, doc! {"_id": {"$in": keys}}, None).await
    }

    async fn write_meta(&self, meta: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (key, value) in meta {
            self.op(self
                .meta_coll()
                .update_one(doc! {"_id": key}, doc! {"$set": {"v": bytes(value)}})
                .upsert(true))
                .await?;
        }
        Ok(())
    }

    /// Finishes a batch whose redo header was written before a crash, and
    /// drops a redo record that never got its header.
    async fn recover(&self) -> Result<(), StoreError> {
        let Some(header) = self
            .op(self.meta_coll().find_one(doc! {"_id": REDO_HEADER}))
            .await?
        else {
            return self
                .op(self.db.collection::<Document>(REDO).delete_many(doc! {}))
                .await
                .map(|_| ());
        };
        let chunks: Vec<Document> = self
            .op(async {
                self.db
                    .collection::<Document>(REDO)
                    .find(doc! {})
                    .sort(doc! {"_id": 1})
                    .await?
                    .try_collect()
                    .await
            })
            .await?;
        let expected = header.get("chunks").and_then(number).unwrap_or(-1);
        if chunks.len() as i64 != expected {
            return Err(StoreError(format!(
                "redo record has {} of {expected} chunks",
                chunks.len()
            )));
        }
        let redo = parse_redo(&header, &chunks)?;
        tracing::warn!(
            index = redo.index,
            rows = redo.rows.len(),
            "finishing a batch interrupted by a crash"
        );
        self.replay(&redo).await
    }

    /// Reads every table and the bookkeeping; no commit runs meanwhile.
    async fn freeze(&self) -> Result<MemoryFrozen, StoreError> {
        let mut frozen = MemoryFrozen::default();
        for table in Table::ALL {
            frozen.tables.insert(table, self.all(table).await?);
        }
        for key in [super::LAST_APPLIED, super::MEMBERSHIP] {
            if let Some(v) = self.meta(key).await? {
                frozen.meta.insert(key.to_string(), v);
            }
        }
        Ok(frozen)
    }

    /// Empties every collection (some MongoDB-compatible servers lack
    /// `dropDatabase`).
    async fn clear(&self) -> Result<(), StoreError> {
        let names = Table::ALL.map(Table::name).into_iter().chain([META, REDO]);
        for name in names {
            let coll = self.db.collection::<Document>(name);
            self.op(coll.delete_many(doc! {})).await?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.commit_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn bytes(v: &[u8]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: v.to_vec(),
    })
}

fn number(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// The `v` field of a document: its stored bytes (`None`: null).
fn value_of(d: &Document) -> Result<Option<Vec<u8>>, StoreError> {
    match d.get("v") {
        Some(Bson::Binary(b)) => Ok(Some(b.bytes.clone())),
        Some(Bson::Null) | None => Ok(None),
        Some(other) => Err(StoreError(format!(
            "stored value is {:?}, not bytes",
            other.element_type()
        ))),
    }
}

fn parse_redo(header: &Document, chunks: &[Document]) -> Result<Redo, StoreError> {
    let index = header.get("n").and_then(number).unwrap_or(0).max(0) as u64;
    let wipe = header.get_bool("wipe").unwrap_or(false);
    let mut meta = Vec::new();
    for m in header.get_array("meta").map_err(io)? {
        let m = m
            .as_document()
            .ok_or_else(|| StoreError("redo meta is not a document".into()))?;
        let key = m.get_str("k").map_err(io)?.to_string();
        meta.push((key, value_of(m)?.unwrap_or_default()));
    }
    let mut rows = Vec::new();
    for chunk in chunks {
        for row in chunk.get_array("rows").map_err(io)? {
            let row = row
                .as_document()
                .ok_or_else(|| StoreError("redo row is not a document".into()))?;
            let name = row.get_str("t").map_err(io)?;
            let table = Table::from_name(name)
                .ok_or_else(|| StoreError(format!("redo row of unknown table {name:?}")))?;
            rows.push((
                table,
                row.get_str("k").map_err(io)?.to_string(),
                value_of(row)?,
            ));
        }
    }
    Ok(Redo {
        index,
        wipe,
        rows,
        meta,
    })
}

fn owned_meta(meta: Meta<'_>) -> Vec<(String, Vec<u8>)> {
    meta.iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn rows_of(writes: Writes) -> Vec<RedoRow> {
    writes
        .into_iter()
        .flat_map(|(t, rows)| rows.into_iter().map(move |(k, v)| (t, k, v)))
        .collect()
}

impl Backend for MongoBackend {
    fn kind(&self) -> StorageBackend {
        StorageBackend::Mongodb
    }

    fn reader(&self) -> Result<Box<dyn StateStore + Send>, StoreError> {
        Ok(Box::new(ReadOnly(Reader {
            inner: self.inner.clone(),
            retry: false,
        })))
    }

    fn apply(&self, index: u64, meta: Meta<'_>, apply: ApplyFn<'_>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let _guard = inner.lock();
        let base = ReadOnly(Reader {
            inner: inner.clone(),
            retry: true,
        });
        let mut overlay = Overlay::new(&base);
        apply(&mut overlay)?;
        let redo = Redo {
            index,
            wipe: false,
            rows: rows_of(overlay.writes),
            meta: owned_meta(meta),
        };
        inner.commit("commit", &redo)
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = &self.inner;
        Ok(inner.retry("read", || inner.meta(key)))
    }

    fn freeze(&self) -> Result<Arc<dyn Frozen>, StoreError> {
        let inner = &self.inner;
        let _guard = inner.lock();
        Ok(Arc::new(inner.retry("freeze", || inner.freeze())))
    }

    fn replace(
        &self,
        index: u64,
        rows: &mut dyn Iterator<Item = Row>,
        meta: Meta<'_>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let _guard = inner.lock();
        let rows = rows
            .map(|r| r.map(|(t, k, v)| (t, k, Some(v))))
            .collect::<Result<_, _>>()?;
        let redo = Redo {
            index,
            wipe: true,
            rows,
            meta: owned_meta(meta),
        };
        inner.commit("replace", &redo)
    }

    /// Writes are acknowledged by the server; a server that loses its last
    /// writes in a crash loses the bookkeeping with them, and the Raft log
    /// replays from there. Nothing more to do.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let inner = &self.inner;
        inner.once(
            "read",
            inner.op(inner.table(table).estimated_document_count()),
        )
    }

    fn corrupt(&self, table: Table, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let coll = inner.table(table);
        inner.once("commit", async {
            let filter = doc! {"_id": key};
            match value {
                None => {
                    inner.op(coll.delete_one(filter)).await?;
                }
                // The log index stays: corruption does not come from the log.
                // A row that did not exist appears as if written at index 0.
                Some(v) => {
                    if inner.op(coll.find_one(filter.clone())).await?.is_some() {
                        let set = doc! {"$set": {"v": bytes(v)}};
                        inner.op(coll.update_one(filter, set)).await?;
                    } else {
                        let row = doc! {"_id": key, "v": bytes(v), "i": 0_i64};
                        inner.op(coll.insert_one(row)).await?;
                    }
                }
            }
            Ok(())
        })
    }

    fn wipe(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.once("commit", inner.clear())
    }

    fn ping(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.once("ping", async {
            inner.op(inner.db.run_command(doc! {"ping": 1})).await?;
            Ok(())
        })
    }

    fn crash_next_apply(&self, at: CrashPoint) {
        if let Ok(mut c) = self.inner.crash.lock() {
            *c = Some(at);
        }
    }
}

/// Reads straight from MongoDB. Inside an apply (`retry`) a failed read is
/// retried until it succeeds; a query's read fails at once.
struct Reader {
    inner: Arc<Inner>,
    retry: bool,
}

impl Reader {
    fn read<T, Fut>(&self, f: impl FnMut() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        if self.retry {
            Ok(self.inner.retry("read", f))
        } else {
            let mut f = f;
            self.inner.once("read", f())
        }
    }
}

impl StateReader for Reader {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|| self.inner.get(table, key))
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.read(|| self.inner.keys(table, below, limit))
    }
}

/// A frozen view held in memory: MongoDB without transactions has no
/// read snapshots, so a freeze reads everything while commits wait.
#[derive(Default)]
struct MemoryFrozen {
    tables: HashMap<Table, Vec<(String, Vec<u8>)>>,
    meta: HashMap<String, Vec<u8>>,
}

impl Frozen for MemoryFrozen {
    fn scan(&self, table: Table, f: &mut dyn FnMut(&str, &[u8])) -> Result<(), StoreError> {
        for (k, v) in self.tables.get(&table).into_iter().flatten() {
            f(k, v);
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key).cloned())
    }
}
