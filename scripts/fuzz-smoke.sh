#!/usr/bin/env bash
# Runs every fuzz target briefly on stable Rust (`-s none`: no sanitizer). Installs
# cargo-fuzz when it is missing. Each corpus starts from the committed snapshots, JSON
# Lines worlds and seeds.
#
# Usage: scripts/fuzz-smoke.sh [RUNS_PER_TARGET]
#
# By default (CI) the smoke is deterministic: a fixed number of inputs per target
# (FUZZ_RUNS, default 20000) from a fixed seed (FUZZ_SEED, default 1), on a fresh copy of
# the committed corpus. The same commit then fuzzes the same inputs on an idle laptop
# and on a busy CI machine, so a failure is a bug that replays, never a matter of load.
# FUZZ_SECONDS=N instead fuzzes N seconds per target from a random seed on the
# accumulated corpus in fuzz/corpus (exploration, not for CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=(snapshot_decode wal_record jsonl_import)
seed_corpus() { # DIR: fills DIR/<target> from the committed inputs
  mkdir -p "$1/snapshot_decode" "$1/jsonl_import" "$1/wal_record"
  cp graph-snapshots/*.snap "$1/snapshot_decode/"
  cp graph-snapshots/*.jsonl "$1/jsonl_import/"
  cp fuzz/seeds/wal_record/* "$1/wal_record/" 2>/dev/null || true
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
  runs="${1:-${FUZZ_RUNS:-20000}}"
  seed="${FUZZ_SEED:-1}"
  corpus="$(mktemp -d)"
  trap 'rm -rf "$corpus"' EXIT
  seed_corpus "$corpus"
  for t in "${targets[@]}"; do
    echo "== fuzz $t: $runs inputs from seed $seed"
    cargo fuzz run -s none "$t" "$corpus/$t" -- -runs="$runs" -seed="$seed" "${limits[@]}"
  done
fi
echo "== fuzz smoke passed"
