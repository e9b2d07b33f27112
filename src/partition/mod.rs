//! The store and its write front: immutable published versions that readers pin
//! without a lock, one sequencer that applies each batch once, and a configurable
//! number of actix actors (partitions) that order writes per party in front of it and
//! keep their parts of the graph compacted.
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
//!   half of the bound ([`DELTA_BOUND`], [`Store::set_delta_bound`]), that part's actor
//!   (part `i` belongs to actor `i % N`) folds it into a new base on a blocking thread —
//!   no lock held, its mailbox still taking writes, readers on their pinned versions —
//!   and hands the base to the sequencer, which moves the pending part's later changes
//!   onto it under its lock (O(delta)). Without running actors (the CLI's durable store,
//!   tests) a thread does the same. No version is published with a part past the bound:
//!   if the background falls behind, the sequencer compacts that part of the batch's
//!   copy before publishing it. `/metrics` reports every part's delta, the bound and
//!   the compactions.
//! * **Partitions.** Every party id hashes (FNV-1a, stable across runs) to one of `N`
//!   partition actors, each on its own arbiter thread. A batch goes to the partitions of
//!   every party its events name ([`touched_partitions`]); events without a home party
//!   (`clock`, `retire_a2_roles`, `resource`) touch all of them. A partition handles one
//!   message at a time, so two writes that name the same party are staged in the order
//!   they reached its mailbox (per-party FIFO). The partitions are the sequencer's
//!   front: they order, the sequencer applies.
//! * **Batches spanning partitions** hold every partition they touch, acquired in
//!   ascending order (so two such batches cannot deadlock): each lower partition parks
//!   on a [`Hold`] (an atomic response that blocks its mailbox), then the highest one
//!   stages the batch. Dropping the hold guards releases them, also when the request is
//!   cancelled.
//! * **The sequencer** ([`Store::stage`]) holds one mutex for: a private O(1) copy of
//!   the pending state, the one apply of the batch on it (a refusal or a panic drops the
//!   copy: nothing changed, nothing logged), and the journal's enqueue (no I/O). The
//!   partition is then free; [`Store::finish`] waits without any lock until the journal
//!   has made the record durable — one fsync for every batch queued meanwhile (group
//!   commit) — and publishes the version. Records become durable in order, so a
//!   version is published only when it and all before it are durable; a reader never
//!   sees a state the journal does not have.
//!
//! # Limits (honestly)
//!
//! * A cascade can reach any partition (ending a client relationship removes delegations
//!   homed at other parties), so batches are applied one at a time by the sequencer
//!   whatever `N` is: partitions give ordering and isolation of the write queues and
//!   their own compaction, not parallel applies. The actors do not yet write or load
//!   their snapshot sections (a checkpoint encodes every section on all cores from the
//!   pinned version; a load fills the parts in parallel).
//! * The bound is kept by compacting before a publish when the background falls behind:
//!   under a write rate that outpaces compaction, the writers of that partition then
//!   wait for a fold of its part (O(part size)).
//! * A journal that fails after it queued a record leaves the outcome unknown: the
//!   writer gets [`CommitError::OutcomeUnknown`] (HTTP 503 `outcome_unknown`: read
//!   before retrying), and the store refuses further writes and fails readiness until
//!   the process restarts — recovery from the data directory then decides what the
//!   log holds (after a failed `fdatasync` nothing in this process can know it).
//! * A write whose HTTP request times out may still commit: the partition's mailbox
//!   already holds it. The answer is lost, the token is not; a client retries by reading.

pub mod journal;

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::event::Event;
use crate::graph::PartBase;
use crate::model::Error;
use crate::mutate::{self, Outcome};
use crate::world::World;
use journal::{Journal, JournalError};

/// A batch the store has made durable and applied.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The journal's sequence number: the consistency token.
    pub token: u64,
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

/// The default bound on each part's delta (nodes and edges changed since its base): a
/// part whose published delta passes half of it is compacted in the background by its
/// partition actor, and no version is published with a part past it.
pub const DELTA_BOUND: usize = 100_000;

/// The sequencer's state: the newest applied state (possibly not yet durable).
struct Pending {
    world: World,
    token: u64,
}

