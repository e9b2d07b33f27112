//! In-process benchmarks of the engine's queries and mutations on synthetic worlds of
//! several sizes: an accounting firm with many REGN clients (some delegated to agents),
//! ordinary companies with a CEO and employees given packages.
//!
//! Run: `cargo bench --bench engine` (figures go to BENCHMARKS.md).
//!
//! With `DELEGRAPH_ENGINE_SNAPSHOT=W.snap` it runs instead the check-latency bench on a
//! saved world (see [`snapshot_checks`]): `query::check` of packages, timed one by one,
//! with p50/p99/p99.9 printed per round. Issue 16 measures the Norway world with it
//! before and after the partitioned graph (command in BENCHMARKS.md).

use criterion::{BenchmarkId, Criterion, criterion_group};
use delegraph::event::{
    AgentEvent, DelegateEvent, Event, GrantEvent, PartyEvent, ResourceEvent, RoleEvent, RuleSpec,
};
use delegraph::model::PartyKind;
use delegraph::mutate;
use delegraph::resolve;
use delegraph::world::World;

fn party(id: String, kind: PartyKind, unit_type: Option<&str>) -> Event {
    Event::Party(PartyEvent {
        id,
        kind,
        name: None,
        unit_type: unit_type.map(str::to_string),
        main_unit: None,
        org_no: None,
        ssn: None,
        system_user_kind: None,
        owner: None,
        system: None,
        uuid: None,
        party_id: None,
        user_id: None,
    })
}

fn role(from: &str, to: &str, role: &str) -> Event {
    Event::RegisterRole(RoleEvent {
        from: from.into(),
        to: to.into(),
        role: role.into(),
    })
}

fn apply(w: &mut World, e: Event) {
    if let Err(err) = mutate::apply(w, &e) {
        eprintln!("bench world: refused {e:?}: {err}");
        std::process::exit(1);
    }
}

/// A world with `companies` ordinary companies (CEO + 3 employees each, one with a
/// package grant), and one accounting firm that is REGN for `clients` of them, with
/// `delegated` of those clients forwarded to one of 10 agents.
fn world(companies: usize, clients: usize, delegated: usize) -> World {
    let mut w = World::new();
    apply(&mut w, party("firm".into(), PartyKind::Organisation, Some("AS")));
    apply(&mut w, party("firm-ceo".into(), PartyKind::Person, None));
    apply(&mut w, role("firm", "firm-ceo", "daglig-leder"));
    for a in 0..10 {
        apply(&mut w, party(format!("agent{a}"), PartyKind::Person, None));
        apply(
            &mut w,
            Event::AddAgent(AgentEvent {
                facilitator: "firm".into(),
                agent: format!("agent{a}"),
                cascade: None,
                by: None,
            }),
        );
    }
    apply(
        &mut w,
        Event::Resource(ResourceEvent {
            id: "ske-mva".into(),
            owner: None,
            delegable: None,
            rules: vec![RuleSpec {
                actions: vec!["read".into(), "write".into()],
                any_of: vec![
                    "urn:altinn:accesspackage:merverdiavgift".into(),
                    "urn:altinn:rolecode:utinn".into(),
                ],
            }],
            access_lists: None,
            access_list_mode: None,
            kind: None,
            one_time: None,
            scopes: None,
        }),
    );
    for i in 0..companies {
        let c = format!("c{i}");
        apply(&mut w, party(c.clone(), PartyKind::Organisation, Some("AS")));
        apply(&mut w, party(format!("{c}-ceo"), PartyKind::Person, None));
        apply(&mut w, role(&c, &format!("{c}-ceo"), "daglig-leder"));
        for e in 0..3 {
            apply(&mut w, party(format!("{c}-e{e}"), PartyKind::Person, None));
        }
        apply(
            &mut w,
            Event::Grant(GrantEvent {
                from: c.clone(),
                to: format!("{c}-e0"),
                package: Some("merverdiavgift".into()),
                resource: None,
                instance: None,
                actions: None,
                by: None,
                cascade: None,
            }),
        );
        if i < clients {
            apply(&mut w, role(&c, "firm", "regnskapsforer"));
        }
        if i < delegated {
            apply(
                &mut w,
                Event::Delegate(DelegateEvent {
                    client: c.clone(),
                    facilitator: "firm".into(),
                    agent: format!("agent{}", i % 10),
                    role: Some("regnskapsforer".into()),
                    packages: Some(vec!["regnskapsforer-lonn".into()]),
                    resources: None,
                    by: None,
                }),
            );
        }
    }
    w
}

fn node(w: &World, id: &str) -> delegraph::graph::NodeId {
    match w.graph.party_node(id) {
        Some(n) => n,
        None => {
            eprintln!("bench world has no `{id}`");
            std::process::exit(1)
        }
    }
}

