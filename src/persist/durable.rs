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
use crate::partition::journal::{Journal, JournalError};
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
    /// The directory held no snapshot and no log record: a new store.
    pub fresh: bool,
}

/// The log half of a durable store: sequence numbers, the write-ahead log writer and
/// checkpoints. [`Durable`] pairs it with a world; the HTTP service's partition store
/// uses it as its [`Journal`] (dry run → append → apply), so both write through the
/// same encoding, queueing and checkpoint code.
pub struct Log {
    dir: PathBuf,
    // INVARIANT: the next sequence number. Held while a record is encoded, its batch
    // applied (by `Durable`) and the record queued, so sequence numbers follow queue
    // order and, for `Durable`, apply order.
    next_seq: Mutex<u64>,
    wal: Wal,
}

/// A world whose every acknowledged change survives a crash.
pub struct Durable {
    world: RwLock<World>,
    log: Log,
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

/// Opens (creating if needed) the log in `dir` and recovers its world: the newest valid
/// snapshot plus every log record after it (see the module doc).
pub fn recover(dir: &Path, opts: &Options) -> Result<(World, Log, Recovery)> {
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
    let mut newest_end = last;
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
        if newest {
            newest_end = (first + scan.batches.len() as u64).saturating_sub(1);
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
    // The newest segment ends before the snapshot (a crash right after a reset's
    // snapshot): start a new segment rather than leave a gap inside one.
    let reuse = newest_end >= last;
    recovery.fresh = snaps.is_empty() && last == 0;
    let wal = Wal::open_at(dir, last, opts.segment_limit, reuse)?;
    let log = Log {
        dir: dir.to_path_buf(),
        next_seq: Mutex::new(last + 1),
        wal,
    };
    Ok((world, log, recovery))
}

impl Durable {
    /// Opens (creating if needed) the store in `dir` and recovers its world.
    pub fn open(dir: &Path) -> Result<Durable> {
        Durable::open_with(dir, Options::default())
    }

    pub fn open_with(dir: &Path, opts: Options) -> Result<Durable> {
        let (world, log, recovery) = recover(dir, &opts)?;
        Ok(Durable {
            world: RwLock::new(world),
            log,
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
            self.log
                .queue_with(events, || {
                    mutate::apply_batch(&mut world, events).map_err(DurableError::Refused)
                })?
                .0
        };
        self.log.wait_durable(seq)?;
        Ok(seq)
    }

    /// Runs `f` on the current world.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> Result<R> {
        let w = self.world.read().map_err(|_| DurableError::Poisoned)?;
        Ok(f(&w))
    }

    /// The sequence number of the last applied batch.
    pub fn last_seq(&self) -> Result<u64> {
        self.log.last_seq()
    }

    /// Writes a snapshot of everything applied so far and retires the log before it.
    /// Writers wait while the snapshot is written; readers do not.
    pub fn checkpoint(&self) -> Result<u64> {
        let world = self.world.read().map_err(|_| DurableError::Poisoned)?;
        self.log.checkpoint(&world)
    }

    pub fn dir(&self) -> &Path {
        &self.log.dir
    }

    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl Log {
    /// Encodes `events` as the next record, runs `apply` (a refusal logs nothing and
    /// uses no sequence number) and queues the record; returns its sequence number and
    /// what `apply` returned. Does not wait for the record to be durable.
    pub fn queue_with<R>(&self, events: &[Event], apply: impl FnOnce() -> Result<R>) -> Result<(u64, R)> {
        let mut next = self.next_seq.lock().map_err(|_| DurableError::Poisoned)?;
        let seq = *next;
        // Encode before applying: an event that cannot be logged is never applied.
        let record = wal::encode_record(seq, events)?;
        let r = apply()?;
        self.wal.enqueue(seq, &record)?;
        *next = seq + 1;
        Ok((seq, r))
    }

    /// Waits until record `seq` is durable.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        Ok(self.wal.wait_durable(seq)?)
    }

    /// The sequence number of the last queued record.
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self
            .next_seq
            .lock()
            .map_err(|_| DurableError::Poisoned)?
            .saturating_sub(1))
    }

