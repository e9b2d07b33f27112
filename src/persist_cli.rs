//! The persistence commands of the CLI: `snapshot save|load|verify|stats`, `import`
//! and the hidden `__crash-child` used by the crash test.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use delegraph::persist::{Durable, import, invariants, snapshot};
use delegraph::world::World;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Build a world from a JSON Lines event file and save it as a snapshot.
    ///
    /// Same as `delegraph import FILE --out OUT`. One bare event per line, as in the
    /// scenario format: `{"grant": {...}}`, e.g.
    /// `{"party": {"id": "kari", "kind": "person"}}`; `#` comments and blank lines are
    /// skipped.
    Save {
        /// The JSON Lines file of events to apply (one bare event per line, e.g.
        /// `{"grant": {...}}`).
        #[arg(long = "from", value_name = "FILE.jsonl")]
        from: PathBuf,
        /// The snapshot file to write (atomically: temp file, fsync, rename).
        out: PathBuf,
    },
    /// Load a snapshot, then print its statistics, the load time and a few answers.
    Load {
        file: PathBuf,
        /// How many example answers (authorized parties of some persons) to print.
        #[arg(long, default_value_t = 3)]
        examples: usize,
        /// Load into a graph of this many parts, as `serve --partitions` does (the parts
        /// are filled in parallel; a file written in as many sections loads each section
        /// straight into its part).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
        partitions: u16,
    },
    /// Check a snapshot: every checksum, the counts, every reference and the
    /// structural invariants of the world it holds. Exits non-zero on any fault.
    Verify { file: PathBuf },
    /// Print a snapshot's header (version, creation time, counts) without loading it.
    Stats { file: PathBuf },
    /// Load a snapshot of any version this build reads and save it in the current
    /// version (printing the load and the save time).
    Upgrade {
        file: PathBuf,
        /// The snapshot file to write (atomically: temp file, fsync, rename).
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// The JSON Lines file of events: one bare event per line, as in the scenario
    /// format, e.g. `{"grant": {...}}` or `{"party": {"id": "kari", "kind": "person"}}`
    /// (`#` comments and blank lines skipped). Events are applied in order; the first
    /// refused line is reported with its number and nothing is written.
    file: PathBuf,
    /// Where to write the resulting snapshot.
    #[arg(long, value_name = "SNAPSHOT")]
    out: PathBuf,
}

