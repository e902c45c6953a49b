"""Extra helpers of the fused-kernel tests (test_ops_<op>.py beyond ddim_step), on top of ops_helpers:
a runtime skip for a backend that is missing here, and opcheck on the compiled op or the Triton custom op."""
from __future__ import annotations

import pytest
import torch
from ops_helpers import FAST_BACKENDS, TOL, device_params, noncontiguous  # noqa: F401  (re-exported)

from msdfast.ops import _dispatch

DEVICES = device_params()
FAST = FAST_BACKENDS


def need(op: str, backend: str, device: str) -> None:
    """Skip unless `backend` implements `op` on `device` in this environment."""
    if backend not in _dispatch.available(op, device):
        pytest.skip(f"{backend} backend of {op} unavailable on {device}")


def custom_op(op: str, backend: str):
    """The torch.library op behind a backend."""
    if backend == "compiled":
        return getattr(torch.ops.msdfast, op).default
    from msdfast.ops import _triton
    return _triton.OPS[op]


def opcheck(op: str, backend: str, args: tuple) -> None:
    torch.library.opcheck(custom_op(op, backend), args)
