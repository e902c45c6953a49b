"""Run a shard of a sweep: the model loaded once, each run through the job's own run function.

Each run is exactly what `msdfast <job> --config RUN/config.json` would do: the job's config dataclass and its
run function (msdfast.pipelines.image.distill_image, ...), given the process's one loaded denoiser (the run
function's `denoiser=` argument), so every run folder has the job's layout and resumes like it.

A run's state decides what happens to it (restarting a sweep is always safe):
  * finished (metrics.json says so): skipped;
  * a checkpoint.pt: resumed from it (the pipelines resume bit-exactly on the CPU);
  * started but never checkpointed (config.json, no checkpoint): started again (--overwrite of that folder);
  * held by another live process (its run.lock, msdfast.runlock): left to that process.
One writer per run folder is msdfast.runlock's lock, taken by the run function (open_run_folder); a worker
killed mid-run leaves a stale lock that the next worker takes over.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserInputError
from .spec import Run, job_api

__all__ = ["run_state", "run_shard"]

log = logging.getLogger("msdfast.sweep")


def run_state(folder: Path) -> str:
    """"done", "resume", "restart" (started, never checkpointed) or "new" (module doc)."""
    try:
        if json.loads((folder / "metrics.json").read_text()).get("finished"):
            return "done"
    except (OSError, ValueError, AttributeError):
        pass
    if (folder / "checkpoint.pt").exists():
        return "resume"
    if folder.is_dir() and any(p.name != "run.lock" for p in folder.iterdir()):
        return "restart"
    return "new"


def _clear_unstarted(folder: Path) -> str:
    """A folder a worker was killed in before it wrote config.json: only empty folders (snapshots/) and
    atomic-write leftovers (.*.tmp) can be there; they are removed so that the run starts as new (anything
    else is left, and open_run_folder reports it)."""
    if any((folder / m).exists() for m in ("config.json", "metrics.json", "checkpoint.pt")):
        return "restart"
    for p in folder.iterdir():
        if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
            p.rmdir()
        elif p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink()
    return run_state(folder)


def _held_elsewhere(folder: Path) -> bool:
    """Whether another live process holds the run folder's lock (msdfast.runlock)."""
    from ..runlock import RunLock

    if not folder.is_dir():
        return False
    try:
        RunLock(folder).acquire().release()
    except UserInputError:
        return True
    return False


def run_shard(job: str, runs: Sequence[Run], *, device: str, denoiser: Any = None,
              estimator_factory: Any = None) -> dict[str, str]:
    """Run (or resume, or skip) every run of this shard; returns {run id: what happened}.

    denoiser: the loaded model (default: loaded once here, from the first pending run's settings -- the load
    settings are the same for every run of a sweep: msdfast.sweep.spec.LOAD_KEYS).
    """
    from ..pipelines.common import load_denoiser

    _, run_fn = job_api(job)
    outcome: dict[str, str] = {}
    pending = []
    for r in runs:
        state = run_state(r.folder)
        if state == "done":
            outcome[r.id] = "done"
        elif _held_elsewhere(r.folder):
            outcome[r.id] = "busy"
            log.warning("run %s (%s) is held by another process; leaving it", r.id, r.label)
        else:
            pending.append((r, _clear_unstarted(r.folder) if state == "restart" else state))
    log.info("%d runs in this shard: %d done, %d to run", len(runs), sum(v == "done" for v in
             outcome.values()), len(pending))
    for i, (r, state) in enumerate(pending):
        cfg = r.config
        cfg.device = device
        if denoiser is None:
            denoiser = load_denoiser(cfg, device)
        log.info("[%d/%d] %s run %s (%s)", i + 1, len(pending), {"new": "starting", "restart": "restarting",
                 "resume": "resuming"}[state], r.id, r.label)
        try:
            m = run_fn(cfg, resume=state == "resume", overwrite=state == "restart", denoiser=denoiser,
                       estimator_factory=estimator_factory)
        except UserInputError:
            if not _held_elsewhere(r.folder):
                raise
            outcome[r.id] = "busy"    # another process took the folder after our check (e.g. a second launch)
            log.warning("run %s (%s) was taken by another process; leaving it", r.id, r.label)
            continue
        outcome[r.id] = "ran" if m["finished"] else "stopped"
    return outcome
