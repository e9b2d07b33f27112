//! The scenario runner behind `delegraph test`: runs scenario files (scenario-format.md)
//! against a fresh engine and reports every failed step.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::catalog::Catalog;
use crate::event::{EVENT_NAMES, Event};
use crate::model::{Error, ErrorCode, Result};
use crate::mutate;
use crate::query::{self, Answer, LostAccess, Query};
use crate::sysuser;
use crate::world::World;

// ----------------------------------------------------------------------------------
// Backends: where the steps run. The runner parses steps and judges answers; a backend
// applies events and evaluates queries (`query::evaluate_mut` in-process, the HTTP API
// for `delegraph test --server`), so both paths share one parser and one judge.

/// Where a scenario runs: an in-process [`World`], or a server over HTTP.
pub trait Backend {
    /// Starts from an empty world (each scenario file builds its own).
    fn reset(&mut self) -> Result<()>;
    /// Applies events atomically: all of them, or none with the refusal.
    fn apply(&mut self, events: &[Event]) -> Result<()>;
    /// Evaluates one query.
    fn query(&mut self, q: &Query) -> Result<Answer>;
    /// Asks the decision point (domain.md §8) a JSON-profile request; the answer is the
    /// JSON-profile response.
    fn decide(&mut self, api: crate::pdp::Api, request: &Value) -> Result<Value>;
}

/// A world as the backend: each file starts from `World::new()` (one partition; see
/// [`InProcess`] for another count).
impl Backend for World {
    fn reset(&mut self) -> Result<()> {
        *self = World::new();
        Ok(())
    }
    fn apply(&mut self, events: &[Event]) -> Result<()> {
        mutate::apply_batch(self, events).map(|_| ())
    }
    fn query(&mut self, q: &Query) -> Result<Answer> {
        query::evaluate_mut(self, q)
    }
    fn decide(&mut self, api: crate::pdp::Api, request: &Value) -> Result<Value> {
        Ok(crate::pdp::decide_json_api(self, request, api))
    }
}

/// The in-process backend of `delegraph test --partitions P`: every file starts from an
/// empty world of `partitions` graph partitions ([`World::with_partitions`]). A scenario
/// builds its world from events, so nothing is loaded or re-partitioned.
#[derive(Debug, Clone)]
pub struct InProcess {
    pub world: World,
    partitions: usize,
}

impl InProcess {
    pub fn new(partitions: usize) -> InProcess {
        InProcess {
            world: World::with_partitions(partitions),
            partitions,
        }
    }

    pub fn partitions(&self) -> usize {
        self.partitions
    }
}

impl Backend for InProcess {
    fn reset(&mut self) -> Result<()> {
        self.world = World::with_partitions(self.partitions);
        Ok(())
    }
    fn apply(&mut self, events: &[Event]) -> Result<()> {
        Backend::apply(&mut self.world, events)
    }
    fn query(&mut self, q: &Query) -> Result<Answer> {
        Backend::query(&mut self.world, q)
    }
    fn decide(&mut self, api: crate::pdp::Api, request: &Value) -> Result<Value> {
        Backend::decide(&mut self.world, api, request)
    }
}

/// Wraps a backend and writes down what each of its calls answered, for
/// [`Options::record_answers`].
struct Recording<'a> {
    inner: &'a mut dyn Backend,
    calls: Vec<Value>,
}

impl Recording<'_> {
    fn error(e: &Error) -> Value {
        serde_json::json!({"error": {"code": e.code.as_str(), "message": e.message}})
    }
}

impl Backend for Recording<'_> {
    fn reset(&mut self) -> Result<()> {
        self.inner.reset()
    }
    fn apply(&mut self, events: &[Event]) -> Result<()> {
        let r = self.inner.apply(events);
        self.calls.push(match &r {
            Ok(()) => serde_json::json!({"applied": events.len()}),
            Err(e) => Recording::error(e),
        });
        r
    }
    fn query(&mut self, q: &Query) -> Result<Answer> {
        let r = self.inner.query(q);
        self.calls.push(match &r {
            Ok(a) => serde_json::json!({ "answer": a }),
            Err(e) => Recording::error(e),
        });
        r
    }
    fn decide(&mut self, api: crate::pdp::Api, request: &Value) -> Result<Value> {
        let r = self.inner.decide(api, request);
        self.calls.push(match &r {
            Ok(v) => serde_json::json!({ "decision": v }),
            Err(e) => Recording::error(e),
        });
        r
    }
}

