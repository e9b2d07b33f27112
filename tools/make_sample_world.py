#!/usr/bin/env python3
"""Writes graph-snapshots/sample.jsonl: a small deterministic world (a few hundred
parties) for the README's run command. Build the snapshot with

    cargo run --release -- import graph-snapshots/sample.jsonl --out graph-snapshots/sample.snap

The named parties at the end (fjord, per, kari, ola, ...) are the cast of the demo that
`cargo run --release` shows; keep their answers interesting when changing them.

A realistic Norway-scale generator is `delegraph generate` (issue 3); this is only a
hand-sized sample so that the repository carries a snapshot that loads in milliseconds.
"""
import json
import random
import sys

import argparse

ap = argparse.ArgumentParser()
ap.add_argument("out", nargs="?", default="graph-snapshots/sample.jsonl")
ap.add_argument("--scale", type=int, default=1, help="multiply every count (for load tests)")
args = ap.parse_args()
K = args.scale
rng = random.Random(20260115)
out = []


def ev(event, **body):
    out.append({event: body})


FIRST = ["KARI", "OLA", "PER", "LISE", "ANNE", "NILS", "INGRID", "JONAS", "SIGRID", "TOR"]
LAST = ["HANSEN", "JOHANSEN", "OLSEN", "LARSEN", "ANDERSEN", "PEDERSEN", "NILSEN", "BERG"]
WORDS = ["FJORD", "NORD", "VEST", "TIND", "BRE", "SKOG", "HAV", "LYS", "STEIN", "ELV"]

persons = []
for i in range(220 * K):
    pid = f"person-{i:03}"
    persons.append(pid)
    ev("party", id=pid, kind="person", name=f"{rng.choice(FIRST)} {rng.choice(LAST)}")

orgs = []
for i in range(70 * K):
    oid = f"org-{i:03}"
    kind = "ENK" if i % 4 == 0 else "AS"
    orgs.append((oid, kind))
    ev("party", id=oid, kind="organisation", unit_type=kind, org_no=str(910000000 + i),
       name=f"{rng.choice(WORDS)} {rng.choice(WORDS)} {kind}")
    if kind == "AS" and i % 3 == 0:
        ev("party", id=f"{oid}-avd", kind="organisation", unit_type="BEDR", main_unit=oid,
           org_no=str(920000000 + i), name=f"AVDELING {i}")

firms = []
for i in range(3 * K):
    fid = f"firm-{i}"
    firms.append(fid)
    ev("party", id=fid, kind="organisation", unit_type="AS", org_no=str(930000000 + i),
       name=f"{WORDS[i % len(WORDS)]} REGNSKAP AS")

# Leaders and owners.
people = iter(rng.sample(persons, len(persons)))
for oid, kind in orgs:
    ev("register_role", **{"from": oid, "to": next(people),
                           "role": "innehaver" if kind == "ENK" else "daglig-leder"})
    if kind == "AS":
        ev("register_role", **{"from": oid, "to": next(people), "role": "styreleder"})
firm_staff = {}
for fid in firms:
    ceo = next(people)
    ev("register_role", **{"from": fid, "to": ceo, "role": "daglig-leder"})
    staff = [next(people) for _ in range(4)]
    firm_staff[fid] = staff
    for s in staff:
        ev("add_agent", facilitator=fid, agent=s)

# Resources with policies.
ev("resource", id="ske-mva-melding", owner="ske", rules=[
    {"actions": ["read", "write"],
     "any_of": ["urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet",
                "urn:altinn:accesspackage:merverdiavgift"]}])
ev("resource", id="ske-krav-og-betalinger", owner="ske", rules=[
    {"actions": ["read", "write"], "any_of": ["urn:altinn:accesspackage:krav-og-utlegg"]}])
ev("resource", id="nav-a-melding", owner="nav", rules=[
    {"actions": ["read", "write"], "any_of": ["urn:altinn:rolecode:DAGL"]}])

