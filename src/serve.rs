//! `delegraph serve`: configuration from flags and environment, then the HTTP API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use delegraph::api::auth::{Auth, JwtAuth};
use delegraph::api::limits::Limits;
use delegraph::api::{ServerConfig, serve};
use delegraph::partition::Store;
use delegraph::partition::journal::{Journal, MemoryJournal};
use delegraph::persist::Options;
use delegraph::persist::durable::recover;
use delegraph::world::World;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Partitions of the graph, each compacted by an actor.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Keep each HTTP worker to one core, in turn (Linux): two workers then never queue
    /// behind each other on one core while the other core runs something else (on the
    /// medium world, 2 cores, it lowered the p99.9 of checks beside background work and
    /// idle; see BENCHMARKS.md, w15gate). `false`: the scheduler places them.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pin_workers: bool,
    /// Directory of the write-ahead log and checkpoints: recovered at start, every
    /// write durable before it is answered. Without it writes live in memory only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// With `--data-dir`: write a checkpoint (a snapshot, read back, then the log
    /// behind the older of the two kept snapshots retired) once this many bytes were
    /// logged since the last one. Written from a pinned version on a background thread:
    /// readers and writers go on. 0: only at shutdown.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_CHECKPOINT_BYTES)]
    checkpoint_bytes: u64,
    /// Snapshot to start from (with `--data-dir`: only when the directory is new).
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// HS256: a file holding the shared secret (or set DELEGRAPH_JWT_HS256_SECRET).
    #[arg(long, value_name = "FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// RS256: the issuer's public key, PEM (or set DELEGRAPH_JWT_RS256_PUBLIC_KEY_FILE).
    #[arg(long, value_name = "FILE", env = "DELEGRAPH_JWT_RS256_PUBLIC_KEY_FILE")]
    jwt_rs256_public_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "DELEGRAPH_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "DELEGRAPH_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Clock skew tolerated on a token's `exp`, `nbf` and `iat`, in seconds.
    #[arg(long, env = "DELEGRAPH_JWT_LEEWAY_SECS", default_value_t = delegraph::api::auth::DEFAULT_LEEWAY_SECS)]
    jwt_leeway_secs: u64,
    /// Development mode: no authentication at all. Never use it outside a laptop.
    #[arg(long)]
    dev_no_auth: bool,
    /// Allow `POST /v1/admin/reset` (scope admin) to empty the world, for
    /// `delegraph test --server`.
    #[arg(long)]
    allow_reset: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most events in one batch.
    #[arg(long, default_value_t = Limits::default().max_batch_events)]
    max_batch_events: usize,
    /// Longest a request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Time budget of one `simulate`, in milliseconds (keep it below the request
    /// timeout); past it 413 `limit_exceeded`.
    #[arg(long, default_value_t = Limits::default().simulate_time.as_millis() as u64)]
    simulate_time_ms: u64,
    /// Memory budget of one `simulate`: the most entries it holds at once (the event's
    /// changes, the permits of each class of holders, one subject's accesses before and
    /// after); past it 413 `limit_exceeded`.
    #[arg(long, default_value_t = Limits::default().simulate_max_entries)]
    simulate_max_entries: usize,
    /// Background jobs (simulate, a2-impact, checkpoints over HTTP) running at once on
    /// low-priority threads (nice 10); the a2-impact report uses that many threads.
    #[arg(long, default_value_t = Limits::default().background_threads)]
    background_threads: usize,
    /// The engine clock follows the wall clock: a `clock` event is logged at least this
    /// often (seconds; never backwards), so expiry acts within it. 0 leaves the clock to
    /// the events sent (scenario runs against the server set it themselves).
    #[arg(long, default_value_t = 5)]
    clock_interval_secs: u64,
    /// The most nodes and edges a partition's delta (its changes since its base) may
    /// hold: past half of it the partition's actor folds the delta into a new base in
    /// the background; at it, the writer folds before publishing. Smaller: less memory
    /// and cheaper reads of changed parties, more folds (each costs about the size of
    /// the partition). Default: 100 000, or an eighth of the partition's nodes and edges
    /// when that is more (a national world's partition), so a fold's cost per change
    /// does not grow with the world.
    #[arg(long, value_name = "ENTRIES",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..))]
    delta_bound: Option<usize>,
}

