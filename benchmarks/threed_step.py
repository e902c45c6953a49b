"""The `msdfast 3d` step on the CPU at the command's defaults (64 px renders, 64 samples per ray, threestudio's
16-level 2^19 hash grid, MSD), on the tiny random SD (msdfast.testing.tiny_sd), so the NeRF dominates as it does
when the UNet runs elsewhere.

    python benchmarks/threed_step.py --rounds 3 --steps 12 --out benchmarks/results/threed_step_cpu.md

Variants, interleaved round by round in ONE process (same machine state for each):
  before     dense sampler (no occupancy grid), torch.optim.AdamW with torch's CPU default (per-parameter loop)
  fused      dense sampler, AdamW(fused=True) (msdfast.pipelines.common.make_optimizer)
  default    the occupancy grid (msdfast.fields.occupancy) + fused AdamW: today's `msdfast 3d`
Each variant runs `distill_3d` for --steps steps and reports the median of its per-step wall times (metrics'
"seconds": estimator + render + backward + optimizer step), the first step excluded; the ratio is
before / default of the per-variant medians of the round medians. Also the fraction of samples the network
evaluated (the grid's effect) and the machine's 1-minute load average, since others share the machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from unittest import mock

import torch

import msdfast
from msdfast.bench.harness import emit_report, machine_line
from msdfast.pipelines import threed
from msdfast.pipelines.threed import ThreeDConfig, distill_3d
from msdfast.testing.tiny_sd import tiny_sd_path

VARIANTS = ("before", "fused", "default")


def _plain_adamw(params, cfg):  # noqa: ANN001, ANN202 -- the optimiser before issue 18
    return torch.optim.AdamW(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay)


def run_variant(variant: str, steps: int, model: str, den, out: Path) -> tuple[float, float]:  # noqa: ANN001
    cfg = ThreeDConfig(model=model, prompt="a red apple", steps=steps, out=str(out), progress=False,
                       ckpt_every=0, snapshot_every=0,
                       occupancy_resolution=0 if variant in ("before", "fused") else 32)
    patch = mock.patch.object(threed, "make_optimizer", _plain_adamw) if variant == "before" else mock.patch.object(
        threed, "make_optimizer", threed.make_optimizer)
    with patch:
        m = distill_3d(cfg, denoiser=den)
    secs = [r["seconds"] for r in m["history"][1:]]
    evaluated = [r.get("samples_evaluated", 1.0) for r in m["history"][1:]]
    return statistics.median(secs), statistics.mean(evaluated)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    from msdfast.denoisers.sd import load_stable_diffusion

    tmp = Path(tempfile.mkdtemp(prefix="msdfast_3d_bench_"))
    model = tiny_sd_path(root=tmp)
    den = load_stable_diffusion(model, cache_dir=tmp / "cache")
    res: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
    for r in range(a.rounds):
        for v in VARIANTS:
            load = os.getloadavg()[0]
            med, ev = run_variant(v, a.steps, str(model), den, tmp / f"{v}_{r}")
            res[v].append((med, ev, load))
            print(f"round {r} {v:8s}: median step {med * 1e3:7.1f} ms, samples evaluated {ev:.2f}, load {load:.1f}",
                  flush=True)
    meds = {v: statistics.median(x[0] for x in res[v]) for v in VARIANTS}
    lines = ["# `msdfast 3d` step on the CPU (issue 18 item 2)", "",
             f"{machine_line()}; msdfast {msdfast.__version__}", "",
             f"Command: `OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/threed_step.py --rounds "
             f"{a.rounds} --steps {a.steps}` (tiny SD, "
             "`msdfast 3d` defaults otherwise: 64 px, 64 samples/ray, 16-level 2^19 hash grid, MSD)", "",
             "| variant | median step ms (per round) | samples evaluated | load avg before each round |",
             "|---|---|---:|---|"]
    for v in VARIANTS:
        lines.append(f"| {v} | {meds[v] * 1e3:.1f} ({', '.join(f'{x[0] * 1e3:.0f}' for x in res[v])}) | "
                     f"{statistics.mean(x[1] for x in res[v]):.2f} | {', '.join(f'{x[2]:.1f}' for x in res[v])} |")
    lines += ["", f"**before / default = {meds['before'] / meds['default']:.2f}x** (target >= 3x); "
              f"before / fused = {meds['before'] / meds['fused']:.2f}x (the optimiser alone)."]
    emit_report("\n".join(lines) + "\n", a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
