//! The durable store: a world in memory, a write-ahead log and checkpoints.
//!
//! # Invariants
//!
//! * INVARIANT: a batch is acknowledged (its sequence number returned) only after its
//!   log record is durable; a refused batch is neither applied nor logged.
//! * INVARIANT: log order is apply order. The batch is applied and its record queued
//!   while the world's write lock is held, so sequence numbers follow the order in
//!   which batches changed the world, and replaying the log reproduces the world.
//! * A batch is one record with one checksum: after a crash it is replayed whole or
//!   not at all, so no cascade is ever seen half-applied.
//! * Readers may see a batch after it is applied and before it is durable (it is not
//!   yet acknowledged). If the process dies in between, that batch may be lost; no
//!   acknowledged batch is.
//! * If the log cannot be written the store fails: the world in memory holds a change
//!   the log lacks, so every later write is refused until the store is reopened (and
//!   recovery rebuilds the world from disk).
//! * A snapshot `snap-<seq>.snap` holds exactly the effect of records 1..=seq; a
//!   checkpoint writes it only after those records are durable, then retires the log
//!   segments before seq + 1 and older snapshots.
//!
//! # Recovery
//!
//! The newest snapshot that reads back whole (checksums, counts, references) is
//! loaded; then every log record after its sequence number is replayed in order. The
//! newest segment's torn or corrupt tail is truncated. A gap in the sequence, a bad
//! record in an older segment, or snapshots that all fail to read are errors: the
//! store refuses to start rather than silently lose acknowledged writes.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::event::Event;
use crate::mutate;
use crate::persist::error::{DurableError, WalError};
use crate::persist::snapshot::{self, sync_dir};
use crate::persist::wal::{self, Tail, Wal};
use crate::world::World;

type Result<T, E = DurableError> = std::result::Result<T, E>;

/// Tunables of a durable store.
#[derive(Debug, Clone)]
pub struct Options {
    /// A log segment is closed and a new one started once it reaches this size.
    pub segment_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_limit: 64 << 20,
        }
    }
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The sequence number of the snapshot loaded (0: none).
    pub snapshot_seq: u64,
    /// Log records replayed after the snapshot.
    pub replayed: u64,
    /// Bytes cut from a torn or corrupt log tail.
    pub truncated_bytes: u64,
    /// Snapshots that could not be read and were passed over (newest first).
    pub skipped_snapshots: Vec<String>,
}

/// A world whose every acknowledged change survives a crash.
pub struct Durable {
    dir: PathBuf,
    // INVARIANT: `next_seq` is only changed while `world`'s write lock is held.
    world: RwLock<World>,
    next_seq: Mutex<u64>,
    wal: Wal,
    recovery: Recovery,
}

fn snapshot_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snap-{seq:020}.snap"))
}

fn list_snapshots(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(seq) = name
            .strip_prefix("snap-")
            .and_then(|s| s.strip_suffix(".snap"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, p));
        }
    }
    out.sort();
    Ok(out)
}

impl Durable {
    /// Opens (creating if needed) the store in `dir` and recovers its world.
    pub fn open(dir: &Path) -> Result<Durable> {
        Durable::open_with(dir, Options::default())
    }

