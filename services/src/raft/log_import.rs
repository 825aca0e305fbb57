//! Moves the Raft log of an earlier version, which kept it (and the state)
//! in the node's redb file, into the segment log (`log_engine`), once.
//!
//! Only the log needs moving: the state the redb file also held is the
//! node's last snapshot plus the log after it, which is how the embedded
//! store rebuilds it at every start anyway (the log was only ever purged up
//! to a snapshot). The import is written to a side directory and renamed
//! into place, so a crash mid-import leaves the redb file authoritative and
//! the import is simply done again; the file is deleted after the rename.

use std::fs;
use std::path::Path;

use openraft::{Entry, LogId, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::de::DeserializeOwned;

use super::log_engine::{Encoded, Segments};
use super::{NodeId, TypeConfig};
use crate::domain::StoreError;
use crate::storage::io;

/// The redb file of versions before the segment log.
const OLD_FILE: &str = "node.redb";

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

/// Whether `dir` holds the redb file of an earlier version.
pub fn has_old_log(dir: &Path) -> bool {
    dir.join(OLD_FILE).exists()
}

/// Imports the log of `dir`'s old redb file into `log_dir` unless that
/// exists, then deletes the old file. Returns whether it imported.
pub fn import_redb_log(dir: &Path, log_dir: &Path) -> Result<bool, StoreError> {
    let old_file = dir.join(OLD_FILE);
    if !old_file.exists() {
        return Ok(false);
    }
    if log_dir.exists() {
        // Imported before a crash could delete the old file.
        return remove_old(&old_file).map(|()| false);
    }
    let db = Database::open(&old_file).map_err(|e| {
        StoreError(format!(
            "{} (the store of an earlier version) does not open: {e};              rebuild this node from its group (cart rebuild) or remove its data directory",
            old_file.display()
        ))
    })?;
    let old = read_old(&db)?;
    drop(db);
    let Some(old) = old else {
        return remove_old(&old_file).map(|()| false);
    };
    let side = log_dir.with_extension("importing");
    if side.exists() {
        fs::remove_dir_all(&side).map_err(io)?;
    }
    let (mut segments, _) = Segments::open(&side, 0)?;
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
    remove_old(&old_file)?;
    Ok(true)
}

fn remove_old(old_file: &Path) -> Result<(), StoreError> {
    fs::remove_file(old_file).map_err(io)
}

/// The old log, or `None` if the database never held one.
fn read_old(db: &Database) -> Result<Option<OldLog>, StoreError> {
    let txn = db.begin_read().map_err(io)?;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::raft::Proposals;

    fn id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    /// Writes a log the way versions before the segment log did.
    fn write_old_log(dir: &Path, indexes: std::ops::RangeInclusive<u64>) {
        let db = Database::create(dir.join(OLD_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
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
        write_old_log(dir.path(), 5..=7);
        let log_dir = dir.path().join("raft-log");

        assert!(import_redb_log(dir.path(), &log_dir).unwrap());
        let (_, state) = Segments::open(&log_dir, usize::MAX).unwrap();
        assert_eq!(state.indexes().collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(state.vote, Some(Vote::new(3, 2)));
        assert_eq!(state.committed, Some(id(6)));
        assert_eq!(state.last_purged, Some(id(4)));
        assert!(!has_old_log(dir.path()), "the old file is gone");
        assert!(!import_redb_log(dir.path(), &log_dir).unwrap(), "only once");
    }

    #[test]
    fn an_interrupted_import_is_redone_from_the_old_tables() {
        let dir = tempfile::tempdir().unwrap();
        write_old_log(dir.path(), 5..=6);
        let log_dir = dir.path().join("raft-log");
        // A crash before the rename leaves a partial side directory.
        fs::create_dir_all(log_dir.with_extension("importing")).unwrap();
        fs::write(log_dir.with_extension("importing").join("junk"), b"x").unwrap();

        assert!(import_redb_log(dir.path(), &log_dir).unwrap());
        let (_, state) = Segments::open(&log_dir, usize::MAX).unwrap();
        assert_eq!(state.indexes().count(), 2);
    }

    #[test]
    fn a_directory_without_an_old_file_imports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("raft-log");
        assert!(!import_redb_log(dir.path(), &log_dir).unwrap());
        assert!(!log_dir.exists());
    }
}