/// A batch applied to the pending state and queued in the journal, not yet durable:
/// [`Store::finish`] waits for the journal and publishes it.
#[must_use]
pub struct Staged {
    version: Arc<Version>,
    outcome: Outcome,
}

impl Staged {
    pub fn token(&self) -> u64 {
        self.version.token
    }
}

/// The published versions, the sequencer and the journal.
///
/// * **Readers** ([`Store::read`], [`Store::pin`]) load the current [`Version`] from an
///   `ArcSwap`: no lock, whatever a writer, a simulation, a report or a checkpoint does.
/// * **The sequencer** ([`Store::stage`]) holds a small mutex for the apply (once, on a
///   private O(1) copy of the pending state) and the journal's enqueue; a refused batch
///   or a panic drops the copy, so nothing changed. [`Store::finish`] then waits, without
///   any lock, for the journal to make the record durable (one fsync for every batch
///   queued meanwhile) and publishes the version.
pub struct Store {
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
    /// Serialises publishers (not readers).
    publishing: Mutex<()>,
    /// Staged versions not yet published, in token order (pushed under the sequencer).
    unpublished: Mutex<VecDeque<Arc<Version>>>,
    /// Why the store stopped taking writes (set once, with `healthy` false).
    unhealthy: Mutex<Option<String>>,
    /// Per graph part: compaction in flight, compactions done.
    upkeep: Arc<Upkeep>,
    /// See [`DELTA_BOUND`].
    delta_bound: AtomicUsize,
    /// The partition actors, while they run: part `i` is compacted by actor `i % n`.
    compactors: parking_lot::RwLock<Vec<Addr<Partition>>>,
    /// Test hook: while set, [`Store::exclusive`] parks before answering (to hold a
    /// simulation open on its pinned version).
    pause: Arc<(Mutex<(bool, usize)>, parking_lot::Condvar)>,
    /// Test hook: the next apply panics after changing its copy.
    fail_next_apply: AtomicBool,
}

impl Store {
    /// A store over `world`, which must reflect the journal up to its position (a fresh
    /// world with a fresh journal, or what recovery rebuilt).
    pub fn new(world: World, journal: Arc<dyn Journal>) -> Store {
        let token = journal.position();
        let parts = world.graph.partitions();
        let v = Arc::new(Version {
            token,
            world: world.clone(),
        });
        let (visible, _) = watch::channel(token);
        Store {
            current: ArcSwap::new(v.clone()),
            ring: ArcSwap::from_pointee(VecDeque::from([v])),
            seq: Arc::new(Mutex::new(Pending { world, token })),
            journal,
            visible,
            healthy: AtomicBool::new(true),
            publishing: Mutex::new(()),
            unpublished: Mutex::new(VecDeque::new()),
            unhealthy: Mutex::new(None),
            upkeep: Arc::new(Upkeep {
                compacting: (0..parts).map(|_| AtomicBool::new(false)).collect(),
                done: (0..parts).map(|_| AtomicU64::new(0)).collect(),
            }),
            delta_bound: AtomicUsize::new(DELTA_BOUND),
            compactors: parking_lot::RwLock::new(Vec::new()),
            pause: Arc::default(),
            fail_next_apply: AtomicBool::new(false),
        }
    }

    /// The current version, pinned: it stays readable however many commits follow.
    pub fn pin(&self) -> Arc<Version> {
        self.current.load_full()
    }