# Accounting clients and client delegations.
for n, (oid, kind) in enumerate(orgs):
    fid = firms[n % len(firms)]
    if n % 5 == 4:
        continue
    ev("register_role", **{"from": oid, "to": fid, "role": "regnskapsforer"})
    agent = rng.choice(firm_staff[fid])
    pk = rng.choice([["regnskapsforer-med-signeringsrettighet"], ["regnskapsforer-lonn"],
                     ["regnskapsforer-med-signeringsrettighet", "regnskapsforer-lonn"]])
    ev("delegate", client=oid, facilitator=fid, agent=agent, role="regnskapsforer", packages=pk)

# Rightholder grants of packages, resources and instances.
rest = list(people)
for n, (oid, kind) in enumerate(orgs[:40 * K]):
    to = rest[n % len(rest)]
    ev("grant", **{"from": oid, "to": to, "package": rng.choice(
        ["skattegrunnlag", "krav-og-utlegg", "merverdiavgift"])})
    if n % 4 == 0:
        ev("grant", **{"from": oid, "to": to, "resource": "ske-krav-og-betalinger", "actions": ["read"]})
    if n % 7 == 0:
        ev("grant", **{"from": oid, "to": rest[(n + 1) % len(rest)], "resource": "ske-mva-melding",
                       "instance": f"2026-01/{oid}", "actions": ["read", "write"]})

# Some legacy Altinn 2 roles.
for oid, kind in orgs[40 * K:55 * K]:
    ev("a2_role", **{"from": oid, "to": rng.choice(persons), "role": "A0237"})

# The demo's cast (`delegraph` with no arguments, `delegraph query`): named parties whose
# answers go through each kind of chain.
#   fjord          an AS; its sub-unit fjord-bergen (main unit -> sub-unit)
#   per            daglig-leder of fjord
#   tind-regnskap  fjord's accounting firm (regnskapsforer); kari is its daglig-leder (a key
#                  role), ola its employee, given fjord as a client (client delegation)
#   lise           holds skattegrunnlag for fjord by a grant from per
ev("party", id="fjord", kind="organisation", unit_type="AS", org_no="311000001", name="FJORD BYGG AS")
ev("party", id="fjord-bergen", kind="organisation", unit_type="BEDR", main_unit="fjord",
   org_no="311000002", name="FJORD BYGG AS AVD BERGEN")
ev("party", id="tind-regnskap", kind="organisation", unit_type="AS", org_no="311000003",
   name="TIND REGNSKAP AS")
for pid, name in [("per", "PER FJELL"), ("kari", "KARI TIND"), ("ola", "OLA NORDMANN"),
                  ("lise", "LISE HAV")]:
    ev("party", id=pid, kind="person", name=name)
ev("register_role", **{"from": "fjord", "to": "per", "role": "daglig-leder"})
ev("register_role", **{"from": "tind-regnskap", "to": "kari", "role": "daglig-leder"})
ev("register_role", **{"from": "fjord", "to": "tind-regnskap", "role": "regnskapsforer"})
ev("add_agent", facilitator="tind-regnskap", agent="ola", by="kari")
ev("delegate", client="fjord", facilitator="tind-regnskap", agent="ola", role="regnskapsforer",
   packages=["regnskapsforer-lonn"], by="kari")
ev("grant", **{"from": "fjord", "to": "lise", "package": "skattegrunnlag", "by": "per"})
# A service that still names an Altinn 2 role beside a package: the holders of A0237 above
# lose it at the cut-off (`delegraph a2-impact graph-snapshots/sample.snap`).
ev("resource", id="ssb-arsregnskap", owner="ssb", rules=[
    {"actions": ["read", "write"],
     "any_of": ["urn:altinn:rolecode:A0237",
                "urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet"]}])

with open(args.out, "w") as f:
    f.write("# Generated by tools/make_sample_world.py; rebuild sample.snap after changing it.\n")
    for e in out:
        f.write(json.dumps(e, ensure_ascii=False) + "\n")