    /// Writes `world` as the snapshot of every record so far and retires the log before
    /// it. The caller guarantees that `world` holds exactly records 1..=last (it holds
    /// the world's lock so that no batch is applied meanwhile).
    pub fn checkpoint(&self, world: &World) -> Result<u64> {
        let next = self.next_seq.lock().map_err(|_| DurableError::Poisoned)?;
        let last = next.saturating_sub(1);
        self.seal(last)?;
        self.checkpoint_at(world, last)
    }

    /// Makes records up to `seq` durable and starts a new segment after it. The caller
    /// queues nothing meanwhile (it holds the sequencer, or `next_seq`).
    pub fn seal(&self, seq: u64) -> Result<()> {
        self.wal.wait_durable(seq)?;
        self.wal.rotate(seq + 1)?;
        Ok(())
    }

    /// Writes `world`, which holds exactly records 1..=`seq`, as the snapshot at `seq`
    /// and deletes the log segments before it (after [`Log::seal`] at `seq`: later
    /// records, queued meanwhile, are in newer segments and stay).
    pub fn checkpoint_at(&self, world: &World, seq: u64) -> Result<u64> {
        snapshot::save(world, &snapshot_path(&self.dir, seq), seq, &mut |_| {})?;
        self.wal.remove_before(seq + 1)?;
        self.remove_snapshots_before(seq)?;
        Ok(seq)
    }

    /// Records that the world was emptied: an empty snapshot at the next sequence
    /// number, then the log before it retired. Returns that sequence number.
    pub fn reset(&self) -> Result<u64> {
        let mut next = self.next_seq.lock().map_err(|_| DurableError::Poisoned)?;
        let seq = *next;
        self.wal.wait_durable(seq.saturating_sub(1))?;
        // Once this snapshot is durable, recovery starts from it (empty) and skips the
        // older records; a crash before it leaves the reset unacknowledged.
        snapshot::save(&World::new(), &snapshot_path(&self.dir, seq), seq, &mut |_| {})?;
        self.wal.retire_before(seq + 1)?;
        self.wal.advance_to(seq)?;
        *next = seq + 1;
        self.remove_snapshots_before(seq)?;
        Ok(seq)
    }

    fn remove_snapshots_before(&self, seq: u64) -> Result<()> {
        let io = |error| DurableError::Dir {
            path: self.dir.clone(),
            error,
        };
        for (s, p) in list_snapshots(&self.dir).map_err(io)? {
            if s < seq {
                std::fs::remove_file(&p).map_err(io)?;
            }
        }
        sync_dir(&self.dir).map_err(io)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn journal_error(e: DurableError) -> JournalError {
    match e {
        DurableError::Dir { error, .. } => JournalError::Io(error),
        other => JournalError::Refused(other.to_string()),
    }
}

/// The write-ahead log as the service's journal: `append` returns once the record is
/// durable (group commit in the flusher thread), `reset` writes an empty snapshot.
impl Journal for Log {
    fn append(&self, events: &[Event]) -> std::result::Result<u64, JournalError> {
        let (seq, ()) = self.queue_with(events, || Ok(())).map_err(journal_error)?;
        self.wait_durable(seq).map_err(journal_error)?;
        Ok(seq)
    }

    fn reset(&self) -> std::result::Result<u64, JournalError> {
        Log::reset(self).map_err(journal_error)
    }

    fn position(&self) -> u64 {
        self.last_seq().unwrap_or(0)
    }

    fn flush(&self) -> std::result::Result<(), JournalError> {
        let last = self.last_seq().map_err(journal_error)?;
        self.wait_durable(last).map_err(journal_error)
    }

    fn enqueue(&self, events: &[Event]) -> std::result::Result<u64, JournalError> {
        let (seq, ()) = self.queue_with(events, || Ok(())).map_err(journal_error)?;
        Ok(seq)
    }

    fn wait_durable(&self, seq: u64) -> std::result::Result<(), JournalError> {
        Log::wait_durable(self, seq).map_err(journal_error)
    }

    fn durable_position(&self) -> u64 {
        self.wal.durable_seq().unwrap_or(0)
    }

    fn seal(&self, seq: u64) -> std::result::Result<(), JournalError> {
        Log::seal(self, seq).map_err(journal_error)
    }

    fn checkpoint(&self, world: &World, seq: u64) -> std::result::Result<Option<u64>, JournalError> {
        self.checkpoint_at(world, seq).map(Some).map_err(journal_error)
    }
}
