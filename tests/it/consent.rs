//! Consent (domain.md §9) and time in a server (issue 17 item 5): the shared consent
//! scenario in-process and over HTTP, the `/v1/consents` routes with their scopes and
//! refusals, the snapshot round trip of consents, and the server's clock events.

use std::path::Path;
use std::time::{Duration, Instant};

use delegraph::api::client::HttpBackend;
use delegraph::api::{ServerConfig, spawn};
use delegraph::event::Event;
use delegraph::partition::journal::MemoryJournal;
use delegraph::persist::snapshot;
use delegraph::query::{self, Answer, Query};
use delegraph::scenario;
use delegraph::world::World;
use serde_json::{Value, json};

use crate::http::{Reply, SECRET, assert_problem, jwt_auth, post_json, request, start};

fn shared_consent_file() -> Option<std::path::PathBuf> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scenarios/consent/16-consent-lifecycle.yaml");
    p.exists().then_some(p)
}

#[test]
fn shared_consent_scenario_passes_in_process_and_over_http() {
    let Some(file) = shared_consent_file() else {
        eprintln!("SKIPPED: ../shared/scenarios/consent is not beside the repository");
        return;
    };
    let local = scenario::run_file(&file);
    let lines: Vec<String> = local.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(local.failed, 0, "in-process:\n{}", lines.join("\n"));
    assert!(local.passed > 50, "too few steps ran: {}", local.passed);
    for n in [1, 8] {
        let (server, _) = start(n, delegraph::api::auth::Auth::Disabled);
        let mut http = HttpBackend::new(&server.url(), None);
        let remote = scenario::run_file_on(&mut http, &file);
        let lines: Vec<String> = remote.failures.iter().map(|f| f.to_string()).collect();
        assert_eq!(remote.failed, 0, "{n} partitions:\n{}", lines.join("\n"));
        assert_eq!(remote.passed, local.passed, "{n} partitions");
        server.stop();
    }
}