    /// The version with exactly this token, while it is among the last [`RING`].
    pub fn pin_at(&self, token: u64) -> Result<Arc<Version>, StaleRead> {
        let ring = self.ring.load();
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

    /// Makes the next apply panic after it changed its private copy (tests).
    #[doc(hidden)]
    pub fn fail_next_apply(&self) {
        self.fail_next_apply.store(true, Ordering::SeqCst);
    }

    /// The token of the newest visible state.
    pub fn visible(&self) -> u64 {
        *self.visible.borrow()
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// False after the journal failed; readiness reports it. Healthy again means a
    /// restart: recovery from the data directory decides what the log holds.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Why the store stopped taking writes (None while it is healthy).
    pub fn unhealthy_reason(&self) -> Option<String> {
        if self.is_healthy() {
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

    /// Waits (at most `max_wait`) until the state at `token` is visible.
    pub async fn wait_visible(&self, token: u64, max_wait: Duration) -> Result<(), StaleRead> {
        if self.visible() >= token {
            return Ok(());
        }
        let position = self.journal.position();
        if token > position {
            return Err(StaleRead::Ahead { token, position });
        }
        let mut rx = self.visible.subscribe();
        match tokio::time::timeout(max_wait, rx.wait_for(|v| *v >= token)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StaleRead::NotYet {
                token,
                waited_ms: max_wait.as_millis(),
            }),
        }
    }

    /// Validates and applies `events` once, on a private copy of the pending state, and
    /// queues the record in the journal. A refusal, a panic or a journal that cannot take
    /// the record drops the copy: nothing changed.
    pub fn stage(&self, events: &[Event]) -> Result<Staged, CommitError> {
        let mut p = self.seq.lock();
        if let Some(reason) = self.unhealthy_reason() {
            return Err(CommitError::Unhealthy(reason));
        }
        let mut next = p.world.clone();
        let fail = self.fail_next_apply.swap(false, Ordering::SeqCst);
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r = mutate::apply_batch(&mut next, events);
            #[allow(clippy::panic)]
            if fail {
                panic!("test hook: the apply fails after changing the copy");
            }
            r
        }));
        let outcome = match applied {
            Ok(r) => r?,
            Err(_) => return Err(CommitError::Panicked),
        };
        // The bound holds for every version: a part the background compactions have
        // not kept up with is compacted here (a stall for writers, only then).
        let bound = self.delta_bound();
        for i in 0..next.graph.partitions() {
            if next.graph.part_delta_len(i) > bound && next.graph.compact_part(i) {
                self.upkeep.count(i);
            }
        }
        let digest = journal::outcome_digest(&outcome);
        let token = match self.journal.enqueue(events, Some(digest)) {
            Ok(t) => t,
            Err(e) => {
                if e.is_failure() {
                    self.fail(e.to_string());
                }
                return Err(CommitError::Journal(e));
            }
        };
        p.world = next.clone();
        p.token = token;
        let version = Arc::new(Version { token, world: next });
        self.unpublished.lock().push_back(version.clone());
        Ok(Staged { version, outcome })
    }

    /// Waits until the staged record is durable and publishes its version. A journal
    /// that fails here leaves the outcome unknown: the store refuses further writes.
    pub fn finish(&self, staged: Staged) -> Result<Committed, CommitError> {
        let token = staged.version.token;
        if let Err(e) = self.journal.wait_durable(token) {
            self.fail(e.to_string());
            return Err(CommitError::OutcomeUnknown {
                token,
                reason: e.to_string(),
            });
        }
        self.publish_durable(token);
        Ok(Committed {
            token,
            outcome: staged.outcome,
        })
    }

    /// Whether the staged record is already durable (then finishing it never blocks).
    pub fn is_durable(&self, staged: &Staged) -> bool {
        self.journal.position() >= staged.version.token
    }

    /// Stage and finish in one call (blocks for the journal).
    pub fn commit(&self, events: &[Event]) -> Result<Committed, CommitError> {
        let staged = self.stage(events)?;
        self.finish(staged)
    }

    /// Publishes every staged version whose record is durable, `token`'s included.
    /// The writers of one group wake together: the first publishes the whole group with
    /// one swap (each swap costs arc-swap a walk over every reader thread), the others
    /// find their version already out.
    fn publish_durable(&self, token: u64) {
        let _turn = self.publishing.lock();
        if self.current.load().token >= token {
            return;
        }
        let durable = self.journal.position().max(token);
        let vs: Vec<Arc<Version>> = {
            let mut u = self.unpublished.lock();
            let n = u.partition_point(|v| v.token <= durable);
            u.drain(..n).collect()
        };
        self.publish_all(&vs);
    }

    /// Makes `v` the current version unless a newer one is already published.
    fn publish(&self, v: Arc<Version>) {
        let _turn = self.publishing.lock();
        self.publish_all(&[v]);
    }

