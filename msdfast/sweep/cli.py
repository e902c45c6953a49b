"""`msdfast sweep SPEC`: every run of a sweep spec (msdfast.sweep.spec), sharded over torchrun ranks / SLURM
array tasks (msdfast.sweep.shard), then the summary (msdfast.sweep.summary).

    msdfast sweep sweep.yaml --dry-run                    # the run list: id, shard, state, method, seed, ...
    msdfast sweep sweep.yaml                              # everything in this process
    torchrun --standalone --nproc_per_node=4 -m msdfast sweep sweep.yaml   # one shard per rank (GPU i: rank i)
    msdfast sweep sweep.yaml --runs-per-batch 8           # 8 runs per denoiser call (lockstep)
    msdfast sweep sweep.yaml --collect                    # (re)write the summary from the run folders
"""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from ..atomic import write_atomic
from ..config import config_to_dict
from ..errors import UserInputError

__all__ = ["add_sweep_arguments", "run_sweep"]

log = logging.getLogger("msdfast.sweep")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="the sweep spec, YAML or JSON (job, model, prompts, seeds, methods, "
                                                "settings, method_options, grid, out)")
    p.add_argument("--dry-run", action="store_true", help="print the run list (with this process's shard) and exit")
    p.add_argument("--collect", action="store_true",
                   help="write summary.json / summary.md / contact_sheet.png from the run folders and exit")
    p.add_argument("--runs-per-batch", type=int, default=1, metavar="K",
                   help="advance K runs of this process's shard in lockstep, ONE denoiser evaluation per solver step "
                        "for all of them (the throughput lever on a GPU); each run equals its solo run up to the "
                        "model's float round-off at another batch size (default 1: one run at a time)")


def _check_before_loading(spec: Any, runs: list[Any], source: str) -> None:
    """The model argument and every run's estimator option values (on the model's noise schedule), before the
    model loads."""
    from ..pipelines.common import _check_option_values as check_option_values, check_model_arg

    check_model_arg(spec.model, "model")
    checked = set()
    for r in runs:
        key = (r.method, json.dumps(r.config.estimator_options(), sort_keys=True, default=str))
        if key not in checked:
            checked.add(key)
            try:
                check_option_values(r.config)
            except UserInputError as e:
                raise UserInputError(f"{source}: run ({r.label}): {e}") from None


def run_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .runner import run_shard, run_state
    from .shard import barrier, init_process_group, shard_from_env, take_shard
    from .spec import SHARED_MODEL_JOBS, expand_runs, load_spec
    from .summary import collect

    if args.runs_per_batch < 1:
        raise UserInputError(f"--runs-per-batch: must be >= 1, got {args.runs_per_batch}")
    spec = load_spec(args.spec)
    runs = expand_runs(spec, source=args.spec)
    shard = shard_from_env()
    if args.dry_run:
        print(f"# {len(runs)} runs ({spec.job}) in {Path(spec.out) / 'runs'}; this process: shard {shard.index} of "
              f"{shard.count}")
        print("id\tshard\tstate\tmethod\tseed\tprompt\tvariant")
        for i, r in enumerate(runs):
            print(f"{r.id}\t{i % shard.count}\t{run_state(r.folder)}\t{r.method}\t{r.seed}\t{r.prompt_index}\t"
                  f"{r.variant_label or '-'}")
        return 0
    if args.collect:
        s = collect(spec, runs)
        print(f"sweep: {sum(r['finished'] for r in s['runs'])}/{len(runs)} runs finished -> "
              f"{Path(spec.out) / 'summary.md'}")
        return 0

    if spec.job in SHARED_MODEL_JOBS:
        _check_before_loading(spec, runs, args.spec)
    elif args.runs_per_batch > 1:
        raise UserInputError(f"--runs-per-batch: job {spec.job} runs one cell at a time (its denoisers come with "
                             "each column, there is no one model to batch)")
    device = shard.device(getattr(runs[0].config, "device", None))
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    if shard.index == 0:   # the resolved run list, for people and scripts (the run folders hold the configs)
        write_atomic(out / "runs.json", json.dumps(
            {r.id: {"label": r.label, "config": config_to_dict(r.config)} for r in runs}, indent=2).encode())
    created = init_process_group(shard, device)
    try:
        mine = take_shard(runs, shard)
        outcome = run_shard(spec.job, mine, device=device, runs_per_batch=args.runs_per_batch)
        barrier(shard)
    finally:
        if created:
            import torch.distributed as dist
            dist.destroy_process_group()
    counts = {k: sum(v == k for v in outcome.values()) for k in ("ran", "done", "busy", "stopped")}
    print(f"sweep: shard {shard.index}/{shard.count}: {len(mine)} runs ("
          + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ")")
    if shard.rank == 0 and all(run_state(r.folder) == "done" for r in runs):
        collect(spec, runs)   # torchrun: after the barrier; a SLURM array: the last task to finish
        print(f"sweep: all {len(runs)} runs finished -> {out / 'summary.md'}")
    elif shard.rank == 0:
        print(f"sweep: some runs are not finished yet (other shards); `msdfast sweep {args.spec} --collect` "
              "writes the summary later")
    return 0
