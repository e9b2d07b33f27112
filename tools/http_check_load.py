#!/usr/bin/env python3
"""Bounded loopback load on a running `delegraph serve --dev-no-auth`: builds a small
world, then posts batched checks over keep-alive connections and prints decisions/s and
request latency percentiles. Loopback only; stops after --seconds.

    python3 tools/http_check_load.py --url http://127.0.0.1:8080 --seconds 10
"""
import argparse, http.client, json, threading, time, urllib.parse

ap = argparse.ArgumentParser()
ap.add_argument("--url", default="http://127.0.0.1:8080")
ap.add_argument("--seconds", type=float, default=10)
ap.add_argument("--batch", type=int, default=1000)
ap.add_argument("--clients", type=int, default=2)
a = ap.parse_args()
u = urllib.parse.urlparse(a.url)
assert u.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"

def post(conn, path, body):
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse(); data = r.read()
    return r.status, data

c = http.client.HTTPConnection(u.hostname, u.port)
events = [{"party": {"id": f"org{o}", "kind": "organisation", "unit_type": "AS"}} for o in range(20)]
events += [{"party": {"id": f"p{i}", "kind": "person"}} for i in range(500)]
events += [{"register_role": {"from": f"org{i % 20}", "to": f"p{i}", "role": "daglig-leder"}} for i in range(0, 500, 3)]
events += [{"grant": {"from": f"org{i % 20}", "to": f"p{i}", "package": "skattegrunnlag"}} for i in range(1, 500, 3)]
for i in range(0, len(events), 1000):
    s, d = post(c, "/v1/events", json.dumps(events[i:i + 1000]))
    assert s == 200, d
checks = [{"subject": f"p{i % 500}", "party": f"org{i % 20}", "package": "skattegrunnlag"} for i in range(a.batch)]
body = json.dumps({"checks": checks})
lat, decided, lock = [], [0], threading.Lock()

def worker():
    conn = http.client.HTTPConnection(u.hostname, u.port)
    end = time.time() + a.seconds
    while time.time() < end:
        t0 = time.perf_counter(); s, _ = post(conn, "/v1/check/batch", body); t1 = time.perf_counter()
        assert s == 200
        with lock:
            lat.append(t1 - t0); decided[0] += a.batch

t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(a.clients)]
for t in ts: t.start()
for t in ts: t.join()
el = time.time() - t0
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"{decided[0]} decisions in {el:.1f} s: {decided[0] / el:,.0f} decisions/s; "
      f"{len(lat)} requests of {a.batch}; latency p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms")
