//! The store: immutable published versions that readers pin without a lock, one
//! sequencer that applies each batch once, and a configurable number of actix actors
//! (partitions) that keep their parts of the graph compacted.
//!
//! # Design
//!
//! * **Versions.** Readers load the current [`Version`] (token + world) from an
//!   `ArcSwap` ([`Store::read`], [`Store::pin`]) on whatever actix-web worker thread the
//!   request landed on, and never take a lock a writer, a simulation, a report or a
//!   checkpoint holds. A world clone is O(1) (`graph` is a frozen base plus a persistent
//!   delta; `sys` and `pdp` are shared until changed), so each commit publishes a new
//!   version and the old one stays readable as long as someone holds it. The last
//!   [`RING`] versions serve exact-token reads ([`Store::read_at`], `at_token`). The
//!   world's graph is P parts (`serve --partitions`; `graph` says what lives where),
//!   each a frozen petgraph base plus a persistent delta, so a version is the token and
//!   one pinned snapshot per part (and the global state).
//! * **Compaction, per part.** When a published version has a part whose delta passes
//!   half of its bound ([`Store::part_bound`]: the larger of [`DELTA_BOUND`] and an
//!   eighth of the part's base, or the one set), that part's actor
//!   (part `i` belongs to actor `i % N`) folds it into a new base on a thread of its own
//!   in the idle class (`fold`: readers keep their cores; a starved fold leaves the idle
//!   class when the delta passes ¾ of the bound) —
//!   no lock held, its mailbox still taking messages, readers on their pinned versions —
//!   and hands the base to the sequencer, which moves the pending part's later changes
//!   onto it under its lock (O(delta)). Without running actors (the CLI's durable store,
//!   tests) a thread does the same. No version is published with a part past the bound:
//!   if the background falls behind, the sequencer compacts that part at the end of its
//!   pass before making the pass's version. `/metrics` reports every part's delta, the
//!   bound and the compactions (and those a writer waited for).
//! * **Checkpoints, per part.** [`Store::checkpoint`] pins the published version and
//!   plans its snapshot; each actor encodes the sections of the parts it owns
//!   ([`WriteSections`], on a low-priority thread of its own, the mailbox still taking
//!   writes) while the checkpoint encodes the global section; the journal writes the
//!   file and reads it back section by section.
//! * **Partitions.** Every party id hashes (FNV-1a, stable across runs) to one of `N`
//!   parts of the graph, each compacted by its partition actor (part `i` by actor
//!   `i % N`, each on its own arbiter thread).
//! * **Writes are staged where they arrive.** [`Partitions::submit`] (the HTTP write
//!   routes) hands the batch straight to the sequencer's queue from the request's own
//!   task and awaits its ticket. The queue is one total order of every batch, so two
//!   writes naming the same party are applied in the order they were staged (the
//!   per-party FIFO the partition mailboxes used to give, and more). The actors were
//!   the sequencer's front until this was measured: a hop through one or two mailboxes
//!   (a batch naming parties of two partitions parked the lower one first) cost two to
//!   four thread wake-ups per write on a 2-core server and ordered nothing the queue
//!   does not (BENCHMARKS.md, "HTTP writes against checks").
//! * **The sequencer** is a thread of the store. [`Store::stage`] hands it a batch and
//!   returns a [`Ticket`] at once; each pass of the sequencer takes every batch staged
//!   since the last one and applies them one after another, in staging order, on the
//!   pending state (an overlay nobody else sees), each once and all or nothing: a
//!   refusal is undone by the batch's undo log, a panic (or a record the journal does
//!   not take) rebuilds the overlay from the pass's start without that batch. Each
//!   accepted record is queued in the journal (no I/O) as it is applied, so log order is
//!   apply order; the pass then makes one version, hands it to the waiting passes and
//!   seals its records. **Publishing** happens once the journal has made a pass's
//!   records durable — one fsync for every record sealed meanwhile (group commit): the
//!   newest durable version is published with one swap and the pass's writers are
//!   answered; only those writers wake. With the write-ahead log this runs on the log's
//!   own flusher thread right after each `fdatasync` ([`Journal::on_durable`]: no
//!   thread of the store waits for the log, one thread wake-up less per group); a
//!   journal without a flusher of its own (the in-memory one) gets a **publisher**
//!   thread that waits for durability without any lock and does the same. Records
//!   become durable in order, so a version is published only when it and all before it
//!   are durable; a reader never sees a state the journal does not have. A write's
//!   token is its pass's version (the first that shows it), so a pass's writers share
//!   one token.
//! * **The janitor** is a low-priority thread of the store that drops the versions a
//!   publish evicted from the ring (`partition::janitor`): freeing their own copies of the
//!   overlay's paths is paid neither by whoever publishes nor by the HTTP worker that
//!   answers a writer. Its queue is bounded; when it is full, the last writer of the
//!   group drops them, as before the janitor.
//!
//! # Limits (honestly)
//!
//! * A cascade can reach any partition (ending a client relationship removes delegations
//!   homed at other parties), so batches are applied one at a time by the sequencer
//!   whatever `N` is: partitions give their own compaction, not parallel applies. The actors do not yet write or load
//!   their snapshot sections (a checkpoint encodes every section on all cores from the
//!   pinned version; a load fills the parts in parallel).
//! * The bound is kept by compacting before a publish when the background falls behind:
//!   under a write rate that outpaces compaction, the writers of that partition then
//!   wait for a fold of its part (O(part size)). The background fold runs in the idle
//!   class, so readers that keep every core busy starve it; moving it out of that class
//!   when the delta nears the bound needs `CAP_SYS_NICE` (`fold`), and without it those
//!   compactions are the writers'.
//! * A journal that fails after it queued a record leaves the outcome unknown: the
//!   writer gets [`CommitError::OutcomeUnknown`] (HTTP 503 `outcome_unknown`: read
//!   before retrying), and the store refuses further writes and fails readiness until
//!   the process restarts — recovery from the data directory then decides what the
//!   log holds (after a failed `fdatasync` nothing in this process can know it).
//! * A write whose HTTP request times out may still commit: the sequencer's queue
//!   already holds it. The answer is lost, the token is not; a client retries by reading.

mod fold;
mod janitor;
pub mod journal;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use crate::event::Event;
use crate::graph::{PartBase, PartState};
use crate::model::Error;
use crate::mutate::{self, Outcome};
use crate::persist::error::SnapshotError;
use crate::persist::snapshot::{DEFAULT_PARTITIONS, Encoded, Plan, SectionKind, encode_section};
use crate::world::World;
use janitor::Janitor;
use journal::{Journal, JournalError};

/// A batch the store has made durable and applied.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The consistency token: the version that first shows the batch (the last record
    /// of the sequencer's pass that applied it, so at least `seq`).
    pub token: u64,
    /// The batch's own record: its sequence number in the journal.
    pub seq: u64,
    pub outcome: Outcome,
}

