//! The versioned store: published versions are immutable, a refused or failed batch
//! changes nothing, exact-token reads, and the store agrees with the plain `World` (the
//! reference engine) on random batches, across compactions.

use std::sync::Arc;

use delegraph::event::Event;
use delegraph::mutate;
use delegraph::partition::journal::MemoryJournal;
use delegraph::partition::{CommitError, RING, StaleRead, Store};
use delegraph::query::{self, Query};
use delegraph::world::World;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::prop::{Op, compare, concretize, config, op_strategy, setup_events, setup_reference};
use crate::reference::RefWorld;

fn ev(v: Value) -> Event {
    Event::from_json(v).unwrap()
}

fn store() -> Store {
    Store::new(World::new(), Arc::new(MemoryJournal::new()))
}

fn person(id: &str) -> Event {
    ev(json!({"party": {"id": id, "kind": "person"}}))
}

/// The `rights` answer of `subject` for `party` on `w`, as JSON.
fn rights(w: &World, subject: &str, party: &str) -> Value {
    let q = Query::parse("rights", json!({"subject": subject, "party": party}))
        .unwrap()
        .unwrap();
    query::evaluate(w, &q).unwrap().body().unwrap()
}

fn setup_org(s: &Store) {
    s.commit(&[
        ev(json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}})),
        person("anna"),
        person("bo"),
    ])
    .unwrap();
}

/// Runs `ops` through the store (one batch each, compacting now and then, keeping a
/// pinned version) and through a plain world; both must agree on every outcome and,
/// against the reference model, on every answer, and the pinned version must still
/// answer as it did.
/// Applies `ops` to a store of `parts` graph parts and to the plain world, comparing each
/// answer with the reference; every `compact_every` batches folds the version `lag`
/// batches old, so the install carries the later batches onto the new base. Returns how
/// many folds were installed.
fn run_case(ops: &[Op], compact_every: usize, lag: usize, parts: usize) -> Result<usize, String> {
    let setup = setup_events();
    let s = Store::new(World::with_partitions(parts), Arc::new(MemoryJournal::new()));
    let mut plain = World::new();
    let mut r = RefWorld::new();
    for e in &setup {
        s.commit(std::slice::from_ref(e))
            .map_err(|e| format!("setup refused: {e}"))?;
        mutate::apply(&mut plain, e).map_err(|e| format!("setup refused: {e}"))?;
    }
    setup_reference(&mut r, &setup);
    let mut pinned = None;
    let mut recent = std::collections::VecDeque::new();
    let mut installed = 0;
    for (i, op) in ops.iter().enumerate() {
        let e = concretize(op, &r);
        let got_store = s
            .commit(std::slice::from_ref(&e))
            .map(|_| ())
            .map_err(|e| match e {
                CommitError::Refused(e) => Some(e.code),
                _ => None,
            });
        let got_plain = mutate::apply_batch(&mut plain, std::slice::from_ref(&e))
            .map(|_| ())
            .map_err(|e| Some(e.code));
        if got_store != got_plain {
            return Err(format!(
                "event {i} {e:?}: store {got_store:?}, plain world {got_plain:?}"
            ));
        }
        let _ = r.apply(&e);
        let v = s.pin();
        compare(&v.world, &r).map_err(|m| format!("store after event {i}: {m}"))?;
        compare(&plain, &r).map_err(|m| format!("plain world after event {i}: {m}"))?;
        if i == ops.len() / 2 {
            pinned = Some((v.clone(), r.clone()));
        }
        recent.push_back(v);
        if recent.len() > lag + 1 {
            recent.pop_front();
        }
        if compact_every > 0
            && i % compact_every == compact_every - 1
            && let Some(old) = recent.front().filter(|_| recent.len() == lag + 1)
        {
            // Fold an older version while later batches are pending on top of it.
            installed += usize::from(s.compact(old));
        }
    }
    if let Some((v, then)) = pinned {
        compare(&v.world, &then).map_err(|m| format!("pinned version changed: {m}"))?;
    }
    // A last batch publishes the pending state, with every install in it.
    if let Some(op) = ops.last() {
        let e = concretize(op, &r);
        let _ = s.commit(std::slice::from_ref(&e));
        let _ = r.apply(&e);
        compare(&s.pin().world, &r).map_err(|m| format!("store at the end: {m}"))?;
    }
    Ok(installed)
}