    /// Makes the newest of `vs` (ascending tokens) the current version unless a newer
    /// one is already published (records become durable in order, so a newer version
    /// holds their records), and keeps them in the ring. The caller holds `publishing`.
    fn publish_all(&self, vs: &[Arc<Version>]) {
        let Some(v) = vs.last().cloned() else {
            return;
        };
        self.current.rcu(|cur| {
            if cur.token >= v.token {
                cur.clone()
            } else {
                v.clone()
            }
        });
        self.ring.rcu(|ring| {
            let mut r = VecDeque::clone(ring);
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
        let trigger = (self.delta_bound() / 2).max(1);
        for i in 0..v.world.graph.partitions() {
            if v.world.graph.part_delta_len(i) > trigger {
                self.compact_in_background(v.clone(), i);
            }
        }
    }

    /// Has part `i` of version `v` folded into a new base in the background — by its
    /// partition actor when they run, else on a thread of its own — then moves the
    /// pending state's part onto it; the next published version reads the new base.
    fn compact_in_background(&self, v: Arc<Version>, i: usize) {
        if !self.upkeep.start(i) {
            return;
        }
        let sent = {
            let actors = self.compactors.read();
            match actors.get(i % actors.len().max(1)) {
                Some(a) => a
                    .try_send(CompactPart {
                        version: v.clone(),
                        part: i,
                    })
                    .is_ok(),
                None => false,
            }
        };
        if sent {
            return;
        }
        let seq = self.seq.clone();
        let upkeep = self.upkeep.clone();
        let spawned = std::thread::Builder::new().name("compact".into()).spawn(move || {
            let base = v.world.graph.compacted_part(i);
            install(&seq, &upkeep, &v, i, base);
        });
        if spawned.is_err() {
            self.upkeep.stop(i);
        }
    }

    /// Moves the pending state's part onto `base`, folded from published version `v`
    /// (the last step of a compaction, under the sequencer's lock for O(delta)).
    fn install(&self, v: &Version, i: usize, base: Option<PartBase>) -> bool {
        install(&self.seq, &self.upkeep, v, i, base)
    }

    /// Folds the graph of published version `v` into new bases, part by part, and moves
    /// the pending state onto them (what the background compactions run); false if the
    /// pending state no longer shares `v`'s bases (another compaction came first).
    pub fn compact(&self, v: &Version) -> bool {
        let mut all = true;
        for i in 0..v.world.graph.partitions() {
            if !self.upkeep.start(i) {
                all = false;
                continue;
            }
            let base = v.world.graph.compacted_part(i);
            all &= install(&self.seq, &self.upkeep, v, i, base);
        }
        all
    }

    /// The bound on every part's delta (see [`DELTA_BOUND`]).
    pub fn delta_bound(&self) -> usize {
        self.delta_bound.load(Ordering::Relaxed)
    }

    /// Sets the bound on every part's delta (at least 2; tests use a small one).
    pub fn set_delta_bound(&self, bound: usize) {
        self.delta_bound.store(bound.max(2), Ordering::Relaxed);
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
        self.upkeep
            .done
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect()
    }

    /// The partition actors that compact the parts (empty: compactions run on threads).
    fn set_compactors(&self, actors: Vec<Addr<Partition>>) {
        *self.compactors.write() = actors;
    }

    /// Empties the world (admin reset), recorded in the journal first.
    pub fn reset(&self) -> Result<u64, CommitError> {
        let mut p = self.seq.lock();
        let token = self.journal.reset()?;
        let parts = p.world.graph.partitions();
        p.world = World::with_partitions(parts);
        p.token = token;
        self.publish(Arc::new(Version {
            token,
            world: World::with_partitions(parts),
        }));
        Ok(token)
    }

    /// Writes a checkpoint of the published version (pinned: durable by the store's
    /// invariant) through the journal. No lock is held: writers and readers go on while
    /// the snapshot is written. None when the journal keeps none.
    pub fn checkpoint(&self) -> Result<Option<u64>, JournalError> {
        let v = self.pin();
        self.journal.checkpoint(&v.world, v.token)
    }

    /// Graceful shutdown, after the partitions stopped: makes the journal durable and,
    /// with `checkpoint`, writes a checkpoint so that the next start replays nothing.
    pub fn close(&self, checkpoint: bool) -> Result<(), JournalError> {
        self.journal.flush()?;
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

/// Per graph part: whether a compaction is in flight, and how many were done.
struct Upkeep {
    compacting: Box<[AtomicBool]>,
    done: Box<[AtomicU64]>,
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
}

/// The end of a compaction of part `i` of published version `v` (the slow fold ran
/// without any lock): the sequencer's lock is held only to move the pending state's
/// later changes of that part onto the new base. False if the fold failed or the
/// pending part no longer shares `v`'s base (a compaction before a publish came first).
fn install(seq: &Mutex<Pending>, upkeep: &Upkeep, v: &Version, i: usize, base: Option<PartBase>) -> bool {
    let done = base.is_some_and(|b| seq.lock().world.graph.rebase_part(&v.world.graph, &b));
    if done {
        upkeep.count(i);
    }
    upkeep.stop(i);
    done
}

/// The partition a party id belongs to among `n` (FNV-1a; defined beside the graph, so
/// that snapshot sections use the same rule).
pub use crate::graph::partition_of;

/// The parties an event names (not `by`, which is only read); `None` for an event that
/// has no home party and so touches every partition.
fn named_parties(ev: &Event) -> Option<Vec<&str>> {
    Some(match ev {
        Event::Party(p) => {
            let mut v = vec![p.id.as_str()];
            v.extend(p.main_unit.as_deref());
            v.extend(p.owner.as_deref());
            v
        }
        Event::RegisterRole(r) | Event::UnregisterRole(r) | Event::A2Role(r) | Event::RemoveA2Role(r) => {
            vec![r.from.as_str(), r.to.as_str()]
        }
        Event::Grant(g) | Event::Revoke(g) => vec![g.from.as_str(), g.to.as_str()],
        Event::RemoveConnection(c) => vec![c.from.as_str(), c.to.as_str()],
        Event::AddAgent(a) | Event::RemoveAgent(a) => vec![a.facilitator.as_str(), a.agent.as_str()],
        Event::Delegate(d) | Event::Undelegate(d) => {
            vec![d.client.as_str(), d.facilitator.as_str(), d.agent.as_str()]
        }
        Event::Died(d) => vec![d.person.as_str()],
        // Policies and global state can change any party's answers.
        Event::Resource(_) | Event::RetireA2Roles(_) | Event::Clock(_) => return None,
        // Decision-point state (policies, instances, access lists) is read by every
        // partition's decisions.
        Event::Policy(_) | Event::Instance(_) | Event::AccessList(_) => return None,
        // System-user and request events name requests and systems, and approving one
        // creates parties and grants elsewhere: coordinate them with every partition.
        Event::System(_)
        | Event::SystemUserRequest(_)
        | Event::ChangeRequest(_)
        | Event::AccessRequest(_)
        | Event::Approve(_)
        | Event::Reject(_)
        | Event::Confirm(_)
        | Event::Withdraw(_)
        | Event::Escalate(_)
        | Event::AddClient(_)
        | Event::RemoveClient(_) => return None,
        // Consents are global state (domain.md §9), named by id: every partition.
        Event::ConsentRequest(_)
        | Event::AcceptConsent(_)
        | Event::RejectConsent(_)
        | Event::RevokeConsent(_)
        | Event::UseConsent(_) => return None,
        // §10: the supplier relationship's two parties.
        Event::AddSupplier(e) | Event::RemoveSupplier(e) => vec![e.consumer.as_str(), e.supplier.as_str()],
        Event::DelegateScope(e) | Event::UndelegateScope(e) => vec![e.consumer.as_str(), e.supplier.as_str()],
    })
}

/// The partitions (ascending) that a batch touches among `n`.
pub fn touched_partitions(events: &[Event], n: usize) -> Vec<usize> {
    let mut out = BTreeSet::new();
    for ev in events {
        match named_parties(ev) {
            Some(ps) => out.extend(ps.into_iter().map(|p| partition_of(p, n))),
            None => return (0..n).collect(),
        }
    }
    if out.is_empty() {
        return (0..n).collect();
    }
    out.into_iter().collect()
}

/// One partition: the actor that owns the write queue of the parties hashed to it.
pub struct Partition {
    index: usize,
    store: Arc<Store>,
}

impl Actor for Partition {
    type Context = Context<Self>;
}

/// Stage a batch in this partition (all other partitions it touches are held): apply
/// it to the sequencer's pending state and queue its record; the caller waits for the
/// record to be durable outside the partition.
#[derive(Message)]
#[rtype(result = "Result<Staged, CommitError>")]
pub struct Commit {
    pub events: Arc<Vec<Event>>,
}

impl Handler<Commit> for Partition {
    type Result = Result<Staged, CommitError>;

    // Runs synchronously on this partition's own arbiter thread: the mailbox waits, which
    // is the per-partition ordering; other partitions and every reader go on. Only the
    // apply and the enqueue run here, never the fsync, so the next batch is staged while
    // the journal makes this one durable (group commit).
    fn handle(&mut self, msg: Commit, _: &mut Context<Self>) -> Self::Result {
        tracing::debug!(partition = self.index, events = msg.events.len(), "stage");
        self.store.stage(&msg.events)
    }
}

/// Compact this partition's part of the graph of a published version: the fold runs on
/// a blocking thread (the mailbox goes on taking writes), then the actor hands the new
/// base to the sequencer, which moves the pending part onto it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CompactPart {
    pub version: Arc<Version>,
    pub part: usize,
}

impl Handler<CompactPart> for Partition {
    type Result = ();

    fn handle(&mut self, msg: CompactPart, ctx: &mut Context<Self>) {
        tracing::debug!(partition = self.index, part = msg.part, "compact");
        let CompactPart { version, part } = msg;
        let fold = async move {
            let v = version.clone();
            let base = tokio::task::spawn_blocking(move || v.world.graph.compacted_part(part))
                .await
                .ok()
                .flatten();
            (version, base)
        };
        ctx.spawn(fold.into_actor(self).map(move |(v, base), act, _| {
            act.store.install(&v, part, base);
        }));
    }
}

/// Park this partition's mailbox until `release` fires or is dropped; `held` reports
/// that the partition is parked.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold {
    pub held: oneshot::Sender<()>,
    pub release: oneshot::Receiver<()>,
}

impl Handler<Hold> for Partition {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Hold, _: &mut Context<Self>) -> Self::Result {
        let _ = msg.held.send(());
        let release = msg.release;
        AtomicResponse::new(Box::pin(
            async move {
                let _ = release.await;
            }
            .into_actor(self),
        ))
    }
}

/// The running partitions and the router in front of them.
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

