"""Helpers for the kernel-vs-reference tests of msdfast.ops (tests/test_ops_<op>.py).

* `backend_params(op)`: the accelerated backends as pytest params with stable ids; those not available here
  are skipped with the reason (so a CPU CI and a GPU machine run the same test ids).
* `device_params()`: "cpu" always, "cuda" skipped unless torch.cuda.is_available().
* `TOL[dtype]`: tolerances of a backend vs the reference that recomputes from the same (rounded) inputs:
  one ulp of the output dtype relative, plus float32-level absolute slack for accumulation-order effects.
* `noncontiguous(t)`: the same values as a non-contiguous view (transposed storage).
"""
from __future__ import annotations

import pytest
import torch

from msdfast.ops import _dispatch

FAST_BACKENDS = ("compiled", "triton")
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),      # fp16 ulp = 2^-10 ~ 9.8e-4
    torch.bfloat16: dict(rtol=8e-3, atol=8e-3),     # bf16 ulp = 2^-7 ~ 7.8e-3
}


def backend_params(op: str, device: str = "cpu", backends: tuple[str, ...] = FAST_BACKENDS) -> list:
    have = _dispatch.available(op, device)
    return [pytest.param(b, id=b, marks=pytest.mark.skipif(b not in have,
                                                          reason=f"{b} backend of {op} unavailable on {device}"))
            for b in backends]


def device_params() -> list:
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs a CUDA GPU"))]


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """Same values, non-contiguous strides: stored transposed in the last two dims (or with a stride 2)."""
    if t.ndim >= 2:
        out = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    else:
        out = torch.stack([t, torch.empty_like(t)], dim=-1)[..., 0]
    assert not out.is_contiguous() or t.numel() <= 1
    return out
