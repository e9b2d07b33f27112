//! The command line as a newcomer meets it (issue 12): the demo that runs with no
//! command, `delegraph query` on the bundled snapshot and against a server, completions,
//! `--help`, `catalog` lists, the scenario runner's flags, the documented JSON Lines
//! form, `a2-impact` on unknown ids, error messages that name what is wrong, and the
//! structured `/v1/explain`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use delegraph::api::auth::Auth;
use delegraph::api::{ServerConfig, spawn};
use delegraph::partition::journal::MemoryJournal;
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `delegraph ARGS` from the repository root.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_delegraph"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("delegraph runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The demo's blocks: each `$ delegraph query ...` line with the output under it (up to
/// the blank line that ends it).
fn demo_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(cmd) = l.strip_prefix("$ delegraph ") {
            let mut block = String::new();
            while let Some(b) = lines.next_if(|b| !b.is_empty()) {
                block.push_str(b);
                block.push('\n');
            }
            out.push((cmd.to_string(), block));
        }
    }
    out
}

#[test]
fn the_demo_prints_what_delegraph_query_answers() {
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("parties") && text.contains("edges in"), "{text}");
    assert!(text.contains("decisions/s") && text.contains("p99"), "{text}");
    let blocks = demo_blocks(&text);
    let explains: Vec<_> = blocks
        .iter()
        .filter(|(c, _)| c.starts_with("query explain"))
        .collect();
    let simulates: Vec<_> = blocks
        .iter()
        .filter(|(c, _)| c.starts_with("query simulate"))
        .collect();
    assert!(explains.len() >= 3, "{text}");
    assert_eq!(simulates.len(), 1, "{text}");
    // Yes answers through a key role, a client delegation and a sub-unit, and a no.
    let all: String = blocks.iter().map(|(_, b)| b.as_str()).collect();
    for want in ["(key role)", "client delegation", "sub-unit", "missing link:"] {
        assert!(all.contains(want), "the demo shows no `{want}`:\n{text}");
    }
    assert!(simulates[0].1.contains("removed delegation"), "{text}");
    for (cmd, block) in &blocks {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        let q = run(&args);
        assert!(
            q.status.code() == Some(0) || q.status.code() == Some(1),
            "{cmd}: {}",
            stderr(&q)
        );
        assert_eq!(
            &stdout(&q),
            block,
            "`delegraph {cmd}` answers otherwise than the demo"
        );
    }
}

const SAMPLE: &str = "graph-snapshots/sample.snap";

/// One question of each kind on the bundled world, with its exit status.
fn questions() -> Vec<(Vec<&'static str>, i32)> {
    vec![
        (
            vec![
                "check",
                "--subject",
                "kari",
                "--party",
                "fjord",
                "--package",
                "regnskapsforer-med-signeringsrettighet",
            ],
            0,
        ),
        (
            vec![
                "check",
                "--subject",
                "ola",
                "--party",
                "fjord",
                "--package",
                "skattegrunnlag",
            ],
            1,
        ),
        (
            vec![
                "check",
                "--subject",
                "kari",
                "--party",
                "fjord",
                "--resource",
                "ske-mva-melding",
                "--action",
                "read",
            ],
            0,
        ),
        (vec!["rights", "--subject", "ola", "--party", "fjord"], 0),
        (vec!["authorized-parties", "--subject", "per"], 0),
        (
            vec!["holders", "--party", "fjord", "--package", "skattegrunnlag"],
            0,
        ),
        (
            vec![
                "can-delegate",
                "--by",
                "per",
                "--party",
                "fjord",
                "--package",
                "skattegrunnlag",
            ],
            0,
        ),
        (
            vec![
                "can-delegate",
                "--by",
                "ola",
                "--party",
                "fjord",
                "--package",
                "regnskapsforer-lonn",
            ],
            1,
        ),
        (
            vec![
                "explain",
                "--subject",
                "per",
                "--party",
                "fjord-bergen",
                "--package",
                "skattegrunnlag",
            ],
            0,
        ),
        (
            vec![
                "explain",
                "--subject",
                "kari",
                "--party",
                "fjord",
                "--resource",
                "ske-mva-melding",
                "--action",
                "write",
            ],
            0,
        ),
        (
            vec![
                "simulate",
                "unregister_role",
                "--from",
                "fjord",
                "--to",
                "tind-regnskap",
                "--role",
                "regnskapsforer",
            ],
            0,
        ),
        (
            vec![
                "simulate",
                "--event",
                r#"{"remove_agent": {"facilitator": "tind-regnskap", "agent": "ola", "cascade": true}}"#,
            ],
            0,
        ),
    ]
}

