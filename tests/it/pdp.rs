//! The decision point beyond the conformance suite: document forms (prefix, BOM,
//! UTF-16, JSON profile leniency), malformed input, combining-algorithm identifiers,
//! the Altinn target semantics, the library API and undo of its events.

use delegraph::event::Event;
use delegraph::mutate;
use delegraph::pdp::policy::{AttrValue, CompiledPolicy};
use delegraph::pdp::request::Request;
use delegraph::pdp::response::{Decision, STATUS_SYNTAX};
use delegraph::pdp::{self, evaluate_request, json, xml};
use delegraph::world::World;
use serde_json::json;

const STR: &str = "http://www.w3.org/2001/XMLSchema#string";

fn now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-01-01T12:00:00+01:00").unwrap()
}

fn match_xml(prefix: &str, func: &str, value: &str, cat: &str, id: &str) -> String {
    format!(
        r#"<{prefix}Match MatchId="urn:oasis:names:tc:xacml:1.0:function:{func}"><{prefix}AttributeValue DataType="{STR}">{value}</{prefix}AttributeValue><{prefix}AttributeDesignator AttributeId="{id}" Category="{cat}" DataType="{STR}" MustBePresent="false"/></{prefix}Match>"#
    )
}

const SUBJ: &str = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject";
const ACT: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:action";
const ACTION_ID: &str = "urn:oasis:names:tc:xacml:1.0:action:action-id";

/// A policy with rules `(effect, target AnyOf XML)` under algorithm `alg`.
fn policy(prefix: &str, alg: &str, rules: &[(&str, String)]) -> String {
    let mut s = format!(
        r#"<{prefix}Policy xmlns{colon}{p}="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="p" Version="1.0" RuleCombiningAlgId="{alg}"><{prefix}Target/>"#,
        colon = if prefix.is_empty() { "" } else { ":" },
        p = prefix.trim_end_matches(':'),
    );
    for (i, (effect, target)) in rules.iter().enumerate() {
        s.push_str(&format!(
            r#"<{prefix}Rule RuleId="r{i}" Effect="{effect}"><{prefix}Target>{target}</{prefix}Target></{prefix}Rule>"#
        ));
    }
    s.push_str(&format!("</{prefix}Policy>"));
    s
}

fn any_of(prefix: &str, all_ofs: &[Vec<String>]) -> String {
    let mut s = format!("<{prefix}AnyOf>");
    for a in all_ofs {
        s.push_str(&format!("<{prefix}AllOf>{}</{prefix}AllOf>", a.concat()));
    }
    s.push_str(&format!("</{prefix}AnyOf>"));
    s
}

fn action_is(prefix: &str, a: &str) -> String {
    match_xml(prefix, "string-equal", a, ACT, ACTION_ID)
}

fn request(subject: &str, action: &str) -> Request {
    let v = json!({"Request": {
        "AccessSubject": {"Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:subject:subject-id", "Value": subject}]},
        "Action": {"Attribute": [{"AttributeId": ACTION_ID, "Value": action}]}
    }});
    json::parse_request(&v).unwrap()
}

fn decide(p: &CompiledPolicy, r: &Request) -> Decision {
    evaluate_request(Ok(p), &[], r, now()).results[0].decision
}

#[test]
fn prefixed_bom_and_utf16_documents_read_alike() {
    let subj = |v: &str| {
        match_xml(
            "",
            "string-equal",
            v,
            SUBJ,
            "urn:oasis:names:tc:xacml:1.0:subject:subject-id",
        )
    };
    let plain = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", any_of("", &[vec![subj("kari")]]))],
    );
    let psubj = match_xml(
        "xacml:",
        "string-equal",
        "kari",
        SUBJ,
        "urn:oasis:names:tc:xacml:1.0:subject:subject-id",
    );
    let prefixed = policy(
        "xacml:",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", any_of("xacml:", &[vec![psubj]]))],
    );
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(prefixed.as_bytes());
    let decl = format!("<?xml version=\"1.0\" encoding=\"utf-16\"?>{plain}");
    let mut utf16le = vec![0xFF, 0xFE];
    utf16le.extend(decl.encode_utf16().flat_map(u16::to_le_bytes));
    let utf16be: Vec<u8> = decl.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for doc in [
        plain.as_bytes().to_vec(),
        prefixed.into_bytes(),
        bom,
        utf16le,
        utf16be,
    ] {
        let p = xml::parse_policy(&doc).unwrap();
        assert_eq!(decide(&p, &request("kari", "read")), Decision::Permit);
        assert_eq!(decide(&p, &request("ola", "read")), Decision::NotApplicable);
    }
}

