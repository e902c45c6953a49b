"""Runs per hour of `msdfast sweep --runs-per-batch K` (K runs in lockstep, one denoiser evaluation per solver
step for all of them) against K = 1, on the digits model msdfast ships (`--model digits`, the image job: hash-grid
field, VAE encode, estimator, AdamW), CPU.

    python benchmarks/runs_per_batch.py --rounds 3 --out benchmarks/results/runs_per_batch_cpu.md

One process loads the model once; each round runs the same sweep (2 digits x 4 seeds = 8 runs of one method)
at every K, after one untimed warm-up sweep each, in a rotating order (msdfast.bench.harness.interleave), each into a fresh folder, timed by wall
clock; runs/hour = runs / median wall, the ratio is to K = 1 of the same run. "evaluations" counts the batched
UNet calls of one sweep (K = 1: one per run per solver call). Every K uses the same torch thread count (msdfast's
default unless --threads), so K = 1 is not starved of cores that K > 1 gets; msdfast is imported before torch, so
the OpenMP wait policy is the `msdfast` command's.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import msdfast  # noqa: F401 -- before torch, as in the `msdfast` command: its OpenMP wait policy (msdfast._threads)
import torch

KS = (1, 2, 4, 8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--methods", default="sds,msd", help="comma-separated; one table row group per method")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from msdfast.bench.harness import emit_report, interleave, machine_line
    from msdfast.pipelines.common import load_denoiser
    from msdfast.sweep.runner import run_shard
    from msdfast.sweep.spec import expand_runs, load_spec

    tmp = Path(tempfile.mkdtemp(prefix="runs_per_batch_"))
    counter = itertools.count()
    den = None
    rows = []
    for method in a.methods.split(","):
        calls: dict[int, int] = {}

        def sweep(k: int, method: str = method) -> list:
            out = tmp / f"{method}-k{k}-{next(counter)}"
            spec = out.with_suffix(".json")
            spec.write_text(json.dumps({
                "job": "image", "model": "digits", "out": str(out), "methods": [method], "seeds": [0, 1, 2, 3],
                "prompts": ["a handwritten 3", "a handwritten 7"],
                "settings": {"steps": a.steps, "lr": 0.03, "ckpt_every": 0, "snapshot_every": 0, "progress": False}}))
            return expand_runs(load_spec(spec))

        def variant(k: int, method: str = method):  # noqa: ANN202
            def run(_: int) -> None:
                runs = sweep(k)
                n0 = len(den.stats.calls)
                run_shard("image", runs, device="cpu", denoiser=den, runs_per_batch=k)
                calls[k] = len(den.stats.calls) - n0
                shutil.rmtree(runs[0].folder.parent.parent)
            return run

        if den is None:
            den = load_denoiser(sweep(1)[0].config, "cpu")
        n_runs = len(sweep(1))
        variants = {f"K={k}": variant(k) for k in KS}
        for fn in variants.values():   # warm-up (text-embedding cache, first-call allocations): not timed
            fn(0)
        res = interleave(variants, a.rounds, 1)
        base = res["K=1"].median
        for k in KS:
            s = res[f"K={k}"]
            rows.append(f"| {method} | {k} | {n_runs} | {calls[k]} | {s.median:.1f} | {3600 * n_runs / s.median:.0f} | "
                        f"{base / s.median:.2f}x | {s.share:.2f} |")
    lines = [f"# Runs per hour against --runs-per-batch K (digits model, CPU, image job, {a.steps} steps)", "",
             f"{machine_line()}; {a.rounds} interleaved rounds", "",
             "| method | K | runs | UNet evaluations | wall s (median) | runs/hour | ratio to K=1 | CPU share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|", *rows, "",
             f"command: python benchmarks/runs_per_batch.py --rounds {a.rounds} --steps {a.steps} --methods "
             f"{a.methods}" + (f" --threads {a.threads}" if a.threads else ""), ""]
    emit_report("\n".join(lines), a.out)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
