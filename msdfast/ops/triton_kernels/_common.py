"""Helpers shared by the Triton kernels: dtype mapping and launch sizes (no autotuning: the CPU
interpreter cannot autotune, and these memory-bound kernels are insensitive to the block size)."""
from __future__ import annotations

import torch
import triton.language as tl

_TL = {torch.float32: tl.float32, torch.float64: tl.float64, torch.float16: tl.float16,
       torch.bfloat16: tl.bfloat16}


def acc_type(dtype: torch.dtype):
    """Triton accumulation type: fp64 for fp64 tensors, fp32 otherwise (as msdfast.ops.reference)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def storage_type(dtype: torch.dtype):
    return _TL[dtype]


def max_finite(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


ELEMENTWISE_BLOCK = 1024