#[derive(Args)]
pub struct CrashChildArgs {
    pub dir: PathBuf,
    /// Writer threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Seed of the event stream (each thread and restart derives its own).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Graph partitions of the recovered world.
    #[arg(long, default_value_t = 1)]
    pub partitions: usize,
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

fn import_file(file: &Path) -> Result<World> {
    let f = File::open(file).with_context(|| format!("cannot open `{}`", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let pb = bar(size, "import");
    let mut world = World::new();
    let t = Instant::now();
    let stats = import::import(&mut world, BufReader::with_capacity(1 << 20, f), &mut |b| {
        pb.set_position(b)
    })
    .with_context(|| format!("import of `{}` refused", file.display()))?;
    pb.finish_and_clear();
    eprintln!(
        "imported {} events from {} lines in {:.2?}",
        stats.events,
        stats.lines,
        t.elapsed()
    );
    Ok(world)
}

fn save(world: &World, out: &Path) -> Result<()> {
    let total = snapshot::count(world).total();
    let pb = bar(total, "save");
    let t = Instant::now();
    let counts = snapshot::save(world, out, 0, &mut |n| pb.set_position(n))?;
    pb.finish_and_clear();
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "saved `{}`: {} records, {} bytes in {:.2?}",
        out.display(),
        counts.total(),
        size,
        t.elapsed()
    );
    Ok(())
}

fn load(file: &Path) -> Result<(World, snapshot::Loaded, std::time::Duration)> {
    load_in(file, 1)
}

fn load_in(file: &Path, parts: usize) -> Result<(World, snapshot::Loaded, std::time::Duration)> {
    let (header, _) = snapshot::read_header(file)?;
    let pb = bar(header.counts.total(), "load");
    let t = Instant::now();
    // A version 5 file: each partition's loading actor builds its part (no progress in
    // between); older ones report their progress.
    let (world, loaded) = match snapshot::PartsLoad::open(file, parts)? {
        Some(l) => delegraph::partition::load_parts(l)?,
        None => snapshot::load_in(file, parts, &mut |n| pb.set_position(n))?,
    };
    let took = t.elapsed();
    pb.finish_and_clear();
    Ok((world, loaded, took))
}

fn print_header(h: &snapshot::Header, version: u32) {
    println!("schema version  {version}");
    println!("created at      {}", h.created_at);
    println!("written by      delegraph {}", h.engine);
    println!("last sequence   {}", h.last_seq);
    println!("compression     {}", h.compression);
    println!("parties         {}", h.counts.parties);
    println!("resources       {}", h.counts.resources);
    println!("assignments     {}", h.counts.assignments);
    println!("delegations     {}", h.counts.delegations);
    println!("main units      {}", h.counts.main_units);
    println!("systems         {}", h.counts.systems);
    println!("requests        {}", h.counts.requests);
    println!("agent sys users {}", h.counts.agent_system_users);
    println!("policies        {}", h.counts.policies);
    println!("instances       {}", h.counts.instances);
    println!("access lists    {}", h.counts.access_lists);
    println!("resource lists  {}", h.counts.resource_lists);
}

fn examples(world: &World, n: usize) {
    use delegraph::model::PartyKind;
    use delegraph::resolve;
    let g = &world.graph;
    let c = world.catalog;
    if n == 0 {
        return;
    }
    let persons = persons_of(g, |p| p.kind == PartyKind::Person);
    let mut shown = 0;
    for (node, p) in by_id(persons, n) {
        if shown >= n {
            break;
        }
        let t = Instant::now();
        let ap = resolve::authorized_parties(world, node);
        let took = t.elapsed();
        if ap.is_empty() {
            continue;
        }
        shown += 1;
        println!("`{}` can act for {} parties ({took:.1?}):", p.id, ap.len());
        for a in ap.iter().take(5) {
            let roles: Vec<&str> = a.roles.iter().map(|r| c.role(r).code.as_str()).collect();
            println!(
                "  `{}` via {} with {} packages",
                g.ext_id(a.party),
                roles.join(", "),
                a.packages.len()
            );
        }
        if ap.len() > 5 {
            println!("  ... and {} more", ap.len() - 5);
        }
    }
}

/// The first eight bytes of an id, as a number that orders as they do (zero-padded).
fn id_prefix(id: &str) -> u64 {
    let mut b = [0u8; 8];
    for (x, y) in b.iter_mut().zip(id.as_bytes()) {
        *x = *y;
    }
    u64::from_be_bytes(b)
}

/// The parties of `g` that `keep` takes, each with its [`id_prefix`], for [`by_id`]:
/// every node is looked at (on a medium world 128 400, most of the examples' time, with
/// the other core idle after the load), so each part's nodes are scanned in two halves
/// on two threads. In no particular order: `by_id` orders them (ids are unique).
fn persons_of(
    g: &delegraph::graph::Graph,
    keep: impl Fn(&delegraph::graph::Party) -> bool + Sync,
) -> Vec<(u64, delegraph::graph::NodeId, &delegraph::graph::Party)> {
    use delegraph::graph::NodeId;
    let scan = |second: bool| {
        let mut v = Vec::new();
        for i in 0..g.partitions() {
            let slots = g.part_slots(i);
            let range = if second { slots / 2..slots } else { 0..slots / 2 };
            for ix in range {
                let node = NodeId::placed(i, ix);
                if let Some(p) = g.party(node)
                    && keep(p)
                {
                    v.push((id_prefix(&p.id), node, p));
                }
            }
        }
        v
    };
    std::thread::scope(|s| {
        let other = s.spawn(|| scan(true));
        let mut v = scan(false);
        // (A scan does not panic; were it to, the half is scanned here again.)
        v.extend(other.join().unwrap_or_else(|_| scan(true)));
        v
    })
}

/// The items of `v` in the order of their ids, sorted a few at a time as they are taken
/// (about `n` at first, then twice as many each time more are wanted): a caller that
/// stops after the first few does not pay for sorting a whole world's parties (on a
/// medium world that sort was a fifth of `snapshot load`). Ids are compared by their
/// first eight bytes first, kept beside the item (most comparisons then read nothing
/// else), then whole.
fn by_id<T>(
    mut rest: Vec<(u64, T, &delegraph::graph::Party)>,
    n: usize,
) -> impl Iterator<Item = (T, &delegraph::graph::Party)> {
    let cmp = |a: &(u64, T, &delegraph::graph::Party), b: &(u64, T, &delegraph::graph::Party)| {
        a.0.cmp(&b.0).then_with(|| a.2.id.cmp(&b.2.id))
    };
    let mut batch = n.max(8);
    let mut ready = Vec::new().into_iter();
    std::iter::from_fn(move || {
        loop {
            if let Some((_, t, p)) = ready.next() {
                return Some((t, p));
            }
            if rest.is_empty() {
                return None;
            }
            let take = batch.min(rest.len());
            batch = batch.saturating_mul(2);
            if take < rest.len() {
                rest.select_nth_unstable_by(take, cmp);
            }
            let mut first: Vec<_> = rest.drain(..take).collect();
            first.sort_unstable_by(cmp);
            ready = first.into_iter();
        }
    })
}

fn run_snapshot(cmd: SnapshotCommand) -> Result<()> {
    match cmd {
        SnapshotCommand::Save { from, out } => {
            let world = import_file(&from)?;
            save(&world, &out)
        }
        SnapshotCommand::Load {
            file,
            examples: n,
            partitions,
        } => {
            let (world, loaded, took) = load_in(&file, usize::from(partitions))?;
            println!("graph parts     {}", world.graph.partitions());
            print_header(&loaded.header, loaded.version);
            println!("file size       {} bytes", loaded.bytes);
            println!("load time       {took:.2?}");
            examples(&world, n);
            // The process ends here: freeing millions of allocations one by one would
            // only add seconds to the command's wall time.
            std::mem::forget(world);
            Ok(())
        }
        SnapshotCommand::Verify { file } => {
            let (world, loaded, took) = load(&file)?;
            let bad = invariants::violations(&world);
            for v in &bad {
                println!("invariant broken: {v}");
            }
            if !bad.is_empty() {
                bail!("`{}`: {} structural faults", file.display(), bad.len());
            }
            println!(
                "`{}` is sound: schema version {}, {} records, every checksum and reference valid ({took:.2?})",
                file.display(),
                loaded.version,
                loaded.header.counts.total()
            );
            Ok(())
        }
        SnapshotCommand::Upgrade { file, out } => {
            let (world, loaded, took) = load(&file)?;
            println!(
                "loaded `{}` (schema version {}) in {took:.2?}",
                file.display(),
                loaded.version
            );
            save(&world, &out)?;
            std::mem::forget(world);
            Ok(())
        }
        SnapshotCommand::Stats { file } => {
            let (h, version) = snapshot::read_header(&file)?;
            print_header(&h, version);
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!("file size       {size} bytes");
            Ok(())
        }
    }
}

fn finish(r: Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn snapshot_command(cmd: SnapshotCommand) -> ExitCode {
    finish(run_snapshot(cmd))
}

pub fn import_command(args: ImportArgs) -> ExitCode {
    finish(import_file(&args.file).and_then(|w| save(&w, &args.out)))
}

/// A small deterministic generator (xorshift64*), enough to pick random events.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const CRASH_ORGS: u64 = 12;
const CRASH_PERSONS: u64 = 16;
const CRASH_PACKAGES: &[&str] = &["regnskapsforer-med-signeringsrettighet", "regnskapsforer-lonn"];

/// The fixed cast of the crash workload: client organisations, two accounting firms
/// and persons (agents, rightholders).
fn crash_setup() -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut v = Vec::new();
    for i in 0..CRASH_ORGS {
        v.push(json!({"party": {"id": format!("org{i}"), "kind": "organisation", "unit_type": "AS"}}));
    }
    for f in 0..2 {
        v.push(json!({"party": {"id": format!("firm{f}"), "kind": "organisation", "unit_type": "AS"}}));
    }
    for i in 0..CRASH_PERSONS {
        v.push(json!({"party": {"id": format!("p{i}"), "kind": "person"}}));
    }
    v
}

/// One random batch of the crash workload: a marker party named after the attempt,
/// plus one or two mutations, several of them cascading removals.
fn crash_batch(r: &mut Rng, attempt: &str) -> Vec<serde_json::Value> {
    use serde_json::json;
    let org = format!("org{}", r.below(CRASH_ORGS));
    let firm = format!("firm{}", r.below(2));
    let person = format!("p{}", r.below(CRASH_PERSONS));
    let pkg = CRASH_PACKAGES
        .get(r.below(2) as usize)
        .copied()
        .unwrap_or("regnskapsforer-lonn");
    let mut v = vec![json!({"party": {"id": attempt, "kind": "person", "name": "marker"}})];
    let ops = 1 + r.below(2);
    for _ in 0..ops {
        v.push(match r.below(9) {
            0 | 1 => json!({"register_role": {"from": org, "to": firm, "role": "regnskapsforer"}}),
            2 => json!({"unregister_role": {"from": org, "to": firm, "role": "regnskapsforer"}}),
            3 => json!({"add_agent": {"facilitator": firm, "agent": person}}),
            4 => json!({"remove_agent": {"facilitator": firm, "agent": person, "cascade": true}}),
            5 | 6 => json!({"delegate": {"client": org, "facilitator": firm, "agent": person,
                "role": "regnskapsforer", "packages": [pkg]}}),
            7 => json!({"undelegate": {"client": org, "facilitator": firm, "agent": person,
                "packages": [pkg]}}),
            _ => json!({"register_role": {"from": org, "to": person, "role": "daglig-leder"}}),
        });
    }
    v
}

fn to_events(v: Vec<serde_json::Value>) -> Result<Vec<delegraph::event::Event>> {
    v.into_iter()
        .map(|e| delegraph::event::Event::from_json(e).map_err(anyhow::Error::from))
        .collect()
}

/// The crash-test child: recovers the store in `dir`, then applies random batches
/// from several threads forever, printing `ack SEQ MARKER` for each acknowledged
/// batch. It is meant to be killed.
pub fn crash_child(args: CrashChildArgs) -> ExitCode {
    finish(run_crash_child(args))
}

fn run_crash_child(args: CrashChildArgs) -> Result<()> {
    let opts = delegraph::persist::Options {
        partitions: args.partitions.max(1),
        ..Default::default()
    };
    let store = Durable::open_with(&args.dir, opts)?;
    let start = store.last_seq()?;
    if start == 0 {
        let seq = store.apply_batch(&to_events(crash_setup())?)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {seq} setup")?;
        out.flush()?;
    }
    let store = &store;
    std::thread::scope(|s| {
        for t in 0..args.threads.max(1) {
            s.spawn(move || -> Result<()> {
                let mut r = Rng((args.seed
                    ^ start.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ ((t as u64 + 1) * 7919))
                    | 1);
                let mut k = 0u64;
                loop {
                    k += 1;
                    let marker = format!("m-{start}-{t}-{k}");
                    let batch = to_events(crash_batch(&mut r, &marker))?;
                    match store.apply_batch(&batch) {
                        Ok(seq) => {
                            let mut out = std::io::stdout().lock();
                            writeln!(out, "ack {seq} {marker}")?;
                            out.flush()?;
                            if t == 0 && r.below(150) == 0 {
                                store.checkpoint()?;
                            }
                        }
                        Err(delegraph::persist::DurableError::Refused(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            });
        }
    });
    Ok(())
}