#[test]
fn json_profile_is_lenient_and_merges_repeated_ids() {
    let v = json!({"request": {
        "accesssubject": [{"attribute": [
            {"attributeid": "urn:x:role", "value": "a"},
            {"AttributeId": "urn:x:role", "Value": ["b", "c"], "DataType": "string"},
            {"AttributeId": "urn:x:age", "Value": 42}
        ]}]
    }});
    let r = json::parse_request(&v).unwrap();
    let ind = r.individual().unwrap();
    let subj = &ind[0][0];
    assert_eq!(subj.values("urn:x:role").count(), 3);
    let age: Vec<&AttrValue> = subj.values("urn:x:age").collect();
    assert_eq!(&*age[0].dt, "http://www.w3.org/2001/XMLSchema#integer");
    assert!(subj.values("urn:x:role").all(|v| &*v.dt == STR));
}

#[test]
fn malformed_input_is_indeterminate_never_a_panic() {
    for bad in [
        &b"<Request><Attributes>"[..],
        b"",
        b"\xff\xfe\x00",
        b"<Policy/>",
        b"not xml at all",
    ] {
        let out = pdp::decide_xml(&World::new(), &String::from_utf8_lossy(bad));
        assert!(out.contains("Indeterminate"), "{out}");
        assert!(out.contains("syntax-error"), "{out}");
        assert!(xml::parse_policy(bad).is_err());
    }
    for bad in [
        json!(null),
        json!({"Request": 3}),
        json!({"Request": {"AccessSubject": [{"Attribute": [{"Value": 1}]}]}}),
    ] {
        let out = pdp::decide_json(&World::new(), &bad);
        assert_eq!(out["Response"][0]["Decision"], "Indeterminate");
        assert_eq!(out["Response"][0]["Status"]["StatusCode"]["Value"], STATUS_SYNTAX);
    }
}

#[test]
fn combining_identifiers_ordered_and_policy_level_are_accepted() {
    let read = any_of("", &[vec![action_is("", "read")]]);
    let rules = [("Deny", read.clone()), ("Permit", read.clone())];
    for (alg, expect) in [
        (
            "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:ordered-deny-overrides",
            Decision::Deny,
        ),
        (
            "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:ordered-permit-overrides",
            Decision::Permit,
        ),
        (
            "urn:oasis:names:tc:xacml:1.1:rule-combining-algorithm:ordered-permit-overrides",
            Decision::Permit,
        ),
        (
            "urn:oasis:names:tc:xacml:1.0:policy-combining-algorithm:first-applicable",
            Decision::Deny,
        ),
        (
            "urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:permit-unless-deny",
            Decision::Deny,
        ),
        (
            "urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:deny-unless-permit",
            Decision::Permit,
        ),
    ] {
        let p = xml::parse_policy(policy("", alg, &rules).as_bytes()).unwrap();
        assert_eq!(decide(&p, &request("x", "read")), expect, "{alg}");
    }
    let unknown = policy("", "urn:example:no-such-algorithm", &rules);
    assert!(xml::parse_policy(unknown.as_bytes()).is_err());
}

