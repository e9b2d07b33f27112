//! The durability seam: the service writes every accepted batch to a [`Journal`] before
//! any reader can see it, and the journal's sequence number is the consistency token.
//!
//! The write-ahead log of the `persist` layer plugs in here: `persist::durable::Log`
//! implements [`Journal`] (`enqueue` queues the record, `wait_durable` returns once the
//! flusher has synced its group); `delegraph serve --data-dir` uses it. [`MemoryJournal`]
//! only counts, which is what the tests and `serve` without a data directory use.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::Event;
use crate::mutate::Outcome;
use crate::persist::error::SnapshotError;
use crate::persist::snapshot::{Encoded, Plan};
use crate::world::World;

/// Encodes every section of a planned snapshot (see [`Journal::checkpoint_by`]).
pub type EncodeSections<'a> = dyn Fn(&Arc<Plan>) -> Result<Vec<Encoded>, SnapshotError> + 'a;

/// A journal that could not take a record, or could not make one durable.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The log's storage failed: the log takes no more records.
    #[error("the journal could not write: {0}")]
    Io(#[from] std::io::Error),
    /// The log failed earlier (or now) and takes no more records.
    #[error("the journal has failed: {0}")]
    Failed(String),
    /// This record cannot be taken (e.g. too large to encode); the log is fine.
    #[error("the journal refused the record: {0}")]
    Refused(String),
}

impl JournalError {
    /// Whether the log itself failed (then the store stops taking writes), as opposed
    /// to refusing one record.
    pub fn is_failure(&self) -> bool {
        !matches!(self, JournalError::Refused(_))
    }
}

