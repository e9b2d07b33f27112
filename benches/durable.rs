//! Durable write throughput with group commit: T writer threads each apply one-event
//! batches to a `persist::Durable` store in a temporary directory on the same disk as
//! the build (set TMPDIR to measure another). Prints batches/s per thread count.
//!
//!     cargo bench --bench durable
//!
//! Environment: DELEGRAPH_BENCH_SECONDS (default 3) per thread count.

use std::time::{Duration, Instant};

use delegraph::event::Event;
use delegraph::persist::Durable;

fn party(id: &str) -> Option<Event> {
    Event::from_json(serde_json::json!({"party": {"id": id, "kind": "person"}})).ok()
}

fn main() {
    let secs: u64 = std::env::var("DELEGRAPH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    {
        // The floor: the same batches applied in memory only, and encoded for the log.
        let mut w = delegraph::world::World::new();
        let n = 200_000;
        let evs: Vec<Event> = (0..n).filter_map(|i| party(&format!("m{i}"))).collect();
        let t = Instant::now();
        for e in &evs {
            let _ = delegraph::mutate::apply(&mut w, e);
        }
        let apply = t.elapsed();
        let t = Instant::now();
        for (i, e) in evs.iter().enumerate() {
            let _ = delegraph::persist::wal::encode_record(i as u64, std::slice::from_ref(e));
        }
        let enc = t.elapsed();
        println!(
            "in memory: apply {:.2?}/batch, log encoding {:.2?}/batch",
            apply / n,
            enc / n
        );
    }
    println!("threads  batches/s  mean latency");
    for threads in [1usize, 4, 16, 64, 256] {
        let Ok(dir) = tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| ".".into())) else {
            eprintln!("cannot create a temporary directory");
            return;
        };
        let Ok(store) = Durable::open(dir.path()) else {
            eprintln!("cannot open the store");
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        let start = Instant::now();
        let done: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        let mut n = 0usize;
                        while Instant::now() < deadline {
                            let Some(e) = party(&format!("p{t}-{n}")) else {
                                break;
                            };
                            if store.apply_batch(&[e]).is_err() {
                                break;
                            }
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let el = start.elapsed().as_secs_f64();
        let rate = done as f64 / el;
        println!(
            "{threads:>7}  {rate:>9.0}  {:>9.2?}",
            Duration::from_secs_f64(threads as f64 / rate.max(1.0))
        );
    }
}
