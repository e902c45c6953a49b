"""Triton kernel of the fused sampling step (reference: msdfast.ops.reference.ddim_step; docs/math.md sec. 1-2,
MSD paper eq. 14-15). One program handles BLOCK elements of one sample, so the sample's 8 coefficients are
scalar loads hoisted out of the element math. Inputs are loaded in their dtype and cast to float32
(float64 for float64 inputs): the interpreter has no bfloat16 arithmetic.

No `from __future__ import annotations` here: torch.library infers the op schema from the real type hints.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from .._triton import autotune_configs, triton_backend


@triton.jit
def _acc(x, F64: tl.constexpr):
    if F64:
        return x.to(tl.float64)
    return x.to(tl.float32)


@triton.autotune(
    configs=autotune_configs(gpu=[{"BLOCK": 1024}, {"BLOCK": 2048}, {"BLOCK": 4096, "num_warps": 8}],
                             interpret={"BLOCK": 2048}),
    key=["per_sample", "HAS_U", "HAS_C", "HAS_N", "X0"],
)
@triton.jit
def _ddim_step_kernel(z_ptr, ec_ptr, eu_ptr, c_ptr, n_ptr, out_ptr, x0_ptr, coef_ptr, coef_stride: tl.int64,
                      per_sample: tl.int64,
                      HAS_U: tl.constexpr, HAS_C: tl.constexpr, HAS_N: tl.constexpr, X0: tl.constexpr,
                      F64: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)   # 64-bit offsets throughout
    row = coef_ptr + b * coef_stride          # coef_stride 0: one broadcast row
    w = _acc(tl.load(row + 0), F64)
    r = _acc(tl.load(row + 1), F64)
    alpha = _acc(tl.load(row + 2), F64)
    sigma = _acc(tl.load(row + 3), F64)
    alpha_next = _acc(tl.load(row + 4), F64)
    c_eps = _acc(tl.load(row + 5), F64)
    c_noise = _acc(tl.load(row + 6), F64)
    decay = _acc(tl.load(row + 7), F64)

    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < per_sample
    idx = b * per_sample + offs

    eps = _acc(tl.load(ec_ptr + idx, mask=mask, other=0.0), F64)
    if HAS_U:
        eu = _acc(tl.load(eu_ptr + idx, mask=mask, other=0.0), F64)
        eps = eu + w * (eps - eu)
    eps = r * eps
    z = _acc(tl.load(z_ptr + idx, mask=mask, other=0.0), F64)
    x0 = (z - sigma * eps) / alpha
    zn = alpha_next * x0 + c_eps * eps
    if HAS_N:
        zn += c_noise * _acc(tl.load(n_ptr + idx, mask=mask, other=0.0), F64)
    if HAS_C:
        c = _acc(tl.load(c_ptr + idx, mask=mask, other=0.0), F64)
        zn = c + (zn - c) * decay
    tl.store(out_ptr + idx, zn.to(out_ptr.dtype.element_ty), mask=mask)
    if X0:
        tl.store(x0_ptr + idx, x0.to(x0_ptr.dtype.element_ty), mask=mask)


@triton_backend("ddim_step")
def ddim_step(z: torch.Tensor, eps_c: torch.Tensor, eps_u: Optional[torch.Tensor], coef: torch.Tensor,
              center: Optional[torch.Tensor], noise: Optional[torch.Tensor],
              return_x0: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused step on contiguous inputs validated by msdfast.ops.ddim_step."""
    batch = z.shape[0]
    if batch > 65535:
        raise ValueError(f"z: batch {batch} exceeds the Triton grid limit 65535; split the batch")
    out = torch.empty_like(z, memory_format=torch.contiguous_format)
    x0 = torch.empty_like(out) if return_x0 else z.new_empty(0)
    per_sample = z.numel() // max(batch, 1)
    if z.numel() == 0:
        return out, x0
    z, eps_c, coef = z.contiguous(), eps_c.contiguous(), coef.contiguous()
    opt = [t.contiguous() if t is not None else None for t in (eps_u, center, noise)]
    grid = lambda meta: (triton.cdiv(per_sample, meta["BLOCK"]), batch)  # noqa: E731
    _ddim_step_kernel[grid](
        z, eps_c, *(t if t is not None else z for t in opt), out, x0 if return_x0 else out, coef,
        0 if coef.shape[0] == 1 else coef.shape[1], per_sample,
        HAS_U=opt[0] is not None, HAS_C=opt[1] is not None, HAS_N=opt[2] is not None, X0=return_x0,
        F64=z.dtype == torch.float64)
    return out, x0
