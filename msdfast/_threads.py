"""CPU threading that behaves on a shared machine: how many threads, and how idle workers wait.

Imported by `msdfast/__init__.py` BEFORE torch, because the OpenMP runtime torch links (libgomp) reads its wait
policy once, when it loads:

* ``OMP_WAIT_POLICY=PASSIVE`` (set unless the user set it): a worker that finishes its share of a parallel
  region sleeps on a futex instead of spinning for ~300k iterations. With a spinning policy a busy process on
  one of two cores turns every parallel region into a wait for a descheduled thread while the other spins
  (the default toy run 18 s -> 135 s at 2 threads). Small shapes do not pay the wake-up: the kernels' work
  splits (at::parallel_for grain sizes) run them inline on one thread.
* Thread count: the CPUs this process may use, ``min(len(sched_getaffinity), ceil(cgroup quota / period))``;
  torch's own default counts the affinity mask only, so a container limited to 2 CPUs of a 64-core host would
  start 64 threads. Applied only when neither ``OMP_NUM_THREADS`` nor ``MSDFAST_NUM_THREADS`` is set and the
  result is below torch's count (``MSDFAST_NUM_THREADS=N`` forces N).

If torch was imported before msdfast, the wait policy cannot change any more; `wait_policy()` then reports
what the runtime was started with (unknown -> None) and a user can export ``OMP_WAIT_POLICY=PASSIVE`` themself.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

__all__ = ["prepare_environment", "cpu_quota", "available_cpus", "default_threads", "apply_default_threads",
           "wait_policy", "apply_at_import", "raise_startup_error"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_policy_set_before_runtime: str | None = None
_startup_error: Exception | None = None   # a bad MSDFAST_NUM_THREADS seen at import by the `msdfast` command


def prepare_environment() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE if the OpenMP runtime is not loaded yet (torch not imported) and the user
    left it unset. Call before importing torch."""
    global _policy_set_before_runtime
    if "torch" in sys.modules:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _policy_set_before_runtime = os.environ["OMP_WAIT_POLICY"].upper()


def wait_policy() -> str | None:
    """The OpenMP wait policy the runtime started with, when msdfast saw it (else None: torch came first)."""
    return _policy_set_before_runtime


def _cgroup_paths(proc_cgroup: str) -> list[Path]:
    """cgroup folders holding cpu limits for this process, leaf first, up to the root (v2 unified, v1 cpu)."""
    out: list[Path] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":                                   # v2
            base = _CGROUP_ROOT
        elif "cpu" in controllers.split(","):                   # v1 (cpu,cpuacct)
            base = _CGROUP_ROOT / controllers
            if not base.is_dir():
                base = _CGROUP_ROOT / "cpu"
        else:
            continue
        p = base / rel.lstrip("/")
        while True:
            out.append(p)
            if p == base or p.parent == p:
                break
            p = p.parent
    return out


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def cpu_quota(proc_cgroup: str | None = None) -> float | None:
    """The tightest cgroup CPU quota over this process's cgroup and its parents, in CPUs (quota / period);
    None when unlimited or unreadable. v2: cpu.max "QUOTA PERIOD" ("max" = none); v1: cpu.cfs_quota_us
    (-1 = none) / cpu.cfs_period_us."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    best: float | None = None
    for d in _cgroup_paths(proc_cgroup):
        q: float | None = None
        v2 = _read(d / "cpu.max")
        if v2:
            quota, _, period = v2.partition(" ")
            if quota != "max" and period:
                q = float(quota) / float(period)
        else:
            quota_us, period_us = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
            if quota_us and period_us and int(quota_us) > 0:
                q = int(quota_us) / int(period_us)
        if q is not None and q > 0:
            best = q if best is None else min(best, q)
    return best


def available_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def default_threads() -> int | None:
    """The intra-op thread count msdfast asks for: MSDFAST_NUM_THREADS if set, None if OMP_NUM_THREADS is set
    (the user chose; torch honours it), else available_cpus()."""
    forced = os.environ.get("MSDFAST_NUM_THREADS")
    if forced:
        try:
            n = int(forced)
        except ValueError:
            n = 0
        if n < 1:
            from .errors import UserInputError
            raise UserInputError(f"MSDFAST_NUM_THREADS: expected a positive integer, got {forced!r}")
        return n
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return available_cpus()


def apply_default_threads() -> None:
    """torch.set_num_threads(default_threads()) when that is forced or fewer than torch's current count."""
    import torch

    n = default_threads()
    if n is None:
        return
    if os.environ.get("MSDFAST_NUM_THREADS") or n < torch.get_num_threads():
        torch.set_num_threads(n)


def _invoked_as_cli() -> bool:
    """True when this process is the `msdfast` command: its console script or `python -m msdfast[.cli]`."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("msdfast", "msdfast.exe"):
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(a == "-m" and b in ("msdfast", "msdfast.cli") for a, b in zip(orig, orig[1:]))


def apply_at_import() -> None:
    """apply_default_threads() as `import msdfast` runs it. A bad MSDFAST_NUM_THREADS raises UserInputError here
    (a library import), except in the `msdfast` command, whose console script imports the package before its
    main() can catch anything: there the error is kept and main() reports it as one line (raise_startup_error)."""
    global _startup_error
    from .errors import UserInputError

    try:
        apply_default_threads()
    except UserInputError as err:
        if not _invoked_as_cli():
            raise
        _startup_error = err


def raise_startup_error() -> None:
    """Raise the error apply_at_import() kept for the `msdfast` command, if any (cli.main calls this first)."""
    if _startup_error is not None:
        raise _startup_error

