"""Content hashes of files and folders: the one helper for run identity and content-keyed caches.

`content_hash(path)` is sha256 over the bytes of every regular file under `path` (a file or a folder), each
prefixed by its path relative to `path` and its size, in sorted order, so two folders hash alike exactly when
they hold the same files with the same bytes (renaming or moving the folder does not change it; editing,
adding, removing or renaming a file inside does). Hidden files and folders (a leading ".") are skipped unless
`include_hidden`; `exclude` names relative paths (files or folders, posix form) to skip, e.g. a cache folder
living inside a model folder.

Hashing a multi-GB model folder reads every byte (~1-2 s/GB); `file_digest` remembers each file's digest per
(resolved path, size, mtime_ns) for the life of the process, so asking twice pays once, and, given `memo_dir`
(e.g. the msdfast cache's content_hash/), across processes too (one small JSON per file, written atomically;
an unwritable memo folder only costs the re-hash).

`tensors_hash(named_tensors)` is the same for weights already in memory (name, dtype, shape and bytes of each
tensor, in name order): the key of caches derived from a loaded module (text embeddings, ONNX exports), so the
key is what was actually loaded, whatever files it came from.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["content_hash", "file_digest", "hash_bytes", "tensors_hash"]

_CHUNK = 1 << 20
_FILE_CACHE: dict[tuple[str, int, int], str] = {}


def hash_bytes(*parts: bytes | str) -> str:
    """sha256 hex of the parts, each length-prefixed (so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode() if isinstance(p, str) else bytes(p)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def file_digest(path: str | os.PathLike, *, memo_dir: str | os.PathLike | None = None) -> str:
    """sha256 hex of one file's bytes (remembered per resolved path, size and mtime_ns in this process, and in
    `memo_dir` across processes when given)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    d = _FILE_CACHE.get(key)
    if d is not None:
        return d
    memo = Path(memo_dir) / (hashlib.sha256(key[0].encode()).hexdigest()[:32] + ".json") if memo_dir else None
    if memo is not None:
        try:
            rec = json.loads(memo.read_text())
            if [rec["path"], rec["size"], rec["mtime_ns"]] == list(key) and len(rec["sha256"]) == 64:
                d = _FILE_CACHE[key] = rec["sha256"]
                return d
        except (OSError, ValueError, KeyError, TypeError):
            pass   # no memo yet, or a damaged one: hash again and rewrite it
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    d = _FILE_CACHE[key] = h.hexdigest()
    if memo is not None:
        from .atomic import write_cache_entry
        write_cache_entry(memo, json.dumps({"path": key[0], "size": key[1], "mtime_ns": key[2], "sha256": d}).encode())
    return d


def tensors_hash(named: Iterable[tuple[str, Any]]) -> str:
    """sha256 hex of named tensors already in memory (module doc): name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        t = t.detach()
        h.update(hash_bytes(name, str(t.dtype), str(tuple(t.shape))).encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _files(root: Path, include_hidden: bool, exclude: tuple[str, ...]) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root)

        def keep(name: str) -> bool:
            return (include_hidden or not name.startswith(".")) and (rel_dir / name).as_posix() not in exclude

        dirnames[:] = sorted(d for d in dirnames if keep(d))
        for name in sorted(filenames):
            if keep(name):
                yield Path(dirpath) / name


def content_hash(path: str | os.PathLike, *, include_hidden: bool = False,
                 exclude: Iterable[str] = (), memo_dir: str | os.PathLike | None = None) -> str:
    """sha256 hex of the content of a file or folder (module doc). Raises FileNotFoundError if absent."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    h = hashlib.sha256()
    for f in _files(root, include_hidden, tuple(exclude)):
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        h.update(hash_bytes(rel, str(f.stat().st_size), file_digest(f, memo_dir=memo_dir)).encode())
    return h.hexdigest()
