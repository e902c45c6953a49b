"""Compiled backend: the torch.library ops of msdfast._C (C++/OpenMP on the CPU, CUDA kernels on GPUs).

There is no per-op code here. The convention (csrc/README.md) is that the C++ schema of
`torch.ops.msdfast.<op>` takes exactly the arguments `msdfast.ops` passes to every backend, which are
also the arguments of `reference.<op>`. So, for every op the extension defines, this module
  * registers `reference.<op>` (outputs made contiguous, like the kernels') as the fake/meta kernel, which
    gives torch.compile and `torch.library.opcheck` shapes and dtypes that agree with the reference by
    construction, and
  * registers `torch.ops.msdfast.<op>` with the dispatcher for the device types that have a kernel.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from .. import _backend
from . import _dispatch, reference

NAMESPACE = "msdfast"


def contiguous_outputs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a reference function as a fake kernel: kernels return fresh contiguous tensors."""

    @functools.wraps(fn)
    def fake(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.contiguous()
        return tuple(o.contiguous() if isinstance(o, torch.Tensor) else o for o in out)

    return fake


def _kernel_devices(qualname: str) -> tuple[str, ...]:
    """Device types with a registered kernel for this op ("cpu", "cuda")."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return tuple(dev for dev, key in (("cpu", "CPU"), ("cuda", "CUDA")) if has(qualname, key))


def compiled_ops() -> dict[str, tuple[str, ...]]:
    """{op: device types} for the ops the loaded extension implements (empty without msdfast._C)."""
    if not _backend.has_compiled():
        return {}
    out = {}
    for op in sorted(_dispatch._REGISTRY):
        if hasattr(getattr(torch.ops, NAMESPACE), op):
            out[op] = _kernel_devices(f"{NAMESPACE}::{op}")
    return out


def _register_all() -> None:
    for op, devices in compiled_ops().items():
        torch.library.register_fake(f"{NAMESPACE}::{op}")(contiguous_outputs(getattr(reference, op)))
        if devices:
            # the OpOverload, not the packet: the packet's overload resolution costs ~2 us per call
            _dispatch.register(op, "compiled", getattr(getattr(torch.ops, NAMESPACE), op).default, devices)


_register_all()
