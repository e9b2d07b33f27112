//! The write-ahead log: append-only segment files of checksummed records, written by
//! one flusher thread with group commit, each write framed as a group.
//!
//! # Format (log version 2)
//!
//! A segment is a file `wal-<first seq, 20 digits>.log`:
//!
//! ```text
//! magic      8 bytes  "DELEGWAL"
//! version    u32 LE   log format version (2; version 1 segments are still read)
//! first_seq  u64 LE   the sequence number of the segment's first record
//! group*:             what one flusher write held (one fdatasync)
//!   magic    4 bytes  "DGRP"
//!   len      u32 LE   bytes of the records that follow
//!   first    u64 LE   sequence number of the group's first record
//!   count    u32 LE   records in the group
//!   crc      u32 LE   crc32 of the 20 header bytes before it
//!   record*:
//!     len      u32 LE   payload length (at most MAX_RECORD)
//!     crc      u32 LE   crc32 of len and payload
//!     payload  rmp      Batch { seq, events, digest } (named fields, see below)
//! ```
//!
//! Version 1 segments have no groups (records follow the segment header directly)
//! and no digest; they are read as before, their newest segment's bad tail truncated.
//!
//! The events are encoded with rmp-serde's *named* form (maps with field names): the
//! event types skip absent optional fields when serialising, which only round-trips
//! when fields are named, and named fields let a later engine read an older log.
//! `digest` is [`crate::partition::journal::outcome_digest`] of what the batch did
//! when it was first applied; replay recomputes it and stops at a mismatch.
//!
//! # Invariants
//!
//! * INVARIANT: records are appended in sequence order with no gaps; a record's
//!   sequence number is one more than the previous record's.
//! * INVARIANT: a writer is acknowledged only after `fdatasync` of the file holding its
//!   record has returned (and, for a new segment, after the directory was fsynced).
//! * INVARIANT: a group is written with one `write` after the previous group's
//!   `fdatasync` returned, so only the *last group of the newest segment* can be torn
//!   by a crash, and no writer of that group was acknowledged unless its sync returned.
//! * A torn last group is truncated at recovery and never applied. Damage anywhere
//!   else — in a group or a group header followed by a later group (a valid header
//!   numbered where the next records would be, or the next group's first record where
//!   its header would end), in an older segment — is corruption of acknowledged
//!   records: recovery stops with the segment, the byte offset and what was wrong, and
//!   truncates nothing. Anything else after a bad last group (a power cut can leave the
//!   file longer than what reached the disk) is the rest of the torn write.
//!   (A flipped byte inside the last group cannot be told from a torn write: that
//!   group is dropped, which loses at most the last group, and only if its sync had
//!   returned before the damage.)
//! * A segment whose header is short or not its own and that holds no record at all
//!   was being created when the process or the power went: it is rewritten at
//!   recovery. A bad header with records after it is refused.
//! * The flusher reserves a segment's blocks ahead of its records ([`RESERVE_STEP`] at a
//!   time, with `fallocate`), so a group's `fdatasync` rewrites data blocks that already
//!   belong to the file instead of also growing it (on ext4 a sync that grows the file
//!   also writes its inode: ≈ 1.4× the sync's time and CPU, `BENCHMARKS.md`). The
//!   reserved part reads as zeros: zeros from a group boundary to the end of the file
//!   are the unwritten reserve, a clean end. A segment is cut to its records before the
//!   next one is created, so only the newest segment has a reserve.
//!
//! # Group commit
//!
//! Writers encode their record and enqueue it; the first record of a group reserves
//! the group header in the queue. The flusher thread takes everything queued, fills
//! in the header, writes it with one `write`, calls `fdatasync` once and then wakes
//! every writer of the group. Under load a group holds many records, so the cost of
//! one sync is shared; with one writer the latency is one sync. Before it takes the
//! next group the flusher waits briefly (at most half the last sync, at most
//! [`MAX_GATHER`]) for as many records as the previous group held: the writers it just
//! woke come back within microseconds, and without the wait they split into two halves
//! that alternate, each waiting two syncs.
//!
//! The server's store instead *seals* ([`Wal::seal`]): once it has sealed a record, the
//! flusher writes only sealed records and never waits to gather. The store's sequencer
//! seals each of its passes when it ends, so a group is whole passes (each one version
//! of the world), written as soon as the flusher is free; a record waited for is sealed
//! too. The store also has the flusher call a hook right after each group's
//! `fdatasync` ([`Wal::on_durable`]): it publishes the new version and answers the
//! group's writers there, so no thread of its own waits for the log.

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
/// The format this build writes.
pub const LOG_VERSION: u32 = 2;
/// The oldest format this build reads.
pub const MIN_LOG_VERSION: u32 = 1;
pub const SEGMENT_HEADER: u64 = 20;
/// The magic bytes of a group header.
pub const GROUP_MAGIC: [u8; 4] = *b"DGRP";
/// Bytes of a group header.
pub const GROUP_HEADER: usize = 24;
/// The largest record payload accepted.
pub const MAX_RECORD: u32 = 64 << 20;

