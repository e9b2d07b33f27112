//! Consent lookups in-process (domain.md §9.5, §9.7): `consent_check`, Maskinporten's
//! question "does consumer T hold a valid consent from F for action a on consent
//! resource R now?", and `check` on a consent resource, which decides by consents alone.
//!
//! The world is a snapshot when `DELEGRAPH_CONSENT_SNAPSHOT=path.snap` names one (the
//! Norway world with 1 M consents of BENCHMARKS.md:
//! `delegraph generate --scale norway --consents 1000000 --jsonl W.jsonl`, then
//! `delegraph snapshot save --from W.jsonl W.snap`), otherwise the generator's small
//! preset with 5 000 consents, built in process (seconds; what CI compiles).
//!
//! The lookups (`DELEGRAPH_CONSENT_LOOKUPS`, default 100 000) are drawn with a fixed seed
//! from the world's own consents, by what the answer should be: a holder (`to` or
//! `handled_by`) of a consent valid now (40 %), a person and a consumer with no consent
//! between them (25 %), the parties of an expired consent (15 %), of a revoked one (15 %),
//! and of a valid consent asked for a resource it does not name (5 %). Each goes through
//! `query::consent_check` with external ids, as the HTTP route and the scenario runner
//! ask it, one at a time and timed alone; then the same mix through `query::check`. The
//! percentiles (p50, p99, p99.9, max) go to stderr, with the answers counted: a valid
//! consent must answer yes and a pair without consents `not_found`, or the bench stops.
//! Criterion then times a few single lookups, unless
//! `DELEGRAPH_CONSENT_PERCENTILES_ONLY=1`.
//!
//! Run: `cargo bench --bench consent`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use delegraph::consent::{Consent, Status};
use delegraph::generate::{Params, Rng, Scale, generate_vec};
use delegraph::graph::NodeId;
use delegraph::model::PartyKind;
use delegraph::mutate;
use delegraph::query::{self, CheckQuery, ConsentCheckQuery};
use delegraph::world::World;

/// What a lookup asks about, and so what it should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    NoConsent,
    Expired,
    Revoked,
    OtherResource,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Valid => "valid",
            Kind::NoConsent => "none",
            Kind::Expired => "expired",
            Kind::Revoked => "revoked",
            Kind::OtherResource => "other resource",
        }
    }
}

struct Lookup {
    kind: Kind,
    q: ConsentCheckQuery,
}

fn die(msg: String) -> ! {
    eprintln!("consent bench: {msg}");
    std::process::exit(1)
}

fn world() -> World {
    match std::env::var_os("DELEGRAPH_CONSENT_SNAPSHOT") {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            eprintln!("consent bench: loading {}", path.display());
            let t = Instant::now();
            match delegraph::persist::snapshot::load(&path, &mut |_| {}) {
                Ok((w, _)) => {
                    eprintln!("consent bench: loaded in {:.1} s", t.elapsed().as_secs_f64());
                    w
                }
                Err(e) => die(format!("cannot load {}: {e}", path.display())),
            }
        }
        None => {
            let mut p = Params::for_scale(Scale::Small);
            p.names = false;
            p.consents = 5_000;
            let mut w = World::new();
            for e in generate_vec(&p) {
                if let Err(err) = mutate::apply(&mut w, &e) {
                    die(format!("generated world: refused {}: {err}", e.name()));
                }
            }
            w
        }
    }
}

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> Option<&'a T> {
    rng.pick(xs)
}

