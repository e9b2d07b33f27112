#!/usr/bin/env bash
# delegraph vs PostgreSQL vs Cedar, end to end, in one command:
#
#   scripts/compare.sh [small|medium|norway] [extra args for the compare binary]
#
# Installs PostgreSQL from Debian's packages if missing, starts a private cluster on
# 127.0.0.1 (scripts/pg-baseline.sh), builds the `compare` binary (feature `compare`),
# generates the world with a fixed seed, loads it into PostgreSQL and Cedar, cross-checks
# the answers (a mismatch fails the run), times each query kind, prints the ratio table
# and writes it with a latency plot to docs/bench/, then stops PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${1:-small}
shift || true
OUT=docs/bench
mkdir -p "$OUT"

cargo build --release --features compare --bin compare

CONN=$(scripts/pg-baseline.sh start)
trap 'scripts/pg-baseline.sh stop' EXIT

target/release/compare --scale "$SCALE" --pg "$CONN" \
    --markdown "$OUT/compare-$SCALE.md" --svg "$OUT/compare-$SCALE.svg" "$@"
