//! The Raft log on disk: append-only segment files of checksummed records,
//! replayed into memory when the node starts. A node keeps one log for all
//! the shards it hosts: every record names its shard, so one group commit
//! (one `write`, one `fdatasync`) carries whatever every shard's group has
//! queued, rather than one sync per group.
//!
//! Why not a database: a log is only ever appended to, cut at its tail
//! (a conflicting suffix) or dropped at its head (after a snapshot). A
//! B-tree pays copy-on-write page management and a transaction per group
//! commit for none of that; here a group commit is one `write` and one
//! `fdatasync`, and a purge deletes whole files.
//!
//! A segment is `<number>.seg`: a 12-byte header (magic, format) and then
//! records, each `len: u32 | crc32: u32 | kind: u8 | shard: u16 | payload`
//! (little endian; the length and checksum cover kind, shard and payload).
//! Cuts, purges and resets are records too, so replaying every segment in
//! order rebuilds every shard's log. A new segment starts with every
//! shard's newest vote, committed id and purge record, so that deleting
//! older segments never loses them. A segment is deleted once every entry
//! in it is purged by its own shard. Segments of format 1 (before a node
//! shared its log among shards) have no shard field: their records are
//! shard 0's, as that node had only shard 0; a node opening one goes on in
//! a new segment of the current format.
//!
//! A crash can tear only the tail of the last segment (records are
//! appended, and a segment is closed only after its last write was synced):
//! replay cuts a torn or half-written tail off there. A bad record anywhere
//! else is corruption, and the node refuses to start.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use cart_common::shard::Shard;
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
const FORMAT: u32 = 2;
/// The format whose records carry no shard (all of them shard 0's).
const FORMAT_ONE_GROUP: u32 = 1;
const HEADER_LEN: usize = 12;
/// Length and checksum before each record's kind and payload.
const FRAME_LEN: usize = 8;
/// The shard field after a record's kind (from format 2).
const SHARD_LEN: usize = 2;
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
    /// Removes everything of its shard: its member was wiped to be rebuilt.
    Reset = 6,
}

impl Kind {
    fn of(byte: u8) -> Option<Self> {
        [
            Self::Entry,
            Self::Vote,
            Self::Committed,
            Self::Truncate,
            Self::Purge,
            Self::Reset,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }
}

/// One record, framed and checksummed, ready to be written.
pub struct Encoded {
    kind: Kind,
    shard: Shard,
    /// Entry: its index; truncate: the first index removed; purge: the last.
    index: u64,
    /// An entry's id, reported back once it is written.
    log_id: Option<LogId<NodeId>>,
    bytes: Vec<u8>,
}

impl Encoded {
    pub fn entry(shard: Shard, entry: &Entry<TypeConfig>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(entry).map_err(io)?;
        let mut record = Self::frame(Kind::Entry, shard, entry.log_id.index, &payload);
        record.log_id = Some(entry.log_id);
        Ok(record)
    }

    pub fn vote(shard: Shard, vote: &Vote<NodeId>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(vote).map_err(io)?;
        Ok(Self::frame(Kind::Vote, shard, 0, &payload))
    }

    pub fn committed(shard: Shard, committed: Option<LogId<NodeId>>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(&committed).map_err(io)?;
        Ok(Self::frame(Kind::Committed, shard, 0, &payload))
    }

    pub fn truncate(shard: Shard, from: u64) -> Self {
        Self::frame(Kind::Truncate, shard, from, &from.to_le_bytes())
    }

    pub fn purge(shard: Shard, upto: LogId<NodeId>) -> Result<Self, StoreError> {
        let payload = serde_json::to_vec(&upto).map_err(io)?;
        Ok(Self::frame(Kind::Purge, shard, upto.index, &payload))
    }

    pub fn reset(shard: Shard) -> Self {
        Self::frame(Kind::Reset, shard, 0, &[])
    }

