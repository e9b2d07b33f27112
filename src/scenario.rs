//! The scenario runner behind `delegraph test`: runs scenario files (scenario-format.md)
//! against a fresh engine and reports every failed step.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::event::{EVENT_NAMES, Event};
use crate::graph::NodeId;
use crate::model::{Error, ErrorCode, Result};
use crate::mutate::{self, Access};
use crate::resolve::{self, DelegationVerdict};
use crate::sysuser;
use crate::world::World;

/// One failed step.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: String,
    /// 1-based index of the step (0 for a file that could not be read at all).
    pub step: usize,
    pub what: String,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: step {} ({}): expected {}, got {}",
            self.file, self.step, self.what, self.expected, self.got
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.failures.extend(other.failures);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)]
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    steps: Vec<Value>,
}

/// Runs a scenario file from disk.
pub fn run_file(path: &Path) -> Report {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => run_str(&name, &text),
        Err(e) => file_failure(&name, format!("cannot read the file: {e}")),
    }
}

fn file_failure(name: &str, got: String) -> Report {
    Report {
        passed: 0,
        failed: 1,
        failures: vec![Failure {
            file: name.to_string(),
            step: 0,
            what: "file".into(),
            expected: "a scenario file".into(),
            got,
        }],
    }
}

/// Runs scenario text; `name` labels the failures.
pub fn run_str(name: &str, text: &str) -> Report {
    let file: File = match serde_yaml::from_str(text) {
        Ok(f) => f,
        Err(e) => return file_failure(name, format!("not a valid scenario file: {e}")),
    };
    let mut w = World::new();
    let mut report = Report::default();
    for (i, step) in file.steps.into_iter().enumerate() {
        let what = step_name(&step);
        match run_step(&mut w, step) {
            Ok(()) => report.passed += 1,
            Err((expected, got)) => {
                report.failed += 1;
                report.failures.push(Failure {
                    file: name.to_string(),
                    step: i + 1,
                    what,
                    expected,
                    got,
                });
            }
        }
    }
    report
}

fn step_name(step: &Value) -> String {
    match step.as_object().and_then(|m| m.keys().next()) {
        Some(k) => k.clone(),
        None => "?".into(),
    }
}

type StepResult = std::result::Result<(), (String, String)>;

fn mismatch(expected: impl fmt::Display, got: impl fmt::Display) -> StepResult {
    Err((expected.to_string(), got.to_string()))
}

fn err_text(e: &Error) -> String {
    format!("error {} ({})", e.code, e.message)
}

/// Takes `expect_error` out of a step body.
fn take_expect_error(body: &mut Value) -> std::result::Result<Option<ErrorCode>, (String, String)> {
    let Some(m) = body.as_object_mut() else {
        return Ok(None);
    };
    match m.remove("expect_error") {
        None => Ok(None),
        Some(Value::String(s)) => match ErrorCode::parse(&s) {
            Some(c) => Ok(Some(c)),
            None => Err(("a known error code".into(), format!("expect_error `{s}`"))),
        },
        Some(other) => Err(("an error code".into(), format!("expect_error {other}"))),
    }
}

/// Compares a result against the expected error (or success).
fn judge<T>(expected: Option<ErrorCode>, got: &Result<T>) -> StepResult {
    match (expected, got) {
        (None, Ok(_)) => Ok(()),
        (None, Err(e)) => mismatch("success", err_text(e)),
        (Some(c), Ok(_)) => mismatch(format!("error {c}"), "success"),
        (Some(c), Err(e)) if e.code == c => Ok(()),
        (Some(c), Err(e)) => mismatch(format!("error {c}"), err_text(e)),
    }
}