fn query(args: &[&str], extra: &[&str]) -> Output {
    let mut all = vec!["query"];
    all.extend_from_slice(args);
    all.extend_from_slice(extra);
    run(&all)
}

#[test]
fn each_query_kind_answers_the_same_from_the_snapshot_and_from_a_server() {
    let (world, _) = delegraph::persist::snapshot::load(&repo().join(SAMPLE), &mut |_| {}).unwrap();
    let config = ServerConfig {
        auth: Auth::Disabled,
        workers: Some(2),
        ..ServerConfig::default()
    };
    let server = spawn(
        config,
        "127.0.0.1:0",
        world,
        std::sync::Arc::new(MemoryJournal::new()),
    )
    .unwrap();
    let url = server.url();
    for (args, status) in questions() {
        let local = query(&args, &[]);
        assert_eq!(
            local.status.code(),
            Some(status),
            "{args:?}: {}{}",
            stdout(&local),
            stderr(&local)
        );
        assert!(!stdout(&local).is_empty());
        let remote = query(&args, &["--server", &url]);
        assert_eq!(
            remote.status.code(),
            Some(status),
            "{args:?} over HTTP: {}",
            stderr(&remote)
        );
        assert_eq!(
            stdout(&local),
            stdout(&remote),
            "{args:?}: snapshot and server differ"
        );
        // --json: one JSON document, the same from both.
        let lj = query(&args, &["--json"]);
        let rj = query(&args, &["--json", "--server", &url]);
        let doc: Value = serde_json::from_str(&stdout(&lj)).expect("one JSON document");
        assert_eq!(
            doc,
            serde_json::from_str::<Value>(&stdout(&rj)).unwrap(),
            "{args:?}"
        );
        assert_eq!(lj.status.code(), Some(status));
    }
    // The simulation changed nothing on the server.
    let again = query(&questions()[0].0, &["--server", &url]);
    assert_eq!(again.status.code(), Some(0));
}

#[test]
fn an_unknown_id_is_a_one_line_error_naming_it_with_status_2() {
    let config = ServerConfig {
        auth: Auth::Disabled,
        workers: Some(1),
        ..ServerConfig::default()
    };
    let (world, _) = delegraph::persist::snapshot::load(&repo().join(SAMPLE), &mut |_| {}).unwrap();
    let server = spawn(
        config,
        "127.0.0.1:0",
        world,
        std::sync::Arc::new(MemoryJournal::new()),
    )
    .unwrap();
    let url = server.url();
    for extra in [vec![], vec!["--server", url.as_str()]] {
        for (args, id) in [
            (
                vec![
                    "check",
                    "--subject",
                    "nosuch",
                    "--party",
                    "fjord",
                    "--package",
                    "skattegrunnlag",
                ],
                "nosuch",
            ),
            (
                vec!["holders", "--party", "fjord", "--package", "skattegrunlag"],
                "skattegrunlag",
            ),
            (
                vec![
                    "explain",
                    "--subject",
                    "per",
                    "--party",
                    "fjord",
                    "--resource",
                    "nores",
                    "--action",
                    "read",
                ],
                "nores",
            ),
        ] {
            let o = query(&args, &extra);
            assert_eq!(o.status.code(), Some(2), "{args:?} {extra:?}");
            let err = stderr(&o);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(err.contains(&format!("`{id}`")), "{err}");
            assert!(stdout(&o).is_empty());
        }
    }
    // A misspelt package gets a suggestion.
    let o = query(
        &["holders", "--party", "fjord", "--package", "skattegrunlag"],
        &[],
    );
    assert!(
        stderr(&o).contains("did you mean `skattegrunnlag`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        for word in ["delegraph", "query", "a2-impact", "snapshot", "completions"] {
            assert!(text.contains(word), "{shell} completions lack `{word}`");
        }
    }
    assert!(!run(&["completions", "tcsh"]).status.success());
}