    fn frame(kind: Kind, shard: Shard, index: u64, payload: &[u8]) -> Self {
        let mut body = Vec::with_capacity(1 + SHARD_LEN + payload.len());
        body.push(kind as u8);
        body.extend_from_slice(&shard.0.to_le_bytes());
        body.extend_from_slice(payload);
        let mut bytes = Vec::with_capacity(FRAME_LEN + body.len());
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        Self {
            kind,
            shard,
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
    pub shard: Shard,
    pub log_id: LogId<NodeId>,
    pub location: Location,
}

/// One record read from a segment.
struct Record<'a> {
    kind: Kind,
    shard: Shard,
    payload: &'a [u8],
    /// Where the next record starts.
    end: usize,
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(payload).map_err(io)
}

/// A segment on disk: its number and, per shard, the highest entry index
/// ever written to it (once every shard has purged past its own, the
/// segment is freed).
#[derive(Debug)]
struct Segment {
    number: u64,
    max_index: BTreeMap<Shard, u64>,
}

impl Segment {
    fn new(number: u64) -> Self {
        Self {
            number,
            max_index: BTreeMap::new(),
        }
    }

    fn holds_entry(&mut self, shard: Shard, index: u64) {
        let max = self.max_index.entry(shard).or_insert(index);
        *max = (*max).max(index);
    }

    /// Whether every entry in it is purged by its shard.
    fn is_purged(&self, purged: &BTreeMap<Shard, u64>) -> bool {
        self.max_index
            .iter()
            .all(|(shard, max)| purged.get(shard).is_some_and(|p| max <= p))
    }
}

/// The newest vote, committed and purge records of each shard, framed in
/// the current format: every new segment starts with them.
#[derive(Default)]
struct Heads {
    by_shard: BTreeMap<Shard, [Option<Vec<u8>>; 3]>,
}

impl Heads {
    fn note(&mut self, kind: Kind, shard: Shard, framed: impl FnOnce() -> Vec<u8>) {
        let slot = match kind {
            Kind::Vote => 0,
            Kind::Committed => 1,
            Kind::Purge => 2,
            Kind::Entry | Kind::Truncate => return,
            Kind::Reset => {
                self.by_shard.remove(&shard);
                return;
            }
        };
        self.by_shard.entry(shard).or_default()[slot] = Some(framed());
    }

    fn bytes(&self) -> Vec<u8> {
        self.by_shard
            .values()
            .flatten()
            .flatten()
            .flat_map(|b| b.iter().copied())
            .collect()
    }
}

/// What a node's log holds across its shards, besides each shard's own
/// `LogState`: kept by replay, then by every write.
struct Books {
    /// Closed segments, oldest first, then the active one.
    segments: Vec<Segment>,
    heads: Heads,
    /// Each shard's last purged index.
    purged: BTreeMap<Shard, u64>,
}

impl Books {
    /// The active segment's number (open makes one before any record).
    fn active_number(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.number)
    }

    /// Notes a record written to (or replayed from) the active segment;
    /// `framed` gives its bytes in the current format.
    fn record(&mut self, kind: Kind, shard: Shard, index: u64, framed: impl FnOnce() -> Vec<u8>) {
        match kind {
            Kind::Entry => {
                if let Some(active) = self.segments.last_mut() {
                    active.holds_entry(shard, index);
                }
            }
            Kind::Purge => {
                let p = self.purged.entry(shard).or_insert(index);
                *p = (*p).max(index);
            }
            Kind::Reset => {
                // Its entries anywhere are gone: they keep no segment.
                for segment in &mut self.segments {
                    segment.max_index.remove(&shard);
                }
                self.purged.remove(&shard);
            }
            Kind::Vote | Kind::Committed | Kind::Truncate => {}
        }
        self.heads.note(kind, shard, framed);
    }

