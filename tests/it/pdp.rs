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
    // An unknown algorithm, and only-one-applicable (a policy-combining algorithm) used
    // to combine rules, are accepted and give Indeterminate (domain.md §8.4).
    for alg in [
        "urn:example:no-such-algorithm",
        "urn:oasis:names:tc:xacml:1.0:policy-combining-algorithm:only-one-applicable",
    ] {
        let p = xml::parse_policy(policy("", alg, &rules).as_bytes()).unwrap();
        assert_eq!(
            decide(&p, &request("x", "read")),
            Decision::Indeterminate,
            "{alg}"
        );
    }
}

/// A policy set over one Deny policy and one Indeterminate policy (a rule whose target
/// needs a missing attribute): XACML 3.0 permit-overrides gives Indeterminate{DP}, the
/// legacy (1.0) policy-level permit-overrides lets the Deny stand (appendix C).
#[test]
fn legacy_permit_overrides_of_policies_lets_a_deny_beat_an_indeterminate() {
    let read = any_of("", &[vec![action_is("", "read")]]);
    let deny = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Deny", read.clone())],
    )
    .replace(r#"PolicyId="p""#, r#"PolicyId="deny""#);
    let missing = match_xml("", "string-equal", "x", SUBJ, "urn:example:missing")
        .replace(r#"MustBePresent="false""#, r#"MustBePresent="true""#);
    let indeterminate = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", any_of("", &[vec![missing]]))],
    )
    .replace(r#"PolicyId="p""#, r#"PolicyId="ind""#);
    for (alg, expect) in [
        (
            "urn:oasis:names:tc:xacml:3.0:policy-combining-algorithm:permit-overrides",
            Decision::Indeterminate,
        ),
        (
            "urn:oasis:names:tc:xacml:1.0:policy-combining-algorithm:permit-overrides",
            Decision::Deny,
        ),
    ] {
        let set = format!(
            r#"<PolicySet xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicySetId="s" Version="1.0" PolicyCombiningAlgId="{alg}"><Target/>{}{}</PolicySet>"#,
            deny.replace(r#" xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17""#, ""),
            indeterminate.replace(r#" xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17""#, ""),
        );
        let p = xml::parse_policy(set.as_bytes()).unwrap();
        assert_eq!(decide(&p, &request("x", "read")), expect, "{alg}");
    }
}

/// A world for the context-handler tests: per (user 1003, national id) leads bergen
/// (party 50003, org number 310000003); `skjema` permits read to DAGL; `bare` has
/// neither policy nor rules; `ruled` permits read to DAGL by `rules`.
fn context_world() -> World {
    let mut w = World::new();
    let read = any_of("", &[vec![action_is("", "read")]]);
    let dagl = any_of(
        "",
        &[vec![match_xml(
            "",
            "string-equal-ignore-case",
            "DAGL",
            SUBJ,
            "urn:altinn:rolecode",
        )]],
    );
    let doc = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", format!("{dagl}{read}"))],
    );
    let evs = [
        json!({"party": {"id": "bergen", "kind": "organisation", "unit_type": "AS", "party_id": 50003, "org_no": "310000003"}}),
        json!({"party": {"id": "per", "kind": "person", "user_id": 1003, "ssn": "01017012345"}}),
        json!({"party": {"id": "kari", "kind": "person", "user_id": 1001}}),
        json!({"register_role": {"from": "bergen", "to": "per", "role": "daglig-leder"}}),
        json!({"policy": {"resource": "skjema", "xml": doc}}),
        json!({"resource": {"id": "bare"}}),
        json!({"resource": {"id": "ruled", "rules": [{"actions": ["read"], "any_of": ["urn:altinn:rolecode:DAGL"]}]}}),
    ];
    for e in evs {
        mutate::apply(&mut w, &Event::from_json(e).unwrap()).unwrap();
    }
    w
}

fn altinn_request(subject: serde_json::Value, resource: serde_json::Value) -> serde_json::Value {
    json!({"Request": {
        "AccessSubject": [{"Attribute": subject}],
        "Action": [{"Attribute": [{"AttributeId": ACTION_ID, "Value": "read"}]}],
        "Resource": [{"Attribute": resource}]
    }})
}

fn attr(id: &str, v: &str) -> serde_json::Value {
    json!({"AttributeId": id, "Value": v})
}

const USERID: &str = "urn:altinn:userid";
const SSN: &str = "urn:altinn:person:identifier-no";
const ORGNO: &str = "urn:altinn:organization:identifier-no";
const SYSTEMUSER: &str = "urn:altinn:systemuser:uuid";
const A_UUID: &str = "5a0e2b6e-0000-4000-8000-00000000005a";

/// (decision, status) of the only result.
fn answer(w: &World, req: &serde_json::Value, api: pdp::Api) -> (String, String) {
    let out = pdp::decide_json_api(w, req, api);
    let results = out["Response"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{out}");
    (
        results[0]["Decision"].as_str().unwrap().to_string(),
        results[0]["Status"]["StatusCode"]["Value"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// domain.md §8 item 7: what Altinn's context handler refuses is Indeterminate, with a
/// syntax error on the internal endpoint and a processing error on the external one.
#[test]
fn malformed_requests_as_altinns_context_handler_sees_them_are_indeterminate() {
    use pdp::Api::{External, Internal};
    let w = context_world();
    let party = || {
        vec![
            attr("urn:altinn:resource", "skjema"),
            attr("urn:altinn:partyid", "50003"),
        ]
    };
    let per = || vec![attr(USERID, "1003")];
    let ok = altinn_request(json!(per()), json!(party()));
    assert_eq!(answer(&w, &ok, Internal).0, "Permit");
    let mut no_subject = ok.clone();
    no_subject["Request"]
        .as_object_mut()
        .unwrap()
        .remove("AccessSubject");
    let mut null_subject = ok.clone();
    null_subject["Request"]["AccessSubject"] = json!(null);
    let mut no_resource = ok.clone();
    no_resource["Request"].as_object_mut().unwrap().remove("Resource");
    let cases: Vec<(&str, serde_json::Value, Vec<pdp::Api>)> = vec![
        ("no subject category", no_subject, vec![Internal, External]),
        ("a null subject category", null_subject, vec![Internal, External]),
        (
            "a subject without attributes",
            altinn_request(json!([]), json!(party())),
            vec![Internal, External],
        ),
        ("no resource category", no_resource, vec![Internal, External]),
        (
            "a resource attribute without values",
            altinn_request(
                json!(per()),
                json!([{"AttributeId": "urn:altinn:resource", "Value": []}]),
            ),
            vec![Internal, External],
        ),
        (
            "a system user beside a user id",
            altinn_request(
                json!([attr(SYSTEMUSER, A_UUID), attr(USERID, "1003")]),
                json!(party()),
            ),
            vec![Internal, External],
        ),
        (
            "a system user id that is not a uuid",
            altinn_request(json!([attr(SYSTEMUSER, "per")]), json!(party())),
            vec![Internal, External],
        ),
        (
            "a user id with a national id",
            altinn_request(
                json!([attr(USERID, "1003"), attr(SSN, "01017012345")]),
                json!(party()),
            ),
            vec![External],
        ),
        (
            "an org number with a user id",
            altinn_request(
                json!([attr(USERID, "1003"), attr(ORGNO, "310000003")]),
                json!(party()),
            ),
            vec![External],
        ),
        (
            "an org number with a national id",
            altinn_request(
                json!([attr(SSN, "01017012345"), attr(ORGNO, "310000003")]),
                json!(party()),
            ),
            vec![External],
        ),
        (
            "a national id as subject on the internal endpoint",
            altinn_request(json!([attr(SSN, "01017012345")]), json!(party())),
            vec![Internal],
        ),
        (
            "a national id as resource party on the internal endpoint",
            altinn_request(
                json!(per()),
                json!([attr("urn:altinn:resource", "skjema"), attr(SSN, "01017012345")]),
            ),
            vec![Internal],
        ),
    ];
    for (what, req, apis) in cases {
        for api in apis {
            let status = if api == Internal {
                STATUS_SYNTAX
            } else {
                "urn:oasis:names:tc:xacml:1.0:status:processing-error"
            };
            assert_eq!(
                answer(&w, &req, api),
                ("Indeterminate".to_string(), status.to_string()),
                "{what} ({api:?})"
            );
        }
    }
    // Well-formed, merely unknown or allowed: decided as usual.
    for (req, api, expect) in [
        (
            altinn_request(json!([attr(SYSTEMUSER, A_UUID)]), json!(party())),
            Internal,
            "NotApplicable",
        ),
        (
            altinn_request(json!([attr(USERID, "4242")]), json!(party())),
            Internal,
            "NotApplicable",
        ),
        (
            altinn_request(
                json!([attr(USERID, "1003"), attr(ORGNO, "310000003")]),
                json!(party()),
            ),
            Internal,
            "Permit",
        ),
        (
            altinn_request(json!([attr(SSN, "01017012345")]), json!(party())),
            External,
            "Permit",
        ),
    ] {
        assert_eq!(answer(&w, &req, api).0, expect, "{req}");
    }
    // A resource with neither policy nor rules, or none at all: Indeterminate; a
    // `rules` resource is decided by its rules.
    for (res, expect) in [
        ("bare", "Indeterminate"),
        ("no-such-resource", "Indeterminate"),
        ("ruled", "Permit"),
    ] {
        let req = altinn_request(
            json!(per()),
            json!([
                attr("urn:altinn:resource", res),
                attr("urn:altinn:partyid", "50003")
            ]),
        );
        assert_eq!(answer(&w, &req, Internal).0, expect, "{res}");
    }
    // One malformed reference of a multi-request: one Indeterminate for the whole.
    let multi = json!({"Request": {
        "AccessSubject": [{"Id": "s", "Attribute": per()}],
        "Action": [{"Id": "a", "Attribute": [{"AttributeId": ACTION_ID, "Value": "read"}]}],
        "Resource": [{"Id": "r", "Attribute": party()}],
        "MultiRequests": {"RequestReference": [{"ReferenceId": ["s", "a", "r"]}, {"ReferenceId": ["s", "a"]}]}
    }});
    assert_eq!(
        answer(&w, &multi, Internal),
        ("Indeterminate".to_string(), STATUS_SYNTAX.to_string())
    );
}

/// domain.md §8 item 9: `null` counts as absent; `MultiRequests` with fewer than two
/// references is one request over all categories.
#[test]
fn json_nulls_are_absent_and_a_single_reference_is_one_request() {
    let w = context_world();
    let base = json!({"Request": {
        "AccessSubject": [{"Id": "s", "Attribute": [
            {"AttributeId": USERID, "Value": ["1003", null], "DataType": null, "Issuer": null, "IncludeInResult": null}
        ]}],
        "Action": [{"Id": "a", "Attribute": [{"AttributeId": ACTION_ID, "Value": "read"}]}],
        "Resource": [{"Id": "r", "Attribute": [attr("urn:altinn:resource", "skjema"), attr("urn:altinn:partyid", "50003")]}],
        "Environment": null
    }});
    for multi in [
        json!(null),
        json!({}),
        json!({"RequestReference": null}),
        json!({"RequestReference": []}),
        json!({"RequestReference": [{"ReferenceId": ["s", "a"]}]}),
    ] {
        let mut req = base.clone();
        req["Request"]["MultiRequests"] = multi.clone();
        assert_eq!(answer(&w, &req, pdp::Api::Internal).0, "Permit", "{multi}");
    }
}

/// domain.md §8 item 8: `urn:altinn:resource:instance-id` names an instance (a bare guid
/// of the resource party, or `{party_id}/{guid}`), and its instance grants apply.
#[test]
fn an_instance_named_by_resource_attribute_reaches_instance_grants() {
    let mut w = context_world();
    let guid = "7a1c6a4e-0000-4000-8000-00000000000a";
    let grant = json!({"grant": {"from": "bergen", "to": "kari", "resource": "skjema",
        "instance": format!("50003/{guid}"), "actions": ["read"]}});
    mutate::apply(&mut w, &Event::from_json(grant).unwrap()).unwrap();
    let kari = || json!([attr(USERID, "1001")]);
    let ask =
        |resource: serde_json::Value| answer(&w, &altinn_request(kari(), resource), pdp::Api::Internal).0;
    let by_party_id = |inst_attr: &str, v: &str| {
        json!([
            attr("urn:altinn:resource", "skjema"),
            attr("urn:altinn:partyid", "50003"),
            attr(inst_attr, v)
        ])
    };
    let inst = "urn:altinn:resource:instance-id";
    assert_eq!(ask(by_party_id(inst, guid)), "Permit", "a bare guid");
    assert_eq!(ask(by_party_id(inst, &format!("50003/{guid}"))), "Permit");
    assert_eq!(
        ask(json!([
            attr("urn:altinn:resource", "skjema"),
            attr(ORGNO, "310000003"),
            attr(inst, guid)
        ])),
        "Permit",
        "the resource party by org number"
    );
    assert_eq!(
        ask(by_party_id("urn:altinn:instance-id", &format!("50003/{guid}"))),
        "Permit"
    );
    assert_eq!(
        ask(by_party_id(inst, "7a1c6a4e-0000-4000-8000-00000000000b")),
        "NotApplicable"
    );
    assert_eq!(
        ask(json!([
            attr("urn:altinn:resource", "skjema"),
            attr("urn:altinn:partyid", "50003")
        ])),
        "NotApplicable",
        "no instance named"
    );
}

/// §8.2: inside a Match, Altinn's world policies compare `string-is-in` as equality, where
/// standard XACML (the conformance mode) reports an error.
#[test]
fn string_is_in_in_a_match_is_equality_in_altinn_mode_only() {
    let m = match_xml("", "string-is-in", "read", ACT, ACTION_ID);
    let doc = policy(
        "",
        "urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides",
        &[("Permit", any_of("", &[vec![m]]))],
    );
    let standard = xml::parse_policy(doc.as_bytes()).unwrap();
    assert_eq!(decide(&standard, &request("x", "read")), Decision::Indeterminate);
    let mut w = context_world();
    mutate::apply(
        &mut w,
        &Event::from_json(json!({"policy": {"resource": "skjema", "xml": doc}})).unwrap(),
    )
    .unwrap();
    let req = altinn_request(
        json!([attr(USERID, "1001")]),
        json!([
            attr("urn:altinn:resource", "skjema"),
            attr("urn:altinn:partyid", "50003")
        ]),
    );
    assert_eq!(answer(&w, &req, pdp::Api::Internal).0, "Permit");
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
