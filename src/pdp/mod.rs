//! The Altinn-compatible policy decision point (domain.md §8): XACML 3.0 policies
//! compiled once per resource, requests in XML or the JSON profile, and the graph as
//! the policy information point.
//!
//! * [`policy`] — the compiled policy tree and its rule index by action.
//! * [`state`] — [`PdpState`], the decision point's part of the world, and its undo.
//! * [`events`] — the events that change it (through the transaction).
//! * [`error`] — [`PdpError`], a document that cannot be read or evaluated.
//! * [`xml`] / [`json`] — documents in and out.
//! * [`request`] / [`response`] — the request context and the results.
//! * [`eval`] — targets, conditions, functions and combining algorithms.
//! * [`records`] — decisions over given records, and a policy's rule view (for the
//!   cut-off report and `simulate`).
//! * [`pip`] — the context handler: normalise the resource, find the parties, add
//!   roles, packages, party type and access lists from the graph, then grants and
//!   access lists after the policy.
//!
//! State (policies, instances, access lists) lives in [`PdpState`] inside the world and
//! changes only through the events `policy`, `instance`, `access_list` and the
//! resource's access-list fields, each undoable through the transaction.
//!
//! Layers (ARCHITECTURE.md): `state` and the XACML engine (`policy`, `xml`, `json`,
//! `request`, `response`, `eval`, `error`) sit on the world layer and know no world
//! beyond it; this module, `pip` and `records` read the graph (resolve/decide layer);
//! `events` changes the state (mutate layer).

pub mod error;
pub mod eval;
pub mod events;
pub mod json;
pub mod pip;
pub mod policy;
pub mod records;
pub mod request;
pub mod response;
pub mod state;
pub mod xml;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use crate::event::Event;
use crate::model::{Error, Result};
use crate::world::World;

pub use error::PdpError;
pub use policy::CompiledPolicy;
pub use request::Api;
pub use response::{Decision, Response, ResultItem};
pub(crate) use state::undo;
pub use state::{Instance, ListMember, PdpState, PdpUndo, ResourceLists};

/// The service owner of a resource id of the form `app_{org}_{app}`.
pub fn app_owner(resource: &str) -> Option<&str> {
    let rest = resource.strip_prefix("app_")?;
    rest.split_once('_').map(|(org, _)| org)
}

/// Compiles a world's policy document, keeping the document beside the tree (for
/// snapshots). The one compilation of the `policy` event and of snapshot loading.
pub fn compile_policy(xml: &str) -> std::result::Result<CompiledPolicy, PdpError> {
    let mut p = xml::parse_policy(xml.as_bytes())?;
    p.source = Some(Arc::from(xml));
    Ok(p)
}

// ----------------------------------------------------------------------------------
// The library API for the HTTP layer

/// `POST /authorization/api/v1/decision` with an XML body: the XML response.
pub fn decide_xml(w: &World, body: &str) -> String {
    let resp = match xml::parse_request(body.as_bytes()) {
        Ok(req) => pip::decide(w, &req, Api::Internal),
        Err(e) => e.to_response(),
    };
    xml::write_response(&resp)
}

/// `POST /authorization/api/v1/decision` with a JSON body: the JSON response.
pub fn decide_json(w: &World, body: &serde_json::Value) -> serde_json::Value {
    decide_json_api(w, body, Api::Internal)
}

/// `POST /authorization/api/v1/authorize` (the external endpoint): JSON in and out.
pub fn authorize_json(w: &World, body: &serde_json::Value) -> serde_json::Value {
    decide_json_api(w, body, Api::External)
}

/// A JSON request answered by the internal or external endpoint.
pub fn decide_json_api(w: &World, body: &serde_json::Value, api: Api) -> serde_json::Value {
    let resp = match json::parse_request(body) {
        Ok(req) => pip::decide(w, &req, api),
        Err(e) => e.to_response(),
    };
    json::write_response(&resp)
}