fn queries(c: &mut Criterion) {
    for &(companies, clients, delegated) in &[(2_000, 1_000, 500), (40_000, 20_000, 5_000)] {
        let mut w = world(companies, clients, delegated);
        let cat = w.catalog;
        let label = format!("{companies}co-{clients}cl");
        let mva = cat
            .package_id("merverdiavgift")
            .unwrap_or_else(|| std::process::exit(1));
        let lonn = cat
            .package_id("regnskapsforer-lonn")
            .unwrap_or_else(|| std::process::exit(1));
        let utinn = cat.role_id("utinn").unwrap_or_else(|| std::process::exit(1));
        let (ceo, company, emp) = (node(&w, "c7-ceo"), node(&w, "c7"), node(&w, "c7-e0"));
        let (firm, firm_ceo, agent) = (node(&w, "firm"), node(&w, "firm-ceo"), node(&w, "agent7"));
        let res = w
            .graph
            .resource_node("ske-mva")
            .unwrap_or_else(|| std::process::exit(1));

        let mut g = c.benchmark_group("check");
        g.bench_function(BenchmarkId::new("package/rightholder", &label), |b| {
            b.iter(|| resolve::has_package(&w, emp, company, mva))
        });
        g.bench_function(BenchmarkId::new("package/client-delegation", &label), |b| {
            b.iter(|| resolve::has_package(&w, agent, company, lonn))
        });
        g.bench_function(BenchmarkId::new("package/key-role-via-firm", &label), |b| {
            b.iter(|| resolve::has_package(&w, firm_ceo, company, lonn))
        });
        g.bench_function(BenchmarkId::new("role/rolemap", &label), |b| {
            b.iter(|| resolve::has_role(&w, ceo, company, utinn))
        });
        g.bench_function(BenchmarkId::new("resource", &label), |b| {
            b.iter(|| delegraph::decide::permits(&w, emp, company, res, "write", None))
        });
        g.finish();

        let mut g = c.benchmark_group("authorized_parties");
        g.bench_function(BenchmarkId::new("ordinary-person", &label), |b| {
            b.iter(|| resolve::authorized_parties(&w, ceo))
        });
        g.sample_size(20);
        g.bench_function(BenchmarkId::new("accounting-firm-ceo", &label), |b| {
            b.iter(|| resolve::authorized_parties(&w, firm_ceo))
        });
        g.finish();

        let mut g = c.benchmark_group("other");
        g.bench_function(BenchmarkId::new("holders", &label), |b| {
            b.iter(|| resolve::holders(&w, company, lonn))
        });
        g.bench_function(BenchmarkId::new("can_delegate", &label), |b| {
            b.iter(|| resolve::can_delegate_package(&w, ceo, company, mva))
        });
        g.finish();

        // A REGN relationship ending for the firm's busiest agent's client, simulated and
        // applied (then rolled back by re-adding, so every iteration sees the same world).
        let _ = firm;
        let ev = Event::UnregisterRole(RoleEvent {
            from: "c7".into(),
            to: "firm".into(),
            role: "regnskapsforer".into(),
        });
        let mut g = c.benchmark_group("cascade");
        g.sample_size(20);
        g.bench_function(BenchmarkId::new("simulate-regn-removal", &label), |b| {
            b.iter(|| mutate::simulate(&mut w, &ev))
        });
        g.finish();
    }
}

// ----------------------------------------------------------------------------------
// Check latency on a saved world (`DELEGRAPH_ENGINE_SNAPSHOT`).

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{name}: `{v}` is not a count");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