proptest! {
    #![proptest_config(config(150))]

    /// The store (a base plus persistent deltas, compacted now and then, from versions
    /// up to 4 batches old as a background fold is) answers as the plain world does, and
    /// a pinned version never changes.
    #[test]
    fn store_agrees_with_the_plain_world(
        ops in proptest::collection::vec(op_strategy(), 1..40),
        compact_every in 0usize..6,
        lag in 0usize..5,
        parts in 1usize..3,
    ) {
        if let Err(m) = run_case(&ops, compact_every, lag, parts) {
            prop_assert!(false, "{}", m);
        }
    }
}

/// The folds of older versions in [`run_case`] do install (the property above would
/// otherwise test nothing of the install).
#[test]
fn folds_of_older_versions_install() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let ops = proptest::collection::vec(op_strategy(), 20..40);
    let mut installed = 0;
    for _ in 0..30 {
        let case = ops.new_tree(&mut runner).unwrap().current();
        installed += run_case(&case, 2, 1, 1).unwrap();
    }
    assert!(installed > 10, "only {installed} folds installed");
}

#[test]
fn at_token_reads_exactly_that_version() {
    let s = store();
    setup_org(&s);
    let t_before = s.visible();
    let t_grant = s
        .commit(&[ev(
            json!({"grant": {"from": "org", "to": "anna", "package": "skattegrunnlag"}}),
        )])
        .unwrap()
        .token;
    s.commit(&[ev(
        json!({"revoke": {"from": "org", "to": "anna", "package": "skattegrunnlag"}}),
    )])
    .unwrap();
    let at = |t: u64| s.read_at(t, |w| rights(w, "anna", "org")).unwrap();
    let (granted, t) = at(t_grant);
    assert_eq!(t, t_grant);
    assert!(granted.to_string().contains("skattegrunnlag"), "{granted}");
    let (before, _) = at(t_before);
    assert!(!before.to_string().contains("skattegrunnlag"), "{before}");
    let (now, _) = s.read(|w| rights(w, "anna", "org"));
    assert!(!now.to_string().contains("skattegrunnlag"), "{now}");
    // A token not reached yet, and one the ring no longer keeps.
    assert!(matches!(
        s.read_at(s.visible() + 5, |_| ()),
        Err(StaleRead::Ahead { .. })
    ));
    for i in 0..RING {
        s.commit(&[person(&format!("p{i}"))]).unwrap();
    }
    assert!(matches!(s.read_at(t_grant, |_| ()), Err(StaleRead::Gone { .. })));
}

/// A version evicted from the ring is freed once nobody holds it (by the store's
/// janitor thread, or by a writer when its queue is full), also after the store is
/// dropped with the janitor still holding some: the store leaks no version.
#[test]
fn evicted_versions_are_freed_and_none_outlive_the_store() {
    let s = store();
    setup_org(&s);
    let early = Arc::downgrade(&s.pin());
    for i in 0..RING + 2 {
        s.commit(&[person(&format!("p{i}"))]).unwrap();
    }
    // The janitor drops what it was given within a turn of a millisecond; a loaded
    // machine may take longer, so wait (this asserts the drop, not its speed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while early.upgrade().is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        early.upgrade().is_none(),
        "a version evicted from the ring is still held"
    );
    let late = Arc::downgrade(&s.pin());
    for i in 0..RING + 2 {
        s.commit(&[person(&format!("q{i}"))]).unwrap();
    }
    drop(s);
    assert!(late.upgrade().is_none(), "a version outlived its store");
}

#[test]
fn a_panic_inside_an_apply_leaves_the_published_version_unchanged() {
    let s = store();
    setup_org(&s);
    let before = s.pin();
    let answer = s.read(|w| rights(w, "anna", "org")).0;
    s.fail_next_apply();
    let r = s.commit(&[ev(
        json!({"grant": {"from": "org", "to": "anna", "package": "skattegrunnlag"}}),
    )]);
    assert!(matches!(r, Err(CommitError::Panicked)), "{r:?}");
    let after = s.pin();
    assert_eq!(after.token, before.token);
    assert_eq!(s.read(|w| rights(w, "anna", "org")).0, answer);
    // The next batch applies on the unchanged state, not on the panicked copy.
    s.commit(&[person("cy")]).unwrap();
    assert_eq!(s.read(|w| rights(w, "anna", "org")).0, answer);
    assert_eq!(s.read(|w| w.graph.party_count()).0, 4);
}