/// The lookups, drawn with a fixed seed from the world's consents.
fn lookups(w: &World, n: usize) -> Vec<Lookup> {
    let mut by_status: BTreeMap<&'static str, Vec<&Arc<Consent>>> = BTreeMap::new();
    for c in w.consent.consents.values() {
        by_status
            .entry(delegraph::consent::status(w, c).as_str())
            .or_default()
            .push(c);
    }
    eprintln!(
        "consent bench: {} parties, {} consents by status {:?}",
        w.graph.party_count(),
        w.consent.len(),
        by_status.iter().map(|(k, v)| (*k, v.len())).collect::<Vec<_>>()
    );
    let get = |s: Status| by_status.get(s.as_str()).map_or(&[][..], |v| &v[..]);
    let (valid, expired, revoked) = (get(Status::Accepted), get(Status::Expired), get(Status::Revoked));
    if valid.is_empty() || expired.is_empty() || revoked.is_empty() {
        die("the world needs valid, expired and revoked consents (generate --consents N)".into());
    }
    let persons: Vec<NodeId> = w
        .graph
        .parties()
        .filter(|(_, p)| p.kind == PartyKind::Person)
        .map(|(n, _)| n)
        .collect();
    let resources: Vec<String> = {
        let mut r: Vec<String> = w
            .consent
            .consents
            .values()
            .take(10_000)
            .flat_map(|c| c.rights.keys().cloned())
            .collect();
        r.sort();
        r.dedup();
        r
    };
    let id = |n: NodeId| w.graph.ext_id(n).to_string();
    let mut rng = Rng::new(17, 9);
    let mut out = Vec::with_capacity(n);
    // The parties, resource and action of a consent, asked by one of its holders.
    let ask = |rng: &mut Rng, c: &Consent, resource: Option<&str>| -> ConsentCheckQuery {
        let holders: Vec<NodeId> = c.holders().collect();
        let holder = pick(rng, &holders).copied().unwrap_or(c.to);
        let rights: Vec<(&String, &delegraph::graph::Actions)> = c.rights.iter().collect();
        let (res, acts) = pick(rng, &rights)
            .copied()
            .unwrap_or_else(|| die("a consent without rights".into()));
        let acts: Vec<&String> = acts.iter().collect();
        let action = pick(rng, &acts).map_or_else(|| "consent".to_string(), |a| a.to_string());
        ConsentCheckQuery {
            from: id(c.from),
            to: id(holder),
            resource: resource.unwrap_or(res).to_string(),
            action,
            consent: None,
        }
    };
    while out.len() < n {
        let u = rng.below(100);
        let (kind, q) = if u < 40 {
            let c = pick(&mut rng, valid).unwrap_or_else(|| die("no valid consent".into()));
            (Kind::Valid, ask(&mut rng, c, None))
        } else if u < 65 {
            // A consumer and a person who gave it nothing (found by trying).
            let c = pick(&mut rng, valid).unwrap_or_else(|| die("no valid consent".into()));
            let free = (0..1_000)
                .filter_map(|_| pick(&mut rng, &persons).copied())
                .find(|p| w.consent.from_to(*p, c.to).next().is_none());
            let Some(p) = free else {
                continue;
            };
            let mut q = ask(&mut rng, c, None);
            q.from = id(p);
            q.to = id(c.to);
            (Kind::NoConsent, q)
        } else if u < 80 {
            let c = pick(&mut rng, expired).unwrap_or_else(|| die("no expired consent".into()));
            (Kind::Expired, ask(&mut rng, c, None))
        } else if u < 95 {
            let c = pick(&mut rng, revoked).unwrap_or_else(|| die("no revoked consent".into()));
            (Kind::Revoked, ask(&mut rng, c, None))
        } else {
            let c = pick(&mut rng, valid).unwrap_or_else(|| die("no valid consent".into()));
            let others: Vec<&String> = resources.iter().filter(|r| !c.rights.contains_key(*r)).collect();
            let Some(other) = pick(&mut rng, &others) else {
                continue;
            };
            (Kind::OtherResource, ask(&mut rng, c, Some(other)))
        };
        out.push(Lookup { kind, q });
    }
    out
}

fn at(times: &[Duration], q: f64) -> Duration {
    times
        .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    eprintln!(
        "consent bench: {what}: {} lookups: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        times.len(),
        at(&times, 0.50),
        at(&times, 0.99),
        at(&times, 0.999),
        times.last().copied().unwrap_or_default()
    );
}

