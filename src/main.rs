//! The delegraph command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod persist_cli;
mod serve;

/// One example per command, shown by `delegraph --help`.
const EXAMPLES: &str = "\
Without a command, delegraph shows what it does on the bundled world (graph-snapshots/sample.snap).

Examples, one per command:
  delegraph query explain --subject ola --party fjord --package regnskapsforer-lonn
  delegraph test ../shared/scenarios/*.yaml
  delegraph serve --dev-no-auth --snapshot graph-snapshots/sample.snap
  delegraph catalog --packages --area skatt
  delegraph a2-impact graph-snapshots/sample.snap --summary
  delegraph generate --scale small --jsonl world.jsonl
  delegraph loadtest --server http://127.0.0.1:8080 --snapshot graph-snapshots/sample.snap
  delegraph snapshot load graph-snapshots/sample.snap
  delegraph import graph-snapshots/sample.jsonl --out sample.snap
  delegraph policy import policies/ --world graph-snapshots/sample.jsonl
  delegraph completions bash > /etc/bash_completion.d/delegraph";

const QUERY_EXAMPLES: &str = "\
Exit status: 0 for a yes (allowed, or a non-empty answer), 1 for a no (denied, or empty), 2 for an error.

Examples (on the bundled sample world):
  delegraph query check --subject kari --party fjord --package regnskapsforer-med-signeringsrettighet
  delegraph query check --subject ola --party fjord --resource ske-mva-melding --action read
  delegraph query rights --subject ola --party fjord
  delegraph query authorized-parties --subject per
  delegraph query holders --party fjord --package skattegrunnlag
  delegraph query can-delegate --by per --party fjord --package skattegrunnlag
  delegraph query explain --subject per --party fjord-bergen --package skattegrunnlag
  delegraph query simulate unregister_role --from fjord --to tind-regnskap --role regnskapsforer
  delegraph query simulate --event '{\"remove_agent\": {\"facilitator\": \"tind-regnskap\", \"agent\": \"ola\", \"cascade\": true}}'
  delegraph query check --server http://127.0.0.1:8080 --subject kari --party fjord --role daglig-leder --json";

#[derive(Parser)]
#[command(
    name = "delegraph",
    version,
    about = "An in-memory rights resolver for Altinn-style authorization",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the engine one question: check, rights, authorized-parties, holders,
    /// can-delegate, explain or simulate.
    ///
    /// Against a snapshot (default: the bundled sample) or a running server (--server),
    /// with the spec's field names as flags. Human output by default (tables, derivation
    /// paths drawn as chains), --json for one JSON document.
    #[command(after_help = QUERY_EXAMPLES)]
    Query(Box<cli::query::QueryArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    ///
    /// e.g. `delegraph completions bash > ~/.local/share/bash-completion/completions/delegraph`,
    /// `delegraph completions zsh > ~/.zfunc/_delegraph`,
    /// `delegraph completions fish > ~/.config/fish/completions/delegraph.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run scenario files and report every failed step.
    ///
    /// Prints one line per failed step (file, step, expected, got) and a closing line
    /// `N passed, M failed`; exits 0 only when every step passes.
    Test {
        /// Scenario files (YAML, see the scenario format).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Run the files against a running server (e.g. `http://127.0.0.1:8080`) instead
        /// of in-process. The server must run with `--allow-reset` (each file starts from
        /// an empty world).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Bearer token for `--server` (scope `delegraph:admin`); or set DELEGRAPH_TOKEN.
        #[arg(long, env = "DELEGRAPH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Also list every step that passed.
        #[arg(long, short)]
        verbose: bool,
        /// Stop at the first failed step.
        #[arg(long)]
        fail_fast: bool,
        /// Write a JUnit XML report (one test suite per file, one test case per step).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Run in-process on a graph of this many partitions (each file starts from an
        /// empty world of P partitions). Answers must not depend on it: compare two runs
        /// with --answers. With --server the server chooses (`serve --partitions`).
        #[arg(long, value_name = "P", default_value_t = 1, conflicts_with = "server",
              value_parser = clap::value_parser!(u32).range(1..=i64::from(delegraph::persist::snapshot::MAX_PARTITIONS)))]
        partitions: u32,
        /// Write every step's answers as JSON Lines to this file (one line per step:
        /// file, step, whether it passed, and what each event, query or decision
        /// answered), to compare runs: another partition count, or a server.
        #[arg(long, value_name = "FILE")]
        answers: Option<PathBuf>,
    },
    /// Serve the HTTP API (see the README's "Serving" section).
    Serve(serve::ServeArgs),
    /// Show the built-in catalogue, list its packages or roles, or look up one.
    ///
    /// Without a name: the counts of roles, packages, areas, RolePackage and RoleMap
    /// rows. With a name: a role (by code, legacy code in any case, or URN) with the
    /// packages it gives, or a package (by code or URN) with the roles that give it.
    /// `--packages` / `--roles` list them (with a name: those whose code or name
    /// contains it); `--area` keeps the packages of matching areas.
    Catalog {
        /// A role or package to look up, e.g. `DAGL`, `daglig-leder`, `skattegrunnlag`;
        /// with --packages or --roles, a filter on code and name.
        name: Option<String>,
        /// List the access packages (code, area, name).
        #[arg(long)]
        packages: bool,
        /// List the roles (code, legacy code, provider, name).
        #[arg(long)]
        roles: bool,
        /// Only packages whose area URN or name contains this (implies --packages).
        #[arg(long, value_name = "AREA")]
        area: Option<String>,
    },
    /// Report who would lose which permit at the Altinn 2 cut-off, and what restores it.
    ///
    /// Simulates `retire_a2_roles` on a world and lists, per resource and service owner,
    /// every (subject, party, action) permit that would be lost, the Altinn 2 role path it
    /// rests on today, the packages in the same policy that would restore it, and who at
    /// the party may grant one of them. Prints totals first, then a table; writes CSV,
    /// JSON and an SVG chart on request.
    #[command(name = "a2-impact")]
    A2Impact {
        /// The world: a snapshot (.snap), a JSON Lines event stream (.jsonl) or a scenario file (.yaml).
        world: PathBuf,
        /// Only resources of this service owner.
        #[arg(long)]
        owner: Option<String>,
        /// Only this resource.
        #[arg(long)]
        resource: Option<String>,
        /// Write the lost permits as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write the lost permits as JSON Lines (one object per permit) to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write a chart (per resource: kept, lost, restorable) as SVG to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print only the totals and the per-resource table, not every lost permit.
        #[arg(long)]
        summary: bool,
    },
    /// Generate a realistic world (deterministic, seeded): build it in memory and print
    /// statistics, or write its events as JSON Lines with --jsonl.
    Generate(cli::generate::GenerateArgs),
    /// Drive a running delegraph server over loopback and report latency percentiles.
    ///
    /// Draws its requests from a snapshot of the world the server holds (checks of
    /// packages held and not held, batched checks, authorized parties, and one-event
    /// writes: each connection grants, then revokes, a package of its own pair, acting as
    /// `by`, so the world ends as it was), sends them from --concurrency
    /// connections until --requests are sent or --duration has passed, and reports
    /// throughput, p50/p90/p99/p99.9 per request kind and the CPU per request of the
    /// load tester and of the server (from its /metrics) as text (and JSON with --json).
    /// Refuses any target that is not a loopback address.
    Loadtest {
        /// The server, e.g. http://127.0.0.1:8080 (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The snapshot of the world the server holds (to draw requests from).
        #[arg(long)]
        snapshot: PathBuf,
        /// Bearer token: `delegraph:admin`, or `delegraph:read` plus `delegraph:write` for
        /// the events (grants and revokes with `by`).
        #[arg(long, env = "DELEGRAPH_TOKEN")]
        token: Option<String>,
        /// Stop after this many requests.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Stop after this many seconds.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Concurrent connections.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Weights of the request kinds.
        #[arg(long, default_value = "check=60,batch=30,authorized_parties=9,events=1")]
        mix: String,
        /// Checks per batched request.
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Seed of the request choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run background work alongside and report its latencies too: `simulate` (a
        /// loop alternating a REGN relationship end of the biggest accounting firm and
        /// `retire_a2_roles`), `a2-impact` (a loop of the report), `checkpoint` (a loop
        /// of `POST /v1/admin/checkpoint`, admin token), `writes` (one-event write
        /// batches back to back from 4 connections, each granting and revoking one
        /// pair's package), `grants` (the same, but each connection grants the package to
        /// up to 1 024 distinct pairs one by one, then revokes them: the graph's deltas
        /// grow, so the partitions compact while it runs when the server's
        /// `--delta-bound` is small).
        #[arg(long, value_name = "WORK", value_parser = ["simulate", "a2-impact", "checkpoint", "writes", "grants"])]
        during: Option<String>,
    },
    /// Save, load, verify or describe graph snapshots.
    #[command(subcommand)]
    Snapshot(persist_cli::SnapshotCommand),
    /// Apply a JSON Lines event file in order and save the world as a snapshot.
    Import(persist_cli::ImportArgs),
    /// Crash-test child: applies random batches to a durable store until killed.
    #[command(name = "__crash-child", hide = true)]
    CrashChild(persist_cli::CrashChildArgs),
    /// XACML resource policies for the decision point.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Import `DIR/<resource-id>/policy.xml` and `DIR/<org>/<app>/policy.xml` (the app
    /// resource `app_{org}_{app}`): every policy is compiled and applied as a `policy`
    /// event (to the world given with --world, or an empty one). Prints one line per
    /// policy; with --jsonl, writes the events as JSON Lines. Exits 1 if any policy is
    /// refused.
    Import {
        dir: PathBuf,
        /// A world to apply the policies to: JSON Lines (.jsonl) or a scenario (.yaml).
        #[arg(long)]
        world: Option<PathBuf>,
        /// Write the accepted `policy` events as JSON Lines to this file.
        #[arg(long)]
        jsonl: Option<PathBuf>,
    },
}

fn policy_import(
    dir: &std::path::Path,
    world: Option<PathBuf>,
    jsonl: Option<PathBuf>,
) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let mut w = match world {
        Some(p) => cli::load_world(&p)?,
        None => delegraph::world::World::new(),
    };
    let events = delegraph::pdp::import_dir(dir)?;
    let mut ok = true;
    let mut out = Vec::new();
    for ev in &events {
        let id = match ev {
            delegraph::event::Event::Policy(p) => p.resource.clone(),
            _ => String::new(),
        };
        match delegraph::mutate::apply(&mut w, ev) {
            Ok(_) => {
                println!("imported {id}");
                out.push(serde_json::to_string(ev)?);
            }
            Err(e) => {
                ok = false;
                println!("refused {id}: {} ({})", e.code, e.message);
            }
        }
    }
    println!("{} imported, {} refused", out.len(), events.len() - out.len());
    if let Some(p) = jsonl {
        let mut f = std::fs::File::create(&p)?;
        for line in &out {
            writeln!(f, "{line}")?;
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command whose output is piped into `head` (or any reader that stops early) ends
    // quietly, as Unix tools do, instead of panicking on the closed pipe. The server and
    // the load tester keep Rust's default (SIGPIPE ignored): a peer closing a socket must
    // be an error on that connection, not the end of the process.
    if !matches!(cli.command, Some(Command::Serve(_) | Command::Loadtest { .. })) {
        restore_sigpipe();
    }
    let Some(command) = cli.command else {
        return cli::demo::run();
    };
    match command {
        Command::Query(args) => cli::query::run(*args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "delegraph", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Generate(args) => match cli::generate::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Policy(PolicyCommand::Import { dir, world, jsonl }) => {
            match policy_import(&dir, world, jsonl) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => match serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Loadtest {
            server,
            snapshot,
            token,
            requests,
            duration,
            concurrency,
            mix,
            batch_size,
            seed,
            json,
            during,
        } => {
            match loadtest(
                server,
                snapshot,
                token,
                requests,
                duration,
                concurrency,
                mix,
                batch_size,
                seed,
                json,
                during,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Snapshot(cmd) => persist_cli::snapshot_command(cmd),
        Command::Import(args) => persist_cli::import_command(args),
        Command::CrashChild(args) => persist_cli::crash_child(args),
        Command::Test {
            files,
            server,
            token,
            verbose,
            fail_fast,
            junit,
            partitions,
            answers,
        } => {
            use delegraph::scenario::{self, Backend};
            let mut report = scenario::Report::default();
            let mut backend: Box<dyn Backend> = match server {
                Some(url) => Box::new(delegraph::api::client::HttpBackend::new(&url, token)),
                None => Box::new(scenario::InProcess::new(partitions as usize)),
            };
            let options = scenario::Options {
                fail_fast,
                record_answers: answers.is_some(),
            };
            for f in &files {
                report.merge(scenario::run_file_with(backend.as_mut(), f, options));
                if fail_fast && report.failed > 0 {
                    break;
                }
            }
            if verbose {
                for p in &report.passes {
                    println!("{}: step {} ({}): ok", p.file, p.step, p.what);
                }
            }
            for f in &report.failures {
                println!("{f}");
            }
            println!("{} passed, {} failed", report.passed, report.failed);
            if let Some(path) = junit
                && let Err(e) = std::fs::write(&path, report.to_junit())
            {
                eprintln!("error: writing `{}`: {e}", path.display());
                return ExitCode::FAILURE;
            }
            if let Some(path) = answers
                && let Err(e) = std::fs::write(&path, report.answers_jsonl())
            {
                eprintln!("error: writing `{}`: {e}", path.display());
                return ExitCode::FAILURE;
            }
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::A2Impact {
            world,
            owner,
            resource,
            csv,
            json,
            svg,
            summary,
        } => match a2_impact(&world, owner, resource, csv, json, svg, summary) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Catalog {
            name,
            packages,
            roles,
            area,
        } => {
            use delegraph::catalog::{Catalog, report};
            let c = Catalog::builtin();
            if packages || roles || area.is_some() {
                print!(
                    "{}",
                    catalog_list(
                        c,
                        name.as_deref(),
                        packages || area.is_some(),
                        roles,
                        area.as_deref()
                    )
                );
                return ExitCode::SUCCESS;
            }
            match name {
                None => print!("{}", report::summary(c)),
                Some(n) => {
                    let role = c.role_id(&n);
                    let package = c.package_id(&n);
                    if role.is_none() && package.is_none() {
                        let hint = delegraph::model::hint(
                            &n,
                            c.roles
                                .iter()
                                .map(|r| r.code.as_str())
                                .chain(c.packages.iter().map(|p| p.code.as_str())),
                        );
                        eprintln!("error: no role or package named `{n}` in the catalogue{hint}");
                        return ExitCode::FAILURE;
                    }
                    if let Some(r) = role {
                        print!("{}", report::role(c, r));
                    }
                    if let Some(p) = package {
                        print!("{}", report::package(c, p));
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// `catalog --packages` / `--roles`: tables of the catalogue, filtered by a text in the
/// code or name and, for packages, by area.
fn catalog_list(
    c: &delegraph::catalog::Catalog,
    filter: Option<&str>,
    packages: bool,
    roles: bool,
    area: Option<&str>,
) -> String {
    let has = |hay: &[&str], needle: Option<&str>| {
        needle.is_none_or(|n| {
            let n = n.to_lowercase();
            hay.iter().any(|h| h.to_lowercase().contains(&n))
        })
    };
    let mut s = String::new();
    if packages {
        let area_name = |urn: &str| {
            c.areas
                .iter()
                .find(|a| a.urn == urn || a.urn.ends_with(urn) || urn.ends_with(&a.urn))
                .map(|a| a.name.clone())
                .unwrap_or_default()
        };
        let rows: Vec<[String; 3]> = c
            .packages
            .iter()
            .filter(|p| has(&[&p.code, &p.name, &p.name_nb], filter))
            .filter(|p| has(&[&p.area, &area_name(&p.area)], area))
            .map(|p| {
                let a = p.area.rsplit(':').next().unwrap_or(&p.area).to_string();
                [p.code.clone(), a, p.name.clone()]
            })
            .collect();
        s.push_str(&format!("{} package(s)\n", rows.len()));
        cli::render::table(&mut s, ["package", "area", "name"], &rows);
    }
    if roles {
        let rows: Vec<[String; 4]> = c
            .roles
            .iter()
            .filter(|r| {
                has(
                    &[
                        &r.code,
                        &r.name,
                        &r.name_nb,
                        r.legacy_code.as_deref().unwrap_or(""),
                    ],
                    filter,
                )
            })
            .map(|r| {
                [
                    r.code.clone(),
                    r.legacy_code.clone().unwrap_or_else(|| "-".into()),
                    format!("{:?}", r.provider),
                    r.name.clone(),
                ]
            })
            .collect();
        if packages {
            s.push('\n');
        }
        s.push_str(&format!("{} role(s)\n", rows.len()));
        cli::render::table(&mut s, ["role", "legacy", "provider", "name"], &rows);
    }
    s
}

fn a2_impact(
    world: &std::path::Path,
    owner: Option<String>,
    resource: Option<String>,
    csv: Option<PathBuf>,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    summary: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use cli::generate::cpu_seconds;
    use delegraph::a2impact;
    use std::io::Write;
    let (t0, cpu0) = (std::time::Instant::now(), cpu_seconds().unwrap_or(0.0));
    let w = cli::load_world(world).with_context(|| format!("loading `{}`", world.display()))?;
    let (t1, cpu1) = (std::time::Instant::now(), cpu_seconds().unwrap_or(0.0));
    let filter = a2impact::Filter { owner, resource };
    filter
        .validate(&w)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let bar = progress_bar("examining subject/party pairs");
    // Lost permits stream to the CSV and JSON Lines files as they are found; the table
    // shows the first ones.
    let open = |p: &Option<PathBuf>| -> anyhow::Result<Option<std::io::BufWriter<std::fs::File>>> {
        p.as_ref()
            .map(|p| {
                std::fs::File::create(p)
                    .map(std::io::BufWriter::new)
                    .with_context(|| format!("creating `{}`", p.display()))
            })
            .transpose()
    };
    let mut csv_out = open(&csv)?;
    let mut json_out = open(&json)?;
    if let Some(f) = csv_out.as_mut() {
        writeln!(f, "{}", a2impact::CSV_HEADER)?;
    }
    const SHOWN: usize = 50;
    let mut shown = Vec::new();
    let mut write_error: Option<std::io::Error> = None;
    // Listing every lost permit costs its explanation and grantors each: only when they
    // go to a file; the table alone needs the first few.
    let listing = if csv.is_some() || json.is_some() {
        a2impact::Listing::All
    } else if summary {
        a2impact::Listing::First(0)
    } else {
        a2impact::Listing::First(SHOWN)
    };
    let mut report = a2impact::report_streaming(
        &w,
        &filter,
        listing,
        |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        |l| {
            if let Some(f) = csv_out.as_mut()
                && let Err(e) = f.write_all(a2impact::csv_row(&l).as_bytes())
            {
                write_error.get_or_insert(e);
            }
            if let Some(f) = json_out.as_mut() {
                let line = serde_json::to_string(&l).unwrap_or_default();
                if let Err(e) = writeln!(f, "{line}") {
                    write_error.get_or_insert(e);
                }
            }
            if shown.len() < SHOWN {
                shown.push(l);
            }
        },
    );
    bar.finish_and_clear();
    // Timings on stderr, load and report apart (CPU time: the machine may be shared).
    eprintln!(
        "loaded in {:.1} s ({:.1} s CPU); report in {:.1} s ({:.1} s CPU)",
        (t1 - t0).as_secs_f64(),
        cpu1 - cpu0,
        t1.elapsed().as_secs_f64(),
        cpu_seconds().unwrap_or(0.0) - cpu1
    );
    if let Some(e) = write_error {
        return Err(e).context("writing the report");
    }
    shown.sort();
    let more = report.lost_count.saturating_sub(shown.len());
    report.lost = shown;
    let mut table = a2impact::to_table(&report);
    if summary {
        if let Some(i) = table.find("\nlost permits") {
            table.truncate(i + 1);
        }
    } else if more > 0 {
        table.push_str(&format!("  … and {more} more (see the CSV or JSON output)\n"));
    }
    print!("{table}");
    for (p, f) in [(&csv, csv_out), (&json, json_out)] {
        if let (Some(p), Some(mut f)) = (p, f) {
            f.flush().with_context(|| format!("writing `{}`", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    if let Some(p) = svg {
        std::fs::write(&p, a2impact::to_svg(&report))
            .with_context(|| format!("writing `{}`", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    // The process ends here: freeing a Norway-scale world node by node would take
    // longer than the report (seconds of CPU), and the operating system does it at once.
    std::mem::forget(w);
    Ok(())
}

use cli::progress_bar;

#[allow(clippy::too_many_arguments)]
fn loadtest(
    server: String,
    snapshot: PathBuf,
    token: Option<String>,
    requests: u64,
    duration: u64,
    concurrency: usize,
    mix: String,
    batch_size: usize,
    seed: u64,
    json: Option<PathBuf>,
    during: Option<String>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use delegraph::loadtest;
    loadtest::require_loopback(&server)?;
    let mix = loadtest::Mix::parse(&mix).map_err(|e| anyhow::anyhow!("--mix: {e}"))?;
    let during = during
        .map(|d| loadtest::During::parse(&d))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--during: {e}"))?;
    let w = cli::load_world(&snapshot).with_context(|| format!("loading `{}`", snapshot.display()))?;
    let plan = loadtest::Plan {
        server,
        token,
        requests,
        duration: std::time::Duration::from_secs(duration),
        concurrency,
        mix,
        batch_size,
        seed,
        during,
    };
    let bar = progress_bar("requests");
    bar.set_length(requests);
    let report = loadtest::run(&w, &plan, &|n| bar.set_position(n))?;
    bar.finish_and_clear();
    print!("{}", loadtest::to_text(&report));
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing `{}`", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Puts SIGPIPE back to its default action (end the process), which Rust's runtime sets
/// to "ignore" before `main`.
fn restore_sigpipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` has no preconditions; it
    // runs before any other thread of this process is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