#[test]
fn a_refused_batch_changes_nothing() {
    let s = store();
    setup_org(&s);
    let before = s.pin();
    let r = s.commit(&[
        person("dora"),
        ev(json!({"grant": {"from": "org", "to": "nobody", "package": "lonn"}})),
    ]);
    assert!(matches!(r, Err(CommitError::Refused(_))), "{r:?}");
    assert_eq!(s.visible(), before.token);
    s.commit(&[person("dora")]).unwrap();
}

/// A simulation held open on its pinned version (test pause) does not stop reads or
/// writes over HTTP; the pinned version still answers as it did after 10 000 later
/// commits, and the simulation answers with its pinned token.
#[test]
fn a_held_simulation_blocks_no_reader_or_writer() {
    let (server, _) = crate::http::start(2, delegraph::api::auth::Auth::Disabled);
    let post = |path: &str, body: Value| {
        crate::http::request(
            &server,
            "POST",
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
            None,
        )
    };
    let r = post(
        "/v1/events",
        json!([
            {"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}},
            {"party": {"id": "anna", "kind": "person"}},
            {"grant": {"from": "org", "to": "anna", "package": "skattegrunnlag"}},
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let pinned = server.store.pin();
    let pinned_rights = rights(&pinned.world, "anna", "org");
    server.store.set_pause(true);
    let url = server.url();
    let sim = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut res = agent
            .post(format!("{url}/v1/simulate"))
            .content_type("application/json")
            .send(
                json!({"event": {"revoke": {"from": "org", "to": "anna", "package": "skattegrunnlag"}}})
                    .to_string(),
            )
            .unwrap();
        let token: Option<u64> = res
            .headers()
            .get("delegraph-token")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (
            res.status().as_u16(),
            token,
            res.body_mut().read_to_string().unwrap(),
        )
    });
    // Once the simulation is held on its version, read and write meanwhile.
    while server.store.paused() == 0 {
        assert!(!sim.is_finished(), "the simulation answered while paused");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let w = post("/v1/events", json!([{"party": {"id": "bo", "kind": "person"}}]));
    assert_eq!(w.status, 200, "{}", w.text);
    let read = post("/v1/rights", json!({"subject": "anna", "party": "org"}));
    assert_eq!(read.status, 200, "{}", read.text);
    assert!(read.token >= w.token, "the read sees the write");
    // 10 000 later commits; the pinned version answers as before.
    for i in 0..10_000 {
        let e = if i % 2 == 0 {
            ev(json!({"revoke": {"from": "org", "to": "anna", "package": "skattegrunnlag"}}))
        } else {
            ev(json!({"grant": {"from": "org", "to": "anna", "package": "skattegrunnlag"}}))
        };
        server.store.commit(&[e]).unwrap();
    }
    assert!(server.store.visible() >= pinned.token + 10_000);
    assert_eq!(rights(&pinned.world, "anna", "org"), pinned_rights);
    assert!(!sim.is_finished(), "still held");
    server.store.set_pause(false);
    let (status, token, body) = sim.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        token,
        Some(pinned.token),
        "the simulation read its pinned version"
    );
    server.stop();
}

/// A journal that fails after it queued a batch: the writer is told the outcome is
/// unknown (read before retrying), not that nothing changed; readiness then fails, later
/// writes are refused, reads go on, and the metric `delegraph_log_position` stays at
/// the last durable record.
#[test]
fn a_failed_append_answers_outcome_unknown_and_fails_readiness() {
    use crate::http::{assert_problem, post_json, request};
    let (server, journal) = crate::http::start(2, delegraph::api::auth::Auth::Disabled);
    let r = post_json(
        &server,
        "/v1/events",
        &json!([{"party": {"id": "anna", "kind": "person"}}]),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let durable = r.token.unwrap();
    let ready = request(&server, "GET", "/readyz", None, None, None);
    assert_eq!(ready.status, 200, "{}", ready.text);
    journal.set_losing(true);
    let r = post_json(
        &server,
        "/v1/events",
        &json!([{"party": {"id": "bo", "kind": "person"}}]),
        None,
    );
    assert_problem(&r, 503, "outcome_unknown");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("unknown") && detail.contains("read"), "{detail}");
    // Not published: readers never see a state the journal may not have.
    assert_eq!(server.store.visible(), durable);
    let ready = request(&server, "GET", "/readyz", None, None, None);
    assert_problem(&ready, 503, "unavailable");
    assert!(ready.text.contains("restarts"), "{}", ready.text);
    // Later writes are refused (nothing changed), even once the journal works again.
    journal.set_losing(false);
    let r = post_json(
        &server,
        "/v1/events",
        &json!([{"party": {"id": "cy", "kind": "person"}}]),
        None,
    );
    assert_problem(&r, 503, "unavailable");
    let read = post_json(
        &server,
        "/v1/rights",
        &json!({"subject": "anna", "party": "anna"}),
        None,
    );
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.token, Some(durable));
    let m = request(&server, "GET", "/metrics", None, None, None);
    assert!(
        m.text
            .lines()
            .any(|l| l == format!("delegraph_log_position {durable}")),
        "{}",
        m.text
    );
    server.stop();
}

/// The ids among `p{i}` that live in partition `part` of `n`.
fn ids_in(part: usize, n: usize, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("p{i}"))
        .filter(|id| delegraph::graph::partition_of(id, n) == part)
        .take(count)
        .collect()
}