    pub fn open_with(dir: &Path, opts: Options) -> Result<Durable> {
        let io = |error| DurableError::Dir {
            path: dir.to_path_buf(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Left-overs of a crash during a snapshot save are never trusted.
        for e in std::fs::read_dir(dir).map_err(io)? {
            let p = e.map_err(io)?.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(&p).map_err(io)?;
            }
        }
        let mut recovery = Recovery::default();
        let snaps = list_snapshots(dir).map_err(io)?;
        let mut loaded = None;
        for (seq, path) in snaps.iter().rev() {
            match snapshot::load(path, &mut |_| {}) {
                Ok((w, l)) if l.header.last_seq == *seq => {
                    loaded = Some((w, *seq));
                    break;
                }
                Ok((_, l)) => recovery.skipped_snapshots.push(format!(
                    "`{}` records sequence {} but is named {seq}",
                    path.display(),
                    l.header.last_seq
                )),
                Err(e) => recovery.skipped_snapshots.push(e.to_string()),
            }
        }
        let (mut world, snap_seq) = match loaded {
            Some(x) => x,
            None if snaps.is_empty() => (World::new(), 0),
            None => {
                return Err(DurableError::NoValidSnapshot(
                    dir.to_path_buf(),
                    recovery.skipped_snapshots.join("; "),
                ));
            }
        };
        recovery.snapshot_seq = snap_seq;

        let segments = wal::list_segments(dir)?;
        let mut last = snap_seq;
        let n = segments.len();
        for (i, (first, path)) in segments.iter().enumerate() {
            let newest = i + 1 == n;
            // A segment that starts after the next expected record means records are
            // missing (e.g. the newest snapshot was unreadable and an older one was
            // loaded): refuse rather than start from a world that lacks them.
            if *first > last + 1 {
                return Err(WalError::Gap {
                    expected: last + 1,
                    found: *first,
                }
                .into());
            }
            let scan = wal::scan_segment(path, *first)?;
            if let Tail::Bad { offset, error } = &scan.tail
                && !newest
            {
                return Err(WalError::CorruptMiddle {
                    path: path.clone(),
                    offset: wal::SEGMENT_HEADER + offset,
                    reason: error.to_string(),
                }
                .into());
            }
            if newest && (scan.torn_header || scan.tail != Tail::Clean) {
                let size = std::fs::metadata(path).map_err(WalError::from)?.len();
                recovery.truncated_bytes = size.saturating_sub(scan.valid_len);
                wal::repair_tail(path, &scan)?;
            }
            for b in scan.batches {
                if b.seq <= last {
                    continue;
                }
                if b.seq != last + 1 {
                    return Err(WalError::Gap {
                        expected: last + 1,
                        found: b.seq,
                    }
                    .into());
                }
                mutate::apply_batch(&mut world, &b.events)
                    .map_err(|error| DurableError::Replay { seq: b.seq, error })?;
                last = b.seq;
                recovery.replayed += 1;
            }
        }
        let wal = Wal::open(dir, last, opts.segment_limit)?;
        Ok(Durable {
            dir: dir.to_path_buf(),
            world: RwLock::new(world),
            next_seq: Mutex::new(last + 1),
            wal,
            recovery,
        })
    }

    /// What recovery found when the store was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Validates and applies a batch atomically, logs it durably, and returns its
    /// sequence number (the consistency token). A refused batch changes nothing.
    pub fn apply_batch(&self, events: &[Event]) -> Result<u64> {
        let seq = {
            let mut world = self.world.write().map_err(|_| DurableError::Poisoned)?;
            let mut next = self.next_seq.lock().map_err(|_| DurableError::Poisoned)?;
            let seq = *next;
            // Encode before applying: an event that cannot be logged is never applied.
            let record = wal::encode_record(seq, events)?;
            mutate::apply_batch(&mut world, events).map_err(DurableError::Refused)?;
            self.wal.enqueue(seq, &record)?;
            *next = seq + 1;
            seq
        };
        self.wal.wait_durable(seq)?;
        Ok(seq)
    }

    /// Runs `f` on the current world.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> Result<R> {
        let w = self.world.read().map_err(|_| DurableError::Poisoned)?;
        Ok(f(&w))
    }

    /// The sequence number of the last applied batch.
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self
            .next_seq
            .lock()
            .map_err(|_| DurableError::Poisoned)?
            .saturating_sub(1))
    }

    /// Writes a snapshot of everything applied so far and retires the log before it.
    /// Writers wait while the snapshot is written; readers do not.
    pub fn checkpoint(&self) -> Result<u64> {
        let world = self.world.read().map_err(|_| DurableError::Poisoned)?;
        let last = self.last_seq()?;
        self.wal.wait_durable(last)?;
        let path = snapshot_path(&self.dir, last);
        snapshot::save(&world, &path, last, &mut |_| {})?;
        self.wal.retire_before(last + 1)?;
        let io = |error| DurableError::Dir {
            path: self.dir.clone(),
            error,
        };
        for (seq, p) in list_snapshots(&self.dir).map_err(io)? {
            if seq < last {
                std::fs::remove_file(&p).map_err(io)?;
            }
        }
        sync_dir(&self.dir).map_err(io)?;
        Ok(last)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
