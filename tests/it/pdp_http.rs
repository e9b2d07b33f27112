//! The decision point over HTTP on Altinn's paths: `POST /authorization/api/v1/decision`
//! in XML and JSON, `POST /authorization/api/v1/authorize`, and what a caller sees when
//! the request is refused or is not valid XACML.

use delegraph::api::RunningServer;
use delegraph::api::auth::Auth;
use delegraph::pdp::{Decision, xml};
use serde_json::{Value, json};

use super::http::{Reply, assert_problem, jwt_auth, post_json, request, request_declaring, start, token};

const DECISION: &str = "/authorization/api/v1/decision";
const AUTHORIZE: &str = "/authorization/api/v1/authorize";
const OBLIGATION: &str = "urn:altinn:obligation:authenticationLevel1";
const SYNTAX_ERROR: &str = "urn:oasis:names:tc:xacml:1.0:status:syntax-error";
const PROCESSING_ERROR: &str = "urn:oasis:names:tc:xacml:1.0:status:processing-error";

/// Permit `read` to a DAGL of the party (with an authentication-level obligation on
/// Permit); Deny `delete` to everyone. Anything else is NotApplicable.
pub(crate) const POLICY: &str = r#"<xacml:Policy xmlns:xacml="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="urn:altinn:test:1" Version="1" RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides">
  <xacml:Target/>
  <xacml:Rule RuleId="dagl-read" Effect="Permit">
    <xacml:Target>
      <xacml:AnyOf><xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:3.0:function:string-equal-ignore-case">
        <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">DAGL</xacml:AttributeValue>
        <xacml:AttributeDesignator AttributeId="urn:altinn:rolecode" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
      </xacml:Match></xacml:AllOf></xacml:AnyOf>
      <xacml:AnyOf><xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
        <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">read</xacml:AttributeValue>
        <xacml:AttributeDesignator AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id" Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
      </xacml:Match></xacml:AllOf></xacml:AnyOf>
    </xacml:Target>
  </xacml:Rule>
  <xacml:Rule RuleId="no-delete" Effect="Deny">
    <xacml:Target>
      <xacml:AnyOf><xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal">
        <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">delete</xacml:AttributeValue>
        <xacml:AttributeDesignator AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id" Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/>
      </xacml:Match></xacml:AllOf></xacml:AnyOf>
    </xacml:Target>
  </xacml:Rule>
  <xacml:ObligationExpressions>
    <xacml:ObligationExpression FulfillOn="Permit" ObligationId="urn:altinn:obligation:authenticationLevel1">
      <xacml:AttributeAssignmentExpression AttributeId="urn:altinn:obligation-assignment:1" Category="urn:altinn:minimum-authenticationlevel">
        <xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#integer">2</xacml:AttributeValue>
      </xacml:AttributeAssignmentExpression>
    </xacml:ObligationExpression>
  </xacml:ObligationExpressions>
</xacml:Policy>"#;

/// per leads bergen (DAGL); kari has no role there.
pub(crate) fn world() -> Value {
    json!([
        {"party": {"id": "bergen", "kind": "organisation", "unit_type": "AS", "party_id": 50003, "org_no": "310000003"}},
        {"party": {"id": "per", "kind": "person", "user_id": 1003, "ssn": "01017012345"}},
        {"party": {"id": "kari", "kind": "person", "user_id": 1001}},
        {"register_role": {"from": "bergen", "to": "per", "role": "daglig-leder"}},
        {"policy": {"resource": "app_ttd_regnskap", "xml": POLICY}}
    ])
}

fn seeded(auth: Auth, bearer: Option<&str>) -> RunningServer {
    let (server, _) = start(1, auth);
    let r = post_json(&server, "/v1/events", &world(), bearer);
    assert_eq!(r.status, 200, "{}", r.text);
    server
}

/// One JSON-profile request: a subject by user id, an action on the app for bergen.
pub(crate) fn json_request(user_id: &str, action: &str) -> Value {
    json!({"Request": {
        "AccessSubject": [{"Attribute": [{"AttributeId": "urn:altinn:userid", "Value": user_id}]}],
        "Action": [{"Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": action}]}],
        "Resource": [{"Attribute": [
            {"AttributeId": "urn:altinn:resource", "Value": "app_ttd_regnskap"},
            {"AttributeId": "urn:altinn:partyid", "Value": "50003"}
        ]}]
    }})
}