/// What one step got from the backend, whether it passed or not: one entry per call
/// (`{"applied": N}` for events taken, `{"answer": ...}` for a query, `{"decision": ...}`
/// for the decision point, `{"error": {"code", "message"}}` for a refusal). Two runs of
/// the same files (another partition count, a server) can be compared step by step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepAnswer {
    pub file: String,
    /// 1-based index of the step.
    pub step: usize,
    pub what: String,
    pub passed: bool,
    pub calls: Vec<Value>,
}

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
        // Everything here may come from a file or a server: escaped, so that no control
        // or bidirectional character reaches the terminal.
        use crate::model::escape;
        write!(
            f,
            "{}: step {} ({}): expected {}, got {}",
            escape(&self.file),
            self.step,
            escape(&self.what),
            escape(&self.expected),
            escape(&self.got)
        )
    }
}

/// One step that passed (for `--verbose` and JUnit reports).
#[derive(Debug, Clone)]
pub struct Pass {
    pub file: String,
    pub step: usize,
    pub what: String,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<Failure>,
    pub passes: Vec<Pass>,
    /// Every step's answers, in order (with [`Options::record_answers`]).
    pub answers: Vec<StepAnswer>,
}

impl Report {
    pub fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.failures.extend(other.failures);
        self.passes.extend(other.passes);
        self.answers.extend(other.answers);
    }

    /// The recorded answers as JSON Lines, one step a line (`delegraph test --answers`).
    pub fn answers_jsonl(&self) -> String {
        let mut out = String::new();
        for a in &self.answers {
            out.push_str(&serde_json::to_string(a).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// The report as JUnit XML: one test suite per file, one test case per step.
    pub fn to_junit(&self) -> String {
        use std::collections::BTreeMap;
        fn esc(s: &str) -> String {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        }
        // file -> step -> (what, failure message)
        let mut files: BTreeMap<&str, BTreeMap<usize, (&str, Option<String>)>> = BTreeMap::new();
        for p in &self.passes {
            files.entry(&p.file).or_default().insert(p.step, (&p.what, None));
        }
        for f in &self.failures {
            files.entry(&f.file).or_default().insert(
                f.step,
                (&f.what, Some(format!("expected {}, got {}", f.expected, f.got))),
            );
        }
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites tests=\"{}\" failures=\"{}\">\n",
            self.passed + self.failed,
            self.failed
        ));
        for (file, steps) in &files {
            let failures = steps.values().filter(|(_, f)| f.is_some()).count();
            out.push_str(&format!(
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">\n",
                esc(file),
                steps.len()
            ));
            for (step, (what, failure)) in steps {
                let name = esc(&format!("step {step} ({what})"));
                match failure {
                    None => out.push_str(&format!(
                        "    <testcase classname=\"{}\" name=\"{name}\"/>\n",
                        esc(file)
                    )),
                    Some(m) => out.push_str(&format!(
                        "    <testcase classname=\"{}\" name=\"{name}\">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                        esc(file),
                        esc(m)
                    )),
                }
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

/// How to run scenario files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Stop at the first failed step.
    pub fail_fast: bool,
    /// Keep every step's answers in [`Report::answers`].
    pub record_answers: bool,
}

/// A scenario file. Keys beside `name`, `description` and `steps` are left alone (a
/// file may carry its own metadata, e.g. `version` or `tags`): the contract makes unknown
/// keys an error in a *step*, and refusing a whole file for one would fail every step.
#[derive(Deserialize)]
struct File {
    #[allow(dead_code)]
    name: Option<Value>,
    #[allow(dead_code)]
    description: Option<Value>,
    steps: Vec<Value>,
}

/// Runs a scenario file from disk.
pub fn run_file(path: &Path) -> Report {
    run_file_on(&mut World::new(), path)
}

/// Runs a scenario file from disk on `backend`.
pub fn run_file_on(backend: &mut dyn Backend, path: &Path) -> Report {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => run_str_on(backend, &name, &text),
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
        ..Report::default()
    }
}

/// Runs scenario text; `name` labels the failures.
pub fn run_str(name: &str, text: &str) -> Report {
    run_str_on(&mut World::new(), name, text)
}

/// Runs scenario text on `backend`, from an empty world; `name` labels the failures.
pub fn run_str_on(backend: &mut dyn Backend, name: &str, text: &str) -> Report {
    run_str_with(backend, name, text, Options::default())
}

/// Runs a scenario file from disk on `backend` with `options`.
pub fn run_file_with(backend: &mut dyn Backend, path: &Path, options: Options) -> Report {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => run_str_with(backend, &name, &text, options),
        Err(e) => file_failure(&name, format!("cannot read the file: {e}")),
    }
}

/// Runs scenario text on `backend` with `options`.
pub fn run_str_with(backend: &mut dyn Backend, name: &str, text: &str, options: Options) -> Report {
    // YAML merge keys (`<<: *defaults`) are applied first: a step written with one is
    // the step its author sees.
    let read = serde_yaml::from_str::<serde_yaml::Value>(text).and_then(|mut v| {
        v.apply_merge()?;
        serde_yaml::from_value::<File>(v)
    });
    let file: File = match read {
        Ok(f) => f,
        Err(e) => return file_failure(name, format!("not a valid scenario file: {e}")),
    };
    if let Err(e) = backend.reset() {
        return file_failure(name, format!("cannot start from an empty world: {e}"));
    }
    let mut report = Report::default();
    for (i, step) in file.steps.into_iter().enumerate() {
        let what = step_name(&step);
        let result = if options.record_answers {
            let mut rec = Recording {
                inner: &mut *backend,
                calls: Vec::new(),
            };
            let result = run_step(&mut rec, step);
            report.answers.push(StepAnswer {
                file: name.to_string(),
                step: i + 1,
                what: what.clone(),
                passed: result.is_ok(),
                calls: rec.calls,
            });
            result
        } else {
            run_step(backend, step)
        };
        match result {
            Ok(()) => {
                report.passed += 1;
                report.passes.push(Pass {
                    file: name.to_string(),
                    step: i + 1,
                    what,
                });
            }
            Err((expected, got)) => {
                report.failed += 1;
                report.failures.push(Failure {
                    file: name.to_string(),
                    step: i + 1,
                    what,
                    expected,
                    got,
                });
                if options.fail_fast {
                    break;
                }
            }
        }
    }
    report
}

/// An event, a query of [`Query::parse`], or the decision point's `decide`.
fn is_step_name(k: &str) -> bool {
    EVENT_NAMES.contains(&k) || crate::query::NAMES.contains(&k) || k == "decide"
}

fn step_name(step: &Value) -> String {
    let Some(m) = step.as_object() else {
        return step.as_str().unwrap_or("?").to_string();
    };
    match m.keys().find(|k| is_step_name(k)).or_else(|| m.keys().next()) {
        Some(k) => k.clone(),
        None => "?".into(),
    }
}

/// A step's name and body. A step is a one-key mapping; its `expect_error` and (for a
/// query) its expectation keys may also stand beside the name, one level out —
/// `- check: {subject: kari, party: bergen, package: lonn}` with `expect: true` on the
/// next line — and are then read as fields of the body. Any other second key is an
/// `invalid_input`, as is a field given both ways.
fn step_parts(mut m: serde_json::Map<String, Value>) -> Result<(String, Value)> {
    if m.len() == 1 {
        return m
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid("a step is a mapping with one key"));
    }
    let names: Vec<String> = m.keys().filter(|k| is_step_name(k)).cloned().collect();
    let [name] = names.as_slice() else {
        return Err(Error::invalid(format!(
            "a step has exactly one key, got {}",
            m.len()
        )));
    };
    let beside: &[&str] = if EVENT_NAMES.contains(&name.as_str()) {
        &[]
    } else {
        expectation_keys(name)
    };
    if let Some(k) = m
        .keys()
        .find(|k| *k != name && *k != "expect_error" && !beside.contains(&k.as_str()))
    {
        return Err(Error::invalid(format!(
            "a step has exactly one key (beside it only `expect_error` or what it expects), got `{k}` beside `{name}`"
        )));
    }
    let mut body = match m.remove(name) {
        Some(Value::Object(b)) => b,
        Some(Value::Null) | None => serde_json::Map::new(),
        Some(other) => return Err(Error::invalid(format!("`{name}` takes a mapping, got `{other}`"))),
    };
    for (k, v) in m {
        if body.contains_key(&k) {
            return Err(Error::invalid(format!(
                "`{k}` is given both in and beside `{name}`"
            )));
        }
        body.insert(k, v);
    }
    Ok((name.clone(), Value::Object(body)))
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

fn run_step(w: &mut dyn Backend, step: Value) -> StepResult {
    // A field-less event may be written as its bare name (`- retire_a2_roles`), as it
    // may be with an empty or null body.
    let step = match step {
        Value::String(name) if EVENT_NAMES.contains(&name.as_str()) => {
            let mut m = serde_json::Map::new();
            m.insert(name, Value::Null);
            Value::Object(m)
        }
        other => other,
    };
    let Value::Object(m) = step else {
        return mismatch("a step mapping with one key", step);
    };
    // A malformed step is judged against an `expect_error` written beside it.
    let beside = match m.get("expect_error") {
        Some(Value::String(c)) => ErrorCode::parse(c),
        _ => None,
    };
    let (key, mut body) = match step_parts(m) {
        Ok(parts) => parts,
        Err(e) => return judge(beside, &Err::<(), _>(e)),
    };
    let expect_error = take_expect_error(&mut body)?;
    if EVENT_NAMES.contains(&key.as_str()) {
        let mut wrapped = serde_json::Map::new();
        wrapped.insert(key, body);
        let res = Event::from_json(Value::Object(wrapped)).and_then(|ev| w.apply(std::slice::from_ref(&ev)));
        return judge(expect_error, &res);
    }
    // A query step must say what it expects: without it, it fails and shows the answer
    // (so that writing a scenario can start from the engine's answer).
    let has_expectation = body
        .as_object()
        .is_some_and(|m| expectation_keys(&key).iter().any(|k| m.contains_key(*k)));
    // A step that expects an error needs no expectation of the answer: the query is run
    // and only its error is judged (`suppliers: {consumer: nobody, expect_error:
    // unknown_party}`).
    if let Some(code) = expect_error
        && !has_expectation
        && !matches!(key.as_str(), "decide" | "simulate")
    {
        let fields = match body {
            Value::Null => Value::Object(Default::default()),
            other => other,
        };
        let res = Query::parse(&key, fields)
            .ok_or_else(|| Error::invalid(format!("unknown step `{key}`")))
            .and_then(|q| w.query(&q?));
        return judge(Some(code), &res);
    }
    if expect_error.is_none() && !has_expectation && key != "decide" {
        let wanted = expectation_keys(&key)
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let fields = match body {
            Value::Null => Value::Object(Default::default()),
            other => other,
        };
        let got = Query::parse(&key, fields)
            .ok_or_else(|| Error::invalid(format!("unknown step `{key}`")))
            .and_then(|q| {
                let q = q?;
                w.query(&q)?.body()
            });
        return match got {
            Ok(answer) => mismatch(
                format!("an expectation ({wanted})"),
                format!("the answer {answer}"),
            ),
            Err(e) => mismatch(format!("an expectation ({wanted})"), err_text(&e)),
        };
    }
    let res = run_query(w, &key, body);
    match (expect_error, res) {
        (None, Ok(Ok(()))) => Ok(()),
        (None, Ok(Err(m))) => Err(m),
        (exp, Err(e)) => judge(exp, &Err::<(), _>(e)),
        (Some(c), Ok(_)) => mismatch(format!("error {c}"), "success"),
    }
}

fn show(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

// ----------------------------------------------------------------------------------
// Query steps: a step body is the query's fields (parsed by `query::Query`) plus the
// expectation fields below, which only the runner reads.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectValue {
    expect: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectIds {
    expect: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestStatusExpect {
    expect: String,
    /// Optionally: whether the request was escalated to the party's access managers.
    escalated: Option<bool>,
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
struct AuthorizedPartiesExpect {
    expect: Option<Vec<String>>,
    includes: Option<Vec<String>>,
    excludes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RightsExpect {
    packages: Option<SetExpect>,
    roles: Option<SetExpect>,
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
struct SimulateExpect {
    expect_lost: Option<Vec<LostSpec>>,
    expect_removed: Option<RemovedSpec>,
}

/// The expectation fields of each query step.
fn expectation_keys(key: &str) -> &'static [&'static str] {
    match key {
        "authorized_parties" => &["expect", "includes", "excludes"],
        "rights" => &["packages", "roles"],
        "simulate" => &["expect_lost", "expect_removed"],
        "request_status" => &["expect", "escalated"],
        "consent_status" => &["expect", "accepted_by", "acceptor_entitled"],
        "consent_check" => &["expect", "reason"],
        "decide" => &["expect", "obligations"],
        _ => &["expect"],
    }
}

/// Splits a query step into the query and its expectations.
fn split_step<E: for<'de> Deserialize<'de>>(key: &str, body: Value) -> Result<(Query, E)> {
    let mut fields = match body {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => return Err(Error::invalid(format!("`{key}` takes a mapping, got `{other}`"))),
    };
    let mut expect = serde_json::Map::new();
    for k in expectation_keys(key) {
        if let Some(v) = fields.remove(*k) {
            // Ids are free strings: `expect: [1001]` names the party `1001`. The counts
            // of `expect_removed` stay numbers.
            let v = if *k == "expect_removed" {
                v
            } else {
                numbers_as_text(v)
            };
            expect.insert((*k).to_string(), v);
        }
    }
    let q = Query::parse(key, Value::Object(fields))
        .ok_or_else(|| Error::invalid(format!("unknown step `{key}`")))??;
    let e =
        serde_json::from_value(Value::Object(expect)).map_err(|e| Error::invalid(format!("`{key}`: {e}")))?;
    Ok((q, e))
}

/// Every number of an expectation as its text (nulls kept: `accepted_by: null` asserts
/// there is none).
fn numbers_as_text(v: Value) -> Value {
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_text).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, x)| (k, numbers_as_text(x))).collect()),
        other => other,
    }
}

