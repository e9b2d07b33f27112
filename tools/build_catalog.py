#!/usr/bin/env python3
"""Build delegraph's own catalogue files (catalog/*.json) from the Altinn reference dump.

The product never reads ../shared at run time: this script is run by a developer when the
reference data changes, and its output is committed. Usage:

    python3 tools/build_catalog.py ../shared/reference/altinn catalog
"""
import json
import sys
from pathlib import Path


def items(src: Path, name: str):
    return json.loads((src / f"{name}.json").read_text(encoding="utf-8"))["items"]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    roles = [
        {
            "code": r["code"],
            "urn": r["urn"],
            "legacy_code": r["legacy_code"],
            "name": r["name_en"],
            "name_nb": r["name_nb"],
            "provider": r["provider"],
            "is_key_role": r["is_key_role"],
            "is_assignable": r["is_assignable"],
        }
        for r in items(src, "roles")
    ]
    packages = [
        {
            "code": p["code"],
            "urn": p["urn"],
            "name": p["name_en"],
            "name_nb": p["name_nb"],
            "area": p["area_urn"],
            "entity_type": {"Organisasjon": "organisation", "Person": "person"}[p["entity_type"]],
            "provider": p["provider"],
            "is_assignable": p["is_assignable"],
            "is_delegable": p["is_delegable"],
        }
        for p in items(src, "packages")
    ]
    areas = [
        {"urn": a["urn"], "name": a["name_en"], "name_nb": a["name_nb"], "group": a["area_group_en"]}
        for a in items(src, "areas")
    ]
    role_packages = [
        {
            "role": r["role_code"],
            "package": r["package_urn"],
            "unit_type": r["entity_variant"],
            "has_access": r["has_access"],
            "can_delegate": r["can_delegate"],
        }
        for r in items(src, "role_packages")
    ]
    role_map = [{"has": r["has_role_code"], "gets": r["gets_role_code"]} for r in items(src, "role_map")]
    out = {
        "roles": roles,
        "packages": packages,
        "areas": areas,
        "role_packages": role_packages,
        "role_map": role_map,
    }
    for name, rows in out.items():
        text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n]\n"
        (dst / f"{name}.json").write_text(text, encoding="utf-8")
        print(f"{name}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
