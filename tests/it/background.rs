//! Background work over HTTP (issue 15 item 3): `simulate` within its budget (refused
//! past it, changing nothing), its counts, first `limit` entries and `truncated`; one
//! `a2-impact` at a time; the checkpoint route; the low-priority pool; and
//! `loadtest --during` against a small server.

use std::sync::Arc;
use std::time::Duration;

use delegraph::api::limits::Limits;
use delegraph::api::{RunningServer, ServerConfig, spawn};
use delegraph::event::{Empty, Event};
use delegraph::partition::journal::MemoryJournal;
use delegraph::query::{self, SimulateQuery};
use delegraph::world::World;
use serde_json::{Value, json};

fn small_world() -> World {
    use delegraph::generate::{Params, Scale, generate_vec};
    let mut p = Params::for_scale(Scale::Small);
    p.names = false;
    let mut w = World::new();
    for ev in generate_vec(&p) {
        delegraph::mutate::apply(&mut w, &ev).unwrap();
    }
    w
}

fn start_with(world: World, limits: Limits) -> RunningServer {
    let config = ServerConfig {
        limits,
        workers: Some(2),
        ..ServerConfig::default()
    };
    spawn(config, "127.0.0.1:0", world, Arc::new(MemoryJournal::new())).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// (status, Retry-After, body)
fn post(url: &str, body: &Value) -> (u16, Option<String>, Value) {
    let mut res = agent()
        .post(url)
        .content_type("application/json")
        .send(body.to_string())
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = res.body_mut().read_to_string().unwrap();
    (
        res.status().as_u16(),
        retry,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn get(url: &str) -> (u16, Option<String>, Value) {
    let mut res = agent().get(url).call().unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let text = res.body_mut().read_to_string().unwrap();
    (
        res.status().as_u16(),
        retry,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn retire() -> Value {
    json!({"event": {"retire_a2_roles": {}}})
}

#[test]
fn simulate_past_its_budget_is_refused_with_limit_exceeded_and_changes_nothing() {
    let world = crate::a2impact::world_before_cutoff_of("a2-cutoff.yaml");
    // Within the default budget the same simulation answers.
    let ok = start_with(world.clone(), Limits::default());
    let (status, _, answer) = post(&format!("{}/v1/simulate", ok.url()), &retire());
    assert_eq!(status, 200, "{answer}");
    assert!(answer["lost_count"].as_u64().unwrap() > 0);
    ok.stop();

    for limits in [
        // Memory: the event's changes alone are more than one entry.
        Limits {
            simulate_max_entries: 1,
            ..Limits::default()
        },
        // Time: a budget that is over before the first subject.
        Limits {
            simulate_time: Duration::ZERO,
            ..Limits::default()
        },
    ] {
        let server = start_with(world.clone(), limits);
        let before = server.store.pin();
        let (status, _, problem) = post(&format!("{}/v1/simulate", server.url()), &retire());
        assert_eq!(status, 413, "{problem}");
        assert_eq!(problem["code"], "limit_exceeded");
        assert_eq!(problem["type"], "urn:delegraph:problem:limit_exceeded");
        // Nothing changed: the same version, the roles still there.
        let after = server.store.pin();
        assert_eq!(after.token, before.token);
        assert!(!after.world.a2_retired);
        assert!(Arc::ptr_eq(&before, &after));
        server.stop();
    }
}

#[test]
fn simulate_answers_counts_the_first_limit_entries_and_truncated() {
    let world = small_world();
    let full = query::simulate(
        &mut world.clone(),
        &SimulateQuery {
            event: retire()["event"].clone(),
            limit: None,
        },
    )
    .unwrap();
    assert!(full.lost.len() > 2, "the scenario loses several accesses");
    assert_eq!(full.lost_count, full.lost.len());
    assert!(!full.truncated);
    let server = start_with(world, Limits::default());
    let url = format!("{}/v1/simulate", server.url());
    let (status, _, a) = post(&url, &json!({"event": {"retire_a2_roles": {}}, "limit": 2}));
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["lost_count"].as_u64().unwrap() as usize, full.lost.len());
    assert_eq!(a["truncated"], true);
    let listed: Vec<query::LostAccess> = serde_json::from_value(a["lost"].clone()).unwrap();
    // The first two of the sorted full answer.
    assert_eq!(listed, full.lost[..2].to_vec());
    assert_eq!(
        a["removed_assignments_count"].as_u64().unwrap() as usize,
        full.removed_assignments.len()
    );
    // A limit that covers everything: the whole answer, not truncated.
    assert!(full.lost.len() <= 100_000);
    let (_, _, all) = post(&url, &json!({"event": {"retire_a2_roles": {}}, "limit": 100000}));
    assert_eq!(all["truncated"], false);
    let listed: Vec<query::LostAccess> = serde_json::from_value(all["lost"].clone()).unwrap();
    assert_eq!(listed, full.lost);
    // A limit above the most an answer lists is refused.
    let (status, _, p) = post(&url, &json!({"event": {"retire_a2_roles": {}}, "limit": 100001}));
    assert_eq!((status, p["code"].as_str()), (400, Some("invalid_input")));
    server.stop();
}

#[test]
fn the_streaming_simulate_agrees_with_a_naive_before_and_after_on_a_generated_world() {
    // The naive way: every subject's accesses in the world before and in the world
    // after, compared whole.
    let w = small_world();
    let mut after = w.clone();
    delegraph::mutate::apply(&mut after, &Event::RetireA2Roles(Empty {})).unwrap();
    let mut expected = std::collections::BTreeSet::new();
    for (x, _) in w.graph.parties() {
        let b = delegraph::mutate::accesses_of(&w, x, None);
        let a = delegraph::mutate::accesses_of(&after, x, None);
        expected.extend(b.difference(&a).cloned());
    }
    let sim = delegraph::mutate::simulate(&mut w.clone(), &Event::RetireA2Roles(Empty {})).unwrap();
    assert!(!expected.is_empty());
    assert_eq!(sim.lost, expected);
}

#[test]
fn a_second_a2_impact_while_one_runs_is_refused_busy_with_retry_after() {
    let world = crate::a2impact::world_before_cutoff_of("a2-cutoff.yaml");
    let someone = world
        .graph
        .parties()
        .next()
        .map(|(n, _)| world.graph.ext_id(n).to_string())
        .unwrap();
    let server = start_with(world, Limits::default());
    let url = server.url();
    server.store.set_pause(true);
    let first = {
        let url = url.clone();
        std::thread::spawn(move || get(&format!("{url}/v1/a2-impact?limit=5")))
    };
    while server.store.paused() == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, retry, problem) = get(&format!("{url}/v1/a2-impact"));
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["code"], "busy");
    assert_eq!(retry.as_deref(), Some("1"));
    // Readers are not held up meanwhile.
    let (status, _, _) = post(
        &format!("{url}/v1/authorized_parties"),
        &json!({"subject": someone}),
    );
    assert_eq!(status, 200);
    server.store.set_pause(false);
    let (status, _, report) = first.join().unwrap();
    assert_eq!(status, 200, "{report}");
    assert!(report["lost"].as_u64().unwrap() > 0);
    // Once it has finished, the next one runs.
    let (status, _, _) = get(&format!("{url}/v1/a2-impact"));
    assert_eq!(status, 200);
    server.stop();
}

#[test]
fn the_checkpoint_route_answers_and_without_a_log_writes_nothing() {
    let server = start_with(World::new(), Limits::default());
    let (status, _, a) = post(&format!("{}/v1/admin/checkpoint", server.url()), &json!({}));
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["written"], false);
    server.stop();
}

#[test]
fn background_jobs_run_on_low_priority_threads() {
    let pool = delegraph::background::Pool::new(1);
    let (nice, idle) = actix_web::rt::System::new()
        .block_on(pool.run("test", || {
            (
                delegraph::background::current_nice(),
                delegraph::background::is_idle_class(),
            )
        }))
        .unwrap();
    if cfg!(target_os = "linux") {
        assert!(idle, "background jobs run in the SCHED_IDLE class");
        assert!(!delegraph::background::is_idle_class());
        // Below the process's own priority, also when the tests run under `nice`.
        let base = delegraph::background::process_nice();
        assert_eq!(nice, delegraph::background::lowered(base));
        if base < 19 {
            assert!(nice > base, "background nice {nice}, process nice {base}");
            // The calling thread keeps its own priority.
            assert_ne!(delegraph::background::current_nice(), nice);
        }
    }
}

/// Records the size of every write it is given.
struct Pieces(Vec<u8>, Vec<usize>);

impl std::io::Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        self.1.push(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_paced_writer_hands_on_every_byte_in_bounded_pieces_on_any_thread() {
    use delegraph::background::{PIECE, Paced, pace};
    use std::io::Write;
    let data: Vec<u8> = (0..3 * PIECE + 17).map(|i| (i * 7 % 251) as u8).collect();
    let write = |data: Vec<u8>| {
        let mut w = Paced(Pieces(Vec::new(), Vec::new()));
        for _ in 0..1000 {
            pace();
        }
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        w.into_inner()
    };
    // On a test thread (normal priority) and on a background job's thread.
    let here = write(data.clone());
    let pool = delegraph::background::Pool::new(1);
    let d = data.clone();
    let there = actix_web::rt::System::new()
        .block_on(pool.run("paced", move || write(d)))
        .unwrap();
    for Pieces(bytes, sizes) in [here, there] {
        assert_eq!(bytes, data);
        assert!(sizes.iter().all(|n| *n <= PIECE), "{sizes:?}");
        assert_eq!(sizes.len(), 4, "{sizes:?}");
    }
}

/// A load of `requests` of `mix` from 2 connections (at most 2 minutes), with `during`
/// alongside.
fn load_plan(
    server: &str,
    requests: u64,
    mix: &str,
    during: Option<delegraph::loadtest::During>,
) -> delegraph::loadtest::Plan {
    delegraph::loadtest::Plan {
        server: server.to_string(),
        token: None,
        requests,
        duration: Duration::from_secs(120),
        concurrency: 2,
        mix: delegraph::loadtest::Mix::parse(mix).unwrap(),
        batch_size: 1,
        seed: 1,
        during,
    }
}

#[test]
fn loadtest_during_simulate_reports_both_tables() {
    use delegraph::loadtest::{During, run};
    let world = small_world();
    let server = start_with(world.clone(), Limits::default());
    let plan = load_plan(&server.url(), 300, "check=1", Some(During::Simulate));
    let report = run(&world, &plan, &|_| {}).unwrap();
    assert_eq!(report.requests, 300);
    let text = delegraph::loadtest::to_text(&report);
    assert!(text.contains("during simulate"), "{text}");
    // The server's CPU over the load, read from its /metrics before and after.
    assert!(report.server_cpu_s.is_some_and(|s| s > 0.0), "{text}");
    assert!(text.contains("server CPU during the load"), "{text}");
    let during = report.during.expect("the background work's table");
    assert_eq!(during.work, During::Simulate);
    let kinds: Vec<&str> = during.kinds.iter().map(|k| k.kind).collect();
    assert!(kinds.contains(&"simulate regn"), "{kinds:?}");
    assert!(
        during.statuses.get(&200).is_some_and(|n| *n > 0),
        "{:?}",
        during.statuses
    );
    server.stop();
}

/// Runs 3 000 checks beside the write burst `work` on `server` (serving
/// [`firms_with_delegable_packages`]) and asserts what a user of the burst expects: no
/// check failed, the burst's grants and revokes each have their row with requests and
/// no error, and every answer of the burst was a 200 (a refused or lost write would show
/// as another status). Gives the report's text.
fn assert_burst_all_accepted(server: &RunningServer, work: delegraph::loadtest::During) -> String {
    let world = firms_with_delegable_packages();
    let plan = load_plan(&server.url(), 3_000, "check=1", Some(work));
    let report = delegraph::loadtest::run(&world, &plan, &|_| {}).unwrap();
    let text = delegraph::loadtest::to_text(&report);
    assert_eq!(report.errors, 0, "{text}");
    let during = report.during.expect("the burst's table");
    assert_eq!(during.work, work);
    for kind in ["write grant", "write revoke"] {
        let row = during.kinds.iter().find(|k| k.kind == kind);
        assert!(
            row.is_some_and(|k| k.requests > 0 && k.errors == 0),
            "{kind}: {text}"
        );
    }
    assert_eq!(
        during.statuses.keys().copied().collect::<Vec<_>>(),
        [200],
        "{text}"
    );
    text
}

/// `--during writes`: the burst's grants and revokes are sent and all accepted beside the
/// checks, and each kind has its row in the second table.
#[test]
fn loadtest_during_writes_reports_the_bursts_grants_and_revokes() {
    let server = start_with(firms_with_delegable_packages(), Limits::default());
    assert_burst_all_accepted(&server, delegraph::loadtest::During::Writes);
    server.stop();
}

/// `--during grants`: the burst grants to distinct pairs, so the graph's deltas grow;
/// with a small delta bound the partitions compact while it runs, and every grant and
/// revoke is still accepted (a grant refused as a duplicate or a revoke of nothing would
/// show as a 4xx), beside checks that all succeed.
#[test]
fn loadtest_during_grants_accumulates_distinct_grants_and_the_partitions_compact() {
    let server = start_with(firms_with_delegable_packages(), Limits::default());
    server.store.set_delta_bound(4);
    let text = assert_burst_all_accepted(&server, delegraph::loadtest::During::Grants);
    let compactions: u64 = server.store.compactions().iter().sum();
    assert!(compactions > 0, "no compaction beside the grants: {text}");
    server.stop();
}

/// Twenty firms, each of which gave `ulykke` to one employee (who may pass it on) and
/// something else to two more: a pool of writes for the load tester.
fn firms_with_delegable_packages() -> World {
    let mut events = Vec::new();
    for o in 0..20 {
        events.push(json!({"party": {"id": format!("o{o}"), "kind": "organisation", "unit_type": "AS"}}));
        for i in 0..3 {
            let package = if i == 0 { "ulykke" } else { "skattegrunnlag" };
            let p = format!("p{o}-{i}");
            events.push(json!({"party": {"id": p, "kind": "person"}}));
            events.push(json!({"grant": {"from": format!("o{o}"), "to": p, "package": package}}));
        }
    }
    let mut world = World::new();
    for e in events {
        delegraph::mutate::apply(&mut world, &Event::from_json(e).unwrap()).unwrap();
    }
    world
}

/// The load tester's writes (`--mix events=1`: a grant of `ulykke` by an actor, then its
/// revoke) are all accepted: no pair of its pool revokes the right another pair's actor
/// grants with. Here each of twenty firms gave `ulykke` to one employee (who may pass it
/// on) and something else to two more. (The pool once made an actor the receiver of a pair: that
/// pair's revoke took her right away, and every later grant she made was refused.)
#[test]
fn loadtest_writes_never_take_away_an_actors_right() {
    use delegraph::loadtest::run;
    let world = firms_with_delegable_packages();
    let server = start_with(world.clone(), Limits::default());
    let plan = load_plan(&server.url(), 2_000, "events=1", None);
    let report = run(&world, &plan, &|_| {}).unwrap();
    assert_eq!(report.requests, 2_000);
    assert_eq!(report.errors, 0, "{}", delegraph::loadtest::to_text(&report));
    // They were writes (an empty pool would send checks instead).
    let metrics = agent()
        .get(format!("{}/metrics", server.url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let batches: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("delegraph_store_batches_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(batches >= 2_000, "{batches} batches");
    server.stop();
}

/// The cores a thread of this process may run on (Linux `Cpus_allowed_list`, e.g. `0-1`
/// or `1`), by thread name.
#[cfg(target_os = "linux")]
fn thread_cores() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if let Some(l) = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) {
            out.push((name.trim().to_string(), l.trim().to_string()));
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn pinned_http_workers_keep_to_one_core_each_in_turn() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = ServerConfig {
        workers: Some(2),
        pin_workers: true,
        ..ServerConfig::default()
    };
    let server = spawn(
        config,
        "127.0.0.1:0",
        small_world(),
        Arc::new(MemoryJournal::new()),
    )
    .unwrap();
    let (status, _, _) = get(&format!("{}/healthz", server.url()));
    assert_eq!(status, 200);
    // Other tests' servers (not pinned) run in this process too: look for single cores.
    let single: std::collections::BTreeSet<String> = thread_cores()
        .into_iter()
        .filter(|(n, c)| n.starts_with("actix-rt") && !c.contains(['-', ',']))
        .map(|(_, c)| c)
        .collect();
    server.stop();
    // Two workers on two cores when there are two; on one core both share it.
    assert_eq!(single.len(), cores.min(2), "{single:?}");
}

/// `take_turns`: an HTTP worker that sleeps between requests never yields; one that
/// runs on from request to request (here: spins) yields once per turn of
/// `WORKER_TURN`, so threads queued behind it on its core get a turn before the tick.
#[cfg(target_os = "linux")]
#[test]
fn a_worker_that_never_sleeps_yields_once_per_turn_and_a_sleeping_one_never() {
    use delegraph::background::{WORKER_TURN, take_turns, turns_given};
    std::thread::spawn(|| {
        for _ in 0..5 {
            take_turns();
            std::thread::sleep(Duration::from_millis(1));
        }
        take_turns();
        assert_eq!(turns_given(), 0, "a thread that slept between requests yielded");
        // Ten "requests", each after a spin of one and a half turns without sleeping.
        for _ in 0..10 {
            let t = std::time::Instant::now();
            while t.elapsed() < WORKER_TURN * 3 / 2 {
                std::hint::spin_loop();
            }
            take_turns();
        }
        let given = turns_given();
        assert!((5..=10).contains(&given), "{given} turns given");
    })
    .join()
    .unwrap();
}