/// One AnyOf with AllOf{role=dagl, action=read} and AllOf{role=regn}: standard XACML
/// lets a `regn` write through the second AllOf; the Altinn way checks the action
/// category against the AllOfs that mention it, so only `read` passes.
#[test]
fn altinn_target_semantics_differ_from_standard() {
    let role = |v: &str| match_xml("", "string-equal-ignore-case", v, SUBJ, "urn:altinn:rolecode");
    let target = any_of(
        "",
        &[vec![role("DAGL"), action_is("", "read")], vec![role("REGN")]],
    );
    let doc = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", target)],
    );
    let standard = xml::parse_policy(doc.as_bytes()).unwrap();
    let mut r = request("x", "write");
    r.categories[0].add(
        "urn:altinn:rolecode",
        None,
        false,
        vec![AttrValue::string("regn")],
    );
    assert_eq!(decide(&standard, &r), Decision::Permit);

    let mut w = World::new();
    let evs = [
        json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS", "party_id": 1}}),
        json!({"party": {"id": "acc", "kind": "organisation", "unit_type": "AS"}}),
        json!({"party": {"id": "kari", "kind": "person", "user_id": 7}}),
        json!({"register_role": {"from": "org", "to": "acc", "role": "regnskapsforer"}}),
        json!({"register_role": {"from": "acc", "to": "kari", "role": "daglig-leder"}}),
        json!({"policy": {"resource": "res", "xml": doc}}),
    ];
    for e in evs {
        mutate::apply(&mut w, &Event::from_json(e).unwrap()).unwrap();
    }
    let ask = |action: &str| {
        let req = json!({"Request": {
            "AccessSubject": [{"Attribute": [{"AttributeId": "urn:altinn:userid", "Value": "7"}]}],
            "Action": [{"Attribute": [{"AttributeId": ACTION_ID, "Value": action}]}],
            "Resource": [{"Attribute": [{"AttributeId": "urn:altinn:resource", "Value": "res"},
                                        {"AttributeId": "urn:altinn:partyid", "Value": "1"}]}]
        }});
        pdp::decide_json(&w, &req)["Response"][0]["Decision"].clone()
    };
    assert_eq!(ask("read"), "Permit");
    assert_eq!(ask("write"), "NotApplicable");
    // The same in XML, through the library entry point for the HTTP layer.
    let xml_req = format!(
        r#"<Request xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17"><Attributes Category="{SUBJ}"><Attribute AttributeId="urn:altinn:userid" IncludeInResult="true"><AttributeValue DataType="{STR}">7</AttributeValue></Attribute></Attributes><Attributes Category="{ACT}"><Attribute AttributeId="{ACTION_ID}"><AttributeValue DataType="{STR}">read</AttributeValue></Attribute></Attributes><Attributes Category="urn:oasis:names:tc:xacml:3.0:attribute-category:resource"><Attribute AttributeId="urn:altinn:resource"><AttributeValue DataType="{STR}">res</AttributeValue></Attribute><Attribute AttributeId="urn:altinn:partyid"><AttributeValue DataType="{STR}">1</AttributeValue></Attribute></Attributes></Request>"#
    );
    let out = pdp::decide_xml(&w, &xml_req);
    let parsed = xml::parse_response(out.as_bytes()).unwrap();
    assert_eq!(parsed.results[0].decision, Decision::Permit);
    assert_eq!(parsed.results[0].attributes[0].attrs[0].id, "urn:altinn:userid");
}

#[test]
fn refused_batches_undo_decision_point_state() {
    let mut w = World::new();
    let doc = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", any_of("", &[vec![action_is("", "read")]]))],
    );
    let evs: Vec<Event> = [
        json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS", "party_id": 5}}),
        json!({"policy": {"resource": "app_ttd_a", "xml": doc}}),
        json!({"instance": {"id": "5/abc", "resource": "app_ttd_a", "party": "org"}}),
        json!({"access_list": {"owner": "ttd", "id": "l", "members": [{"org": "org"}]}}),
        json!({"resource": {"id": "app_ttd_a", "owner": "ttd", "access_lists": ["l"], "access_list_mode": "enabled"}}),
        json!({"grant": {"from": "org", "to": "nobody", "package": "lonn"}}),
    ]
    .into_iter()
    .map(|e| Event::from_json(e).unwrap())
    .collect();
    assert!(mutate::apply_batch(&mut w, &evs).is_err());
    assert!(w.pdp.policies.is_empty());
    assert!(w.pdp.instances.is_empty());
    assert!(w.pdp.access_lists.is_empty());
    assert!(w.pdp.resource_lists.is_empty());
    assert!(w.graph.resource_node("app_ttd_a").is_none());
    assert!(w.graph.party_node("org").is_none());
    // Without the bad event everything lands, and the app's owner comes from its id.
    mutate::apply_batch(&mut w, &evs[..5]).unwrap();
    assert!(w.pdp.policies.contains_key("app_ttd_a"));
    assert_eq!(w.pdp.instances["5/abc"].party, "org");
}
