//! The Raft log on disk: append-only segment files of checksummed records,
//! replayed into memory when the node starts.
//!
//! Why not a database: a log is only ever appended to, cut at its tail
//! (a conflicting suffix) or dropped at its head (after a snapshot). A
//! B-tree pays copy-on-write page management and a transaction per group
//! commit for none of that; here a group commit is one `write` and one
//! `fdatasync`, and a purge deletes whole files.
//!
//! A segment is `<number>.seg`: a 12-byte header (magic, format) and then
//! records, each `len: u32 | crc32: u32 | kind: u8 | payload` (little
//! endian; the length and checksum cover kind and payload). Cuts and purges
//! are records too, so replaying every segment in order rebuilds the log.
//! A new segment starts with the newest vote, committed id and purge
//! record, so that deleting older segments never loses them.
//!
//! A crash can tear only the tail of the last segment (records are
//! appended, and a segment is closed only after its last write was synced):
//! replay cuts a torn or half-written tail off there. A bad record anywhere
//! else is corruption, and the node refuses to start.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, Vote};
use serde::de::DeserializeOwned;

use super::log_state::LogState;
use super::{NodeId, TypeConfig};
use crate::domain::StoreError;
use crate::storage::io;

/// A segment is closed once it holds this much; purges free whole segments.
pub const SEGMENT_BYTES: u64 = 32 << 20;
const MAGIC: &[u8; 8] = b"CARTRLOG";
/// The segment format; a node refuses segments of a newer one.
const FORMAT: u32 = 1;
const HEADER_LEN: usize = 12;
/// Length and checksum before each record's kind and payload.
const FRAME_LEN: usize = 8;
const SUFFIX: &str = "seg";

/// What one record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Entry = 1,
    Vote = 2,
    Committed = 3,
    /// Removes the entries from an index on.
    Truncate = 4,
    /// Removes the entries up to a log id, which becomes the last purged.
    Purge = 5,
}

