//! The write-ahead log: append-only segment files of checksummed records, written by
//! one flusher thread with group commit.
//!
//! # Format
//!
//! A segment is a file `wal-<first seq, 20 digits>.log`:
//!
//! ```text
//! magic      8 bytes  "DELEGWAL"
//! version    u32 LE   log schema version (1)
//! first_seq  u64 LE   the sequence number of the segment's first record
//! record*:
//!   len      u32 LE   payload length (at most MAX_RECORD)
//!   crc      u32 LE   crc32 of len and payload
//!   payload  rmp      Batch { seq, events } (named fields, see below)
//! ```
//!
//! The events are encoded with rmp-serde's *named* form (maps with field names): the
//! event types skip absent optional fields when serialising, which only round-trips
//! when fields are named, and named fields let a later engine read an older log.
//!
//! # Invariants
//!
//! * INVARIANT: records are appended in sequence order with no gaps; a record's
//!   sequence number is one more than the previous record's.
//! * INVARIANT: a writer is acknowledged only after `fdatasync` of the file holding its
//!   record has returned (and, for a new segment, after the directory was fsynced).
//! * INVARIANT: only the newest segment can end in a torn or corrupt record: a segment
//!   is complete and fsynced before the next one is created. A bad record in an older
//!   segment is corruption, reported and never skipped.
//! * A torn or corrupt tail of the newest segment is truncated at recovery and never
//!   applied: its writer cannot have been acknowledged.
//!
//! # Group commit
//!
//! Writers encode their record, enqueue it and wait. The flusher thread takes
//! everything queued, writes it with one `write`, calls `fdatasync` once and then
//! wakes every writer of the group. Under load a group holds many records, so the cost
//! of one sync is shared; with one writer the latency is one sync.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::persist::error::{RecordError, WalError};
use crate::persist::snapshot::sync_dir;

pub const MAGIC: [u8; 8] = *b"DELEGWAL";
pub const LOG_VERSION: u32 = 1;
pub const SEGMENT_HEADER: u64 = 20;
/// The largest record payload accepted.
pub const MAX_RECORD: u32 = 64 << 20;

type Result<T, E = WalError> = std::result::Result<T, E>;

/// One log record: a batch of events applied atomically, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    pub events: Vec<Event>,
}

#[derive(Serialize)]
struct BatchRef<'a> {
    seq: u64,
    events: &'a [Event],
}

/// Encodes a record (header and payload).
pub fn encode_record(seq: u64, events: &[Event]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; 8];
    rmp_serde::encode::write_named(&mut out, &BatchRef { seq, events })
        .map_err(|e| WalError::Encode(e.to_string()))?;
    let len = out.len() - 8;
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_RECORD)
        .ok_or_else(|| WalError::Encode(format!("record of {len} bytes exceeds the limit")))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(out.get(8..).unwrap_or_default());
    let crc = crc.finalize();
    if let Some(h) = out.get_mut(..8) {
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(out)
}

/// Decodes the record at the start of `buf`: the batch and the bytes it used.
pub fn decode_record(buf: &[u8]) -> Result<(Batch, usize), RecordError> {
    let have = buf.len() as u64;
    let head = buf.get(..8).ok_or(RecordError::Incomplete { need: 8, have })?;
    let mut l = [0u8; 4];
    l.copy_from_slice(head.get(..4).unwrap_or(&[0; 4]));
    let len = u32::from_le_bytes(l);
    let mut c = [0u8; 4];
    c.copy_from_slice(head.get(4..8).unwrap_or(&[0; 4]));
    if len > MAX_RECORD {
        return Err(RecordError::TooLong(u64::from(len)));
    }
    let end = 8 + len as usize;
    let payload = buf.get(8..end).ok_or(RecordError::Incomplete {
        need: end as u64,
        have,
    })?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&l);
    crc.update(payload);
    if crc.finalize() != u32::from_le_bytes(c) {
        return Err(RecordError::Checksum);
    }
    let batch: Batch = rmp_serde::from_slice(payload).map_err(|e| RecordError::Payload(e.to_string()))?;
    Ok((batch, end))
}

/// How a segment's bytes end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a valid record.
    Clean,
    /// The bytes from `offset` on are not a valid record.
    Bad { offset: u64, error: RecordError },
}

/// Decodes every valid record of a segment body (the bytes after the segment header),
/// stopping at the first invalid one. Never panics, whatever the bytes.
pub fn decode_records(body: &[u8]) -> (Vec<Batch>, Tail) {
    let (v, tail) = decode_with_ends(body);
    (v.into_iter().map(|(b, _)| b).collect(), tail)
}

