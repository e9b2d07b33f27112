//! Background compaction of one part: the fold of its delta into a new base, on a thread
//! of its own in the idle class.
//!
//! Why the idle class: a fold copies the whole part (26–48 ms for a part of the medium
//! world, in proportion to its size), and freeing the old base costs a third of that. At
//! any other priority that work shares a core with the HTTP worker kept to it (`serve
//! --pin-workers`): beside a burst of distinct grants, with folds every fraction of a
//! second, readers' p99.9 went from ≈ 0.3 ms to 4–9 ms, at normal priority as at nice 10
//! (the batch class runs its slice to the end whoever wakes). In the idle class a waking
//! reader preempts the fold at once. (The old base is freed by whoever drops the last
//! version that shares it, usually the janitor: freeing it in the idle class too, on
//! the fold's thread, made no difference that could be measured.)
//!
//! The fold's thread takes none of the store's locks, and it hands the new base over a
//! channel: the install, which takes the sequencer's lock, runs on the receiving side
//! (the partition actor's thread, or a thread of the store in the batch class), never on
//! an idle-class thread that readers keep preempting. (It does allocate: a fold
//! preempted inside the allocator holds that arena's lock until it runs again. Not seen
//! in the measurements; glibc gives each thread its own arena when it can.)
//!
//! The cost of the idle class is that a load which never leaves a core free starves the
//! fold. The delta bound is kept anyway: the sequencer compacts a part past the bound
//! itself, before publishing (writers wait, readers do not). Before that, once a part's
//! delta passes [`HURRY`] quarters of the bound while its fold is in flight, the
//! sequencer moves the fold's thread into the write pipeline's class (`SCHED_BATCH` at
//! the process's nice), where it gets a normal share of the CPU, like the writes that
//! fill the delta. Leaving the idle class needs `CAP_SYS_NICE` (or a `RLIMIT_NICE` that
//! allows the process's nice value): without it the move is refused, a warning says so
//! once, and on a server whose readers never leave a core free the compactions are made
//! by the writers at the bound (`delegraph_partition_writer_compactions_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::graph::{PartBase, PartState};

/// The delta, in quarters of the bound, past which a fold in flight is moved into the
/// write pipeline's class.
pub const HURRY: usize = 3;

/// The fold in flight of one part, if any: its thread, for [`Folder::hurry`].
#[derive(Debug, Default)]
pub struct Folder {
    /// INVARIANT: `tid` is the fold's thread while that thread runs, else 0; the thread
    /// sets it and clears it (also on a panic) under this lock, so a hurry, which holds
    /// the lock while it acts, never acts on a thread that has ended.
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    tid: i32,
    hurried: bool,
}

impl Folder {
    /// Moves the fold in flight, if any and not moved yet, into the write pipeline's
    /// class; true if the kernel moved it. Never waits: when the fold's thread is just
    /// starting or ending (it holds the lock), nothing happens and the next pass asks
    /// again.
    pub fn hurry(&self) -> bool {
        let Some(mut s) = self.state.try_lock() else {
            return false;
        };
        if s.tid == 0 || s.hurried {
            return false;
        }
        s.hurried = true;
        let moved = crate::background::join_write_pipeline(s.tid);
        if !moved && !REFUSED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a compaction that writers will soon wait for cannot leave the idle class: the process \
                 lacks CAP_SYS_NICE (or a RLIMIT_NICE for its nice value); on a server whose readers \
                 keep every core busy, the writers then make the compactions themselves"
            );
        }
        moved
    }
}

/// Whether a hurry was refused already (the warning is given once).
static REFUSED: AtomicBool = AtomicBool::new(false);

/// The fold's thread registered in its [`Folder`]; dropping it (the fold returned, or
/// unwinds) clears the registration if it is still this thread's.
struct Registered<'a>(&'a Folder, i32);

impl Registered<'_> {
    fn new(folder: &Folder) -> Registered<'_> {
        let tid = crate::background::thread_id();
        *folder.state.lock() = State { tid, hurried: false };
        Registered(folder, tid)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        if s.tid == self.1 {
            *s = State::default();
        }
    }
}

