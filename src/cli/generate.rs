//! `delegraph generate`: the flags, the progress bars and the report around the
//! library's generator (`delegraph::generate`), and the process's CPU time and peak
//! memory that other commands report too.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use delegraph::generate::{Params, Progress, Scale, generate};
use delegraph::mutate;
use delegraph::world::World;

/// Size presets (see [`Scale`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleArg {
    /// About 1 000 persons: for tests and examples.
    Small,
    /// About 100 000 persons.
    Medium,
    /// Norway: 5.56 M persons, 1.3 M organisations, 0.3 M sub-units.
    Norway,
}

impl From<ScaleArg> for Scale {
    fn from(s: ScaleArg) -> Scale {
        match s {
            ScaleArg::Small => Scale::Small,
            ScaleArg::Medium => Scale::Medium,
            ScaleArg::Norway => Scale::Norway,
        }
    }
}

/// `delegraph generate`: sizes, seed and output.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Size preset; the flags below override parts of it.
    #[arg(long, value_enum, default_value = "small")]
    pub scale: ScaleArg,
    /// Seed of the random choices: the same seed and sizes give the same events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Persons (without --orgs, organisations scale with it: ~0.23 per person).
    #[arg(long)]
    pub persons: Option<u64>,
    /// Main units (organisations that are not sub-units).
    #[arg(long)]
    pub orgs: Option<u64>,
    /// Sub-units (BEDR/AAFY).
    #[arg(long)]
    pub sub_units: Option<u64>,
    /// Resources with policies.
    #[arg(long)]
    pub resources: Option<u64>,
    #[arg(long)]
    pub accounting_firms: Option<u64>,
    #[arg(long)]
    pub audit_firms: Option<u64>,
    /// Zipf exponent of firm sizes.
    #[arg(long)]
    pub firm_skew: Option<f64>,
    /// Leave out `by` on agent and delegation events (no authorization checks).
    #[arg(long)]
    pub no_actor: bool,
    /// Leave out party names.
    #[arg(long)]
    pub no_names: bool,
    /// Add N consent requests (samtykke, domain.md §9) after the rest of the world: five
    /// consent resources (income data, a tax return, a bank's loan application, employment
    /// data, a one-time credit check), banks and lenders as consumers (a few large ones
    /// get most), some handled by an operator. Most requests come from persons answering
    /// for themselves, some from organisations answered by their managing director. About
    /// 80 % are accepted; the rest stay created, are rejected, revoked, used up (one-time)
    /// or expire: the engine clock moves through 90 days while they come in. 0 (the
    /// default) adds nothing, so the world is the same as without the flag.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub consents: u64,
    /// Write the events as JSON Lines to FILE (streamed) instead of building the world.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Only generate and count the events (no world, no file): the generator's own speed.
    #[arg(long, conflicts_with = "jsonl")]
    pub dry_run: bool,
}

impl GenerateArgs {
    pub fn params(&self) -> Params {
        let base = Params::for_scale(self.scale.into());
        let persons = self.persons.unwrap_or(base.persons);
        let scaled = self.persons.is_some() && self.orgs.is_none();
        let orgs = self
            .orgs
            .unwrap_or(if scaled { persons * 234 / 1000 } else { base.orgs });
        let sub_units = self.sub_units.unwrap_or(if scaled || self.orgs.is_some() {
            orgs * 23 / 100
        } else {
            base.sub_units
        });
        let resources = self.resources.unwrap_or(base.resources);
        let mut p = Params::sized(persons, orgs, sub_units, resources);
        p.seed = self.seed;
        if let Some(n) = self.accounting_firms {
            p.accounting_firms = n;
        }
        if let Some(n) = self.audit_firms {
            p.audit_firms = n;
        }
        if let Some(s) = self.firm_skew {
            p.firm_skew = s;
        }
        p.with_actor = !self.no_actor;
        p.names = !self.no_names;
        p.consents = self.consents;
        p
    }
}

