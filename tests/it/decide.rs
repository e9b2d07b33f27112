//! The one decision order (`delegraph::decide`): the resource delegation check, `check`
//! and the decision point answer alike for a resource with an XACML policy, a Deny rule
//! and access lists included.

use delegraph::decide;
use delegraph::event::Event;
use delegraph::mutate;
use delegraph::world::World;
use serde_json::json;

fn apply(w: &mut World, v: serde_json::Value) {
    mutate::apply(w, &Event::from_json(v).unwrap()).unwrap();
}

fn subject_match(code: &str) -> String {
    format!(
        r#"<xacml:AnyOf><xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:3.0:function:string-equal-ignore-case"><xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{code}</xacml:AttributeValue><xacml:AttributeDesignator AttributeId="urn:altinn:rolecode" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/></xacml:Match></xacml:AllOf></xacml:AnyOf>"#
    )
}

fn action_match(a: &str) -> String {
    format!(
        r#"<xacml:AnyOf><xacml:AllOf><xacml:Match MatchId="urn:oasis:names:tc:xacml:1.0:function:string-equal"><xacml:AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{a}</xacml:AttributeValue><xacml:AttributeDesignator AttributeId="urn:oasis:names:tc:xacml:1.0:action:action-id" Category="urn:oasis:names:tc:xacml:3.0:attribute-category:action" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/></xacml:Match></xacml:AllOf></xacml:AnyOf>"#
    )
}

/// DAGL may read; nobody may write (Deny).
fn policy() -> String {
    format!(
        r#"<xacml:Policy xmlns:xacml="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="p" Version="1.0" RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides"><xacml:Target/><xacml:Rule RuleId="r" Effect="Permit"><xacml:Target>{}{}</xacml:Target></xacml:Rule><xacml:Rule RuleId="w" Effect="Deny"><xacml:Target>{}</xacml:Target></xacml:Rule></xacml:Policy>"#,
        subject_match("DAGL"),
        action_match("read"),
        action_match("write")
    )
}

#[test]
fn can_delegate_of_a_resource_action_honours_its_xacml_policy() {
    let mut w = World::new();
    apply(
        &mut w,
        json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}}),
    );
    apply(&mut w, json!({"party": {"id": "ceo", "kind": "person"}}));
    apply(&mut w, json!({"party": {"id": "clerk", "kind": "person"}}));
    apply(
        &mut w,
        json!({"register_role": {"from": "org", "to": "ceo", "role": "daglig-leder"}}),
    );
    apply(&mut w, json!({"policy": {"resource": "svc", "xml": policy()}}));
    // The clerk holds grants of both actions (an administrative import).
    apply(
        &mut w,
        json!({"grant": {"from": "org", "to": "clerk", "resource": "svc", "actions": ["read", "write"]}}),
    );
    let n = |id: &str| w.graph.party_node(id).unwrap();
    let (org, ceo, clerk) = (n("org"), n("ceo"), n("clerk"));
    let svc = w.graph.resource_node("svc").unwrap();

    // The CEO passes on `read` through the role the policy names (no grant needed) ...
    assert!(decide::permits(&w, ceo, org, svc, "read", None));
    assert!(decide::can_delegate_resource(&w, ceo, org, svc, "read"));
    // ... and nobody passes on `write`: the Deny rule stands, the clerk's grant is only a
    // fallback on NotApplicable.
    assert!(!decide::permits(&w, clerk, org, svc, "write", None));
    assert!(!decide::can_delegate_resource(&w, clerk, org, svc, "write"));
    assert!(!decide::can_delegate_resource(&w, ceo, org, svc, "write"));
    // `read` is NotApplicable for the clerk, so the grant permits and counts.
    assert!(decide::can_delegate_resource(&w, clerk, org, svc, "read"));
    // A grant `by` follows the same check.
    let refused = mutate::apply(
        &mut w,
        &Event::from_json(
            json!({"grant": {"from": "org", "to": "ceo", "resource": "svc", "actions": ["write"], "by": "clerk"}}),
        )
        .unwrap(),
    );
    assert_eq!(refused.unwrap_err().code.as_str(), "not_authorized");

    // Access-list mode: the organisation is on no list, so nothing is permitted or
    // delegable any more.
    apply(
        &mut w,
        json!({"access_list": {"owner": "acme", "id": "l", "members": []}}),
    );
    apply(
        &mut w,
        json!({"resource": {"id": "svc", "owner": "acme", "access_lists": ["l"], "access_list_mode": "enabled"}}),
    );
    let svc = w.graph.resource_node("svc").unwrap();
    assert!(!decide::permits(&w, ceo, org, svc, "read", None));
    assert!(!decide::can_delegate_resource(&w, ceo, org, svc, "read"));
    apply(
        &mut w,
        json!({"access_list": {"owner": "acme", "id": "l", "members": [{"org": "org", "actions": ["read"]}]}}),
    );
    assert!(decide::can_delegate_resource(&w, ceo, org, svc, "read"));
}