impl Kind {
    fn of(byte: u8) -> Option<Self> {
        [
            Self::Entry,
            Self::Vote,
            Self::Committed,
            Self::Truncate,
            Self::Purge,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

/// One record, framed and checksummed, ready to be written.
pub struct Encoded {
    kind: Kind,
    /// Entry: its index; truncate: the first index removed; purge: the last.
    index: u64,
    /// An entry's id, reported back once it is written.
    log_id: Option<LogId<NodeId>>,
    bytes: Vec<u8>,
}

impl Encoded {
    pub fn entry(entry: &Entry<TypeConfig>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(entry).map_err(io)?;
        let mut record = Self::frame(Kind::Entry, entry.log_id.index, &payload);
        record.log_id = Some(entry.log_id);
        Ok(record)
    }

    pub fn vote(vote: &Vote<NodeId>) -> Result<Self, StoreError> {
        Ok(Self::frame(
            Kind::Vote,
            0,
            &serde_json::to_vec(vote).map_err(io)?,
        ))
    }

    pub fn committed(committed: Option<LogId<NodeId>>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(&committed).map_err(io)?;
        Ok(Self::frame(Kind::Committed, 0, &payload))
    }

    pub fn truncate(from: u64) -> Self {
        Self::frame(Kind::Truncate, from, &from.to_le_bytes())
    }

    pub fn purge(upto: LogId<NodeId>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(&upto).map_err(io)?;
        Ok(Self::frame(Kind::Purge, upto.index, &payload))
    }

    fn frame(kind: Kind, index: u64, payload: &[u8]) -> Self {
        let mut body = Vec::with_capacity(1 + payload.len());
        body.push(kind as u8);
        body.extend_from_slice(payload);
        let mut bytes = Vec::with_capacity(FRAME_LEN + body.len());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        Self {
            kind,
            index,
            log_id: None,
            bytes,
        }
    }

    pub fn is_entry(&self) -> bool {
        self.kind == Kind::Entry
    }

    /// The record's length on disk, framing included.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// Where an entry's record lies: its segment, the offset of its frame and
/// the frame's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

impl Location {
    pub fn new(segment: u64, offset: u64, len: usize) -> Self {
        Self {
            segment,
            offset,
            len: len as u32,
        }
    }

    pub fn size(&self) -> usize {
        self.len as usize
    }
}

/// An entry the writer put on disk, and where.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub log_id: LogId<NodeId>,
    pub location: Location,
}

/// Applies one replayed record to `state`; an entry's index.
fn replay_record(
    state: &mut LogState,
    kind: Kind,
    payload: &[u8],
    location: Location,
) -> Result<Option<u64>, StoreError> {
    match kind {
        Kind::Entry => {
            let entry: Entry<TypeConfig> = decode(payload)?;
            let index = entry.log_id.index;
            state.replayed(entry, location);
            return Ok(Some(index));
        }
        Kind::Vote => state.vote = Some(decode(payload)?),
        Kind::Committed => state.committed = decode(payload)?,
        Kind::Truncate => {
            let bytes: [u8; 8] = payload
                .try_into()
                .map_err(|_| StoreError("a truncate record of the wrong size".into()))?;
            state.truncate(u64::from_le_bytes(bytes));
        }
        Kind::Purge => state.purge(decode(payload)?),
    }
    Ok(None)
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(payload).map_err(io)
}

/// A segment on disk: its number and the highest entry index ever written
/// to it (a purge past that index frees it).
#[derive(Debug)]
struct Segment {
    number: u64,
    max_index: Option<u64>,
}

/// The newest vote, committed and purge records written, in their framing:
/// every new segment starts with them.
#[derive(Default)]
struct Heads {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purge: Option<Vec<u8>>,
}

impl Heads {
    fn note(&mut self, kind: Kind, bytes: &[u8]) {
        let slot = match kind {
            Kind::Vote => &mut self.vote,
            Kind::Committed => &mut self.committed,
            Kind::Purge => &mut self.purge,
            Kind::Entry | Kind::Truncate => return,
        };
        *slot = Some(bytes.to_vec());
    }

    fn bytes(&self) -> Vec<u8> {
        [&self.vote, &self.committed, &self.purge]
            .into_iter()
            .flatten()
            .flat_map(|b| b.iter().copied())
            .collect()
    }
}

/// The segment files of one log; only the writer thread holds it.
pub struct Segments {
    dir: PathBuf,
    /// Closed segments, oldest first.
    closed: Vec<Segment>,
    active: Segment,
    file: File,
    /// Bytes of the active segment known to be good.
    len: u64,
    heads: Heads,
    /// A failed write could not be undone: refuse every later one rather
    /// than append behind a torn record.
    broken: bool,
}

impl Segments {
    /// Opens the log in `dir` (creating it if absent) and replays it,
    /// keeping the newest `resident_bytes` of entries in memory.
    pub fn open(dir: &Path, resident_bytes: usize) -> Result<(Self, LogState), StoreError> {
        fs::create_dir_all(dir).map_err(io)?;
        let numbers = segment_numbers(dir)?;
        let mut state = LogState::with_resident_limit(resident_bytes);
        let mut heads = Heads::default();
        let mut segments = Vec::new();
        let mut good_len = HEADER_LEN as u64;
        for (i, &number) in numbers.iter().enumerate() {
            let last = i + 1 == numbers.len();
            let path = segment_path(dir, number);
            let (max_index, len) = replay_segment(&path, number, last, &mut state, &mut heads)?;
            segments.push(Segment { number, max_index });
            good_len = len;
        }
        let (active, file, len) = match segments.pop() {
            Some(cut_short) if good_len < HEADER_LEN as u64 => {
                // Its creation (a rotation) was cut short: it holds nothing,
                // so it is made again, header and heads included.
                fs::remove_file(segment_path(dir, cut_short.number)).map_err(io)?;
                let (file, len) = create_segment(dir, cut_short.number, &heads)?;
                (cut_short, file, len)
            }
            Some(active) => {
                let path = segment_path(dir, active.number);
                let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
                // Cut a torn tail so that new records follow good ones.
                file.set_len(good_len).map_err(io)?;
                file.sync_all().map_err(io)?;
                (active, file, good_len)
            }
            None => {
                let (file, len) = create_segment(dir, 1, &heads)?;
                let active = Segment {
                    number: 1,
                    max_index: None,
                };
                (active, file, len)
            }
        };
        let segments = Self {
            dir: dir.to_path_buf(),
            closed: segments,
            active,
            file,
            len,
            heads,
            broken: false,
        };
        Ok((segments, state))
    }

    /// Writes `records` in order, durably (one write, one fdatasync), then
    /// frees the segments a purge among them made unneeded and starts a new
    /// segment if the active one is full. Returns where each entry went.
    pub fn write<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Encoded>,
    ) -> Result<Vec<Written>, StoreError> {
        self.write_with(records, Flush::Durable)
    }

    /// Writes `records` as `write` does, but with `Flush::Buffered` into the
    /// page cache only: they survive a crash of the process, and become
    /// durable with the next durable write. For records nobody waits on
    /// (the commit index). A purge among them is written durably all the
    /// same, since the segments it frees are deleted at once.
    pub fn write_with<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Encoded>,
        flush: Flush,
    ) -> Result<Vec<Written>, StoreError> {
        if self.broken {
            return Err(StoreError(
                "the Raft log stopped after a failed write; restart the node".into(),
            ));
        }
        let records: Vec<&Encoded> = records.into_iter().collect();
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.bytes.len()).sum());
        let mut purged = None;
        let mut max_index = self.active.max_index;
        let mut written = Vec::new();
        for record in &records {
            if let Some(log_id) = record.log_id {
                let offset = self.len + buf.len() as u64;
                let location = Location::new(self.active.number, offset, record.size());
                written.push(Written { log_id, location });
            }
            buf.extend_from_slice(&record.bytes);
            match record.kind {
                Kind::Entry => max_index = max_index.max(Some(record.index)),
                Kind::Purge => purged = purged.max(Some(record.index)),
                _ => {}
            }
        }
        let durable = flush == Flush::Durable || purged.is_some();
        if let Err(e) = self.file.write_all(&buf).and_then(|()| {
            if durable {
                self.file.sync_data()
            } else {
                Ok(())
            }
        }) {
            // Undo a partial write, or stop writing at all.
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(io(e));
        }
        self.len += buf.len() as u64;
        self.active.max_index = max_index;
        for record in &records {
            self.heads.note(record.kind, &record.bytes);
        }
        if let Some(upto) = purged {
            self.free_through(upto);
        }
        // Only the last segment may end torn at a restart, so a segment is
        // closed only after a write that synced everything in it.
        if durable && self.len >= SEGMENT_BYTES {
            self.rotate()?;
        }
        Ok(written)
    }

    /// Closes the active segment and starts the next one.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let number = self.active.number + 1;
        let (file, len) = create_segment(&self.dir, number, &self.heads)?;
        let closed = std::mem::replace(
            &mut self.active,
            Segment {
                number,
                max_index: None,
            },
        );
        self.closed.push(closed);
        self.file = file;
        self.len = len;
        Ok(())
    }

    /// Deletes the oldest closed segments whose every entry is purged.
    fn free_through(&mut self, upto: u64) {
        let freeable = self
            .closed
            .iter()
            .take_while(|s| s.max_index.is_none_or(|m| m <= upto))
            .count();
        for segment in self.closed.drain(..freeable) {
            // A segment that survives a failed delete is replayed and purged
            // again at the next start: harmless.
            if let Err(e) = fs::remove_file(segment_path(&self.dir, segment.number)) {
                tracing::warn!(segment = segment.number, error = %e, "could not delete a purged log segment");
            }
        }
    }

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }
}

