//! `GET|POST /v1/a2-impact`: the cut-off report over HTTP on the repository's cut-off
//! scenario — totals first, then the lost permits, as JSON or CSV, behind the read scope.

use delegraph::api::auth::{Auth, JwtAuth};
use delegraph::api::{RunningServer, ServerConfig, spawn};
use delegraph::partition::journal::MemoryJournal;
use serde_json::{Value, json};
use std::sync::Arc;

const SECRET: &[u8] = b"an a2-impact test secret, long enough";

fn start() -> RunningServer {
    let config = ServerConfig {
        auth: Auth::Jwt(Box::new(JwtAuth::hs256(SECRET).unwrap())),
        workers: Some(2),
        ..ServerConfig::default()
    };
    let world = crate::a2impact::world_before_cutoff_of("a2-cutoff.yaml");
    spawn(config, "127.0.0.1:0", world, Arc::new(MemoryJournal::new())).unwrap()
}

fn token(scope: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "tester", "scope": scope, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// (status, content type, body text)
fn send(
    server: &RunningServer,
    path: &str,
    post: Option<Value>,
    scope: Option<&str>,
) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}{}", server.url(), path);
    let auth = scope.map(|s| format!("Bearer {}", token(s)));
    let res = match post {
        None => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        Some(body) => {
            let mut r = agent.post(&url).content_type("application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(body.to_string().into_bytes())
        }
    };
    let mut res = res.unwrap();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        res.status().as_u16(),
        ct,
        res.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn a2_impact_over_http_gives_totals_then_lost_permits() {
    let server = start();
    let read = Some("delegraph:read");

    // The read scope is needed, as for every other read.
    assert_eq!(send(&server, "/v1/a2-impact", None, None).0, 401);
    assert_eq!(send(&server, "/v1/a2-impact", None, Some("openid")).0, 403);

    let (status, ct, text) = send(&server, "/v1/a2-impact", None, read);
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("application/json"));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["lost"], 2);
    assert_eq!(body["truncated"], false);
    assert_eq!(body["resources"].as_array().unwrap().len(), 2);
    let lost = body["lost_permits"].as_array().unwrap();
    assert_eq!(lost.len(), 2);
    assert!(lost.iter().any(|l| l["subject"] == "old-hand"
        && l["resource"] == "ske-postkasse"
        && l["restoring_packages"] == json!(["ordinaer-post-til-virksomheten"])));
    // Totals come first in the document.
    assert!(text.find("\"lost\"").unwrap() < text.find("\"lost_permits\"").unwrap());

    // CSV: one line of totals, the header, one row per lost permit.
    let (status, ct, text) = send(&server, "/v1/a2-impact?owner=skd&format=csv", None, read);
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("text/csv"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# lost 1,"), "{}", lines[0]);
    assert_eq!(lines[1], delegraph::a2impact::CSV_HEADER);
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with("skd,ske-postkasse,old-hand,flamingo,read,"));

    // A limit lists fewer, and says so; the counts stay whole.
    let (_, _, text) = send(&server, "/v1/a2-impact?limit=1", None, read);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["lost"], 2);
    assert_eq!(body["lost_permits"].as_array().unwrap().len(), 1);
    assert_eq!(body["truncated"], true);

    // POST takes the same fields as a JSON body.
    let (status, _, text) = send(
        &server,
        "/v1/a2-impact",
        Some(json!({"resource": "brg-endringsmelding"})),
        read,
    );
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["lost"], 1);
    assert_eq!(body["lost_permits"][0]["subject"], "ceo");

    // Bad input is a problem, not a report.
    assert_eq!(send(&server, "/v1/a2-impact?format=xml", None, read).0, 400);
    assert_eq!(send(&server, "/v1/a2-impact?limit=-1", None, read).0, 400);
    assert_eq!(send(&server, "/v1/a2-impact?colour=red", None, read).0, 400);

    // The OpenAPI document describes the route.
    let (_, _, text) = send(&server, "/openapi.json", None, None);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["paths"]["/v1/a2-impact"]["get"].is_object());
    assert!(doc["paths"]["/v1/a2-impact"]["post"].is_object());
}
