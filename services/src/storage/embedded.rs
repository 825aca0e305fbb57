//! The embedded store: one redb database per node. It always holds the Raft
//! log and vote; with the default backend it also holds the replicated state
//! (every domain table, the remembered request ids, the applied log id).
//!
//! Durability: log appends and votes commit with `Durability::Immediate`
//! (fsync) because Raft's safety depends on them. State-machine applies commit
//! with `Durability::None`: after a crash the state falls back to its last
//! durable point and openraft re-applies the committed log from there. Every
//! snapshot makes the state durable first, and the log is only purged up to a
//! snapshot, so the entries needed for that replay always exist.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cart_common::spec::StorageBackend;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::{io, ApplyFn, Backend, CrashPoint, Frozen, Meta, ReadOnly, Row, StateReader};
use crate::domain::{StateStore, StoreError, Table};

/// Last applied log id and last membership of the state machine.
const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");

const FILE: &str = "node.redb";

/// The redb table behind a domain table.
fn table_def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    /// `crash_next_apply`'s armed crash point.
    crash: Arc<std::sync::Mutex<Option<CrashPoint>>>,
}

impl Store {
    /// Whether `dir` holds no store yet (a new node, or a lost directory).
    pub fn is_new(dir: &Path) -> bool {
        !dir.join(FILE).exists()
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_mib`.
    pub fn open(dir: &Path, cache_mib: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let cache = usize::try_from(cache_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let db = redb::Builder::new()
            .set_cache_size(cache)
            .create(dir.join(FILE))
            .map_err(io)?;
        let store = Self {
            db: Arc::new(db),
            crash: Arc::default(),
        };
        // Create every table up front so readers never see "table missing".
        let txn = store.db.begin_write().map_err(io)?;
        {
            txn.open_table(SM_META).map_err(io)?;
            for t in Table::ALL {
                txn.open_table(table_def(t)).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        Ok(store)
    }

    /// A write transaction with the given durability.
    pub(crate) fn begin_write(&self, durable: bool) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        let level = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(level).map_err(io)?;
        Ok(txn)
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(io)
    }
}

impl Backend for Store {
    fn kind(&self) -> StorageBackend {
        StorageBackend::Redb
    }

    fn reader(&self) -> Result<Box<dyn StateStore + Send>, StoreError> {
        Ok(Box::new(ReadOnly(ReadView {
            txn: self.begin_read()?,
        })))
    }

    fn apply(&self, _index: u64, meta: Meta<'_>, apply: ApplyFn<'_>) -> Result<(), StoreError> {
        let txn = self.begin_write(false)?;
        {
            let mut view = WriteView::open(&txn)?;
            apply(&mut view)?;
            let mut table = txn.open_table(SM_META).map_err(io)?;
            for (key, value) in meta {
                table.insert(*key, value.as_slice()).map_err(io)?;
            }
        }
        let crash = self.crash.lock().ok().and_then(|mut c| c.take());
        if crash == Some(CrashPoint::BeforeCommit) {
            return Err(StoreError("simulated crash before commit".into()));
        }
        txn.commit().map_err(io)?;
        match crash {
            Some(_) => Err(StoreError("simulated crash after commit".into())),
            None => Ok(()),
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_meta(&self.begin_read()?, key)
    }

    fn freeze(&self) -> Result<Arc<dyn Frozen>, StoreError> {
        Ok(Arc::new(FrozenView(self.begin_read()?)))
    }

    fn replace(
        &self,
        _index: u64,
        rows: &mut dyn Iterator<Item = Row>,
        meta: Meta<'_>,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let txn = self.begin_write(true)?;
        {
            let mut view = WriteView::open(&txn)?;
            for table in &mut view.tables {
                table.retain(|_, _| false).map_err(io)?;
            }
            for row in rows {
                let (table, key, value) = row?;
                view.put(table, &key, &value)?;
            }
            let mut table = txn.open_table(SM_META).map_err(io)?;
            for (key, value) in meta {
                table.insert(*key, value.as_slice()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            "state replaced"
        );
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.begin_write(true)?.commit().map_err(io)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        txn.open_table(table_def(table))
            .map_err(io)?
            .len()
            .map_err(io)
    }

    fn corrupt(&self, table: Table, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut t = txn.open_table(table_def(table)).map_err(io)?;
            match value {
                Some(v) => {
                    t.insert(key, v).map_err(io)?;
                }
                None => {
                    t.remove(key).map_err(io)?;
                }
            }
        }
        txn.commit().map_err(io)
    }

    /// The node's data directory is removed as a whole before a rebuild.
    fn wipe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// An embedded store is in the process: it answers while the node runs.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn crash_next_apply(&self, at: CrashPoint) {
        if let Ok(mut c) = self.crash.lock() {
            *c = Some(at);
        }
    }
}

fn read_meta(txn: &ReadTransaction, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let table = txn.open_table(SM_META).map_err(io)?;
    let value = table.get(key).map_err(io)?;
    Ok(value.map(|v| v.value().to_vec()))
}

struct FrozenView(ReadTransaction);

impl Frozen for FrozenView {
    fn scan(&self, table: Table, f: &mut dyn FnMut(&str, &[u8])) -> Result<(), StoreError> {
        let t = self.0.open_table(table_def(table)).map_err(io)?;
        for row in t.iter().map_err(io)? {
            let (k, v) = row.map_err(io)?;
            f(k.value(), v.value());
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_meta(&self.0, key)
    }
}

struct ReadView {
    txn: ReadTransaction,
}

impl StateReader for ReadView {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.txn.open_table(table_def(table)).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let t = self.txn.open_table(table_def(table)).map_err(io)?;
        keys(&t, below, limit)
    }
}

fn keys(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    below: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let rows = match below {
        Some(b) => t.range::<&str>(..b).map_err(io)?,
        None => t.range::<&str>(..).map_err(io)?,
    };
    let mut out = Vec::new();
    for row in rows.take(limit) {
        let (k, _) = row.map_err(io)?;
        out.push(k.value().to_string());
    }
    Ok(out)
}

type StateTable<'txn> = redb::Table<'txn, &'static str, &'static [u8]>;

/// The state tables opened inside one write transaction, for the domain.
struct WriteView<'txn> {
    /// In `Table::ALL` order.
    tables: Vec<StateTable<'txn>>,
}

fn slot(table: Table) -> usize {
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0)
}

impl<'txn> WriteView<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        let tables = Table::ALL
            .into_iter()
            .map(|t| txn.open_table(table_def(t)).map_err(io))
            .collect::<Result<_, _>>()?;
        Ok(Self { tables })
    }
}

impl StateStore for WriteView<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = &self.tables[slot(table)];
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tables[slot(table)].insert(key, value).map_err(io)?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &str) -> Result<(), StoreError> {
        self.tables[slot(table)].remove(key).map_err(io)?;
        Ok(())
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        keys(&self.tables[slot(table)], below, limit)
    }
}
