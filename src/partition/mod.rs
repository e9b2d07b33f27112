//! The partition layer: one shared world that every reader reads concurrently, and a
//! write path owned by a configurable number of actix actors (partitions).
//!
//! # Design
//!
//! * **Reads** take a shared lock on the one [`World`] ([`Store::read`]) on whatever
//!   actix-web worker thread the request landed on. Nothing funnels through an actor, so
//!   read throughput grows with cores; a read holds the lock for the microseconds the
//!   bounded resolution takes.
//! * **Partitions.** Every party id hashes (FNV-1a, stable across runs) to one of `N`
//!   partition actors, each on its own arbiter thread. A batch goes to the partitions of
//!   every party its events name ([`touched_partitions`]); events without a home party
//!   (`clock`, `retire_a2_roles`, `resource`) touch all of them. A partition handles one
//!   message at a time, so two writes that name the same party are committed in the
//!   order they reached its mailbox (per-party FIFO).
//! * **Batches spanning partitions** hold every partition they touch, acquired in
//!   ascending order (so two such batches cannot deadlock): each lower partition parks
//!   on a [`Hold`] (an atomic response that blocks its mailbox), then the highest one
//!   runs the commit. Dropping the hold guards releases them, also when the request is
//!   cancelled.
//! * **The commit section** ([`Store::commit`]) is one mutex around: a dry run of the
//!   batch on the world (`mutate::dry_run_batch`: full validation, then rolled back) →
//!   the journal append (durable) → the real apply under the exclusive write lock, which
//!   also publishes the new token. A reader therefore sees all of a batch or none of it,
//!   and never a state that is not yet durable; a refused batch never reaches the
//!   journal, and a journal failure changes nothing. The write lock is held for the two
//!   applies (microseconds; a cascade at scale milliseconds), never during the journal's
//!   I/O.
//!
//! # Limits (honestly)
//!
//! * The graph is one petgraph structure and a cascade can reach any partition (ending a
//!   client relationship removes delegations homed at other parties), so commits are
//!   serialised by the commit section whatever `N` is: partitions give ordering and
//!   isolation of the write queues, not parallel writes. Write throughput is bounded by
//!   1 / (2 × apply + journal latency) until the journal groups commits from concurrent
//!   partitions, which needs a pipelined commit (apply to a staged view while the
//!   previous record is being made durable).
//! * A batch is applied twice (dry run, then for real) so that readers are never
//!   blocked during the journal's fsync; applying is deterministic, so the second apply
//!   cannot fail unless the engine is broken, in which case the store marks itself
//!   unhealthy (readiness fails) and refuses further writes.
//! * `simulate` takes the write lock for its apply and rollback, so a large simulated
//!   cascade stalls readers for as long as it runs.
//! * A write whose HTTP request times out may still commit: the partition's mailbox
//!   already holds it. The answer is lost, the token is not; a client retries by reading.

pub mod journal;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};

use crate::event::Event;
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
/// except `Diverged`, which means the engine is broken.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The engine refused the batch (validation): nothing was written.
    #[error(transparent)]
    Refused(#[from] Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The real apply refused a batch the dry run accepted; the store stops writing.
    #[error("the batch passed its dry run but was refused when applied: {0}")]
    Diverged(Error),
    #[error("the store refuses writes after an earlier divergence")]
    Unhealthy,
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
}

/// The world, its journal and the commit section.
pub struct Store {
    // INVARIANT: the world reflects exactly the journal's records up to `visible`; a
    // change is applied to it only inside `commit` (holding `commit`), after its record
    // is durable.
    world: RwLock<World>,
    journal: Arc<dyn Journal>,
    commit: Mutex<()>,
    /// The token of the newest state readers can see; set under the world's write lock.
    visible: watch::Sender<u64>,
    healthy: AtomicBool,
}

