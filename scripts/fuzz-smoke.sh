#!/usr/bin/env bash
# Runs every fuzz target briefly on stable Rust (`-s none`: no sanitizer). Installs
# cargo-fuzz when it is missing. Each corpus starts from the committed snapshots, JSON
# Lines worlds and seeds; the HTTP body target (strict JSON, actor binding, query
# decoding) from fuzz/seeds/http_body.
#
# Usage: scripts/fuzz-smoke.sh [RUNS_PER_TARGET]
#
# By default (CI) the smoke does a fixed amount of work: a fixed number of inputs per
# target from a fixed seed (FUZZ_SEED, default 1), on a fresh copy of the committed
# corpus. The counts (FUZZ_RUNS sets one for all) take some 10 s per target on two busy
# cores: 300 000 for the snapshot and log-record decoders and the HTTP body path, 20 000 for the slower JSON
# Lines import. A busy machine takes longer but fuzzes as much (a time limit fuzzed
# less there); the runs are near-identical, not bit-identical (hash maps seeded per
# process steer the coverage feedback). A crash leaves its input in fuzz/artifacts/T/,
# which `cargo fuzz run -s none T FILE` replays.
# FUZZ_SECONDS=N instead fuzzes N seconds per target from a random seed on the
# accumulated corpus in fuzz/corpus (exploration, not for CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=(snapshot_decode wal_record jsonl_import http_body)
seed_corpus() { # DIR: fills DIR/<target> from the committed inputs
  mkdir -p "$1/snapshot_decode" "$1/jsonl_import" "$1/wal_record" "$1/http_body"
  cp graph-snapshots/*.snap "$1/snapshot_decode/"
  cp graph-snapshots/*.jsonl "$1/jsonl_import/"
  cp fuzz/seeds/wal_record/* "$1/wal_record/" 2>/dev/null || true
  cp fuzz/seeds/http_body/* "$1/http_body/"
}
limits=(-max_len=65536 -rss_limit_mb=2048)

echo "== build"
cargo fuzz build -s none
if [ -n "${FUZZ_SECONDS:-}" ]; then
  seed_corpus fuzz/corpus
  for t in "${targets[@]}"; do
    echo "== fuzz $t for ${FUZZ_SECONDS}s (random seed; the log prints it)"
    cargo fuzz run -s none "$t" "fuzz/corpus/$t" -- -max_total_time="$FUZZ_SECONDS" "${limits[@]}"
  done
else
  declare -A runs=([snapshot_decode]=300000 [wal_record]=300000 [jsonl_import]=20000 [http_body]=300000)
  seed="${FUZZ_SEED:-1}"
  corpus="$(mktemp -d)"
  trap 'rm -rf "$corpus"' EXIT
  seed_corpus "$corpus"
  for t in "${targets[@]}"; do
    n="${1:-${FUZZ_RUNS:-${runs[$t]}}}"
    echo "== fuzz $t: $n inputs from seed $seed"
    cargo fuzz run -s none "$t" "$corpus/$t" -- -runs="$n" -seed="$seed" "${limits[@]}"
  done
fi
echo "== fuzz smoke passed"
