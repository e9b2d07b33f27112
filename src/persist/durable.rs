//! The durable store: the write-ahead log, checkpoints, and recovery; [`Durable`] is a
//! [`Store`] (the server's versions and sequencer) over this log, for the CLI and tests.
//!
//! # Invariants
//!
//! * INVARIANT: a batch is acknowledged (its sequence number returned) only after its
//!   log record is durable; a refused batch is undone (never published) and not logged.
//! * INVARIANT: log order is apply order. The store's sequencer thread applies a batch
//!   and queues its record under one mutex, one batch after another, so sequence
//!   numbers follow the order in which batches changed the world, and replaying the log
//!   reproduces the world. Each
//!   record carries the digest of its outcome; replay recomputes it and stops at a
//!   mismatch.
//! * A batch is one record with one checksum: after a crash it is replayed whole or
//!   not at all, so no cascade is ever seen half-applied.
//! * Readers see a batch only once it is durable (the store publishes a version after
//!   the log synced its record).
//! * If the log cannot be written the store fails: every later write is refused until
//!   the process restarts and recovery rebuilds the world from disk.
//! * A snapshot `snap-<seq>.snap` holds exactly the effect of records 1..=seq; a
//!   checkpoint writes it from a published (durable) version, reads it back (section by
//!   section, every checksum and record, without building a second world), and only
//!   then retires what the *previous* snapshot made unnecessary: two snapshots are
//!   kept, and the log from the older one's sequence on.
//!
//! # Recovery
//!
//! The newest snapshot is loaded; if it does not read back whole (checksums, counts,
//! references), the older one is, provided the log bridges it to the newest (else the
//! store refuses to start). Then every log record after the snapshot's sequence number
//! is replayed in order, each checked against its outcome digest. The newest segment's
//! torn last group is truncated; damage before it, a gap in the sequence, a bad record
//! in an older segment or a digest mismatch are errors with the segment, the offset or
//! record, and the reason: the store refuses to start rather than silently lose
//! acknowledged writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::Event;
use crate::mutate;
use crate::partition::journal::{EncodeSections, Journal, JournalError, outcome_digest};
use crate::partition::{CommitError, Store};
use crate::persist::error::{DurableError, SnapshotError, WalError};
use crate::persist::snapshot::{self, sync_dir};
use crate::persist::wal::{self, Tail, Wal};
use crate::world::World;

type Result<T, E = DurableError> = std::result::Result<T, E>;

/// Tunables of a durable store.
#[derive(Debug, Clone)]
pub struct Options {
    /// A log segment is closed and a new one started once it reaches this size.
    pub segment_limit: u64,
    /// The parts of the recovered world's graph (`graph::Graph::with_partitions`).
    pub partitions: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_limit: 64 << 20,
            partitions: 1,
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
    /// Bytes cut from a torn log tail.
    pub truncated_bytes: u64,
    /// Snapshots that could not be read and were passed over (newest first).
    pub skipped_snapshots: Vec<String>,
    /// The directory held no snapshot and no log record: a new store.
    pub fresh: bool,
}

/// The log half of a durable store: sequence numbers, the write-ahead log writer and
/// checkpoints. It is the [`Journal`] of the server's [`Store`] (and of [`Durable`]).
pub struct Log {
    dir: PathBuf,
    // INVARIANT: the next sequence number. Held while a record is numbered and queued,
    // so sequence numbers follow queue order (the store's sequencer calls `enqueue`
    // under its own mutex, so they follow apply order too).
    next_seq: Mutex<u64>,
    wal: Wal,
    /// Serialises checkpoints and resets (snapshot files and log retirement).
    checkpointing: Mutex<()>,
    /// Log bytes present when the log was opened.
    initial_bytes: u64,
    /// `initial_bytes + wal.written()` when the last checkpoint pinned its version.
    checkpoint_mark: AtomicU64,
}

/// A world whose every acknowledged change survives a crash: the server's [`Store`]
/// over the write-ahead log, so there is one durable write path.
pub struct Durable {
    store: Store,
    log: Arc<Log>,
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

/// Reads a snapshot file back (every section's and block's checksum, every record, the
/// counts and the references the file alone can check) without building a world
/// ([`snapshot::verify_file`]), on [`verify_threads`] low-priority threads; checks that
/// it is the snapshot at `seq`.
pub fn verify_snapshot(path: &Path, seq: u64) -> Result<(), SnapshotError> {
    let v = snapshot::verify_file(path, verify_threads(), &crate::background::lower_priority)?;
    if v.header.last_seq != seq {
        return Err(SnapshotError::Corrupt(format!(
            "it records sequence {} but was written as {seq}",
            v.header.last_seq
        ))
        .at(path));
    }
    Ok(())
}

/// The threads a checkpoint's read-back uses: half the cores (at least one), so that
/// the readers keep the others.
pub fn verify_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .max(1)
}

