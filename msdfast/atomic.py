"""Atomic file writes: a reader sees the old file, the complete new one, or none -- never half of one.

    with atomic_path(out / "checkpoint.pt") as tmp:   # write tmp; renamed onto the target when the block ends
        torch.save(obj, tmp)
    write_cache_entry(cache / "x.safetensors", data)  # the same for a cache: an unwritable cache warns once
    with atomic_dir(cache / "unet-abc") as tmp:       # a folder (an ONNX export with external-data files)

The temporary name lives in the target's folder (same file system, so os.replace is atomic), carries the pid
and a random suffix (two writers never share it), and is removed when the block raises (kill -9 leaves a
`*.tmp` file behind, never a truncated target).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_dir", "write_atomic", "write_cache_entry", "warn_cache_unwritable"]

log = logging.getLogger("msdfast.cache")
_warned: set[str] = set()


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds it replaces `path` (os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; when the block succeeds it is renamed to `path`. If another
    writer completed `path` meanwhile, theirs is kept (same key, same content) and ours is dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def warn_cache_unwritable(path: str | os.PathLike, err: BaseException) -> None:
    """Warn (once per cache folder) that a cache entry could not be written; the run continues uncached."""
    root = str(Path(path).parent)
    if root not in _warned:
        _warned.add(root)
        log.warning("msdfast: cache %s is not writable (%s); continuing without caching there", root,
                    getattr(err, "strerror", None) or err)


def write_cache_entry(path: str | os.PathLike, data: bytes) -> bool:
    """Write a cache entry atomically; False (after one warning per cache folder) when the cache cannot be
    written: read-only, full, or a file where a folder should be."""
    try:
        write_atomic(path, data)
        return True
    except OSError as e:
        warn_cache_unwritable(path, e)
        return False