fn xml_request(user_id: &str, action: &str) -> String {
    let attr = |cat: &str, id: &str, v: &str| {
        format!(
            r#"<Attributes Category="{cat}"><Attribute AttributeId="{id}" IncludeInResult="false"><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{v}</AttributeValue></Attribute></Attributes>"#
        )
    };
    let subject = attr(
        "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject",
        "urn:altinn:userid",
        user_id,
    );
    let action = attr(
        "urn:oasis:names:tc:xacml:3.0:attribute-category:action",
        "urn:oasis:names:tc:xacml:1.0:action:action-id",
        action,
    );
    let resource = r#"<Attributes Category="urn:oasis:names:tc:xacml:3.0:attribute-category:resource"><Attribute AttributeId="urn:altinn:resource" IncludeInResult="false"><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">app_ttd_regnskap</AttributeValue></Attribute><Attribute AttributeId="urn:altinn:partyid" IncludeInResult="false"><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">50003</AttributeValue></Attribute></Attributes>"#;
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><Request xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" ReturnPolicyIdList="false" CombinedDecision="false">{subject}{action}{resource}</Request>"#
    )
}

fn post_as(
    server: &RunningServer,
    path: &str,
    content_type: &str,
    body: &[u8],
    bearer: Option<&str>,
) -> Reply {
    request(
        server,
        "POST",
        path,
        Some(content_type),
        Some(body.to_vec()),
        bearer,
    )
}

fn decide_json(server: &RunningServer, path: &str, body: &Value) -> Reply {
    post_as(
        server,
        path,
        "application/json",
        body.to_string().as_bytes(),
        None,
    )
}