/// Opens (creating if needed) the log in `dir` and recovers its world: the newest
/// readable snapshot plus every log record after it (see the module doc).
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
    let segments = wal::list_segments(dir)?;
    // Records before this one are no longer in the log.
    let log_first = segments.first().map(|s| s.0);
    let newest_snap = snaps.last().map(|s| s.0);
    let bridges = |seq: u64| log_first.is_some_and(|f| f <= seq + 1);
    let mut loaded = None;
    for (seq, path) in snaps.iter().rev() {
        if Some(*seq) != newest_snap && !bridges(*seq) {
            recovery.skipped_snapshots.push(format!(
                "the older snapshot `{}` cannot stand in: the log starts at record {}",
                path.display(),
                log_first.map_or_else(|| "none".into(), |f| f.to_string())
            ));
            break;
        }
        match snapshot::load_in(path, opts.partitions, &mut |_| {}) {
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
        // No snapshot, or none readable but the log still starts at the beginning.
        None if snaps.is_empty() || bridges(0) => (World::with_partitions(opts.partitions), 0),
        None => {
            return Err(DurableError::NoValidSnapshot(
                dir.to_path_buf(),
                recovery.skipped_snapshots.join("; "),
            ));
        }
    };
    recovery.snapshot_seq = snap_seq;

    let mut last = snap_seq;
    let n = segments.len();
    let mut newest_end = last;
    let mut initial_bytes = 0u64;
    for (i, (first, path)) in segments.iter().enumerate() {
        let newest = i + 1 == n;
        // A segment that starts after the next expected record means records are
        // missing: refuse rather than start from a world that lacks them.
        if *first > last + 1 {
            return Err(WalError::Gap {
                expected: last + 1,
                found: *first,
            }
            .into());
        }
        let scan = wal::scan_segment(path, *first)?;
        if let Some(d) = &scan.damage {
            return Err(WalError::CorruptMiddle {
                path: path.clone(),
                offset: d.offset,
                reason: d.reason.clone(),
            }
            .into());
        }
        if let Tail::Bad { offset, error } = &scan.tail
            && !newest
        {
            return Err(WalError::CorruptMiddle {
                path: path.clone(),
                offset: wal::SEGMENT_HEADER + offset,
                reason: format!("{error} in a segment that is not the newest"),
            }
            .into());
        }
        let size = std::fs::metadata(path).map_err(WalError::from)?.len();
        // The newest segment is cut to its records: a torn tail goes, and so does the
        // reserve of blocks the log keeps ahead of its records (zeros; the log reserves
        // it again as it writes), which is not counted as truncated.
        if newest && (scan.torn_header || scan.tail != Tail::Clean || size > scan.valid_len) {
            recovery.truncated_bytes = if scan.torn_header {
                size
            } else {
                scan.written_len.saturating_sub(scan.valid_len)
            };
            wal::repair_tail(path, &scan)?;
        }
        initial_bytes += scan.valid_len.max(wal::SEGMENT_HEADER);
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
            let outcome = mutate::apply_batch(&mut world, &b.events)
                .map_err(|error| DurableError::Replay { seq: b.seq, error })?;
            if let Some(recorded) = b.digest {
                let found = outcome_digest(&outcome);
                if found != recorded {
                    return Err(DurableError::Digest {
                        seq: b.seq,
                        path: path.clone(),
                        recorded,
                        found,
                    });
                }
            }
            last = b.seq;
            recovery.replayed += 1;
        }
    }
    // Fell back to an older snapshot: the log must reach what the newest one held.
    if let Some(newest) = newest_snap
        && snap_seq < newest
        && last < newest
    {
        return Err(DurableError::Fallback {
            older: snap_seq,
            reason: format!(
                "the log ends at record {last}, before the newest snapshot's {newest} ({})",
                recovery.skipped_snapshots.join("; ")
            ),
        });
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
        checkpointing: Mutex::new(()),
        initial_bytes,
        checkpoint_mark: AtomicU64::new(0),
    };
    Ok((world, log, recovery))
}