#[test]
fn help_lists_every_command_with_an_example() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    let commands: Vec<&str> = text
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 10, "{text}");
    for c in commands {
        assert!(
            text.contains(&format!("  delegraph {c} ")),
            "`delegraph --help` has no example of `{c}`"
        );
    }
}

#[test]
fn catalog_lists_packages_roles_and_filters_by_area() {
    let all = stdout(&run(&["catalog", "--packages"]));
    assert!(all.contains("skattegrunnlag") && all.contains("regnskapsforer-lonn"));
    let roles = stdout(&run(&["catalog", "--roles"]));
    assert!(roles.contains("daglig-leder") && roles.contains("regnskapsforer"));
    assert!(!roles.contains("skattegrunnlag"));
    let tax = stdout(&run(&["catalog", "--area", "skatt"]));
    assert!(tax.contains("skattegrunnlag"));
    assert!(!tax.contains("regnskapsforer-lonn") || all.lines().count() > tax.lines().count());
    assert!(all.lines().count() > tax.lines().count());
    let filtered = stdout(&run(&["catalog", "--roles", "revisor"]));
    assert!(
        filtered.contains("revisor") && !filtered.contains("daglig-leder"),
        "{filtered}"
    );
}

fn scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const WORLD: &str = "steps:\n  - party: {id: bergen, kind: organisation, unit_type: AS}\n  - party: {id: kari, kind: person}\n  - register_role: {from: bergen, to: kari, role: daglig-leder}\n";

#[test]
fn the_runner_fails_a_step_without_expect_and_has_verbose_fail_fast_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let no_expect = scenario(
        dir.path(),
        "no-expect.yaml",
        &format!("{WORLD}  - rights: {{subject: kari, party: bergen}}\n"),
    );
    let o = run(&["test", no_expect.to_str().unwrap()]);
    assert!(!o.status.success());
    let text = stdout(&o);
    assert!(
        text.contains("1 failed") && text.contains("skattegrunnlag"),
        "{text}"
    );

    let failing = scenario(
        dir.path(),
        "failing.yaml",
        &format!(
            "{WORLD}  - check: {{subject: kari, party: bergen, package: skattegrunnlag, expect: false}}\n  - check: {{subject: kari, party: bergen, role: styreleder, expect: true}}\n"
        ),
    );
    let passing = scenario(
        dir.path(),
        "passing.yaml",
        &format!(
            "{WORLD}  - check: {{subject: kari, party: bergen, package: skattegrunnlag, expect: true}}\n"
        ),
    );
    let (f, p) = (failing.to_str().unwrap(), passing.to_str().unwrap());
    let all = stdout(&run(&["test", f, p]));
    assert!(all.contains("7 passed, 2 failed"), "{all}");
    let fast = stdout(&run(&["test", "--fail-fast", f, p]));
    assert!(fast.contains("3 passed, 1 failed"), "{fast}");
    let verbose = stdout(&run(&["test", "--verbose", p]));
    assert!(verbose.contains("step 4 (check): ok"), "{verbose}");
    assert!(!stdout(&run(&["test", p])).contains(": ok"));
    let junit = dir.path().join("junit.xml");
    run(&["test", "--junit", junit.to_str().unwrap(), f, p]);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuites tests=\"9\" failures=\"2\">"), "{xml}");
    assert_eq!(xml.matches("<testcase ").count(), 9);
    assert_eq!(xml.matches("<failure ").count(), 2);
}

/// The indented lines after `<!-- example:jsonl -->` in the README.
fn readme_jsonl() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let (_, after) = readme
        .split_once("<!-- example:jsonl -->")
        .expect("README has the JSON Lines example");
    after
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect()
}

