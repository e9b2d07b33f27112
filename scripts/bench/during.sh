#!/usr/bin/env bash
# Reads beside background work (issue 15): one `serve --data-dir` on the medium world, a
# warm-up, then RUNS rounds of: loadtest REQ checks (default 100 000) at 8 connections, idle and with
# each --during mode (interleaved). Prints p99.9 / max per run and the medians.
# usage: during.sh SERVER_BIN [RUNS] [TAG]   (LT, PORT, MODES, REQ, LT_ARGS; SERVE_ARGS for the server, e.g. --delta-bound 3000)
set -u
. "$(dirname "$0")/common.sh"
S=$1; R=${2:-5}; TAG=${3:-run}; LT=${LT:-$S}; PORT=${PORT:-18516}
MODES=${MODES:-"idle simulate a2-impact checkpoint writes grants"}
OUT=/tmp/during-$TAG; mkdir -p $OUT
start_server "$S" $PORT || exit 1
"$LT" loadtest --server http://127.0.0.1:$PORT --snapshot "$SNAP" --requests 30000 --concurrency 8 --mix check=1 > /dev/null 2>&1
for r in $(seq 1 $R); do
  for m in $MODES; do
    extra=""; [ "$m" != idle ] && extra="--during $m"
    "$LT" loadtest --server http://127.0.0.1:$PORT --snapshot "$SNAP" --requests ${REQ:-100000} --duration 60 --concurrency 8 --mix check=1 ${LT_ARGS:-} $extra --json $OUT/$m-$r.json > /dev/null 2>&1
  done
done
stop_server
python3 - $OUT "$MODES" $R <<'PY'
import json,sys,statistics as st
out,modes,R=sys.argv[1],sys.argv[2].split(),int(sys.argv[3])
idle=None
for m in modes:
    p=[];mx=[];rate=[]
    for r in range(1,R+1):
        try: j=json.load(open(f"{out}/{m}-{r}.json"))
        except Exception: continue
        k=j["kinds"][0]; p.append(k["p999_us"]); mx.append(k["max_us"]); rate.append(j["requests_per_s"])
    if not p: print(m,"no runs"); continue
    med=st.median(p)
    if m=="idle": idle=med
    ratio=f"{med/idle:.2f}x" if idle else ""
    print(f"{m:10} p99.9 runs {p} median {med:.0f} {ratio}  max median {st.median(mx):.0f}  rate median {st.median(rate):.0f}/s")
PY
