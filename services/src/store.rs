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
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orders");
/// request id → remembered outcome (JSON `Remembered`).
pub(crate) const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("requests");
/// (timestamp ms, request id), to forget request ids in time order.
pub(crate) const REQUESTS_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("requests_by_time");

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match table {
        Table::Items => ITEMS,
        Table::Users => USERS,
        Table::Orders => ORDERS,
    }
}

/// The replicated keyspaces, each with a tag used in snapshots.
pub(crate) const REQUESTS_TAG: u8 = 4;
pub(crate) const SNAPSHOT_TABLES: [(u8, TableDefinition<&str, &[u8]>); 4] = [
    (1, ITEMS),
    (2, USERS),
    (3, ORDERS),
    (REQUESTS_TAG, REQUESTS),
];

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
            for (_, t) in SNAPSHOT_TABLES {
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
        txn.open_table(def(table)).map_err(io)?.len().map_err(io)
    }
}

pub struct ReadView {
    txn: redb::ReadTransaction,
}

impl StateStore for ReadView {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.txn.open_table(def(table)).map_err(io)?;
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn put(&mut self, _table: Table, _key: &str, _value: &[u8]) -> Result<(), StoreError> {
        Err(StoreError("read-only view".into()))
    }
}

/// The state tables opened inside one write transaction, for the domain.
pub(crate) struct WriteView<'txn> {
    items: redb::Table<'txn, &'static str, &'static [u8]>,
    users: redb::Table<'txn, &'static str, &'static [u8]>,
    orders: redb::Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> WriteView<'txn> {
    pub(crate) fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            items: txn.open_table(ITEMS).map_err(io)?,
            users: txn.open_table(USERS).map_err(io)?,
            orders: txn.open_table(ORDERS).map_err(io)?,
        })
    }

    fn table(&self, table: Table) -> &redb::Table<'txn, &'static str, &'static [u8]> {
        match table {
            Table::Items => &self.items,
            Table::Users => &self.users,
            Table::Orders => &self.orders,
        }
    }
}

impl StateStore for WriteView<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.table(table);
        Ok(t.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let t = match table {
            Table::Items => &mut self.items,
            Table::Users => &mut self.users,
            Table::Orders => &mut self.orders,
        };
        t.insert(key, value).map_err(io)?;
        Ok(())
    }
}
