//! Answers do not depend on the number of graph partitions P (issue 16): every step of
//! the shared and own scenarios answers the same under P = 1, 2, 8 and 64 in-process
//! (the answers themselves are compared, not only pass or fail); the property test
//! against the reference model holds under P = 2, 8 and 64 (P = 1 is `prop`); random
//! worlds built by the same batches under P = 1 and 8 answer every question alike; and
//! `delegraph serve --partitions P` answers `delegraph test --server` the same for
//! P = 1, 2, 8 and 64, and as `delegraph test --partitions P` does in-process.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use delegraph::event::Event;
use delegraph::mutate;
use delegraph::query::{self, Answer, Query};
use delegraph::scenario::{self, InProcess, Options, StepAnswer};
use delegraph::world::World;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::prop::{
    ACTIONS, HOLDER_PACKAGES, Op, PACKAGES, RESOURCES, SCOPES, all_parties, concretize, config, op_strategy,
    run_case_in, setup_events, setup_reference,
};
use crate::reference::RefWorld;

/// The partition counts every comparison covers.
const PS: [usize; 4] = [1, 2, 8, 64];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.yaml` files in `dir`, sorted (None when `dir` cannot be read).
pub(crate) fn yaml_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Some(files)
}

/// The own scenarios (`tests/scenarios`, `graph-snapshots`) and, when `../shared` is
/// beside the repository, the shared ones (`scenarios/` and `scenarios/consent/`).
fn scenario_files() -> Vec<PathBuf> {
    let mut files = yaml_in(&repo().join("tests/scenarios")).unwrap_or_default();
    files.extend(yaml_in(&repo().join("graph-snapshots")).unwrap_or_default());
    assert!(files.len() > 10, "too few own scenario files: {files:?}");
    match (
        yaml_in(&repo().join("../shared/scenarios")),
        yaml_in(&repo().join("../shared/scenarios/consent")),
    ) {
        (Some(shared), consent) => {
            assert!(!shared.is_empty(), "no scenario in ../shared/scenarios");
            files.extend(shared);
            files.extend(consent.unwrap_or_default());
        }
        (None, _) => {
            eprintln!("SKIPPED the shared scenarios: ../shared/scenarios is not beside the repository")
        }
    }
    files
}

/// Where two JSON values first differ: the path and both values there (cut short).
fn json_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    let short = |v: &Value| {
        let s = v.to_string();
        match s.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &s[..i]),
            None => s,
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                json_difference(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| json_difference(u, v, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("at {path}: {} against {}", short(a), short(b))),
    }
}

/// The first step whose answers differ, in words: file, step and where in its answers.
fn first_difference(a: &[Value], b: &[Value]) -> Option<String> {
    for (x, y) in a.iter().zip(b) {
        if let Some(d) = json_difference(x, y, "") {
            return Some(format!("{} step {} ({}): {d}", x["file"], x["step"], x["what"]));
        }
    }
    (a.len() != b.len()).then(|| format!("{} steps against {}", a.len(), b.len()))
}

fn as_json(answers: &[StepAnswer]) -> Vec<Value> {
    answers.iter().map(|a| serde_json::to_value(a).unwrap()).collect()
}

// ----------------------------------------------------------------------------------
// (a) The scenarios, in-process

#[test]
fn every_scenario_step_answers_the_same_under_1_2_8_and_64_partitions() {
    let files = scenario_files();
    let options = Options {
        record_answers: true,
        ..Options::default()
    };
    let mut steps = 0;
    let mut answers = 0;
    for f in &files {
        let runs: Vec<scenario::Report> = PS
            .iter()
            .map(|&p| scenario::run_file_with(&mut InProcess::new(p), f, options))
            .collect();
        for (p, r) in PS.iter().zip(&runs) {
            let lines: Vec<String> = r.failures.iter().map(|f| f.to_string()).collect();
            assert_eq!(r.failed, 0, "P={p}: failed steps:\n{}", lines.join("\n"));
            assert_eq!(r.answers.len(), r.passed, "P={p}: one answer per step");
        }
        let one = as_json(&runs[0].answers);
        for (p, r) in PS.iter().zip(&runs).skip(1) {
            if let Some(d) = first_difference(&one, &as_json(&r.answers)) {
                panic!("P=1 and P={p} answer differently: {d}");
            }
        }
        steps += runs[0].answers.len();
        answers += runs[0]
            .answers
            .iter()
            .flat_map(|a| &a.calls)
            .filter(|c| c.get("answer").is_some() || c.get("decision").is_some())
            .count();
    }
    eprintln!(
        "{} files, {steps} steps, {answers} answers compared under P = {PS:?}",
        files.len()
    );
    assert!(answers > 100, "too few query answers compared: {answers}");
}

// ----------------------------------------------------------------------------------
// (b) The property test against the reference model, and random worlds across P

proptest! {
    #![proptest_config(config(60))]

    /// `prop::engine_agrees_with_reference` (with its `simulate` candidates) on graphs
    /// of 2, 8 and 64 partitions.
    #[test]
    fn engine_agrees_with_reference_under_2_8_and_64_partitions(
        ops in proptest::collection::vec(op_strategy(), 1..40),
        sims in proptest::collection::vec(op_strategy(), 0..3),
    ) {
        for p in [2, 8, 64] {
            if let Err(m) = run_case_in(World::with_partitions(p), &ops, &sims) {
                prop_assert!(false, "P={}: {}", p, m);
            }
        }
    }
}

/// A query's answer, or its refusal (code and message).
type Asked = Result<Answer, (String, String)>;

fn ask(w: &mut World, name: &str, body: &Value) -> Asked {
    let q = Query::parse(name, body.clone())
        .expect("a known query")
        .expect("a well-formed query");
    query::evaluate_mut(w, &q).map_err(|e| (e.code.as_str().to_string(), e.message))
}

/// Every party and system user of the reference world, as subjects of questions.
fn subjects(r: &RefWorld) -> Vec<String> {
    all_parties()
        .into_iter()
        .map(str::to_string)
        .chain(r.system_users.keys().cloned())
        .collect()
}

/// Questions about every party after each batch: authorized parties and holders.
fn light_questions(r: &RefWorld) -> Vec<(&'static str, Value)> {
    let mut q = Vec::new();
    let subjects = subjects(r);
    for x in &subjects {
        q.push(("authorized_parties", json!({"subject": x})));
    }
    for f in all_parties() {
        for p in HOLDER_PACKAGES {
            q.push(("holders", json!({"party": f, "package": p})));
        }
    }
    q
}

/// Every question of the query vocabulary on the final world: rights, package and role
/// checks, explanations, the delegation check, resource permits (and an unknown
/// resource), every request, clients, suppliers, consumers, scope delegations and
/// consents, and what `simulate` says of the candidate events.
fn all_questions(r: &RefWorld, consents: &BTreeSet<String>, sims: &[Value]) -> Vec<(&'static str, Value)> {
    let mut q = light_questions(r);
    let subjects = subjects(r);
    for x in &subjects {
        for f in all_parties() {
            q.push(("rights", json!({"subject": x, "party": f})));
            q.push((
                "check",
                json!({"subject": x, "party": f, "role": "regnskapsforer"}),
            ));
            for p in HOLDER_PACKAGES {
                q.push(("check", json!({"subject": x, "party": f, "package": p})));
                q.push(("can_delegate", json!({"by": x, "party": f, "package": p})));
            }
            for p in &PACKAGES[..3] {
                q.push(("explain", json!({"subject": x, "party": f, "package": p})));
            }
            for res in RESOURCES {
                for a in ACTIONS {
                    q.push((
                        "check",
                        json!({"subject": x, "party": f, "resource": res, "action": a}),
                    ));
                }
            }
            q.push((
                "can_delegate",
                json!({"by": x, "party": f, "resource": RESOURCES[0], "action": "read"}),
            ));
        }
    }
    for id in r.requests.keys() {
        q.push(("request_status", json!({"request": id})));
    }
    for su in r.system_users.keys() {
        q.push(("clients", json!({"system_user": su})));
        q.push(("addable_clients", json!({"system_user": su})));
    }
    for o in all_parties() {
        q.push(("suppliers", json!({"consumer": o})));
        q.push(("consumers", json!({"supplier": o})));
        q.push(("scope_delegations", json!({"consumer": o})));
        q.push(("scope_delegations", json!({"supplier": o})));
    }
    for s in SCOPES {
        q.push(("scope_delegations", json!({"scope": s})));
    }
    for c in consents {
        q.push(("consent_status", json!({"consent": c})));
        q.push(("consent_events", json!({"consent": c})));
    }
    for e in sims {
        q.push(("simulate", json!({"event": e})));
    }
    q
}

/// Asks both worlds every question; the first that answers differently, in words.
fn compare_answers(
    w1: &mut World,
    w8: &mut World,
    questions: &[(&'static str, Value)],
) -> Result<usize, String> {
    for (name, body) in questions {
        let (a, b) = (ask(w1, name, body), ask(w8, name, body));
        if a != b {
            return Err(format!("{name} {body}:\n  P=1: {a:?}\n  P=8: {b:?}"));
        }
    }
    Ok(questions.len())
}

/// An applied batch's outcome, its removals in a fixed order (the log digest ignores
/// their order too), or its refusal.
fn outcome(w: &mut World, batch: &[Event]) -> Result<mutate::Outcome, (String, String)> {
    mutate::apply_batch(w, batch)
        .map(|mut o| {
            o.removed_assignments.sort();
            o.removed_delegations.sort();
            o
        })
        .map_err(|e| (e.code.as_str().to_string(), e.message))
}

/// The same random batches into a world of one partition and one of eight: every batch
/// must be taken or refused alike (with the same removals or error), and every question
/// answered alike, after each batch (authorized parties, holders) and at the end (all).
fn same_answers_under_1_and_8(ops: &[Op], cuts: &[usize], sims: &[Op]) -> Result<usize, String> {
    let setup = setup_events();
    let (mut w1, mut w8) = (World::with_partitions(1), World::with_partitions(8));
    mutate::apply_batch(&mut w1, &setup).map_err(|e| e.to_string())?;
    mutate::apply_batch(&mut w8, &setup).map_err(|e| e.to_string())?;
    let mut r = RefWorld::new();
    setup_reference(&mut r, &setup);
    // The reference only picks names that exist; the engines get the events in batches.
    let mut events = Vec::new();
    let mut consents = BTreeSet::new();
    for op in ops {
        let e = concretize(op, &r);
        let _ = r.apply(&e);
        let v = serde_json::to_value(&e).map_err(|e| e.to_string())?;
        if let Some(id) = v.pointer("/consent_request/id").and_then(Value::as_str) {
            consents.insert(id.to_string());
        }
        events.push(e);
    }
    let mut log: Vec<String> = Vec::new();
    let fail = |log: &[String], m: String| {
        format!("{m}\nbatches (JSON Lines, one batch a line):\n{}", log.join("\n"))
    };
    let mut asked = 0;
    let mut rest = &events[..];
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts.get(i).copied().unwrap_or(1).clamp(1, rest.len());
        i += 1;
        let (batch, more) = rest.split_at(n);
        rest = more;
        log.push(serde_json::to_string(batch).unwrap_or_default());
        let (o1, o8) = (outcome(&mut w1, batch), outcome(&mut w8, batch));
        if o1 != o8 {
            return Err(fail(
                &log,
                format!("the batch's outcome:\n  P=1: {o1:?}\n  P=8: {o8:?}"),
            ));
        }
        asked += compare_answers(&mut w1, &mut w8, &light_questions(&r)).map_err(|m| fail(&log, m))?;
    }
    let sims: Vec<Value> = sims
        .iter()
        .map(|op| serde_json::to_value(concretize(op, &r)).unwrap_or_default())
        .collect();
    asked +=
        compare_answers(&mut w1, &mut w8, &all_questions(&r, &consents, &sims)).map_err(|m| fail(&log, m))?;
    Ok(asked)
}

proptest! {
    #![proptest_config(config(150))]

    #[test]
    fn random_worlds_answer_the_same_under_1_and_8_partitions(
        ops in proptest::collection::vec(op_strategy(), 1..60),
        cuts in proptest::collection::vec(1usize..5, 60),
        sims in proptest::collection::vec(op_strategy(), 0..4),
    ) {
        if let Err(m) = same_answers_under_1_and_8(&ops, &cuts, &sims) {
            prop_assert!(false, "{}", m);
        }
    }
}

/// The comparison above asks many questions of interesting worlds, not of empty ones:
/// answers that differ could not hide behind refusals only.
#[test]
fn random_world_comparison_asks_many_questions_with_yes_answers() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let ops = proptest::collection::vec(op_strategy(), 40..60)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let asked = same_answers_under_1_and_8(&ops, &[3; 60], &[]).unwrap();
    assert!(asked > 5_000, "only {asked} questions asked");
    // The world those ops build has parties acting for others.
    let setup = setup_events();
    let mut w = World::new();
    mutate::apply_batch(&mut w, &setup).unwrap();
    let mut r = RefWorld::new();
    setup_reference(&mut r, &setup);
    for op in &ops {
        let e = concretize(op, &r);
        let _ = r.apply(&e);
        let _ = mutate::apply(&mut w, &e);
    }
    let acting: usize = all_parties()
        .into_iter()
        .map(
            |x| match ask(&mut w, "authorized_parties", &json!({"subject": x})) {
                Ok(Answer::AuthorizedParties(a)) => a.parties.iter().filter(|p| p.party != x).count(),
                _ => 0,
            },
        )
        .sum();
    assert!(acting >= 5, "only {acting} parties act for another");
}

// ----------------------------------------------------------------------------------
// (c) The HTTP runner: `delegraph serve --partitions P` and `delegraph test --server`

/// A `delegraph serve` child, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(partitions: usize) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_delegraph"))
            .args(["serve", "--dev-no-auth", "--allow-reset", "--bind", "127.0.0.1:0"])
            .args(["--partitions", &partitions.to_string()])
            .args(["--clock-interval-secs", "0", "--workers", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("delegraph serve starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        let url = loop {
            let Some(Ok(l)) = lines.next() else {
                let _ = child.kill();
                panic!("delegraph serve --partitions {partitions} ended before listening: {seen:#?}");
            };
            if let Some(rest) = l.strip_prefix("delegraph listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
            seen.push(l);
        };
        // Keep reading its stderr, so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `delegraph test ARGS --answers FILE FILES`: must pass; returns its answers.
fn cli_answers(args: &[&str], files: &[PathBuf], what: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("answers.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_delegraph"))
        .arg("test")
        .args(args)
        .arg("--answers")
        .arg(&out)
        .args(files)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{what}: delegraph test failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The answers without refusal messages (a server's message names the event's place in
/// its batch; the code is the contract).
fn codes_only(answers: &[Value]) -> Vec<Value> {
    let mut v = answers.to_vec();
    for a in &mut v {
        if let Some(calls) = a.get_mut("calls").and_then(Value::as_array_mut) {
            for c in calls {
                if let Some(e) = c.get_mut("error").and_then(Value::as_object_mut) {
                    e.remove("message");
                }
            }
        }
    }
    v
}

fn assert_same(a: &[Value], b: &[Value], what: &str) {
    if let Some(d) = first_difference(a, b) {
        panic!("{what}: answers differ: {d}");
    }
}

#[test]
fn the_http_runner_answers_the_same_under_1_2_8_and_64_partitions() {
    let files = scenario_files();
    let local = cli_answers(&["--partitions", "1"], &files, "in-process, P=1");
    assert!(local.len() > 100, "too few steps: {}", local.len());
    let local8 = cli_answers(&["--partitions", "8"], &files, "in-process, P=8");
    assert_same(&local, &local8, "delegraph test --partitions 1 and 8");
    let mut first: Option<Vec<Value>> = None;
    for p in PS {
        let server = Server::start(p);
        let remote = cli_answers(
            &["--server", &server.url],
            &files,
            &format!("serve --partitions {p}"),
        );
        drop(server);
        assert_same(
            &codes_only(&local),
            &codes_only(&remote),
            &format!("in-process and `serve --partitions {p}`"),
        );
        match &first {
            None => first = Some(remote),
            Some(one) => assert_same(one, &remote, &format!("`serve --partitions 1` and `{p}`")),
        }
    }
}

/// `--partitions` is an in-process option: with `--server` the server chooses.
#[test]
fn test_partitions_refuses_zero_and_a_server() {
    let f = repo().join("graph-snapshots/sample-scenario.yaml");
    for args in [
        vec!["--partitions", "0"],
        vec!["--partitions", "2", "--server", "http://127.0.0.1:9"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_delegraph"))
            .arg("test")
            .args(&args)
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--partitions"),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Party ids of every length around what the id maps keep inline (22 bytes), multibyte
/// ones included, are found after being added to a base, to a delta over a shared base
/// and after the delta is folded into a new base; a prefix or an extension of an id is
/// not, and a removed id is gone in every one.
#[test]
fn ids_short_and_long_are_found_in_base_delta_and_compacted_graph() {
    use delegraph::graph::{Graph, Party};
    use delegraph::model::PartyKind;

    let ids: Vec<String> = (1..=30)
        .map(|n| "p".repeat(n))
        .chain([
            "ø".repeat(11),
            "ø".repeat(12),
            "x-øæå-0123456789012345".to_string(),
        ])
        .collect();
    for p in PS {
        let mut g = Graph::with_partitions(p);
        let (first, later) = ids.split_at(ids.len() / 2);
        for id in first {
            g.add_party(Party::new(id, PartyKind::Person));
        }
        let base = g.clone();
        for id in later {
            g.add_party(Party::new(id, PartyKind::Person));
        }
        let gone = g
            .party_node(&ids[3])
            .unwrap_or_else(|| panic!("P={p}: `{}` missing", ids[3]));
        g.remove_node(gone);
        let compacted = g
            .compacted()
            .unwrap_or_else(|| panic!("P={p}: compaction failed"));
        for (what, graph) in [("delta", &g), ("compacted", &compacted)] {
            for (i, id) in ids.iter().enumerate() {
                let found = graph
                    .party_node(id)
                    .and_then(|n| graph.party(n))
                    .map(|x| x.id.to_string());
                let want = (i != 3).then(|| id.clone());
                assert_eq!(found, want, "P={p}, {what}: `{id}`");
            }
            assert_eq!(graph.party_node("q"), None, "P={p}, {what}");
            assert_eq!(graph.party_node(&"p".repeat(31)), None, "P={p}, {what}");
            assert_eq!(graph.party_node(&"ø".repeat(13)), None, "P={p}, {what}");
        }
        for id in first {
            assert!(base.party_node(id).is_some(), "P={p}, base: `{id}`");
        }
        for id in later {
            assert!(base.party_node(id).is_none(), "P={p}, base has later `{id}`");
        }
    }
}