#[test]
fn the_readme_json_lines_example_imports_and_the_help_shows_the_same_form() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("example.jsonl");
    let example = readme_jsonl();
    assert!(
        example.lines().any(|l| l.starts_with('#')),
        "the example shows a comment line"
    );
    assert!(example.lines().filter(|l| l.starts_with('{')).count() >= 3);
    std::fs::write(&src, &example).unwrap();
    let out = dir.path().join("example.snap");
    let o = run(&["import", src.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The same file is a world for `query` (the one reader of `load`).
    let q = run(&[
        "query",
        "check",
        "--snapshot",
        src.to_str().unwrap(),
        "--subject",
        "kari",
        "--party",
        "bergen",
        "--package",
        "skattegrunnlag",
    ]);
    assert_eq!(q.status.code(), Some(0), "{}", stderr(&q));
    for help in [vec!["import", "--help"], vec!["snapshot", "save", "--help"]] {
        let text = stdout(&run(&help));
        assert!(!text.contains("{\"event\""), "{help:?} shows the wrapped form");
        assert!(text.contains("{\"grant\": {...}}"), "{help:?}: {text}");
    }
    // Progress bars stay quiet when piped.
    assert!(
        !stderr(&o).contains('\r') && !stderr(&o).contains('\u{1b}'),
        "{:?}",
        stderr(&o)
    );
}

#[test]
fn load_reads_comment_lines_like_import() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.jsonl");
    std::fs::write(
        &p,
        "# a comment\n\n{\"party\": {\"id\": \"a\", \"kind\": \"person\"}}\n  # indented comment\n{\"party\": {\"id\": \"b\", \"kind\": \"organisation\", \"unit_type\": \"AS\"}}\n",
    )
    .unwrap();
    let w = delegraph::load::load_world(&p).unwrap();
    assert_eq!(w.graph.party_count(), 2);
    std::fs::write(&p, "# ok\n{\"party\": {\"id\": \"a\", \"kind\": \"alien\"}}\n").unwrap();
    let e = delegraph::load::load_world(&p).unwrap_err();
    assert!(e.message.starts_with("line 2:"), "{}", e.message);
}

#[test]
fn a2_impact_refuses_unknown_ids_and_has_a_report_on_the_sample() {
    for (flag, id) in [("--resource", "nosuch-resource"), ("--owner", "nosuch-owner")] {
        let o = run(&["a2-impact", SAMPLE, flag, id]);
        assert!(!o.status.success(), "{flag} {id}");
        assert!(stderr(&o).contains(&format!("`{id}`")), "{}", stderr(&o));
    }
    let o = run(&["a2-impact", SAMPLE, "--summary"]);
    assert!(o.status.success());
    // Piped: the timings, and no progress bar.
    let err = stderr(&o);
    assert!(
        err.contains("loaded in") && !err.contains('\r') && !err.contains('\u{1b}'),
        "{err:?}"
    );
    let text = stdout(&o);
    let lost: usize = text
        .split("cut-off: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a count of lost permits");
    assert!(lost > 0, "{text}");
}

#[test]
fn a_wrong_value_names_its_field_and_near_misses_get_a_suggestion() {
    use delegraph::event::Event;
    let e = Event::from_json(json!({"party": {"id": "x", "kind": "alien"}})).unwrap_err();
    assert!(
        e.message.contains("field `kind`") && e.message.contains("`alien`"),
        "{}",
        e.message
    );
    assert!(e.message.contains("person"), "{}", e.message);
    let e = Event::from_json(json!({"regster_role": {"from": "a", "to": "b", "role": "x"}})).unwrap_err();
    assert!(
        e.message.contains("did you mean `register_role`"),
        "{}",
        e.message
    );
    let e = Event::from_json(json!({"event": {"party": {"id": "x"}}})).unwrap_err();
    assert!(!e.message.contains("did you mean"), "{}", e.message);
    let mut w = delegraph::world::World::new();
    for ev in [
        json!({"party": {"id": "o", "kind": "organisation", "unit_type": "AS"}}),
        json!({"party": {"id": "p", "kind": "person"}}),
    ] {
        delegraph::mutate::apply(&mut w, &Event::from_json(ev).unwrap()).unwrap();
    }
    let role =
        Event::from_json(json!({"register_role": {"from": "o", "to": "p", "role": "dagligleder"}})).unwrap();
    let e = delegraph::mutate::apply(&mut w, &role).unwrap_err();
    assert!(e.message.contains("did you mean `daglig-leder`"), "{}", e.message);
    let grant =
        Event::from_json(json!({"grant": {"from": "o", "to": "p", "package": "skattegrunlag"}})).unwrap();
    let e = delegraph::mutate::apply(&mut w, &grant).unwrap_err();
    assert!(
        e.message.contains("did you mean `skattegrunnlag`"),
        "{}",
        e.message
    );
}