/// The digest of what a batch did, stored in its log record and recomputed on replay:
/// FNV-1a (64 bits, stable across runs and platforms) over whether it changed anything
/// and the sorted assignments and delegations it removed. Replaying a record that does
/// something else (a tampered record, or an engine whose rules changed under an old
/// log) is then noticed instead of silently building another world.
pub fn outcome_digest(o: &Outcome) -> u64 {
    struct Fnv(u64);
    impl Fnv {
        fn bytes(&mut self, b: &[u8]) {
            for x in b {
                self.0 ^= u64::from(*x);
                self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        fn str(&mut self, s: &str) {
            self.bytes(&(s.len() as u64).to_le_bytes());
            self.bytes(s.as_bytes());
        }
        fn triples(&mut self, tag: u8, v: &[(String, String, String)]) {
            let mut v: Vec<&(String, String, String)> = v.iter().collect();
            v.sort();
            self.bytes(&[tag]);
            self.bytes(&(v.len() as u64).to_le_bytes());
            for (a, b, c) in v {
                self.str(a);
                self.str(b);
                self.str(c);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.bytes(&[u8::from(o.changed)]);
    h.triples(b'a', &o.removed_assignments);
    h.triples(b'd', &o.removed_delegations);
    h.0
}

/// An ordered, durable record of accepted event batches.
///
/// The service calls `enqueue` and `reset` one at a time, in commit order (under the
/// sequencer), only for batches the world has accepted; a refused batch never reaches
/// the journal. Recovery is "replay every record after the last checkpoint in order",
/// which reproduces the world because applying a batch is deterministic (each record's
/// outcome digest checks that).
pub trait Journal: Send + Sync {
    /// Queues `events` as the next record (with the digest of their outcome) without
    /// waiting for it to be durable; returns its sequence number, greater than every
    /// number returned before. The caller then waits with [`Journal::wait_durable`].
    fn enqueue(&self, events: &[Event], digest: Option<u64>) -> Result<u64, JournalError>;
    /// Waits until record `seq` (and every one before it) is durable. An error means
    /// the outcome of the records not yet durable is unknown.
    fn wait_durable(&self, _seq: u64) -> Result<(), JournalError> {
        Ok(())
    }
    /// Lets the journal make every record up to `seq` durable now. A journal may hold
    /// records back until they are sealed or waited for, so that the store decides
    /// where a group (one fsync) ends and can make one version per group.
    fn seal(&self, _seq: u64) {}
    /// Has the journal's own flusher call `hook` right after each group it made durable
    /// ([`Journal::position`] has moved), and once when it fails (with `true`), so that
    /// the store answers its writers there instead of on a thread that waits. False
    /// when the journal has no such thread (the store then waits with
    /// [`Journal::wait_durable`] on a publisher thread of its own).
    fn on_durable(&self, _hook: Arc<crate::persist::wal::DurableHook>) -> bool {
        false
    }
    /// Enqueues a record without a digest and waits until it is durable.
    fn append(&self, events: &[Event]) -> Result<u64, JournalError> {
        let seq = self.enqueue(events, None)?;
        self.wait_durable(seq)?;
        Ok(seq)
    }
    /// Records that the world was emptied (the admin reset), so that recovery does not
    /// replay what came before; returns the record's sequence number.
    fn reset(&self) -> Result<u64, JournalError>;
    /// The sequence number of the last *durable* record (0 when there is none).
    fn position(&self) -> u64;
    /// Makes everything enqueued so far durable (graceful shutdown).
    fn flush(&self) -> Result<(), JournalError>;
    /// Writes `world`, which holds exactly the records up to `seq` (all durable), as a
    /// checkpoint so that recovery need not replay them, and retires what it makes
    /// unnecessary; returns its sequence number, or None when the journal keeps no
    /// checkpoints. Takes no lock the sequencer or a reader needs.
    fn checkpoint(&self, _world: &World, _seq: u64) -> Result<Option<u64>, JournalError> {
        Ok(None)
    }
    /// [`Journal::checkpoint`] with the snapshot planned in `partitions` partitions and
    /// its sections encoded by `sections` (the server's partition actors each encode
    /// theirs); a journal that writes no sections ignores it.
    fn checkpoint_by(
        &self,
        world: &World,
        seq: u64,
        _partitions: u32,
        _sections: &EncodeSections<'_>,
    ) -> Result<Option<u64>, JournalError> {
        self.checkpoint(world, seq)
    }
    /// Log bytes written since the last checkpoint (what `serve` checkpoints by).
    fn bytes_since_checkpoint(&self) -> u64 {
        0
    }
    /// Groups written (one sync each) and the time spent writing and syncing them, for
    /// a journal that writes groups (None otherwise).
    fn group_stats(&self) -> Option<(u64, std::time::Duration)> {
        None
    }
}

/// A journal that keeps nothing but the sequence counter: durability is "none", and
/// tokens are still monotonic within one process.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    seq: AtomicU64,
    /// The last record "made durable" (at once, unless `losing`).
    durable: AtomicU64,
    /// Events appended in total, for tests that assert a refusal wrote nothing.
    events: AtomicU64,
    /// When set, every append fails (to test that a journal failure changes nothing).
    failing: AtomicBool,
    /// When set, records are queued but never become durable: waiting for one fails
    /// (to test a failure after the record was queued: outcome unknown).
    losing: AtomicBool,
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        MemoryJournal::default()
    }

    /// How many events were appended in total.
    pub fn appended_events(&self) -> u64 {
        self.events.load(Ordering::SeqCst)
    }

    /// Makes every later append fail (or work again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes every later record fail to become durable after it was queued.
    pub fn set_losing(&self, losing: bool) {
        self.losing.store(losing, Ordering::SeqCst);
    }
}

impl Journal for MemoryJournal {
    fn enqueue(&self, events: &[Event], _digest: Option<u64>) -> Result<u64, JournalError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(JournalError::Refused("the test journal is set to fail".into()));
        }
        self.events.fetch_add(events.len() as u64, Ordering::SeqCst);
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.losing.load(Ordering::SeqCst) {
            self.durable.fetch_max(seq, Ordering::SeqCst);
        }
        Ok(seq)
    }

    fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        if self.durable.load(Ordering::SeqCst) >= seq {
            Ok(())
        } else {
            Err(JournalError::Failed(format!(
                "the test journal lost record {seq} after queueing it"
            )))
        }
    }

    fn reset(&self) -> Result<u64, JournalError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.durable.fetch_max(seq, Ordering::SeqCst);
        Ok(seq)
    }

    fn position(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    fn flush(&self) -> Result<(), JournalError> {
        Ok(())
    }
}