impl Store {
    /// A store over `world`, which must reflect the journal up to its position (a fresh
    /// world with a fresh journal, or what recovery rebuilt).
    pub fn new(world: World, journal: Arc<dyn Journal>) -> Store {
        let (visible, _) = watch::channel(journal.position());
        Store {
            world: RwLock::new(world),
            journal,
            commit: Mutex::new(()),
            visible,
            healthy: AtomicBool::new(true),
        }
    }

    /// Runs a read on the current world; also returns the token of the state it read.
    pub fn read<R>(&self, f: impl FnOnce(&World) -> R) -> (R, u64) {
        let w = self.world.read();
        // Read under the lock: the token is set under the write lock, so it is exactly
        // the state `w` shows.
        let token = *self.visible.borrow();
        (f(&w), token)
    }

    /// Runs `f` with the world exclusively (simulate: apply and roll back). `f` must
    /// leave the world logically as it found it.
    pub fn exclusive<R>(&self, f: impl FnOnce(&mut World) -> R) -> (R, u64) {
        let mut w = self.world.write();
        let token = *self.visible.borrow();
        (f(&mut w), token)
    }

    /// The token of the newest visible state.
    pub fn visible(&self) -> u64 {
        *self.visible.borrow()
    }

    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// False after the engine diverged from its dry run; readiness reports it.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
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

    /// The commit section: dry run, journal, apply (see the module doc).
    pub fn commit(&self, events: &[Event]) -> Result<Committed, CommitError> {
        let _section = self.commit.lock();
        if !self.is_healthy() {
            return Err(CommitError::Unhealthy);
        }
        mutate::dry_run_batch(&mut self.world.write(), events)?;
        let token = self.journal.append(events)?;
        let mut w = self.world.write();
        match mutate::apply_batch(&mut w, events) {
            Ok(outcome) => {
                self.visible.send_replace(token);
                Ok(Committed { token, outcome })
            }
            Err(e) => {
                self.healthy.store(false, Ordering::SeqCst);
                Err(CommitError::Diverged(e))
            }
        }
    }

    /// Empties the world (admin reset), recorded in the journal first.
    pub fn reset(&self) -> Result<u64, CommitError> {
        let _section = self.commit.lock();
        let token = self.journal.reset()?;
        let mut w = self.world.write();
        *w = World::new();
        self.visible.send_replace(token);
        Ok(token)
    }

    /// Writes a checkpoint of the world through the journal (between commits, so the
    /// world holds exactly the journal's records); None when the journal keeps none.
    pub fn checkpoint(&self) -> Result<Option<u64>, JournalError> {
        let _section = self.commit.lock();
        let w = self.world.read();
        self.journal.checkpoint(&w)
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

/// The partition a party id belongs to among `n` (FNV-1a: stable across runs and
/// platforms, unlike the std hasher).
pub fn partition_of(party: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in party.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if n == 0 { 0 } else { (h % n as u64) as usize }
}

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

/// Commit a batch in this partition (all other partitions it touches are held).
#[derive(Message)]
#[rtype(result = "Result<Committed, CommitError>")]
pub struct Commit {
    pub events: Arc<Vec<Event>>,
}

impl Handler<Commit> for Partition {
    type Result = Result<Committed, CommitError>;

    // Runs synchronously on this partition's own arbiter thread: the mailbox waits, which
    // is the per-partition ordering; other partitions and every reader go on.
    fn handle(&mut self, msg: Commit, _: &mut Context<Self>) -> Self::Result {
        tracing::debug!(partition = self.index, events = msg.events.len(), "commit");
        self.store.commit(&msg.events)
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
        let res = addr
            .send(Commit {
                events: Arc::new(events),
            })
            .await
            .map_err(|_| CommitError::PartitionGone(last))?;
        drop(releases);
        res
    }

    /// Stops the partition actors and their threads (after the HTTP server stopped).
    pub fn stop(&self) {
        let arbiters = std::mem::take(&mut *self.arbiters.lock());
        for a in arbiters {
            a.stop();
            let _ = a.join();
        }
    }
}
