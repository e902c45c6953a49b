"""Checkpoint files that carry a checksum of their payload and are written atomically.

    save_checkpoint(state, out / "checkpoint.pt")
    state = load_checkpoint(out / "checkpoint.pt", map_location="cpu")   # UserInputError naming the file if bad

A checkpoint is a torch.save file holding {"format": "msdfast-checkpoint", "version": 1, "sha256": <hex>,
"payload": <uint8 tensor: the bytes of torch.save(state)>}: still `torch.load(path, weights_only=True)`-loadable, and any flipped,
missing or extra byte of the payload changes its sha256. The state itself may hold tensors, dicts, lists and
primitives only (it is read back with weights_only=True: no pickled code ever runs). Writes go through
msdfast.atomic (a temporary name renamed when complete), so a kill -9 during a save leaves the previous
checkpoint intact.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .errors import UserInputError

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT"]

FORMAT = "msdfast-checkpoint"
_VERSION = 1


def save_checkpoint(state: Any, path: str | os.PathLike) -> None:
    """Serialise `state` (tensors, dicts, lists, primitives), checksum it and write `path` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": _VERSION, "sha256": hashlib.sha256(payload).hexdigest(),
                    "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)},
                   tmp)


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = None) -> Any:
    """The state saved by save_checkpoint; UserInputError naming the file when it is empty, truncated, not a
    checkpoint, or its payload does not match its checksum."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise UserInputError(f"{path}: cannot read the checkpoint ({e.strerror or e})") from e
    if size == 0:
        raise UserInputError(f"{path}: the checkpoint is empty (0 bytes); delete it or start a new run")
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- zip/pickle/EOF errors of a damaged file all mean the same thing
        raise UserInputError(f"{path}: the checkpoint is damaged or truncated and cannot be read "
                             f"({type(e).__name__}); delete it or start a new run") from e
    blob = outer.get("payload") if isinstance(outer, dict) and outer.get("format") == FORMAT else None
    if not (isinstance(blob, torch.Tensor) and blob.dtype == torch.uint8 and blob.ndim == 1):
        raise UserInputError(f"{path}: not an msdfast checkpoint with a checksum (written by another program or "
                             "an older msdfast); start a new run")
    payload = blob.numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise UserInputError(f"{path}: the checkpoint's checksum does not match its contents (the file was "
                             "corrupted); delete it or start a new run")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a payload with a valid checksum that does not load: say so, not how
        raise UserInputError(f"{path}: the checkpoint's contents cannot be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from e
