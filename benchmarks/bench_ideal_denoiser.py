"""The empirical ideal denoiser (MSD paper eq. 16) at 1e3 queries x 1e4 data and 1e4 x 1e5 (d = 2):
time AND peak memory of the streaming kernel vs the naive PyTorch version (cdist + softmax + matmul on the
full M x N matrix).

Peak memory is measured, per variant and size, in a fresh subprocess: the process's peak resident set size
during one call minus its resident size just before (the peak mark VmHWM is reset through
/proc/self/clear_refs first; where that is not allowed, the growth of ru_maxrss), after the inputs exist and a
small warm-up call has loaded every library. tracemalloc cannot see torch's allocations. The analytic
allocation is recorded beside it: naive = 2 live M x N float32 matrices (the cdist result and its softmax)
= 8 M N bytes; streaming = O((M + N) d) (the output and an SoA copy of the data).

Run: pytest benchmarks/bench_ideal_denoiser.py --benchmark-only   (the naive 1e4 x 1e5 case needs ~8 GB)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from msdfast.ops import _dispatch

SIZES = {"1e3x1e4": (1_000, 10_000), "1e4x1e5": (10_000, 100_000)}
S = 0.1  # noise level of every query (any value; the cost does not depend on it)


def naive(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The textbook version: materialise all M x N logits."""
    w = torch.softmax(-torch.cdist(x, data).square() / (2 * s[:, None] ** 2), dim=1)
    return w @ data


def variant(name: str):
    if name == "naive":
        return naive
    return _dispatch._REGISTRY["empirical_denoiser"][name][0]


def inputs(M: int, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(M, 2, generator=g), torch.randn(N, 2, generator=g), torch.full((M,), S)


_CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {bench_dir!r})
import bench_ideal_denoiser as b

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    return None

name, M, N = {name!r}, {M}, {N}
fn = b.variant(name)
fn(*b.inputs(64, 256))                       # load libraries, spawn threads
x, data, s = b.inputs(M, N)
rss = status("VmRSS")
try:                                         # reset the peak-RSS mark (Linux >= 4.0) so VmHWM is this call's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    method, before = "VmHWM", rss
except OSError:                              # fall back to ru_maxrss growth (0 if below the import peak)
    method, before = "ru_maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = fn(x, data, s)
after = status("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(peak_mb=max(after - before, 0.0), method=method)))
"""


def peak_memory_mb(name: str, M: int, N: int) -> float:
    """Peak RSS growth (MiB) of one call of `name` at M x N, in a fresh process."""
    code = _CHILD.format(bench_dir=os.path.dirname(os.path.abspath(__file__)), name=name, M=M, N=N)
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=here)
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]


def analytic_mb(name: str, M: int, N: int) -> float:
    """Allocation model: naive holds two M x N float32 matrices at once; the chunked reference two
    4096 x N chunks; the streaming kernel the output and an SoA copy of the data."""
    if name == "naive":
        return 8 * M * N / 2**20
    if name == "reference":
        return 8 * min(M, 4096) * N / 2**20
    return 4 * (M * 2 + N * 2) / 2**20


@pytest.mark.parametrize("impl", ["naive", "reference", "compiled"])
@pytest.mark.parametrize("size", list(SIZES))
def test_ideal_denoiser(record_env, size, impl):
    benchmark = record_env
    M, N = SIZES[size]
    if impl != "naive" and impl not in _dispatch.available("empirical_denoiser", "cpu"):
        pytest.skip(f"{impl} backend unavailable")
    if impl == "reference" and M * N > 1e8:
        pytest.skip("the chunked reference is only timed at the small size")
    fn = variant(impl)
    x, data, s = inputs(M, N)
    benchmark.group = f"ideal_denoiser-cpu-{size}-fp32"
    benchmark.extra_info.update(op="empirical_denoiser", impl=impl, device="cpu", shape=[M, N, 2], dtype="float32",
                                peak_mb=peak_memory_mb(impl, M, N), analytic_mb=analytic_mb(impl, M, N))
    out = benchmark.pedantic(fn, args=(x, data, s), rounds=3 if M * N > 1e8 else 10, warmup_rounds=1,
                             iterations=1)
    assert torch.isfinite(out).all()
