//! Moves the Raft logs of earlier versions into the node's segment log
//! (`log_engine`), once: the log an early version kept (with the state) in
//! the node's redb file, and the segment logs each shard `k > 0` kept in
//! its own `shard-k/raft-log` before a node shared one log among shards
//! (shard 0's was already the node's `raft-log`, whose old segments are
//! read as shard 0's).
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

use cart_common::shard::Shard;

use super::log_engine::{Encoded, Segments};
use super::log_state::Planned;
use super::log_store::LOG_DIR;
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
    let (mut segments, _) = Segments::open(&side, 1, 0)?;
    segments.write(&old.records(Shard(0))?)?;
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

impl OldLog {
    /// The records that rebuild this log as `shard`'s.
    fn records(&self, shard: Shard) -> Result<Vec<Encoded>, StoreError> {
        let mut records = Vec::with_capacity(self.entries.len() + 3);
        if let Some(purged) = self.last_purged {
            records.push(Encoded::purge(shard, purged)?);
        }
        for entry in &self.entries {
            records.push(Encoded::entry(shard, entry)?);
        }
        if let Some(vote) = &self.vote {
            records.push(Encoded::vote(shard, vote)?);
        }
        records.push(Encoded::committed(shard, self.committed)?);
        Ok(records)
    }
}

/// The name an imported shard log is renamed to before it is deleted.
const IMPORTED: &str = "raft-log.imported";

