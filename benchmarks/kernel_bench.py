"""Shared body of the latent-shaped fused-kernel benchmarks (bench_distill_grad/chain_mean_shift/
noise_to_levels.py), in the conventions of benchmarks/conftest.py (see bench_ddim_step.py):

impls: `reference` (the eager chain through the public API: the baseline), `compiled` (public API: checks +
dispatch + kernel), `compiled-raw` (torch.ops.msdfast.<op> alone), `triton` (CUDA only: the CPU interpreter is
not a benchmark) and `clone`, the memory-bandwidth bound: torch.clone of a float32 tensor whose read + write
traffic equals the op's (extra_info["bytes"] = bytes read + bytes written by one call).
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from bench_utils import sync

from msdfast.ops import _dispatch

SHAPES = [(2, 4, 64, 64), (16, 4, 128, 128)]
IMPLS = ["reference", "compiled", "compiled-raw", "triton", "clone"]


def bench_op(benchmark: Any, op: str, device: str, shape: tuple, impl: str, nbytes: int,
             public: Callable[[str], Any], raw: Callable[[], Any]) -> Any:
    """Time one impl of op; `public(backend)` calls msdfast.ops.<op>, `raw()` calls torch.ops.msdfast.<op>."""
    benchmark.group = f"{op}-{device}-{'x'.join(map(str, shape))}-fp32"
    benchmark.extra_info.update(op=op, impl=impl, device=device, shape=list(shape), dtype="float32", bytes=nbytes)
    if impl == "clone":
        src = torch.randn(nbytes // 8, device=device)  # float32: read + write = nbytes

        def fn() -> Any:
            out = torch.clone(src)
            sync(device)
            return out
    else:
        backend = impl.removesuffix("-raw")
        if backend not in _dispatch.available(op, device) or (backend == "triton" and device == "cpu"):
            pytest.skip(f"{backend} backend of {op} not benchmarked on {device}")

        def fn() -> Any:
            out = raw() if impl == "compiled-raw" else public(impl)
            sync(device)
            return out

    return benchmark(fn)