// ----------------------------------------------------------------------------------
// The `decide` query of scenario files

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideStep {
    request: serde_json::Value,
    #[serde(default)]
    api: Option<String>,
    /// One decision per result; a single result's decision may be written alone
    /// (`expect: Permit`).
    #[serde(deserialize_with = "one_or_many")]
    expect: Vec<String>,
    /// Optionally, per result, the exact set of obligation ids.
    #[serde(default)]
    obligations: Option<Vec<Vec<String>>>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <OneOrMany as serde::Deserialize>::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Runs a `decide` step, asking `decide` (in-process or over HTTP) for the JSON
/// response: Ok(Ok(())) when the answer is as expected, Ok(Err((expected, got))) when
/// not, Err for a malformed step.
pub fn scenario_decide(
    body: serde_json::Value,
    decide: impl FnOnce(Api, &serde_json::Value) -> Result<serde_json::Value>,
) -> Result<std::result::Result<(), (String, String)>> {
    let s: DecideStep = serde_json::from_value(body).map_err(|e| Error::invalid(format!("`decide`: {e}")))?;
    let api = match s.api.as_deref() {
        None | Some("internal") => Api::Internal,
        Some("external") => Api::External,
        Some(other) => {
            return Err(Error::invalid(format!(
                "`api` is `internal` or `external`, got `{other}`"
            )));
        }
    };
    let mut expect = Vec::with_capacity(s.expect.len());
    for e in &s.expect {
        // In any case (`permit`, as `check` writes it), `not_applicable` too.
        let canonical = match e.trim().to_ascii_lowercase().replace('_', "").as_str() {
            "permit" => "Permit",
            "deny" => "Deny",
            "notapplicable" => "NotApplicable",
            "indeterminate" => "Indeterminate",
            _ => e.as_str(),
        };
        expect.push(Decision::parse(canonical).ok_or_else(|| {
            Error::invalid(format!(
                "a decision is Permit, Deny, NotApplicable or Indeterminate, got `{e}`"
            ))
        })?);
    }
    let resp = decide(api, &s.request)?;
    let got: Vec<Option<Decision>> = json::decisions(&resp);
    let show = |v: &[Option<Decision>]| {
        format!(
            "[{}]",
            v.iter()
                .map(|d| d.map_or("?", Decision::as_str))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let expect: Vec<Option<Decision>> = expect.into_iter().map(Some).collect();
    if got != expect {
        let detail = json::status_messages(&resp);
        let mut g = show(&got);
        if !detail.is_empty() {
            g.push_str(&format!(" ({})", detail.join("; ")));
        }
        return Ok(Err((show(&expect), g)));
    }
    if let Some(obl) = &s.obligations {
        let got = json::obligation_ids(&resp);
        let exp: Vec<BTreeSet<String>> = obl.iter().map(|v| v.iter().cloned().collect()).collect();
        if got != exp {
            return Ok(Err((format!("obligations {exp:?}"), format!("{got:?}"))));
        }
    }
    Ok(Ok(()))
}

// ----------------------------------------------------------------------------------
// Evaluation without a world (the conformance suite, tools)

/// Evaluates a request against one policy (or a policy that failed to load) and a
/// repository of referenced policies, with standard XACML target semantics.
pub fn evaluate_request(
    policy: std::result::Result<&CompiledPolicy, &PdpError>,
    repo: &[CompiledPolicy],
    req: &request::Request,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> Response {
    let individuals = match req.individual() {
        Ok(v) => v,
        Err(e) => return e.to_response(),
    };
    let mut out = Response::default();
    for ind in &individuals {
        let mut r = match policy {
            Ok(p) => eval::evaluate(
                p,
                &eval::Ctx {
                    cats: ind,
                    now,
                    mode: eval::TargetMode::Standard,
                    repo,
                },
            ),
            Err(e) => ResultItem::error(e.status(), e.message()),
        };
        if !req.return_policy_ids {
            r.policy_ids.clear();
        }
        r.attributes = pip::echoed(ind);
        out.results.push(r);
    }
    out
}

// ----------------------------------------------------------------------------------
// Import

/// Reads every `DIR/<resource-id>/policy.xml` and `DIR/<org>/<app>/policy.xml` (the
/// app resource `app_{org}_{app}`) as `policy` events, in path order.
pub fn import_dir(dir: &Path) -> std::result::Result<Vec<Event>, crate::model::Error> {
    let mut out = Vec::new();
    let io = |e: std::io::Error| Error::invalid(format!("reading {}: {e}", dir.display()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let first = e.file_name().to_string_lossy().to_string();
        let direct = p.join("policy.xml");
        if direct.is_file() {
            out.push(policy_event(&first, &direct)?);
            continue;
        }
        let mut subs: Vec<_> = std::fs::read_dir(&p)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .collect();
        subs.sort_by_key(|e| e.file_name());
        for s in subs {
            let f = s.path().join("policy.xml");
            if f.is_file() {
                let app = s.file_name().to_string_lossy().to_string();
                out.push(policy_event(&format!("app_{first}_{app}"), &f)?);
            }
        }
    }
    Ok(out)
}

fn policy_event(resource: &str, path: &Path) -> Result<Event> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::invalid(format!("reading {}: {e}", path.display())))?;
    let xml = xml::decode(&bytes).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    Ok(Event::Policy(crate::event::PolicyEvent {
        resource: resource.to_string(),
        xml,
    }))
}