    /// Commits a batch through the partitions it touches (see the module doc).
    pub async fn submit(&self, events: Vec<Event>) -> Result<Committed, CommitError> {
        let parts = touched_partitions(&events, self.addrs.len());
        let Some((&last, lower)) = parts.split_last() else {
            return Err(CommitError::PartitionGone(0));
        };
        // Held partitions stay parked until these senders are dropped (end of scope,
        // including cancellation of this future).
        let mut releases = Vec::with_capacity(lower.len());
        for &p in lower {
            let addr = self.addrs.get(p).ok_or(CommitError::PartitionGone(p))?;
            let (held_tx, held_rx) = oneshot::channel();
            let (release_tx, release_rx) = oneshot::channel();
            addr.do_send(Hold {
                held: held_tx,
                release: release_rx,
            });
            releases.push(release_tx);
            held_rx.await.map_err(|_| CommitError::PartitionGone(p))?;
        }
        let addr = self.addrs.get(last).ok_or(CommitError::PartitionGone(last))?;
        let staged = addr
            .send(Commit {
                events: Arc::new(events),
            })
            .await
            .map_err(|_| CommitError::PartitionGone(last))?;
        drop(releases);
        let staged = staged?;
        if self.store.is_durable(&staged) {
            return self.store.finish(staged);
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.finish(staged))
            .await
            .map_err(|_| CommitError::PartitionGone(last))?
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
