//! The Altinn-compatible policy decision point (domain.md §8): XACML 3.0 policies
//! compiled once per resource, requests in XML or the JSON profile, and the graph as
//! the policy information point.
//!
//! * [`policy`] — the compiled policy tree and its rule index by action.
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

pub mod eval;
pub mod json;
pub mod pip;
pub mod policy;
pub mod records;
pub mod request;
pub mod response;
pub mod xml;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::event::{Event, ResourceEvent};
use crate::graph::Resource;
use crate::model::{Error, ErrorCode, PartyKind, Result};
use crate::mutate::Tx;
use crate::world::World;

pub use pip::Api;
pub use policy::CompiledPolicy;
pub use response::{Decision, Response, ResultItem};

/// Why a document could not be read or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PdpError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("processing error: {0}")]
    Processing(String),
}

impl PdpError {
    pub fn status(&self) -> &'static str {
        match self {
            PdpError::Syntax(_) => response::STATUS_SYNTAX,
            PdpError::Processing(_) => response::STATUS_PROCESSING,
        }
    }
    pub(crate) fn message(&self) -> String {
        match self {
            PdpError::Syntax(m) | PdpError::Processing(m) => m.clone(),
        }
    }
    /// The whole answer to a request that failed: one Indeterminate.
    pub fn to_response(&self) -> Response {
        Response::single(ResultItem::error(self.status(), self.message()))
    }
}

/// An instance of an app or resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub resource: String,
    /// External id of the owning party.
    pub party: String,
    pub task: Option<String>,
    pub end_event: Option<String>,
}

/// A member of an access list; `actions` None means every action.
#[derive(Debug, Clone, PartialEq)]
pub struct ListMember {
    pub org: String,
    pub actions: Option<BTreeSet<String>>,
}

/// A resource's access-list settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceLists {
    pub lists: Vec<String>,
    pub enabled: bool,
}

/// The decision point's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PdpState {
    /// Compiled XACML policy per resource id.
    // INVARIANT: every policy here has its `source` (it came from a `policy` event or a
    // snapshot record), so a snapshot can write it back.
    pub policies: HashMap<String, Arc<CompiledPolicy>>,
    pub instances: HashMap<String, Instance>,
    /// (service owner, list id) → members.
    pub access_lists: HashMap<(String, String), Vec<ListMember>>,
    pub resource_lists: HashMap<String, ResourceLists>,
}

/// How to undo one change to [`PdpState`].
#[derive(Debug, Clone)]
pub enum PdpUndo {
    Policy(String, Option<Arc<CompiledPolicy>>),
    Instance(String, Option<Instance>),
    AccessList((String, String), Option<Vec<ListMember>>),
    ResourceLists(String, Option<ResourceLists>),
}

fn restore<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>, k: K, old: Option<V>) {
    match old {
        Some(v) => {
            m.insert(k, v);
        }
        None => {
            m.remove(&k);
        }
    }
}

/// Undoes one change (called by the transaction's rollback).
pub(crate) fn undo(w: &mut World, u: PdpUndo) {
    let s = &mut w.pdp;
    match u {
        PdpUndo::Policy(k, old) => restore(&mut s.policies, k, old),
        PdpUndo::Instance(k, old) => restore(&mut s.instances, k, old),
        PdpUndo::AccessList(k, old) => restore(&mut s.access_lists, k, old),
        PdpUndo::ResourceLists(k, old) => restore(&mut s.resource_lists, k, old),
    }
}

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

fn set_policy(tx: &mut Tx<'_>, resource: &str, p: Option<Arc<CompiledPolicy>>) {
    let old = match &p {
        Some(p) => tx.w.pdp.policies.insert(resource.to_string(), p.clone()),
        None => tx.w.pdp.policies.remove(resource),
    };
    tx.push_pdp_undo(PdpUndo::Policy(resource.to_string(), old));
}

