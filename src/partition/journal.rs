//! The durability seam: the service writes every accepted batch to a [`Journal`] before
//! any reader can see it, and the journal's sequence number is the consistency token.
//!
//! The write-ahead log of the `persist` layer plugs in here: `persist::durable::Log`
//! implements [`Journal`] (its `append` returns once the record is durable, group
//! commit inside); `delegraph serve --data-dir` uses it. [`MemoryJournal`] only counts,
//! which is what the tests and `serve` without a data directory use.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::Event;
use crate::world::World;

/// A journal that could not take a record.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal could not write: {0}")]
    Io(#[from] std::io::Error),
    #[error("the journal refused the record: {0}")]
    Refused(String),
}

/// An ordered, durable record of accepted event batches.
///
/// The service calls `append` and `reset` one at a time, in commit order, only for
/// batches the world has accepted (applied to the sequencer's pending state); a refused batch never
/// reaches the journal. Recovery is "replay every record after the last reset in order",
/// which reproduces the world because applying a batch is deterministic.
pub trait Journal: Send + Sync {
    /// Makes `events` durable as one record; returns its sequence number, which is
    /// greater than every number returned before.
    fn append(&self, events: &[Event]) -> Result<u64, JournalError>;
    /// Records that the world was emptied (the admin reset), so that recovery does not
    /// replay what came before; returns the record's sequence number.
    fn reset(&self) -> Result<u64, JournalError>;
    /// The sequence number of the last durable record (0 when there is none).
    fn position(&self) -> u64;
    /// Makes everything appended so far durable (graceful shutdown).
    fn flush(&self) -> Result<(), JournalError>;
    /// Queues `events` as the next record without waiting for it to be durable; returns
    /// its sequence number. The caller then waits with [`Journal::wait_durable`].
    fn enqueue(&self, events: &[Event]) -> Result<u64, JournalError> {
        self.append(events)
    }
    /// Waits until record `seq` (and every one before it) is durable.
    fn wait_durable(&self, _seq: u64) -> Result<(), JournalError> {
        Ok(())
    }
    /// The sequence number of the last record known durable.
    fn durable_position(&self) -> u64 {
        self.position()
    }
    /// Makes the records up to `seq`, the last queued, durable and closes the log's
    /// current part, so that a checkpoint at `seq` can later retire the parts before it.
    /// Called with the sequencer held (nothing is queued meanwhile).
    fn seal(&self, _seq: u64) -> Result<(), JournalError> {
        Ok(())
    }
    /// After [`Journal::seal`] at `seq`: writes `world`, which holds exactly the records up to `seq`, as a
    /// checkpoint so that recovery need not replay them; returns its sequence number, or
    /// None when the journal keeps no checkpoints.
    fn checkpoint(&self, _world: &World, _seq: u64) -> Result<Option<u64>, JournalError> {
        Ok(None)
    }
}

/// A journal that keeps nothing but the sequence counter: durability is "none", and
/// tokens are still monotonic within one process.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    seq: AtomicU64,
    /// Events appended in total, for tests that assert a refusal wrote nothing.
    events: AtomicU64,
    /// When set, every append fails (to test that a journal failure changes nothing).
    failing: AtomicBool,
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
}

impl Journal for MemoryJournal {
    fn append(&self, events: &[Event]) -> Result<u64, JournalError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(JournalError::Refused("the test journal is set to fail".into()));
        }
        self.events.fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(self.seq.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn reset(&self) -> Result<u64, JournalError> {
        Ok(self.seq.fetch_add(1, Ordering::SeqCst) + 1)
    }

    fn position(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    fn flush(&self) -> Result<(), JournalError> {
        Ok(())
    }
}