/// A token with `scope` acting as `sub`.
fn token_as(scope: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "scope": scope, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn get(server: &delegraph::api::RunningServer, path: &str, bearer: &str) -> Reply {
    request(server, "GET", path, None, None, Some(bearer))
}

fn post_empty(server: &delegraph::api::RunningServer, path: &str, bearer: &str) -> Reply {
    request(server, "POST", path, None, Some(Vec::new()), Some(bearer))
}

fn world_events() -> Value {
    json!([
        {"clock": {"now": "2026-09-01T08:00:00Z"}},
        {"party": {"id": "bank", "kind": "organisation", "unit_type": "ASA"}},
        {"party": {"id": "operator", "kind": "organisation", "unit_type": "AS"}},
        {"party": {"id": "firma", "kind": "organisation", "unit_type": "AS"}},
        {"party": {"id": "kari", "kind": "person"}},
        {"party": {"id": "ola", "kind": "person"}},
        {"register_role": {"from": "firma", "to": "kari", "role": "daglig-leder"}},
        {"resource": {"id": "inntekt", "kind": "consent", "rules": [
            {"actions": ["consent"], "any_of": ["urn:altinn:accesspackage:skattegrunnlag"]}]}}
    ])
}

fn consent_body(id: &str) -> Value {
    json!({"id": id, "from": "firma", "to": "bank", "handled_by": "operator",
           "rights": [{"resource": "inntekt", "actions": ["consent"]}],
           "valid_to": "2026-12-31T00:00:00Z"})
}

#[test]
fn consent_routes_bind_the_actor_check_scopes_and_refuse_with_the_spec_codes() {
    let (server, journal) = start(2, jwt_auth());
    let import = token_as("delegraph:import", "register");
    let write = token_as("delegraph:write", "bank-backend");
    let read = token_as("delegraph:read", "reader");
    let kari = token_as("delegraph:act", "kari");
    let ola = token_as("delegraph:act", "ola");
    let r = post_json(&server, "/v1/events", &world_events(), Some(&import));
    assert_eq!(r.status, 200, "{}", r.text);
    let before = journal.appended_events();

    // A consent request is a consumer backend's: an end user's token may not send it.
    let r = post_json(&server, "/v1/consents", &consent_body("c1"), Some(&kari));
    assert_problem(&r, 403, "insufficient_scope");
    let r = post_json(&server, "/v1/consents", &consent_body("c1"), Some(&read));
    assert_problem(&r, 403, "insufficient_scope");
    assert_eq!(
        journal.appended_events(),
        before,
        "a refused request logs nothing"
    );
    let r = post_json(&server, "/v1/consents", &consent_body("c1"), Some(&write));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["consent"], "c1");
    assert_eq!(r.body["changed"], true);
    // The same id again: conflict (409); a service resource: not_assignable (422).
    let r = post_json(&server, "/v1/consents", &consent_body("c1"), Some(&write));
    assert_problem(&r, 409, "conflict");
    let mut bad = consent_body("c2");
    bad["rights"] = json!([{"resource": "nope", "actions": ["consent"]}]);
    let r = post_json(&server, "/v1/consents", &bad, Some(&write));
    assert_problem(&r, 422, "unknown_resource");

    // OLA's token answers as OLA, who holds nothing for the company: not_authorized.
    let r = post_empty(&server, "/v1/consents/c1/accept", &ola);
    assert_problem(&r, 403, "not_authorized");
    // KARI's token cannot answer as OLA.
    let r = post_json(
        &server,
        "/v1/consents/c1/accept",
        &json!({"by": "ola"}),
        Some(&kari),
    );
    assert_problem(&r, 403, "not_authorized");
    let r = get(&server, "/v1/consents/c1", &read);
    assert_eq!(r.body["status"], "created", "{}", r.text);
    // The lookup before acceptance: no valid consent.
    let r = get(
        &server,
        &format!(
            "/v1/consents/lookup?from=firma&to=operator&resource=inntekt&action=consent&min_token={}",
            r.token.unwrap()
        ),
        &read,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["allowed"], false);
    assert_eq!(r.body["reason"], "conflict");

    // KARI (CEO) accepts with an empty body: her token's `sub` answers.
    let r = post_empty(&server, "/v1/consents/c1/accept", &kari);
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.body["token"].as_u64().unwrap();
    let r = post_empty(&server, "/v1/consents/c1/accept", &kari);
    assert_problem(&r, 409, "conflict");

    let r = get(&server, &format!("/v1/consents/c1?min_token={t}"), &read);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "accepted");
    assert_eq!(r.body["accepted_by"], "kari");
    assert_eq!(r.body["acceptor_entitled"], true);
    assert_eq!(r.body["handled_by"], "operator");
    let r = get(
        &server,
        &format!("/v1/consents/lookup?from=firma&to=operator&resource=inntekt&action=consent&min_token={t}"),
        &read,
    );
    assert_eq!(r.body["allowed"], true, "{}", r.text);
    assert_eq!(r.body["consent"], "c1");
    // The vocabulary's query route answers the same.
    let r = get(
        &server,
        &format!("/v1/consent_check?from=firma&to=bank&resource=inntekt&action=consent&min_token={t}"),
        &read,
    );
    assert_eq!(r.body["allowed"], true, "{}", r.text);
    // A check on the consent resource permits the consumer.
    let r = get(
        &server,
        &format!("/v1/check?subject=bank&party=firma&resource=inntekt&action=consent&min_token={t}"),
        &read,
    );
    assert_eq!(r.body["allowed"], true, "{}", r.text);

    // Using is a backend's too; only the consumer or its operator may.
    let r = post_json(
        &server,
        "/v1/consents/c1/use",
        &json!({"by": "bank"}),
        Some(&kari),
    );
    assert_problem(&r, 403, "insufficient_scope");
    let r = post_json(
        &server,
        "/v1/consents/c1/use",
        &json!({"by": "firma"}),
        Some(&write),
    );
    assert_problem(&r, 403, "not_authorized");
    let r = post_json(
        &server,
        "/v1/consents/c1/use",
        &json!({"by": "operator"}),
        Some(&write),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // The path's id and the body's must agree.
    let r = post_json(
        &server,
        "/v1/consents/c1/use",
        &json!({"consent": "c9", "by": "operator"}),
        Some(&write),
    );
    assert_problem(&r, 400, "invalid_input");

    // A read token cannot revoke; KARI may (she could have accepted it).
    let r = post_empty(&server, "/v1/consents/c1/revoke", &read);
    assert_problem(&r, 403, "insufficient_scope");
    let r = post_empty(&server, "/v1/consents/c1/revoke", &kari);
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.body["token"].as_u64().unwrap();
    let r = get(&server, &format!("/v1/consents/c1/events?min_token={t}"), &read);
    assert_eq!(r.status, 200, "{}", r.text);
    let events: Vec<(String, String)> = r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["by"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("created", "operator"),
        ("accepted", "kari"),
        ("used", "operator"),
        ("revoked", "kari"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(events, want);
    let r = get(
        &server,
        &format!("/v1/check?subject=bank&party=firma&resource=inntekt&action=consent&min_token={t}"),
        &read,
    );
    assert_eq!(r.body["allowed"], false, "revocation acts at once: {}", r.text);

    // Unknown consents: 404 not_found, for reads and writes.
    assert_problem(&get(&server, "/v1/consents/nope", &read), 404, "not_found");
    assert_problem(
        &post_empty(&server, "/v1/consents/nope/reject", &kari),
        404,
        "not_found",
    );
    // A lookup of a resource that is not a consent resource is invalid.
    let r = get(
        &server,
        "/v1/consents/lookup?from=firma&to=bank&resource=inntekt-x&action=consent",
        &read,
    );
    assert_problem(&r, 422, "unknown_resource");

    // The routes are in the OpenAPI document.
    let doc = get(&server, "/openapi.json", &read).body;
    for p in [
        "/v1/consents",
        "/v1/consents/lookup",
        "/v1/consents/{id}",
        "/v1/consents/{id}/events",
        "/v1/consents/{id}/accept",
        "/v1/consents/{id}/reject",
        "/v1/consents/{id}/revoke",
        "/v1/consents/{id}/use",
        "/v1/consent_status",
        "/v1/consent_check",
        "/v1/consent_events",
    ] {
        assert!(doc["paths"].get(p).is_some(), "OpenAPI lacks {p}");
    }
    server.stop();
}

fn answers(w: &World, ids: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        for q in [
            json!({"consent_status": {"consent": id}}),
            json!({"consent_events": {"consent": id}}),
        ] {
            let (name, body) = q.as_object().unwrap().iter().next().unwrap();
            let q: Query = Query::parse(name, body.clone()).unwrap().unwrap();
            let a: Answer = query::evaluate(w, &q).unwrap();
            out.push(a.body().unwrap().to_string());
        }
    }
    let q = Query::parse(
        "check",
        json!({"subject": "bank", "party": "firma", "resource": "inntekt", "action": "consent"}),
    )
    .unwrap()
    .unwrap();
    out.push(query::evaluate(w, &q).unwrap().body().unwrap().to_string());
    out
}

#[test]
fn a_snapshot_keeps_consents_resource_kinds_and_event_lists() {
    let text = r#"
steps:
  - clock: {now: "2026-09-01T08:00:00Z"}
  - party: {id: bank, kind: organisation, unit_type: ASA}
  - party: {id: operator, kind: organisation, unit_type: AS}
  - party: {id: firma, kind: organisation, unit_type: AS}
  - party: {id: kari, kind: person}
  - register_role: {from: firma, to: kari, role: daglig-leder}
  - resource: {id: inntekt, kind: consent, rules: [{actions: [consent], any_of: ["urn:altinn:accesspackage:skattegrunnlag"]}]}
  - resource: {id: laan, kind: consent, one_time: true, rules: [{actions: [consent], any_of: ["urn:altinn:accesspackage:skattegrunnlag"]}]}
  - consent_request: {id: a, from: firma, to: bank, handled_by: operator, required_delegator: kari, rights: [{resource: inntekt, actions: [consent]}], valid_to: "2026-10-01T00:00:00Z"}
  - accept_consent: {consent: a, by: kari}
  - consent_request: {id: b, from: kari, to: bank, rights: [{resource: laan, actions: [consent]}], valid_to: "2026-12-01T00:00:00Z"}
  - accept_consent: {consent: b}
  - use_consent: {consent: b, by: bank}
  - consent_request: {id: c, from: kari, to: bank, rights: [{resource: inntekt, actions: [consent]}], valid_to: "2026-12-01T00:00:00Z"}
"#;
    let mut w = World::new();
    let report = scenario::run_str_on(&mut w, "snapshot world", text);
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    let bytes = snapshot::encode(&w, 7).unwrap();
    let (back, loaded) = snapshot::read_world(&bytes[..], &mut |_| {}).unwrap();
    assert_eq!(loaded.version, snapshot::SCHEMA_VERSION);
    assert_eq!(loaded.header.counts.consents, 3);
    assert_eq!(loaded.header.counts.resource_kinds, 2);
    let ids = ["a", "b", "c"];
    assert_eq!(answers(&back, &ids), answers(&w, &ids));
    // Saved again, the records are the same (as sets: a version 4 file lists parties by
    // partition, so a loaded world may walk them in another order).
    let sorted = |w: &World| {
        let mut v: Vec<String> = snapshot::records(w).map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    let (first, again) = (sorted(&w), sorted(&back));
    assert_eq!(first, again);
    // The loaded world goes on: a one-time resource stays one-time, expiry still derives.
    let mut back = back;
    delegraph::mutate::apply(
        &mut back,
        &Event::from_json(json!({"clock": {"now": "2026-10-01T00:00:01Z"}})).unwrap(),
    )
    .unwrap();
    let q = Query::parse("consent_status", json!({"consent": "a"}))
        .unwrap()
        .unwrap();
    let Answer::ConsentStatus(a) = query::evaluate(&back, &q).unwrap() else {
        panic!("not a consent status")
    };
    assert_eq!(a.status, "expired");
    assert_eq!(a.accepted_by.as_deref(), Some("kari"));
    assert!(a.acceptor_entitled);
}

#[test]
fn a_clock_event_from_the_server_never_moves_the_clock_back() {
    let mut w = World::new();
    let ev = |v: Value| Event::from_json(v).unwrap();
    delegraph::mutate::apply(&mut w, &ev(json!({"clock": {"now": "2100-01-01T00:00:00Z"}}))).unwrap();
    let out = delegraph::mutate::apply(
        &mut w,
        &ev(json!({"clock": {"now": "2026-01-01T00:00:00Z", "forward_only": true}})),
    )
    .unwrap();
    assert!(!out.changed);
    assert_eq!(w.now.unwrap().to_rfc3339(), "2100-01-01T00:00:00+00:00");
    let out = delegraph::mutate::apply(
        &mut w,
        &ev(json!({"clock": {"now": "2100-01-01T00:00:05Z", "forward_only": true}})),
    )
    .unwrap();
    assert!(out.changed);
    assert_eq!(w.now.unwrap().to_rfc3339(), "2100-01-01T00:00:05+00:00");
    // A scenario's clock event (no flag) may still set any time.
    delegraph::mutate::apply(&mut w, &ev(json!({"clock": {"now": "2026-01-01T00:00:00Z"}}))).unwrap();
    assert_eq!(w.now.unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
}

#[test]
fn a_server_clock_expires_a_consent_without_any_client_write() {
    let journal = std::sync::Arc::new(MemoryJournal::new());
    let config = ServerConfig {
        partitions: 2,
        workers: Some(2),
        clock_interval: Some(Duration::from_millis(100)),
        ..ServerConfig::default()
    };
    let server = spawn(config, "127.0.0.1:0", World::new(), journal.clone()).unwrap();
    let wall = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let valid_to = wall + chrono::Duration::seconds(2);
    let mut events = world_events();
    // No scenario clock here: the server's own clock runs.
    events.as_array_mut().unwrap().remove(0);
    events.as_array_mut().unwrap().extend([
        json!({"consent_request": {"id": "kort", "from": "kari", "to": "bank",
            "rights": [{"resource": "inntekt", "actions": ["consent"]}],
            "valid_to": valid_to.to_rfc3339()}}),
        json!({"accept_consent": {"consent": "kort", "by": "kari"}}),
    ]);
    let r = post_json(&server, "/v1/events", &events, None);
    assert_eq!(r.status, 200, "{}", r.text);
    let written = r.body["token"].as_u64().unwrap();
    // Poll (generous timeout, no timed assertion) until the status reads expired.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = request(&server, "GET", "/v1/consents/kort", None, None, None);
        last = r.body.clone();
        if r.body["status"] == "expired" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last["status"], "expired", "the consent did not expire: {last}");
    // The server logged clock events after the client's last write, and the engine
    // clock is past valid_to.
    let now = server.store.pin().world.now.unwrap();
    assert!(now > valid_to.fixed_offset(), "clock {now} not after {valid_to}");
    assert!(server.store.pin().token > written);
    server.stop();
}
