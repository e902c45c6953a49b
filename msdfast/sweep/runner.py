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
from .spec import SHARED_MODEL_JOBS, Run, job_api

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
              estimator_factory: Any = None, runs_per_batch: int = 1) -> dict[str, str]:
    """Run (or resume, or skip) every run of this shard; returns {run id: what happened}.

    denoiser: the loaded model (default: loaded once here, from the first pending run's settings -- the load
    settings are the same for every run of a sweep: msdfast.sweep.spec.LOAD_KEYS).
    runs_per_batch: K > 1 advances K runs in lockstep, one denoiser evaluation per solver step for all of them
    (msdfast.denoisers.lockstep): slot j of K takes the pending runs j, j + K, j + 2K, ... in order.
    """
    from ..pipelines.common import load_denoiser

    if runs_per_batch < 1:
        raise UserInputError(f"--runs-per-batch: must be >= 1, got {runs_per_batch}")
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
    if not pending:
        return outcome
    if job in SHARED_MODEL_JOBS:
        for r, _ in pending:
            r.config.device = device
        if denoiser is None:
            denoiser = load_denoiser(pending[0][0].config, device)
    elif runs_per_batch > 1:
        raise UserInputError(f"--runs-per-batch: job {job} runs one cell at a time (no one model to batch)")
    slots = min(runs_per_batch, len(pending))
    if slots == 1:
        for i, item in enumerate(pending):
            _one_run(job, item, i, len(pending), denoiser, estimator_factory, outcome)
        return outcome
    return _run_lockstep(job, pending, slots, denoiser, estimator_factory, outcome)


def _one_run(job: str, item: tuple[Run, str], i: int, n: int, denoiser: Any, estimator_factory: Any,
             outcome: dict[str, str]) -> None:
    """Run one pending run through its job's run function, recording what happened in `outcome`."""
    _, run_fn = job_api(job)
    r, state = item
    log.info("[%d/%d] %s run %s (%s)", i + 1, n, {"new": "starting", "restart": "restarting",
             "resume": "resuming"}[state], r.id, r.label)
    try:
        m = run_fn(r.config, resume=state == "resume", overwrite=state == "restart", denoiser=denoiser,
                   estimator_factory=estimator_factory)
    except UserInputError:
        if not _held_elsewhere(r.folder):
            raise
        outcome[r.id] = "busy"    # another process took the folder after our check (e.g. a second launch)
        log.warning("run %s (%s) was taken by another process; leaving it", r.id, r.label)
        return
    outcome[r.id] = "ran" if m["finished"] else "stopped"


def _run_lockstep(job: str, pending: list[tuple[Run, str]], slots: int, denoiser: Any, estimator_factory: Any,
                  outcome: dict[str, str]) -> dict[str, str]:
    """`slots` threads, one BatchMember each, run the pending runs K at a time in lockstep (run_shard's doc).

    A failing run stops its slot (its later runs are not started) and every slot's later runs; the runs already
    going finish, then the first failure is raised. Finished runs stay finished: a restart skips them.
    """
    import threading

    from ..denoisers.lockstep import LockstepBatcher

    batcher = LockstepBatcher(denoiser)
    members = [batcher.join() for _ in range(slots)]   # all joined before any thread starts: no early fire
    errors: list[BaseException] = []
    stop = threading.Event()

    def slot(j: int) -> None:
        member = members[j]
        try:
            for i in range(j, len(pending), slots):
                if stop.is_set():
                    break
                with member.serialized_setup():
                    _one_run(job, pending[i], i, len(pending), member, estimator_factory, outcome)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the calling thread below
            errors.append(e)
            stop.set()
        finally:
            member.leave()

    # daemon threads: Ctrl-C in the main thread ends the process (each run resumes from its checkpoint)
    threads = [threading.Thread(target=slot, args=(j,), name=f"msdfast-run-slot-{j}", daemon=True)
               for j in range(slots)]
    for t in threads:
        t.start()
    try:
        batcher.serve()          # this thread (it loaded the model) makes every batched evaluation
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        raise
    log.info("lockstep: %d runs in %d slots, %d batched evaluations", len(pending), slots, batcher.calls)
    if errors:
        raise errors[0]
    return outcome