/// Starts the fold of part `from` (a part as a published version holds it) on a thread
/// of its own (named `compact-{part}`) in the idle class; the new base comes on the
/// channel (None: the fold failed; a closed channel: it panicked). None if the thread
/// could not start.
pub fn spawn(from: PartState, folder: Arc<Folder>) -> Option<oneshot::Receiver<Option<PartBase>>> {
    spawn_with(from.index(), folder, move || from.compacted())
}

/// [`spawn`] with the fold given (the part it reads goes with it, dropped when it
/// returns).
fn spawn_with<F>(part: usize, folder: Arc<Folder>, fold: F) -> Option<oneshot::Receiver<Option<PartBase>>>
where
    F: FnOnce() -> Option<PartBase> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("compact-{part}"))
        .spawn(move || {
            crate::background::lower_priority();
            // Unregistered before the base is sent: once it is, the part's next fold
            // may start and register, and this thread must not clear that.
            let base = {
                let _registered = Registered::new(&folder);
                fold()
            };
            let _ = tx.send(base);
        })
        .ok()?;
    Some(rx)
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

    /// Whether this process may move a thread out of the idle class (root, or
    /// `CAP_SYS_NICE`): a thread of its own tries.
    fn may_leave_idle() -> bool {
        std::thread::spawn(|| {
            crate::background::lower_priority();
            crate::background::join_write_pipeline(crate::background::thread_id())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn a_fold_runs_in_the_idle_class_and_a_hurry_moves_it_once_where_allowed() {
        let folder = Arc::new(Folder::default());
        assert!(!folder.hurry(), "no fold in flight: nothing to move");
        let (inside_tx, inside) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let rx = spawn_with(0, folder.clone(), move || {
            inside_tx.send(my_class()).unwrap();
            go_rx.recv().unwrap();
            inside_tx.send(my_class()).unwrap();
            None
        })
        .unwrap();
        assert_eq!(inside.recv().unwrap(), libc::SCHED_IDLE, "the fold starts idle");
        let moved = folder.hurry();
        assert_eq!(moved, may_leave_idle());
        assert!(!folder.hurry(), "moved once");
        go.send(()).unwrap();
        let after = inside.recv().unwrap();
        let want = if moved {
            libc::SCHED_BATCH
        } else {
            libc::SCHED_IDLE
        };
        assert_eq!(after, want);
        assert!(rx.blocking_recv().unwrap().is_none());
    }

    /// A fold is unregistered before its base arrives: the install may start the part's
    /// next fold at once, and the ending thread must not clear that one's registration
    /// (a hurry would then find nothing to move).
    #[test]
    fn a_fold_is_unregistered_before_its_base_arrives() {
        let folder = Arc::new(Folder::default());
        for round in 0..50 {
            let rx = spawn_with(0, folder.clone(), || None).unwrap();
            assert!(rx.blocking_recv().unwrap().is_none());
            assert_eq!(folder.state.lock().tid, 0, "round {round}: still registered");
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let (go, go_rx) = std::sync::mpsc::channel::<()>();
            let next = spawn_with(0, folder.clone(), move || {
                tid_tx.send(crate::background::thread_id()).unwrap();
                go_rx.recv().unwrap();
                None
            })
            .unwrap();
            let tid = tid_rx.recv().unwrap();
            assert_eq!(
                folder.state.lock().tid,
                tid,
                "round {round}: the next fold is registered"
            );
            go.send(()).unwrap();
            assert!(next.blocking_recv().unwrap().is_none());
        }
    }

    #[test]
    fn a_fold_hands_its_base_on_and_a_panicking_one_closes_its_channel() {
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
        let from = w.graph.part_state(part).unwrap();
        drop(w);
        let folder = Arc::new(Folder::default());
        let base = spawn(from, folder.clone()).unwrap().blocking_recv().unwrap();
        assert_eq!(base.map(|b| b.index()), Some(part));
        drop(keep);
        // A fold that panics: no base, the channel closes, the thread is unregistered.
        let rx = spawn_with(part, folder.clone(), || panic!("an engine bug")).unwrap();
        assert!(rx.blocking_recv().is_err());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while folder.state.lock().tid != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(folder.state.lock().tid, 0);
    }
}
