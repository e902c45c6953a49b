"""Small gmm_score calls on a shared machine: the toy's tree-sized mixture (K = 1016 components, float64) at a few
query counts M, timed at 1 and 2 threads, with the machine as it is and with one more busy process beside it (a
Python spin loop); the 1-minute load average before each block says what "as it is" was.
Each (M, threads) cell runs in its own subprocess (the thread count is fixed at start); median of 7 blocks of 20
calls, ms per call. csrc/cpu/gmm_score.cpp gives a parallel task >= 2^17 query x component pairs, so M <= 128
(<= 130k pairs) runs inline on one thread.

    python benchmarks/gmm_small_calls.py [--out benchmarks/results/gmm_small_calls.md]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from msdfast.bench.harness import emit_report, machine_line

K = 1016
SIZES = (64, 128, 256, 2048)
_CELL = """
import statistics, sys, time, torch, msdfast
from msdfast import ops
torch.set_num_threads(int(sys.argv[1]))
M, K = int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
A = torch.randn(K, 2, 2, generator=g, dtype=torch.float64) * 0.1
args = (torch.randn(M, 2, generator=g, dtype=torch.float64), torch.rand(K, generator=g, dtype=torch.float64),
        torch.randn(K, 2, generator=g, dtype=torch.float64), A @ A.transpose(1, 2) + 1e-4 * torch.eye(2, dtype=torch.float64),
        torch.rand(M, generator=g, dtype=torch.float64) * 0.5)
for _ in range(3):
    ops.gmm_score(*args)
ts = []
for _ in range(7):
    t0 = time.perf_counter()
    for _ in range(20):
        ops.gmm_score(*args)
    ts.append((time.perf_counter() - t0) / 20)
print(statistics.median(ts))
"""


def _cell(threads: int, m: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MSDFAST_NUM_THREADS")}
    out = subprocess.check_output([sys.executable, "-c", _CELL, str(threads), str(m), str(K)], env=env, text=True)
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            if spinner is not None:
                time.sleep(1.0)
            for m in SIZES:
                t1, t2 = _cell(1, m), _cell(2, m)
                rows.append(f"| {'+ one busy process' if busy else 'as is'} (load {os.getloadavg()[0]:.1f}) | {m} | "
                            f"{m * K / 1e3:.0f}k | "
                            f"{t1 * 1e3:.2f} | {t2 * 1e3:.2f} | {t2 / t1:.2f} |")
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()
    text = "\n".join([f"# gmm_score small calls, 1 vs 2 threads ({machine_line()})", "",
                      "`python benchmarks/gmm_small_calls.py`; K = 1016 float64 (the tree toy), ms per call "
                      "(median of 7 blocks of 20 calls, one subprocess per cell).", "",
                      "| machine | M | pairs | 1 thread | 2 threads | 2 / 1 |", "|---|---:|---:|---:|---:|---:|",
                      *rows]) + "\n"
    emit_report(text, a.out)


if __name__ == "__main__":
    main()