    /// How many of the oldest closed segments hold nothing live.
    fn freeable(&self) -> usize {
        let closed = &self.segments[..self.segments.len().saturating_sub(1)];
        closed
            .iter()
            .take_while(|s| s.is_purged(&self.purged))
            .count()
    }
}

/// Every shard's log state, replayed.
struct Replay {
    states: Vec<LogState>,
    resident_bytes: usize,
    books: Books,
}

impl Replay {
    /// Applies one replayed record to its shard's state and the books;
    /// `current`: its bytes if they are framed in the current format.
    fn record(
        &mut self,
        record: &Record,
        location: Location,
        current: Option<&[u8]>,
        path: &Path,
    ) -> Result<(), StoreError> {
        let Some(state) = self.states.get_mut(record.shard.index()) else {
            return Err(StoreError(format!(
                "Raft log segment {} holds a record of shard {}, but this node hosts {} \
                 shard(s): start it with the spec its data was made with",
                path.display(),
                record.shard,
                self.states.len()
            )));
        };
        let mut index = 0;
        match record.kind {
            Kind::Entry => {
                let entry: Entry<TypeConfig> = decode(record.payload)?;
                index = entry.log_id.index;
                state.replayed(entry, location);
            }
            Kind::Vote => state.vote = Some(decode(record.payload)?),
            Kind::Committed => state.committed = decode(record.payload)?,
            Kind::Truncate => {
                let bytes: [u8; 8] = record
                    .payload
                    .try_into()
                    .map_err(|_| StoreError("a truncate record of the wrong size".into()))?;
                state.truncate(u64::from_le_bytes(bytes));
            }
            Kind::Purge => {
                let upto: LogId<NodeId> = decode(record.payload)?;
                index = upto.index;
                state.purge(upto);
            }
            Kind::Reset => *state = LogState::with_resident_limit(self.resident_bytes),
        }
        let framed = || match current {
            Some(bytes) => bytes.to_vec(),
            None => Encoded::frame(record.kind, record.shard, index, record.payload).bytes,
        };
        self.books.record(record.kind, record.shard, index, framed);
        Ok(())
    }
}

/// The segment files of a node's log; only the writer thread holds it.
pub struct Segments {
    dir: PathBuf,
    books: Books,
    /// The active (last) segment's file.
    file: File,
    /// Bytes of the active segment known to be good.
    len: u64,
    /// A failed write could not be undone: refuse every later one rather
    /// than append behind a torn record.
    broken: bool,
}

impl Segments {
    /// Opens the log in `dir` (creating it if absent) and replays it into
    /// one state per shard of `shards`, each keeping its newest
    /// `resident_bytes` of entries in memory.
    pub fn open(
        dir: &Path,
        shards: u16,
        resident_bytes: usize,
    ) -> Result<(Self, Vec<LogState>), StoreError> {
        fs::create_dir_all(dir).map_err(io)?;
        let numbers = segment_numbers(dir)?;
        let mut replay = Replay {
            states: (0..shards.max(1))
                .map(|_| LogState::with_resident_limit(resident_bytes))
                .collect(),
            resident_bytes,
            books: Books {
                segments: Vec::new(),
                heads: Heads::default(),
                purged: BTreeMap::new(),
            },
        };
        let mut good_len = HEADER_LEN as u64;
        let mut last_format = FORMAT;
        for (i, &number) in numbers.iter().enumerate() {
            let last = i + 1 == numbers.len();
            replay.books.segments.push(Segment::new(number));
            let path = segment_path(dir, number);
            (good_len, last_format) = replay_segment(&path, number, last, &mut replay)?;
        }
        let Replay {
            states, mut books, ..
        } = replay;
        let last = books.segments.last().map(|s| s.number);
        let (file, len) = match last {
            Some(number) if good_len < HEADER_LEN as u64 => {
                // Its creation (a rotation) was cut short: it holds nothing,
                // so it is made again, header and heads included.
                fs::remove_file(segment_path(dir, number)).map_err(io)?;
                create_segment(dir, number, &books.heads)?
            }
            Some(number) => {
                let path = segment_path(dir, number);
                let file = OpenOptions::new().append(true).open(&path).map_err(io)?;
                // Cut a torn tail so that new records follow good ones.
                file.set_len(good_len).map_err(io)?;
                file.sync_all().map_err(io)?;
                if last_format == FORMAT {
                    (file, good_len)
                } else {
                    // Written by an earlier version: kept as it is, and the
                    // log goes on in a segment of the current format.
                    books.segments.push(Segment::new(number + 1));
                    create_segment(dir, number + 1, &books.heads)?
                }
            }
            None => {
                books.segments.push(Segment::new(1));
                create_segment(dir, 1, &books.heads)?
            }
        };
        let segments = Self {
            dir: dir.to_path_buf(),
            books,
            file,
            len,
            broken: false,
        };
        Ok((segments, states))
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
    /// (the commit index). A purge or reset among them is written durably
    /// all the same, since the segments it frees are deleted at once.
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
        let mut frees = false;
        let mut written = Vec::new();
        let number = self.books.active_number();
        for record in &records {
            if let Some(log_id) = record.log_id {
                let offset = self.len + buf.len() as u64;
                let location = Location::new(number, offset, record.size());
                written.push(Written {
                    shard: record.shard,
                    log_id,
                    location,
                });
            }
            buf.extend_from_slice(&record.bytes);
            frees |= matches!(record.kind, Kind::Purge | Kind::Reset);
        }
        let durable = flush == Flush::Durable || frees;
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
        for record in &records {
            self.books
                .record(record.kind, record.shard, record.index, || {
                    record.bytes.clone()
                });
        }
        if frees {
            self.free();
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
        let number = self.books.active_number() + 1;
        let (file, len) = create_segment(&self.dir, number, &self.books.heads)?;
        self.books.segments.push(Segment::new(number));
        self.file = file;
        self.len = len;
        Ok(())
    }

    /// Deletes the oldest closed segments that hold nothing live.
    fn free(&mut self) {
        let freeable = self.books.freeable();
        for segment in self.books.segments.drain(..freeable) {
            // A segment that survives a failed delete is replayed and purged
            // again at the next start: harmless.
            if let Err(e) = fs::remove_file(segment_path(&self.dir, segment.number)) {
                tracing::warn!(segment = segment.number, error = %e, "could not delete a purged log segment");
            }
        }
    }

    #[cfg(test)]
    fn segment_count(&self) -> usize {
        self.books.segments.len()
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
    /// The open segment: its number, file and format.
    open: Option<(u64, File, u32)>,
}

impl<'a> SegmentReader<'a> {
    pub fn new(dir: &'a Path) -> Self {
        Self { dir, open: None }
    }

    /// The entry at `location`; `None` if its segment was deleted (a purge
    /// overtook the read).
    pub fn read(&mut self, location: Location) -> Result<Option<Entry<TypeConfig>>, StoreError> {
        let path = segment_path(self.dir, location.segment);
        let (file, format) = match &self.open {
            Some((number, file, format)) if *number == location.segment => (file, *format),
            _ => {
                let file = match File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(e)),
                };
                let mut header = [0; HEADER_LEN];
                file.read_exact_at(&mut header, 0).map_err(io)?;
                let format = u32::from_le_bytes(frame_field(&header, 8));
                let (_, file, format) = self.open.insert((location.segment, file, format));
                (&*file, *format)
            }
        };
        let mut bytes = vec![0; location.size()];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(io)?;
        match record_at(&bytes, 0, format) {
            Ok(Record {
                kind: Kind::Entry,
                payload,
                ..
            }) => decode(payload).map(Some),
            Ok(_) => Err(StoreError(format!(
                "log record at {location:?} is not an entry"
            ))),
            Err(what) => Err(corrupt(&path, what, location.offset)),
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

/// Replays one segment (the last of `replay.books.segments`): the length
/// of its good part and its format. Only the last segment may end in a
/// torn record.
fn replay_segment(
    path: &Path,
    number: u64,
    last: bool,
    replay: &mut Replay,
) -> Result<(u64, u32), StoreError> {
    let bytes = fs::read(path).map_err(io)?;
    let at_fault = |what: &str, offset: usize| corrupt(path, what, offset as u64);
    if bytes.len() < HEADER_LEN {
        // A segment whose creation was cut short holds nothing yet.
        return if last {
            Ok((0, FORMAT))
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
    while at < bytes.len() {
        let torn = match record_at(&bytes, at, format) {
            Ok(record) => {
                let location = Location::new(number, at as u64, record.end - at);
                // Heads are kept framed in the current format.
                let current = (format == FORMAT).then(|| &bytes[at..record.end]);
                replay.record(&record, location, current, path)?;
                at = record.end;
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
    Ok((at as u64, format))
}

/// The record at `at` in a segment of `format`, or why it is unreadable.
fn record_at(bytes: &[u8], at: usize, format: u32) -> Result<Record<'_>, &'static str> {
    let shard_len = if format == FORMAT_ONE_GROUP {
        0
    } else {
        SHARD_LEN
    };
    if bytes.len() - at < FRAME_LEN + 1 + shard_len {
        return Err("a short frame");
    }
    let len = u32::from_le_bytes(frame_field(bytes, at)) as usize;
    let crc = u32::from_le_bytes(frame_field(bytes, at + 4));
    let start = at + FRAME_LEN;
    let end = start.checked_add(len).ok_or("a bad length")?;
    if len < 1 + shard_len || end > bytes.len() {
        return Err("a short record");
    }
    let body = &bytes[start..end];
    if crc32fast::hash(body) != crc {
        return Err("a checksum mismatch");
    }
    let kind = Kind::of(body[0]).ok_or("an unknown record kind")?;
    let shard = match shard_len {
        0 => Shard(0),
        _ => Shard(u16::from_le_bytes([body[1], body[2]])),
    };
    Ok(Record {
        kind,
        shard,
        payload: &body[1 + shard_len..],
        end,
    })
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
                let r = Encoded::entry(S0, &e).unwrap();
                state.append(e, r.size());
                r
            })
            .collect();
        let written = log.write(&records).unwrap();
        state.written(&written);
    }

    const S0: Shard = Shard(0);

    /// Opens a log of one shard keeping every entry in memory.
    fn open(dir: &Path) -> Result<(Segments, LogState), StoreError> {
        open_keeping(dir, usize::MAX)
    }

    /// Opens a log of one shard keeping `resident` bytes of entries.
    fn open_keeping(dir: &Path, resident: usize) -> Result<(Segments, LogState), StoreError> {
        let (log, mut states) = Segments::open(dir, 1, resident)?;
        Ok((log, states.remove(0)))
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
        log.write([&Encoded::vote(S0, &vote).unwrap()]).unwrap();
        log.write([&Encoded::committed(S0, Some(id(1, 4))).unwrap()])
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
        log.write([&Encoded::truncate(S0, 3)]).unwrap();
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
        let torn = Encoded::entry(S0, &entry(1, 4)).unwrap();
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
        log.write([&Encoded::vote(S0, &vote).unwrap()]).unwrap();
        append(&mut log, &mut state, 1..4, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 4..7, 1);
        log.rotate().unwrap();
        append(&mut log, &mut state, 7..9, 1);
        assert_eq!(log.segment_count(), 3);

        // Segment 1 holds 1..=3, segment 2 4..=6: purging through 5 frees 1.
        state.purge(id(1, 5));
        log.write([&Encoded::purge(S0, id(1, 5)).unwrap()]).unwrap();
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
        log.write([&Encoded::purge(S0, id(1, 8)).unwrap()]).unwrap();
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
        log.write([&Encoded::vote(S0, &vote).unwrap()]).unwrap();
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
            [&Encoded::committed(S0, Some(id(1, 2))).unwrap()],
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
        log.write_with([&Encoded::purge(S0, id(1, 2)).unwrap()], Flush::Buffered)
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
        let (_, replayed) = open_keeping(dir.path(), 0).unwrap();
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
        log.write([&Encoded::purge(S0, id(1, 2)).unwrap()]).unwrap();
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

    /// Appends entries `range` of `term` to shard `shard` of a node log.
    fn append_to(
        log: &mut Segments,
        states: &mut [LogState],
        shard: u16,
        range: std::ops::Range<u64>,
        term: u64,
    ) {
        let state = &mut states[shard as usize];
        let records: Vec<_> = range
            .map(|i| {
                let e = entry(term, i);
                let r = Encoded::entry(Shard(shard), &e).unwrap();
                state.append(e, r.size());
                r
            })
            .collect();
        let written = log.write(&records).unwrap();
        assert!(written.iter().all(|w| w.shard == Shard(shard)));
        state.written(&written);
    }

    #[test]
    fn every_shards_records_replay_into_its_own_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut states) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        // The same indexes in both shards, interleaved in one segment.
        append_to(&mut log, &mut states, 0, 1..4, 1);
        append_to(&mut log, &mut states, 1, 1..6, 2);
        append_to(&mut log, &mut states, 0, 4..5, 1);
        log.write([
            &Encoded::vote(Shard(0), &Vote::new(1, 1)).unwrap(),
            &Encoded::vote(Shard(1), &Vote::new(2, 3)).unwrap(),
            &Encoded::truncate(Shard(1), 4),
            &Encoded::committed(Shard(1), Some(id(2, 3))).unwrap(),
        ])
        .unwrap();
        drop(log);

        let (_, replayed) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        assert_eq!(indexes(&replayed[0]), vec![1, 2, 3, 4]);
        assert_eq!(indexes(&replayed[1]), vec![1, 2, 3], "shard 1's cut only");
        assert_eq!(read_all(dir.path(), &replayed[0])[1], entry(1, 2));
        assert_eq!(read_all(dir.path(), &replayed[1])[1], entry(2, 2));
        assert_eq!(replayed[0].vote, Some(Vote::new(1, 1)));
        assert_eq!(replayed[1].vote, Some(Vote::new(2, 3)));
        assert_eq!(replayed[0].committed, None);
        assert_eq!(replayed[1].committed, Some(id(2, 3)));
    }

    #[test]
    fn a_segment_is_freed_only_once_every_shard_has_purged_its_entries_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut states) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        append_to(&mut log, &mut states, 0, 1..4, 1);
        append_to(&mut log, &mut states, 1, 1..3, 1);
        log.rotate().unwrap();
        append_to(&mut log, &mut states, 0, 4..6, 1);
        append_to(&mut log, &mut states, 1, 3..5, 1);
        log.rotate().unwrap();
        assert_eq!(log.segment_count(), 3);

        // Shard 0 purges all of segment 1's share; shard 1 still has 1..=2.
        log.write([&Encoded::purge(Shard(0), id(1, 3)).unwrap()])
            .unwrap();
        assert_eq!(log.segment_count(), 3, "shard 1's entries keep it");
        log.write([&Encoded::purge(Shard(1), id(1, 2)).unwrap()])
            .unwrap();
        assert_eq!(log.segment_count(), 2);
        assert!(!segment_path(dir.path(), 1).exists());
        drop(log);

        let (_, replayed) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        assert_eq!(indexes(&replayed[0]), vec![4, 5]);
        assert_eq!(indexes(&replayed[1]), vec![3, 4]);
        assert_eq!(replayed[0].last_purged, Some(id(1, 3)));
        assert_eq!(replayed[1].last_purged, Some(id(1, 2)));
    }

    #[test]
    fn a_reset_shard_holds_nothing_and_keeps_no_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut states) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        log.write([&Encoded::vote(Shard(1), &Vote::new(3, 2)).unwrap()])
            .unwrap();
        append_to(&mut log, &mut states, 1, 1..4, 3);
        append_to(&mut log, &mut states, 0, 1..3, 1);
        log.rotate().unwrap();
        append_to(&mut log, &mut states, 0, 3..4, 1);
        log.rotate().unwrap();

        log.write([&Encoded::reset(Shard(1))]).unwrap();
        assert_eq!(
            log.segment_count(),
            3,
            "shard 0's entries keep segments 1, 2"
        );
        log.write([&Encoded::purge(Shard(0), id(1, 3)).unwrap()])
            .unwrap();
        assert_eq!(log.segment_count(), 1, "shard 1's old entries keep none");
        // The reset shard starts again (a member rebuilt from its group).
        append_to(&mut log, &mut states, 1, 7..9, 4);
        drop(log);

        let (_, replayed) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        assert_eq!(indexes(&replayed[1]), vec![7, 8]);
        assert_eq!(replayed[1].vote, None, "its vote went with the reset");
        assert_eq!(replayed[0].last_purged, Some(id(1, 3)));
    }