fn decisions(r: &Reply) -> Vec<String> {
    r.body["Response"]
        .as_array()
        .unwrap_or_else(|| panic!("a JSON response: {}", r.text))
        .iter()
        .map(|x| x["Decision"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn obligation_ids(result: &Value) -> Vec<String> {
    result["Obligations"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|o| o["Id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_json_decision_permits_with_its_obligation_and_names_the_state_it_read() {
    let server = seeded(Auth::Disabled, None);
    for content_type in ["application/json", "application/xacml+json; charset=utf-8"] {
        let r = post_as(
            &server,
            DECISION,
            content_type,
            json_request("1003", "read").to_string().as_bytes(),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            r.content_type.starts_with("application/json"),
            "{}",
            r.content_type
        );
        assert_eq!(decisions(&r), ["Permit"], "{content_type}");
        let result = &r.body["Response"][0];
        assert_eq!(obligation_ids(result), [OBLIGATION]);
        assert_eq!(
            result["Obligations"][0]["AttributeAssignment"][0]["Value"],
            json!("2"),
            "the minimum authentication level: {}",
            r.text
        );
        assert_eq!(r.token, Some(1), "the token of the state the decision read");
    }
    // kari holds no role for bergen; nobody may delete.
    let r = decide_json(&server, DECISION, &json_request("1001", "read"));
    assert_eq!(decisions(&r), ["NotApplicable"]);
    assert!(obligation_ids(&r.body["Response"][0]).is_empty());
    let r = decide_json(&server, DECISION, &json_request("1003", "delete"));
    assert_eq!(decisions(&r), ["Deny"]);
}

#[test]
fn an_xml_decision_is_answered_in_xml() {
    let server = seeded(Auth::Disabled, None);
    for content_type in [
        "application/xml",
        "text/xml; charset=utf-8",
        "application/xacml+xml",
    ] {
        for (user, action, expect) in [
            ("1003", "read", Decision::Permit),
            ("1001", "read", Decision::NotApplicable),
            ("1003", "delete", Decision::Deny),
        ] {
            let r = post_as(
                &server,
                DECISION,
                content_type,
                xml_request(user, action).as_bytes(),
                None,
            );
            assert_eq!(r.status, 200, "{}", r.text);
            assert!(
                r.content_type.starts_with("application/xml"),
                "{}",
                r.content_type
            );
            let resp = xml::parse_response(r.text.as_bytes())
                .unwrap_or_else(|e| panic!("an XACML response ({e}): {}", r.text));
            assert_eq!(resp.results.len(), 1);
            let res = &resp.results[0];
            assert_eq!(res.decision, expect, "{user} {action} as {content_type}");
            let ids: Vec<&str> = res.obligations.iter().map(|o| o.id.as_str()).collect();
            let want: &[&str] = if expect == Decision::Permit {
                &[OBLIGATION]
            } else {
                &[]
            };
            assert_eq!(ids, want);
        }
    }
    // The same bytes as UTF-16 (with a byte-order mark) are read alike.
    let mut utf16 = vec![0xFF, 0xFE];
    for u in xml_request("1003", "read").encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    let r = post_as(&server, DECISION, "application/xml", &utf16, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let resp = xml::parse_response(r.text.as_bytes()).unwrap();
    assert_eq!(resp.results[0].decision, Decision::Permit);
}

#[test]
fn a_multi_request_is_answered_in_order_with_echoed_attributes() {
    let server = seeded(Auth::Disabled, None);
    let body = json!({"Request": {
        "AccessSubject": [
            {"Id": "per", "Attribute": [{"AttributeId": "urn:altinn:userid", "Value": "1003", "IncludeInResult": true}]},
            {"Id": "kari", "Attribute": [{"AttributeId": "urn:altinn:userid", "Value": "1001", "IncludeInResult": true}]}
        ],
        "Action": [
            {"Id": "read", "Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": "read", "IncludeInResult": true}]},
            {"Id": "delete", "Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": "delete", "IncludeInResult": true}]}
        ],
        "Resource": [{"Id": "app", "Attribute": [
            {"AttributeId": "urn:altinn:resource", "Value": "app_ttd_regnskap"},
            {"AttributeId": "urn:altinn:partyid", "Value": "50003"}
        ]}],
        "MultiRequests": {"RequestReference": [
            {"ReferenceId": ["kari", "read", "app"]},
            {"ReferenceId": ["per", "delete", "app"]},
            {"ReferenceId": ["per", "read", "app"]}
        ]}
    }});
    let r = decide_json(&server, DECISION, &body);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(decisions(&r), ["NotApplicable", "Deny", "Permit"]);
    let results = r.body["Response"].as_array().unwrap();
    let obligations: Vec<Vec<String>> = results.iter().map(obligation_ids).collect();
    assert_eq!(
        obligations,
        [vec![], vec![], vec![OBLIGATION.to_string()]],
        "only the Permit carries the obligation"
    );
    // Each result echoes the subject and action it answers, so a caller can match them.
    let echoed: Vec<Vec<String>> = results
        .iter()
        .map(|res| {
            let mut v: Vec<String> = res["Category"]
                .as_array()
                .unwrap_or_else(|| panic!("echoed categories in {res}"))
                .iter()
                .flat_map(|c| c["Attribute"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["Value"].as_str().map(str::to_string))
                .collect();
            v.sort();
            v
        })
        .collect();
    assert_eq!(
        echoed,
        [["1001", "read"], ["1003", "delete"], ["1003", "read"]],
        "{}",
        r.text
    );
}

#[test]
fn the_external_endpoint_takes_a_national_id_and_json_only() {
    let server = seeded(Auth::Disabled, None);
    let by_ssn = json!({"Request": {
        "AccessSubject": [{"Attribute": [{"AttributeId": "urn:altinn:person:identifier-no", "Value": "01017012345"}]}],
        "Action": [{"Attribute": [{"AttributeId": "urn:oasis:names:tc:xacml:1.0:action:action-id", "Value": "read"}]}],
        "Resource": [{"Attribute": [
            {"AttributeId": "urn:altinn:resource", "Value": "app_ttd_regnskap"},
            {"AttributeId": "urn:altinn:partyid", "Value": "50003"}
        ]}]
    }});
    let r = decide_json(&server, AUTHORIZE, &by_ssn);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(decisions(&r), ["Permit"]);
    // The internal endpoint does not: a malformed request there (domain.md §8 item 7).
    let r = decide_json(&server, DECISION, &by_ssn);
    assert_eq!(decisions(&r), ["Indeterminate"], "the internal endpoint does not");
    assert_eq!(
        r.body["Response"][0]["Status"]["StatusCode"]["Value"],
        json!(SYNTAX_ERROR),
        "{}",
        r.text
    );
    let r = post_as(
        &server,
        AUTHORIZE,
        "application/xml",
        xml_request("1003", "read").as_bytes(),
        None,
    );
    assert_problem(&r, 415, "unsupported_media_type");
}

#[test]
fn a_request_that_is_not_xacml_is_answered_indeterminate_with_a_syntax_error() {
    let server = seeded(Auth::Disabled, None);
    for (path, content_type, body) in [
        (DECISION, "application/json", r#"{"Request": "#),
        (
            DECISION,
            "application/json",
            r#"{"Request": {"AccessSubject": 5}}"#,
        ),
        (AUTHORIZE, "application/json", "not json at all"),
    ] {
        let r = post_as(&server, path, content_type, body.as_bytes(), None);
        assert_eq!(r.status, 200, "{body}: {}", r.text);
        assert_eq!(decisions(&r), ["Indeterminate"], "{body}");
        assert_eq!(
            r.body["Response"][0]["Status"]["StatusCode"]["Value"],
            json!(SYNTAX_ERROR),
            "{body}: {}",
            r.text
        );
    }
    let r = post_as(&server, DECISION, "text/xml", b"<Request><Attributes>", None);
    assert_eq!(r.status, 200, "{}", r.text);
    let resp = xml::parse_response(r.text.as_bytes()).unwrap();
    assert_eq!(resp.results.len(), 1);
    assert_eq!(resp.results[0].decision, Decision::Indeterminate);
    assert_eq!(resp.results[0].status_code, SYNTAX_ERROR);
}

/// Requests Altinn's context handler refuses are answered (HTTP 200) with one
/// Indeterminate: a syntax error on the decision endpoint, a processing error on the
/// authorize endpoint; a resource without a policy is Indeterminate too.
#[test]
fn a_malformed_request_over_http_is_one_indeterminate_with_the_endpoints_status() {
    let server = seeded(Auth::Disabled, None);
    let mut no_subject = json_request("1003", "read");
    no_subject["Request"]["AccessSubject"] = json!(null);
    let mut system_user_and_user = json_request("1003", "read");
    system_user_and_user["Request"]["AccessSubject"][0]["Attribute"]
        .as_array_mut()
        .unwrap()
        .push(json!({"AttributeId": "urn:altinn:systemuser:uuid", "Value": "5a0e2b6e-0000-4000-8000-00000000005a"}));
    for body in [no_subject, system_user_and_user] {
        for (path, status) in [(DECISION, SYNTAX_ERROR), (AUTHORIZE, PROCESSING_ERROR)] {
            let r = decide_json(&server, path, &body);
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(decisions(&r), ["Indeterminate"], "{path} {body}");
            assert_eq!(
                r.body["Response"][0]["Status"]["StatusCode"]["Value"],
                json!(status),
                "{path}: {}",
                r.text
            );
        }
    }
    let mut no_policy = json_request("1003", "read");
    no_policy["Request"]["Resource"][0]["Attribute"][0]["Value"] = json!("app_ttd_unknown");
    let r = decide_json(&server, DECISION, &no_policy);
    assert_eq!(decisions(&r), ["Indeterminate"], "{}", r.text);
}

/// `urn:altinn:resource:instance-id` names an instance, bare or as `{party}/{guid}`, and
/// an instance grant on it permits where the policy alone does not.
#[test]
fn an_instance_named_by_resource_attribute_reaches_the_instance_grant_over_http() {
    let server = seeded(Auth::Disabled, None);
    let guid = "7a1c6a4e-0000-4000-8000-00000000000a";
    let grant = json!([{"grant": {"from": "bergen", "to": "kari", "resource": "app_ttd_regnskap",
        "instance": format!("50003/{guid}"), "actions": ["read"]}}]);
    let r = post_json(&server, "/v1/events", &grant, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let with_instance = |v: &str| {
        let mut body = json_request("1001", "read");
        body["Request"]["Resource"][0]["Attribute"]
            .as_array_mut()
            .unwrap()
            .push(json!({"AttributeId": "urn:altinn:resource:instance-id", "Value": v}));
        body
    };
    for (value, expect) in [
        (guid.to_string(), "Permit"),
        (format!("50003/{guid}"), "Permit"),
        (
            "7a1c6a4e-0000-4000-8000-00000000000b".to_string(),
            "NotApplicable",
        ),
    ] {
        let r = decide_json(&server, DECISION, &with_instance(&value));
        assert_eq!(decisions(&r), [expect], "{value}: {}", r.text);
    }
    let r = decide_json(&server, DECISION, &json_request("1001", "read"));
    assert_eq!(decisions(&r), ["NotApplicable"], "no instance, no instance grant");
}

#[test]
fn a_body_the_server_will_not_read_is_refused_with_a_problem() {
    let server = seeded(Auth::Disabled, None);
    let body = json_request("1003", "read").to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = post_as(&server, DECISION, content_type, body.as_bytes(), None);
        assert_problem(&r, 415, "unsupported_media_type");
    }
    let r = request(&server, "POST", DECISION, None, Some(body.into_bytes()), None);
    assert_problem(&r, 415, "unsupported_media_type");
    // Not text.
    let r = post_as(
        &server,
        DECISION,
        "application/json",
        b"{\"Request\": \"\xff\xfe\xfd\"}",
        None,
    );
    assert_problem(&r, 400, "invalid_input");
    let r = post_as(
        &server,
        DECISION,
        "application/xml",
        b"<Request>\xff\xfe\xfd</Request>\xc3",
        None,
    );
    assert_problem(&r, 400, "invalid_input");
    // Over the size limit, and nested past the depth limit.
    let r = request_declaring(&server, DECISION, "application/xml", 5 * 1024 * 1024);
    assert_problem(&r, 413, "limit_exceeded");
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let r = post_as(&server, AUTHORIZE, "application/json", deep.as_bytes(), None);
    assert_problem(&r, 400, "invalid_input");
    // A refusal changes nothing: the store is where the seeding left it.
    assert_eq!(server.store.visible(), 1);
}

#[test]
fn decisions_need_a_token_with_the_read_scope() {
    let writer = token("delegraph:import");
    let server = seeded(jwt_auth(), Some(writer.as_str()));
    let body = json_request("1003", "read").to_string();
    for path in [DECISION, AUTHORIZE] {
        let r = post_as(&server, path, "application/json", body.as_bytes(), None);
        assert_problem(&r, 401, "unauthenticated");
        let r = post_as(
            &server,
            path,
            "application/json",
            body.as_bytes(),
            Some("not.a.jwt"),
        );
        assert_problem(&r, 401, "unauthenticated");
        let reader = token("delegraph:read");
        let r = post_as(
            &server,
            path,
            "application/json",
            body.as_bytes(),
            Some(reader.as_str()),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(decisions(&r), ["Permit"]);
    }
    // Authentication comes before the media type.
    let r = post_as(&server, DECISION, "text/plain", b"x", None);
    assert_problem(&r, 401, "unauthenticated");
}

#[test]
fn a_decision_waits_for_its_min_token_and_is_counted_in_the_metrics() {
    let server = seeded(Auth::Disabled, None);
    let body = json_request("1003", "read").to_string();
    let r = post_as(
        &server,
        &format!("{DECISION}?min_token=1"),
        "application/json",
        body.as_bytes(),
        None,
    );
    assert_eq!(decisions(&r), ["Permit"]);
    let r = post_as(
        &server,
        &format!("{DECISION}?min_token=99"),
        "application/json",
        body.as_bytes(),
        None,
    );
    assert_problem(&r, 409, "conflict");
    let r = post_as(
        &server,
        &format!("{DECISION}?subject=per"),
        "application/json",
        body.as_bytes(),
        None,
    );
    assert_problem(&r, 400, "invalid_input");
    let m = request(&server, "GET", "/metrics", None, None, None);
    for needle in [
        "delegraph_http_requests_total{route=\"/authorization/api/v1/decision\",method=\"POST\",status=\"200\"} 1",
        "delegraph_http_requests_total{route=\"/authorization/api/v1/decision\",method=\"POST\",status=\"409\"} 1",
    ] {
        assert!(m.text.contains(needle), "`{needle}` in\n{}", m.text);
    }
}
