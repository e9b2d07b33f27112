//! The crash test: a child process applies batches to a durable store from several
//! threads, printing each acknowledged sequence number; the parent kills it with
//! SIGKILL at a random moment, recovers the store, and checks that every acknowledged
//! batch is there and that no cascade is visible half-applied.
//!
//! Cycles: `DELEGRAPH_CRASH_CYCLES` (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use delegraph::persist::{Durable, invariants};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_batch() {
    let cycles: u64 = std::env::var("DELEGRAPH_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("DELEGRAPH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash test: {cycles} cycles, DELEGRAPH_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut total_truncated = 0u64;
    let mut checkpoints_seen = 0u64;
    for cycle in 0..cycles {
        let mut child = Command::new(env!("CARGO_BIN_EXE_delegraph"))
            .arg("__crash-child")
            .arg(dir.path())
            .args(["--seed", &(seed.wrapping_add(cycle)).to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Wait for the first acknowledgement (recovery done), then a random while.
        let t = Instant::now();
        let wait = Duration::from_millis(20 + rng.below(300));
        std::thread::sleep(wait);
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        assert!(
            err.is_empty(),
            "cycle {cycle}: the child reported an error: {err}"
        );
        assert!(!status.success());
        let lines = reader.join().unwrap();
        for l in &lines {
            let mut it = l.split_whitespace();
            assert_eq!(it.next(), Some("ack"), "{l}");
            let seq: u64 = it.next().unwrap().parse().unwrap();
            acked.push((seq, it.next().unwrap().to_string()));
        }
        // SIGKILL cannot tear a write() that returned, so on some cycles imitate a
        // power cut mid-write: a partial record, or noise, after the last record.
        let seg = newest_segment(dir.path());
        // (A kill between creating a segment and writing its header leaves it short;
        // noise there would be a garbled header, not a torn record.)
        let whole_header = std::fs::metadata(&seg).unwrap().len() >= delegraph::persist::wal::SEGMENT_HEADER;
        let torn = match rng.below(3) {
            0 if whole_header => {
                let rec = delegraph::persist::wal::encode_record(
                    u64::MAX,
                    &[delegraph::event::Event::from_json(
                        serde_json::json!({"party": {"id": "never-acknowledged", "kind": "person"}}),
                    )
                    .unwrap()],
                )
                .unwrap();
                let cut = 1 + rng.below(rec.len() as u64 - 1) as usize;
                let noise: Vec<u8> = if rng.below(2) == 0 {
                    rec[..cut].to_vec()
                } else {
                    (0..cut).map(|_| rng.below(256) as u8).collect()
                };
                let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
                std::io::Write::write_all(&mut f, &noise).unwrap();
                noise.len() as u64
            }
            _ => 0,
        };
        // Recover in-process and check.
        let store =
            Durable::open(dir.path()).unwrap_or_else(|e| panic!("cycle {cycle}: recovery failed: {e}"));
        let r = store.recovery().clone();
        total_truncated += r.truncated_bytes;
        if r.snapshot_seq > 0 {
            checkpoints_seen += 1;
        }
        assert!(r.skipped_snapshots.is_empty(), "{:?}", r.skipped_snapshots);
        assert_eq!(
            r.truncated_bytes, torn,
            "cycle {cycle}: the torn tail was not cut exactly"
        );
        let last = store.last_seq().unwrap();
        let max_acked = acked.iter().map(|a| a.0).max().unwrap_or(0);
        assert!(
            last >= max_acked,
            "cycle {cycle}: recovered to {last} but {max_acked} was acknowledged"
        );
        store
            .read(|w| {
                for (seq, marker) in &acked {
                    if marker != "setup" {
                        assert!(
                            w.graph.party_node(marker).is_some(),
                            "cycle {cycle}: acknowledged batch {seq} (`{marker}`) is missing"
                        );
                    }
                }
                assert!(w.graph.party_node("never-acknowledged").is_none());
                let bad = invariants::violations(w);
                assert!(bad.is_empty(), "cycle {cycle}: half-applied state: {bad:?}");
            })
            .unwrap();
        eprintln!(
            "cycle {cycle}: killed after {:?}, {} acks, recovered to {last} (snapshot {}, replayed {}, truncated {} bytes)",
            t.elapsed(),
            lines.len(),
            r.snapshot_seq,
            r.replayed,
            r.truncated_bytes
        );
    }
    eprintln!(
        "crash test passed: {cycles} cycles, {} acknowledged batches, {total_truncated} torn bytes truncated, {checkpoints_seen} recoveries from a checkpoint",
        acked.len()
    );
    assert!(!acked.is_empty(), "the child never acknowledged anything");
}

fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v.pop().unwrap()
}
