"""A small UNet's call time against the OpenMP wait policy and the thread count, idle and beside one busy
process: what msdfast's default (OMP_WAIT_POLICY=PASSIVE, threads = usable CPUs; msdfast/_threads.py) costs a
model made of many small ops, such as the digits model msdfast ships.

    python benchmarks/unet_threads.py --rounds 3 --out benchmarks/results/unet_threads_cpu.md

Each variant runs in its own subprocess (the wait policy is read once, when torch loads its OpenMP runtime) that
times the digits UNet (`den._eps`, no grad) at batch 2 and 16, best-of-30-calls median over the rounds; variants
are interleaved round by round. "busy" rows have one single-threaded Python busy loop running beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"
# name -> (environment, torch threads)
VARIANTS = {
    "PASSIVE, 2 threads (msdfast default)": ({"OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "ACTIVE (spin), 2 threads": ({"OMP_WAIT_POLICY": "ACTIVE"}, 2),
    "libgomp default (torch alone), 2 threads": ({}, 2),
    "1 thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, 1),
}
PROBE = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from msdfast.denoisers.sd import load_stable_diffusion
from msdfast.digits.model import digits_model_path
den = load_stable_diffusion(digits_model_path(), device="cpu")
pe = den.prompt_embeddings("a handwritten 3", "")
out = {}
with torch.no_grad():
    for b in (2, 16):
        z = torch.randn(b, den.latent_channels, den.latent_size, den.latent_size)
        t, c = torch.full((b,), 500), pe.cond.repeat(b, 1, 1)
        for _ in range(3):
            den._eps(z, t, c)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            den._eps(z, t, c)
            times.append(time.perf_counter() - t0)
        out[b] = sorted(times)[len(times) // 2]
print(json.dumps(out))
"""


def _probe(env_extra: dict[str, str], threads: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS",
                                                            "MSDFAST_NUM_THREADS")}
    env.update(env_extra, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", PROBE, str(threads)], env=env, capture_output=True, text=True,
                       check=True, timeout=600)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    a = p.parse_args()

    from msdfast.bench.harness import emit_report, machine_line

    res: dict[tuple[str, bool], list[dict[str, float]]] = {}
    for _ in range(a.rounds):
        for busy in (False, True):
            competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
            try:
                for name, (env, threads) in VARIANTS.items():
                    res.setdefault((name, busy), []).append(_probe(env, threads))
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
    lines = ["# Digits UNet call time vs OpenMP wait policy and threads (CPU)", "",
             f"{machine_line()}; {a.rounds} interleaved rounds; each cell: median over rounds of the median of 30 "
             "calls (ms)", "",
             "| variant | idle b=2 | idle b=16 | one busy process b=2 | one busy process b=16 |",
             "|---|---:|---:|---:|---:|"]
    for name in VARIANTS:
        cells = [statistics.median(r[str(b)] for r in res[(name, busy)]) * 1e3
                 for busy in (False, True) for b in (2, 16)]
        lines.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    lines += ["", f"command: python benchmarks/unet_threads.py --rounds {a.rounds}", ""]
    emit_report("\n".join(lines), a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
