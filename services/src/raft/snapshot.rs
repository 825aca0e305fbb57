//! The snapshot format: every row of the replicated tables, length-prefixed,
//! and the file that keeps the latest snapshot across restarts.
//!
//! Row: `[table tag u8][key len u32 LE][key][value len u32 LE][value]`.
//! File: `CSN1`, `[meta len u32 LE][meta JSON]`, then the rows.

use std::io::Write;
use std::path::{Path, PathBuf};

use openraft::{BasicNode, SnapshotMeta};

use super::NodeId;
use crate::domain::{StoreError, Table};
use crate::storage::io;

pub type Meta = SnapshotMeta<NodeId, BasicNode>;

const MAGIC: &[u8; 4] = b"CSN1";

/// Each table's tag in a snapshot row. Part of the snapshot format: never
/// reuse a tag.
const TAGS: [(Table, u8); 11] = [
    (Table::Items, 1),
    (Table::Users, 2),
    (Table::Orders, 3),
    (Table::Requests, 4),
    (Table::Checkouts, 5),
    (Table::OpenCheckouts, 6),
    (Table::CheckoutsByTime, 7),
    (Table::Steps, 8),
    (Table::StepsByTime, 9),
    (Table::Checks, 10),
    (Table::RequestTimes, 11),
];

pub fn tag_of(table: Table) -> u8 {
    TAGS.iter()
        .find(|(t, _)| *t == table)
        .map_or(0, |(_, tag)| *tag)
}

pub fn table_of(tag: u8) -> Option<Table> {
    TAGS.iter()
        .find(|(_, t)| *t == tag)
        .map(|(table, _)| *table)
}

pub fn push_row(buf: &mut Vec<u8>, tag: u8, key: &[u8], value: &[u8]) {
    buf.push(tag);
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
    buf.extend_from_slice(value);
}

/// Iterates `(tag, key, value)` rows; a truncated or malformed buffer is an
/// error, never a panic.
pub fn rows(mut buf: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8], &[u8]), StoreError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let row = (|| {
            let (&tag, rest) = buf.split_first()?;
            let (key, rest) = take_prefixed(rest)?;
            let (value, rest) = take_prefixed(rest)?;
            buf = rest;
            Some((tag, key, value))
        })();
        match row {
            Some(r) => Some(Ok(r)),
            None => {
                buf = &[];
                Some(Err(StoreError("malformed snapshot row".into())))
            }
        }
    })
}

fn take_prefixed(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let body = buf.get(4..4 + len)?;
    Some((body, &buf[4 + len..]))
}

pub fn file_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.bin")
}

/// Writes a snapshot's rows straight to its file, so that building one
/// needs no buffer of the whole state (tens of MiB for the order group).
pub struct RowWriter {
    out: std::io::BufWriter<std::fs::File>,
    /// The first failed write; later rows are skipped.
    failed: Option<std::io::Error>,
}

impl RowWriter {
    pub fn row(&mut self, tag: u8, key: &[u8], value: &[u8]) {
        if self.failed.is_none() {
            let mut head = [0; 5];
            head[0] = tag;
            head[1..].copy_from_slice(&(key.len() as u32).to_le_bytes());
            let written = self
                .out
                .write_all(&head)
                .and_then(|()| self.out.write_all(key))
                .and_then(|()| self.out.write_all(&(value.len() as u32).to_le_bytes()))
                .and_then(|()| self.out.write_all(value));
            self.failed = written.err();
        }
    }

    fn raw(&mut self, rows: &[u8]) {
        if self.failed.is_none() {
            self.failed = self.out.write_all(rows).err();
        }
    }
}

/// Writes the snapshot file atomically (temp file, fsync, rename), its rows
/// written by `fill`.
pub fn write(
    dir: &Path,
    meta: &Meta,
    fill: impl FnOnce(&mut RowWriter) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let meta_json = serde_json::to_vec(meta).map_err(io)?;
    let tmp = dir.join("snapshot.bin.tmp");
    let mut out =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(io)?);
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&(meta_json.len() as u32).to_le_bytes())
        .map_err(io)?;
    out.write_all(&meta_json).map_err(io)?;
    let mut rows = RowWriter { out, failed: None };
    fill(&mut rows)?;
    if let Some(e) = rows.failed {
        return Err(io(e));
    }
    let file = rows.out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, file_path(dir)).map_err(io)
}

/// Writes a snapshot whose rows are already encoded (one received whole).
pub fn save(dir: &Path, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
    write(dir, meta, |rows| {
        rows.raw(data);
        Ok(())
    })
}

pub fn load(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let bytes = match std::fs::read(file_path(dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| StoreError("snapshot file has no magic".into()))?;
    let (meta, data) =
        take_prefixed(rest).ok_or_else(|| StoreError("snapshot file truncated".into()))?;
    let meta: Meta = serde_json::from_slice(meta).map_err(io)?;
    // The rows are the file's tail: cut the head off in place rather than
    // copy the whole state once more.
    let head = bytes.len() - data.len();
    let mut bytes = bytes;
    bytes.drain(..head);
    Ok(Some((meta, bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_its_own_tag() {
        for table in Table::ALL {
            assert_eq!(table_of(tag_of(table)), Some(table));
        }
    }

    #[test]
    fn a_snapshot_written_row_by_row_loads_as_those_rows() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta {
            snapshot_id: "s1".into(),
            ..Default::default()
        };
        write(dir.path(), &meta, |rows| {
            rows.row(1, b"k1", b"v1");
            rows.row(4, b"k2", b"");
            Ok(())
        })
        .unwrap();
        let (loaded, data) = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded, meta);
        let mut expected = Vec::new();
        push_row(&mut expected, 1, b"k1", b"v1");
        push_row(&mut expected, 4, b"k2", b"");
        assert_eq!(data, expected);
        assert!(!dir.path().join("snapshot.bin.tmp").exists());
    }

    #[test]
    fn rows_round_trip_and_truncation_is_an_error() {
        let mut buf = Vec::new();
        push_row(&mut buf, 1, b"k1", b"v1");
        push_row(&mut buf, 3, b"", b"{}");
        let got: Vec<_> = rows(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![(1, &b"k1"[..], &b"v1"[..]), (3, &b""[..], &b"{}"[..])]
        );
        let cut = &buf[..buf.len() - 1];
        assert!(rows(cut).any(|r| r.is_err()));
    }
}