/// Drives `writes` grants into partition 0 of a four-part world through `submit`, and
/// after each one checks every part's delta in the published version against the bound.
fn drive_one_partition(s: &Store, bound: usize, submit: &mut dyn FnMut(Vec<Event>)) {
    let ids = ids_in(0, 4, 61);
    let (org, people) = ids.split_first().unwrap();
    submit(vec![ev(
        json!({"party": {"id": org, "kind": "organisation", "unit_type": "AS"}}),
    )]);
    let mut worst = 0;
    for (i, p) in people.iter().enumerate() {
        submit(vec![person(p)]);
        submit(vec![ev(
            json!({"grant": {"from": org, "to": p, "package": "skattegrunnlag"}}),
        )]);
        if i % 3 == 0 {
            submit(vec![ev(
                json!({"revoke": {"from": org, "to": p, "package": "skattegrunnlag"}}),
            )]);
        }
        let deltas = s.partition_deltas();
        assert_eq!(deltas.len(), 4);
        for (part, d) in deltas.iter().enumerate() {
            assert!(
                *d <= bound,
                "after write {i}: partition {part} holds {d} delta entries, bound {bound}"
            );
        }
        worst = worst.max(deltas[0]);
    }
    // The writes did go to partition 0, and it was compacted along the way.
    assert!(worst > 0);
    assert!(s.compactions()[0] > 0, "{:?}", s.compactions());
    assert_eq!(&s.compactions()[1..], &[0, 0, 0]);
    // Compaction changed no answer.
    for (i, p) in people.iter().enumerate() {
        let (r, _) = s.read(|w| rights(w, p, org));
        assert_eq!(r.to_string().contains("skattegrunnlag"), i % 3 != 0, "{p}: {r}");
    }
}

/// Item 5 of issue 16: many writes into one partition, and no published version has a
/// partition whose delta passes the bound (compactions in the background, or before a
/// publish when they fall behind).
#[test]
fn every_partition_delta_stays_below_the_bound() {
    let s = Store::new(World::with_partitions(4), Arc::new(MemoryJournal::new()));
    let bound = 24;
    s.set_delta_bound(bound);
    assert_eq!(s.delta_bound(), Some(bound));
    drive_one_partition(&s, bound, &mut |events| {
        s.commit(&events).unwrap();
    });
}

