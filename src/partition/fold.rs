//! Background compaction of one part: the fold of its delta into a new base, on a thread
//! of its own in the idle class.
//!
//! Why the idle class: a fold copies the whole part (26–48 ms for a part of the medium
//! world, in proportion to its size), and freeing the old base costs a third of that. At any
//! other priority that work shares a core with the HTTP worker kept to it (`serve
//! --pin-workers`): beside a burst of distinct grants, with folds every fraction of a
//! second, readers' p99.9 went from ≈ 0.3 ms to 4–9 ms, at normal priority as at nice 10
//! (the batch class runs its slice to the end whoever wakes). In the idle class a waking
//! reader preempts the fold at once. (The old base is freed by whoever drops the last
//! version that shares it, usually the janitor: freeing it in the idle class too, on
//! the fold's thread, made no difference that could be measured.)
//!
//! The cost of the idle class is that a load which never leaves a core free starves the
//! fold. The delta bound is kept anyway: the sequencer compacts a part past the bound
//! itself, before publishing (writers wait, readers do not). Before that, once a part's
//! delta passes [`HURRY`] of the bound while its fold is starved, the sequencer moves the
//! fold's thread into the write pipeline's class (`SCHED_BATCH` at the process's nice):
//! it then gets a normal share of the CPU, like the writes that fill the delta.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::graph::PartBase;

use super::Version;

/// The fraction of the delta bound (in quarters) past which a starved fold is moved into
/// the write pipeline's class.
pub const HURRY: usize = 3;

/// The fold of one part in flight: its thread (Linux thread id, 0 until known or once
/// its fold is over) and whether it was moved out of the idle class.
#[derive(Debug, Default)]
pub struct Folder {
    tid: AtomicI32,
    hurried: AtomicBool,
}

impl Folder {
    /// Moves the fold in flight, if any and not already moved, into the write pipeline's
    /// class. True if it did.
    pub fn hurry(&self) -> bool {
        let tid = self.tid.load(Ordering::SeqCst);
        if tid == 0 || self.hurried.swap(true, Ordering::SeqCst) {
            return false;
        }
        crate::background::join_write_pipeline(tid);
        true
    }

    /// Whether the fold in flight was moved out of the idle class.
    pub fn was_hurried(&self) -> bool {
        self.hurried.load(Ordering::SeqCst)
    }
}

/// Starts the fold of part `part` of version `v` on a thread of its own (named
/// `compact-{part}`); `done` gets the new base (None: the fold failed) in the write
/// pipeline's class, so that a lock it takes is not held by an idle-class thread. False
/// if the thread could not start (`done` is not called).
pub fn spawn<F>(v: Arc<Version>, part: usize, folder: Arc<Folder>, done: F) -> bool
where
    F: FnOnce(Option<PartBase>) + Send + 'static,
{
    std::thread::Builder::new()
        .name(format!("compact-{part}"))
        .spawn(move || {
            crate::background::lower_priority();
            folder.hurried.store(false, Ordering::SeqCst);
            folder.tid.store(crate::background::thread_id(), Ordering::SeqCst);
            let base = v.world.graph.compacted_part(part);
            drop(v);
            // Leave the idle class before `done` (it may take the sequencer's lock); a
            // `hurry` from now on has nothing to do.
            if folder.tid.swap(0, Ordering::SeqCst) != 0 && !folder.was_hurried() {
                crate::background::join_write_pipeline(crate::background::thread_id());
            }
            done(base);
        })
        .is_ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// The scheduling class of the calling thread.
    fn my_class() -> i32 {
        // SAFETY: no preconditions; 0 names the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn hurry_moves_a_starved_fold_into_the_batch_class_once() {
        let folder = Arc::new(Folder::default());
        assert!(!folder.hurry(), "no fold in flight: nothing to move");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let f = folder.clone();
        let fold = std::thread::spawn(move || {
            crate::background::lower_priority();
            let idle = my_class();
            f.tid.store(crate::background::thread_id(), Ordering::SeqCst);
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            (idle, my_class())
        });
        ready.recv().unwrap();
        assert!(folder.hurry());
        assert!(!folder.hurry(), "moved once");
        go.send(()).unwrap();
        let (before, after) = fold.join().unwrap();
        assert_eq!((before, after), (libc::SCHED_IDLE, libc::SCHED_BATCH));
    }

    #[test]
    fn a_fold_hands_its_base_on_outside_the_idle_class() {
        let mut w = crate::world::World::with_partitions(2);
        let ev = |v: serde_json::Value| crate::event::Event::from_json(v).unwrap();
        crate::mutate::apply(
            &mut w,
            &ev(serde_json::json!({"party": {"id": "a", "kind": "person"}})),
        )
        .unwrap();
        let keep = w.clone();
        crate::mutate::apply(
            &mut w,
            &ev(serde_json::json!({"party": {"id": "b", "kind": "person"}})),
        )
        .unwrap();
        let part = crate::graph::partition_of("b", 2);
        assert!(w.graph.part_delta_len(part) > 0);
        let v = Arc::new(Version { token: 2, world: w });
        let (tx, rx) = std::sync::mpsc::channel();
        let folder = Arc::new(Folder::default());
        assert!(spawn(v, part, folder.clone(), move |base| {
            let _ = tx.send((base.map(|b| b.index()), my_class()));
        }));
        let (base, class) = rx.recv().unwrap();
        assert_eq!(base, Some(part));
        assert_eq!(class, libc::SCHED_BATCH);
        assert!(!folder.hurry(), "the fold is over");
        drop(keep);
    }
}