/// Times every lookup through `consent_check`, then through `check`; prints the
/// percentiles and the answers by kind. Stops when a valid consent does not answer yes
/// or a pair without consents does not answer `not_found`.
fn percentiles(w: &World, ls: &[Lookup]) {
    // Warm up the code paths (not the data: the lookups are spread over the world).
    for l in ls.iter().take(1_000) {
        let _ = query::consent_check(w, &l.q);
    }
    let mut times = Vec::with_capacity(ls.len());
    let mut by_kind: BTreeMap<Kind, Vec<Duration>> = BTreeMap::new();
    let mut answers: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for l in ls {
        let t = Instant::now();
        let a = query::consent_check(w, &l.q);
        let d = t.elapsed();
        times.push(d);
        by_kind.entry(l.kind).or_default().push(d);
        let a = match a {
            Ok(a) if a.allowed => "yes".to_string(),
            Ok(a) => a.reason.unwrap_or_default(),
            Err(e) => die(format!("consent_check {:?}: {e}", l.q)),
        };
        let wrong = match l.kind {
            Kind::Valid => a != "yes",
            Kind::NoConsent => a != "not_found",
            _ => false,
        };
        if wrong {
            die(format!("consent_check {:?} answered {a}", l.q));
        }
        *answers.entry((l.kind, a)).or_default() += 1;
    }
    report("consent_check", times);
    for (k, t) in by_kind {
        report(&format!("consent_check ({})", k.name()), t);
    }
    eprintln!("consent bench: answers by kind {answers:?}");

    let checks: Vec<(Kind, CheckQuery)> = ls
        .iter()
        .map(|l| {
            (
                l.kind,
                CheckQuery {
                    subject: l.q.to.clone(),
                    party: l.q.from.clone(),
                    package: None,
                    role: None,
                    resource: Some(l.q.resource.clone()),
                    action: Some(l.q.action.clone()),
                    instance: None,
                },
            )
        })
        .collect();
    let mut times = Vec::with_capacity(checks.len());
    let mut permits = 0usize;
    for (kind, q) in &checks {
        let t = Instant::now();
        let a = query::check(w, q);
        times.push(t.elapsed());
        match a {
            Ok(a) if a.allowed => permits += 1,
            Ok(_) if *kind == Kind::Valid => die(format!("check {q:?} denied a valid consent")),
            Ok(_) => {}
            Err(e) => die(format!("check {q:?}: {e}")),
        }
    }
    report("check on a consent resource", times);
    eprintln!("consent bench: check permits {permits} of {}", checks.len());
}

fn bench(c: &mut Criterion) {
    let w = world();
    let n = std::env::var("DELEGRAPH_CONSENT_LOOKUPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let ls = lookups(&w, n);
    percentiles(&w, &ls);
    if std::env::var("DELEGRAPH_CONSENT_PERCENTILES_ONLY").is_ok_and(|v| v == "1") {
        return;
    }
    let first = |k: Kind| ls.iter().find(|l| l.kind == k).map(|l| &l.q);
    let mut g = c.benchmark_group("consent");
    for k in [Kind::Valid, Kind::NoConsent, Kind::Revoked] {
        if let Some(q) = first(k) {
            g.bench_function(format!("consent_check/{}", k.name()), |b| {
                b.iter(|| query::consent_check(&w, q))
            });
        }
    }
    let mut i = 0usize;
    g.bench_function("consent_check/sampled", |b| {
        b.iter(|| {
            i = (i + 1) % ls.len();
            query::consent_check(&w, &ls[i].q)
        })
    });
    if let Some(q) = first(Kind::Valid) {
        let cq = CheckQuery {
            subject: q.to.clone(),
            party: q.from.clone(),
            package: None,
            role: None,
            resource: Some(q.resource.clone()),
            action: Some(q.action.clone()),
            instance: None,
        };
        g.bench_function("check/consent_resource_valid", |b| {
            b.iter(|| query::check(&w, &cq))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
