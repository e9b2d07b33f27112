//! Writes to the world's global state while an older version is still held, as the
//! store's ring and every pinned reader hold one: the cost of one `instance` event
//! against how many instances the world already has, and of one system-user request
//! against how many requests there are. With persistent maps and the requests' index
//! both stay flat; a plain map was copied whole on the first change of every version
//! (about 80 ms per write at 100 000 instances, `BENCHMARKS.md`), and a new request was
//! compared with every request.
//!
//! Run: `cargo bench --bench state` (`DELEGRAPH_STATE_SIZES=0,100000,1000000` to choose
//! the sizes).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use delegraph::event::Event;
use delegraph::mutate;
use delegraph::world::World;

fn ev(v: serde_json::Value) -> Event {
    Event::from_json(v).unwrap_or_else(|e| {
        eprintln!("state bench: bad event: {e}");
        std::process::exit(1)
    })
}

fn apply(w: &mut World, e: &Event) {
    if let Err(err) = mutate::apply(w, e) {
        eprintln!("state bench: refused {}: {err}", e.name());
        std::process::exit(1);
    }
}

fn instance(i: usize) -> Event {
    ev(serde_json::json!({"instance": {
        "id": format!("50000000/{i:08x}-0000-4000-8000-000000000000"),
        "resource": "app_bench_form",
        "party": "org"
    }}))
}

fn world(instances: usize) -> World {
    let mut w = World::new();
    for e in [
        serde_json::json!({"party": {"id": "org", "kind": "organisation", "org_no": "910000001", "party_id": 50000000}}),
        serde_json::json!({"resource": {"id": "app_bench_form", "owner": "bench"}}),
    ] {
        apply(&mut w, &ev(e));
    }
    let batch: Vec<Event> = (0..instances).map(instance).collect();
    if let Err(err) = mutate::apply_batch(&mut w, &batch) {
        eprintln!("state bench: refused the instances: {err}");
        std::process::exit(1);
    }
    w
}

fn request(i: usize) -> Event {
    ev(serde_json::json!({"system_user_request": {
        "id": format!("req-{i}"),
        "system": "sys",
        "party": "org",
        "kind": "standard",
        "system_user": format!("su-{i}"),
        "packages": ["lonn"],
        "external_ref": format!("ref-{i}")
    }}))
}

/// A world with `n` pending system-user requests of one system for one party (each with
/// its own reference, so none is a duplicate of another).
fn requests_world(n: usize) -> World {
    let mut w = World::new();
    for e in [
        serde_json::json!({"party": {"id": "vendor", "kind": "organisation", "unit_type": "AS"}}),
        serde_json::json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}}),
        serde_json::json!({"system": {"id": "sys", "vendor": "vendor", "packages": ["lonn"]}}),
    ] {
        apply(&mut w, &ev(e));
    }
    let batch: Vec<Event> = (0..n).map(request).collect();
    if let Err(err) = mutate::apply_batch(&mut w, &batch) {
        eprintln!("state bench: refused the requests: {err}");
        std::process::exit(1);
    }
    w
}

fn sizes() -> Vec<usize> {
    std::env::var("DELEGRAPH_STATE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 100_000])
}

fn writes(c: &mut Criterion) {
    let mut g = c.benchmark_group("global-state");
    g.sample_size(20);
    for n in sizes() {
        let mut w = world(n);
        let mut i = n;
        g.bench_function(BenchmarkId::new("instance-write-beside-a-held-version", n), |b| {
            b.iter(|| {
                let held = w.clone();
                i += 1;
                apply(&mut w, &instance(i));
                held
            })
        });
        let mut w = requests_world(n);
        let mut i = n;
        g.bench_function(
            BenchmarkId::new("system-user-request-beside-a-held-version", n),
            |b| {
                b.iter(|| {
                    let held = w.clone();
                    i += 1;
                    apply(&mut w, &request(i));
                    held
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, writes);
criterion_main!(benches);