/// Applies `policy`, `instance` and `access_list`.
pub(crate) fn apply(tx: &mut Tx<'_>, ev: &Event) -> Result<()> {
    match ev {
        Event::Policy(p) => {
            if p.resource.trim().is_empty() {
                return Err(Error::invalid("`resource` must not be empty"));
            }
            let compiled = compile_policy(&p.xml)
                .map_err(|e| Error::invalid(format!("policy for `{}`: {e}", p.resource)))?;
            let res = match tx
                .w
                .graph
                .resource_node(&p.resource)
                .and_then(|n| tx.w.graph.resource(n))
            {
                Some(r) => Resource {
                    rules: Vec::new(),
                    ..r.clone()
                },
                None => Resource {
                    id: p.resource.clone(),
                    owner: app_owner(&p.resource).map(str::to_string),
                    delegable: true,
                    rules: Vec::new(),
                    kind: Default::default(),
                },
            };
            tx.put_resource(res);
            set_policy(tx, &p.resource, Some(Arc::new(compiled)));
            Ok(())
        }
        Event::Instance(i) => {
            let Some((party_id, guid)) = i.id.split_once('/') else {
                return Err(Error::invalid(format!(
                    "instance id `{}` is not `{{party_id}}/{{guid}}`",
                    i.id
                )));
            };
            if party_id.trim().parse::<i64>().is_err() || guid.trim().is_empty() {
                return Err(Error::invalid(format!(
                    "instance id `{}` is not `{{party_id}}/{{guid}}`",
                    i.id
                )));
            }
            if tx.w.graph.party_node(&i.party).is_none() {
                return Err(Error::unknown_party(&i.party));
            }
            if tx.w.graph.resource_node(&i.resource).is_none() {
                return Err(Error::unknown_resource(&i.resource));
            }
            let inst = Instance {
                id: i.id.clone(),
                resource: i.resource.clone(),
                party: i.party.clone(),
                task: i.task.clone(),
                end_event: i.end_event.clone(),
            };
            let old = tx.w.pdp.instances.insert(i.id.clone(), inst);
            tx.push_pdp_undo(PdpUndo::Instance(i.id.clone(), old));
            Ok(())
        }
        Event::AccessList(l) => {
            if l.owner.trim().is_empty() || l.id.trim().is_empty() {
                return Err(Error::invalid("an access list needs an `owner` and an `id`"));
            }
            let mut members = Vec::with_capacity(l.members.len());
            for m in &l.members {
                let n =
                    tx.w.graph
                        .party_node(&m.org)
                        .ok_or_else(|| Error::unknown_party(&m.org))?;
                if tx.w.graph.party(n).map(|p| p.kind) != Some(PartyKind::Organisation) {
                    return Err(Error::invalid(format!(
                        "access list member `{}` is not an organisation",
                        m.org
                    )));
                }
                members.push(ListMember {
                    org: m.org.clone(),
                    actions: m.actions.as_ref().map(|a| a.iter().cloned().collect()),
                });
            }
            let key = (l.owner.clone(), l.id.clone());
            let old = tx.w.pdp.access_lists.insert(key.clone(), members);
            tx.push_pdp_undo(PdpUndo::AccessList(key, old));
            Ok(())
        }
        _ => Err(Error::new(ErrorCode::InvalidInput, "not a decision-point event")),
    }
}

/// The decision point's part of a `resource` event: its access-list fields, and a new
/// rule list replaces an XACML policy.
pub(crate) fn on_resource_event(tx: &mut Tx<'_>, r: &ResourceEvent) -> Result<()> {
    if !r.rules.is_empty() && tx.w.pdp.policies.contains_key(&r.id) {
        set_policy(tx, &r.id, None);
    }
    if r.access_lists.is_some() || r.access_list_mode.is_some() {
        let old = tx.w.pdp.resource_lists.get(&r.id).cloned();
        let mut new = old.clone().unwrap_or_default();
        if let Some(l) = &r.access_lists {
            new.lists = l.clone();
        }
        if let Some(m) = &r.access_list_mode {
            new.enabled = m == "enabled";
        }
        tx.w.pdp.resource_lists.insert(r.id.clone(), new);
        tx.push_pdp_undo(PdpUndo::ResourceLists(r.id.clone(), old));
    }
    Ok(())
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
    expect: Vec<String>,
    /// Optionally, per result, the exact set of obligation ids.
    #[serde(default)]
    obligations: Option<Vec<Vec<String>>>,
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
        expect.push(Decision::parse(e).ok_or_else(|| {
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
