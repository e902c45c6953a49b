"""Cache entries that are complete, verified, or rebuilt: the one mechanism behind msdfast's on-disk caches
(text embeddings, ONNX exports with their external-data files, TensorRT engines).

    entry = cached_folder(cache / "onnx" / f"unet-{key}", lambda tmp: export(tmp / "unet.onnx"), what="ONNX export")

An entry is a folder named by a content key (the caller's: a hash of everything the entry's bytes depend on).
It is built in a temporary folder next to it and renamed into place when complete (msdfast.atomic.atomic_dir),
with `.complete.json` holding the content hash of its files; so two writers never share a file (an ONNX export's
generic external-data names live inside their own model's folder), a killed build leaves no entry, and a corrupt
entry (a file changed, truncated or missing) is detected on use, reported with its path (one warning), deleted
and rebuilt. A cache that cannot be written (read-only, full, a file where a folder should be) warns once and
the entry is built in a temporary folder for this process only: the run continues uncached.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .atomic import atomic_dir, warn_cache_unwritable
from .content_hash import content_hash

__all__ = ["cached_folder", "load_entry", "store_entry", "SEAL"]

SEAL = ".complete.json"
log = logging.getLogger("msdfast.cache")


def _memo_dir(entry: Path) -> Path:
    return entry.parent.parent / "content_hash"


def load_entry(entry: str | os.PathLike, *, what: str = "cache entry") -> Path | None:
    """`entry` if it is complete and its files match their recorded content hash; None when absent. A corrupt
    entry is reported (warning naming its path) and deleted, and None returned so the caller rebuilds it."""
    entry = Path(entry)
    if not entry.is_dir():
        return None
    try:
        rec = json.loads((entry / SEAL).read_text())
        ok = content_hash(entry, memo_dir=_memo_dir(entry)) == rec["sha256"]
        why = "its files do not match their recorded hash"
    except (OSError, ValueError, KeyError, TypeError) as e:
        ok, why = False, f"it is incomplete ({type(e).__name__})"
    if ok:
        return entry
    log.warning("msdfast: %s %s is corrupt (%s); rebuilding it", what, entry, why)
    shutil.rmtree(entry, ignore_errors=True)
    return None


def store_entry(entry: str | os.PathLike, build: Callable[[Path], None]) -> Path | None:
    """Build the entry with build(tmp_folder) and rename it into place; None (after one warning per cache
    folder) when the cache cannot be written. Errors of `build` itself propagate."""
    entry = Path(entry)
    try:
        with atomic_dir(entry) as tmp:
            build(tmp)
            digest = content_hash(tmp)
            (tmp / SEAL).write_text(json.dumps({"sha256": digest}))
        return entry
    except OSError as e:
        if getattr(e, "filename", None) is not None and not str(e.filename).startswith(str(entry.parent)):
            raise   # an OSError of the build itself (its own input), not of the cache
        warn_cache_unwritable(entry, e)
        return None


def _scratch() -> Path:
    d = Path(tempfile.mkdtemp(prefix="msdfast-uncached-"))
    atexit.register(shutil.rmtree, d, True)
    return d


def cached_folder(entry: str | os.PathLike, build: Callable[[Path], None], *, what: str = "cache entry") -> Path:
    """The verified entry (module doc): loaded if complete and intact, else built (and stored when the cache is
    writable; otherwise in a temporary folder removed at exit)."""
    entry = Path(entry)
    found = load_entry(entry, what=what)
    if found is not None:
        return found
    stored = store_entry(entry, build)
    if stored is not None:
        return stored
    out = _scratch() / entry.name
    out.mkdir()
    build(out)
    return out