/// Why a batch was not committed. In every case the world and the journal are unchanged,
/// except `OutcomeUnknown`.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The engine refused the batch (validation): nothing was written.
    #[error(transparent)]
    Refused(#[from] Error),
    /// The journal did not take the record: nothing was written or changed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The record was queued, then the journal failed before it was known durable: the
    /// batch may or may not survive (recovery decides). Read before retrying.
    #[error(
        "the outcome of this batch is unknown: the log failed while making record {token} durable ({reason}); it may or may not be committed once the service has restarted, so read the state before retrying"
    )]
    OutcomeUnknown { token: u64, reason: String },
    #[error("the store takes no writes until the service restarts: {0}")]
    Unhealthy(String),
    /// Applying the batch panicked (an engine bug): the copy it changed was dropped.
    #[error("applying the batch failed inside the engine; nothing was changed")]
    Panicked,
    /// A partition actor is gone (the server is shutting down).
    #[error("partition {0} is not running")]
    PartitionGone(usize),
}

/// Why a read could not be answered at the freshness it asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StaleRead {
    #[error("consistency token `{token}` is ahead of the log, whose position is {position}")]
    Ahead { token: u64, position: u64 },
    #[error("the state at consistency token `{token}` did not become visible within {waited_ms} ms")]
    NotYet { token: u64, waited_ms: u128 },
    #[error("the state at consistency token `{token}` is no longer kept; the oldest kept is {oldest}")]
    Gone { token: u64, oldest: u64 },
}

/// An immutable state of the world, as readers see it: the world after every record up
/// to `token`. Published whole with an atomic pointer swap; a reader that holds one keeps
/// reading it however many commits follow.
#[derive(Debug)]
pub struct Version {
    pub token: u64,
    pub world: World,
}

/// How many recent versions stay available for exact-token reads (`at_token`).
pub const RING: usize = 64;

/// The least bound on each part's delta (nodes and edges changed since its base) when
/// none is set: a part whose published delta passes half of its bound is compacted in the
/// background by its partition actor, and no version is published with a part past it.
/// A part whose base holds more than [`BASE_SHARE`] × this many nodes and edges gets a
/// bound of that share of its base ([`Store::part_bound`]).
pub const DELTA_BOUND: usize = 100_000;

/// Without a set bound, a part's delta may grow to this fraction (1 / `BASE_SHARE`) of its
/// base. Why: a fold copies the whole part, so with a fixed bound a national world's
/// part (millions of nodes and edges, seconds per fold) would be folded every 50 000
/// changes — more often than an idle-class fold can finish under a steady stream of
/// writes, so the sequencer would fold it itself and stall every writer for seconds.
/// With the bound a share of the base, a fold's cost per change stays level as the
/// world grows, and the delta's memory stays a small share of the part's (an eighth of
/// its entries at most). Reads pay one more level of the delta's trees, at most.
pub const BASE_SHARE: usize = 8;

/// The sequencer's state: the newest applied state (possibly not yet durable).
struct Pending {
    world: World,
    token: u64,
}

/// The answer to a batch handed to the sequencer ([`Store::stage`]): committed (durable
/// and published), or why not. Wait for it on a thread ([`Ticket::wait`]) or await it;
/// either way only this writer is woken when it is ready.
#[must_use]
pub struct Ticket {
    reply: Arc<Reply>,
    /// The batch, held until the ticket is dropped so that its memory is freed on the
    /// thread that allocated it (the writer's), not on the sequencer's: glibc's malloc
    /// pays for every block freed on another thread (into the writer's arena, under its
    /// lock, then consolidated on the writer's next allocations).
    _events: Option<Arc<Vec<Event>>>,
}

/// One writer's answer slot: filled once by the sequencer (a refusal) or by whoever
/// publishes (durable and published, or the outcome unknown): the log's flusher, or the
/// publisher thread.
struct Reply {
    state: Mutex<ReplyState>,
    ready: Condvar,
}

enum ReplyState {
    /// Not answered yet; the waker of an awaiting task.
    Waiting(Option<Waker>),
    /// The answer, and old versions for the writer to drop: only when the janitor's
    /// queue is full (or it has no thread), so that whoever publishes never frees a
    /// version's own copies of the overlay's paths itself.
    Done(Result<Committed, CommitError>, Option<Garbage>),
    Taken,
}

/// Something whose drop frees memory: the ring before a publish, holding the versions
/// it evicted. Dropped by the janitor ([`janitor`]), or by a writer when its queue is
/// full.
type Garbage = Arc<VecDeque<Arc<Version>>>;

impl Ticket {
    fn new() -> (Ticket, Answer) {
        let r = Arc::new(Reply {
            state: Mutex::new(ReplyState::Waiting(None)),
            ready: Condvar::new(),
        });
        (
            Ticket {
                reply: r.clone(),
                _events: None,
            },
            Answer(Some(r)),
        )
    }

    /// A ticket answered already.
    fn done(r: Result<Committed, CommitError>) -> Ticket {
        let (t, a) = Ticket::new();
        a.send(r);
        t
    }

    /// Blocks this thread until the batch is answered.
    pub fn wait(self) -> Result<Committed, CommitError> {
        let mut s = self.reply.state.lock();
        loop {
            match std::mem::replace(&mut *s, ReplyState::Taken) {
                ReplyState::Done(r, garbage) => {
                    drop(s);
                    drop(garbage);
                    return r;
                }
                ReplyState::Taken => return Err(answered_twice()),
                w @ ReplyState::Waiting(_) => {
                    *s = w;
                    self.reply.ready.wait(&mut s);
                }
            }
        }
    }
}

fn answered_twice() -> CommitError {
    CommitError::OutcomeUnknown {
        token: 0,
        reason: "the answer was already taken".into(),
    }
}

