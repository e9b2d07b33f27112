//! The janitor: a low-priority thread of the store that drops the versions a publish
//! evicted from the ring, so that freeing their copies of the overlay's paths is not
//! paid by the HTTP worker that answers a writer (or by whoever publishes).
//!
//! Why a thread of its own: dropping an evicted version walks and frees the nodes only it
//! held (`drop_in_place<World>`, a few per cent of a write-only server's CPU). Until this
//! was measured it was handed with the answer to the last writer of a group, whose worker
//! dropped it before it could serve its next request — on the path readers queue behind.
//! Here it runs at a lower priority ([`crate::background::NICE`] steps, not `SCHED_IDLE`:
//! under a load that never pauses an idle-class thread would not run at all, and the
//! garbage would only go back to the writers), in the batch class like the rest of the
//! write pipeline ([`crate::background::no_wake_preemption`]).
//!
//! It cannot hold memory without bound: the queue takes at most [`CAPACITY`] items;
//! past that, [`Janitor::take`] gives the item back and the caller drops it where it
//! did before. It wakes at most once per [`NAP`] (a send to a sleeping janitor wakes
//! it; the sends during its nap only queue), so a group of writers costs no thread
//! wake-up of its own.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// The most items waiting to be dropped; a full queue refuses more.
pub const CAPACITY: usize = 256;

/// How long the janitor waits after it is woken before it drops what came: the items
/// sent meanwhile join the same turn without a wake-up of their own.
pub const NAP: Duration = Duration::from_millis(1);

/// The queue between whoever publishes and the janitor thread.
pub struct Janitor<T> {
    state: Mutex<State<T>>,
    work: Condvar,
}

struct State<T> {
    // INVARIANT: at most `CAPACITY` items.
    items: Vec<T>,
    /// The janitor waits on `work` (a send must wake it).
    asleep: bool,
    stopping: bool,
}

impl<T: Send + 'static> Janitor<T> {
    /// A janitor and its thread (named `janitor`), or the reason the thread could not
    /// start.
    pub fn start() -> std::io::Result<(Arc<Janitor<T>>, std::thread::JoinHandle<()>)> {
        let j = Arc::new(Janitor {
            state: Mutex::new(State {
                items: Vec::with_capacity(CAPACITY),
                asleep: false,
                stopping: false,
            }),
            work: Condvar::new(),
        });
        let run = j.clone();
        let h = std::thread::Builder::new()
            .name("janitor".into())
            .spawn(move || run.run())?;
        Ok((j, h))
    }

    /// Queues `item` to be dropped on the janitor's thread; gives it back when the queue
    /// is full or the janitor stopped (the caller drops it itself).
    pub fn take(&self, item: T) -> Result<(), T> {
        let mut s = self.state.lock();
        if s.stopping || s.items.len() >= CAPACITY {
            return Err(item);
        }
        s.items.push(item);
        if s.asleep {
            s.asleep = false;
            drop(s);
            self.work.notify_one();
        }
        Ok(())
    }

    /// Drops what is queued and stops the thread once it has (the store is dropped).
    pub fn stop(&self) {
        self.state.lock().stopping = true;
        self.work.notify_one();
    }

    fn run(&self) {
        // Not `SCHED_IDLE`: see the module doc.
        crate::background::lower_nice();
        crate::background::no_wake_preemption();
        loop {
            {
                let mut s = self.state.lock();
                while s.items.is_empty() && !s.stopping {
                    s.asleep = true;
                    self.work.wait(&mut s);
                }
                if s.items.is_empty() {
                    return;
                }
            }
            std::thread::sleep(NAP);
            // Swapped for an empty vector of the same capacity, so that no send
            // allocates; the items are dropped here, outside the lock.
            let items = std::mem::replace(&mut self.state.lock().items, Vec::with_capacity(CAPACITY));
            drop(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_full_janitor_gives_the_item_back_and_a_stopped_one_drops_everything() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let j: Janitor<Counted> = Janitor {
            state: Mutex::new(State {
                items: Vec::new(),
                asleep: false,
                stopping: false,
            }),
            work: Condvar::new(),
        };
        for _ in 0..CAPACITY {
            assert!(j.take(Counted(dropped.clone())).is_ok());
        }
        let back = j.take(Counted(dropped.clone()));
        assert!(back.is_err(), "the queue is bounded");
        drop(back);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        j.stop();
        j.run();
        assert_eq!(dropped.load(Ordering::SeqCst), CAPACITY + 1);
        assert!(
            j.take(Counted(dropped.clone())).is_err(),
            "a stopped janitor takes nothing"
        );
    }

    #[test]
    fn the_janitor_thread_drops_what_it_is_given() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let Ok((j, h)) = Janitor::start() else {
            return;
        };
        for _ in 0..10 {
            assert!(j.take(Counted(dropped.clone())).is_ok());
        }
        j.stop();
        let _ = h.join();
        assert_eq!(dropped.load(Ordering::SeqCst), 10);
    }
}
