"""Triton kernel of msdfast.ops.noise_to_levels: out[l*B + b] = alphas[b, l] x[b] + sigmas[b, l] eps[b],
all L levels from one read of x and eps (DSD paper eq. 9-10). Definition of correct: msdfast.ops.reference."""
import torch
import triton
import triton.language as tl

from .._triton import triton_backend
from ._common import ELEMENTWISE_BLOCK, acc_type


@triton.jit
def _noise_to_levels_kernel(x_ptr, eps_ptr, a_ptr, s_ptr, out_ptr, B: tl.int64, F: tl.int64, L: tl.int64,
                            ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)   # 64-bit offsets: the output holds L * B * F elements
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < F
    xv = tl.load(x_ptr + b * F + offs, mask=mask, other=0.0).to(ACC)
    ev = tl.load(eps_ptr + b * F + offs, mask=mask, other=0.0).to(ACC)
    for lvl in range(0, L):
        a = tl.load(a_ptr + b * L + lvl).to(ACC)
        s = tl.load(s_ptr + b * L + lvl).to(ACC)
        tl.store(out_ptr + (lvl * B + b) * F + offs, (a * xv + s * ev).to(out_ptr.dtype.element_ty), mask=mask)


@triton_backend("noise_to_levels")
def noise_to_levels(x: torch.Tensor, eps: torch.Tensor, alphas: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Backend entry point (same arguments as msdfast.ops.reference.noise_to_levels)."""
    B, L = alphas.shape
    if B > 65535:
        raise ValueError(f"x: batch {B} exceeds the Triton grid limit 65535; split the batch")
    out = x.new_empty((L * B,) + tuple(x.shape[1:]))
    F = x.numel() // B if B else 0
    if out.numel():
        _noise_to_levels_kernel[(triton.cdiv(F, ELEMENTWISE_BLOCK), B)](
            x, eps, alphas, sigmas, out, B, F, L, ACC=acc_type(x.dtype), BLOCK=ELEMENTWISE_BLOCK)
    return out