    #[test]
    fn a_record_of_a_shard_the_node_does_not_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut states) = Segments::open(dir.path(), 3, usize::MAX).unwrap();
        append_to(&mut log, &mut states, 2, 1..2, 1);
        drop(log);
        let err = Segments::open(dir.path(), 2, usize::MAX)
            .err()
            .expect("refused");
        assert!(err.0.contains("shard 2"), "{}", err.0);
    }

    /// A record framed as format 1 wrote it: no shard field.
    fn format_one_record(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![kind as u8];
        body.extend_from_slice(payload);
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    #[test]
    fn a_segment_of_format_one_is_shard_0s_and_the_log_goes_on_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_ONE_GROUP.to_le_bytes());
        let vote = Vote::new(5, 2);
        bytes.extend(format_one_record(
            Kind::Vote,
            &serde_json::to_vec(&vote).unwrap(),
        ));
        for i in 1..4 {
            let e = serde_json::to_vec(&entry(5, i)).unwrap();
            bytes.extend(format_one_record(Kind::Entry, &e));
        }
        let first = segment_path(dir.path(), 1);
        fs::write(&first, &bytes).unwrap();

        let (mut log, mut states) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        assert_eq!(indexes(&states[0]), vec![1, 2, 3]);
        assert_eq!(states[0].vote, Some(vote));
        assert_eq!(states[1].vote, None);
        assert_eq!(
            fs::read(&first).unwrap(),
            bytes,
            "the old segment is left as it was"
        );
        assert_eq!(log.segment_count(), 2);
        append_to(&mut log, &mut states, 0, 4..5, 5);
        append_to(&mut log, &mut states, 1, 1..2, 6);
        drop(log);

        let (_, replayed) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        assert_eq!(indexes(&replayed[0]), vec![1, 2, 3, 4]);
        assert_eq!(indexes(&replayed[1]), vec![1]);
        assert_eq!(replayed[0].vote, Some(vote));
        // Entries of both formats read back from disk alike.
        let (_, on_disk) = Segments::open(dir.path(), 2, 0).unwrap();
        let expected: Vec<_> = (1..5).map(|i| entry(5, i)).collect();
        assert_eq!(read_all(dir.path(), &on_disk[0]), expected);
        // Once purged past it, the old segment goes like any other.
        let (mut log, _) = Segments::open(dir.path(), 2, usize::MAX).unwrap();
        log.rotate().unwrap();
        log.write([&Encoded::purge(Shard(0), id(5, 4)).unwrap()])
            .unwrap();
        assert!(!first.exists());
    }
}
