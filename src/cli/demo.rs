//! What `delegraph` (`cargo run --release`) shows with no command: the main job on the
//! bundled world, in one screen. Every answer is a `delegraph query` command printed
//! with its output, computed by the same code (a test runs each command and compares).

use std::fmt::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use delegraph::query::{self, CheckQuery, ExplainQuery, Query, SimulateQuery};
use delegraph::world::World;

/// The questions: (the command line after `delegraph query`, the query).
fn questions() -> Vec<(String, Query)> {
    let explain = |subject: &str, party: &str, package: &str| {
        (
            format!("explain --subject {subject} --party {party} --package {package}"),
            Query::Explain(ExplainQuery {
                subject: subject.into(),
                party: party.into(),
                package: Some(package.into()),
                role: None,
                resource: None,
                action: None,
                instance: None,
            }),
        )
    };
    vec![
        // A key role: kari leads the accounting firm fjord registered as its accountant.
        explain("kari", "fjord", "regnskapsforer-med-signeringsrettighet"),
        // A client delegation: the firm gave fjord to its employee ola.
        explain("ola", "fjord", "regnskapsforer-lonn"),
        // Main unit → sub-unit: fjord's daglig-leder, for the sub-unit fjord-bergen.
        explain("per", "fjord-bergen", "skattegrunnlag"),
        // A no, and the link it lacks.
        explain("ola", "fjord", "skattegrunnlag"),
    ]
}

fn cascade() -> (String, Query) {
    (
        "simulate unregister_role --from fjord --to tind-regnskap --role regnskapsforer".into(),
        Query::Simulate(SimulateQuery {
            event: serde_json::json!({"unregister_role": {"from": "fjord", "to": "tind-regnskap", "role": "regnskapsforer"}}),
            limit: None,
        }),
    )
}

pub fn run() -> ExitCode {
    match show() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn show() -> anyhow::Result<String> {
    let mut s = String::new();
    let (mut w, from, took) = super::load_sample()?;
    let _ = writeln!(
        s,
        "delegraph {}: effective rights through chains, and why.\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        s,
        "Loaded {from}: {} parties, {} resources, {} edges in {took:.2?}.\n",
        w.graph.party_count(),
        w.graph.resource_count(),
        w.graph.edge_count()
    );
    let _ = writeln!(
        s,
        "Effective rights through chains (a key role, a client delegation, main unit → sub-unit, a no):\n"
    );
    for (cmd, q) in questions() {
        ask(&mut s, &mut w, &cmd, &q)?;
    }
    let _ = writeln!(
        s,
        "A cascade, simulated before it happens: fjord ends its accountant relationship.\n"
    );
    let (cmd, q) = cascade();
    ask(&mut s, &mut w, &cmd, &q)?;
    let _ = writeln!(s, "How fast: {}\n", load_run(&w, Duration::from_millis(300)));
    let _ = writeln!(
        s,
        "Ask your own: `delegraph query --help`; the Altinn 2 cut-off: \
         `delegraph a2-impact {}`; every command: `delegraph --help`.",
        super::SAMPLE_PATH
    );
    Ok(s)
}

fn ask(s: &mut String, w: &mut World, cmd: &str, q: &Query) -> anyhow::Result<()> {
    let a = query::evaluate_mut(w, q).map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    let (text, _) = super::query::output(q, &a, false);
    let _ = writeln!(s, "$ delegraph query {cmd}");
    let _ = writeln!(s, "{text}");
    Ok(())
}

/// A short in-process load run: package checks of random (person, organisation,
/// package) triples, one thread, for about `budget`.
fn load_run(w: &World, budget: Duration) -> String {
    use delegraph::model::PartyKind;
    let mut persons = Vec::new();
    let mut orgs = Vec::new();
    for (_, p) in w.graph.parties() {
        match p.kind {
            PartyKind::Person => persons.push(p.id.to_string()),
            PartyKind::Organisation => orgs.push(p.id.to_string()),
            PartyKind::SystemUser => {}
        }
    }
    persons.sort();
    orgs.sort();
    const PACKAGES: [&str; 4] = [
        "skattegrunnlag",
        "regnskapsforer-lonn",
        "regnskapsforer-med-signeringsrettighet",
        "merverdiavgift",
    ];
    if persons.is_empty() || orgs.is_empty() {
        return "no persons or organisations to ask about".into();
    }
    let Ok(mut hist) = hdrhistogram::Histogram::<u64>::new(3) else {
        return "no histogram".into();
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let (mut allowed, mut n) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < budget && n < 1_000_000 {
        let q = CheckQuery {
            subject: persons[next(persons.len())].clone(),
            party: orgs[next(orgs.len())].clone(),
            package: Some(PACKAGES[next(PACKAGES.len())].into()),
            role: None,
            resource: None,
            action: None,
            instance: None,
        };
        let t = Instant::now();
        let yes = query::check(w, &q).is_ok_and(|a| a.allowed);
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
        allowed += u64::from(yes);
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{n} package checks of random (person, organisation, package) in {:.0} ms on one thread \
         ({allowed} allowed): {:.0} decisions/s, p50 {:.1} µs, p99 {:.1} µs",
        secs * 1000.0,
        n as f64 / secs,
        us(0.5),
        us(0.99)
    )
}
