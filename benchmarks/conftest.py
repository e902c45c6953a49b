"""Setup of the pytest-benchmark file benchmarks/bench_ideal_denoiser.py (peak memory of the streaming ideal
denoiser vs the naive version; needs requirements-dev.txt). Kernel TIMES are `msdfast bench kernels`
(msdfast/bench: interleaved, with inductor columns and a STREAM bound), which needs neither this folder nor
pytest-benchmark:

    python -m pytest benchmarks/bench_ideal_denoiser.py --benchmark-only
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # same environment as the tests (Triton is not timed on CPU)

import msdfast  # noqa: E402

# MSDFAST_BENCH_THREADS=N pins torch's intra-op threads (OpenMP) for the run. On a shared, oversubscribed
# machine, parallel regions stall whenever a worker thread is descheduled, so single-thread runs there are the
# reproducible ones; the JSON records the thread count either way.
if os.environ.get("MSDFAST_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["MSDFAST_BENCH_THREADS"]))


@pytest.fixture
def record_env(benchmark):
    """Store the software context of the run in the JSON (extra_info of every benchmark)."""
    info = msdfast._backend._C.build_info() if msdfast._backend.has_compiled() else {}
    # The CPU's vector ISA decides which clone of the compiled kernels runs (AVX-512 / AVX2 / baseline).
    benchmark.extra_info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                                isa=torch.backends.cpu.get_cpu_capability(),
                                build=", ".join(f"{k}={v}" for k, v in info.items()))
    return benchmark


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Keep result files small enough to commit: drop the per-round raw timings (the stats stay)."""
    for bench in output_json.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
