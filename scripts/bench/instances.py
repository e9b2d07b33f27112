#!/usr/bin/env python3
"""One-event `instance` writes over HTTP against how many instances the world holds
(BENCHMARKS.md, eighteenth session: a write used to copy the decision point's whole state).

usage: instances.py URL PARTY PARTY_ID RESOURCE N
  e.g. delegraph serve --snapshot medium.snap --dev-no-auth --bind 127.0.0.1:18700 &
       python3 scripts/bench/instances.py http://127.0.0.1:18700 p0 50000000 digdir-skattemelding-0 100000
Times 200 single writes, adds N instances in batches of 1 000, then times 200, 500 and 500 more.
"""
import json, sys, time, urllib.error, urllib.request

url, party, pid, resource, total = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


def post(evs):
    r = urllib.request.Request(url + "/v1/events", data=json.dumps(evs).encode(),
                               headers={"content-type": "application/json"})
    try:
        return urllib.request.urlopen(r).read()
    except urllib.error.HTTPError as e:
        sys.exit(f"refused: {e.read()[:400]!r}")


def ev(i):
    return {"instance": {"id": f"{pid}/{i:08x}-0000-4000-8000-000000000000",
                         "resource": resource, "party": party}}


def timed(k0, n):
    t = time.perf_counter()
    for i in range(k0, k0 + n):
        post([ev(i)])
    return (time.perf_counter() - t) / n * 1e6


print(f"single writes, no instances before: {timed(10_000_000, 200):.0f} us each")
for b in range(0, total, 1000):
    post([ev(i) for i in range(b, min(b + 1000, total))])
print(f"single writes, {total} instances before: {timed(20_000_000, 200):.0f} us each")
print(f"again: {timed(30_000_000, 500):.0f} us each")
print(f"again: {timed(40_000_000, 500):.0f} us each")