/// Like [`decode_records`], with the offset just past each record.
fn decode_with_ends(body: &[u8]) -> (Vec<(Batch, u64)>, Tail) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < body.len() {
        match decode_record(body.get(pos..).unwrap_or_default()) {
            Ok((b, used)) => {
                pos += used;
                out.push((b, pos as u64));
            }
            Err(error) => {
                return (
                    out,
                    Tail::Bad {
                        offset: pos as u64,
                        error,
                    },
                );
            }
        }
    }
    (out, Tail::Clean)
}

/// The path of the segment whose first record is `first_seq`.
pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.log"))
}

/// The segments of a directory, sorted by first sequence number.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(seq) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, p));
        }
    }
    out.sort();
    Ok(out)
}

fn segment_header(first_seq: u64) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
    h[12..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// What reading one segment found.
#[derive(Debug)]
pub struct SegmentScan {
    pub first_seq: u64,
    pub batches: Vec<Batch>,
    /// Length of the valid prefix of the file (header plus whole records).
    pub valid_len: u64,
    pub tail: Tail,
    /// The header itself is torn (a crash while the segment was being created).
    pub torn_header: bool,
}

/// Reads a whole segment and checks that its records follow each other.
pub fn scan_segment(path: &Path, name_seq: u64) -> Result<SegmentScan> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let Some(head) = bytes.get(..SEGMENT_HEADER as usize) else {
        return Ok(SegmentScan {
            first_seq: name_seq,
            batches: Vec::new(),
            valid_len: 0,
            tail: Tail::Clean,
            torn_header: true,
        });
    };
    if head.get(..8) != Some(&MAGIC[..]) {
        return Err(WalError::BadSegment {
            path: path.to_path_buf(),
        });
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(head.get(8..12).unwrap_or(&[0; 4]));
    let version = u32::from_le_bytes(v);
    if version != LOG_VERSION {
        return Err(WalError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: LOG_VERSION,
        });
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(head.get(12..20).unwrap_or(&[0; 8]));
    let first_seq = u64::from_le_bytes(s);
    if first_seq != name_seq {
        return Err(WalError::BadSegment {
            path: path.to_path_buf(),
        });
    }
    let (decoded, mut tail) = decode_with_ends(bytes.get(SEGMENT_HEADER as usize..).unwrap_or_default());
    // A record with a valid checksum but the wrong sequence number is corruption too:
    // keep only the run that follows on from the segment's first sequence number.
    let mut end = 0u64;
    let mut batches = Vec::with_capacity(decoded.len());
    for (expected, (b, e)) in (first_seq..).zip(decoded) {
        if b.seq != expected {
            tail = Tail::Bad {
                offset: end,
                error: RecordError::Payload(format!("sequence {} where {expected} was expected", b.seq)),
            };
            break;
        }
        end = e;
        batches.push(b);
    }
    let valid = SEGMENT_HEADER + end;
    Ok(SegmentScan {
        first_seq,
        batches,
        valid_len: valid,
        tail,
        torn_header: false,
    })
}

/// Truncates a segment to its valid prefix, or rewrites a torn header, and fsyncs.
pub fn repair_tail(path: &Path, scan: &SegmentScan) -> Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    if scan.torn_header {
        f.set_len(0)?;
        f.write_all(&segment_header(scan.first_seq))?;
    } else {
        f.set_len(scan.valid_len)?;
    }
    f.sync_all()?;
    Ok(())
}

/// The open segment the flusher appends to.
struct Segment {
    file: File,
    first_seq: u64,
    len: u64,
    /// The sequence number of the last record in this segment (first_seq - 1 if none).
    last_seq: u64,
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<Segment> {
    let path = segment_path(dir, first_seq);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    file.write_all(&segment_header(first_seq))?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(Segment {
        file,
        first_seq,
        len: SEGMENT_HEADER,
        last_seq: first_seq.saturating_sub(1),
    })
}

struct Queue {
    /// Encoded records waiting to be written, in sequence order.
    pending: Vec<u8>,
    /// The sequence number of the last record in `pending`.
    pending_last: u64,
    /// Every record up to this sequence number is durable.
    durable: u64,
    failed: Option<String>,
    shutdown: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the flusher when records arrive.
    work: Condvar,
    /// Wakes writers when `durable` moves.
    done: Condvar,
    segment: Mutex<Segment>,
    dir: PathBuf,
    segment_limit: u64,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| WalError::Failed("a lock was poisoned".into()))
}