/// The default of `--checkpoint-bytes`: 256 MiB of log (a few million small batches)
/// bounds the replay after a crash to seconds, while a checkpoint of a national world
/// stays rare.
const DEFAULT_CHECKPOINT_BYTES: u64 = 256 << 20;

fn auth(a: &ServeArgs) -> anyhow::Result<Auth> {
    let secret = match (
        &a.jwt_hs256_secret_file,
        std::env::var("DELEGRAPH_JWT_HS256_SECRET"),
    ) {
        (Some(f), _) => Some(
            std::fs::read(f)
                .with_context(|| format!("cannot read the HS256 secret `{}`", f.display()))?
                .trim_ascii()
                .to_vec(),
        ),
        (None, Ok(s)) => Some(s.into_bytes()),
        (None, Err(_)) => None,
    };
    let jwt = match (secret, &a.jwt_rs256_public_key) {
        (Some(_), Some(_)) => bail!("configure either an HS256 secret or an RS256 public key, not both"),
        (Some(s), None) => {
            if s.len() < 32 {
                // RFC 7518 §3.2: an HS256 key as long as the hash (256 bits) at least.
                tracing::warn!(
                    "the HS256 secret is {} bytes long; use at least 32 random bytes, or tokens can be forged by guessing it",
                    s.len()
                );
            }
            Some(JwtAuth::hs256(&s)?)
        }
        (None, Some(f)) => {
            let pem = std::fs::read(f)
                .with_context(|| format!("cannot read the RS256 public key `{}`", f.display()))?;
            Some(JwtAuth::rs256_pem(&pem)?)
        }
        (None, None) => None,
    };
    match (jwt, a.dev_no_auth) {
        (Some(_), true) => bail!("`--dev-no-auth` and a JWT key exclude each other"),
        (Some(mut j), false) => {
            j = j.leeway(a.jwt_leeway_secs);
            if let Some(i) = &a.jwt_issuer {
                j = j.issuer(i);
            }
            if let Some(au) = &a.jwt_audience {
                j = j.audience(au);
            }
            Ok(Auth::Jwt(Box::new(j)))
        }
        (None, true) => {
            let banner = "WARNING: --dev-no-auth: AUTHENTICATION IS OFF. Every request has every scope, \
                          writes and admin included. Development only.";
            eprintln!("{banner}");
            tracing::warn!("{banner}");
            Ok(Auth::Disabled)
        }
        (None, false) => bail!(
            "no JWT key configured: set DELEGRAPH_JWT_HS256_SECRET, --jwt-hs256-secret-file or \
             --jwt-rs256-public-key, or switch authentication off explicitly with --dev-no-auth"
        ),
    }
}

fn load_snapshot(path: &Path, partitions: usize) -> anyhow::Result<World> {
    let t = Instant::now();
    // Each partition's loading actor builds its part (see `partition::load_snapshot`).
    let (world, _) = delegraph::partition::load_snapshot(path, partitions)
        .with_context(|| format!("cannot load the snapshot `{}`", path.display()))?;
    eprintln!(
        "loaded `{}`: {} parties, {} resources, {} edges in {:.2?}",
        path.display(),
        world.graph.party_count(),
        world.graph.resource_count(),
        world.graph.edge_count(),
        t.elapsed()
    );
    Ok(world)
}

