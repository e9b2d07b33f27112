//! Request counts and latency histograms per route, in Prometheus text format.
//!
//! Hand-rolled with atomics: the series are few (one per route, method and status) and
//! a registry crate would add more than it saves.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le
                && let Some(b) = self.buckets.get(i)
            {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The server's request metrics.
#[derive(Default)]
pub struct Metrics {
    /// (route, method, status) → requests.
    counts: RwLock<BTreeMap<(String, String, u16), Arc<AtomicU64>>>,
    /// route → latency.
    latency: RwLock<BTreeMap<String, Arc<Histogram>>>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let key = (route.to_string(), method.to_string(), status);
        let counter = self.counts.read().get(&key).cloned();
        let counter = match counter {
            Some(c) => c,
            None => self.counts.write().entry(key).or_default().clone(),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let hist = self.latency.read().get(route).cloned();
        let hist = match hist {
            Some(h) => h,
            None => self.latency.write().entry(route.to_string()).or_default().clone(),
        };
        hist.observe(took);
    }

    /// The Prometheus text of the request metrics followed by `gauges`.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP delegraph_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE delegraph_http_requests_total counter\n");
        for ((route, method, status), c) in self.counts.read().iter() {
            let _ = writeln!(
                out,
                "delegraph_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                escape(method),
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP delegraph_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE delegraph_http_request_duration_seconds histogram\n");
        for (route, h) in self.latency.read().iter() {
            let r = escape(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let n = h.buckets.get(i).map_or(0, |b| b.load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "delegraph_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{le}\"}} {n}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "delegraph_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(
                out,
                "delegraph_http_request_duration_seconds_sum{{route=\"{r}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "delegraph_http_request_duration_seconds_count{{route=\"{r}\"}} {count}"
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

/// The gauges of the graph's parts: the entries in each part's delta (of the published
/// version), the bound each delta is kept below, and the compactions done per part (all,
/// and those a writer waited for).
pub fn partition_gauges(
    deltas: &[usize],
    compactions: &[u64],
    by_writer: &[u64],
    bounds: &[usize],
) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP delegraph_partition_delta_entries Nodes and edges changed in a partition of the graph since its base.\n",
    );
    out.push_str("# TYPE delegraph_partition_delta_entries gauge\n");
    for (i, d) in deltas.iter().enumerate() {
        let _ = writeln!(out, "delegraph_partition_delta_entries{{partition=\"{i}\"}} {d}");
    }
    out.push_str("# HELP delegraph_partition_delta_bound The bound a partition's delta is kept below.\n");
    out.push_str("# TYPE delegraph_partition_delta_bound gauge\n");
    for (i, b) in bounds.iter().enumerate() {
        let _ = writeln!(out, "delegraph_partition_delta_bound{{partition=\"{i}\"}} {b}");
    }
    out.push_str("# HELP delegraph_partition_compactions_total Compactions of a partition of the graph.\n");
    out.push_str("# TYPE delegraph_partition_compactions_total counter\n");
    for (i, c) in compactions.iter().enumerate() {
        let _ = writeln!(
            out,
            "delegraph_partition_compactions_total{{partition=\"{i}\"}} {c}"
        );
    }
    out.push_str(
        "# HELP delegraph_partition_writer_compactions_total Compactions of a partition a writer waited for: \
         the background fold had not kept its delta below the bound.\n",
    );
    out.push_str("# TYPE delegraph_partition_writer_compactions_total counter\n");
    for (i, c) in by_writer.iter().enumerate() {
        let _ = writeln!(
            out,
            "delegraph_partition_writer_compactions_total{{partition=\"{i}\"}} {c}"
        );
    }
    out
}

/// The process's CPU time (user + system), the standard Prometheus process metric: a
/// load tester on the same machine divides its growth by the requests it sent.
pub fn process_cpu(seconds: f64) -> String {
    format!(
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
         # TYPE process_cpu_seconds_total counter\n\
         process_cpu_seconds_total {seconds:.6}\n"
    )
}

/// The write path's counters: the sequencer's passes and the batches they applied
/// (batches per pass = writers per version), and the log's groups (one sync each) with
/// the time spent writing and syncing them (absent without a data directory).
pub fn write_path(passes: (u64, u64), groups: Option<(u64, std::time::Duration)>) -> String {
    let mut out = String::new();
    out.push_str("# HELP delegraph_store_passes_total Sequencer passes that applied at least one batch (one version each).\n");
    out.push_str("# TYPE delegraph_store_passes_total counter\n");
    let _ = writeln!(out, "delegraph_store_passes_total {}", passes.0);
    out.push_str(
        "# HELP delegraph_store_batches_total Batches the sequencer applied and queued in the log.\n",
    );
    out.push_str("# TYPE delegraph_store_batches_total counter\n");
    let _ = writeln!(out, "delegraph_store_batches_total {}", passes.1);
    if let Some((groups, spent)) = groups {
        out.push_str("# HELP delegraph_log_groups_total Groups the log wrote, one fdatasync each.\n");
        out.push_str("# TYPE delegraph_log_groups_total counter\n");
        let _ = writeln!(out, "delegraph_log_groups_total {groups}");
        out.push_str(
            "# HELP delegraph_log_sync_seconds_total Time the log spent writing and syncing its groups.\n",
        );
        out.push_str("# TYPE delegraph_log_sync_seconds_total counter\n");
        let _ = writeln!(out, "delegraph_log_sync_seconds_total {}", spent.as_secs_f64());
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
