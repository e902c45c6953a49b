"""Runs per hour of `msdfast sweep` (one process, the model loaded once) against the same runs as one
`msdfast image` process each (the model -- and torch/diffusers -- loaded per run), on the tiny random SD
(msdfast.testing.tiny_sd), CPU, OMP_NUM_THREADS=1.

    python benchmarks/sweep_throughput.py --rounds 2 --seeds 2 --steps 8 --out benchmarks/results/sweep_throughput_cpu.md

Each round runs both variants one after the other (same machine state), each as real subprocesses timed by
wall clock from launch to exit; the ratio is separate / sweep of the per-variant medians over rounds. On the tiny
model the per-run cost saved is mostly the process start and imports (the UNet is milliseconds); with a real
Stable Diffusion the saved model load is larger, the saved fraction smaller for long runs. K runs per denoiser
call (`--runs-per-batch K`): benchmarks/runs_per_batch.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _env(cache: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MSDFAST_CACHE=str(cache))


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=3600)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=None)
    a = p.parse_args()

    from msdfast.bench.harness import emit_report, machine_line
    from msdfast.testing.tiny_sd import tiny_sd_path

    tmp = Path(tempfile.mkdtemp(prefix="sweep_bench_"))
    model = str(tiny_sd_path(root=tmp))
    prompts, seeds = ["a red apple", "a blue car"], list(range(a.seeds))
    settings = {"steps": a.steps, "resolution": 16, "ckpt_every": 0, "snapshot_every": 0}
    n = len(prompts) * len(seeds)
    env = _env(tmp / "cache")
    times: dict[str, list[float]] = {"sweep": [], "separate": []}
    for r in range(a.rounds):
        spec = tmp / f"spec{r}.json"
        spec.write_text(json.dumps({"job": "image", "model": model, "out": str(tmp / f"sweep{r}"), "prompts": prompts,
                                    "seeds": seeds, "methods": ["sds"], "settings": settings}))
        times["sweep"].append(_timed([sys.executable, "-m", "msdfast", "sweep", str(spec)], env))
        t = 0.0
        for pi, prompt in enumerate(prompts):
            for s in seeds:
                t += _timed([sys.executable, "-m", "msdfast", "image", "--model", model, "--prompt", prompt,
                             "--method", "sds", "--seed", str(s), "--out", str(tmp / f"sep{r}_{pi}_{s}"),
                             "--steps", str(a.steps), "--resolution", "16", "--ckpt-every", "0",
                             "--snapshot-every", "0", "--no-progress"], env)
        times["separate"].append(t)
        print(f"round {r}: sweep {times['sweep'][-1]:.1f} s, separate {t:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"# msdfast sweep vs one process per run (tiny SD, CPU, {n} runs of {a.steps} SDS steps at 16 px)", "",
             f"{machine_line()}; {a.rounds} rounds, OMP_NUM_THREADS=1", "",
             "| variant | wall s (median) | runs/hour | ratio to separate |", "|---|---|---|---|"]
    for k in ("separate", "sweep"):
        lines.append(f"| {k} | {med[k]:.1f} | {3600 * n / med[k]:.0f} | {med['separate'] / med[k]:.2f} |")
    lines += ["", f"command: python benchmarks/sweep_throughput.py --rounds {a.rounds} --seeds {a.seeds} "
              f"--steps {a.steps}", ""]
    emit_report("\n".join(lines), a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
