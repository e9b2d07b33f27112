//! Maskinporten scope delegation (domain.md §10) and citizen power of attorney (§11)
//! over HTTP: the acceptance files run in-process and against a server with 1 and 8
//! partitions, and the `/v1/maskinporten` routes with their scopes, actor binding and
//! refusals.

use std::path::{Path, PathBuf};

use delegraph::api::auth::Auth;
use delegraph::api::client::HttpBackend;
use delegraph::scenario;
use delegraph::world::World;
use serde_json::{Value, json};

use super::http::{Reply, SECRET, assert_problem, jwt_auth, post_json, request, start, token};

/// The §10 and §11 acceptance files (the §9 one needs the consent engine).
fn acceptance_files() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scenarios/consent");
    let files: Vec<PathBuf> = [
        "17-maskinporten-suppliers.yaml",
        "18-citizen-power-of-attorney.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .filter(|p| p.exists())
    .collect();
    (!files.is_empty()).then_some(files)
}

#[test]
fn supplier_and_power_of_attorney_acceptance_passes_in_process_and_over_http() {
    let Some(files) = acceptance_files() else {
        eprintln!("SKIPPED: ../shared/scenarios/consent is not beside the repository");
        return;
    };
    let mut local = scenario::Report::default();
    for f in &files {
        local.merge(scenario::run_file(f));
    }
    let lines: Vec<String> = local.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(local.failed, 0, "in-process:\n{}", lines.join("\n"));
    assert!(local.passed > 80, "too few steps ran: {}", local.passed);
    for n in [1, 8] {
        let (server, _) = start(n, Auth::Disabled);
        let mut http = HttpBackend::new(&server.url(), None);
        let mut remote = scenario::Report::default();
        for f in &files {
            remote.merge(scenario::run_file_on(&mut http, f));
        }
        let lines: Vec<String> = remote.failures.iter().map(|f| f.to_string()).collect();
        assert_eq!(remote.failed, 0, "{n} partitions:\n{}", lines.join("\n"));
        assert_eq!(remote.passed, local.passed, "{n} partitions");
        server.stop();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An end user's token: scope `delegraph:act`, acting as `sub`.
fn end_user(sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "scope": "delegraph:act", "exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn delete(server: &delegraph::api::RunningServer, path: &str, bearer: &str) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut res = agent
        .delete(&format!("{}{}", server.url(), path))
        .header("Authorization", format!("Bearer {bearer}"))
        .call()
        .unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = res.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        token: None,
    }
}

/// The delegations Maskinporten would read for `supplier`, as (consumer, resource).
fn lookup(server: &delegraph::api::RunningServer, query: &str) -> Vec<(String, String)> {
    let r = request(
        server,
        "GET",
        &format!("/v1/maskinporten/delegations?{query}"),
        None,
        None,
        Some(&token("delegraph:read")),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["consumer"].as_str().unwrap().to_string(),
                d["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn maskinporten_routes_bind_the_actor_and_refuse_with_the_spec_codes() {
    let (server, journal) = start(2, jwt_auth());
    let seed = json!([
        {"party": {"id": "ttd", "kind": "organisation", "unit_type": "ORGL"}},
        {"party": {"id": "bedrift", "kind": "organisation", "unit_type": "AS"}},
        {"party": {"id": "lev", "kind": "organisation", "unit_type": "AS"}},
        {"party": {"id": "anne", "kind": "person"}},
        {"party": {"id": "cecilie", "kind": "person"}},
        {"register_role": {"from": "bedrift", "to": "anne", "role": "daglig-leder"}},
        {"resource": {"id": "mva-api", "kind": "maskinporten_schema", "owner": "ttd",
            "scopes": ["ske:mva"],
            "rules": [{"actions": ["scopeaccess"], "any_of": ["urn:altinn:accesspackage:maskinporten-scopes"]}]}}
    ]);
    let r = post_json(&server, "/v1/events", &seed, Some(&token("delegraph:import")));
    assert_eq!(r.status, 200, "{}", r.text);
    let seeded = journal.appended_events();
    let add = json!({"consumer": "bedrift", "supplier": "lev"});

    // Scopes: a read token writes nothing; an end user without the package is refused.
    let r = post_json(
        &server,
        "/v1/maskinporten/suppliers",
        &add,
        Some(&token("delegraph:read")),
    );
    assert_problem(&r, 403, "insufficient_scope");
    let r = post_json(
        &server,
        "/v1/maskinporten/suppliers",
        &add,
        Some(&end_user("cecilie")),
    );
    assert_problem(&r, 403, "not_authorized");
    assert!(r.text.contains("maskinporten-administrator"), "{}", r.text);
    // An end user acts only as its `sub`.
    let as_anne = json!({"consumer": "bedrift", "supplier": "lev", "by": "anne"});
    let r = post_json(
        &server,
        "/v1/maskinporten/suppliers",
        &as_anne,
        Some(&end_user("cecilie")),
    );
    assert_problem(&r, 403, "not_authorized");
    assert_eq!(journal.appended_events(), seeded, "a refusal logs nothing");

    // The CEO adds the supplier and delegates the scope (`by` from her token).
    let r = post_json(
        &server,
        "/v1/maskinporten/suppliers",
        &add,
        Some(&end_user("anne")),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let scope = json!({"consumer": "bedrift", "supplier": "lev", "resource": "mva-api"});
    let r = post_json(
        &server,
        "/v1/maskinporten/scope-delegations",
        &scope,
        Some(&end_user("anne")),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.body["token"].as_u64().unwrap();

    // Maskinporten's lookup, with the resource's scopes; a read scope is needed.
    let r = request(
        &server,
        "GET",
        &format!("/v1/maskinporten/delegations?supplier=lev&consumer=bedrift&scope=ske:mva&min_token={t}"),
        None,
        None,
        Some(&token("delegraph:read")),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["delegations"],
        json!([{"consumer": "bedrift", "supplier": "lev", "resource": "mva-api", "scopes": ["ske:mva"]}])
    );
    let r = request(
        &server,
        "GET",
        "/v1/maskinporten/delegations?supplier=lev",
        None,
        None,
        Some(&end_user("anne")),
    );
    assert_problem(&r, 403, "insufficient_scope");
    let r = request(
        &server,
        "GET",
        "/v1/maskinporten/delegations",
        None,
        None,
        Some(&token("delegraph:read")),
    );
    assert_problem(&r, 400, "invalid_input");
    assert!(lookup(&server, "scope=ske:annet").is_empty());

    // Refusals with their codes, and nothing changes.
    let r = post_json(
        &server,
        "/v1/maskinporten/scope-delegations",
        &json!({"consumer": "lev", "supplier": "bedrift", "resource": "mva-api"}),
        Some(&token("delegraph:import")),
    );
    assert_problem(&r, 404, "not_found");
    let before = journal.appended_events();
    let r = delete(
        &server,
        "/v1/maskinporten/suppliers?consumer=bedrift&supplier=lev",
        &end_user("anne"),
    );
    assert_problem(&r, 409, "has_dependants");
    assert_eq!(r.body["dependants"], json!(["scope delegation `mva-api`"]));
    let r = delete(
        &server,
        "/v1/maskinporten/suppliers?consumer=bedrift&supplier=lev&cascade=yes",
        &end_user("anne"),
    );
    assert_problem(&r, 400, "invalid_input");
    let r = delete(
        &server,
        "/v1/maskinporten/suppliers?consumer=bedrift&supplier=lev&cascade=true",
        &end_user("cecilie"),
    );
    assert_problem(&r, 403, "not_authorized");
    assert_eq!(journal.appended_events(), before);
    assert_eq!(
        lookup(&server, "consumer=bedrift"),
        vec![("bedrift".to_string(), "mva-api".to_string())]
    );

    // Undelegating and removing; the removal lists the supplier assignment.
    let r = delete(
        &server,
        "/v1/maskinporten/scope-delegations?consumer=bedrift&supplier=lev&resource=mva-api",
        &end_user("anne"),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(lookup(&server, "supplier=lev").is_empty());
    let r = delete(
        &server,
        "/v1/maskinporten/suppliers?consumer=bedrift&supplier=lev",
        &end_user("anne"),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["removed_assignments"],
        json!([{"from": "bedrift", "to": "lev", "role": "supplier"}])
    );
    let r = request(
        &server,
        "GET",
        "/v1/suppliers?consumer=bedrift",
        None,
        None,
        Some(&token("delegraph:read")),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["suppliers"], json!([]));
}

#[test]
fn the_openapi_document_lists_the_maskinporten_routes() {
    let doc = serde_json::to_value(<delegraph::api::routes::ApiDoc as utoipa::OpenApi>::openapi()).unwrap();
    let paths = &doc["paths"];
    for (p, method) in [
        ("/v1/maskinporten/suppliers", "post"),
        ("/v1/maskinporten/suppliers", "delete"),
        ("/v1/maskinporten/scope-delegations", "post"),
        ("/v1/maskinporten/scope-delegations", "delete"),
        ("/v1/maskinporten/delegations", "get"),
        ("/v1/scope_delegations", "get"),
        ("/v1/suppliers", "post"),
        ("/v1/consumers", "get"),
    ] {
        assert!(paths[p][method].is_object(), "{method} {p} missing");
    }
    let security = &paths["/v1/maskinporten/suppliers"]["post"]["security"];
    assert!(security.to_string().contains("delegraph:act"), "{security}");
}

/// A refused supplier event in a batch leaves the world as it was (in-process).
#[test]
fn a_refused_supplier_event_changes_nothing() {
    let mut w = World::new();
    let evs: Vec<delegraph::event::Event> = [
        json!({"party": {"id": "a", "kind": "organisation", "unit_type": "AS"}}),
        json!({"party": {"id": "b", "kind": "organisation", "unit_type": "AS"}}),
        json!({"resource": {"id": "api", "kind": "maskinporten_schema", "scopes": ["s"], "rules": []}}),
        json!({"add_supplier": {"consumer": "a", "supplier": "b"}}),
        json!({"delegate_scope": {"consumer": "a", "supplier": "b", "resource": "api"}}),
    ]
    .into_iter()
    .map(|v| delegraph::event::Event::from_json(v).unwrap())
    .collect();
    delegraph::mutate::apply_batch(&mut w, &evs).unwrap();
    assert_eq!(
        delegraph::persist::invariants::violations(&w),
        Vec::<String>::new()
    );
    let before = w.suppliers.clone();
    // The first event would succeed; the second is refused: the batch changes nothing.
    let refused: Vec<delegraph::event::Event> = [
        json!({"undelegate_scope": {"consumer": "a", "supplier": "b", "resource": "api"}}),
        json!({"delegate_scope": {"consumer": "b", "supplier": "a", "resource": "api"}}),
    ]
    .into_iter()
    .map(|v| delegraph::event::Event::from_json(v).unwrap())
    .collect();
    let e = delegraph::mutate::apply_batch(&mut w, &refused).unwrap_err();
    assert_eq!(e.code, delegraph::model::ErrorCode::NotFound);
    assert_eq!(w.suppliers, before);
    let e = delegraph::mutate::apply(
        &mut w,
        &delegraph::event::Event::from_json(json!({"remove_supplier": {"consumer": "a", "supplier": "b"}}))
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.code, delegraph::model::ErrorCode::HasDependants);
    assert_eq!(w.suppliers, before);
    let batch: Vec<delegraph::event::Event> = [
        json!({"undelegate_scope": {"consumer": "a", "supplier": "b", "resource": "api"}}),
        json!({"remove_supplier": {"consumer": "a", "supplier": "b"}}),
    ]
    .into_iter()
    .map(|v| delegraph::event::Event::from_json(v).unwrap())
    .collect();
    // In the other order both succeed: the emptied relationship can go without cascade.
    let out = delegraph::mutate::apply_batch(&mut w, &batch).unwrap();
    assert!(out.changed);
    assert_eq!(out.removed_assignments.len(), 1);
    assert_ne!(w.suppliers, before);
    assert_eq!(w.suppliers.relationships(), 0);
    assert_eq!(
        delegraph::persist::invariants::violations(&w),
        Vec::<String>::new()
    );
}