type Result<T, E = WalError> = std::result::Result<T, E>;

/// One log record: a batch of events applied atomically, with its sequence number and
/// the digest of its outcome (absent in version 1 records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

#[derive(Serialize)]
struct BatchRef<'a> {
    seq: u64,
    events: &'a [Event],
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<u64>,
}

/// Encodes a record (header and payload) without a digest.
pub fn encode_record(seq: u64, events: &[Event]) -> Result<Vec<u8>> {
    encode_record_with(seq, events, None)
}

/// Encodes a record (header and payload) carrying the digest of its outcome.
pub fn encode_record_with(seq: u64, events: &[Event], digest: Option<u64>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    append_record(&mut out, seq, events, digest)?;
    Ok(out)
}

/// Appends an encoded record to `out`; on an error `out` is left as it was.
fn append_record(out: &mut Vec<u8>, seq: u64, events: &[Event], digest: Option<u64>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let r = rmp_serde::encode::write_named(out, &BatchRef { seq, events, digest })
        .map_err(|e| WalError::Encode(e.to_string()))
        .and_then(|()| {
            let len = out.len() - start - 8;
            u32::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .ok_or_else(|| WalError::Encode(format!("record of {len} bytes exceeds the limit")))
        });
    let len = match r {
        Ok(l) => l,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(out.get(start + 8..).unwrap_or_default());
    let crc = crc.finalize();
    if let Some(h) = out.get_mut(start..start + 8) {
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
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

/// A group header: the records of one flusher write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupHeader {
    /// Bytes of the records after the header.
    pub len: u32,
    pub first_seq: u64,
    pub count: u32,
}

impl GroupHeader {
    pub fn encode(&self) -> [u8; GROUP_HEADER] {
        let mut h = [0u8; GROUP_HEADER];
        h[..4].copy_from_slice(&GROUP_MAGIC);
        h[4..8].copy_from_slice(&self.len.to_le_bytes());
        h[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        h[16..20].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&h[..20]);
        h[20..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes the group header at the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<GroupHeader, RecordError> {
        let h = buf.get(..GROUP_HEADER).ok_or(RecordError::Incomplete {
            need: GROUP_HEADER as u64,
            have: buf.len() as u64,
        })?;
        if h.get(..4) != Some(&GROUP_MAGIC[..]) {
            return Err(RecordError::Group("no group header (bad magic bytes)".into()));
        }
        let word = |i: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(h.get(i..i + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(a)
        };
        let mut s = [0u8; 8];
        s.copy_from_slice(h.get(8..16).unwrap_or(&[0; 8]));
        if crc32fast::hash(h.get(..20).unwrap_or_default()) != word(20) {
            return Err(RecordError::Group("group header checksum mismatch".into()));
        }
        Ok(GroupHeader {
            len: word(4),
            first_seq: u64::from_le_bytes(s),
            count: word(16),
        })
    }
}

/// Encodes a group of already encoded records (whose first sequence number is
/// `first_seq`), header included.
pub fn encode_group(first_seq: u64, records: &[Vec<u8>]) -> Result<Vec<u8>> {
    let len: usize = records.iter().map(Vec::len).sum();
    let h = GroupHeader {
        len: u32::try_from(len).map_err(|_| WalError::Encode(format!("group of {len} bytes")))?,
        first_seq,
        count: u32::try_from(records.len()).map_err(|_| WalError::Encode("too many records".into()))?,
    };
    let mut out = Vec::with_capacity(GROUP_HEADER + len);
    out.extend_from_slice(&h.encode());
    for r in records {
        out.extend_from_slice(r);
    }
    Ok(out)
}

/// How a segment's bytes end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belongs to a valid record.
    Clean,
    /// The bytes from `offset` on are not a valid record (or group): a torn tail.
    Bad { offset: u64, error: RecordError },
}

/// Damage that cannot be a torn tail: acknowledged records are unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset in the segment file of the group (or header) found damaged.
    pub offset: u64,
    pub reason: String,
}

/// Decodes every valid record of a version 1 segment body (the bytes after the
/// segment header), stopping at the first invalid one. Never panics, whatever the
/// bytes.
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

/// The records of one group body: exactly `h.count` records numbered from
/// `h.first_seq`, using exactly its bytes.
fn decode_group(h: &GroupHeader, body: &[u8]) -> Result<Vec<Batch>, RecordError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for i in 0..u64::from(h.count) {
        let expected = h
            .first_seq
            .checked_add(i)
            .ok_or_else(|| RecordError::Group("sequence numbers overflow".into()))?;
        let (b, used) = decode_record(body.get(pos..).unwrap_or_default())?;
        if b.seq != expected {
            return Err(RecordError::Payload(format!(
                "record {} where {expected} was expected",
                b.seq
            )));
        }
        pos += used;
        out.push(b);
    }
    if pos != body.len() {
        return Err(RecordError::Group(format!(
            "{} bytes after the group's {} records",
            body.len() - pos,
            h.count
        )));
    }
    Ok(out)
}

/// Bytes of the smallest record (length, checksum and at least one byte of payload): a
/// bound on how many records the bytes between two offsets can hold.
const MIN_RECORD_BYTES: usize = 9;

/// Whether a valid group header starts anywhere in `body` at or past `from`, for records
/// numbered from `lo` on and at most `hi` plus as many records as the bytes from `from`
/// to it could hold: a group written after whatever is damaged before it. The upper
/// bound keeps out a header spelled by a party's id inside a torn group's own records
/// (such a string has no zero or control bytes, so its record number is above 10^18).
fn later_group(body: &[u8], from: usize, lo: u64, hi: u64) -> bool {
    let mut i = from;
    while let Some(w) = body.get(i..) {
        let Some(k) = w.windows(4).position(|x| x == GROUP_MAGIC) else {
            return false;
        };
        let at = i + k;
        let room = ((at - from) / MIN_RECORD_BYTES) as u64;
        if let Ok(h) = GroupHeader::decode(body.get(at..).unwrap_or_default())
            && h.count > 0
            && (lo..=hi.saturating_add(room)).contains(&h.first_seq)
        {
            return true;
        }
        i = at + 1;
    }
    false
}

/// Whether the first record of the group that would follow a group ending at `end` is
/// there and valid, numbered `next`: the next group was written (so synced after the
/// one before it) even if its header is damaged.
fn next_group_records(body: &[u8], end: usize, next: u64) -> bool {
    body.get(end + GROUP_HEADER..)
        .and_then(|rest| decode_record(rest).ok())
        .is_some_and(|(b, _)| b.seq == next)
}

/// What the groups of a version 2 segment body hold.
struct Groups {
    batches: Vec<Batch>,
    /// Bytes of the body made of whole, valid groups.
    valid: u64,
    tail: Tail,
    damage: Option<Damage>,
}

/// Walks the groups of a version 2 segment body (see the module doc for what is a
/// torn tail and what is damage).
fn scan_groups(body: &[u8], first_seq: u64) -> Groups {
    let mut out = Groups {
        batches: Vec::new(),
        valid: 0,
        tail: Tail::Clean,
        damage: None,
    };
    let mut pos = 0usize;
    let mut expected = first_seq;
    let base = SEGMENT_HEADER;
    while pos < body.len() {
        let rest = body.get(pos..).unwrap_or_default();
        let bad = |out: &mut Groups, error: RecordError, damaged: bool, what: String| {
            if damaged {
                out.damage = Some(Damage {
                    offset: base + pos as u64,
                    reason: format!("{what}: {error}"),
                });
            } else {
                out.tail = Tail::Bad {
                    offset: pos as u64,
                    error,
                };
            }
        };
        let h = match GroupHeader::decode(rest) {
            Ok(h) => h,
            // Zeros from a group boundary on: the reserved, never written end of the
            // segment (a group header is never zero).
            Err(_) if rest.iter().all(|b| *b == 0) => return out,
            Err(e) => {
                // Torn if nothing valid follows; damage if a later group does.
                let next = expected.saturating_add(1);
                let damaged = rest.len() >= GROUP_HEADER && later_group(body, pos + 1, next, next);
                bad(
                    &mut out,
                    e,
                    damaged,
                    format!(
                        "the group header of records from {expected} on is unreadable and a later group follows"
                    ),
                );
                return out;
            }
        };
        let end = pos + GROUP_HEADER + h.len as usize;
        let Some(gbody) = body.get(pos + GROUP_HEADER..end) else {
            // The group runs past the end of the file: a torn last write.
            bad(
                &mut out,
                RecordError::Incomplete {
                    need: (end - pos) as u64,
                    have: rest.len() as u64,
                },
                false,
                String::new(),
            );
            return out;
        };
        let decoded = if h.first_seq != expected {
            Err(RecordError::Group(format!(
                "group starts at record {} where {expected} was expected",
                h.first_seq
            )))
        } else {
            decode_group(&h, gbody)
        };
        match decoded {
            Ok(bs) => {
                expected = expected.saturating_add(bs.len() as u64);
                out.batches.extend(bs);
                pos = end;
                out.valid = pos as u64;
            }
            Err(e) => {
                // Damage if a later group follows (its header, or its first record
                // where its header would end): it was written after this group's sync
                // returned. Other bytes after it are the rest of a torn write (a power
                // cut can leave the file longer than what reached the disk, and that
                // part holds anything). The header's checksum held, so `end` is where
                // the next group would start.
                let next = h.first_seq.max(expected).saturating_add(u64::from(h.count));
                let damaged = later_group(body, end, expected.saturating_add(1), next)
                    || next_group_records(body, end, next);
                let last = h.first_seq.saturating_add(u64::from(h.count)).saturating_sub(1);
                bad(
                    &mut out,
                    e,
                    damaged,
                    format!(
                        "the group of records {}..={last} is damaged and is not the last one",
                        h.first_seq
                    ),
                );
                return out;
            }
        }
    }
    out
}

/// Decodes the groups of a version 2 segment body (the bytes after the segment
/// header) whose first record is `first_seq`: the valid records, how the bytes end, and
/// damage that cannot be a torn tail. Never panics, whatever the bytes.
pub fn decode_groups(body: &[u8], first_seq: u64) -> (Vec<Batch>, Tail, Option<Damage>) {
    let g = scan_groups(body, first_seq);
    (g.batches, g.tail, g.damage)
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

/// The header of a segment of the current format starting at `first_seq`.
pub fn segment_header(first_seq: u64) -> [u8; 20] {
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
    /// The segment's format version.
    pub version: u32,
    pub batches: Vec<Batch>,
    /// Length of the valid prefix of the file (header plus whole records or groups).
    pub valid_len: u64,
    pub tail: Tail,
    /// Damage that cannot be a torn tail (version 2: before the last group).
    pub damage: Option<Damage>,
    /// The header itself is torn (a crash while the segment was being created).
    pub torn_header: bool,
    /// The file's length without the zeros at its end (the unwritten reserve, or bytes
    /// of a torn write that never landed): where what was written ends.
    pub written_len: u64,
}

/// Reads a whole segment and checks that its records follow each other.
pub fn scan_segment(path: &Path, name_seq: u64) -> Result<SegmentScan> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let written_len = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i as u64 + 1);
    let torn = SegmentScan {
        first_seq: name_seq,
        version: LOG_VERSION,
        batches: Vec::new(),
        valid_len: 0,
        tail: Tail::Clean,
        damage: None,
        torn_header: true,
        written_len,
    };
    let Some(head) = bytes.get(..SEGMENT_HEADER as usize) else {
        return Ok(torn);
    };
    let version_ok = head
        .get(8..12)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .is_some_and(|w| (MIN_LOG_VERSION..=LOG_VERSION).contains(&u32::from_le_bytes(w)));
    let whole_head = head.get(..8) == Some(&MAGIC[..])
        && version_ok
        && head.get(12..20) == Some(&name_seq.to_le_bytes()[..]);
    if !whole_head && never_written(&bytes) {
        // A header that is not this segment's, with nothing written after it: a crash
        // while the segment was created, on a file system that kept the file's length
        // but not its bytes (a power cut). Nothing in it was acknowledged.
        return Ok(torn);
    }
    if head.get(..8) != Some(&MAGIC[..]) {
        return Err(WalError::BadSegment {
            path: path.to_path_buf(),
        });
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(head.get(8..12).unwrap_or(&[0; 4]));
    let version = u32::from_le_bytes(v);
    if !(MIN_LOG_VERSION..=LOG_VERSION).contains(&version) {
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
    let body = bytes.get(SEGMENT_HEADER as usize..).unwrap_or_default();
    if version >= 2 {
        let g = scan_groups(body, first_seq);
        return Ok(SegmentScan {
            first_seq,
            version,
            batches: g.batches,
            valid_len: SEGMENT_HEADER + g.valid,
            tail: g.tail,
            damage: g.damage,
            torn_header: false,
            written_len,
        });
    }
    let (decoded, mut tail) = decode_with_ends(body);
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
    Ok(SegmentScan {
        first_seq,
        version,
        batches,
        valid_len: SEGMENT_HEADER + end,
        tail,
        damage: None,
        torn_header: false,
        written_len,
    })
}

/// Whether a segment file holds no record at all: no valid group header anywhere and
/// no valid version 1 record after the header's bytes.
fn never_written(bytes: &[u8]) -> bool {
    let body = bytes.get(SEGMENT_HEADER as usize..).unwrap_or_default();
    !later_group(bytes, 0, 0, u64::MAX) && decode_record(body).is_err()
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

/// The format version in a segment file's header (None when it has no whole header).
fn segment_version(path: &Path) -> Result<Option<u32>> {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    let mut f = File::open(path)?;
    let mut got = 0;
    while got < h.len() {
        match f.read(h.get_mut(got..).unwrap_or_default())? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(h.get(8..12).unwrap_or(&[0; 4]));
    Ok(Some(u32::from_le_bytes(v)))
}

/// The open segment the flusher appends to.
struct Segment {
    file: File,
    first_seq: u64,
    len: u64,
    /// The file's length: `len` plus the blocks reserved ahead (zeros until written).
    reserved: u64,
    /// The sequence number of the last record in this segment (first_seq - 1 if none).
    last_seq: u64,
}

/// How far ahead of its records the flusher reserves a segment's blocks (at most to the
/// segment's limit).
pub const RESERVE_STEP: u64 = 8 << 20;

impl Segment {
    /// Reserves the file's blocks up to `len + RESERVE_STEP` (at most `limit`) when a
    /// write of `more` bytes would go past the reserve. A file system that cannot
    /// reserve leaves the file to grow with its writes, as it would without.
    fn reserve_for(&mut self, more: u64, limit: u64) {
        let want = (self.len + RESERVE_STEP).min(limit);
        if self.len + more <= self.reserved || want <= self.reserved {
            return;
        }
        if reserve(&self.file, self.reserved, want - self.reserved) {
            self.reserved = want;
        }
    }

    /// Cuts the file to its records (the reserve goes) and syncs it: done before the
    /// next segment is created, so an older segment never ends in zeros.
    fn finish(&mut self) -> Result<()> {
        // The file's own length, not `reserved`: a reserve that failed half-way (no
        // space) may have kept what it allocated.
        if self.file.metadata()?.len() > self.len {
            self.file.set_len(self.len)?;
            self.file.sync_all()?;
            self.reserved = self.len;
        }
        Ok(())
    }
}

/// Writes `bytes` at `offset` of `file` (not at its cursor: nothing then depends on
/// where another call left it).
#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// Allocates `len` bytes of `file` from `offset` on (reading as zeros, the file's
/// length extended to cover them). False when the file system cannot.
#[cfg(target_os = "linux")]
fn reserve(file: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: `fallocate` on a file descriptor this `File` owns and keeps open for the
    // call; it touches no memory of ours.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_: &File, _: u64, _: u64) -> bool {
    false
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
        reserved: SEGMENT_HEADER,
        last_seq: first_seq.saturating_sub(1),
    })
}

struct Queue {
    /// The group being gathered: a reserved group header, then encoded records in
    /// sequence order (empty when nothing waits).
    pending: Vec<u8>,
    /// The sequence number of the first record in `pending`.
    pending_first: u64,
    /// The sequence number of the last record in `pending` (or queued before).
    pending_last: u64,
    /// Every record up to this sequence number is durable.
    durable: u64,
    failed: Option<String>,
    shutdown: bool,
    /// A spare buffer for the next group (keeps its capacity between groups).
    spare: Vec<u8>,
    /// While the flusher gathers a group: wake it once this many records wait.
    gather_target: u64,
    /// The offset in `pending` just past each record in it, in order.
    ends: Vec<usize>,
    /// Set by the first [`Wal::seal`]: from then on the flusher writes only records up
    /// to `sealed` (the writer decides where groups end) and never gathers.
    sealing: bool,
    sealed: u64,
}

impl Queue {
    /// Whether the flusher has something to write.
    fn writable(&self) -> bool {
        !self.pending.is_empty() && (!self.sealing || self.shutdown || self.sealed >= self.pending_first)
    }
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
    /// Bytes written by the flusher since the log was opened (checkpoint trigger).
    written: std::sync::atomic::AtomicU64,
    /// `Queue::durable`, readable without the lock.
    durable: std::sync::atomic::AtomicU64,
    /// Groups written, and nanoseconds spent in their write + fdatasync.
    groups: std::sync::atomic::AtomicU64,
    sync_nanos: std::sync::atomic::AtomicU64,
    /// Called by the flusher after each group it made durable, and once if it fails
    /// ([`Wal::on_durable`]).
    hook: Mutex<Option<Arc<DurableHook>>>,
}

/// What the flusher calls after each group it made durable (`false`), and once when
/// the log fails (`true`), on its own thread, with no lock of the log held. See
/// [`Wal::on_durable`].
pub type DurableHook = dyn Fn(bool) + Send + Sync;

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
    /// (the newest one ends before `last_seq`, which a snapshot covers). A newest
    /// segment of an older format is never appended to.
    pub fn open_at(dir: &Path, last_seq: u64, segment_limit: u64, reuse_newest: bool) -> Result<Wal> {
        let segment = match list_segments(dir)?.pop() {
            Some((first, path))
                if reuse_newest && first <= last_seq + 1 && segment_version(&path)? == Some(LOG_VERSION) =>
            {
                // Appends go right after the records: past them only the reserve (zeros)
                // may follow. Anything else is a torn tail or damage that recovery
                // (`persist::durable`) cuts or refuses first; never write after it.
                let scan = scan_segment(&path, first)?;
                if scan.torn_header || scan.damage.is_some() || scan.written_len > scan.valid_len {
                    return Err(WalError::Failed(format!(
                        "{} has bytes after its last whole group (at byte {}): recover the log before appending to it",
                        path.display(),
                        scan.valid_len
                    )));
                }
                let mut file = OpenOptions::new().write(true).open(&path)?;
                let reserved = file.seek(SeekFrom::End(0))?.max(scan.valid_len);
                file.seek(SeekFrom::Start(scan.valid_len))?;
                Segment {
                    file,
                    first_seq: first,
                    len: scan.valid_len,
                    reserved,
                    last_seq,
                }
            }
            _ => create_segment(dir, last_seq + 1)?,
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                pending_first: last_seq + 1,
                pending_last: last_seq,
                durable: last_seq,
                failed: None,
                shutdown: false,
                spare: Vec::new(),
                gather_target: u64::MAX,
                ends: Vec::new(),
                sealing: false,
                sealed: last_seq,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            segment: Mutex::new(segment),
            dir: dir.to_path_buf(),
            segment_limit,
            written: std::sync::atomic::AtomicU64::new(0),
            durable: std::sync::atomic::AtomicU64::new(last_seq),
            groups: std::sync::atomic::AtomicU64::new(0),
            sync_nanos: std::sync::atomic::AtomicU64::new(0),
            hook: Mutex::new(None),
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

    /// Encodes `events` as record `seq` (with the digest of its outcome) straight into
    /// the group being gathered. `seq` must be one more than the previous record's (the
    /// caller numbers records under its own lock).
    pub fn enqueue_events(&self, seq: u64, events: &[Event], digest: Option<u64>) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        let q = &mut *q;
        Self::check_next(q, seq)?;
        let fresh = q.pending.is_empty();
        if fresh {
            q.pending.extend_from_slice(&[0u8; GROUP_HEADER]);
        }
        if let Err(e) = append_record(&mut q.pending, seq, events, digest) {
            if fresh {
                q.pending.clear();
            }
            return Err(e);
        }
        let end = q.pending.len();
        q.ends.push(end);
        self.queued(q, seq, fresh);
        Ok(())
    }

    /// Queues an encoded record. The caller guarantees that `seq` is one more than the
    /// previous record's.
    pub fn enqueue(&self, seq: u64, record: &[u8]) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        let q = &mut *q;
        Self::check_next(q, seq)?;
        let fresh = q.pending.is_empty();
        if fresh {
            q.pending.extend_from_slice(&[0u8; GROUP_HEADER]);
        }
        q.pending.extend_from_slice(record);
        let end = q.pending.len();
        q.ends.push(end);
        self.queued(q, seq, fresh);
        Ok(())
    }

    fn check_next(q: &Queue, seq: u64) -> Result<()> {
        if let Some(f) = &q.failed {
            return Err(WalError::Failed(f.clone()));
        }
        if seq != q.pending_last + 1 {
            return Err(WalError::Gap {
                expected: q.pending_last + 1,
                found: seq,
            });
        }
        Ok(())
    }

    fn queued(&self, q: &mut Queue, seq: u64, fresh: bool) {
        if fresh {
            q.pending_first = seq;
        }
        q.pending_last = seq;
        // The first record of a group wakes the flusher, and the one that completes the
        // group it is gathering; the others just join. Once sealing, `seal` wakes it.
        let wake = if q.sealing {
            seq <= q.sealed
        } else {
            fresh || seq + 1 - q.pending_first == q.gather_target
        };
        if wake {
            self.shared.work.notify_one();
        }
    }

    /// Lets the flusher write every record up to `seq` (one group, with whatever else is
    /// sealed when it takes them). After the first call the log writes only sealed
    /// records: the writer that queues them decides where groups end, so it can make one
    /// version of the world per group. Waiting for a record seals it too.
    pub fn seal(&self, seq: u64) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        Self::seal_in(&self.shared, &mut q, seq);
        Ok(())
    }

    fn seal_in(shared: &Shared, q: &mut Queue, seq: u64) {
        q.sealing = true;
        if seq > q.sealed {
            q.sealed = seq;
            shared.work.notify_one();
        }
    }

    /// Waits until the record `seq` is durable.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut q = lock(&self.shared.queue)?;
        if q.sealing && q.sealed < seq {
            Self::seal_in(&self.shared, &mut q, seq);
        }
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

    /// Has the flusher call `hook` right after each group it made durable (the durable
    /// position is already moved: [`Wal::durable_seq`]), and once when the log fails
    /// (with `true`; [`Wal::wait_durable`] then returns the error), on its own thread
    /// with no lock of the log held — so that the caller can answer its writers there,
    /// without a thread of its own waiting. Replaces an earlier hook.
    pub fn on_durable(&self, hook: Arc<DurableHook>) -> Result<()> {
        *lock(&self.shared.hook)? = Some(hook);
        Ok(())
    }

    /// The last durable sequence number.
    pub fn durable_seq(&self) -> Result<u64> {
        Ok(self.shared.durable.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Why the log stopped taking records, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.queue.lock().ok().and_then(|q| q.failed.clone())
    }

    /// Bytes the flusher has written since the log was opened.
    pub fn written(&self) -> u64 {
        self.shared.written.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Groups written (fdatasync calls) and the total time spent writing and syncing
    /// them, since the log was opened.
    pub fn group_stats(&self) -> (u64, std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.groups.load(Relaxed),
            std::time::Duration::from_nanos(self.shared.sync_nanos.load(Relaxed)),
        )
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
        q.pending_first = seq + 1;
        q.durable = seq;
        q.sealed = q.sealed.max(seq);
        self.shared
            .durable
            .store(seq, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Starts a new segment at `first_seq` (everything before it must be durable) and
    /// deletes every older segment. Used by a reset, after the snapshot holding
    /// everything up to `first_seq - 1` is durable.
    pub fn retire_before(&self, first_seq: u64) -> Result<usize> {
        self.rotate(first_seq)?;
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

    /// Starts a new segment at `first_seq` (everything before it must be durable and
    /// nothing later queued), keeping the older segments.
    pub fn rotate(&self, first_seq: u64) -> Result<()> {
        let mut seg = lock(&self.shared.segment)?;
        if seg.first_seq != first_seq {
            seg.finish()?;
            *seg = create_segment(&self.shared.dir, first_seq)?;
        }
        Ok(())
    }

    /// Deletes the segments whose records all come at or before `seq` (a later segment
    /// starts at or before `seq + 1`), once a snapshot holds them. The open segment is
    /// never deleted.
    pub fn remove_through(&self, seq: u64) -> Result<usize> {
        let segs = list_segments(&self.shared.dir)?;
        let open = lock(&self.shared.segment)?.first_seq;
        let mut removed = 0;
        for (i, (first, p)) in segs.iter().enumerate() {
            let next = segs.get(i + 1).map(|x| x.0);
            if *first < open && next.is_some_and(|n| n <= seq + 1) {
                std::fs::remove_file(p)?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.shared.dir)?;
        }
        Ok(removed)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.shutdown = true;
            self.shared.work.notify_all();
        }
        // The last owner of the log may be the flusher's own hook (a store dropped
        // while its hook ran): the thread is then ending by itself, and cannot join
        // itself.
        if let Some(h) = self.flusher.take()
            && h.thread().id() != std::thread::current().id()
        {
            let _ = h.join();
        }
    }
}

/// The longest the flusher waits for the writers of the previous group to come back
/// before it writes the next one.
pub const MAX_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

fn flusher(s: &Shared) {
    crate::background::no_wake_preemption();
    // The size of the previous group and how long its sync took.
    let mut last_count = 0u64;
    let mut last_sync = std::time::Duration::ZERO;
    loop {
        let (mut bytes, first, last) = {
            let Ok(mut q) = s.queue.lock() else { return };
            while !q.writable() && !q.shutdown {
                q = match s.work.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.pending.is_empty() {
                return;
            }
            // Gathering: the writers just woken by the previous group come back within
            // microseconds to queue their next record. Taking the group before they do
            // splits them in two halves that alternate, each waiting two syncs. So wait
            // (at most half the last sync, at most MAX_GATHER) until as many records
            // wait as the previous group held. One writer never waits.
            if last_count > 1 && !q.shutdown && !q.sealing {
                let deadline = std::time::Instant::now() + (last_sync / 2).min(MAX_GATHER);
                q.gather_target = last_count;
                while q.pending_last + 1 - q.pending_first < last_count && !q.shutdown {
                    let now = std::time::Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q = match s.work.wait_timeout(q, deadline - now) {
                        Ok((q, _)) => q,
                        Err(_) => return,
                    };
                }
                q.gather_target = u64::MAX;
            }
            let first = q.pending_first;
            let sealed = q.sealed.saturating_sub(first) as usize;
            let prefix = if q.sealing && !q.shutdown && q.sealed < q.pending_last {
                q.ends.get(sealed).copied()
            } else {
                None
            };
            if let Some(cut) = prefix {
                // Only a prefix is sealed: it is the group; the rest waits, behind a new
                // reserved group header.
                let mut rest = std::mem::take(&mut q.spare);
                rest.extend_from_slice(&[0u8; GROUP_HEADER]);
                rest.extend_from_slice(q.pending.get(cut..).unwrap_or_default());
                let shift = cut - GROUP_HEADER;
                q.ends.drain(..=sealed);
                for e in &mut q.ends {
                    *e -= shift;
                }
                let mut group = std::mem::replace(&mut q.pending, rest);
                group.truncate(cut);
                q.pending_first = q.sealed + 1;
                (group, first, q.sealed)
            } else {
                q.ends.clear();
                let spare = std::mem::take(&mut q.spare);
                (std::mem::replace(&mut q.pending, spare), first, q.pending_last)
            }
        };
        let t = std::time::Instant::now();
        let result = write_group(s, &mut bytes, first, last);
        last_sync = t.elapsed();
        last_count = last + 1 - first;
        let Ok(mut q) = s.queue.lock() else { return };
        match result {
            Ok(()) => {
                q.durable = last;
                s.durable.store(last, std::sync::atomic::Ordering::Release);
            }
            Err(e) => {
                q.failed = Some(e.to_string());
                s.done.notify_all();
                drop(q);
                call_hook(s, true);
                return;
            }
        }
        bytes.clear();
        q.spare = bytes;
        s.done.notify_all();
        drop(q);
        call_hook(s, false);
    }
}

/// Calls the hook of [`Wal::on_durable`], if one is set (`failed`: the log failed).
fn call_hook(s: &Shared, failed: bool) {
    let hook = s.hook.lock().ok().and_then(|h| h.clone());
    if let Some(h) = hook {
        h(failed);
    }
}

fn write_group(s: &Shared, bytes: &mut [u8], first: u64, last: u64) -> Result<()> {
    let len = bytes.len().saturating_sub(GROUP_HEADER);
    let h = GroupHeader {
        len: u32::try_from(len).map_err(|_| WalError::Encode(format!("a group of {len} bytes")))?,
        first_seq: first,
        count: u32::try_from(last + 1 - first).map_err(|_| WalError::Encode("too many records".into()))?,
    };
    if let Some(head) = bytes.get_mut(..GROUP_HEADER) {
        head.copy_from_slice(&h.encode());
    }
    let mut seg = lock(&s.segment)?;
    seg.reserve_for(bytes.len() as u64, s.segment_limit);
    let t = std::time::Instant::now();
    write_at(&seg.file, bytes, seg.len)?;
    seg.file.sync_data()?;
    let took = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
    s.sync_nanos.fetch_add(took, std::sync::atomic::Ordering::Relaxed);
    s.groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    seg.len += bytes.len() as u64;
    seg.reserved = seg.reserved.max(seg.len);
    seg.last_seq = last;
    s.written
        .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if seg.len >= s.segment_limit {
        // INVARIANT: the full segment was synced above, and cut to its records, before
        // the next one exists.
        seg.finish()?;
        *seg = create_segment(&s.dir, last + 1)?;
    }
    Ok(())
}
