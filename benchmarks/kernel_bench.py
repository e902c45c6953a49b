"""Shared setup of the fused-kernel benchmarks (bench_<op>.py): shapes, backends and the copy bound.

Each op is timed through its backend callables (msdfast.ops._dispatch registry: `reference` is the eager
PyTorch chain, `compiled` the msdfast._C kernel, `triton` the Triton kernel on CUDA), on inputs prepared
once, so argument validation is outside the timing and identical for every backend. The memory-bandwidth
bound is `torch.clone` of a float32 tensor whose read + write traffic equals the op's (bytes read + bytes
written); `extra_info["bytes"]` holds that traffic so the table can report each kernel as a fraction of it.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from msdfast.ops import _dispatch

SHAPES = {"small": (2, 4, 64, 64), "large": (16, 4, 128, 128)}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def backends(op: str, copy: bool = True) -> list[Any]:
    """eager (reference), compiled, triton (GPU only: the CPU interpreter is not a benchmark) [+ copy]."""
    have = _dispatch.available(op, DEVICE)
    out = []
    for b in ("reference", "compiled", "triton"):
        skip = b not in have or (b == "triton" and DEVICE == "cpu")
        out.append(pytest.param(b, id=b, marks=pytest.mark.skipif(skip, reason=f"{b} unavailable for {op}")))
    return out + ([pytest.param("copy", id="copy")] if copy else [])


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run(benchmark: Any, op: str, backend: str, args: tuple, *, size: str, shape: tuple, nbytes: int,
        dtype: torch.dtype = torch.float32, rounds: int | None = None) -> Any:
    """Time one backend of op (or the copy bound of nbytes) with pytest-benchmark; record the metadata."""
    if backend == "copy":
        src = torch.empty(nbytes // 8, dtype=torch.float32, device=DEVICE)  # clone reads + writes nbytes/2 each

        def fn() -> Any:
            out = src.clone()
            _sync()
            return out
    else:
        impl: Callable[..., Any] = _dispatch._REGISTRY[op][backend][0]

        def fn() -> Any:
            out = impl(*args)
            _sync()
            return out

    benchmark.group = f"{op}-{size}"
    benchmark.extra_info.update(op=op, backend=backend, size=size, shape=list(shape), dtype=str(dtype),
                                bytes=int(nbytes), device=DEVICE, threads=torch.get_num_threads())
    fn()  # warm-up: first-touch allocations, JIT, Triton compile
    if rounds is not None:
        return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
    return benchmark(fn)