#[test]
fn explain_over_http_answers_resources_with_structured_paths() {
    let (world, _) = delegraph::persist::snapshot::load(&repo().join(SAMPLE), &mut |_| {}).unwrap();
    let server = spawn(
        ServerConfig {
            auth: Auth::Disabled,
            workers: Some(1),
            ..ServerConfig::default()
        },
        "127.0.0.1:0",
        world,
        std::sync::Arc::new(MemoryJournal::new()),
    )
    .unwrap();
    let r = crate::http::post_json(
        &server,
        "/v1/explain",
        &json!({"subject": "kari", "party": "fjord", "resource": "ske-mva-melding", "action": "write"}),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["allowed"], json!(true));
    let edges = r.body["chains"][0]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{}", r.text);
    assert_eq!(edges[0]["from"], json!("fjord"));
    assert_eq!(edges[0]["to"], json!("tind-regnskap"));
    assert_eq!(edges[0]["role"], json!("regnskapsforer"));
    assert_eq!(edges[1]["to"], json!("kari"));
    assert_eq!(edges[1]["reason"], json!("key_role"));
    assert!(r.body["paths"][0].as_str().unwrap().contains("key role"));
    // A client delegation names its facilitator in `via`.
    let r = crate::http::post_json(
        &server,
        "/v1/explain",
        &json!({"subject": "ola", "party": "fjord", "package": "regnskapsforer-lonn"}),
        None,
    );
    let edges = r.body["chains"][0]["edges"].as_array().unwrap();
    assert!(
        edges
            .iter()
            .any(|e| e["via"] == json!("tind-regnskap") && e["reason"] == json!("client_delegation"))
    );
    // A no names the missing link.
    let r = crate::http::post_json(
        &server,
        "/v1/explain",
        &json!({"subject": "ola", "party": "fjord", "resource": "ske-mva-melding", "action": "write"}),
        None,
    );
    assert_eq!(r.body["allowed"], json!(false));
    assert!(
        r.body["missing"].as_str().unwrap().contains("ske-mva-melding"),
        "{}",
        r.text
    );
    let doc = crate::http::request(&server, "GET", "/openapi.json", None, None, None);
    let schema = &doc.body["components"]["schemas"]["ExplainAnswer"]["properties"];
    assert!(schema.get("chains").is_some(), "{}", doc.text);
    let params = doc.text.contains("\"/v1/explain\"");
    assert!(params);
}

#[test]
fn a2_impact_over_http_refuses_unknown_ids_too() {
    let (world, _) = delegraph::persist::snapshot::load(&repo().join(SAMPLE), &mut |_| {}).unwrap();
    let server = spawn(
        ServerConfig {
            auth: Auth::Disabled,
            workers: Some(1),
            ..ServerConfig::default()
        },
        "127.0.0.1:0",
        world,
        std::sync::Arc::new(MemoryJournal::new()),
    )
    .unwrap();
    let r = crate::http::post_json(
        &server,
        "/v1/a2-impact",
        &json!({"resource": "nosuch-resource"}),
        None,
    );
    crate::http::assert_problem(&r, 422, "unknown_resource");
    assert!(r.text.contains("nosuch-resource"), "{}", r.text);
    let r = crate::http::post_json(&server, "/v1/a2-impact", &json!({"owner": "nosuch-owner"}), None);
    crate::http::assert_problem(&r, 400, "invalid_input");
    let r = crate::http::post_json(&server, "/v1/a2-impact", &json!({"owner": "ssb"}), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["lost"].as_u64().unwrap() > 0, "{}", r.text);
}

/// Output piped into a reader that has gone (`delegraph … | head`) ends the command
/// quietly, as Unix tools do: no panic message about a broken pipe.
#[test]
fn output_into_a_closed_pipe_ends_without_a_panic() {
    let sample = repo().join("graph-snapshots/sample.snap");
    let mut child = Command::new(env!("CARGO_BIN_EXE_delegraph"))
        .args(["snapshot", "load", "--examples", "50"])
        .arg(&sample)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the command writes anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}