fn wrong_answer(q: &Query) -> Error {
    Error::invalid(format!("the answer to `{}` is of another query", q.name()))
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

fn exact_ids(label: &str, got: &[String], expect: Vec<String>) -> Result<StepResult> {
    let got: BTreeSet<String> = got.iter().cloned().collect();
    let exp = SetExpect {
        exact: Some(expect),
        ..SetExpect::default()
    };
    compare_set(label, &got, &exp, |s| Ok(s.to_string()))
}

fn run_query(b: &mut dyn Backend, key: &str, body: Value) -> Result<StepResult> {
    let c = Catalog::builtin();
    let role_code = |r: &str| -> Result<String> {
        c.role_id(r)
            .map(|id| c.role(id).code.clone())
            .ok_or_else(|| c.unknown_role(r))
    };
    let package_code = |p: &str| -> Result<String> {
        c.package_id(p)
            .map(|id| c.package(id).code.clone())
            .ok_or_else(|| c.unknown_package(p))
    };
    match key {
        "decide" => crate::pdp::scenario_decide(body, |api, req| b.decide(api, req)),
        "check" => {
            let (q, e): (Query, ExpectValue) = split_step(key, body)?;
            let is_resource = matches!(&q, Query::Check(cq) if cq.resource.is_some());
            let Answer::Check(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            if !is_resource {
                return Ok(compare_bool(&e.expect, a.allowed));
            }
            // `permit` / `deny` as the format writes them; the decision point's spelling
            // (`Permit`) and a boolean read the same.
            let want = match &e.expect {
                Value::String(v) if v.trim().eq_ignore_ascii_case("permit") => true,
                Value::String(v) if v.trim().eq_ignore_ascii_case("deny") => false,
                Value::Bool(b) => *b,
                other => {
                    return Err(Error::invalid(format!(
                        "a resource check expects `permit` or `deny`, got {other}"
                    )));
                }
            };
            let word = |b: bool| if b { "permit" } else { "deny" };
            Ok(if a.allowed == want {
                Ok(())
            } else {
                mismatch(word(want), word(a.allowed))
            })
        }
        "authorized_parties" => {
            let (q, e): (Query, AuthorizedPartiesExpect) = split_step(key, body)?;
            let Answer::AuthorizedParties(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            let got: BTreeSet<String> = a.parties.into_iter().map(|p| p.party).collect();
            let exp = SetExpect {
                exact: e.expect,
                includes: e.includes,
                excludes: e.excludes,
            };
            compare_set("parties", &got, &exp, |s| Ok(s.to_string()))
        }
        "rights" => {
            // A bare list is the exact set (`packages: [lonn]` = `packages: {exact: [lonn]}`).
            let mut body = body;
            if let Value::Object(m) = &mut body {
                for k in ["packages", "roles"] {
                    if let Some(v) = m.get_mut(k)
                        && v.is_array()
                    {
                        let list = v.take();
                        *v = serde_json::json!({ "exact": list });
                    }
                }
            }
            let (q, e): (Query, RightsExpect) = split_step(key, body)?;
            let Answer::Rights(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            let pk: BTreeSet<String> = a.packages.into_iter().collect();
            let roles: BTreeSet<String> = a.roles.into_iter().collect();
            if let Some(e) = &e.packages {
                let res = compare_set("packages", &pk, e, package_code)?;
                if res.is_err() {
                    return Ok(res);
                }
            }
            if let Some(e) = &e.roles {
                return compare_set("roles", &roles, e, role_code);
            }
            Ok(Ok(()))
        }
        "can_delegate" => {
            let (q, e): (Query, ExpectValue) = split_step(key, body)?;
            let Answer::CanDelegate(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            Ok(compare_bool(&e.expect, a.allowed))
        }
        "explain" => {
            let (q, e): (Query, ExpectValue) = split_step(key, body)?;
            let Answer::Explain(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            Ok(compare_bool(&e.expect, a.allowed))
        }
        "holders" => {
            let (q, e): (Query, ExpectIds) = split_step(key, body)?;
            let Answer::Holders(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            exact_ids("holders", &a.holders, e.expect)
        }
        "clients" => {
            let (q, e): (Query, ExpectIds) = split_step(key, body)?;
            let Answer::Clients(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            exact_ids("clients", &a.clients, e.expect)
        }
        "request_status" => {
            let (q, e): (Query, RequestStatusExpect) = split_step(key, body)?;
            let Answer::RequestStatus(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            let want = sysuser::Status::parse(&e.expect)
                .ok_or_else(|| Error::invalid(format!("`expect` is not a request status: `{}`", e.expect)))?;
            if a.status != want.as_str() {
                return Ok(mismatch(want.as_str(), &a.status));
            }
            if let Some(esc) = e.escalated
                && esc != a.escalated
            {
                return Ok(mismatch(
                    format!("escalated: {esc}"),
                    format!("escalated: {}", a.escalated),
                ));
            }
            Ok(Ok(()))
        }
        "addable_clients" => {
            let (q, e): (Query, ExpectIds) = split_step(key, body)?;
            let Answer::AddableClients(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            exact_ids("addable clients", &a.clients, e.expect)
        }
        "simulate" => {
            let (q, e): (Query, SimulateExpect) = split_step(key, body)?;
            let Answer::Simulate(sim) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            if sim.truncated {
                // A server lists the first `limit` entries only: an exact comparison
                // needs them all.
                return Err(Error::invalid(format!(
                    "the simulation's answer is cut at its limit ({} of {} lost accesses listed): \
                     give the step a larger `limit`",
                    sim.lost.len(),
                    sim.lost_count
                )));
            }
            if let Some(lost) = &e.expect_lost {
                let mut exp = BTreeSet::new();
                for l in lost {
                    exp.insert(match (&l.package, &l.resource, &l.action) {
                        (Some(p), None, None) => LostAccess {
                            subject: l.subject.clone(),
                            party: l.party.clone(),
                            package: Some(package_code(p)?),
                            resource: None,
                            action: None,
                        },
                        (None, Some(r), Some(a)) => LostAccess {
                            subject: l.subject.clone(),
                            party: l.party.clone(),
                            package: None,
                            resource: Some(r.clone()),
                            action: Some(a.to_lowercase()),
                        },
                        _ => {
                            return Err(Error::invalid(
                                "a lost access names a `package`, or a `resource` and an `action`",
                            ));
                        }
                    });
                }
                let got: BTreeSet<LostAccess> = sim.lost.iter().cloned().collect();
                if exp != got {
                    let fmt =
                        |s: &BTreeSet<LostAccess>| s.iter().map(show_access).collect::<Vec<_>>().join("; ");
                    let missing: BTreeSet<LostAccess> = exp.difference(&got).cloned().collect();
                    let extra: BTreeSet<LostAccess> = got.difference(&exp).cloned().collect();
                    return Ok(mismatch(
                        format!("lost exactly {} access(es)", exp.len()),
                        format!(
                            "{} (missing: {}; unexpected: {})",
                            got.len(),
                            fmt(&missing),
                            fmt(&extra)
                        ),
                    ));
                }
            }
            if let Some(r) = &e.expect_removed {
                if let Some(n) = r.assignments
                    && n != sim.removed_assignments.len()
                {
                    return Ok(mismatch(
                        format!("{n} removed assignments"),
                        sim.removed_assignments.len(),
                    ));
                }
                if let Some(n) = r.delegations
                    && n != sim.removed_delegations.len()
                {
                    return Ok(mismatch(
                        format!("{n} removed delegations"),
                        sim.removed_delegations.len(),
                    ));
                }
            }
            Ok(Ok(()))
        }
        "consent_status" | "consent_check" | "consent_events" => run_consent_query(b, key, body),
        // --- §10 suppliers ---
        "scope_delegations" => {
            let (q, e): (Query, ScopeDelegationsExpect) = split_step(key, body)?;
            let Answer::ScopeDelegations(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            let show3 = |(c, s, r): &(String, String, String)| format!("{c} → {s}: {r}");
            let got: BTreeSet<(String, String, String)> = a
                .delegations
                .into_iter()
                .map(|d| (d.consumer, d.supplier, d.resource))
                .collect();
            let exp: BTreeSet<(String, String, String)> = e
                .expect
                .into_iter()
                .map(|d| (d.consumer, d.supplier, d.resource))
                .collect();
            Ok(if got == exp {
                Ok(())
            } else {
                let fmt = |s: &BTreeSet<(String, String, String)>| {
                    format!("[{}]", s.iter().map(show3).collect::<Vec<_>>().join("; "))
                };
                mismatch(format!("scope delegations exactly {}", fmt(&exp)), fmt(&got))
            })
        }
        "suppliers" => {
            let (q, e): (Query, ExpectIds) = split_step(key, body)?;
            let Answer::Suppliers(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            exact_ids("suppliers", &a.suppliers, e.expect)
        }
        "consumers" => {
            let (q, e): (Query, ExpectIds) = split_step(key, body)?;
            let Answer::Consumers(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            exact_ids("consumers", &a.consumers, e.expect)
        }
        other => Err(Error::invalid(format!("unknown step `{other}`"))),
    }
}

// ----------------------------------------------------------------------------------
// Consent steps (domain.md §9)

/// A field that may be absent (not compared) or `null` (asserts there is none).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One expected scope delegation of a `scope_delegations` step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeDelegationSpec {
    consumer: String,
    supplier: String,
    resource: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentStatusExpect {
    expect: Option<String>,
    #[serde(default, deserialize_with = "present")]
    accepted_by: Option<Value>,
    acceptor_entitled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentCheckExpect {
    expect: Option<bool>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentEntryExpect {
    event: String,
    #[serde(default, deserialize_with = "present")]
    by: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    at: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentEventsExpect {
    expect: Option<Vec<ConsentEntryExpect>>,
}

/// An optional id expectation (`null` = none) against an answer.
fn expected_id(field: &str, want: &Value) -> Result<Option<String>> {
    match want {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(Error::invalid(format!("`{field}` is an id or null, got {other}"))),
    }
}

fn show_opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "none".to_string())
}

fn run_consent_query(b: &mut dyn Backend, key: &str, body: Value) -> Result<StepResult> {
    match key {
        "consent_status" => {
            let (q, e): (Query, ConsentStatusExpect) = split_step(key, body)?;
            let want = match &e.expect {
                Some(x) => Some(
                    crate::consent::Status::parse(x)
                        .ok_or_else(|| Error::invalid(format!("`expect` is not a consent status: `{x}`")))?,
                ),
                None => None,
            };
            let Answer::ConsentStatus(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            if let Some(want) = want
                && a.status != want.as_str()
            {
                return Ok(mismatch(want.as_str(), &a.status));
            }
            if let Some(v) = &e.accepted_by {
                let want = expected_id("accepted_by", v)?;
                if want != a.accepted_by {
                    return Ok(mismatch(
                        format!("accepted_by: {}", show_opt(&want)),
                        format!("accepted_by: {}", show_opt(&a.accepted_by)),
                    ));
                }
            }
            if let Some(ent) = e.acceptor_entitled
                && ent != a.acceptor_entitled
            {
                return Ok(mismatch(
                    format!("acceptor_entitled: {ent}"),
                    format!("acceptor_entitled: {}", a.acceptor_entitled),
                ));
            }
            Ok(Ok(()))
        }
        "consent_check" => {
            let (q, e): (Query, ConsentCheckExpect) = split_step(key, body)?;
            if e.expect != Some(false) && e.reason.is_some() {
                return Err(Error::invalid("`reason` goes only with `expect: false`"));
            }
            if let Some(r) = &e.reason
                && !["not_found", "not_authorized", "conflict"].contains(&r.as_str())
            {
                return Err(Error::invalid(format!(
                    "`reason` is `not_found`, `not_authorized` or `conflict`, got `{r}`"
                )));
            }
            let Answer::ConsentCheck(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            if let Some(want) = e.expect
                && a.allowed != want
            {
                return Ok(mismatch(want, format!("{} ({})", a.allowed, show_opt(&a.reason))));
            }
            if let Some(r) = &e.reason
                && a.reason.as_deref() != Some(r.as_str())
            {
                return Ok(mismatch(
                    format!("reason {r}"),
                    format!("reason {}", show_opt(&a.reason)),
                ));
            }
            Ok(Ok(()))
        }
        _ => {
            let (q, e): (Query, ConsentEventsExpect) = split_step(key, body)?;
            let Answer::ConsentEvents(a) = b.query(&q)? else {
                return Err(wrong_answer(&q));
            };
            let expect = e.expect.unwrap_or_default();
            let show = |evs: &[query::ConsentEventEntry]| {
                evs.iter()
                    .map(|x| format!("{} by {} at {}", x.event, show_opt(&x.by), show_opt(&x.at)))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            if a.events.len() != expect.len() {
                return Ok(mismatch(
                    format!("{} event(s)", expect.len()),
                    format!("{}: {}", a.events.len(), show(&a.events)),
                ));
            }
            for (i, (want, got)) in expect.iter().zip(&a.events).enumerate() {
                let n = i + 1;
                crate::consent::Status::parse(&want.event).ok_or_else(|| {
                    Error::invalid(format!("event {n}: `{}` is not a consent event", want.event))
                })?;
                if want.event != got.event {
                    return Ok(mismatch(format!("event {n}: {}", want.event), show(&a.events)));
                }
                if let Some(v) = &want.by {
                    let by = expected_id("by", v)?;
                    if by != got.by {
                        return Ok(mismatch(
                            format!("event {n} ({}) by {}", want.event, show_opt(&by)),
                            format!("by {}", show_opt(&got.by)),
                        ));
                    }
                }
                if let Some(v) = &want.at {
                    let parse = |s: &str| {
                        chrono::DateTime::parse_from_rfc3339(s).map_err(|e| {
                            Error::invalid(format!("event {n}: `at` `{s}` is not RFC 3339: {e}"))
                        })
                    };
                    let same = match (v, &got.at) {
                        (Value::Null, None) => true,
                        (Value::String(w), Some(g)) => parse(w)? == parse(g)?,
                        (Value::Null | Value::String(_), _) => false,
                        (other, _) => {
                            return Err(Error::invalid(format!(
                                "event {n}: `at` is an RFC 3339 time or null, got {other}"
                            )));
                        }
                    };
                    if !same {
                        return Ok(mismatch(
                            format!("event {n} ({}) at {v}", want.event),
                            format!("at {}", show_opt(&got.at)),
                        ));
                    }
                }
            }
            Ok(Ok(()))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeDelegationsExpect {
    /// Absent only in a step that expects an error.
    #[serde(default)]
    expect: Vec<ScopeDelegationSpec>,
}

fn show_access(a: &LostAccess) -> String {
    match (&a.package, &a.resource, &a.action) {
        (Some(p), _, _) => format!("{} for {}: {p}", a.subject, a.party),
        (None, Some(r), Some(act)) => format!("{} for {}: {r}/{act}", a.subject, a.party),
        _ => format!("{} for {}: ?", a.subject, a.party),
    }
}

fn compare_bool(expect: &Value, got: bool) -> StepResult {
    match expect {
        Value::Bool(b) if *b == got => Ok(()),
        Value::Bool(b) => mismatch(b, got),
        other => mismatch("expect: true or false", other),
    }
}