/// Imports each shard `k > 0`'s own segment log (`dir/shard-k/raft-log`,
/// from before a node shared one log among its shards) into the node's
/// log in `log_dir`, then deletes it. Returns how many it imported.
///
/// Each import starts with a reset of its shard and is synced before the
/// old log is renamed away (then deleted), so a crash at any point either
/// redoes the whole import or finds it done.
pub fn import_shard_logs(dir: &Path, log_dir: &Path, shards: u16) -> Result<usize, StoreError> {
    let mut imported = 0;
    for shard in Shard::all(shards).skip(1) {
        let shard_dir = dir.join(format!("shard-{}", shard.0));
        let done = shard_dir.join(IMPORTED);
        if done.exists() {
            fs::remove_dir_all(&done).map_err(io)?;
        }
        let old_dir = shard_dir.join(LOG_DIR);
        if !old_dir.exists() {
            continue;
        }
        let old = read_shard_log(&old_dir)?;
        let (mut segments, _) = Segments::open(log_dir, shards, 0)?;
        let mut records = vec![Encoded::reset(shard)];
        records.extend(old.records(shard)?);
        segments.write(&records)?;
        drop(segments);
        fs::rename(&old_dir, &done).map_err(io)?;
        fs::File::open(&shard_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        fs::remove_dir_all(&done).map_err(io)?;
        tracing::info!(
            shard = shard.0,
            entries = old.entries.len(),
            "moved shard {shard}'s own Raft log into the node's log {}",
            log_dir.display()
        );
        imported += 1;
    }
    Ok(imported)
}

/// Everything a shard's own segment log holds (written when it was the
/// only group in its files: its records are shard 0's there).
fn read_shard_log(old_dir: &Path) -> Result<OldLog, StoreError> {
    let (segments, states) = Segments::open(old_dir, 1, usize::MAX)?;
    drop(segments);
    let state = states
        .into_iter()
        .next()
        .ok_or_else(|| StoreError(format!("{}: no log state", old_dir.display())))?;
    let mut entries = Vec::new();
    for planned in state.plan(..) {
        match planned {
            Planned::Here(entry) => entries.push(entry),
            // Every entry is kept in memory (no resident limit).
            Planned::OnDisk(_) => {
                return Err(StoreError(format!(
                    "{}: an entry of the old log was not read into memory",
                    old_dir.display()
                )))
            }
        }
    }
    Ok(OldLog {
        vote: state.vote,
        committed: state.committed,
        last_purged: state.last_purged,
        entries,
    })
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
        let (_, mut states) = Segments::open(&log_dir, 1, usize::MAX).unwrap();
        let state = states.remove(0);
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
        let (_, mut states) = Segments::open(&log_dir, 1, usize::MAX).unwrap();
        let state = states.remove(0);
        assert_eq!(state.indexes().count(), 2);
    }

    #[test]
    fn a_directory_without_an_old_file_imports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("raft-log");
        assert!(!import_redb_log(dir.path(), &log_dir).unwrap());
        assert!(!log_dir.exists());
    }

    /// Writes shard `shard`'s own log the way a node did before its shards
    /// shared one: a segment log in `shard-k/raft-log`, its records as the
    /// only group's.
    fn write_shard_log(dir: &Path, shard: u16, indexes: std::ops::Range<u64>, vote: Vote<NodeId>) {
        let old_dir = dir.join(format!("shard-{shard}")).join(LOG_DIR);
        let (mut segments, _) = Segments::open(&old_dir, 1, usize::MAX).unwrap();
        let mut records = vec![Encoded::vote(Shard(0), &vote).unwrap()];
        for i in indexes {
            let entry: Entry<TypeConfig> = Entry {
                log_id: id(i),
                payload: EntryPayload::Normal(Proposals(Vec::new())),
            };
            records.push(Encoded::entry(Shard(0), &entry).unwrap());
        }
        records.push(Encoded::committed(Shard(0), Some(id(2))).unwrap());
        segments.write(&records).unwrap();
    }

    #[test]
    fn each_shards_own_log_moves_into_the_nodes_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join(LOG_DIR);
        // Shard 0's log already is the node's.
        let (mut node_log, _) = Segments::open(&log_dir, 3, usize::MAX).unwrap();
        node_log
            .write([&Encoded::vote(Shard(0), &Vote::new(7, 1)).unwrap()])
            .unwrap();
        drop(node_log);
        write_shard_log(dir.path(), 1, 1..4, Vote::new(5, 2));
        write_shard_log(dir.path(), 2, 1..3, Vote::new(6, 3));

        assert_eq!(import_shard_logs(dir.path(), &log_dir, 3).unwrap(), 2);
        let (_, states) = Segments::open(&log_dir, 3, usize::MAX).unwrap();
        assert_eq!(states[0].vote, Some(Vote::new(7, 1)));
        assert_eq!(states[0].indexes().count(), 0);
        assert_eq!(states[1].indexes().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(states[1].vote, Some(Vote::new(5, 2)));
        assert_eq!(states[1].committed, Some(id(2)));
        assert_eq!(states[2].indexes().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(states[2].vote, Some(Vote::new(6, 3)));
        for k in 1..=2 {
            let shard_dir = dir.path().join(format!("shard-{k}"));
            assert!(
                !shard_dir.join(LOG_DIR).exists(),
                "shard {k}'s old log is gone"
            );
            assert!(!shard_dir.join(IMPORTED).exists());
        }
        assert_eq!(
            import_shard_logs(dir.path(), &log_dir, 3).unwrap(),
            0,
            "only once"
        );
    }

    #[test]
    fn a_shard_log_import_cut_short_is_done_again_from_the_old_log() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join(LOG_DIR);
        write_shard_log(dir.path(), 1, 1..4, Vote::new(5, 2));
        // A crash after the records were written, before the old log was
        // renamed away: the import runs again from the old log.
        let old = read_shard_log(&dir.path().join("shard-1").join(LOG_DIR)).unwrap();
        let (mut node_log, _) = Segments::open(&log_dir, 2, usize::MAX).unwrap();
        let mut records = vec![Encoded::reset(Shard(1))];
        records.extend(old.records(Shard(1)).unwrap());
        node_log.write(&records).unwrap();
        drop(node_log);

        assert_eq!(import_shard_logs(dir.path(), &log_dir, 2).unwrap(), 1);
        let (_, states) = Segments::open(&log_dir, 2, usize::MAX).unwrap();
        assert_eq!(states[1].indexes().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(states[1].vote, Some(Vote::new(5, 2)));
    }
}
