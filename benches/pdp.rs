//! The decision point in-process: one XACML decision with PIP enrichment (the subject's
//! roles and packages for the party, from the resolver) on a generated world.
//!
//! The world is the generator's `medium` preset (100 000 persons) unless
//! `DELEGRAPH_PDP_SCALE=norway` (5.56 M persons; the build alone takes minutes) or
//! `small`, or the world of a snapshot when `DELEGRAPH_PDP_SNAPSHOT=path.snap` (a
//! Norway-scale snapshot from `delegraph generate` loads in about a minute). The subject is the person with the most authorized parties among the first
//! persons (in practice an accounting firm's managing director, reaching the firm's
//! clients through a key role), deciding for the last of those parties.
//!
//! Run: `cargo bench --bench pdp`.

use criterion::{Criterion, criterion_group, criterion_main};
use delegraph::event::{Event, PartyEvent, PolicyEvent};
use delegraph::generate::{Params, Scale, generate_vec};
use delegraph::model::PartyKind;
use delegraph::mutate;
use delegraph::pdp::{self, Api};
use delegraph::resolve;
use delegraph::world::World;

const POLICY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<xacml:Policy xmlns:xacml="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="bench" Version="1.0" RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides">
  <xacml:Target/>
  <xacml:Rule RuleId="r1" Effect="Permit">
    <xacml:Target>
      <xacml:AnyOf>
        <xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:3.0:function:string-equal-ignore-case">
          <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">REGN</xacml:AttributeValue>
          <xacml:AttributeDesignator AttributeId="urn:altinn:rolecode" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
        </xacml:Match></xacml:AllOf>
        <xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:3.0:function:string-equal-ignore-case">
          <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">DAGL</xacml:AttributeValue>
          <xacml:AttributeDesignator AttributeId="urn:altinn:rolecode" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
        </xacml:Match></xacml:AllOf>
        <xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
          <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">regnskapsforer-lonn</xacml:AttributeValue>
          <xacml:AttributeDesignator AttributeId="urn:altinn:accesspackage" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
        </xacml:Match></xacml:AllOf>
      </xacml:AnyOf>
      <xacml:AnyOf><xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
        <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">bench_resource</xacml:AttributeValue>
        <xacml:AttributeDesignator AttributeId="urn:altinn:resource" Category="urn:oasis:names:tc:xacml:3.0:attribute-category:resource" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
      </xacml:Match></xacml:AllOf></xacml:AnyOf>
      <xacml:AnyOf>
        <xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
          <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">read</xacml:AttributeValue>
          <xacml:AttributeDesignator AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id" Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
        </xacml:Match></xacml:AllOf>
        <xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
          <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">write</xacml:AttributeValue>
          <xacml:AttributeDesignator AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id" Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
        </xacml:Match></xacml:AllOf>
      </xacml:AnyOf>
    </xacml:Target>
  </xacml:Rule>
  <xacml:ObligationExpressions>
    <xacml:ObligationExpression FulfillOn="Permit" ObligationId="urn:altinn:obligation:authenticationLevel1">
      <xacml:AttributeAssignmentExpression AttributeId="urn:altinn:obligation1-assignment1" Category="urn:altinn:minimum-authenticationlevel">
        <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#integer">2</xacml:AttributeValue>
      </xacml:AttributeAssignmentExpression>
    </xacml:ObligationExpression>
  </xacml:ObligationExpressions>
</xacml:Policy>"#;

fn apply(w: &mut World, e: &Event) {
    if let Err(err) = mutate::apply(w, e) {
        eprintln!("bench world: refused {}: {err}", e.name());
        std::process::exit(1);
    }
}

fn ids(w: &mut World, id: &str, kind: PartyKind, party_id: i64, user_id: Option<i64>) {
    apply(
        w,
        &Event::Party(PartyEvent {
            id: id.to_string(),
            kind,
            name: None,
            unit_type: None,
            main_unit: None,
            org_no: None,
            ssn: None,
            system_user_kind: None,
            owner: None,
            system: None,
            uuid: None,
            party_id: Some(party_id),
            user_id,
        }),
    );
}

fn request(user_id: i64, party_id: i64) -> serde_json::Value {
    serde_json::json!({"Request": {
        "AccessSubject": [{"Attribute": [{"AttributeId": "urn:altinn:userid", "Value": user_id.to_string()}]}],
        "Action": [{"Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": "read"}]}],
        "Resource": [{"Attribute": [
            {"AttributeId": "urn:altinn:resource", "Value": "bench_resource"},
            {"AttributeId": "urn:altinn:partyid", "Value": party_id.to_string()}]}]
    }})
}