/// Whether a write waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// One fdatasync after the write.
    Durable,
    /// Left in the page cache until the next durable write.
    Buffered,
}

/// Reads entries back from the segment files, keeping the last segment it
/// opened (a read is usually a run of neighbouring entries).
pub struct SegmentReader<'a> {
    dir: &'a Path,
    open: Option<(u64, File)>,
}

impl<'a> SegmentReader<'a> {
    pub fn new(dir: &'a Path) -> Self {
        Self { dir, open: None }
    }

    /// The entry at `location`; `None` if its segment was deleted (a purge
    /// overtook the read).
    pub fn read(&mut self, location: Location) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        let file = match &self.open {
            Some((number, file)) if *number == location.segment => file,
            _ => {
                let path = segment_path(self.dir, location.segment);
                match File::open(&path) {
                    Ok(file) => &self.open.insert((location.segment, file)).1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(e)),
                }
            }
        };
        let mut bytes = vec![0; location.size()];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(io)?;
        match record_at(&bytes, 0) {
            Ok((Kind::Entry, payload, _)) => decode(payload).map(Some),
            Ok(_) => Err(StoreError(format!(
                "log record at {location:?} is not an entry"
            ))),
            Err(what) => Err(corrupt(
                &segment_path(self.dir, location.segment),
                what,
                location.offset,
            )),
        }
    }
}

