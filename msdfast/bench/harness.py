"""Timing on a shared machine: interleaved variants, a STREAM-like bandwidth bound, the machine's description.

* `interleave(variants, rounds, calls)`: every round times each variant for its `calls` calls, in a rotating order,
  so drifting background load hits all variants alike; it also records the process's CPU share of each block
  (process CPU time / (wall time x threads)): well below 1 means other processes took the cores (contended).
* `stream_bandwidth()`: the machine's bandwidth, best of several repeats of three STREAM-like kernels over
  arrays 4x the last-level cache: Read (sum of a), McCalpin's Copy (b = a) and Triad (a = b + s c); bytes
  counted as STREAM does (every array element read or written once; a write's read-for-ownership is not
  counted, which is why Read is the fastest). A kernel's "% of bound" = (its bytes / the best rate) / its best
  time: <= 100% for a kernel that moves at least the bytes it is credited with.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["Samples", "interleave", "stream_bandwidth", "llc_bytes", "machine", "commit"]


@dataclass
class Samples:
    """Per-call seconds of one variant (one value per round) and the CPU share of each round's block."""

    times: list[float] = field(default_factory=list)
    cpu_share: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def share(self) -> float:
        return statistics.median(self.cpu_share)


def interleave(variants: dict[str, Callable[[int], Any]], rounds: int,
               calls: int | dict[str, int]) -> dict[str, Samples]:
    """Time fn(i) (i = call index, for cycling input sets) of every variant, interleaved round by round; `calls`
    per timed block, one count for all variants or one per variant."""
    out = {k: Samples() for k in variants}
    names = list(variants)
    per = calls if isinstance(calls, dict) else dict.fromkeys(names, calls)
    threads = max(1, torch.get_num_threads())
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn, n = variants[k], per[k]
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(n):
                fn(i)
            wall = time.perf_counter() - t0
            out[k].times.append(wall / n)
            out[k].cpu_share.append((time.process_time() - c0) / max(wall * threads, 1e-12))
    return out


def llc_bytes() -> int:
    """The largest CPU cache (sysfs), 32 MiB when unknown."""
    best = 0
    for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            txt = p.read_text().strip().upper()
            mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(txt[-1], 1)
            best = max(best, int(txt.rstrip("KMG")) * mult)
        except (OSError, ValueError):
            continue
    return best or 32 * 1024 ** 2


def stream_bandwidth(repeats: int = 10, array_bytes: int | None = None) -> dict[str, float]:
    """Best-of-`repeats` bytes/s of STREAM Copy and Triad (float32 arrays of array_bytes, default 4x LLC)."""
    n = (array_bytes or max(4 * llc_bytes(), 64 * 1024 ** 2)) // 4
    a, b, c = torch.rand(n), torch.rand(n), torch.rand(n)
    best = {"read": 0.0, "copy": 0.0, "triad": 0.0}
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        best["read"] = max(best["read"], 4 * n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        b.copy_(a)
        best["copy"] = max(best["copy"], 2 * 4 * n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best["triad"] = max(best["triad"], 3 * 4 * n / (time.perf_counter() - t0))
    best["bound"] = max(best["read"], best["copy"], best["triad"])
    return best


def commit() -> str:
    """The source checkout's commit (provenance.git_commit, short), else the package version."""
    import msdfast

    from ..provenance import git_commit

    full = git_commit()
    if full is None:
        return f"msdfast {msdfast.__version__} (no checkout)"
    sha, _, dirty = full.partition("-")
    return sha[:12] + ("-" + dirty if dirty else "")


def machine() -> dict[str, Any]:
    """CPU model, usable CPUs, torch threads, vector ISA, versions, the load average now."""
    from .. import _threads

    cpu = platform.processor() or "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "usable_cpus": _threads.available_cpus(), "threads": torch.get_num_threads(),
            "isa": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "python": platform.python_version(), "llc_mib": llc_bytes() / 1024 ** 2,
            "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"), "load_avg": os.getloadavg()[0],
            "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def machine_line() -> str:
    """One line for a results file: commit, CPU, usable CPUs, threads, ISA, torch, date, load average now."""
    m = machine()
    return (f"commit {m['commit']}; {m['cpu']}, {m['usable_cpus']} CPUs usable; torch {m['torch']}, "
            f"{m['threads']} threads, ISA {m['isa']}; {m['date']}; 1-min load {m['load_avg']:.1f}")


def emit_report(text: str, out: str | None) -> None:
    """Print a benchmark's markdown report and write it to `out` when given."""
    print(text)
    if out:
        Path(out).write_text(text)
