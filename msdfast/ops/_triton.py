"""Triton backend: the framework; the kernels live in msdfast/ops/triton_kernels/<op>.py.

A kernel module defines a launcher with the backend call signature of its op (the arguments of
`reference.<op>`, with real type hints: no `from __future__ import annotations`, torch infers the op
schema from them) and decorates it with `@triton_backend("<op>")`. That one line wraps the launcher in
`torch.library.custom_op("msdfast_triton::<op>")` (not `triton_op`: it fails opcheck
and torch.compile under the interpreter), registers `reference.<op>` as the fake kernel and registers
the op with the dispatcher. Every module in triton_kernels/ is imported automatically.

Triton runs on CUDA tensors, and on CPU tensors under TRITON_INTERPRET=1 (which must be set before this
module is imported; tests/conftest.py does it). A kernel module that fails to import is reported by
`msdfast.info()` and never breaks `import msdfast`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pkgutil
import warnings
from typing import Any, Callable

import torch

from .. import _backend
from . import _dispatch, reference
from ._compiled import contiguous_outputs

NAMESPACE = "msdfast_triton"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

OPS: dict[str, Any] = {}          # op -> the custom op (callable like the launcher)
ERRORS: dict[str, str] = {}       # kernel module -> why it did not load


def devices() -> tuple[str, ...]:
    """Device types Triton kernels can run on here."""
    devs = ("cuda",) if torch.cuda.is_available() else ()
    return devs + (("cpu",) if INTERPRET else ())


def autotune_configs(gpu: list[dict[str, Any]], interpret: dict[str, Any], num_warps: int = 4) -> list[Any]:
    """triton.Config list: the GPU candidates, or the single `interpret` one under TRITON_INTERPRET=1
    (the autotuner's benchmarker needs a GPU driver, so >1 config fails in the interpreter).

    Each dict holds the kernel's meta-parameters, plus optional "num_warps"/"num_stages".
    """
    import triton

    def cfg(d: dict[str, Any]) -> Any:
        d = dict(d)
        return triton.Config(d, num_warps=d.pop("num_warps", num_warps), num_stages=d.pop("num_stages", 2))

    return [cfg(interpret)] if INTERPRET else [cfg(d) for d in gpu]


def device_guard(args: tuple[Any, ...]) -> Any:
    """The context a launch runs in: the CUDA device of its first CUDA tensor argument (Triton launches on the
    current device, which need not be the tensors' one on a multi-GPU machine), else a no-op."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_cuda:
            return torch.cuda.device(a.device)
    return contextlib.nullcontext()


def triton_backend(op: str) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: register a Triton launcher as the `triton` backend of msdfast.ops.<op> (launched on the
    tensors' device)."""

    def wrap(launcher: Callable[..., Any]) -> Any:
        @functools.wraps(launcher)   # keeps the signature and type hints torch.library infers the schema from
        def on_device(*args: Any) -> Any:
            with device_guard(args):
                return launcher(*args)

        custom = torch.library.custom_op(f"{NAMESPACE}::{op}", on_device, mutates_args=())
        custom.register_fake(contiguous_outputs(getattr(reference, op)))
        OPS[op] = custom
        _dispatch.register(op, "triton", custom, devices())
        return custom

    return wrap


def _load_kernels() -> None:
    if not _backend.has_triton():
        return
    from . import triton_kernels

    for mod in pkgutil.iter_modules(triton_kernels.__path__):
        name = f"{triton_kernels.__name__}.{mod.name}"
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken kernel disables itself, never msdfast
            ERRORS[mod.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"msdfast: Triton kernels {name} unavailable ({ERRORS[mod.name]})", stacklevel=2)


_load_kernels()
