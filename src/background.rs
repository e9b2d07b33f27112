//! Background work — `simulate`, the `a2-impact` report, checkpoints asked for over HTTP —
//! on a bounded pool of low-priority threads, so that readers keep their CPU.
//!
//! * **Bounded.** At most `threads` jobs run at once (a semaphore); at most
//!   [`MAX_WAITING`] more wait for a turn, and past that a job is refused
//!   ([`PoolError::Busy`]: the server answers 503 `busy` with `Retry-After`).
//! * **Low priority.** Each job runs on a thread of its own that first lowers its own
//!   scheduling priority (Linux: `setpriority(PRIO_PROCESS, gettid(), …)`, nice 10 above
//!   the process's own, at most 19, and the `SCHED_IDLE` class, per thread), so the
//!   HTTP workers win the CPU whenever both want it. Threads the job starts itself (the report's) call
//!   [`lower_priority`] too.
//! * **Giving way.** `SCHED_IDLE` alone is not enough: a reader that wakes while a
//!   normal thread runs is queued, and when that thread blocks the scheduler (EEVDF)
//!   may pick the background thread over the queued reader, which then waits for the
//!   next tick (4 ms at 250 Hz) before it is preempted. So background loops call
//!   [`pace`] often: after [`SLICE`] of work since it last did, the thread yields the
//!   CPU to whoever is runnable (nothing happens when no one is). Threads started by a
//!   background thread inherit its class and pace too; on other threads (the CLI,
//!   tests, the HTTP workers) [`pace`] does nothing. Files are written in pieces of at
//!   most [`PIECE`] bytes with a [`pace_checkpoint`] between them ([`Paced`]).
//! * **Stepping aside.** Yielding is still not enough on a machine the readers keep
//!   busy: a background thread that is *runnable* but starved keeps its core from
//!   pulling a reader queued on the other core until the next balancing tick (a core
//!   with only `SCHED_IDLE` threads runnable does not look for work), so reads saw
//!   milliseconds while a starved checkpoint made almost no progress. So while HTTP
//!   requests are being served (the middleware counts them in a [`Gate`]), [`pace`]
//!   blocks the thread until none is, for at most [`DEFER_JOB`] (simulate, the report: a
//!   client waits within a budget) or [`DEFER_CHECKPOINT`] ([`pace_checkpoint`]) at a
//!   time, then it works one more slice. A request waiting for its own job does not
//!   count.
//! * **Bursts, not instants.** The middleware sees a request only for part of its life
//!   (not while it is parsed or its answer written), and an idle-class thread runs
//!   exactly when its core has no reader: sampled then, "requests in flight" read "none"
//!   during a steady load, and the threads yielded instead of stepping aside. So the
//!   gate counts as busy for [`BURST`] after a request began or ended: a load is one
//!   burst, and the threads stay off the run queue until it has been quiet that long.
//! * **Cancellable.** A job gets a [`Cancel`] flag; the request that started it holds a
//!   [`CancelOnDrop`], so a client that goes away (or the request time limit, which drops
//!   the request) sets the flag and the job stops at its next check. The permit is held
//!   until the job's thread ends, so a cancelled job still counts until it has stopped.

use std::cell::Cell;
use std::io::Write;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

/// How many jobs may wait for a turn beyond those running.
pub const MAX_WAITING: usize = 16;

/// How many nice steps background threads put themselves below the process.
pub const NICE: i32 = 10;

/// A flag that asks a job to stop.
pub type Cancel = Arc<AtomicBool>;

/// Sets its flag when dropped: held by a request for as long as it waits for its job.
#[derive(Debug, Default)]
pub struct CancelOnDrop(pub Cancel);

impl CancelOnDrop {
    pub fn new() -> CancelOnDrop {
        CancelOnDrop::default()
    }

    /// The flag, for the job.
    pub fn flag(&self) -> Cancel {
        self.0.clone()
    }

