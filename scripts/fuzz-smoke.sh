#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on stable Rust (`-s none`: no sanitizer).
# Installs cargo-fuzz when it is missing. Seeds each corpus from the committed
# snapshots and JSON Lines worlds, and the HTTP body target (strict JSON, actor binding,
# query decoding) from fuzz/seeds/http_body. Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-${FUZZ_SECONDS:-20}}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

mkdir -p fuzz/corpus/snapshot_decode fuzz/corpus/jsonl_import fuzz/corpus/wal_record fuzz/corpus/http_body
cp graph-snapshots/*.snap fuzz/corpus/snapshot_decode/
cp graph-snapshots/*.jsonl fuzz/corpus/jsonl_import/
cp fuzz/seeds/wal_record/* fuzz/corpus/wal_record/ 2>/dev/null || true
cp fuzz/seeds/http_body/* fuzz/corpus/http_body/

echo "== build"
cargo fuzz build -s none
for t in snapshot_decode wal_record jsonl_import http_body; do
  echo "== fuzz $t for ${secs}s"
  cargo fuzz run -s none "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048
done
echo "== fuzz smoke passed"