/// A bad record in segment `path`, and what the operator can do.
fn corrupt(path: &Path, what: &str, offset: u64) -> StoreError {
    StoreError(format!(
        "Raft log segment {} is corrupt ({what} at byte {offset}); \
         rebuild this node from its group (cart rebuild) or restore its data directory",
        path.display()
    ))
}

fn frame_field(buf: &[u8], at: usize) -> [u8; 4] {
    let mut field = [0; 4];
    field.copy_from_slice(&buf[at..at + 4]);
    field
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.{SUFFIX}"))
}

/// The numbers of the segments in `dir`, oldest first.
fn segment_numbers(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    for item in fs::read_dir(dir).map_err(io)? {
        let path = item.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == SUFFIX) {
            let number = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| StoreError(format!("unexpected file {}", path.display())))?;
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Creates segment `number` holding `heads`, durably (the file, and its
/// name in the directory).
fn create_segment(dir: &Path, number: u64, heads: &Heads) -> Result<(File, u64), StoreError> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(&heads.bytes());
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok((file, bytes.len() as u64))
}

/// Replays one segment into `state`: the highest entry index in it and the
/// length of its good part. Only the last segment may end in a torn record.
fn replay_segment(
    path: &Path,
    number: u64,
    last: bool,
    state: &mut LogState,
    heads: &mut Heads,
) -> Result<(Option<u64>, u64), StoreError> {
    let bytes = fs::read(path).map_err(io)?;
    let at_fault = |what: &str, offset: usize| corrupt(path, what, offset as u64);
    if bytes.len() < HEADER_LEN {
        // A segment whose creation was cut short holds nothing yet.
        return if last {
            Ok((None, 0))
        } else {
            Err(at_fault("a short header", 0))
        };
    }
    if &bytes[..8] != MAGIC {
        return Err(at_fault("not a log segment", 0));
    }
    let format = u32::from_le_bytes(frame_field(&bytes, 8));
    if format > FORMAT {
        return Err(StoreError(format!(
            "Raft log segment {} has format {format}, newer than this node's {FORMAT}: \
             run the version that wrote it",
            path.display()
        )));
    }
    let mut at = HEADER_LEN;
    let mut max_index = None;
    while at < bytes.len() {
        let torn = match record_at(&bytes, at) {
            Ok((kind, payload, end)) => {
                let location = Location::new(number, at as u64, end - at);
                let index = replay_record(state, kind, payload, location)?;
                max_index = max_index.max(index);
                heads.note(kind, &bytes[at..end]);
                at = end;
                continue;
            }
            Err(what) => what,
        };
        if last {
            tracing::warn!(segment = %path.display(), offset = at, reason = torn, "cutting a torn Raft log tail");
            break;
        }
        return Err(at_fault(torn, at));
    }
    Ok((max_index, at as u64))
}

/// The record at `at`: its kind, payload and end, or why it is unreadable.
fn record_at(bytes: &[u8], at: usize) -> Result<(Kind, &[u8], usize), &'static str> {
    if bytes.len() - at < FRAME_LEN + 1 {
        return Err("a short frame");
    }
    let len = u32::from_le_bytes(frame_field(bytes, at)) as usize;
    let crc = u32::from_le_bytes(frame_field(bytes, at + 4));
    let start = at + FRAME_LEN;
    let end = start.checked_add(len).ok_or("a bad length")?;
    if len == 0 || end > bytes.len() {
        return Err("a short record");
    }
    let body = &bytes[start..end];
    if crc32fast::hash(body) != crc {
        return Err("a checksum mismatch");
    }
    let kind = Kind::of(body[0]).ok_or("an unknown record kind")?;
    Ok((kind, &body[1..], end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::log_state::Planned;
    use crate::raft::test_entries::{entry, id};

    fn append(log: &mut Segments, state: &mut LogState, range: std::ops::Range<u64>, term: u64) {
        let records: Vec<_> = range
            .map(|i| {
                let e = entry(term, i);
                let r = Encoded::entry(&e).unwrap();
                state.append(e, r.size());
                r
            })
            .collect();
        let written = log.write(&records).unwrap();
        state.written(&written);
    }

    /// Opens a log keeping every entry in memory.
    fn open(dir: &Path) -> Result<(Segments, LogState), StoreError> {
        Segments::open(dir, usize::MAX)
    }

    fn indexes(state: &LogState) -> Vec<u64> {
        state.indexes().collect()
    }

    /// Every entry of `state`, from memory or from the segments in `dir`.
    fn read_all(dir: &Path, state: &LogState) -> Vec<Entry<TypeConfig>> {
        let mut reader = SegmentReader::new(dir);
        state
            .plan(..)
            .into_iter()
            .map(|p| match p {
                Planned::Here(e) => e,
                Planned::OnDisk(at) => reader.read(at).unwrap().expect("segment present"),
            })
            .collect()
    }

    #[test]
    fn a_reopened_log_holds_every_record_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..6, 1);
        let vote = Vote::new(2, 3);
        log.write([&Encoded::vote(&vote).unwrap()]).unwrap();
        log.write([&Encoded::committed(Some(id(1, 4))).unwrap()])
            .unwrap();
        drop(log);
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![1, 2, 3, 4, 5]);
        assert_eq!(read_all(dir.path(), &replayed)[2], entry(1, 3));
        assert_eq!(replayed.vote, Some(vote));
        assert_eq!(replayed.committed, Some(id(1, 4)));
        assert_eq!(replayed.last_log_id(), Some(id(1, 5)));
    }

    #[test]
    fn a_truncated_suffix_stays_gone_and_its_replacement_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..6, 1);
        log.write([&Encoded::truncate(3)]).unwrap();
        append(&mut log, &mut state, 3..4, 2);
        drop(log);
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![1, 2, 3]);
        assert_eq!(read_all(dir.path(), &replayed)[2].log_id, id(2, 3));
    }

    #[test]
    fn a_torn_tail_is_cut_and_later_records_follow_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..4, 1);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let full = fs::read(&path).unwrap();
        // Half of a fourth record, as a crash mid-write leaves it.
        let torn = Encoded::entry(&entry(1, 4)).unwrap();
        let mut bytes = full.clone();
        bytes.extend_from_slice(&torn.bytes[..torn.bytes.len() / 2]);
        fs::write(&path, &bytes).unwrap();

        let (mut log, mut state) = open(dir.path()).unwrap();
        assert_eq!(indexes(&state), vec![1, 2, 3]);
        assert_eq!(fs::read(&path).unwrap(), full, "the torn tail is cut");
        append(&mut log, &mut state, 4..5, 1);
        drop(log);
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_flipped_bit_in_the_tail_record_is_cut_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..3, 1);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![1]);
    }

    #[test]
    fn corruption_in_a_closed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..3, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 3..5, 1);
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_LEN + FRAME_LEN + 3] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let err = open(dir.path()).err().expect("refused");
        assert!(err.0.contains("corrupt"), "{}", err.0);
    }

    #[test]
    fn a_purge_deletes_the_segments_it_covers_and_keeps_vote_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        let vote = Vote::new(1, 1);
        log.write([&Encoded::vote(&vote).unwrap()]).unwrap();
        append(&mut log, &mut state, 1..4, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 4..7, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 7..9, 1);
        assert_eq!(log.segment_count(), 3);

        // Segment 1 holds 1..=3, segment 2 4..=6: purging through 5 frees 1.
        state.purge(id(1, 5));
        log.write([&Encoded::purge(id(1, 5)).unwrap()]).unwrap();
        assert_eq!(log.segment_count(), 2);
        assert!(!segment_path(dir.path(), 1).exists());
        drop(log);
        let (mut log, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![6, 7, 8]);
        assert_eq!(replayed.vote, Some(vote), "the vote of a deleted segment");
        assert_eq!(replayed.last_purged, Some(id(1, 5)));

        // Past the active segment's start, every closed one goes; the purge
        // record itself lives on in the new segment's head.
        log.rotate().unwrap();
        log.write([&Encoded::purge(id(1, 8)).unwrap()]).unwrap();
        assert_eq!(log.segment_count(), 1);
        drop(log);
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(replayed.indexes().count(), 0);
        assert_eq!(replayed.last_purged, Some(id(1, 8)));
        assert_eq!(replayed.last_log_id(), Some(id(1, 8)));
        assert_eq!(replayed.vote, Some(vote));
    }

    #[test]
    fn a_segment_whose_creation_was_cut_short_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        let vote = Vote::new(4, 2);
        log.write([&Encoded::vote(&vote).unwrap()]).unwrap();
        append(&mut log, &mut state, 1..3, 1);
        log.rotate().unwrap();
        drop(log);
        // A crash while the rotation wrote the new segment's header.
        let second = segment_path(dir.path(), 2);
        let header = fs::read(&second).unwrap();
        fs::write(&second, &header[..5]).unwrap();

        let (mut log, mut state) = open(dir.path()).unwrap();
        assert_eq!(indexes(&state), vec![1, 2]);
        append(&mut log, &mut state, 3..4, 1);
        drop(log);
        assert_eq!(&fs::read(&second).unwrap()[..8], MAGIC);
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![1, 2, 3]);
        assert_eq!(replayed.vote, Some(vote));
    }

    #[test]
    fn a_full_segment_is_closed_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        log.len = SEGMENT_BYTES;
        append(&mut log, &mut state, 1..2, 1);
        assert_eq!(log.segment_count(), 2);
        assert!(segment_path(dir.path(), 2).exists());
    }

    #[test]
    fn a_buffered_write_is_replayed_but_never_closes_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..3, 1);
        log.len = SEGMENT_BYTES;
        log.write_with(
            [&Encoded::committed(Some(id(1, 2))).unwrap()],
            Flush::Buffered,
        )
        .unwrap();
        assert_eq!(log.segment_count(), 1, "closed only after a synced write");
        append(&mut log, &mut state, 3..4, 1);
        assert_eq!(log.segment_count(), 2, "the next durable write closes it");
        drop(log);
        let (_, replayed) = open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed), vec![1, 2, 3]);
        assert_eq!(replayed.committed, Some(id(1, 2)));
    }

    #[test]
    fn a_buffered_purge_is_written_durably_and_frees_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = open(dir.path()).unwrap();
        append(&mut log, &mut state, 1..3, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 3..5, 1);
        log.write_with([&Encoded::purge(id(1, 2)).unwrap()], Flush::Buffered)
            .unwrap();
        assert_eq!(log.segment_count(), 1);
        assert!(!segment_path(dir.path(), 1).exists());
    }

    #[test]
    fn a_segment_of_a_newer_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path()).unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&(FORMAT + 1).to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let err = open(dir.path()).err().expect("refused");
        assert!(err.0.contains("newer"), "{}", err.0);
    }

    #[test]
    fn entries_that_left_memory_are_read_back_from_their_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path()).unwrap();
        let mut state = LogState::with_resident_limit(0);
        append(&mut log, &mut state, 1..4, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 4..7, 1);
        assert_eq!(state.resident_count(), 0, "all on disk, none kept");
        let expected: Vec<_> = (1..7).map(|i| entry(1, i)).collect();
        assert_eq!(read_all(dir.path(), &state), expected);
        drop(log);
        // A replay at start keeps no more in memory, and reads back the same.
        let (_, replayed) = Segments::open(dir.path(), 0).unwrap();
        assert_eq!(replayed.resident_count(), 0);
        assert_eq!(read_all(dir.path(), &replayed), expected);
    }

    #[test]
    fn a_read_of_a_purged_segment_finds_nothing_rather_than_failing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path()).unwrap();
        let mut state = LogState::with_resident_limit(0);
        append(&mut log, &mut state, 1..3, 1);
        let Some(Planned::OnDisk(first)) = state.plan(1..2).pop() else {
            panic!("entry 1 is on disk only");
        };
        log.rotate().unwrap();
        log.write([&Encoded::purge(id(1, 2)).unwrap()]).unwrap();
        assert!(SegmentReader::new(dir.path())
            .read(first)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_corrupted_record_read_back_is_an_error_not_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path()).unwrap();
        let mut state = LogState::with_resident_limit(0);
        append(&mut log, &mut state, 1..2, 1);
        let path = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).unwrap();
        let Some(Planned::OnDisk(at)) = state.plan(..).pop() else {
            panic!("entry 1 is on disk only");
        };
        let err = SegmentReader::new(dir.path())
            .read(at)
            .expect_err("refused");
        assert!(err.0.contains("corrupt"), "{}", err.0);
    }
}
