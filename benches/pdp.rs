//! The decision point in-process: one XACML decision with PIP enrichment (the subject's
//! roles and packages for the party, from the resolver) on a generated world.
//!
//! The world is the generator's `medium` preset (100 000 persons) unless
//! `DELEGRAPH_PDP_SCALE=norway` (5.56 M persons; the build alone takes minutes) or
//! `small`. The subject is the person with the most authorized parties among the first
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

fn world() -> (World, serde_json::Value) {
    let scale = match std::env::var("DELEGRAPH_PDP_SCALE").as_deref() {
        Ok("norway") => Scale::Norway,
        Ok("small") => Scale::Small,
        _ => Scale::Medium,
    };
    let mut p = Params::for_scale(scale);
    p.names = false;
    let mut w = World::new();
    for e in generate_vec(&p) {
        let _ = mutate::apply(&mut w, &e);
    }
    apply(
        &mut w,
        &Event::Policy(PolicyEvent {
            resource: "bench_resource".into(),
            xml: POLICY.into(),
        }),
    );
    // The person among the first ones who acts for the most parties.
    let persons: Vec<_> = w
        .graph
        .parties()
        .filter(|(_, p)| p.kind == PartyKind::Person)
        .map(|(n, _)| n)
        .take(5_000)
        .collect();
    let (subject, parties) = persons
        .into_iter()
        .map(|n| (n, resolve::authorized_parties(&w, n)))
        .max_by_key(|(_, a)| a.len())
        .unwrap_or_else(|| std::process::exit(1));
    let party = parties
        .last()
        .map(|a| a.party)
        .unwrap_or_else(|| std::process::exit(1));
    let (sid, pid) = (
        w.graph.ext_id(subject).to_string(),
        w.graph.ext_id(party).to_string(),
    );
    let kind = w.graph.party(party).map_or(PartyKind::Organisation, |p| p.kind);
    ids(&mut w, &sid, PartyKind::Person, 90_000_001, Some(7_000_001));
    ids(&mut w, &pid, kind, 90_000_002, None);
    eprintln!(
        "pdp bench: {} parties; subject {sid} acts for {} parties; party {pid}",
        w.graph.party_count(),
        parties.len()
    );
    let req = serde_json::json!({"Request": {
        "AccessSubject": [{"Attribute": [{"AttributeId": "urn:altinn:userid", "Value": "7000001"}]}],
        "Action": [{"Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": "read"}]}],
        "Resource": [{"Attribute": [
            {"AttributeId": "urn:altinn:resource", "Value": "bench_resource"},
            {"AttributeId": "urn:altinn:partyid", "Value": "90000002"}]}]
    }});
    (w, req)
}

fn decisions(c: &mut Criterion) {
    let (w, req) = world();
    let parsed = pdp::json::parse_request(&req).unwrap_or_default();
    let first = pdp::pip::decide(&w, &parsed, Api::Internal);
    eprintln!(
        "pdp bench: decision {:?}",
        first.results.first().map(|r| r.decision)
    );
    let mut g = c.benchmark_group("pdp");
    g.bench_function("decide_with_pip", |b| {
        b.iter(|| pdp::pip::decide(&w, &parsed, Api::Internal))
    });
    g.bench_function("decide_json_end_to_end", |b| {
        b.iter(|| pdp::decide_json(&w, &req))
    });
    g.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