fn commit_error(e: CommitError) -> DurableError {
    match e {
        CommitError::Refused(e) => DurableError::Refused(e),
        other => DurableError::Commit(other.to_string()),
    }
}

impl Durable {
    /// Opens (creating if needed) the store in `dir` and recovers its world.
    pub fn open(dir: &Path) -> Result<Durable> {
        Durable::open_with(dir, Options::default())
    }

    pub fn open_with(dir: &Path, opts: Options) -> Result<Durable> {
        let (world, log, recovery) = recover(dir, &opts)?;
        let log = Arc::new(log);
        let store = Store::new(world, log.clone());
        Ok(Durable { store, log, recovery })
    }

    /// What recovery found when the store was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Validates and applies a batch atomically through the store's sequencer, waits
    /// until it is durable, and returns the sequence number of its record. A refused
    /// batch changes nothing.
    pub fn apply_batch(&self, events: &[Event]) -> Result<u64> {
        self.store.commit(events).map(|c| c.seq).map_err(commit_error)
    }

    /// Runs `f` on the current (published, durable) version.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> Result<R> {
        Ok(self.store.read(f).0)
    }

    /// The sequence number of the last committed batch.
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self.store.visible())
    }

    /// Writes a snapshot of the current version and retires what it makes unnecessary;
    /// writers and readers go on meanwhile.
    pub fn checkpoint(&self) -> Result<u64> {
        let v = self.store.pin();
        self.log.write_checkpoint(&v.world, v.token)
    }

    /// The store (versions, sequencer) over the log.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn dir(&self) -> &Path {
        &self.log.dir
    }

    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl Log {
    /// Numbers `events` as the next record and queues it with the digest of its
    /// outcome; does not wait for it to be durable.
    pub fn enqueue(&self, events: &[Event], digest: Option<u64>) -> Result<u64> {
        let mut next = self.next_seq.lock().map_err(|_| DurableError::Poisoned)?;
        let seq = *next;
        self.wal.enqueue_events(seq, events, digest)?;
        *next = seq + 1;
        Ok(seq)
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

    /// The sequence number of the last durable record.
    pub fn durable_seq(&self) -> Result<u64> {
        Ok(self.wal.durable_seq()?)
    }

    /// Groups written (one fdatasync each) and the time spent writing and syncing them.
    pub fn group_stats(&self) -> (u64, std::time::Duration) {
        self.wal.group_stats()
    }

    /// Log bytes written since the last checkpoint (or present at open).
    pub fn bytes_since_checkpoint(&self) -> u64 {
        (self.initial_bytes + self.wal.written()).saturating_sub(self.checkpoint_mark.load(Ordering::Relaxed))
    }

    /// Writes `world`, which holds exactly records 1..=`seq` (all durable), as the
    /// snapshot at `seq`, reads it back (`verify_snapshot`), and only then deletes the snapshots
    /// before the previous one and the log segments that only the previous snapshot
    /// needed. Two snapshots stay, with the log from the older one on, so a newest
    /// snapshot found unreadable later falls back to the older plus the log. Holds no
    /// lock the sequencer or a reader needs.
    pub fn write_checkpoint(&self, world: &World, seq: u64) -> Result<u64> {
        self.write_checkpoint_with(seq, |path| snapshot::save(world, path, seq, &mut |_| {}))
    }

    /// [`Log::write_checkpoint`] of a snapshot in `partitions` partitions whose sections
    /// `encode` gives (the server's partition actors encode their own; see
    /// `partition::Store::checkpoint`).
    pub fn write_checkpoint_by(
        &self,
        world: &World,
        seq: u64,
        partitions: u32,
        encode: &EncodeSections<'_>,
    ) -> Result<u64> {
        self.write_checkpoint_with(seq, |path| {
            let plan = Arc::new(snapshot::Plan::of(world, partitions)?);
            let sections = encode(&plan)?;
            snapshot::save_sections(path, &plan, seq, sections, &mut |_| {})
        })
    }

    /// A checkpoint at `seq` whose snapshot file `save` writes.
    fn write_checkpoint_with(
        &self,
        seq: u64,
        save: impl FnOnce(&Path) -> Result<snapshot::Counts, SnapshotError>,
    ) -> Result<u64> {
        let _one = self.checkpointing.lock().map_err(|_| DurableError::Poisoned)?;
        let io = |error| DurableError::Dir {
            path: self.dir.clone(),
            error,
        };
        let snaps = list_snapshots(&self.dir).map_err(io)?;
        // Nothing new since the newest snapshot (or a reset wrote a newer one).
        if let Some((newest, _)) = snaps.last()
            && *newest >= seq
        {
            return Ok(*newest);
        }
        let mark = self.initial_bytes + self.wal.written();
        let path = snapshot_path(&self.dir, seq);
        save(&path)?;
        if let Err(e) = verify_snapshot(&path, seq) {
            // Never retire anything behind a snapshot that does not read back.
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        self.checkpoint_mark.store(mark, Ordering::Relaxed);
        let previous = snaps.last().map(|s| s.0);
        if let Some(prev) = previous {
            self.wal.remove_through(prev)?;
            for (s, p) in &snaps {
                if *s < prev {
                    std::fs::remove_file(p).map_err(io)?;
                }
            }
            sync_dir(&self.dir).map_err(io)?;
        }
        Ok(seq)
    }

    /// Records that the world was emptied: an empty snapshot at the next sequence
    /// number, then the log and every snapshot before it retired (falling back to an
    /// older snapshot would undo the reset). Returns that sequence number.
    pub fn reset(&self) -> Result<u64> {
        let _one = self.checkpointing.lock().map_err(|_| DurableError::Poisoned)?;
        let mut next = self.next_seq.lock().map_err(|_| DurableError::Poisoned)?;
        let seq = *next;
        self.wal.wait_durable(seq.saturating_sub(1))?;
        // Once this snapshot is durable, recovery starts from it (empty) and skips the
        // older records; a crash before it leaves the reset unacknowledged.
        snapshot::save(&World::new(), &snapshot_path(&self.dir, seq), seq, &mut |_| {})?;
        self.wal.retire_before(seq + 1)?;
        self.wal.advance_to(seq)?;
        *next = seq + 1;
        let io = |error| DurableError::Dir {
            path: self.dir.clone(),
            error,
        };
        for (s, p) in list_snapshots(&self.dir).map_err(io)? {
            if s < seq {
                std::fs::remove_file(&p).map_err(io)?;
            }
        }
        sync_dir(&self.dir).map_err(io)?;
        Ok(seq)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn journal_error(e: DurableError) -> JournalError {
    match e {
        DurableError::Dir { error, .. } | DurableError::Wal(WalError::Io(error)) => JournalError::Io(error),
        DurableError::Wal(WalError::Encode(m)) => JournalError::Refused(m),
        other => JournalError::Failed(other.to_string()),
    }
}

/// The write-ahead log as the service's journal: `enqueue` queues the record,
/// `wait_durable` returns once the flusher synced its group, `reset` writes an empty
/// snapshot, `checkpoint` two-snapshot checkpoints.
impl Journal for Log {
    fn enqueue(&self, events: &[Event], digest: Option<u64>) -> std::result::Result<u64, JournalError> {
        Log::enqueue(self, events, digest).map_err(journal_error)
    }

    fn wait_durable(&self, seq: u64) -> std::result::Result<(), JournalError> {
        Log::wait_durable(self, seq).map_err(journal_error)
    }

    fn seal(&self, seq: u64) {
        // A failed log reports itself to whoever waits for the record.
        let _ = self.wal.seal(seq);
    }

    fn on_durable(&self, hook: Arc<crate::persist::wal::DurableHook>) -> bool {
        self.wal.on_durable(hook).is_ok()
    }

    fn reset(&self) -> std::result::Result<u64, JournalError> {
        Log::reset(self).map_err(journal_error)
    }

    fn position(&self) -> u64 {
        self.durable_seq().unwrap_or(0)
    }

    fn flush(&self) -> std::result::Result<(), JournalError> {
        let last = self.last_seq().map_err(journal_error)?;
        self.wait_durable(last).map_err(journal_error)
    }

    fn checkpoint(&self, world: &World, seq: u64) -> std::result::Result<Option<u64>, JournalError> {
        self.write_checkpoint(world, seq).map(Some).map_err(journal_error)
    }
    fn checkpoint_by(
        &self,
        world: &World,
        seq: u64,
        partitions: u32,
        sections: &EncodeSections<'_>,
    ) -> std::result::Result<Option<u64>, JournalError> {
        self.write_checkpoint_by(world, seq, partitions, sections)
            .map(Some)
            .map_err(journal_error)
    }

    fn bytes_since_checkpoint(&self) -> u64 {
        Log::bytes_since_checkpoint(self)
    }

    fn group_stats(&self) -> Option<(u64, std::time::Duration)> {
        Some(Log::group_stats(self))
    }
}
