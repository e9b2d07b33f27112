//! Durable write throughput through the store path the server uses: a `partition::Store`
//! over the write-ahead log (`persist::durable::Log` as its journal), T writer threads
//! each committing one-event batches (`Store::stage` + `Ticket::wait`: the sequencer applies
//! it, the publisher answers after the group's fdatasync). The log lives in a temporary directory
//! on the same disk as the build (set TMPDIR to measure another). Also measures the
//! disk's fsync: the p50 of a loop of small write + fdatasync on the same filesystem,
//! and prints the target (50 000 batches/s, or 80 % of writers ÷ fsync time).
//!
//!     cargo bench --bench durable
//!
//! Environment: DELEGRAPH_BENCH_SECONDS (default 3) per thread count,
//! DELEGRAPH_BENCH_THREADS (default "1,32,256").

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegraph::event::Event;
use delegraph::partition::Store;
use delegraph::persist::{Options, recover};

fn party(id: &str) -> Option<Event> {
    Event::from_json(serde_json::json!({"party": {"id": id, "kind": "person"}})).ok()
}

fn tmp_root() -> String {
    std::env::var("TMPDIR").unwrap_or_else(|_| ".".into())
}

/// p50 and p99 of `n` small appends each followed by fdatasync, on the same filesystem.
fn fsync_times(n: usize) -> Option<(Duration, Duration)> {
    let dir = tempfile::tempdir_in(tmp_root()).ok()?;
    let mut f = std::fs::File::create(dir.path().join("probe")).ok()?;
    let buf = [7u8; 128];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&buf).ok()?;
        f.sync_data().ok()?;
        v.push(t.elapsed());
    }
    v.sort();
    Some((*v.get(n / 2)?, *v.get(n * 99 / 100)?))
}

fn main() {
    let secs: u64 = std::env::var("DELEGRAPH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let threads: Vec<usize> = std::env::var("DELEGRAPH_BENCH_THREADS")
        .unwrap_or_else(|_| "1,32,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
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
            let _ = delegraph::persist::wal::encode_record_with(i as u64, std::slice::from_ref(e), Some(1));
        }
        let enc = t.elapsed();
        println!(
            "in memory: apply {:.2?}/batch, log encoding {:.2?}/batch",
            apply / n,
            enc / n
        );
    }
    let Some((p50, p99)) = fsync_times(200) else {
        eprintln!("cannot measure fsync in {}", tmp_root());
        return;
    };
    println!("fsync (128-byte write + fdatasync): p50 {p50:.2?}, p99 {p99:.2?}");
    println!("writers  batches/s  mean latency  target            group commit");
    for threads in threads {
        let Ok(dir) = tempfile::tempdir_in(tmp_root()) else {
            eprintln!("cannot create a temporary directory");
            return;
        };
        let Ok((world, log, _)) = recover(dir.path(), &Options::default()) else {
            eprintln!("cannot open the log");
            return;
        };
        let log = Arc::new(log);
        let store = Store::new(world, log.clone());
        let deadline = Instant::now() + Duration::from_secs(secs);
        let Some(template) = party("template") else {
            return;
        };
        let start = Instant::now();
        let done: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let store = &store;
                    let template = &template;
                    s.spawn(move || {
                        let mut n = 0usize;
                        while Instant::now() < deadline {
                            // A new person each time, built without JSON (the bench
                            // measures the store, not the event parser).
                            let mut e = template.clone();
                            if let Event::Party(p) = &mut e {
                                p.id = format!("p{t}-{n}");
                            }
                            if store.stage(Arc::new(vec![e])).wait().is_err() {
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
        let target = (0.8 * threads as f64 / p50.as_secs_f64()).min(50_000.0);
        let (groups, sync) = log.group_stats();
        println!(
            "{threads:>7}  {rate:>9.0}  {:>12.2?}  {target:>6.0} ({})  {:.1} batches/group, write+fdatasync {:.2?}/group, {:.0} % of the time in it",
            Duration::from_secs_f64(threads as f64 / rate.max(1.0)),
            if rate >= target { "met" } else { "missed" },
            done as f64 / groups.max(1) as f64,
            sync / u32::try_from(groups.max(1)).unwrap_or(u32::MAX),
            100.0 * sync.as_secs_f64() / el
        );
    }
}