impl Future for Ticket {
    type Output = Result<Committed, CommitError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut s = self.reply.state.lock();
        match std::mem::replace(&mut *s, ReplyState::Taken) {
            ReplyState::Done(r, garbage) => {
                drop(s);
                drop(garbage);
                Poll::Ready(r)
            }
            ReplyState::Taken => Poll::Ready(Err(answered_twice())),
            ReplyState::Waiting(_) => {
                *s = ReplyState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

/// The sending half of a [`Ticket`]. Dropped unanswered (a thread of the store stopped
/// before it answered), it answers "outcome unknown".
struct Answer(Option<Arc<Reply>>);

impl Answer {
    fn send(self, r: Result<Committed, CommitError>) {
        self.send_with(r, None);
    }

    /// Answers, handing the writer `garbage` to drop.
    fn send_with(mut self, r: Result<Committed, CommitError>, garbage: Option<Garbage>) {
        if let Some(reply) = self.0.take() {
            let waker = {
                let mut s = reply.state.lock();
                let w = match std::mem::replace(&mut *s, ReplyState::Done(r, garbage)) {
                    ReplyState::Waiting(w) => w,
                    _ => None,
                };
                reply.ready.notify_one();
                w
            };
            // Before the wake, so that the writer, not this thread, frees the slot.
            drop(reply);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.0.is_some() {
            let a = Answer(self.0.take());
            a.send(Err(CommitError::OutcomeUnknown {
                token: 0,
                reason: "the store stopped before it answered this batch".into(),
            }));
        }
    }
}

/// A batch waiting for the sequencer.
struct Request {
    events: Arc<Vec<Event>>,
    answer: Answer,
}

/// A batch the sequencer applied and queued in the journal.
struct Accepted {
    events: Arc<Vec<Event>>,
    token: u64,
    digest: u64,
    outcome: Outcome,
    answer: Answer,
}

/// What one pass of the sequencer applied: one version for all its batches, and their
/// writers, answered once the journal has made the version's record durable.
struct Group {
    version: Arc<Version>,
    /// Each writer's record, outcome and answer.
    writers: Vec<(u64, Outcome, Answer)>,
}

/// A queue that one worker thread of the store drains.
struct Queue<T> {
    items: Mutex<QueueState<T>>,
    work: Condvar,
}

struct QueueState<T> {
    items: Vec<T>,
    shutdown: bool,
}

impl<T> Queue<T> {
    fn new() -> Queue<T> {
        Queue {
            items: Mutex::new(QueueState {
                items: Vec::new(),
                shutdown: false,
            }),
            work: Condvar::new(),
        }
    }

    fn push(&self, item: T) {
        self.items.lock().items.push(item);
        self.work.notify_one();
    }

    /// Everything queued, waiting for something, into `buf` (empty), which it swaps
    /// with the queue's: two buffers go back and forth and neither is freed (memory the
    /// writers' threads allocated is not freed on the thread that drains, see
    /// [`Ticket`]). False once shut down and empty.
    fn take_into(&self, buf: &mut Vec<T>) -> bool {
        let mut q = self.items.lock();
        while q.items.is_empty() && !q.shutdown {
            self.work.wait(&mut q);
        }
        std::mem::swap(&mut q.items, buf);
        !buf.is_empty()
    }

    /// What is queued now, without waiting.
    fn drain(&self) -> Vec<T> {
        std::mem::take(&mut self.items.lock().items)
    }

    /// The items queued now up to the first for which `keep` is false (not waiting).
    fn take_prefix(&self, keep: impl Fn(&T) -> bool) -> Vec<T> {
        let mut q = self.items.lock();
        let n = q.items.iter().take_while(|x| keep(x)).count();
        if n == q.items.len() {
            return std::mem::take(&mut q.items);
        }
        q.items.drain(..n).collect()
    }

    /// Waits until something is queued (without taking it); false once shut down and
    /// empty.
    fn wait_any(&self) -> bool {
        let mut q = self.items.lock();
        while q.items.is_empty() && !q.shutdown {
            self.work.wait(&mut q);
        }
        !q.items.is_empty()
    }

    /// Applies `f` to the newest item queued, if any.
    fn newest<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.items.lock().items.last().map(f)
    }

    fn shut_down(&self) {
        self.items.lock().shutdown = true;
        self.work.notify_all();
    }
}

/// The published versions, the sequencer and the journal.
///
/// * **Readers** ([`Store::read`], [`Store::pin`]) load the current [`Version`] from an
///   `ArcSwap`: no lock, whatever a writer, a simulation, a report or a checkpoint does.
/// * **The sequencer** (a thread of the store) takes every batch handed to it
///   ([`Store::stage`]) since its last pass and applies them one after another, in the
///   order they came, on one private overlay of the pending state (each all or nothing:
///   a refusal is rolled back by the batch's undo log, a panic or a journal that does not
///   take the record rebuilds the overlay without it), queues each accepted record in
///   the journal, and makes one version of the pass.
/// * **Publishing**: once the journal has made a pass's records durable (one fsync for
///   every record sealed meanwhile), its version is published and its writers are
///   answered — on the log's flusher thread right after the fsync
///   ([`Journal::on_durable`]), or by a publisher thread of the store that waits for
///   durability when the journal has no flusher of its own.
pub struct Store {
    inner: Arc<Inner>,
    /// The sequencer (and the publisher, if there is one), stopped and joined on drop.
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The janitor's thread, stopped (after it dropped what it holds) and joined last.
    janitor_thread: Option<std::thread::JoinHandle<()>>,
    /// Test hook: while set, [`Store::exclusive`] parks before answering (to hold a
    /// simulation open on its pinned version).
    pause: Arc<(Mutex<(bool, usize)>, parking_lot::Condvar)>,
}

/// The state a [`Store`] shares with its sequencer, its publisher (if any) and the
/// journal's flusher.
struct Inner {
    // INVARIANT: `current` holds exactly the journal's records up to its token, all of
    // them durable; `seq.world` holds exactly the records queued so far. A version is
    // published only after its record is durable, and tokens only grow.
    current: ArcSwap<Version>,
    ring: ArcSwap<VecDeque<Arc<Version>>>,
    seq: Arc<Mutex<Pending>>,
    journal: Arc<dyn Journal>,
    /// The token of the newest published version (for `min_token` waits).
    visible: watch::Sender<u64>,
    healthy: AtomicBool,
    /// Serialises publishers (the flusher's hook or the publisher thread, and a reset),
    /// not readers.
    publishing: Mutex<()>,
    /// Batches handed to the sequencer, in arrival order.
    incoming: Queue<Request>,
    /// Passes applied and queued in the journal, not yet durable, in token order.
    waiting: Queue<Group>,
    /// Whether the journal's flusher answers the waiting passes itself
    /// ([`Journal::on_durable`]: no publisher thread), set before the sequencer starts.
    hooked: AtomicBool,
    /// Why the store stopped taking writes (set once, with `healthy` false).
    unhealthy: Mutex<Option<String>>,
    /// Per graph part: compaction in flight, compactions done.
    upkeep: Arc<Upkeep>,
    /// The bound set for every part (`serve --delta-bound`, tests), or 0: each part's
    /// from its base ([`Store::part_bound`]).
    delta_bound: AtomicUsize,
    /// The partition actors, while they run: part `i` is compacted by actor `i % n`.
    compactors: parking_lot::RwLock<Vec<Addr<Partition>>>,
    /// Test hook: the next apply panics after changing the overlay.
    fail_next_apply: AtomicBool,
    /// Sequencer passes that queued at least one record, and the batches they queued.
    passes: AtomicU64,
    batches: AtomicU64,
    /// Drops the versions a publish evicted, off the writers' workers (None: its thread
    /// did not start, and the writers drop them as before).
    janitor: Option<Arc<Janitor<Garbage>>>,
}

impl Store {
    /// A store over `world`, which must reflect the journal up to its position (a fresh
    /// world with a fresh journal, or what recovery rebuilt).
    pub fn new(world: World, journal: Arc<dyn Journal>) -> Store {
        let token = journal.position();
        let (janitor, janitor_thread) = match Janitor::start() {
            Ok((j, h)) => (Some(j), Some(h)),
            Err(e) => {
                tracing::warn!("no janitor thread ({e}): writers drop evicted versions themselves");
                (None, None)
            }
        };
        let parts = world.graph.partitions();
        let v = Arc::new(Version {
            token,
            world: world.clone(),
        });
        let (visible, _) = watch::channel(token);
        let inner = Arc::new(Inner {
            current: ArcSwap::new(v.clone()),
            ring: ArcSwap::from_pointee(VecDeque::from([v])),
            seq: Arc::new(Mutex::new(Pending { world, token })),
            journal,
            visible,
            healthy: AtomicBool::new(true),
            publishing: Mutex::new(()),
            incoming: Queue::new(),
            waiting: Queue::new(),
            hooked: AtomicBool::new(false),
            unhealthy: Mutex::new(None),
            upkeep: Arc::new(Upkeep {
                compacting: (0..parts).map(|_| AtomicBool::new(false)).collect(),
                done: (0..parts).map(|_| AtomicU64::new(0)).collect(),
                by_writer: (0..parts).map(|_| AtomicU64::new(0)).collect(),
                folders: (0..parts).map(|_| Arc::default()).collect(),
            }),
            delta_bound: AtomicUsize::new(0),
            compactors: parking_lot::RwLock::new(Vec::new()),
            fail_next_apply: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            janitor,
        });
        // A journal with a flusher of its own answers the writers right after each
        // group's sync, on that thread (one thread wake-up less per group); the log then
        // writes sealed records only, from the start, so that a pass is waiting before
        // any of its records can be durable.
        let weak = Arc::downgrade(&inner);
        let hooked = inner.journal.on_durable(Arc::new(move |failed| {
            if let Some(i) = weak.upgrade() {
                i.settle(failed);
            }
        }));
        if hooked {
            inner.hooked.store(true, Ordering::SeqCst);
            inner.journal.seal(token);
        }
        let mut workers = Vec::with_capacity(2);
        let spawn = |name: &str, f: fn(&Inner)| {
            let i = inner.clone();
            std::thread::Builder::new().name(name.into()).spawn(move || f(&i))
        };
        let threads: &[(&str, StoreThread)] = if hooked {
            &[("sequencer", sequencer)]
        } else {
            &[("sequencer", sequencer), ("publisher", publisher)]
        };
        for &(name, f) in threads {
            match spawn(name, f) {
                Ok(h) => workers.push(h),
                Err(e) => inner.fail(format!("cannot start the store's {name} thread: {e}")),
            }
        }
        Store {
            inner,
            workers,
            janitor_thread,
            pause: Arc::default(),
        }
    }

    /// The current version, pinned: it stays readable however many commits follow.
    pub fn pin(&self) -> Arc<Version> {
        self.inner.current.load_full()
    }

    /// The version with exactly this token, while it is among the last [`RING`].
    pub fn pin_at(&self, token: u64) -> Result<Arc<Version>, StaleRead> {
        let ring = self.inner.ring.load();
        if let Some(v) = ring.iter().find(|v| v.token == token) {
            return Ok(v.clone());
        }
        let newest = self.visible();
        if token > newest {
            return Err(StaleRead::Ahead {
                token,
                position: newest,
            });
        }
        Err(StaleRead::Gone {
            token,
            oldest: ring.front().map_or(newest, |v| v.token),
        })
    }

    /// Runs a read on the current version; also returns its token.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> (R, u64) {
        let v = self.pin();
        (f(&v.world), v.token)
    }

    /// Runs a read on the version with exactly this token (`at_token`).
    pub fn read_at<R>(&self, token: u64, f: impl FnOnce(&World) -> R) -> Result<(R, u64), StaleRead> {
        let v = self.pin_at(token)?;
        Ok((f(&v.world), v.token))
    }

    /// Runs `f` on a private copy of the current version (simulate: apply and roll
    /// back); nobody else sees what `f` does, and nobody waits for it.
    pub fn exclusive<R>(&self, f: impl FnOnce(&mut World) -> R) -> (R, u64) {
        self.exclusive_on(self.pin(), f)
    }

    /// [`Store::exclusive`] on a given (pinned) version.
    pub fn exclusive_on<R>(&self, v: Arc<Version>, f: impl FnOnce(&mut World) -> R) -> (R, u64) {
        let mut w = v.world.clone();
        {
            let (lock, cv) = &*self.pause;
            let mut paused = lock.lock();
            if paused.0 {
                paused.1 += 1;
                while paused.0 {
                    cv.wait(&mut paused);
                }
                paused.1 -= 1;
            }
        }
        (f(&mut w), v.token)
    }

    /// Holds (or releases) every later [`Store::exclusive`] before it answers (tests).
    #[doc(hidden)]
    pub fn set_pause(&self, on: bool) {
        let (lock, cv) = &*self.pause;
        lock.lock().0 = on;
        cv.notify_all();
    }

    /// How many [`Store::exclusive`] calls are held by the test pause.
    #[doc(hidden)]
    pub fn paused(&self) -> usize {
        self.pause.0.lock().1
    }

    /// Makes the next apply panic after it changed the overlay (tests).
    #[doc(hidden)]
    pub fn fail_next_apply(&self) {
        self.inner.fail_next_apply.store(true, Ordering::SeqCst);
    }

    /// The token of the newest visible state.
    pub fn visible(&self) -> u64 {
        *self.inner.visible.borrow()
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.inner.journal
    }

    /// False after the journal failed; readiness reports it. Healthy again means a
    /// restart: recovery from the data directory decides what the log holds.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    /// Why the store stopped taking writes (None while it is healthy).
    pub fn unhealthy_reason(&self) -> Option<String> {
        self.inner.unhealthy_reason()
    }

    /// Waits (at most `max_wait`) until the state at `token` is visible.
    pub async fn wait_visible(&self, token: u64, max_wait: Duration) -> Result<(), StaleRead> {
        if self.visible() >= token {
            return Ok(());
        }
        let position = self.inner.journal.position();
        if token > position {
            return Err(StaleRead::Ahead { token, position });
        }
        let mut rx = self.inner.visible.subscribe();
        match tokio::time::timeout(max_wait, rx.wait_for(|v| *v >= token)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StaleRead::NotYet {
                token,
                waited_ms: max_wait.as_millis(),
            }),
        }
    }

    /// Hands `events` (one batch, all or nothing) to the sequencer and returns at once;
    /// the [`Ticket`] answers once the batch is durable and published, or refused. The
    /// sequencer applies batches in the order they were staged.
    pub fn stage(&self, events: Arc<Vec<Event>>) -> Ticket {
        if let Some(reason) = self.unhealthy_reason() {
            return Ticket::done(Err(CommitError::Unhealthy(reason)));
        }
        let (mut ticket, answer) = Ticket::new();
        ticket._events = Some(events.clone());
        self.inner.incoming.push(Request { events, answer });
        ticket
    }

    /// Stages a batch and waits for its answer (blocks this thread).
    pub fn commit(&self, events: &[Event]) -> Result<Committed, CommitError> {
        self.stage(Arc::new(events.to_vec())).wait()
    }

    /// Sequencer passes that queued records, and the batches they queued (their ratio
    /// is the mean number of writers that share one version).
    pub fn pass_stats(&self) -> (u64, u64) {
        (
            self.inner.passes.load(Ordering::Relaxed),
            self.inner.batches.load(Ordering::Relaxed),
        )
    }

    /// Moves the pending state's part onto `base`, folded from `from` (that part in a
    /// published version; the last step of a compaction, under the sequencer's lock for
    /// O(delta)).
    fn install(&self, from: &PartState, base: Option<PartBase>) -> bool {
        install(&self.inner.seq, &self.inner.upkeep, from, base)
    }

    /// Folds the graph of published version `v` into new bases, part by part, and moves
    /// the pending state onto them (what the background compactions run); false if the
    /// pending state no longer shares `v`'s bases (another compaction came first).
    pub fn compact(&self, v: &Version) -> bool {
        let mut all = true;
        for from in (0..v.world.graph.partitions()).filter_map(|i| v.world.graph.part_state(i)) {
            if !self.inner.upkeep.start(from.index()) {
                all = false;
                continue;
            }
            let base = from.compacted();
            all &= install(&self.inner.seq, &self.inner.upkeep, &from, base);
        }
        all
    }

    /// The bound set for every part's delta, if one is (else each part's follows its
    /// base: [`Store::part_bound`]).
    pub fn delta_bound(&self) -> Option<usize> {
        match self.inner.delta_bound.load(Ordering::Relaxed) {
            0 => None,
            b => Some(b),
        }
    }

    /// Sets the bound on every part's delta (at least 2; tests use a small one).
    pub fn set_delta_bound(&self, bound: usize) {
        self.inner.delta_bound.store(bound.max(2), Ordering::Relaxed);
    }

    /// The bound on part `i`'s delta in `graph`: the one set ([`Store::set_delta_bound`]),
    /// else the larger of [`DELTA_BOUND`] and 1 / [`BASE_SHARE`] of the part's base.
    pub fn part_bound(&self, graph: &crate::graph::Graph, i: usize) -> usize {
        self.inner.part_bound(graph, i)
    }

    /// Per part of the published version's graph: the bound its delta is kept below.
    pub fn partition_bounds(&self) -> Vec<usize> {
        let v = self.pin();
        (0..v.world.graph.partitions())
            .map(|i| self.part_bound(&v.world.graph, i))
            .collect()
    }

    /// Per part of the published version's graph: the entries in its delta.
    pub fn partition_deltas(&self) -> Vec<usize> {
        let v = self.pin();
        (0..v.world.graph.partitions())
            .map(|i| v.world.graph.part_delta_len(i))
            .collect()
    }

    /// Per part: the compactions done so far (in the background or before a publish).
    pub fn compactions(&self) -> Vec<u64> {
        self.inner
            .upkeep
            .done
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect()
    }

    /// Per part: the compactions a writer waited for (made before a publish, because the
    /// background fold had not kept the delta below the bound); part of
    /// [`Store::compactions`].
    pub fn compactions_by_writer(&self) -> Vec<u64> {
        self.inner
            .upkeep
            .by_writer
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect()
    }

    /// The partition actors that compact the parts (empty: compactions run on threads).
    fn set_compactors(&self, actors: Vec<Addr<Partition>>) {
        *self.inner.compactors.write() = actors;
    }

    /// Empties the world (admin reset), recorded in the journal first.
    pub fn reset(&self) -> Result<u64, CommitError> {
        let mut p = self.inner.seq.lock();
        let token = self.inner.journal.reset()?;
        let parts = p.world.graph.partitions();
        p.world = World::with_partitions(parts);
        p.token = token;
        let _turn = self.inner.publishing.lock();
        self.inner.publish_all(&[Arc::new(Version {
            token,
            world: World::with_partitions(parts),
        })]);
        Ok(token)
    }

    /// Writes a checkpoint of the published version (pinned: durable by the store's
    /// invariant) through the journal. No lock is held: writers and readers go on while
    /// the snapshot is written. None when the journal keeps none.
    ///
    /// With partition actors running, each encodes the sections of the partitions whose
    /// parties live in its parts of the graph ([`WriteSections`]), while this thread
    /// plans the file and encodes the global section; the journal then writes the file
    /// and reads it back. Without actors (the CLI's durable store, shutdown after the
    /// actors stopped) the journal encodes every section itself.
    pub fn checkpoint(&self) -> Result<Option<u64>, JournalError> {
        let v = self.pin();
        let actors = self.inner.compactors.read().clone();
        if actors.is_empty() {
            return self.inner.journal.checkpoint(&v.world, v.token);
        }
        let parts = v.world.graph.partitions();
        let partitions = checkpoint_partitions(parts);
        let encode = |plan: &Arc<Plan>| -> Result<Vec<Encoded>, SnapshotError> {
            let mut replies = Vec::with_capacity(actors.len());
            for (a, addr) in actors.iter().enumerate() {
                // Partition j's parties all live in graph part j % parts (the part count
                // divides the partition count), which actor (j % parts) % N owns.
                let mine: Vec<u32> = (0..plan.partitions())
                    .filter(|j| (*j as usize % parts) % actors.len() == a)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let (tx, rx) = std::sync::mpsc::channel();
                addr.do_send(WriteSections {
                    version: v.clone(),
                    plan: plan.clone(),
                    partitions: mine,
                    reply: tx,
                });
                replies.push((a, rx));
            }
            let mut out = vec![encode_section(&v.world, plan, SectionKind::Global, 0)?];
            for (a, rx) in replies {
                let got = rx.recv().map_err(|_| {
                    SnapshotError::Encode(format!("partition {a} stopped before it encoded its sections"))
                })??;
                out.extend(got);
            }
            Ok(out)
        };
        self.inner
            .journal
            .checkpoint_by(&v.world, v.token, partitions, &encode)
    }

    /// Graceful shutdown, after the partitions stopped: makes the journal durable and,
    /// with `checkpoint`, writes a checkpoint so that the next start replays nothing.
    pub fn close(&self, checkpoint: bool) -> Result<(), JournalError> {
        self.inner.journal.flush()?;
        if checkpoint && self.is_healthy() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Graph size for metrics: (parties, resources, edges).
    pub fn graph_size(&self) -> (usize, usize, usize) {
        self.read(|w| {
            (
                w.graph.party_count(),
                w.graph.resource_count(),
                w.graph.edge_count(),
            )
        })
        .0
    }
}

impl Drop for Store {
    /// Lets the sequencer apply what was staged and has it answered once durable (here,
    /// waiting for the log; or by the publisher thread), then joins the threads.
    fn drop(&mut self) {
        self.inner.incoming.shut_down();
        let mut workers = std::mem::take(&mut self.workers).into_iter();
        if let Some(s) = workers.next() {
            let _ = s.join();
        }
        if self.inner.hooked.load(Ordering::SeqCst) {
            self.inner.settle(true);
        }
        self.inner.waiting.shut_down();
        for w in workers {
            let _ = w.join();
        }
        if let Some(j) = &self.inner.janitor {
            j.stop();
        }
        if let Some(h) = self.janitor_thread.take() {
            let _ = h.join();
        }
    }
}

impl Inner {
    fn unhealthy_reason(&self) -> Option<String> {
        if self.healthy.load(Ordering::SeqCst) {
            return None;
        }
        Some(
            self.unhealthy
                .lock()
                .clone()
                .unwrap_or_else(|| "the journal failed".into()),
        )
    }

    /// Stops taking writes, keeping the first reason.
    fn fail(&self, reason: String) {
        let mut r = self.unhealthy.lock();
        if r.is_none() {
            tracing::error!("the store stops taking writes: {reason}");
            *r = Some(reason);
        }
        self.healthy.store(false, Ordering::SeqCst);
    }

    /// One pass of the sequencer: applies `batch` in order on the pending state (the
    /// overlay: nothing else sees it), queues each accepted record in the journal, then
    /// makes one version of the pass, hands the version and its writers to the waiting
    /// passes and seals its records (the journal writes them as one group, with any
    /// other pass sealed meanwhile).
    fn apply_pass(&self, batch: impl Iterator<Item = Request>) {
        let mut p = self.seq.lock();
        // The state before this pass, shared with the last version: what a failed
        // apply rebuilds from.
        let base = p.world.clone();
        let mut accepted: Vec<Accepted> = Vec::with_capacity(batch.size_hint().0);
        for r in batch {
            if let Some(reason) = self.unhealthy_reason() {
                r.answer.send(Err(CommitError::Unhealthy(reason)));
                continue;
            }
            let fail = self.fail_next_apply.swap(false, Ordering::SeqCst);
            let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let o = mutate::apply_batch(&mut p.world, &r.events);
                #[allow(clippy::panic)]
                if fail {
                    panic!("test hook: the apply fails after changing the overlay");
                }
                o
            }));
            let outcome = match applied {
                Ok(Ok(o)) => o,
                // Refused: the batch's undo log put everything back.
                Ok(Err(e)) => {
                    r.answer.send(Err(CommitError::Refused(e)));
                    continue;
                }
                Err(_) => {
                    self.restore(&mut p.world, &base, &mut accepted);
                    r.answer.send(Err(CommitError::Panicked));
                    continue;
                }
            };
            let digest = journal::outcome_digest(&outcome);
            match self.journal.enqueue(&r.events, Some(digest)) {
                // Records are numbered in the order they are queued, all under this lock.
                Ok(token) => {
                    p.token = token;
                    accepted.push(Accepted {
                        events: r.events,
                        token,
                        digest,
                        outcome,
                        answer: r.answer,
                    });
                }
                Err(e) => {
                    if e.is_failure() {
                        self.fail(e.to_string());
                    }
                    self.restore(&mut p.world, &base, &mut accepted);
                    r.answer.send(Err(CommitError::Journal(e)));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(accepted.len() as u64, Ordering::Relaxed);
        // The bound holds for every version: a part the background compactions have
        // not kept up with is compacted here (a stall for writers, only then).
        // Before that, a fold in flight in the idle class while the delta nears the
        // bound is moved out of it (`fold`; where the process may).
        for i in 0..p.world.graph.partitions() {
            let bound = self.part_bound(&p.world.graph, i);
            let hurry = bound / 4 * fold::HURRY;
            let len = p.world.graph.part_delta_len(i);
            if len > hurry
                && let Some(f) = self.upkeep.folders.get(i)
            {
                // (Past the bound too: a fold that is then of no use still holds the
                // part's turn until it ends.)
                f.hurry();
            }
            if len > bound && p.world.graph.compact_part(i) {
                self.upkeep.count_by_writer(i);
            }
        }
        let token = p.token;
        let version = Arc::new(Version {
            token,
            world: p.world.clone(),
        });
        drop(p);
        let writers = accepted
            .into_iter()
            .map(|a| (a.token, a.outcome, a.answer))
            .collect();
        // Waiting before sealed: a flusher that answers (`hooked`) finds the pass.
        self.waiting.push(Group { version, writers });
        self.journal.seal(token);
        if self.hooked.load(Ordering::Relaxed) {
            // Durable already (something else sealed it first), or a failed store:
            // answer here, as the flusher may not come back.
            if self.journal.position() >= token {
                self.settle(false);
            } else if !self.healthy.load(Ordering::SeqCst) {
                self.settle(true);
            }
        }
    }

    /// Answers the passes the journal has made durable, after its flusher made a group
    /// durable (`hooked`): publishes the newest durable version with one swap and
    /// answers their writers. With `wait` (the log failed, or the store is stopping),
    /// first waits until every waiting pass is durable or the log failed; if it failed,
    /// the outcome of the passes not durable is unknown.
    fn settle(&self, wait: bool) {
        let newest = wait.then(|| self.waiting.newest(|g| g.version.token)).flatten();
        let waited = newest.map_or(Ok(()), |n| self.journal.wait_durable(n));
        let durable = match (&waited, newest) {
            (Ok(()), Some(n)) => self.journal.position().max(n),
            _ => self.journal.position(),
        };
        let (done, garbage) = {
            let _turn = self.publishing.lock();
            let done = self.waiting.take_prefix(|g| g.version.token <= durable);
            let versions: Vec<Arc<Version>> = done.iter().map(|g| g.version.clone()).collect();
            (done, self.publish_all(&versions))
        };
        let garbage = garbage.and_then(|g| match &self.janitor {
            Some(j) => j.take(g).err(),
            None => Some(g),
        });
        answer_durable(done, garbage);
        if let Err(e) = waited {
            self.fail(e.to_string());
            for g in self.waiting.drain() {
                for (seq, _, a) in g.writers {
                    a.send(Err(CommitError::OutcomeUnknown {
                        token: seq,
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }

    /// Puts the pending state back to `base` plus the batches of this pass already
    /// queued (after a panic half-way through an apply, or a record the journal did not
    /// take). Applying is deterministic, so they do again what they did (their digests
    /// are checked); if not, the store fails and their outcome is unknown.
    fn restore(&self, world: &mut World, base: &World, accepted: &mut Vec<Accepted>) {
        let mut w = base.clone();
        let same = accepted.iter().all(|a| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                mutate::apply_batch(&mut w, &a.events)
            }))
            .ok()
            .and_then(Result::ok)
            .is_some_and(|o| journal::outcome_digest(&o) == a.digest)
        });
        if same {
            *world = w;
            return;
        }
        *world = base.clone();
        let reason = "a batch applied again after a failed apply did something else".to_string();
        self.fail(reason.clone());
        for a in accepted.drain(..) {
            a.answer.send(Err(CommitError::OutcomeUnknown {
                token: a.token,
                reason: reason.clone(),
            }));
        }
    }

    /// Makes the newest of `vs` (ascending tokens) the current version unless a newer
    /// one is already published (records become durable in order, so a newer version
    /// holds their records), and keeps them in the ring. The caller holds `publishing`.
    /// Returns the ring as it was before.
    fn publish_all(&self, vs: &[Arc<Version>]) -> Option<Garbage> {
        let v = vs.last().cloned()?;
        self.current.rcu(|cur| {
            if cur.token >= v.token {
                cur.clone()
            } else {
                v.clone()
            }
        });
        let old = self.ring.rcu(|ring| {
            // Room for the new versions: a clone has none, and growing it copies.
            let mut r = VecDeque::with_capacity(ring.len() + vs.len().min(RING));
            r.extend(ring.iter().cloned());
            for v in vs.iter().skip(vs.len().saturating_sub(RING)) {
                let at = r.partition_point(|x| x.token < v.token);
                if r.get(at).is_none_or(|x| x.token != v.token) {
                    r.insert(at, v.clone());
                }
            }
            while r.len() > RING {
                r.pop_front();
            }
            r
        });
        self.visible.send_if_modified(|t| {
            let newer = *t < v.token;
            if newer {
                *t = v.token;
            }
            newer
        });
        for i in 0..v.world.graph.partitions() {
            let trigger = (self.part_bound(&v.world.graph, i) / 2).max(1);
            if v.world.graph.part_delta_len(i) > trigger {
                self.compact_in_background(v.clone(), i);
            }
        }
        Some(old)
    }

    /// See [`Store::part_bound`].
    fn part_bound(&self, graph: &crate::graph::Graph, i: usize) -> usize {
        match self.delta_bound.load(Ordering::Relaxed) {
            0 => DELTA_BOUND.max(graph.part_base_len(i) / BASE_SHARE),
            set => set,
        }
    }

    /// Has part `i` of version `v` folded into a new base in the background — by its
    /// partition actor when they run, else on a thread of its own — then moves the
    /// pending state's part onto it; the next published version reads the new base.
    fn compact_in_background(&self, v: Arc<Version>, i: usize) {
        if !self.upkeep.start(i) {
            return;
        }
        // Only the part goes on: the rest of the version is not kept alive by a fold
        // that waits for a core.
        let Some(from) = v.world.graph.part_state(i) else {
            self.upkeep.stop(i);
            return;
        };
        drop(v);
        let sent = {
            let actors = self.compactors.read();
            match actors.get(i % actors.len().max(1)) {
                Some(a) => a.try_send(CompactPart { from: from.clone() }).is_ok(),
                None => false,
            }
        };
        if sent {
            return;
        }
        // Without actors: the fold on its idle-class thread, the install (which takes
        // the sequencer's lock) on a thread of the write pipeline's class.
        let Some(rx) = fold::spawn(from.clone(), self.upkeep.folder(i)) else {
            self.upkeep.stop(i);
            return;
        };
        let seq = self.seq.clone();
        let upkeep = self.upkeep.clone();
        let installer = std::thread::Builder::new().name("compact".into()).spawn(move || {
            crate::background::no_wake_preemption();
            let base = rx.blocking_recv().ok().flatten();
            install(&seq, &upkeep, &from, base);
        });
        if installer.is_err() {
            // The fold runs on; its base is dropped unused.
            self.upkeep.stop(i);
        }
    }
}

/// The body of one of the store's threads.
type StoreThread = fn(&Inner);

/// The sequencer thread: applies what was staged since its last pass, pass by pass.
fn sequencer(inner: &Inner) {
    crate::background::no_wake_preemption();
    let mut batch = Vec::new();
    while inner.incoming.take_into(&mut batch) {
        inner.apply_pass(batch.drain(..));
    }
}

/// The publisher thread, for a journal without a flusher of its own (with one, its
/// flusher calls [`Inner::settle`] after each group): whenever passes wait, waits until
/// they are durable, publishes the newest (one swap) and answers their writers, with
/// the same [`Inner::settle`]. A journal that fails leaves the outcome of every waiting
/// pass unknown.
fn publisher(inner: &Inner) {
    crate::background::no_wake_preemption();
    while inner.waiting.wait_any() {
        inner.settle(true);
    }
}

/// Answers the writers of passes made durable and published: each gets its pass's
/// token; the last one answered also gets `garbage` to drop (what the janitor did not
/// take).
fn answer_durable(done: Vec<Group>, mut garbage: Option<Garbage>) {
    let n: usize = done.iter().map(|g| g.writers.len()).sum();
    let mut i = 0;
    for g in done {
        let token = g.version.token;
        drop(g.version);
        for (seq, outcome, a) in g.writers {
            i += 1;
            let g = if i == n { garbage.take() } else { None };
            a.send_with(Ok(Committed { token, seq, outcome }), g);
        }
    }
}

/// Per graph part: whether a compaction is in flight, how many were done, and how many
/// of those a writer waited for (the background fold had fallen behind the bound).
struct Upkeep {
    compacting: Box<[AtomicBool]>,
    done: Box<[AtomicU64]>,
    by_writer: Box<[AtomicU64]>,
    /// The fold in flight of each part (see `fold`).
    folders: Box<[Arc<fold::Folder>]>,
}

impl Upkeep {
    /// Claims part `i` for a compaction (false: one is in flight).
    fn start(&self, i: usize) -> bool {
        self.compacting
            .get(i)
            .is_some_and(|f| !f.swap(true, Ordering::SeqCst))
    }
    fn stop(&self, i: usize) {
        if let Some(f) = self.compacting.get(i) {
            f.store(false, Ordering::SeqCst);
        }
    }
    fn count(&self, i: usize) {
        if let Some(d) = self.done.get(i) {
            d.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Part `i`'s fold in flight (a detached one for a part that does not exist).
    fn folder(&self, i: usize) -> Arc<fold::Folder> {
        self.folders.get(i).cloned().unwrap_or_default()
    }
    fn count_by_writer(&self, i: usize) {
        self.count(i);
        if let Some(d) = self.by_writer.get(i) {
            d.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The end of a compaction of part `from` of a published version (the slow fold ran
/// without any lock): the sequencer's lock is held only to move the pending state's
/// later changes of that part onto the new base. False if the fold failed or the
/// pending part no longer shares `from`'s base (a compaction before a publish came first).
fn install(seq: &Mutex<Pending>, upkeep: &Upkeep, from: &PartState, base: Option<PartBase>) -> bool {
    let i = from.index();
    let done = base.is_some_and(|b| seq.lock().world.graph.rebase_part(from, &b));
    if done {
        upkeep.count(i);
    }
    upkeep.stop(i);
    done
}

/// The partition a party id belongs to among `n` (FNV-1a; defined beside the graph, so
/// that snapshot sections use the same rule).
pub use crate::graph::partition_of;

/// One partition: the actor that keeps its parts of the graph compacted.
pub struct Partition {
    index: usize,
    store: Arc<Store>,
}

impl Actor for Partition {
    type Context = Context<Self>;
}

/// Compact this partition's part of the graph of a published version: the fold runs on
/// a thread of its own in the idle class (`fold`; the mailbox goes on taking messages),
/// then the actor hands the new base to the sequencer, which moves the pending part onto
/// it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CompactPart {
    /// The part as the published version holds it.
    pub from: PartState,
}

impl Handler<CompactPart> for Partition {
    type Result = ();

    fn handle(&mut self, msg: CompactPart, ctx: &mut Context<Self>) {
        let CompactPart { from } = msg;
        tracing::debug!(partition = self.index, part = from.index(), "compact");
        let folder = self.store.inner.upkeep.folder(from.index());
        let rx = fold::spawn(from.clone(), folder);
        let fold = async move {
            let base = match rx {
                Some(rx) => rx.await.ok().flatten(),
                None => None,
            };
            (from, base)
        };
        ctx.spawn(fold.into_actor(self).map(move |(from, base), act, _| {
            act.store.install(&from, base);
        }));
    }
}

/// The partitions a checkpoint's snapshot is written in for a graph of `parts` parts:
/// the smallest multiple of `parts` that is at least [`DEFAULT_PARTITIONS`], so that
/// every snapshot partition's parties live in one part (`partition_of` modulo a
/// multiple of `parts` refines `partition_of` modulo `parts`) and a load still has
/// sections for many cores.
pub fn checkpoint_partitions(parts: usize) -> u32 {
    let parts = parts.max(1) as u32;
    parts * DEFAULT_PARTITIONS.div_ceil(parts)
}

/// Encode this actor's sections of a checkpoint: the parties and the edges of each of
/// `partitions`, from the pinned `version` the checkpoint planned (`plan`), with the
/// snapshot codec. The encoding runs on a low-priority thread of its own (readers keep
/// their CPU; the mailbox goes on taking writes); the sections, or the first error, go
/// to `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteSections {
    pub version: Arc<Version>,
    pub plan: Arc<Plan>,
    pub partitions: Vec<u32>,
    pub reply: std::sync::mpsc::Sender<Result<Vec<Encoded>, SnapshotError>>,
}

impl Handler<WriteSections> for Partition {
    type Result = ();

    fn handle(&mut self, msg: WriteSections, _: &mut Context<Self>) {
        tracing::debug!(
            partition = self.index,
            sections = 2 * msg.partitions.len(),
            "encode checkpoint sections"
        );
        let reply = msg.reply.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("checkpoint-{}", self.index))
            .spawn(move || {
                crate::background::lower_priority();
                let w = &msg.version.world;
                let r = msg
                    .partitions
                    .iter()
                    .flat_map(|j| [(SectionKind::Parties, *j), (SectionKind::Edges, *j)])
                    .map(|(kind, j)| encode_section(w, &msg.plan, kind, j))
                    .collect();
                let _ = msg.reply.send(r);
            });
        if let Err(e) = spawned {
            let _ = reply.send(Err(SnapshotError::Encode(format!(
                "partition {} cannot start its encoding thread: {e}",
                self.index
            ))));
        }
    }
}

/// The running partitions, and the write entry point ([`Partitions::submit`]).
pub struct Partitions {
    addrs: Vec<Addr<Partition>>,
    /// Taken (and stopped) by [`Partitions::stop`].
    arbiters: Mutex<Vec<Arbiter>>,
    store: Arc<Store>,
}

impl Partitions {
    /// Starts `n` (at least 1) partition actors, each on its own arbiter thread. Must be
    /// called inside a running actix system.
    pub fn start(n: usize, store: Arc<Store>) -> Partitions {
        let n = n.max(1);
        let mut addrs = Vec::with_capacity(n);
        let mut arbiters = Vec::with_capacity(n);
        for index in 0..n {
            let arbiter = Arbiter::new();
            let s = store.clone();
            addrs.push(Partition::start_in_arbiter(&arbiter.handle(), move |_| {
                Partition { index, store: s }
            }));
            arbiters.push(arbiter);
        }
        store.set_compactors(addrs.clone());
        Partitions {
            addrs,
            arbiters: Mutex::new(arbiters),
            store,
        }
    }

    pub fn count(&self) -> usize {
        self.addrs.len()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Commits a batch: stages it straight into the sequencer's queue from the calling
    /// task (no hop through a partition actor; see the module doc) and awaits its
    /// [`Ticket`], answered once durable (by the log's flusher, or the store's
    /// publisher) — no thread waits.
    pub async fn submit(&self, events: Vec<Event>) -> Result<Committed, CommitError> {
        self.store.stage(Arc::new(events)).await
    }

    /// Stops the partition actors and their threads (after the HTTP server stopped).
    pub fn stop(&self) {
        self.store.set_compactors(Vec::new());
        let arbiters = std::mem::take(&mut *self.arbiters.lock());
        for a in arbiters {
            a.stop();
            let _ = a.join();
        }
    }
}

// ---------------------------------------------------------------- loading a snapshot

/// The loading actor of one partition: builds that partition's part of the graph from
/// its own sections of a snapshot ([`snapshot::PartsLoad::build`], a codec function:
/// the codec knows records and graph parts, this layer knows who runs them).
///
/// [`snapshot::PartsLoad::build`]: crate::persist::snapshot::PartsLoad::build
pub struct PartLoader {
    index: usize,
}

impl Actor for PartLoader {
    type Context = Context<Self>;
}

/// Build this partition's part of the graph from the snapshot.
#[derive(Message)]
#[rtype(result = "Result<crate::graph::PartBuilder, crate::persist::error::SnapshotError>")]
pub struct LoadPart {
    pub load: Arc<crate::persist::snapshot::PartsLoad>,
}

impl Handler<LoadPart> for PartLoader {
    type Result = Result<crate::graph::PartBuilder, crate::persist::error::SnapshotError>;

    // Runs on this partition's own arbiter thread (the part's sections are decoded on
    // one more thread beside it); the partitions build their parts at the same time.
    fn handle(&mut self, msg: LoadPart, _: &mut Context<Self>) -> Self::Result {
        tracing::debug!(partition = self.index, "load part");
        msg.load.build(self.index)
    }
}

/// Loads a snapshot file into a world whose graph has `parts` parts: each part is built
/// by the loading actor of its partition ([`PartLoader`]), one per part, each on an
/// arbiter of its own in a short-lived actix system, then the parts are put together
/// ([`snapshot::PartsLoad::finish`]). A file that cannot be loaded part by part (a
/// version before 5, or `parts` does not divide the file's partitions) — and a call
/// from inside a running actix system — loads through [`snapshot::load_in`] instead.
///
/// [`snapshot::PartsLoad::finish`]: crate::persist::snapshot::PartsLoad::finish
/// [`snapshot::load_in`]: crate::persist::snapshot::load_in
pub fn load_snapshot(
    path: &std::path::Path,
    parts: usize,
) -> Result<(World, crate::persist::snapshot::Loaded), crate::persist::error::SnapshotError> {
    use crate::persist::snapshot::{self, PartsLoad};
    let by_actors = actix::System::try_current().is_none();
    match PartsLoad::open(path, parts)? {
        Some(l) if by_actors => load_parts(l),
        _ => snapshot::load_in(path, parts, &mut |_| {}),
    }
}

/// [`load_snapshot`] of a file already opened to be loaded part by part (the plan read
/// once). Inside a running actix system (where a short-lived one cannot start) the
/// parts are built on plain threads instead.
pub fn load_parts(
    load: crate::persist::snapshot::PartsLoad,
) -> Result<(World, crate::persist::snapshot::Loaded), crate::persist::error::SnapshotError> {
    use crate::persist::error::SnapshotError;
    if actix::System::try_current().is_some() {
        let built: Result<Vec<_>, SnapshotError> = std::thread::scope(|s| {
            let load = &load;
            let hs: Vec<_> = (0..load.parts())
                .map(|j| s.spawn(move || load.build(j)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(SnapshotError::Corrupt("a loading thread panicked".into())))
                })
                .collect()
        });
        return load.finish(built?);
    }
    let load = Arc::new(load);
    let n = load.parts();
    let (built, arbiters) = actix::System::new().block_on(async {
        let mut arbiters = Vec::with_capacity(n);
        let mut waits = Vec::with_capacity(n);
        for index in 0..n {
            let arbiter = Arbiter::new();
            let addr = PartLoader::start_in_arbiter(&arbiter.handle(), move |_| PartLoader { index });
            waits.push(addr.send(LoadPart { load: load.clone() }));
            arbiters.push(arbiter);
        }
        let mut built = Vec::with_capacity(n);
        let mut failed = None;
        for w in waits {
            match w.await {
                Ok(Ok(b)) => built.push(b),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => {
                    failed.get_or_insert(SnapshotError::Corrupt("a loading actor stopped".into()));
                }
            }
        }
        (failed.map_or(Ok(built), Err), arbiters)
    });
    for a in arbiters {
        a.stop();
        let _ = a.join();
    }
    let built = built?;
    let load = Arc::try_unwrap(load)
        .map_err(|_| SnapshotError::Corrupt("the snapshot is still held by a loading actor".into()))?;
    load.finish(built)
}
