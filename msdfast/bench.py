"""`msdfast bench kernels`: run the fused-kernel benchmarks (benchmarks/bench_*.py, pytest-benchmark) and
print them as markdown tables.

Per latent-shaped op: the median time of the eager reference chain, of the compiled kernel (and Triton on
a GPU), the speedup, and the kernel as a fraction of the memory-bandwidth bound (torch.clone moving the
same number of bytes: bound = t_copy / t_kernel). For the ideal denoiser: time and peak memory of the
streaming kernel vs the naive cdist + softmax version. The JSON is pytest-benchmark's (--benchmark-json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

SUITES = ("kernels",)
KERNEL_OPS = ("ddim_step", "distill_grad", "chain_mean_shift", "noise_to_levels", "gmm_score", "ideal_denoiser")


def benchmarks_dir() -> Path:
    """benchmarks/ of the source checkout (the benchmarks are not part of an installed wheel)."""
    d = Path(__file__).resolve().parent.parent / "benchmarks"
    if not d.is_dir():
        raise FileNotFoundError(f"benchmarks/ not found next to the msdfast package ({d}); run from a source checkout")
    return d


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", choices=SUITES, help="which benchmark suite (kernels: the fused ops)")
    parser.add_argument("--ops", nargs="+", default=list(KERNEL_OPS), choices=KERNEL_OPS,
                        help="ops to benchmark (default: all)")
    parser.add_argument("--json", default=".benchmarks/kernels.json", help="where pytest-benchmark writes its JSON")
    parser.add_argument("--table", default=None, help="also write the markdown tables to this file")
    parser.add_argument("--from-json", action="store_true", help="only print the tables of an existing --json")
    parser.add_argument("--quick", action="store_true",
                        help="skip the 1e4 x 1e5 ideal-denoiser case (the naive version needs ~8 GB)")
    parser.add_argument("--pytest-args", default="", help="extra arguments for pytest, e.g. '--benchmark-min-rounds=20'")


def run_pytest(ops: list[str], json_path: str, quick: bool = False, extra: str = "") -> int:
    bdir = benchmarks_dir()
    files = [str(bdir / f"bench_{op}.py") for op in ops if (bdir / f"bench_{op}.py").exists()]
    if not files:
        raise FileNotFoundError(f"no benchmark files for {ops} in {bdir}")
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", *files, "--benchmark-only", f"--benchmark-json={json_path}", "-q",
           "-p", "no:cacheprovider", "--rootdir", str(bdir)]
    if quick:
        cmd += ["-k", "not 1e4x1e5"]
    cmd += extra.split()
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=str(bdir.parent), env={**os.environ, "PYTHONPATH": str(bdir)})


def _ms(sec: float | None) -> str:
    return "-" if sec is None else (f"{sec * 1e3:.3f}" if sec < 1e-2 else f"{sec * 1e3:.1f}")


def _ratio(a: float | None, b: float | None, fmt: str = "{:.1f}x") -> str:
    return "-" if a is None or b is None or b == 0 else fmt.format(a / b)


def tables(data: dict[str, Any]) -> str:
    """Markdown tables from a pytest-benchmark JSON dict (benchmarks written with benchmarks/kernel_bench.py)."""
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "op" not in info or "backend" not in info:
            continue
        group = "ideal_denoiser" if b.get("group", "").startswith("ideal_denoiser") else info["op"]
        rows[(group, info.get("size", ""))][info["backend"]] = {"median": b["stats"]["median"], **info}
    machine = data.get("machine_info", {})
    head = (f"Machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
            f"{next((r.get('threads') for v in rows.values() for r in v.values()), '?')} torch threads; "
            f"median of rounds.\n")
    out = [head, "| op | size | eager ms | compiled ms | speedup | triton ms | copy ms | compiled / copy bound |",
           "|---|---|---|---|---|---|---|---|"]
    for (group, size), r in sorted(rows.items()):
        if group == "ideal_denoiser":
            continue
        med = {k: v["median"] for k, v in r.items()}
        out.append(f"| {group} | {size} | {_ms(med.get('reference'))} | {_ms(med.get('compiled'))} | "
                   f"{_ratio(med.get('reference'), med.get('compiled'))} | {_ms(med.get('triton'))} | "
                   f"{_ms(med.get('copy'))} | {_ratio(med.get('copy'), med.get('compiled'), '{:.0%}')} |")
    ideal = [(size, r) for (g, size), r in sorted(rows.items()) if g == "ideal_denoiser"]
    if ideal:
        out += ["", "Ideal denoiser (d = 2, float32): streaming kernel vs naive cdist + softmax + matmul. Peak memory: "
                "growth of ru_maxrss over one call in a fresh process (analytic allocation in brackets).", "",
                "| queries x data | naive ms | compiled ms | speedup | naive peak MiB | compiled peak MiB | memory ratio |",
                "|---|---|---|---|---|---|---|"]
        for size, r in ideal:
            n, c = r.get("naive", {}), r.get("compiled", {})
            out.append(f"| {size} | {_ms(n.get('median'))} | {_ms(c.get('median'))} | "
                       f"{_ratio(n.get('median'), c.get('median'))} | "
                       f"{n.get('peak_mb', float('nan')):.0f} ({n.get('analytic_mb', float('nan')):.0f}) | "
                       f"{c.get('peak_mb', float('nan')):.1f} ({c.get('analytic_mb', float('nan')):.1f}) | "
                       f"{_ratio(n.get('peak_mb'), max(c.get('peak_mb') or 0, 0.1) if c else None, '{:.0f}x')} |")
    return "\n".join(out) + "\n"


def run_bench(args: argparse.Namespace) -> int:
    if not args.from_json:
        rc = run_pytest(list(args.ops), args.json, quick=args.quick, extra=args.pytest_args)
        if rc not in (0, 5):
            print(f"msdfast bench: pytest exited with {rc}", file=sys.stderr)
            if not Path(args.json).exists():
                return rc
    with open(args.json) as f:
        text = tables(json.load(f))
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    return 0