/// A hash of a pair of ids that does not depend on the process, the graph's layout or
/// the order parties are visited in, so every build picks the same pairs from a world.
fn pair_hash(a: &str, b: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([0xff]).chain(b.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV's low bits alone are poorly mixed.
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(i).copied().unwrap_or(0)
}

fn micros(ns: u64) -> String {
    format!("{:.2} µs", ns as f64 / 1000.0)
}

/// Loads the world saved at `path` and times `query::check` for package checks of
/// persons on organisations they are related to.
///
/// The pairs: for an edge from an organisation to a person (a role, a grant, a client
/// delegation to an agent) the person on the organisation; for an edge from an
/// organisation to another organisation (its accountant, auditor, main unit...) a person
/// of the second (the first by id among its edges' persons) on the first. Pairs are
/// kept by a hash of their two ids (about twice as many as checks), sorted, then
/// shuffled with a fixed seed, so the same world gives the same checks whatever the
/// graph's internals. The package of each check: half the time one the subject holds
/// for the party (from `query::rights`, when it holds any), otherwise any package of the
/// catalogue: a mix of yes and no. Every check is timed alone (`Instant` around
/// `query::check`); a warm-up of other checks runs first. Env:
/// `DELEGRAPH_ENGINE_CHECKS` (default 200 000 per round), `DELEGRAPH_ENGINE_ROUNDS`
/// (default 3).
fn snapshot_checks(path: &str) {
    use delegraph::generate::Rng;
    use delegraph::model::PartyKind;
    use delegraph::query::{self, CheckQuery, RightsQuery};

    let checks = env_usize("DELEGRAPH_ENGINE_CHECKS", 200_000).max(1);
    let rounds = env_usize("DELEGRAPH_ENGINE_ROUNDS", 3).max(1);
    let warm = (checks / 10).clamp(1, 20_000);
    let t = std::time::Instant::now();
    let (w, _) =
        delegraph::persist::snapshot::load(std::path::Path::new(path), &mut |_| {}).unwrap_or_else(|e| {
            eprintln!("cannot load `{path}`: {e}");
            std::process::exit(1)
        });
    println!(
        "world `{path}`: {} parties, {} edges, loaded in {:.2?}",
        w.graph.party_count(),
        w.graph.edge_count(),
        t.elapsed()
    );

    let t = std::time::Instant::now();
    let g = &w.graph;
    let keep = (g.edge_count() as u64 / (2 * (checks + warm) as u64)).max(1);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (n, org) in g.parties() {
        if org.kind != PartyKind::Organisation {
            continue;
        }
        for (_, t, _) in g.outgoing(n) {
            let Some(to) = g.party(t) else { continue };
            if !pair_hash(&org.id, &to.id).is_multiple_of(keep) {
                continue;
            }
            match to.kind {
                PartyKind::Person => pairs.push((to.id.to_string(), org.id.to_string())),
                PartyKind::Organisation => {
                    let person = g
                        .outgoing(t)
                        .filter_map(|(_, y, _)| g.party(y))
                        .filter(|y| y.kind == PartyKind::Person)
                        .map(|y| &*y.id)
                        .min();
                    if let Some(y) = person {
                        pairs.push((y.to_string(), org.id.to_string()));
                    }
                }
                PartyKind::SystemUser => {}
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    if pairs.is_empty() {
        eprintln!("`{path}` has no organisation with a related person");
        std::process::exit(1);
    }
    let mut rng = Rng::new(16, 1);
    for i in (1..pairs.len()).rev() {
        pairs.swap(i, rng.index(i + 1));
    }
    let all: Vec<&str> = w.catalog.packages.iter().map(|p| p.code.as_str()).collect();
    let mut make = |i: usize| -> CheckQuery {
        let (subject, party) = &pairs[i % pairs.len()];
        let mut package = rng.pick(&all).map_or_else(String::new, |p| p.to_string());
        if rng.chance(0.5) {
            let q = RightsQuery {
                subject: subject.clone(),
                party: party.clone(),
            };
            if let Ok(r) = query::rights(&w, &q)
                && let Some(p) = rng.pick(&r.packages)
            {
                package = p.clone();
            }
        }
        CheckQuery {
            subject: subject.clone(),
            party: party.clone(),
            package: Some(package),
            role: None,
            resource: None,
            action: None,
            instance: None,
        }
    };
    let warmup: Vec<CheckQuery> = (checks..checks + warm).map(&mut make).collect();
    let qs: Vec<CheckQuery> = (0..checks).map(&mut make).collect();
    println!(
        "{} distinct pairs (1 edge in {keep}), {checks} checks per round, {warm} warm-up, chosen in {:.2?}",
        pairs.len(),
        t.elapsed()
    );

    let run = |qs: &[CheckQuery], lat: &mut Vec<u64>| -> usize {
        let mut allowed = 0;
        for q in qs {
            let t = std::time::Instant::now();
            let a = query::check(&w, q);
            let ns = t.elapsed().as_nanos() as u64;
            match a {
                Ok(a) => allowed += usize::from(std::hint::black_box(a).allowed),
                Err(e) => {
                    eprintln!("check {q:?} refused: {e}");
                    std::process::exit(1);
                }
            }
            lat.push(ns);
        }
        allowed
    };
    let mut lat = Vec::with_capacity(checks);
    run(&warmup, &mut lat);
    let mut p99s = Vec::new();
    for round in 1..=rounds {
        lat.clear();
        let t = std::time::Instant::now();
        let allowed = run(&qs, &mut lat);
        let wall = t.elapsed();
        lat.sort_unstable();
        let mean = lat.iter().sum::<u64>() / lat.len().max(1) as u64;
        p99s.push(percentile(&lat, 0.99));
        println!(
            "round {round}: p50 {} p90 {} p99 {} p99.9 {} max {} mean {} ({} of {} allowed, {:.0} checks/s on one thread)",
            micros(percentile(&lat, 0.50)),
            micros(percentile(&lat, 0.90)),
            micros(percentile(&lat, 0.99)),
            micros(percentile(&lat, 0.999)),
            micros(lat.last().copied().unwrap_or(0)),
            micros(mean),
            allowed,
            lat.len(),
            lat.len() as f64 / wall.as_secs_f64()
        );
    }
    p99s.sort_unstable();
    println!(
        "median p99 over {rounds} rounds: {}",
        micros(percentile(&p99s, 0.5))
    );
    // The process ends here: freeing a large world only adds to the wall time.
    std::mem::forget(w);
}

criterion_group!(benches, queries);

fn main() {
    if let Ok(path) = std::env::var("DELEGRAPH_ENGINE_SNAPSHOT") {
        snapshot_checks(&path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