/// Without a set bound, a part's delta may grow to an eighth of its base when that is
/// more than the default: a national world's part (seconds per fold) is not folded every
/// 50 000 changes. A small world keeps the default, and a set bound holds for every part
/// whatever its size; `/metrics` reports each part's bound.
#[test]
fn the_delta_bound_grows_with_a_large_partitions_base() {
    use delegraph::partition::{BASE_SHARE, DELTA_BOUND};
    let mut big = World::with_partitions(2);
    let people = 2 * BASE_SHARE * DELTA_BOUND + 40_000;
    for i in 0..people {
        mutate::apply(&mut big, &person(&format!("p{i}"))).unwrap();
    }
    let s = Store::new(big, Arc::new(MemoryJournal::new()));
    assert_eq!(s.delta_bound(), None);
    let bounds = s.partition_bounds();
    let expected: Vec<usize> = (0..2)
        .map(|i| s.read(|w| w.graph.part_base_len(i)).0 / BASE_SHARE)
        .collect();
    assert_eq!(bounds, expected);
    assert!(bounds.iter().all(|&b| b > DELTA_BOUND), "{bounds:?}");
    assert_eq!(bounds.iter().sum::<usize>(), people / BASE_SHARE);
    // A write into a part keeps its bound (the base it is measured on has not changed).
    s.commit(&[person("newcomer")]).unwrap();
    assert_eq!(s.partition_bounds(), bounds);
    let (all, by_writer) = (s.compactions(), s.compactions_by_writer());
    let text = delegraph::api::metrics::partition_gauges(&s.partition_deltas(), &all, &by_writer, &bounds);
    assert!(
        text.lines()
            .any(|l| l == format!("delegraph_partition_delta_bound{{partition=\"1\"}} {}", bounds[1])),
        "{text}"
    );

    assert_eq!(
        store().partition_bounds(),
        vec![DELTA_BOUND],
        "a small world keeps the default"
    );
    s.set_delta_bound(3_000);
    assert_eq!(
        s.partition_bounds(),
        vec![3_000, 3_000],
        "a set bound holds for every part"
    );
}

/// One batch that by itself pushes a part's delta past the bound leaves no time for a
/// background fold: the sequencer folds that part before it publishes, and `/metrics`
/// counts it among the compactions a writer waited for (an operator's sign that the
/// background folds fall behind).
#[test]
fn a_batch_past_the_bound_is_folded_by_its_writer_and_counted() {
    let s = Store::new(World::with_partitions(4), Arc::new(MemoryJournal::new()));
    s.set_delta_bound(8);
    let batch: Vec<Event> = ids_in(0, 4, 20).iter().map(|id| person(id)).collect();
    s.commit(&batch).unwrap();
    assert!(s.partition_deltas()[0] <= 8, "{:?}", s.partition_deltas());
    let (all, by_writer) = (s.compactions(), s.compactions_by_writer());
    assert!(by_writer[0] >= 1, "{by_writer:?}");
    assert!(all[0] >= by_writer[0], "{all:?} {by_writer:?}");
    assert_eq!(&by_writer[1..], &[0, 0, 0]);
    let text = delegraph::api::metrics::partition_gauges(
        &s.partition_deltas(),
        &all,
        &by_writer,
        &s.partition_bounds(),
    );
    assert!(
        text.lines().any(|l| l
            == format!(
                "delegraph_partition_writer_compactions_total{{partition=\"0\"}} {}",
                by_writer[0]
            )),
        "{text}"
    );
    // Every person is there, folded or not.
    for id in ids_in(0, 4, 20) {
        assert!(s.read(|w| w.graph.party_node(&id).is_some()).0, "{id}");
    }
}

