//! Moves the Raft log of an earlier version, which kept it in two tables of
//! the node's redb database, into the segment log (`log_engine`), once.
//!
//! The import is written to a side directory and renamed into place, so a
//! crash mid-import leaves the old tables authoritative and the import is
//! simply done again; the old tables are dropped only after the rename.

use std::fs;
use std::path::Path;

use openraft::{Entry, LogId, Vote};
use redb::{ReadableTable, TableDefinition, TableError};
use serde::de::DeserializeOwned;

use super::log_engine::{Encoded, Segments};
use super::{NodeId, TypeConfig};
use crate::domain::StoreError;
use crate::storage::embedded::Store;
use crate::storage::io;

/// Where versions before the segment log kept entries and their metadata.
const OLD_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const OLD_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

/// What the old tables held.
struct OldLog {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: Vec<Entry<TypeConfig>>,
}

/// Imports `store`'s old log tables into `log_dir` unless it exists; drops
/// the old tables once the segment log holds them. Returns whether it
/// imported.
pub fn import_redb_log(store: &Store, log_dir: &Path) -> Result<bool, StoreError> {
    if log_dir.exists() {
        drop_old_tables(store)?;
        return Ok(false);
    }
    let Some(old) = read_old(store)? else {
        return Ok(false);
    };
    let side = log_dir.with_extension("importing");
    if side.exists() {
        fs::remove_dir_all(&side).map_err(io)?;
    }
    let (mut segments, _) = Segments::open(&side)?;
    let mut records = Vec::new();
    if let Some(purged) = old.last_purged {
        records.push(Encoded::purge(purged)?);
    }
    for entry in &old.entries {
        records.push(Encoded::entry(entry)?);
    }
    if let Some(vote) = &old.vote {
        records.push(Encoded::vote(vote)?);
    }
    records.push(Encoded::committed(old.committed)?);
    segments.write(&records)?;
    drop(segments);
    fs::rename(&side, log_dir).map_err(io)?;
    if let Some(parent) = log_dir.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    tracing::info!(
        entries = old.entries.len(),
        "imported the Raft log from the node's redb database into {}",
        log_dir.display()
    );
    drop_old_tables(store)?;
    Ok(true)
}

/// The old log, or `None` if the database never held one.
fn read_old(store: &Store) -> Result<Option<OldLog>, StoreError> {
    let txn = store.begin_read()?;
    let meta = match txn.open_table(OLD_META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let value = |key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(meta.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    };
    let vote = decode_opt(value("vote")?)?;
    let committed = decode_opt::<Option<LogId<NodeId>>>(value("committed")?)?.flatten();
    let last_purged = decode_opt(value("last_purged")?)?;
    let mut entries = Vec::new();
    match txn.open_table(OLD_LOG) {
        Ok(log) => {
            for row in log.iter().map_err(io)? {
                let (_, v) = row.map_err(io)?;
                entries.push(serde_json::from_slice(v.value()).map_err(io)?);
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(io(e)),
    }
    if vote.is_none() && entries.is_empty() && last_purged.is_none() {
        return Ok(None);
    }
    Ok(Some(OldLog {
        vote,
        committed,
        last_purged,
        entries,
    }))
}

fn decode_opt<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(io))
        .transpose()
}

fn drop_old_tables(store: &Store) -> Result<(), StoreError> {
    let present = {
        let txn = store.begin_read()?;
        let present = txn.open_table(OLD_META).is_ok() || txn.open_table(OLD_LOG).is_ok();
        present
    };
    if !present {
        return Ok(());
    }
    let txn = store.begin_write(true)?;
    txn.delete_table(OLD_LOG).map_err(io)?;
    txn.delete_table(OLD_META).map_err(io)?;
    txn.commit().map_err(io)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft::Proposals;

    fn id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    /// Writes a log the way versions before the segment log did.
    fn write_old_log(store: &Store, indexes: std::ops::RangeInclusive<u64>) {
        let txn = store.begin_write(true).unwrap();
        {
            let mut log = txn.open_table(OLD_LOG).unwrap();
            for i in indexes {
                let entry: Entry<TypeConfig> = Entry {
                    log_id: id(i),
                    payload: EntryPayload::Normal(Proposals(Vec::new())),
                };
                log.insert(i, serde_json::to_vec(&entry).unwrap().as_slice())
                    .unwrap();
            }
            let mut meta = txn.open_table(OLD_META).unwrap();
            let vote = serde_json::to_vec(&Vote::new(3, 2)).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
            let committed = serde_json::to_vec(&Some(id(6))).unwrap();
            meta.insert("committed", committed.as_slice()).unwrap();
            let purged = serde_json::to_vec(&id(4)).unwrap();
            meta.insert("last_purged", purged.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn an_old_redb_log_is_imported_once_and_its_tables_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        write_old_log(&store, 5..=7);
        let log_dir = dir.path().join("raft-log");

        assert!(import_redb_log(&store, &log_dir).unwrap());
        let (_, state) = Segments::open(&log_dir).unwrap();
        assert_eq!(state.entries.keys().copied().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(state.vote, Some(Vote::new(3, 2)));
        assert_eq!(state.committed, Some(id(6)));
        assert_eq!(state.last_purged, Some(id(4)));
        assert!(read_old(&store).unwrap().is_none(), "old tables dropped");
        assert!(!import_redb_log(&store, &log_dir).unwrap(), "only once");
    }

    #[test]
    fn an_interrupted_import_is_redone_from_the_old_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        write_old_log(&store, 5..=6);
        let log_dir = dir.path().join("raft-log");
        // A crash before the rename leaves a partial side directory.
        fs::create_dir_all(log_dir.with_extension("importing")).unwrap();
        fs::write(log_dir.with_extension("importing").join("junk"), b"x").unwrap();

        assert!(import_redb_log(&store, &log_dir).unwrap());
        let (_, state) = Segments::open(&log_dir).unwrap();
        assert_eq!(state.entries.len(), 2);
    }

    #[test]
    fn a_database_without_an_old_log_imports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8).unwrap();
        let log_dir = dir.path().join("raft-log");
        assert!(!import_redb_log(&store, &log_dir).unwrap());
        assert!(!log_dir.exists());
    }
}