/// The log writer: an open segment and the flusher thread.
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl Wal {
    /// Opens the log for appending after recovery: `last_seq` is the last record
    /// present (0 if none). Appends to the newest segment if it exists (already
    /// repaired by recovery), else creates one.
    pub fn open(dir: &Path, last_seq: u64, segment_limit: u64) -> Result<Wal> {
        Wal::open_at(dir, last_seq, segment_limit, true)
    }

    /// Like [`Wal::open`]; with `reuse_newest` false a new segment is always started
    /// (the newest one ends before `last_seq`, which a snapshot covers).
    pub fn open_at(dir: &Path, last_seq: u64, segment_limit: u64, reuse_newest: bool) -> Result<Wal> {
        let segment = match list_segments(dir)?.pop() {
            Some((first, path)) if reuse_newest && first <= last_seq + 1 => {
                let mut file = OpenOptions::new().write(true).open(&path)?;
                let len = file.seek(SeekFrom::End(0))?;
                Segment {
                    file,
                    first_seq: first,
                    len,
                    last_seq,
                }
            }
            _ => create_segment(dir, last_seq + 1)?,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                pending_last: last_seq,
                durable: last_seq,
                failed: None,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            segment: Mutex::new(segment),
            dir: dir.to_path_buf(),
            segment_limit,
        });
        let s = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("wal-flusher".into())
            .spawn(move || flusher(&s))?;
        Ok(Wal {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Queues an encoded record. The caller guarantees that `seq` is one more than the
    /// previous record's (the durable store calls this under its write lock).
    pub fn enqueue(&self, seq: u64, record: &[u8]) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        if let Some(f) = &q.failed {
            return Err(WalError::Failed(f.clone()));
        }
        if seq != q.pending_last + 1 {
            return Err(WalError::Gap {
                expected: q.pending_last + 1,
                found: seq,
            });
        }
        q.pending.extend_from_slice(record);
        q.pending_last = seq;
        self.shared.work.notify_one();
        Ok(())
    }

    /// Waits until the record `seq` is durable.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        loop {
            if q.durable >= seq {
                return Ok(());
            }
            if let Some(f) = &q.failed {
                return Err(WalError::Failed(f.clone()));
            }
            q = self
                .shared
                .done
                .wait(q)
                .map_err(|_| WalError::Failed("a lock was poisoned".into()))?;
        }
    }

    /// The last durable sequence number.
    pub fn durable_seq(&self) -> Result<u64> {
        Ok(lock(&self.shared.queue)?.durable)
    }

    /// Moves the log's position to `seq` without a record (a reset, whose snapshot
    /// covers `seq`). Everything queued must be durable, and the open segment must
    /// start at `seq + 1` ([`Wal::retire_before`]).
    pub fn advance_to(&self, seq: u64) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        if !q.pending.is_empty() || q.durable != q.pending_last || seq < q.pending_last {
            return Err(WalError::Failed(format!(
                "cannot move the log to {seq}: records up to {} are not all durable",
                q.pending_last
            )));
        }
        q.pending_last = seq;
        q.durable = seq;
        Ok(())
    }

    /// Starts a new segment at `first_seq` (everything before it must be durable) and
    /// deletes every older segment. Used by checkpoints, after the snapshot holding
    /// everything up to `first_seq - 1` is durable.
    pub fn retire_before(&self, first_seq: u64) -> Result<usize> {
        self.rotate(first_seq)?;
        self.remove_before(first_seq)
    }

    /// Starts a new segment at `first_seq` (everything before it must be durable and
    /// nothing later queued), keeping the older segments.
    pub fn rotate(&self, first_seq: u64) -> Result<()> {
        let mut seg = lock(&self.shared.segment)?;
        if seg.first_seq != first_seq {
            *seg = create_segment(&self.shared.dir, first_seq)?;
        }
        Ok(())
    }

    /// Deletes the segments that start before `first_seq` (a segment boundary made by
    /// [`Wal::rotate`]), once a snapshot holds their records.
    pub fn remove_before(&self, first_seq: u64) -> Result<usize> {
        let mut removed = 0;
        for (s, p) in list_segments(&self.shared.dir)? {
            if s < first_seq {
                std::fs::remove_file(&p)?;
                removed += 1;
            }
        }
        sync_dir(&self.shared.dir)?;
        Ok(removed)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.shutdown = true;
            self.shared.work.notify_all();
        }
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }
}

fn flusher(s: &Shared) {
    loop {
        let (bytes, last) = {
            let Ok(mut q) = s.queue.lock() else { return };
            while q.pending.is_empty() && !q.shutdown {
                q = match s.work.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.pending.is_empty() {
                return;
            }
            (std::mem::take(&mut q.pending), q.pending_last)
        };
        let result = write_group(s, &bytes, last);
        let Ok(mut q) = s.queue.lock() else { return };
        match result {
            Ok(()) => q.durable = last,
            Err(e) => {
                q.failed = Some(e.to_string());
                s.done.notify_all();
                return;
            }
        }
        s.done.notify_all();
    }
}

fn write_group(s: &Shared, bytes: &[u8], last: u64) -> Result<()> {
    let mut seg = lock(&s.segment)?;
    seg.file.write_all(bytes)?;
    seg.file.sync_data()?;
    seg.len += bytes.len() as u64;
    seg.last_seq = last;
    if seg.len >= s.segment_limit {
        // INVARIANT: the full segment was synced above, before the next one exists.
        *seg = create_segment(&s.dir, last + 1)?;
    }
    Ok(())
}