/// The same through the partition actors, which compact their own parts.
#[test]
fn partition_actors_keep_their_deltas_below_the_bound() {
    use delegraph::partition::Partitions;
    actix_web::rt::System::new().block_on(async {
        let s = Arc::new(Store::new(
            World::with_partitions(4),
            Arc::new(MemoryJournal::new()),
        ));
        let bound = 24;
        s.set_delta_bound(bound);
        let parts = Partitions::start(4, s.clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Event>>(1);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let store = s.clone();
        // The checks block, so they run on a thread of their own; each write is sent
        // here and submitted through the partitions.
        let driver = std::thread::spawn(move || {
            drive_one_partition(&store, bound, &mut |events| {
                tx.blocking_send(events).unwrap();
                done_rx.recv().unwrap();
            });
        });
        while let Some(events) = rx.recv().await {
            parts.submit(events).await.unwrap();
            done_tx.send(()).unwrap();
        }
        driver.join().unwrap();
        parts.stop();
    });
}

/// Connections made and removed again leave holes in the delta's edge indices, which a
/// compaction fills with stand-ins to keep every later edge at its index: two rounds of
/// compaction over hundreds of holes at one organisation succeed and answer as before;
/// grants revoked again (an edge given a new weight in place) fold in as well.
#[test]
fn compaction_over_many_removed_connections_keeps_every_answer() {
    let mut w = World::new();
    let mut setup = vec![ev(
        json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}}),
    )];
    setup.extend((0..800).map(|i| person(&format!("p{i}"))));
    mutate::apply_batch(&mut w, &setup).unwrap();
    let grant =
        |i: usize| ev(json!({"grant": {"from": "org", "to": format!("p{i}"), "package": "skattegrunnlag"}}));
    let revoke =
        |i: usize| ev(json!({"revoke": {"from": "org", "to": format!("p{i}"), "package": "skattegrunnlag"}}));
    let remove =
        |i: usize| ev(json!({"remove_connection": {"from": "org", "to": format!("p{i}"), "cascade": true}}));
    for round in 0..2 {
        // Share the base, so that changes go to a delta.
        let keep = w.clone();
        for i in round * 400..(round + 1) * 400 {
            mutate::apply_batch(&mut w, &[grant(i)]).unwrap();
            // Every fifth connection stays, every tenth with its grant revoked; the
            // others leave a hole before the next one.
            match i % 10 {
                4 => {}
                9 => mutate::apply_batch(&mut w, &[revoke(i)]).map(|_| ()).unwrap(),
                _ => mutate::apply_batch(&mut w, &[remove(i)]).map(|_| ()).unwrap(),
            }
        }
        let before: Vec<Value> = (0..800).map(|i| rights(&w, &format!("p{i}"), "org")).collect();
        let edges = w.graph.edge_count();
        assert_eq!(edges, 80 * (round + 1), "round {round}");
        let compacted = w
            .graph
            .compacted()
            .unwrap_or_else(|| panic!("round {round}: compaction failed"));
        w.graph = compacted;
        assert_eq!(w.graph.edge_count(), edges, "round {round}");
        for (i, want) in before.iter().enumerate() {
            assert_eq!(&rights(&w, &format!("p{i}"), "org"), want, "round {round}, p{i}");
        }
        drop(keep);
    }
}

/// The scheduling class of each thread of this process named `name` (Linux: field 41
/// of `/proc/self/task/*/stat`; 0 normal, 3 batch, 5 idle).
#[cfg(target_os = "linux")]
fn classes_of(name: &str) -> Vec<u32> {
    class_and_nice_of(name).into_iter().map(|(c, _)| c).collect()
}

/// (scheduling class, nice value) — fields 41 and 19 of `/proc/self/task/*/stat`, read
/// together — of each thread of this process named `name` (Linux).
#[cfg(target_os = "linux")]
fn class_and_nice_of(name: &str) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The fields after the name (which may hold spaces) start after its `)`, with
        // field 3.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<i64>().ok());
        if let (Some(class), Some(nice)) = (field(41), field(19)) {
            out.push((class as u32, nice as i32));
        }
    }
    out
}

/// Each write wakes the sequencer, the log's flusher (or the publisher) and now and
/// then the janitor: as normal threads their wake-ups preempted the HTTP workers
/// mid-request, and readers beside a write burst saw it at p99.9 (BENCHMARKS.md). They
/// run in the batch class: a share of the CPU, no wake-up preemption.
#[cfg(target_os = "linux")]
#[test]
fn the_write_pipeline_threads_do_not_preempt_readers_on_waking() {
    let memory = store();
    setup_org(&memory);
    let dir = tempfile::tempdir().unwrap();
    let durable = delegraph::persist::Durable::open(dir.path()).unwrap();
    durable.apply_batch(&[person("p")]).unwrap();
    // Other tests start stores meanwhile: a thread seen before its first line ran is
    // still normal, so look again until each is batch (a wait, not a timing).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for name in ["sequencer", "publisher", "janitor", "wal-flusher"] {
        let mut classes = classes_of(name);
        // (A thread not yet started still has its parent's name: wait for it too.)
        while (classes.is_empty() || classes.iter().any(|&c| c != 3)) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            classes = classes_of(name);
        }
        assert!(!classes.is_empty(), "no thread named {name}");
        assert!(
            classes.iter().all(|&c| c == 3),
            "{name} threads in classes {classes:?}, not all batch (3)"
        );
    }
    // The janitor keeps its lower nice value in the batch class (it lowers it first).
    let lowered = delegraph::background::lowered(delegraph::background::process_nice());
    let janitors = class_and_nice_of("janitor");
    assert!(
        janitors
            .iter()
            .filter(|(c, _)| *c == 3)
            .all(|&(_, n)| n == lowered),
        "janitors (class, nice) {janitors:?}: a batch one not at nice {lowered}"
    );
    drop(durable);
    drop(memory);
}
