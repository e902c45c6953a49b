"""Loads the optional compiled extension and probes optional accelerators; never raises on import."""
from __future__ import annotations

import importlib.util
import os
import warnings
from types import ModuleType

import torch

_C: ModuleType | None = None
_C_ERROR: str | None = None

if os.environ.get("MSDFAST_DISABLE_EXT") != "1":
    try:
        _C = importlib.import_module("msdfast._C")  # registers torch.ops.msdfast.*
    except Exception as exc:  # ImportError, or an ABI mismatch OSError
        _C, _C_ERROR = None, f"{type(exc).__name__}: {exc}"
        warnings.warn(f"msdfast: compiled extension unavailable ({_C_ERROR}); using reference ops", stacklevel=2)
else:
    _C_ERROR = "disabled by MSDFAST_DISABLE_EXT=1"


def has_compiled() -> bool:
    return _C is not None


def has_triton() -> bool:
    """Triton can run: importable and either a CUDA device or the CPU interpreter (TRITON_INTERPRET=1)."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
