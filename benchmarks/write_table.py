"""Summarise a pytest-benchmark JSON file as a markdown table (any op).

    python benchmarks/write_table.py benchmarks/results/ddim_step_cpu.json [--baseline reference] [--out X.md]

One table per benchmark group: median and IQR (microseconds), rounds, effective bandwidth when the benchmark
recorded extra_info["bytes"], and the speed-up vs the group's baseline impl (extra_info["impl"], or the test's
"impl" parameter) = baseline median / median. Writes <json stem>.md next to the JSON unless --out is given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _impl(bench: dict[str, Any]) -> str:
    return str(bench.get("extra_info", {}).get("impl") or (bench.get("params") or {}).get("impl") or bench["name"])


def make_table(data: dict[str, Any], baseline: str = "reference") -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b.get("group") or b["name"], []).append(b)
    mi = data.get("machine_info", {})
    first = data["benchmarks"][0].get("extra_info", {}) if data["benchmarks"] else {}
    lines = [f"Machine: {mi.get('cpu', {}).get('brand_raw', mi.get('machine', '?'))}, "
             f"python {mi.get('python_version', '?')}, torch {first.get('torch', '?')}, "
             f"threads {first.get('threads', '?')}, vector ISA {first.get('isa', '?')}; {data.get('datetime', '')}",
             ""]
    for group in sorted(groups):
        rows = groups[group]
        base = next((r for r in rows if _impl(r) == baseline), None)
        lines += [f"**{group}**", "",
                  "| impl | median (µs) | IQR (µs) | rounds | GB/s | speed-up vs " + baseline + " |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in sorted(rows, key=lambda r: r["stats"]["median"], reverse=True):
            st = r["stats"]
            nbytes = r.get("extra_info", {}).get("bytes")
            gbs = f"{nbytes / st['median'] / 1e9:.1f}" if nbytes else "-"
            ratio = f"{base['stats']['median'] / st['median']:.2f}x" if base else "-"
            lines.append(f"| {_impl(r)} | {st['median'] * 1e6:.1f} | {st['iqr'] * 1e6:.1f} | {st['rounds']} "
                         f"| {gbs} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("--baseline", default="reference")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    data = json.loads(args.json.read_text())
    if not data.get("benchmarks"):
        print(f"{args.json}: no benchmarks", file=sys.stderr)
        return 1
    table = make_table(data, args.baseline)
    out = args.out or args.json.with_suffix(".md")
    out.write_text(table + "\n")
    print(table)
    print(f"(written to {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