/// The world to start from and the journal to write to: recovery from `--data-dir`
/// (seeded from `--snapshot` when the directory is new), or `--snapshot` (or an empty
/// world) with the in-memory journal.
fn open_state(a: &ServeArgs) -> anyhow::Result<(World, Arc<dyn Journal>)> {
    let parts = a.partitions.max(1);
    let Some(dir) = &a.data_dir else {
        let world = match &a.snapshot {
            Some(p) => load_snapshot(p, parts)?,
            None => World::with_partitions(parts),
        };
        eprintln!(
            "note: no --data-dir: writes are kept in memory only (the in-memory journal) and are lost when the server stops"
        );
        return Ok((world, Arc::new(MemoryJournal::new())));
    };
    let t = Instant::now();
    let opts = Options {
        partitions: parts,
        ..Options::default()
    };
    let (mut world, log, rec) = recover(dir, &opts)
        .with_context(|| format!("cannot recover the data directory `{}`", dir.display()))?;
    for s in &rec.skipped_snapshots {
        eprintln!("warning: passed over an unreadable snapshot: {s}");
    }
    if rec.truncated_bytes > 0 {
        eprintln!("note: cut {} bytes of a torn log tail", rec.truncated_bytes);
    }
    match &a.snapshot {
        Some(p) if rec.fresh => {
            world = load_snapshot(p, parts)?;
            // The seed becomes the directory's first checkpoint (sequence 0), so a
            // restart recovers it without `--snapshot`.
            log.write_checkpoint(&world, 0)
                .with_context(|| format!("cannot write the first checkpoint in `{}`", dir.display()))?;
        }
        Some(p) => eprintln!(
            "note: --snapshot `{}` ignored: `{}` already holds a store",
            p.display(),
            dir.display()
        ),
        None => {}
    }
    eprintln!(
        "data directory `{}`: recovered to sequence {} (snapshot {}, {} log records replayed) in {:.2?}; writes are durable before they are answered",
        dir.display(),
        log.last_seq()?,
        rec.snapshot_seq,
        rec.replayed,
        t.elapsed()
    );
    Ok((world, Arc::new(log)))
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let auth = auth(&a)?;
    let (world, journal) = open_state(&a)?;
    let limits = Limits {
        max_body_bytes: a.max_body_bytes,
        max_batch_events: a.max_batch_events,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        simulate_time: Duration::from_millis(a.simulate_time_ms),
        simulate_max_entries: a.simulate_max_entries,
        background_threads: a.background_threads.max(1),
        ..Limits::default()
    };
    let config = ServerConfig {
        partitions: a.partitions.max(1),
        limits,
        auth,
        allow_reset: a.allow_reset,
        workers: a.workers,
        pin_workers: a.pin_workers,
        clock_interval: (a.clock_interval_secs > 0).then(|| Duration::from_secs(a.clock_interval_secs)),
    };
    let listener = TcpListener::bind(&a.bind).with_context(|| format!("cannot listen on `{}`", a.bind))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "delegraph listening on http://{addr} ({} partitions); API browser at http://{addr}/docs",
        config.partitions
    );
    let store = Arc::new(Store::new(world, journal));
    if let Some(bound) = a.delta_bound {
        store.set_delta_bound(bound);
    }
    let checkpointer = (a.data_dir.is_some() && a.checkpoint_bytes > 0)
        .then(|| Checkpointer::start(store.clone(), a.checkpoint_bytes))
        .transpose()?;
    let served = actix_web::rt::System::new().block_on(serve(config, store, listener));
    if let Some(c) = checkpointer {
        c.stop();
    }
    served.context("the server stopped with an error")?;
    eprintln!("delegraph stopped");
    Ok(())
}

/// Checkpoints by log size while serving: a background thread looks at the bytes
/// logged since the last checkpoint every `POLL` and, past the limit, writes one
/// (`Store::checkpoint`: from the pinned published version, no lock held while the
/// snapshot is written and read back). The thread runs at the background pool's low
/// priority (nice 10; the snapshot's worker threads inherit it), so readers keep their
/// CPU while it writes.
struct Checkpointer {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    const POLL: Duration = Duration::from_millis(500);

    fn start(store: Arc<Store>, limit: u64) -> anyhow::Result<Checkpointer> {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                // Background work: readers keep their CPU (as in the background pool).
                delegraph::background::lower_priority();
                let (lock, cv) = &*flag;
                let Ok(mut stopped) = lock.lock() else { return };
                // After a failure, wait a while before writing a whole snapshot again.
                let mut backoff_until = Instant::now();
                loop {
                    stopped = match cv.wait_timeout(stopped, Self::POLL) {
                        Ok((g, _)) => g,
                        Err(_) => return,
                    };
                    if *stopped {
                        return;
                    }
                    if !store.is_healthy()
                        || Instant::now() < backoff_until
                        || store.journal().bytes_since_checkpoint() < limit
                    {
                        continue;
                    }
                    drop(stopped);
                    let t = Instant::now();
                    match store.checkpoint() {
                        Ok(Some(seq)) => tracing::info!(seq, took = ?t.elapsed(), "checkpoint by log size"),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!("checkpoint by log size failed (the log keeps everything): {e}");
                            backoff_until = Instant::now() + Duration::from_secs(60);
                        }
                    }
                    stopped = match lock.lock() {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                }
            })
            .context("cannot start the checkpoint thread")?;
        Ok(Checkpointer { stop, thread })
    }

    fn stop(self) {
        if let Ok(mut s) = self.stop.0.lock() {
            *s = true;
        }
        self.stop.1.notify_all();
        let _ = self.thread.join();
    }
}
