//! The durability seam: the service writes every accepted batch to a [`Journal`] before
//! any reader can see it, and the journal's sequence number is the consistency token.
//!
//! The write-ahead log of the `persist` layer plugs in here by implementing [`Journal`]
//! (its `append` returns once the record is durable, group commit inside). Until then
//! [`MemoryJournal`] only counts, which is what the tests and `serve` without a data
//! directory use.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::Event;

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
/// batches the world has accepted (validated by a dry run); a refused batch never
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