    /// The job answered: dropping this no longer means anything.
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Why a job did not run or did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("{running} background job(s) are running and {waiting} waiting; try again shortly")]
    Busy { running: usize, waiting: usize },
    #[error("the background job stopped without an answer (an engine bug, or the server is stopping)")]
    Lost,
    #[error("cannot start a background thread: {0}")]
    Spawn(String),
}

/// The pool. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Pool {
    permits: Arc<Semaphore>,
    threads: usize,
    waiting: AtomicUsize,
}

impl Pool {
    /// A pool running at most `threads` jobs at once (at least 1).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        Pool {
            permits: Arc::new(Semaphore::new(threads)),
            threads,
            waiting: AtomicUsize::new(0),
        }
    }

    /// How many jobs may run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a low-priority thread of its own once a turn is free, and returns
    /// its answer. Refused when [`MAX_WAITING`] jobs are already waiting.
    pub async fn run<R: Send + 'static>(
        &self,
        name: &str,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, PoolError> {
        // The request waiting for its job is not a reader the job should make room for.
        let _aside = Aside::new();
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                if waiting >= MAX_WAITING {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(PoolError::Busy {
                        running: self.threads,
                        waiting,
                    });
                }
                let p = self.permits.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                p.map_err(|_| PoolError::Lost)?
            }
        };
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("bg-{name}"))
            .spawn(move || {
                lower_priority();
                let _ = tx.send(job());
                drop(permit);
            })
            .map_err(|e| PoolError::Spawn(e.to_string()))?;
        rx.await.map_err(|_| PoolError::Lost)
    }
}

/// Lowers the calling thread's scheduling priority to [`NICE`] steps below the process's
/// own (its main thread's nice value, capped at 19), so background work stays below the
/// HTTP workers also when the whole server was started under `nice`. Linux, per thread;
/// elsewhere, or if the system refuses, the thread keeps its priority. Calling it again
/// (or from a thread started by a lowered one) gives the same value, not a lower one.
pub fn lower_priority() {
    lower_nice();
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` has no preconditions; `sched_setscheduler` only reads its
    // arguments, and on Linux a thread id changes that one thread.
    unsafe {
        let tid = libc::gettid();
        // SCHED_IDLE: the thread runs only on a core no normal thread wants, and a
        // waking reader preempts it at once (a nice value alone still gives it a share
        // of a busy core, which readers saw as milliseconds at p99.9).
        let param = libc::sched_param { sched_priority: 0 };
        let _ = libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param);
    }
    if knobs().half_cores {
        keep_to_upper_half();
    }
    // The next `pace` asks the class again.
    BACKGROUND.with(|b| b.set(None));
}

/// The nice part of [`lower_priority`] alone: the calling thread's nice value set to
/// [`NICE`] steps below the process's own, in its normal scheduling class (for a thread
/// that must still get a share of a busy core, like the store's janitor). Linux, per
/// thread; elsewhere, or if the system refuses, the thread keeps its priority.
pub fn lower_nice() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` has no preconditions; `setpriority` only reads its arguments, and
    // on Linux PRIO_PROCESS with a thread id changes that one thread.
    unsafe {
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, lowered(process_nice()));
    }
}

