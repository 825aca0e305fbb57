//! The embedded store (the default backend): the replicated state in the
//! node's memory, made durable by the Raft log and snapshots rather than by
//! a storage transaction per batch.
//!
//! The log is the truth. A batch is applied in memory; a snapshot writes the
//! whole state to the node's snapshot file, and the log is only purged up to
//! a snapshot. When the node starts, the state machine loads its last
//! snapshot (`StateMachine::restore`) and openraft re-applies the log from
//! there, so a restart ends where the node was — with no fsync and no page
//! management per batch on the way.
//!
//! Tables are persistent ordered maps (`imbl::OrdMap`): freezing the state
//! for a digest or a snapshot is a constant-time clone, and batches applied
//! meanwhile copy only the paths they change.

use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cart_common::spec::StorageBackend;
use imbl::OrdMap;

use super::overlay::Overlay;
use super::{ApplyFn, Backend, CrashPoint, Frozen, Meta, ReadOnly, Row, StateReader};
use crate::domain::{StateStore, StoreError, Table};

type Rows = OrdMap<Arc<str>, Arc<[u8]>>;

/// Every table and the bookkeeping, as of one committed batch.
#[derive(Clone)]
struct Tables {
    /// In `Table::ALL` order.
    rows: Vec<Rows>,
    meta: OrdMap<String, Vec<u8>>,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            rows: Table::ALL.iter().map(|_| Rows::new()).collect(),
            meta: OrdMap::new(),
        }
    }
}

fn slot(table: Table) -> usize {
    Table::ALL.iter().position(|t| *t == table).unwrap_or(0)
}

impl Tables {
    fn table(&self, table: Table) -> &Rows {
        &self.rows[slot(table)]
    }

    fn put(&mut self, table: Table, key: &str, value: &[u8]) {
        self.rows[slot(table)].insert(Arc::from(key), Arc::from(value));
    }

    fn delete(&mut self, table: Table, key: &str) {
        self.rows[slot(table)].remove(key);
    }
}

impl StateReader for Tables {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.table(table).get(key).map(|v| v.to_vec()))
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let rows = self.table(table);
        let keys: Box<dyn Iterator<Item = &Arc<str>>> = match below {
            Some(b) => Box::new(
                rows.range::<_, str>((Bound::Unbounded, Bound::Excluded(b)))
                    .map(|(k, _)| k),
            ),
            None => Box::new(rows.keys()),
        };
        Ok(keys.take(limit).map(|k| k.to_string()).collect())
    }
}

#[derive(Clone, Default)]
pub struct Store {
    state: Arc<RwLock<Tables>>,
    /// `crash_next_apply`'s armed crash point.
    crash: Arc<Mutex<Option<CrashPoint>>>,
}

impl Store {
    /// An empty store; the state machine restores its snapshot into it.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A query's view: each read sees the state as of the last committed batch.
struct ReadView(Store);

impl StateReader for ReadView {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.read().get(table, key)
    }

    fn keys(
        &self,
        table: Table,
        below: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.0.read().keys(table, below, limit)
    }
}

struct FrozenView(Tables);

impl Frozen for FrozenView {
    fn scan(&self, table: Table, f: &mut dyn FnMut(&str, &[u8])) -> Result<(), StoreError> {
        for (k, v) in self.0.table(table) {
            f(k, v);
        }
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.meta.get(key).cloned())
    }
}

impl Backend for Store {
    fn kind(&self) -> StorageBackend {
        StorageBackend::Embedded
    }

    fn survives_restart(&self) -> bool {
        false
    }

    fn reader(&self) -> Result<Box<dyn StateStore + Send>, StoreError> {
        Ok(Box::new(ReadOnly(ReadView(self.clone()))))
    }

    /// The batch runs against an overlay of the committed state (so a
    /// failing command leaves nothing behind), then its writes and `meta`
    /// are committed at once under the write lock.
    fn apply(&self, _index: u64, meta: Meta<'_>, apply: ApplyFn<'_>) -> Result<(), StoreError> {
        let writes = {
            let committed = self.read();
            let base = ReadOnly(&*committed);
            let mut overlay = Overlay::new(&base);
            apply(&mut overlay)?;
            overlay.writes
        };
        let crash = self.crash.lock().ok().and_then(|mut c| c.take());
        if crash == Some(CrashPoint::BeforeCommit) {
            return Err(StoreError("simulated crash before commit".into()));
        }
        {
            let mut state = self.write();
            for (table, rows) in writes {
                for (key, value) in rows {
                    match value {
                        Some(v) => state.put(table, &key, &v),
                        None => state.delete(table, &key),
                    }
                }
            }
            for (key, value) in meta {
                state.meta.insert((*key).to_string(), value.clone());
            }
        }
        match crash {
            Some(_) => Err(StoreError("simulated crash after commit".into())),
            None => Ok(()),
        }
    }

    fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().meta.get(key).cloned())
    }

    fn freeze(&self) -> Result<Arc<dyn Frozen>, StoreError> {
        Ok(Arc::new(FrozenView(self.read().clone())))
    }

    fn replace(
        &self,
        _index: u64,
        rows: &mut dyn Iterator<Item = Row>,
        meta: Meta<'_>,
    ) -> Result<(), StoreError> {
        let mut fresh = Tables::default();
        for row in rows {
            let (table, key, value) = row?;
            fresh.put(table, &key, &value);
        }
        for (key, value) in meta {
            fresh.meta.insert((*key).to_string(), value.clone());
        }
        *self.write() = fresh;
        Ok(())
    }

    /// Nothing to flush: a snapshot file is this store's durable form.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        Ok(self.read().table(table).len() as u64)
    }

    fn corrupt(&self, table: Table, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        let mut state = self.write();
        match value {
            Some(v) => state.put(table, key, v),
            None => state.delete(table, key),
        }
        Ok(())
    }

    /// The node's data directory is removed as a whole before a rebuild.
    fn wipe(&self) -> Result<(), StoreError> {
        *self.write() = Tables::default();
        Ok(())
    }

    /// The state is in the process: it answers while the node runs.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn crash_next_apply(&self, at: CrashPoint) {
        if let Ok(mut c) = self.crash.lock() {
            *c = Some(at);
        }
    }
}
