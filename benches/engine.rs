//! In-process benchmarks of the engine's queries and mutations on synthetic worlds of
//! several sizes: an accounting firm with many REGN clients (some delegated to agents),
//! ordinary companies with a CEO and employees given packages.
//!
//! Run: `cargo bench --bench engine` (figures go to BENCHMARKS.md).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, queries);
criterion_main!(benches);
