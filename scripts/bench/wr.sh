#!/usr/bin/env bash
# HTTP writes against checks (issue 15): fresh `serve --data-dir` on the medium world, then
# checks at 32 connections for $SECS s, then one-event writes with `by` at 32 connections.
# usage: wr.sh SERVER_BIN [ROUNDS]   (LT=load tester binary, default SERVER_BIN; PORT)
set -u
. "$(dirname "$0")/common.sh"
S=$1; R=${2:-1}; LT=${LT:-$S}; PORT=${PORT:-18515}; SECS=${SECS:-8}
for r in $(seq 1 $R); do
  for kind in check events; do
    start_server "$S" $PORT || exit 1
    "$LT" loadtest --server http://127.0.0.1:$PORT --snapshot "$SNAP" --requests 100000000 --duration 1 --concurrency 32 --mix check=1 > /dev/null 2>&1
    c0=$(cpu_of $SPID); threads_cpu $SPID > /tmp/wr.t0
    "$LT" loadtest --server http://127.0.0.1:$PORT --snapshot "$SNAP" --requests 100000000 --duration $SECS --concurrency 32 --mix $kind=1 --json /tmp/wr-$kind.json > /dev/null 2>&1
    c1=$(cpu_of $SPID); threads_cpu $SPID > /tmp/wr.t1
    python3 - "$kind" $((c1-c0)) <<'PY'
import json,sys
k=sys.argv[1]; cpu=int(sys.argv[2])/100
r=json.load(open(f"/tmp/wr-{k}.json")); kk=r["kinds"][0]; n=kk["requests"]
cl=r.get("client_cpu_s") or (0,0)
t0=dict(l.split() for l in open("/tmp/wr.t0")); t1=dict(l.split() for l in open("/tmp/wr.t1"))
th=" ".join(f"{t}={(int(t1[t])-int(t0.get(t,0)))*1e4/max(n,1):.1f}" for t in sorted(t1) if int(t1[t])-int(t0.get(t,0))>0)
print(f"{k:6} {r['requests_per_s']:9.0f}/s p50 {kk['p50_us']}us p99 {kk['p99_us']}us err {r['errors']} server {cpu*1e6/max(n,1):.1f}us/req client {(cl[0]+cl[1])*1e6/max(n,1):.1f}us/req | per thread us/req: {th}")
PY
    stop_server
  done
done
