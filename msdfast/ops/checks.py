"""Argument checks that must read a tensor's VALUES (s > 0, timesteps in range, alpha > 0).

Reading a value of a device tensor (`if torch.any(...)`, `.item()`) is a device-to-host copy that waits for the
GPU: a host sync between two denoiser calls, which also makes the loop impossible to capture in a CUDA graph
(DESIGN/issue 15: "no host sync between two denoiser calls"). So value checks run
  * always on python numbers and on CPU tensors (no device to wait for),
  * on accelerator tensors only in debug mode: `MSDFAST_VALUE_CHECKS=always` or `set_value_checks("always")`,
  * never while torch.compile traces (a data-dependent branch would break the graph),
and `set_value_checks("never")` turns them off everywhere (what an accelerator run does by default; the tests
that count device-to-host conversions per step use it on the CPU). Shape, dtype and device checks are free and
always run.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

MODES = ("auto", "always", "never")
_mode = os.environ.get("MSDFAST_VALUE_CHECKS", "auto")
if _mode not in MODES:
    raise ValueError(f"MSDFAST_VALUE_CHECKS: expected one of {MODES}, got {_mode!r}")


def set_value_checks(mode: str) -> str:
    """Set the mode ("auto": CPU tensors only; "always": also accelerator tensors, a host sync each; "never").
    Returns the previous mode."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    old, _mode = _mode, mode
    return old


def value_checks() -> str:
    """The current mode."""
    return _mode


def wanted(t: torch.Tensor) -> bool:
    """Whether a check reading t's values runs now (never a host sync unless asked for)."""
    if _mode == "never" or torch.compiler.is_compiling():
        return False
    return _mode == "always" or t.is_cpu


def require(t: torch.Tensor, bad: Callable[[torch.Tensor], torch.Tensor], message: str) -> None:
    """Raise ValueError(message) if any element of bad(t) is true, when `wanted(t)`."""
    if wanted(t) and bool(torch.any(bad(t))):
        raise ValueError(message)