/// The world, the hub's request first, then one request per sampled (person, party),
/// with the size of each pair's resolution (records of the subject for the party).
fn world() -> (World, Vec<serde_json::Value>, Vec<usize>) {
    let scale = match std::env::var("DELEGRAPH_PDP_SCALE").as_deref() {
        Ok("norway") => Scale::Norway,
        Ok("small") => Scale::Small,
        _ => Scale::Medium,
    };
    let mut w = match std::env::var_os("DELEGRAPH_PDP_SNAPSHOT") {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            eprintln!("pdp bench: loading {}", path.display());
            match delegraph::persist::snapshot::load(&path, &mut |_| {}) {
                Ok((w, _)) => w,
                Err(e) => {
                    eprintln!("pdp bench: cannot load {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
        None => {
            let mut p = Params::for_scale(scale);
            p.names = false;
            let mut w = World::new();
            for e in generate_vec(&p) {
                let _ = mutate::apply(&mut w, &e);
            }
            w
        }
    };
    apply(
        &mut w,
        &Event::Policy(PolicyEvent {
            resource: "bench_resource".into(),
            xml: POLICY.into(),
        }),
    );
    let persons: Vec<_> = w
        .graph
        .parties()
        .filter(|(_, p)| p.kind == PartyKind::Person)
        .map(|(n, _)| n)
        .take(5_000)
        .collect();
    let mut pairs: Vec<(_, _, usize)> = persons
        .into_iter()
        .filter_map(|n| {
            let a = resolve::authorized_parties(&w, n);
            let far = a.iter().rev().find(|x| x.party != n)?.party;
            Some((n, far, a.len()))
        })
        .collect();
    // The person who acts for the most parties first (an accounting firm's managing
    // director, reaching a client through the key role).
    pairs.sort_by_key(|(_, _, k)| std::cmp::Reverse(*k));
    pairs.truncate(1_000);
    let mut reqs = Vec::new();
    let sizes: Vec<usize> = pairs
        .iter()
        .map(|(x, f, _)| resolve::records(&w, *x, Some(*f)).len())
        .collect();
    let mut next_party = 90_000_000i64;
    // Every party named gets a party id (and a person a user id) once.
    let mut named: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
    let mut next_user = 7_000_000i64;
    for (x, f, _) in &pairs {
        let mut pair = [0i64; 2];
        for (slot, n) in [*x, *f].into_iter().enumerate() {
            let id = w.graph.ext_id(n).to_string();
            let (pid, uid) = match named.get(&id) {
                Some(v) => *v,
                None => {
                    let kind = w.graph.party(n).map_or(PartyKind::Organisation, |p| p.kind);
                    let v = (next_party, next_user);
                    let uid = (kind == PartyKind::Person).then_some(next_user);
                    ids(&mut w, &id, kind, next_party, uid);
                    next_party += 1;
                    next_user += 1;
                    named.insert(id, v);
                    v
                }
            };
            pair[slot] = if slot == 0 { uid } else { pid };
        }
        reqs.push(request(pair[0], pair[1]));
    }
    eprintln!(
        "pdp bench: {} parties; {} (subject, party) pairs; the hub acts for {} parties",
        w.graph.party_count(),
        reqs.len(),
        pairs.first().map_or(0, |p| p.2)
    );
    (w, reqs, sizes)
}

/// Latency percentiles over every sampled pair, one decision at a time.
/// Returns the index of the slowest pair.
fn percentiles(w: &World, reqs: &[pdp::request::Request], sizes: &[usize]) -> usize {
    let mut times = Vec::with_capacity(50_000);
    let mut permits = 0usize;
    for i in 0..50_000 {
        let r = &reqs[i % reqs.len()];
        let t = std::time::Instant::now();
        let out = pdp::pip::decide(w, r, Api::Internal);
        times.push(t.elapsed());
        if i < reqs.len() && out.results.first().map(|r| r.decision) == Some(pdp::Decision::Permit) {
            permits += 1;
        }
    }
    // The pairs slowest at their best: what the tail is made of, not scheduling noise.
    let mut best = vec![std::time::Duration::MAX; reqs.len()];
    for (i, t) in times.iter().enumerate() {
        let b = &mut best[i % reqs.len()];
        *b = (*b).min(*t);
    }
    let mut order: Vec<usize> = (0..reqs.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(best[*i]));
    for i in order.iter().take(3) {
        eprintln!(
            "pdp bench: slow pair #{i}: best of {} runs {:?}, {} records",
            times.len() / reqs.len(),
            best[*i],
            sizes[*i]
        );
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    eprintln!(
        "pdp bench: {} decisions over {} pairs ({} permit): p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        times.len(),
        reqs.len(),
        permits,
        at(0.50),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    );
    order[0]
}

fn decisions(c: &mut Criterion) {
    let (w, reqs, sizes) = world();
    let parsed: Vec<_> = reqs
        .iter()
        .map(|r| pdp::json::parse_request(r).unwrap_or_default())
        .collect();
    if parsed.is_empty() {
        eprintln!("pdp bench: no person acts for anyone in this world");
        return;
    }
    let slowest = percentiles(&w, &parsed, &sizes);
    let hub = &parsed[0];
    let mut g = c.benchmark_group("pdp");
    g.bench_function("decide_with_pip_hub", |b| {
        b.iter(|| pdp::pip::decide(&w, hub, Api::Internal))
    });
    let mut i = 0usize;
    g.bench_function("decide_with_pip_sampled_pairs", |b| {
        b.iter(|| {
            i = (i + 1) % parsed.len();
            pdp::pip::decide(&w, &parsed[i], Api::Internal)
        })
    });
    g.bench_function("decide_with_pip_slowest_pair", |b| {
        b.iter(|| pdp::pip::decide(&w, &parsed[slowest], Api::Internal))
    });
    g.bench_function("decide_json_end_to_end_hub", |b| {
        b.iter(|| pdp::decide_json(&w, &reqs[0]))
    });
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
