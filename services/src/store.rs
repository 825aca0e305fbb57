//! A node's durable store: one redb database holding the Raft log, the vote,
//! and the replicated state (items, users, orders, remembered request ids).
//!
//! Durability: log appends and votes commit with `Durability::Immediate`
//! (fsync) because Raft's safety depends on them. State-machine applies commit
//! with `Durability::None`: after a crash the state falls back to its last
//! durable point and openraft re-applies the committed log from there. Every
//! snapshot makes the state durable first, and the log is only purged up to a
//! snapshot, so the entries needed for that replay always exist.

use std::path::Path;
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::domain::{StateStore, StoreError, Table};

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed log id, last purged log id.
pub(crate) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
/// Last applied log id and last membership of the state machine.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// request id → remembered outcome (JSON `Remembered`).
pub(crate) const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("requests");
/// (timestamp ms, request id), to forget request ids in time order.
pub(crate) const REQUESTS_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("requests_by_time");

/// The redb table of each domain table, and its tag in snapshots.
fn def(table: Table) -> (u8, TableDefinition<'static, &'static str, &'static [u8]>) {
    let tag = match table {
        Table::Items => 1,
        Table::Users => 2,
        Table::Orders => 3,
        Table::Checkouts => 5,
        Table::OpenCheckouts => 6,
        Table::CheckoutsByTime => 7,
        Table::Steps => 8,
        Table::StepsByTime => 9,
        Table::Checks => 10,
    };
    (tag, TableDefinition::new(table.name()))
}

/// The redb table behind a domain table.
pub(crate) fn table_def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    def(table).1
}

/// Every replicated keyspace with its snapshot tag: the domain tables and
/// the remembered request ids.
pub(crate) const REQUESTS_TAG: u8 = 4;
pub(crate) fn snapshot_tables() -> Vec<(u8, TableDefinition<'static, &'static str, &'static [u8]>)>
{
    let mut tables: Vec<_> = Table::ALL.into_iter().map(def).collect();
    tables.push((REQUESTS_TAG, REQUESTS));
    tables
}

pub(crate) fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io)?;
        let db = Database::create(dir.join("node.redb")).map_err(io)?;
        let store = Self { db: Arc::new(db) };
        // Create every table up front so readers never see "table missing".
        let txn = store.db.begin_write().map_err(io)?;
        {
            txn.open_table(LOG).map_err(io)?;
            txn.open_table(LOG_META).map_err(io)?;
            txn.open_table(SM_META).map_err(io)?;
            txn.open_table(REQUESTS_BY_TIME).map_err(io)?;
            for (_, t) in snapshot_tables() {
                txn.open_table(t).map_err(io)?;
            }
        }
        txn.commit().map_err(io)?;
        Ok(store)
    }

    pub fn db(&self) -> &Database {
        &self.db
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

    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(io)
    }

    /// Makes every earlier non-durable commit durable.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.begin_write(true)?.commit().map_err(io)
    }

    /// A consistent read view of the replicated state.
    pub fn read(&self) -> Result<ReadView, StoreError> {
        Ok(ReadView {
            txn: self.begin_read()?,
        })
    }

    /// Number of keys in a table, for status and tests.
    pub fn count(&self, table: Table) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        txn.open_table(def(table).1).map_err(io)?.len().map_err(io)
    }
}

pub struct ReadView {
    txn: redb::ReadTransaction,
}

impl StateStore for ReadView {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.txn.open_table(def(table).1).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
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
        let t = self.txn.open_table(def(table).1).map_err(io)?;
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
pub(crate) struct WriteView<'txn> {
    /// In `Table::ALL` order.
    tables: Vec<StateTable<'txn>>,
}

fn slot(table: Table) -> usize {
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0)
}

impl<'txn> WriteView<'txn> {
    pub(crate) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        let tables = Table::ALL
            .into_iter()
            .map(|t| txn.open_table(def(t).1).map_err(io))
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
