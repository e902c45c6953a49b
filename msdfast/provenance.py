"""Where a run's result came from: the "run" entry of a run folder's config.json.

`provenance(...)` records the msdfast version and the git commit of its source checkout (None when installed
from a wheel), the versions of python / torch / diffusers / transformers, the backend each fused op uses on the
run's device, the absolute model path and a content hash of the model (msdfast.content_hash), plus whatever
the job adds (resolved device, estimator options, sizes). It is written beside the settings and ignored when
the file is read back with --config (msdfast.config.RUN_INFO_KEY).
"""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["provenance", "git_commit", "package_versions"]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout msdfast is imported from (+ "-dirty" with uncommitted changes), else None."""
    src = Path(__file__).resolve().parent.parent
    if not (src / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    import torch

    import msdfast

    out: dict[str, str | None] = {"msdfast": msdfast.__version__, "python": platform.python_version(),
                                  "torch": torch.__version__}
    for pkg in ("diffusers", "transformers", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def provenance(job: str, *, device: Any = None, model: str | Path | None = None, **extra: Any) -> dict[str, Any]:
    """The run entry of config.json (module doc); `extra` entries are added as given."""
    from . import ops
    from .content_hash import content_hash

    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    rec: dict[str, Any] = {"job": job, **package_versions(), "commit": git_commit(),
                           "device": None if device is None else str(device),
                           "backends": {op: row[dev] for op, row in ops.backend_table().items()}}
    if model is not None:
        p = Path(model)
        rec["model_path"] = str(p.resolve())
        rec["model_hash"] = content_hash(p) if p.exists() else None
    rec.update(extra)
    return rec
