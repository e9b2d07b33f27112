//! What one background fold costs as the world grows: a snapshot loaded in P graph
//! partitions, a few thousand new persons added on a copy (so they land in the parts'
//! deltas, as the server's writes do), then each part folded into a new base
//! (`PartState::compacted`, what a partition actor's fold runs) and the result dropped.
//! Prints per part: the base's nodes and edges, the delta bound the server would use
//! (`partition::Store::part_bound` without `--delta-bound`), the fold's time, the
//! process's RSS while the new base is alive, and the drop's time.
//!
//!     DELEGRAPH_FOLD_SNAPSHOT=W.snap cargo bench --bench fold
//!
//! Environment: DELEGRAPH_FOLD_SNAPSHOT (default: the bundled sample,
//! `graph-snapshots/sample.snap`), DELEGRAPH_FOLD_PARTS (default "2,8"),
//! DELEGRAPH_FOLD_NEW (persons added before the folds, default 2 000),
//! DELEGRAPH_FOLD_ROUNDS (folds of each part, default 3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegraph::event::Event;
use delegraph::partition::Store;
use delegraph::partition::journal::MemoryJournal;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn die(msg: String) -> ! {
    eprintln!("fold bench: {msg}");
    std::process::exit(2)
}

/// The process's resident set, from `/proc/self/statm` (None off Linux).
fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |m| format!("{m:.0} MiB"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is not ours.
    let path = PathBuf::from(env_or(
        "DELEGRAPH_FOLD_SNAPSHOT",
        concat!(env!("CARGO_MANIFEST_DIR"), "/graph-snapshots/sample.snap"),
    ));
    let parts: Vec<usize> = env_or("DELEGRAPH_FOLD_PARTS", "2,8")
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .ok()
                .filter(|&p| p > 0)
                .unwrap_or_else(|| die(format!("DELEGRAPH_FOLD_PARTS: `{s}` is not a positive count")))
        })
        .collect();
    let new: usize = env_or("DELEGRAPH_FOLD_NEW", "2000")
        .parse()
        .unwrap_or_else(|e| die(format!("DELEGRAPH_FOLD_NEW: {e}")));
    let rounds: usize = env_or("DELEGRAPH_FOLD_ROUNDS", "3")
        .parse()
        .ok()
        .filter(|&r| r > 0)
        .unwrap_or_else(|| die("DELEGRAPH_FOLD_ROUNDS: a positive count".into()));
    let persons: Vec<Event> = (0..new)
        .map(|i| {
            Event::from_json(
                serde_json::json!({"party": {"id": format!("fold-bench-{i}"), "kind": "person"}}),
            )
            .unwrap_or_else(|e| die(format!("a person event: {e}")))
        })
        .collect();
    println!("snapshot {}, {new} new persons before the folds", path.display());
    for p in parts {
        let t = Instant::now();
        let (world, _) = delegraph::persist::snapshot::load_in(&path, p, &mut |_| {})
            .unwrap_or_else(|e| die(format!("{}: {e}", path.display())));
        println!(
            "\n{p} partitions: {} parties, loaded in {:.1} s, RSS {}",
            world.graph.party_count(),
            t.elapsed().as_secs_f64(),
            mib(rss_mib())
        );
        // Through the store, as the server writes: the loaded base stays shared with the
        // first version, so the new persons go into the deltas.
        let store = Store::new(world, Arc::new(MemoryJournal::new()));
        for chunk in persons.chunks(500) {
            store
                .commit(chunk)
                .unwrap_or_else(|e| die(format!("adding the new persons: {e:?}")));
        }
        let v = store.pin();
        let graph = &v.world.graph;
        println!(
            "part  base entries  delta  bound      fold (each round)               RSS with the new base  drop"
        );
        for i in 0..graph.partitions() {
            let state = graph.part_state(i).unwrap_or_else(|| die(format!("no part {i}")));
            let (mut folds, mut drops, mut rss) = (Vec::new(), Vec::new(), None);
            for _ in 0..rounds {
                let t = Instant::now();
                let base = state
                    .compacted()
                    .unwrap_or_else(|| die(format!("part {i}: its delta does not fit its base")));
                folds.push(t.elapsed());
                rss = rss_mib();
                let t = Instant::now();
                drop(base);
                drops.push(t.elapsed());
            }
            let list = |v: &[Duration]| v.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ");
            println!(
                "{i:>4}  {:>12}  {:>5}  {:>9}  {:<30}  {:>21}  {}",
                graph.part_base_len(i),
                graph.part_delta_len(i),
                store.part_bound(graph, i),
                list(&folds),
                mib(rss),
                list(&drops)
            );
        }
        drop(v);
        // Freeing a national world takes seconds; the process ends soon anyway.
        std::mem::forget(store);
    }
}