fn run_step(w: &mut World, step: Value) -> StepResult {
    let Value::Object(m) = step else {
        return mismatch("a step mapping with one key", step);
    };
    if m.len() != 1 {
        return judge(
            None,
            &Err::<(), _>(Error::invalid(format!(
                "a step has exactly one key, got {}",
                m.len()
            ))),
        );
    }
    let Some((key, mut body)) = m.into_iter().next() else {
        return mismatch("a step", "an empty mapping");
    };
    let expect_error = take_expect_error(&mut body)?;
    if EVENT_NAMES.contains(&key.as_str()) {
        let mut wrapped = serde_json::Map::new();
        wrapped.insert(key, body);
        let res = Event::from_json(Value::Object(wrapped)).and_then(|ev| mutate::apply(w, &ev));
        return judge(expect_error, &res);
    }
    let res = run_query(w, &key, body);
    match (expect_error, res) {
        (None, Ok(Ok(()))) => Ok(()),
        (None, Ok(Err(m))) => Err(m),
        (exp, Err(e)) => judge(exp, &Err::<(), _>(e)),
        (Some(c), Ok(_)) => mismatch(format!("error {c}"), "success"),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, body: Value) -> Result<T> {
    serde_json::from_value(body).map_err(|e| Error::invalid(format!("`{key}`: {e}")))
}

fn party(w: &World, id: &str) -> Result<NodeId> {
    w.graph.party_node(id).ok_or_else(|| Error::unknown_party(id))
}

fn ids(w: &World, set: impl IntoIterator<Item = NodeId>) -> BTreeSet<String> {
    set.into_iter().map(|n| w.graph.ext_id(n).to_string()).collect()
}

fn show(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckStep {
    subject: String,
    party: String,
    package: Option<String>,
    role: Option<String>,
    resource: Option<String>,
    action: Option<String>,
    instance: Option<String>,
    expect: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizedPartiesStep {
    subject: String,
    expect: Option<Vec<String>>,
    includes: Option<Vec<String>>,
    excludes: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SetExpect {
    exact: Option<Vec<String>>,
    includes: Option<Vec<String>>,
    excludes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RightsStep {
    subject: String,
    party: String,
    packages: Option<SetExpect>,
    roles: Option<SetExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanDelegateStep {
    by: String,
    party: String,
    package: Option<String>,
    resource: Option<String>,
    action: Option<String>,
    expect: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldersStep {
    party: String,
    package: String,
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsStep {
    system_user: Option<String>,
    facilitator: Option<String>,
    agent: Option<String>,
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestStatusStep {
    request: String,
    expect: String,
    /// Optionally: whether the request was escalated to the party's access managers.
    escalated: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddableClientsStep {
    system_user: String,
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LostSpec {
    subject: String,
    party: String,
    package: Option<String>,
    resource: Option<String>,
    action: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedSpec {
    assignments: Option<usize>,
    delegations: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateStep {
    event: Value,
    expect_lost: Option<Vec<LostSpec>>,
    expect_removed: Option<RemovedSpec>,
}

/// Compares a set against exact / includes / excludes expectations.
fn compare_set(
    label: &str,
    got: &BTreeSet<String>,
    exp: &SetExpect,
    norm: impl Fn(&str) -> Result<String>,
) -> Result<StepResult> {
    let normalise = |v: &Vec<String>| v.iter().map(|s| norm(s)).collect::<Result<BTreeSet<String>>>();
    if let Some(e) = &exp.exact {
        let e = normalise(e)?;
        if &e != got {
            return Ok(mismatch(format!("{label} exactly {}", show(&e)), show(got)));
        }
    }
    if let Some(e) = &exp.includes {
        let e = normalise(e)?;
        let missing: BTreeSet<String> = e.difference(got).cloned().collect();
        if !missing.is_empty() {
            return Ok(mismatch(
                format!("{label} including {}", show(&e)),
                format!("{} (missing {})", show(got), show(&missing)),
            ));
        }
    }
    if let Some(e) = &exp.excludes {
        let e = normalise(e)?;
        let extra: BTreeSet<String> = e.intersection(got).cloned().collect();
        if !extra.is_empty() {
            return Ok(mismatch(
                format!("{label} excluding {}", show(&e)),
                format!("{} (has {})", show(got), show(&extra)),
            ));
        }
    }
    Ok(Ok(()))
}

fn run_query(w: &mut World, key: &str, body: Value) -> Result<StepResult> {
    let c = w.catalog;
    let role_code = |r: &str| -> Result<String> {
        c.role_id(r)
            .map(|id| c.role(id).code.clone())
            .ok_or_else(|| Error::new(ErrorCode::UnknownRole, format!("no role `{r}` in the catalogue")))
    };
    let package_code = |p: &str| -> Result<String> {
        c.package_id(p)
            .map(|id| c.package(id).code.clone())
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownPackage,
                    format!("no access package `{p}` in the catalogue"),
                )
            })
    };
    match key {
        "decide" => crate::pdp::scenario_decide(w, body),
        "check" => {
            let s: CheckStep = parse(key, body)?;
            let (x, f) = (party(w, &s.subject)?, party(w, &s.party)?);
            match (&s.package, &s.role, &s.resource) {
                (Some(p), None, None) if s.action.is_none() && s.instance.is_none() => {
                    let p = c.package_id(p).ok_or_else(|| {
                        Error::new(ErrorCode::UnknownPackage, format!("no access package `{p}`"))
                    })?;
                    let got = resolve::has_package(w, x, f, p);
                    Ok(compare_bool(&s.expect, got))
                }
                (None, Some(r), None) if s.action.is_none() && s.instance.is_none() => {
                    let r = c
                        .role_id(r)
                        .ok_or_else(|| Error::new(ErrorCode::UnknownRole, format!("no role `{r}`")))?;
                    let got = resolve::has_role(w, x, f, r);
                    Ok(compare_bool(&s.expect, got))
                }
                (None, None, Some(res)) => {
                    let Some(action) = &s.action else {
                        return Err(Error::invalid("a resource check needs `action`"));
                    };
                    let rn = w
                        .graph
                        .resource_node(res)
                        .ok_or_else(|| Error::unknown_resource(res))?;
                    let got = resolve::permits(w, x, f, rn, &action.to_lowercase(), s.instance.as_deref());
                    let want = match &s.expect {
                        Value::String(v) if v == "permit" => true,
                        Value::String(v) if v == "deny" => false,
                        other => {
                            return Err(Error::invalid(format!(
                                "a resource check expects `permit` or `deny`, got {other}"
                            )));
                        }
                    };
                    Ok(if got == want {
                        Ok(())
                    } else {
                        mismatch(
                            if want { "permit" } else { "deny" },
                            if got { "permit" } else { "deny" },
                        )
                    })
                }
                _ => Err(Error::invalid(
                    "`check` names exactly one of `package`, `role` or `resource` + `action`",
                )),
            }
        }
        "authorized_parties" => {
            let s: AuthorizedPartiesStep = parse(key, body)?;
            let x = party(w, &s.subject)?;
            let got = ids(w, resolve::authorized_parties(w, x).into_iter().map(|a| a.party));
            let exp = SetExpect {
                exact: s.expect,
                includes: s.includes,
                excludes: s.excludes,
            };
            compare_set("parties", &got, &exp, |s| Ok(s.to_string()))
        }
        "rights" => {
            let s: RightsStep = parse(key, body)?;
            let (x, f) = (party(w, &s.subject)?, party(w, &s.party)?);
            let r = resolve::rights(w, x, f);
            let pk: BTreeSet<String> = r.packages.iter().map(|p| c.package(p).code.clone()).collect();
            let roles: BTreeSet<String> = r
                .roles
                .iter()
                .filter(|r| !c.is_unreported_role(**r))
                .map(|r| c.role(*r).code.clone())
                .collect();
            if let Some(e) = &s.packages {
                let res = compare_set("packages", &pk, e, package_code)?;
                if res.is_err() {
                    return Ok(res);
                }
            }
            if let Some(e) = &s.roles {
                return compare_set("roles", &roles, e, role_code);
            }
            Ok(Ok(()))
        }
        "can_delegate" => {
            let s: CanDelegateStep = parse(key, body)?;
            let (u, p) = (party(w, &s.by)?, party(w, &s.party)?);
            let got = match (&s.package, &s.resource, &s.action) {
                (Some(pk), None, None) => {
                    let pk = c.package_id(pk).ok_or_else(|| {
                        Error::new(ErrorCode::UnknownPackage, format!("no access package `{pk}`"))
                    })?;
                    resolve::can_delegate_package(w, u, p, pk) == DelegationVerdict::Yes
                }
                (None, Some(r), Some(a)) => {
                    let rn = w
                        .graph
                        .resource_node(r)
                        .ok_or_else(|| Error::unknown_resource(r))?;
                    resolve::can_delegate_resource(w, u, p, rn, &a.to_lowercase())
                }
                _ => {
                    return Err(Error::invalid(
                        "`can_delegate` names a `package`, or a `resource` and an `action`",
                    ));
                }
            };
            Ok(if got == s.expect {
                Ok(())
            } else {
                mismatch(s.expect, got)
            })
        }
        "holders" => {
            let s: HoldersStep = parse(key, body)?;
            let f = party(w, &s.party)?;
            let p = c.package_id(&s.package).ok_or_else(|| {
                Error::new(
                    ErrorCode::UnknownPackage,
                    format!("no access package `{}`", s.package),
                )
            })?;
            let got = ids(w, resolve::holders(w, f, p));
            let exp = SetExpect {
                exact: Some(s.expect),
                ..SetExpect::default()
            };
            compare_set("holders", &got, &exp, |s| Ok(s.to_string()))
        }
        "clients" => {
            let s: ClientsStep = parse(key, body)?;
            let (f, a) = match (&s.system_user, &s.facilitator, &s.agent) {
                (None, Some(f), Some(a)) => (party(w, f)?, party(w, a)?),
                (Some(su), None, None) => {
                    let a = party(w, su)?;
                    let owner = w.graph.party(a).and_then(|p| p.owner.clone()).ok_or_else(|| {
                        Error::invalid(format!("`{su}` is not a system user with an owner"))
                    })?;
                    (party(w, &owner)?, a)
                }
                _ => {
                    return Err(Error::invalid(
                        "`clients` names a `system_user`, or a `facilitator` and an `agent`",
                    ));
                }
            };
            let got = ids(w, resolve::clients(w, f, a));
            let exp = SetExpect {
                exact: Some(s.expect),
                ..SetExpect::default()
            };
            compare_set("clients", &got, &exp, |s| Ok(s.to_string()))
        }
        "request_status" => {
            let s: RequestStatusStep = parse(key, body)?;
            let want = sysuser::Status::parse(&s.expect)
                .ok_or_else(|| Error::invalid(format!("`expect` is not a request status: `{}`", s.expect)))?;
            let got = sysuser::request_status(w, &s.request)?;
            if got != want {
                return Ok(mismatch(want.as_str(), got.as_str()));
            }
            if let Some(esc) = s.escalated {
                let got = w
                    .sys
                    .requests
                    .get(&s.request)
                    .is_some_and(|r| r.escalated_by.is_some());
                if got != esc {
                    return Ok(mismatch(format!("escalated: {esc}"), format!("escalated: {got}")));
                }
            }
            Ok(Ok(()))
        }
        "addable_clients" => {
            let s: AddableClientsStep = parse(key, body)?;
            let got = ids(w, sysuser::addable_clients(w, &s.system_user)?);
            let exp = SetExpect {
                exact: Some(s.expect),
                ..SetExpect::default()
            };
            compare_set("addable clients", &got, &exp, |s| Ok(s.to_string()))
        }
        "simulate" => {
            let s: SimulateStep = parse(key, body)?;
            let ev = Event::from_json(s.event)?;
            let sim = mutate::simulate(w, &ev)?;
            if let Some(lost) = &s.expect_lost {
                let mut exp = BTreeSet::new();
                for l in lost {
                    exp.insert(match (&l.package, &l.resource, &l.action) {
                        (Some(p), None, None) => Access::Package {
                            subject: l.subject.clone(),
                            party: l.party.clone(),
                            package: package_code(p)?,
                        },
                        (None, Some(r), Some(a)) => Access::Resource {
                            subject: l.subject.clone(),
                            party: l.party.clone(),
                            resource: r.clone(),
                            action: a.to_lowercase(),
                        },
                        _ => {
                            return Err(Error::invalid(
                                "a lost access names a `package`, or a `resource` and an `action`",
                            ));
                        }
                    });
                }
                if exp != sim.lost {
                    let fmt = |s: &BTreeSet<Access>| s.iter().map(show_access).collect::<Vec<_>>().join("; ");
                    let missing: BTreeSet<Access> = exp.difference(&sim.lost).cloned().collect();
                    let extra: BTreeSet<Access> = sim.lost.difference(&exp).cloned().collect();
                    return Ok(mismatch(
                        format!("lost exactly {} access(es)", exp.len()),
                        format!(
                            "{} (missing: {}; unexpected: {})",
                            sim.lost.len(),
                            fmt(&missing),
                            fmt(&extra)
                        ),
                    ));
                }
            }
            if let Some(r) = &s.expect_removed {
                if let Some(n) = r.assignments
                    && n != sim.removed_assignments
                {
                    return Ok(mismatch(
                        format!("{n} removed assignments"),
                        sim.removed_assignments,
                    ));
                }
                if let Some(n) = r.delegations
                    && n != sim.removed_delegations
                {
                    return Ok(mismatch(
                        format!("{n} removed delegations"),
                        sim.removed_delegations,
                    ));
                }
            }
            Ok(Ok(()))
        }
        other => Err(Error::invalid(format!("unknown step `{other}`"))),
    }
}

fn show_access(a: &Access) -> String {
    match a {
        Access::Package {
            subject,
            party,
            package,
        } => format!("{subject} for {party}: {package}"),
        Access::Resource {
            subject,
            party,
            resource,
            action,
        } => format!("{subject} for {party}: {resource}/{action}"),
    }
}

fn compare_bool(expect: &Value, got: bool) -> StepResult {
    match expect {
        Value::Bool(b) if *b == got => Ok(()),
        Value::Bool(b) => mismatch(b, got),
        other => mismatch("expect: true or false", other),
    }
}