/// Progress bars on stderr (indicatif hides them when stderr is not a terminal), and
/// the time each phase took.
pub struct Bars {
    bar: Option<indicatif::ProgressBar>,
    pending: u64,
    phase: Option<(String, Instant, f64)>,
    /// (phase, wall time, CPU seconds of this process) in order.
    pub timings: Vec<(String, Duration, f64)>,
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            bar: None,
            pending: 0,
            phase: None,
            timings: Vec::new(),
        }
    }
    fn close(&mut self) {
        if let Some(b) = self.bar.take() {
            b.inc(self.pending);
            b.finish();
        }
        self.pending = 0;
        if let Some((name, t, cpu0)) = self.phase.take() {
            let d = t.elapsed();
            let cpu = cpu_seconds().unwrap_or(0.0) - cpu0;
            // Without bars (stderr is not a terminal), log each finished phase instead.
            if !std::io::stderr().is_terminal() {
                eprintln!("{name}: done in {:.2} s ({cpu:.2} s CPU)", d.as_secs_f64());
            }
            self.timings.push((name, d, cpu));
        }
    }
}

impl Progress for Bars {
    fn phase(&mut self, name: &str, total: u64) {
        self.close();
        let bar =
            indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{msg:>15} [{bar:40.cyan/blue}] {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style.progress_chars("=> "));
        bar.set_message(name.to_string());
        self.bar = Some(bar);
        self.phase = Some((name.to_string(), Instant::now(), cpu_seconds().unwrap_or(0.0)));
    }
    fn inc(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= 8192 {
            if let Some(b) = &self.bar {
                b.inc(self.pending);
            }
            self.pending = 0;
        }
    }
    fn finish(&mut self) {
        self.close();
    }
}

/// CPU time (user + system) this process has used, in seconds (Linux; None elsewhere).
/// On a shared machine wall time overstates the work; CPU time does not.
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime field 14, stime field 15 (ticks).
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident memory of this process in bytes (Linux; None elsewhere).
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn rate(n: u64, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return "-".to_string();
    }
    format!("{:.0}/s", n as f64 / s)
}

/// Runs `delegraph generate`; prints the summary (stdout) and the timings.
pub fn run(args: &GenerateArgs) -> anyhow::Result<bool> {
    let p = args.params();
    let mut bars = Bars::new();
    let started = Instant::now();
    let mut ok = true;
    let mut report = Vec::new();
    let summary = if let Some(path) = &args.jsonl {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let summary = generate(&p, &mut bars, |ev| -> anyhow::Result<()> {
            serde_json::to_writer(&mut out, &ev)?;
            out.write_all(b"\n")?;
            Ok(())
        })?;
        out.flush()?;
        out.get_ref().sync_all()?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        report.push(format!(
            "wrote {} ({size} bytes, {:.1} MiB)",
            path.display(),
            size as f64 / (1u64 << 20) as f64
        ));
        summary
    } else if args.dry_run {
        generate(&p, &mut bars, |_| Ok::<(), std::convert::Infallible>(())).map_err(|e| match e {})?
    } else {
        let mut world = World::new();
        let mut refused = 0u64;
        let mut first = Vec::new();
        let summary = generate(&p, &mut bars, |ev| {
            if let Err(e) = mutate::apply(&mut world, &ev) {
                refused += 1;
                if first.len() < 10 {
                    first.push(format!(
                        "{e:?}: {}",
                        serde_json::to_string(&ev).unwrap_or_default()
                    ));
                }
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {})?;
        report.push(format!(
            "world: {} parties, {} resources, {} edges; {refused} events refused",
            world.graph.party_count(),
            world.graph.resource_count(),
            world.graph.edge_count()
        ));
        for f in &first {
            report.push(format!("  refused: {f}"));
        }
        ok = refused == 0;
        summary
    };
    let elapsed = started.elapsed();
    let cpu = cpu_seconds().unwrap_or(0.0);
    println!("{summary}");
    for r in &report {
        println!("{r}");
    }
    let n = summary.total_events();
    println!(
        "time: {:.2} s wall, {cpu:.2} s CPU for {n} events ({} wall, {} CPU)",
        elapsed.as_secs_f64(),
        rate(n, elapsed),
        rate(n, Duration::from_secs_f64(cpu))
    );
    for (phase, d, c) in &bars.timings {
        println!("  {phase:<18} {:>8.2} s wall {c:>8.2} s CPU", d.as_secs_f64());
    }
    if let Some(r) = peak_rss() {
        println!("peak memory (RSS): {}", gib(r));
    }
    Ok(ok)
}