/// Puts the calling thread in the `SCHED_BATCH` class (Linux; elsewhere, or if the
/// system refuses, nothing changes): the same share of the CPU as a normal thread at its
/// nice value, but when it wakes it does not preempt the thread running on its core; it
/// waits for that thread to block or for the next tick. For the store's write pipeline
/// (sequencer, publisher, log flusher, janitor; a compaction's fold joins it through
/// [`join_write_pipeline`] instead): each
/// write wakes those threads a few times, and as wake-up preemptions they cut into the
/// HTTP workers mid-request, which readers beside a write burst saw as a p99.9 several
/// times an idle server's. Unlike `SCHED_IDLE` ([`lower_priority`]) the writes keep their
/// share under a load that never pauses. Only a thread in the normal class moves: one the
/// operator started idle or real-time (`chrt`) keeps its class.
pub fn no_wake_preemption() {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` has no preconditions; `sched_getscheduler` and
    // `sched_setscheduler` only read their arguments, and on Linux a thread id changes
    // that one thread.
    unsafe {
        let tid = libc::gettid();
        if libc::sched_getscheduler(tid) == libc::SCHED_OTHER {
            let param = libc::sched_param { sched_priority: 0 };
            let _ = libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param);
        }
    }
}

/// The calling thread's id (Linux `gettid`; 0 elsewhere), for [`join_write_pipeline`].
pub fn thread_id() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` has no preconditions.
    unsafe {
        libc::gettid()
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Moves thread `tid` (0: none) into the write pipeline's class: out of `SCHED_IDLE`
/// into `SCHED_BATCH`, at the process's own nice value (Linux); true if the class
/// changed. Leaving `SCHED_IDLE` needs the same right as lowering a nice value
/// (`CAP_SYS_NICE`, or a `RLIMIT_NICE` that allows the nice value): without it both
/// calls are refused (`EPERM`), the thread stays in the idle class at its lowered nice,
/// and the answer is false. The kernel does not check that `tid` is a thread of this
/// process: the caller must know that it still is. For a background fold that writers
/// are about to wait for.
pub fn join_write_pipeline(tid: i32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: `sched_setscheduler` and `setpriority` only read their arguments (no
    // memory is written); on Linux a thread id changes that one thread, a thread id
    // that has no thread is refused (ESRCH), and a refused call changes nothing.
    unsafe {
        if tid == 0 {
            return false;
        }
        let param = libc::sched_param { sched_priority: 0 };
        let moved = libc::sched_setscheduler(tid, libc::SCHED_BATCH, &param) == 0;
        if moved {
            let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, process_nice());
        }
        moved
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        false
    }
}

/// Keeps the calling thread to the upper half of the cores the process may use (at least
/// one; Linux): the other half never has a background thread runnable, so a core there
/// that runs out of readers pulls a queued one at once. From the process's own set (its
/// main thread's), so calling it again does not halve it again.
fn keep_to_upper_half() {
    let cores = process_cores();
    if cores.len() >= 2 {
        keep_thread_to(cores.get(cores.len() / 2..).unwrap_or_default());
    }
}

/// The cores the process may use, in ascending order: its main thread's set (Linux;
/// elsewhere, or if the system refuses, none).
pub fn process_cores() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    // SAFETY: `cpu_set_t` is plain data (all zeroes is the empty set); the call only
    // writes the set passed with its size; `getpid` has no preconditions.
    unsafe {
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(libc::getpid(), size, &mut all) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|c| libc::CPU_ISSET(*c, &all))
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Keeps the calling thread to `cores` (Linux; nothing changes for an empty list,
/// elsewhere, or if the system refuses).
pub fn keep_thread_to(cores: &[usize]) {
    #[cfg(target_os = "linux")]
    // SAFETY: `cpu_set_t` is plain data (all zeroes is the empty set); only numbers
    // within the set's size are set; the call only reads the set passed with its size;
    // `gettid` has no preconditions.
    unsafe {
        let within = |c: &&usize| **c < libc::CPU_SETSIZE as usize;
        if !cores.iter().any(|c| within(&c)) {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cores.iter().filter(within) {
            libc::CPU_SET(*c, &mut set);
        }
        let _ = libc::sched_setaffinity(libc::gettid(), std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cores;
}

/// How long a background thread works between two [`pace`] yields.
pub const SLICE: Duration = Duration::from_micros(100);

/// The most bytes a [`Paced`] writer hands the kernel in one call.
pub const PIECE: usize = 64 * 1024;

thread_local! {
    /// Whether this thread runs in the `SCHED_IDLE` class (None: not asked yet).
    static BACKGROUND: Cell<Option<bool>> = const { Cell::new(None) };
    /// When this thread last gave way.
    static LAST_YIELD: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// On a background thread (one in the `SCHED_IDLE` class), after [`SLICE`] of work since
/// it last did: while HTTP requests are being served, steps aside (blocks, off the run
/// queue) until none is or for at most [`DEFER_JOB`]; otherwise yields the CPU, so that
/// a reader queued on this core runs now rather than at the next tick. Costs a clock
/// read; does nothing on other threads. For `simulate` and the `a2-impact` report.
#[inline]
pub fn pace() {
    pace_with(knobs().defer_job);
}

/// [`pace`] for a checkpoint's work (its plan, encoding, file writes and read-back),
/// which no client waits for: steps aside for at most [`DEFER_CHECKPOINT`] at a time.
#[inline]
pub fn pace_checkpoint() {
    pace_with(knobs().defer_checkpoint);
}

#[inline]
fn pace_with(defer: Duration) {
    let background = BACKGROUND.with(|b| match b.get() {
        Some(v) => v,
        None => {
            let v = is_idle_class();
            b.set(Some(v));
            v
        }
    });
    if !background {
        return;
    }
    let now = Instant::now();
    LAST_YIELD.with(|l| match l.get() {
        Some(t) if now.duration_since(t) < knobs().slice => {}
        Some(_) => {
            if !defer.is_zero() && gate().busy_at(now) {
                gate().step_aside(defer);
            } else {
                give_way();
            }
            l.set(Some(Instant::now()));
        }
        None => l.set(Some(now)),
    });
}

/// Calls [`pace`] once every [`Pacer::EVERY`] steps: for tight loops (a sort's
/// comparisons, a walk over every party) whose steps cost less than a clock read.
#[derive(Debug, Default)]
pub struct Pacer(u32);

impl Pacer {
    /// Steps between two [`pace`] calls.
    pub const EVERY: u32 = 1024;

    pub fn new() -> Pacer {
        Pacer(0)
    }

    /// One step.
    #[inline]
    pub fn step(&mut self) {
        self.0 += 1;
        if self.0 >= Self::EVERY {
            self.0 = 0;
            pace();
        }
    }
}

/// What background work steps aside for: the HTTP requests being served, and the
/// [`BURST`] after each.
#[derive(Debug)]
pub struct Gate {
    /// Requests being served, less those waiting for a background job of their own (a
    /// checkpoint asked for over HTTP is not a reader it should make room for).
    in_flight: AtomicIsize,
    /// When a request last began or ended: microseconds since [`epoch`], plus one (0:
    /// never).
    last: AtomicU64,
    /// How long the gate stays busy after a request began or ended (zero: only while
    /// one is in flight).
    burst: Duration,
    /// Threads waiting in [`Gate::step_aside`].
    waiting: AtomicUsize,
    /// Bumped each time the last request in flight ends, when there is no burst to wait
    /// out; waiters wait on it (a futex: no lock a reader could wait for behind a starved
    /// background thread).
    quiet: AtomicU32,
}

/// Why [`Gate::step_aside`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// No request was (or is any longer) being served, nor within the burst.
    Quiet,
    /// Requests were still being served when the bound ran out.
    Bound,
}

/// The server's gate: its middleware counts every request here.
fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| Gate::new(knobs().burst))
}

/// The instant the gate's timestamps count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` as a gate timestamp ([`Gate::last`]).
fn stamp(t: Instant) -> u64 {
    let us = t.saturating_duration_since(epoch()).as_micros();
    u64::try_from(us).unwrap_or(u64::MAX - 1) + 1
}

impl Gate {
    /// A gate that stays busy for `burst` after a request began or ended.
    pub fn new(burst: Duration) -> Gate {
        Gate {
            in_flight: AtomicIsize::new(0),
            last: AtomicU64::new(0),
            burst,
            waiting: AtomicUsize::new(0),
            quiet: AtomicU32::new(0),
        }
    }

    /// Counts one request as being served while the answer lives.
    pub fn serving(&self) -> Serving<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Serving(self)
    }

    fn touch(&self) {
        if !self.burst.is_zero() {
            self.last.store(stamp(Instant::now()), Ordering::Relaxed);
        }
    }

    /// Whether some request is being served right now, or began or ended within the
    /// burst.
    pub fn busy(&self) -> bool {
        self.busy_at(Instant::now())
    }

    /// [`Gate::busy`] at `now` (a clock read the caller already made).
    pub fn busy_at(&self, now: Instant) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0 || self.quiet_in(now).is_some()
    }

    /// How long until the burst of the last request is over (None: it is, or there is
    /// no burst).
    fn quiet_in(&self, now: Instant) -> Option<Duration> {
        let last = self.last.load(Ordering::Relaxed);
        if last == 0 || self.burst.is_zero() {
            return None;
        }
        let ends = Duration::from_micros(last - 1) + self.burst;
        ends.checked_sub(now.saturating_duration_since(epoch()))
            .filter(|d| !d.is_zero())
    }

    /// Blocks the calling thread while requests are being served (or within the burst
    /// after the last one), for at most `most`: off the run queue, a background thread
    /// neither takes a core nor keeps one from pulling a queued reader (a core with only
    /// `SCHED_IDLE` threads runnable does not look for work elsewhere until the next
    /// balancing tick). Without a burst, woken as soon as the last request in flight
    /// ends; with one, it looks again every burst at most (a request ends, then the
    /// burst has to pass anyway), so the requests never wake anyone.
    pub fn step_aside(&self, most: Duration) -> Stepped {
        let deadline = Instant::now() + most;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let why = loop {
            let seen = self.quiet.load(Ordering::SeqCst);
            let now = Instant::now();
            if !self.busy_at(now) {
                break Stepped::Quiet;
            }
            if now >= deadline {
                break Stepped::Bound;
            }
            let left = deadline - now;
            if self.burst.is_zero() {
                wait_while_equal(&self.quiet, seen, left);
            } else {
                let wait = self.quiet_in(now).unwrap_or(self.burst);
                std::thread::sleep(wait.min(self.burst).min(left));
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        why
    }

    fn ended(&self) {
        self.touch();
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.burst.is_zero()
            && self.waiting.load(Ordering::SeqCst) > 0
            && knobs().wake_on_quiet
        {
            self.quiet.fetch_add(1, Ordering::SeqCst);
            wake_all(&self.quiet);
        }
    }
}

/// Blocks while `word` holds `seen`, for at most `most` (Linux: a futex wait, which
/// returns at once if the word already changed; elsewhere a short sleep).
fn wait_while_equal(word: &AtomicU32, seen: u32, most: Duration) {
    #[cfg(target_os = "linux")]
    {
        let ts = libc::timespec {
            tv_sec: most.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: most.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the address is a live, aligned 32-bit atomic for the whole call; the
        // kernel only reads it and the timespec.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                &ts as *const libc::timespec,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (word, seen);
        std::thread::sleep(most.min(Duration::from_millis(1)));
    }
}

/// Wakes every thread in [`wait_while_equal`] on `word`.
fn wake_all(word: &AtomicU32) {
    #[cfg(target_os = "linux")]
    // SAFETY: as in `wait_while_equal`; FUTEX_WAKE only reads the address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = word;
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(BURST)
    }
}

/// One request being served ([`Gate::serving`]); ends when dropped.
#[derive(Debug)]
pub struct Serving<'a>(&'a Gate);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// How long an HTTP worker may run without sleeping before it lets the other threads of
/// its core have a turn ([`take_turns`]).
pub const WORKER_TURN: Duration = Duration::from_micros(100);

thread_local! {
    /// This thread's voluntary context switches when last asked, and since when it has
    /// run without one.
    static STREAK: Cell<(i64, Option<Instant>)> = const { Cell::new((-1, None)) };
    /// Turns this thread gave away ([`turns_given`]).
    static GIVEN: Cell<u64> = const { Cell::new(0) };
}

/// How many times the calling thread yielded in [`take_turns`] (for tests).
pub fn turns_given() -> u64 {
    GIVEN.with(Cell::get)
}

/// Called by an HTTP worker as a request begins: once the worker has run for
/// [`WORKER_TURN`] without sleeping (it found another request ready every time), it
/// yields its core once. A worker kept to one core that never sleeps keeps every thread
/// queued behind it on that core — the clients of the requests it answers among them,
/// when they share the machine — waiting for the scheduler's next tick (4 ms here):
/// whole runs of the load tester then had a p99.9 of 2–4 ms instead of 0.2–0.5 ms
/// (BENCHMARKS.md, "The read tail's slow mode"). Costs a clock read per request and one
/// `getrusage` per turn.
pub fn take_turns() {
    let turn = knobs().worker_turn;
    if turn.is_zero() {
        return;
    }
    let now = Instant::now();
    STREAK.with(|s| {
        let (last, since) = s.get();
        // Asked at most once a turn: within one, nothing to do whatever happened.
        if since.is_some_and(|t| now.saturating_duration_since(t) < turn) {
            return;
        }
        let switches = voluntary_switches();
        if since.is_none() || switches != last {
            // It slept since `since` (or this is its first request): a new streak.
            s.set((switches, Some(now)));
            return;
        }
        // A yield is not a voluntary switch: the count stays `switches`.
        give_way();
        GIVEN.with(|g| g.set(g.get() + 1));
        s.set((switches, Some(Instant::now())));
    });
}

/// The calling thread's voluntary context switches so far (Linux; 0 elsewhere): it
/// slept in between if the number moved.
fn voluntary_switches() -> i64 {
    #[cfg(target_os = "linux")]
    // SAFETY: `u` is a valid, writable rusage; getrusage only writes it, and only reads
    // it after a successful call.
    unsafe {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr()) != 0 {
            return 0;
        }
        u.assume_init().ru_nvcsw
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// This process's CPU time so far: (user, system) seconds (unix; None elsewhere). The
/// server publishes it in `/metrics` (`process_cpu_seconds_total`); the load tester
/// reads its own and the server's around a load, to report CPU per request.
pub fn process_cpu_time() -> Option<(f64, f64)> {
    #[cfg(unix)]
    {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `u` is a valid, writable rusage; getrusage only writes it.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: getrusage succeeded, so it filled the struct (zeroed before anyway).
        let u = unsafe { u.assume_init() };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Some((secs(u.ru_utime), secs(u.ru_stime)))
    }
    #[cfg(not(unix))]
    None
}

/// Counts one HTTP request of the server as being served while the answer lives (the
/// server's middleware holds one per request).
pub fn serving() -> Serving<'static> {
    gate().serving()
}

/// A request that waits for its background job does not count as being served.
struct Aside(());

impl Aside {
    fn new() -> Aside {
        gate().in_flight.fetch_sub(1, Ordering::SeqCst);
        Aside(())
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        gate().in_flight.fetch_add(1, Ordering::SeqCst);
    }
}

/// Longest a `simulate` or report thread steps aside at a time while requests are being
/// served (a client waits for it within a time budget): with [`SLICE`] of work between
/// two, at least about 2 % of a core.
pub const DEFER_JOB: Duration = Duration::from_millis(5);

/// Longest a checkpoint's thread steps aside at a time while requests are being served:
/// with [`SLICE`] of work between two, at least about 0.5 % of a core per thread, so a
/// checkpoint under a load that never pauses still ends (on the medium world, ~0.3 s of
/// CPU, within about a minute); at full speed whenever no request is in flight.
pub const DEFER_CHECKPOINT: Duration = Duration::from_millis(20);

/// How long the [`Gate`] stays busy after a request began or ended: longer than the
/// gaps between the requests of a steady load (a connection's next request, an answer
/// being written), short enough that background work resumes at full speed about a
/// millisecond after the load stops.
pub const BURST: Duration = Duration::from_millis(1);

/// Pacing settings: the constants above, which the environment may override for a
/// measurement (`DELEGRAPH_BG_SLICE_US`, `DELEGRAPH_BG_DEFER_US`,
/// `DELEGRAPH_CKPT_DEFER_US`, `DELEGRAPH_BG_BURST_US`, in microseconds; a zero defer
/// only yields, a zero burst counts only the requests in flight). Read once.
struct Knobs {
    slice: Duration,
    defer_job: Duration,
    defer_checkpoint: Duration,
    burst: Duration,
    /// Background threads keep to the upper half of the cores.
    half_cores: bool,
    /// The end of the last request in flight wakes the threads that stepped aside
    /// (without a burst; with one, they look again every burst).
    wake_on_quiet: bool,
    /// See [`take_turns`] (zero: never yield).
    worker_turn: Duration,
}

fn knobs() -> &'static Knobs {
    static K: OnceLock<Knobs> = OnceLock::new();
    K.get_or_init(|| {
        let us = |name: &str, default: u64| {
            Duration::from_micros(
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default),
            )
        };
        Knobs {
            slice: us("DELEGRAPH_BG_SLICE_US", SLICE.as_micros() as u64),
            defer_job: us("DELEGRAPH_BG_DEFER_US", DEFER_JOB.as_micros() as u64),
            defer_checkpoint: us("DELEGRAPH_CKPT_DEFER_US", DEFER_CHECKPOINT.as_micros() as u64),
            burst: us("DELEGRAPH_BG_BURST_US", BURST.as_micros() as u64),
            half_cores: std::env::var("DELEGRAPH_BG_ALL_CORES").is_err(),
            wake_on_quiet: std::env::var("DELEGRAPH_BG_NO_WAKE").is_err(),
            worker_turn: us("DELEGRAPH_WORKER_TURN_US", WORKER_TURN.as_micros() as u64),
        }
    })
}

/// Yields the CPU to any runnable thread (Linux: `sched_yield`; elsewhere the standard
/// library's yield).
fn give_way() {
    #[cfg(target_os = "linux")]
    // SAFETY: `sched_yield` takes no arguments and has no preconditions.
    unsafe {
        libc::sched_yield();
    }
    #[cfg(not(target_os = "linux"))]
    std::thread::yield_now();
}

/// A writer that hands its bytes to the inner writer in pieces of at most [`PIECE`],
/// with a [`pace`] before each: a background thread copying megabytes into the page
/// cache stays in the kernel (where, without kernel preemption, a waking reader cannot
/// take the core) for one piece at a time.
#[derive(Debug)]
pub struct Paced<W: Write>(pub W);

impl<W: Write> Paced<W> {
    pub fn into_inner(self) -> W {
        self.0
    }
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        pace_checkpoint();
        let n = buf.len().min(PIECE);
        self.0.write(buf.get(..n).unwrap_or(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        pace_checkpoint();
        self.0.flush()
    }
}

/// Whether the calling thread runs under `SCHED_IDLE` (Linux; false elsewhere), for tests.
pub fn is_idle_class() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: `gettid` has no preconditions; `sched_getscheduler` only reads its argument.
    unsafe {
        libc::sched_getscheduler(libc::gettid()) == libc::SCHED_IDLE
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// The nice value background threads take in a process whose main thread runs at `base`.
pub fn lowered(base: i32) -> i32 {
    base.saturating_add(NICE).min(19)
}

/// The nice value of the process's main thread (Linux; 0 elsewhere).
pub fn process_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: `getpid` has no preconditions; `getpriority` only reads its arguments (the
    // main thread's id is the process id).
    unsafe {
        let pid = libc::getpid();
        libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// The nice value of the calling thread (Linux; 0 elsewhere), for tests.
pub fn current_nice() -> i32 {
    #[cfg(target_os = "linux")]
    // SAFETY: as in `lower_priority`; `getpriority` only reads its arguments.
    unsafe {
        let tid = libc::gettid();
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

/// Admits one job of a kind at a time (the `a2-impact` report, an HTTP checkpoint).
#[derive(Debug, Default)]
pub struct OneAtATime(AtomicBool);

/// The turn of the one job running; dropping it (when the job's thread ends) frees it.
#[derive(Debug)]
pub struct Turn(Arc<OneAtATime>);

impl OneAtATime {
    /// The turn, unless a job of this kind is running.
    pub fn try_start(self: &Arc<Self>) -> Option<Turn> {
        (!self.0.swap(true, Ordering::SeqCst)).then(|| Turn(self.clone()))
    }

    pub fn is_running(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        (self.0).0.store(false, Ordering::SeqCst);
    }
}

/// The server's background work: the pool, and the kinds that run one at a time.
#[derive(Debug)]
pub struct Jobs {
    pub pool: Pool,
    /// The `a2-impact` report.
    pub report: Arc<OneAtATime>,
    /// A checkpoint asked for over HTTP.
    pub checkpoint: Arc<OneAtATime>,
}

impl Jobs {
    pub fn new(threads: usize) -> Jobs {
        Jobs {
            pool: Pool::new(threads),
            report: Arc::default(),
            checkpoint: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_thread_steps_aside_until_the_last_request_ends() {
        // Without a burst: only the requests in flight count.
        let gate = Gate::new(Duration::ZERO);
        assert_eq!(gate.step_aside(Duration::from_secs(60)), Stepped::Quiet);
        let first = gate.serving();
        let second = gate.serving();
        assert!(gate.busy());
        // Still busy when the bound runs out: the thread goes back to work.
        assert_eq!(gate.step_aside(Duration::from_millis(5)), Stepped::Bound);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| gate.step_aside(Duration::from_secs(600)));
            drop(first);
            drop(second);
            // Woken by the end of the last request, not by its (ten-minute) bound.
            assert_eq!(waiter.join().ok(), Some(Stepped::Quiet));
        });
        assert!(!gate.busy());
    }

    #[test]
    fn the_gate_stays_busy_for_a_burst_after_the_last_request() {
        // A load is the requests and the gaps between them: a background thread that
        // runs in such a gap still finds the gate busy, and steps aside.
        let gate = Gate::new(Duration::from_secs(3600));
        assert!(!gate.busy(), "no request yet");
        assert_eq!(gate.step_aside(Duration::from_secs(60)), Stepped::Quiet);
        drop(gate.serving());
        assert!(gate.busy(), "a request ended just now");
        assert_eq!(gate.step_aside(Duration::from_millis(5)), Stepped::Bound);
        // The burst counts from the last request: once it has passed, the gate is quiet.
        let later = Instant::now() + Duration::from_secs(3601);
        assert!(!gate.busy_at(later));
        let gate = Gate::new(Duration::from_millis(2));
        drop(gate.serving());
        // Quiet once the (short) burst has passed; the bound is not what ends the wait.
        assert_eq!(gate.step_aside(Duration::from_secs(600)), Stepped::Quiet);
        assert!(!gate.busy());
    }

    #[test]
    fn a_pacer_paces_once_every_so_many_steps() {
        let mut p = Pacer::new();
        for _ in 0..Pacer::EVERY - 1 {
            p.step();
        }
        assert_eq!(p.0, Pacer::EVERY - 1);
        p.step();
        assert_eq!(p.0, 0);
    }
}
