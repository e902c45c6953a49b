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
# glibc returns large freed blocks to the OS (munmap / heap trim), so every call of any op producing MBs of
# output page-faults its output back in; on a VM that costs more than the kernels themselves and swamps the
# comparison (for the reference, the kernels and the clone bound alike). These keep freed memory in the heap,
# as a caching allocator would. `--system-malloc` turns this off.
KEEP_HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}
KERNEL_OPS = ("ddim_step", "distill_grad", "chain_mean_shift", "noise_to_levels", "gmm_score", "ideal_denoiser",
              "hash_grid")


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
    parser.add_argument("--json", default="benchmarks/results/kernels_cpu.json",
                        help="where pytest-benchmark writes its JSON")
    parser.add_argument("--table", default=None, help="also write the markdown tables to this file")
    parser.add_argument("--from-json", action="store_true", help="only print the tables of an existing --json")
    parser.add_argument("--quick", action="store_true",
                        help="skip the 1e4 x 1e5 ideal-denoiser case (the naive version needs ~8 GB)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (MSDFAST_BENCH_THREADS); 1 is reproducible on a busy machine")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc malloc's defaults (by default the run keeps freed memory in the heap, see "
                             "KEEP_HEAP_ENV)")
    parser.add_argument("--pytest-args", default="",
                        help="extra arguments for pytest, e.g. '--benchmark-min-rounds=20'")


def run_pytest(ops: list[str], json_path: str, quick: bool = False, extra: str = "", threads: int | None = None,
               keep_heap: bool = True) -> int:
    bdir = benchmarks_dir()
    files = [str(bdir / f"bench_{op}.py") for op in ops if (bdir / f"bench_{op}.py").exists()]
    if not files:
        raise FileNotFoundError(f"no benchmark files for {ops} in {bdir}")
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", *files, "--benchmark-only", f"--benchmark-json={json_path}", "-q",
           "-p", "no:cacheprovider"]
    if quick:
        cmd += ["-k", "not 1e4x1e5"]
    cmd += extra.split()
    print("+", " ".join(f"{k}={v}" for k, v in {**(KEEP_HEAP_ENV if keep_heap else {}),
                                                **({"MSDFAST_BENCH_THREADS": threads} if threads else {})}.items()),
          " ".join(cmd), flush=True)
    env = dict(os.environ)
    if keep_heap:
        env.update(KEEP_HEAP_ENV)
    if threads:
        env["MSDFAST_BENCH_THREADS"] = str(threads)
    return subprocess.call(cmd, cwd=str(bdir.parent), env=env)


def _ms(sec: float | None) -> str:
    return "-" if sec is None else f"{sec * 1e6:.1f}"


def _ratio(a: float | None, b: float | None, fmt: str = "{:.2f}x") -> str:
    return "-" if a is None or b is None or b == 0 else fmt.format(a / b)


def _impl(bench: dict[str, Any]) -> str:
    return str(bench.get("extra_info", {}).get("impl") or (bench.get("params") or {}).get("impl") or bench["name"])


def summary(data: dict[str, Any]) -> str:
    """One line per benchmark group: the targets of the kernel work at a glance.

    speed-up = reference median / compiled median (both through msdfast.ops); bound = clone median / kernel
    median, the fraction of the memory-bandwidth bound reached (clone moving the same bytes), for the public call
    and for the raw torch.ops call. Ideal denoiser: time and peak memory (ru_maxrss growth) vs the naive version;
    the memory ratio divides by the larger of the measured and modelled streaming footprint (the measured growth
    of a sub-MiB allocation can read 0). Other groups (e.g. gmm_score) appear in the per-group tables.
    """
    groups: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in data.get("benchmarks", []):
        groups[b.get("group") or b["name"]][_impl(b)] = {"median": b["stats"]["median"], **b.get("extra_info", {})}
    med = lambda r, k: r.get(k, {}).get("median")  # noqa: E731
    out = ["| group | reference µs | compiled µs | speed-up | compiled-raw µs | clone µs | bound (compiled) "
           "| bound (raw) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    ideal = []
    for g, r in sorted(groups.items()):
        if "naive" in r:
            ideal.append((g, r))
            continue
        raw = med(r, "compiled-raw")
        clone = med(r, "clone")
        out.append(f"| {g} | {_ms(med(r, 'reference'))} | {_ms(med(r, 'compiled'))} | "
                   f"{_ratio(med(r, 'reference'), med(r, 'compiled'))} | {_ms(raw)} | {_ms(clone)} | "
                   f"{_ratio(clone, med(r, 'compiled'), '{:.0%}')} | {_ratio(clone, raw, '{:.0%}')} |")
    if len(out) == 2:  # no latent-shaped groups in this run
        out = []
    if ideal:
        out += ["", "| group | naive ms | compiled ms | speed-up | naive peak MiB (model) | compiled peak MiB (model) "
                "| memory ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
        for g, r in ideal:
            n, c = r.get("naive", {}), r.get("compiled", {})
            ms = lambda v: "-" if v is None else f"{v * 1e3:.1f}"  # noqa: E731
            c_mem = max(c.get("peak_mb") or 0.0, c.get("analytic_mb") or 0.0) if c else None
            out.append(f"| {g} | {ms(n.get('median'))} | {ms(c.get('median'))} "
                       f"| {_ratio(n.get('median'), c.get('median'))} "
                       f"| {n.get('peak_mb', float('nan')):.0f} ({n.get('analytic_mb', float('nan')):.0f}) "
                       f"| {c.get('peak_mb', float('nan')):.1f} ({c.get('analytic_mb', float('nan')):.1f}) "
                       f"| {_ratio(n.get('peak_mb'), c_mem, '{:.0f}x')} |")
    return "\n".join(out) + "\n"


def tables(data: dict[str, Any]) -> str:
    """The summary, then benchmarks/write_table.py's per-group tables (median, IQR, rounds, GB/s) when the
    source checkout's benchmarks/ is there."""
    try:
        sys.path.insert(0, str(benchmarks_dir()))
    except FileNotFoundError:
        return summary(data)
    try:
        from write_table import make_table
    finally:
        sys.path.pop(0)
    return summary(data) + "\n" + make_table(data) + "\n"


def load_results(path: str) -> dict[str, Any]:
    """A pytest-benchmark JSON (--json); a UserInputError naming the file when it is missing or malformed."""
    from .errors import UserInputError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"--json {path}: no such file (run `msdfast bench kernels` without --from-json "
                             "to make it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserInputError(f"--json {path}: not a readable JSON file ({type(e).__name__}: {e})") from None
    ok = isinstance(data, dict) and isinstance(data.get("benchmarks"), list) and all(
        isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("stats"), dict)
        and "median" in b["stats"] for b in data["benchmarks"])
    if not ok:
        raise UserInputError(f"--json {path}: not a pytest-benchmark result (expected a 'benchmarks' list of "
                             "entries with 'name' and 'stats.median')")
    return data


def run_bench(args: argparse.Namespace) -> int:
    if not args.from_json:
        rc = run_pytest(list(args.ops), args.json, quick=args.quick, extra=args.pytest_args, threads=args.threads,
                        keep_heap=not args.system_malloc)
        if rc not in (0, 5):
            print(f"msdfast bench: pytest exited with {rc}", file=sys.stderr)
            if not Path(args.json).exists():
                return rc
    text = tables(load_results(args.json))
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    return 0
