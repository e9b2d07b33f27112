# Sourced by wr.sh and during.sh (the figures of issue 15 in BENCHMARKS.md): a fresh
# `serve --data-dir` on SNAP (NODATA=1: in memory; SERVE_ARGS: more flags), ready-waited.
# The world both server and load tester use: make it with
#   delegraph generate --scale medium --jsonl medium.jsonl && delegraph import medium.jsonl --out medium.snap
SNAP=${SNAP:?set SNAP to the snapshot to serve, e.g. SNAP=medium.snap}
start_server() { # $1 = binary, $2 = port; sets SPID, D
  D=$(mktemp -d /tmp/bench-data.XXXX)
  if [ -n "${NODATA:-}" ]; then DD=""; else DD="--data-dir $D"; fi
  "$1" serve --snapshot "$SNAP" $DD --dev-no-auth --bind 127.0.0.1:$2 ${SERVE_ARGS:-} > "$D.log" 2>&1 &
  SPID=$!
  for i in $(seq 1 300); do curl -sf http://127.0.0.1:$2/readyz > /dev/null && return 0; sleep 0.1; done
  echo "server did not become ready: $(tail -5 $D.log)" >&2; return 1
}
stop_server() { kill $SPID 2>/dev/null; wait $SPID 2>/dev/null; rm -rf "$D" "$D.log"; }
cpu_of() { awk '{print $14+$15}' /proc/$1/stat; }   # clock ticks (1/100 s)
threads_cpu() { for t in /proc/$1/task/*; do printf '%s %s\n' "$(cat $t/comm | tr ' ' _)" "$(awk '{print $14+$15}' $t/stat)"; done | awk '{a[$1]+=$2} END {for (k in a) print k, a[k]}' | sort; }
