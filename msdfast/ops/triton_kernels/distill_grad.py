"""Triton kernel of msdfast.ops.distill_grad: the score-distillation gradient combination in one pass.

    g = nan_to_num( weight (r (eps_u + w (eps_c - eps_u)) - eps_target) ), clamped to [-clip, clip]
    target = x - g;  norm = ||g||_2  (per-program partial sums of g^2, summed in fixed order, sqrt)

(docs/math.md sec. 2; msdfast.ops.reference.distill_grad is the definition of correct.)
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from .._triton import triton_backend
from ._common import ELEMENTWISE_BLOCK, acc_type, max_finite, storage_type


@triton.jit
def _distill_grad_kernel(ec_ptr, et_ptr, eu_ptr, x_ptr, coef_ptr, g_ptr, tgt_ptr, part_ptr, numel: tl.int64,
                         per_sample: tl.int64, coef_stride: tl.int64, clip: tl.float64, BIG: tl.constexpr,
                         HAS_U: tl.constexpr, HAS_X: tl.constexpr, HAS_CLIP: tl.constexpr, ACC: tl.constexpr,
                         OUT: tl.constexpr, BLOCK: tl.constexpr):
    # clip: float64 (a plain float argument compiles as fp32: a float64 run would clip at fp32(clip));
    # sizes int64 and 64-bit offsets (more than 2^31 elements).
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    crow = (offs // per_sample) * coef_stride
    w = tl.load(coef_ptr + crow, mask=mask, other=0.0).to(ACC)
    r = tl.load(coef_ptr + crow + 1, mask=mask, other=0.0).to(ACC)
    wt = tl.load(coef_ptr + crow + 2, mask=mask, other=0.0).to(ACC)
    e = tl.load(ec_ptr + offs, mask=mask, other=0.0).to(ACC)
    if HAS_U:
        u = tl.load(eu_ptr + offs, mask=mask, other=0.0).to(ACC)
        e = u + w * (e - u)
    v = wt * (r * e - tl.load(et_ptr + offs, mask=mask, other=0.0).to(ACC))
    # nan_to_num in the storage dtype: NaN -> 0, +-inf (also after rounding) -> +-largest finite
    v = tl.where(v != v, 0.0, tl.minimum(tl.maximum(v, -BIG), BIG))
    v = v.to(OUT).to(ACC)
    if HAS_CLIP:
        c = (clip + tl.zeros([1], tl.float64)).to(ACC)   # the reference clamps in the accumulation type
        v = tl.minimum(tl.maximum(v, -c), c)
    tl.store(g_ptr + offs, v.to(OUT), mask=mask)
    if HAS_X:
        xv = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
        tl.store(tgt_ptr + offs, (xv - v).to(OUT), mask=mask)
    sq = tl.where(mask, v * v, 0.0).to(tl.float32)
    tl.store(part_ptr + pid, tl.sum(sq, axis=0))


@triton_backend("distill_grad")
def distill_grad(eps_c: torch.Tensor, eps_target: torch.Tensor, eps_u: Optional[torch.Tensor], coef: torch.Tensor,
                 x: Optional[torch.Tensor], clip: Optional[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backend entry point (same arguments and outputs as msdfast.ops.reference.distill_grad)."""
    numel = eps_c.numel()
    g = torch.empty_like(eps_c)
    tgt = torch.empty_like(eps_c) if x is not None else eps_c.new_empty(0)
    nprog = triton.cdiv(numel, ELEMENTWISE_BLOCK)
    partial = torch.empty(max(nprog, 1), dtype=torch.float32, device=eps_c.device)
    if numel == 0:
        return g, tgt, torch.zeros((), dtype=torch.float32, device=eps_c.device)
    _distill_grad_kernel[(nprog,)](
        eps_c, eps_target, eps_u if eps_u is not None else eps_c, x if x is not None else eps_c, coef, g,
        tgt if x is not None else g, partial, numel, numel // eps_c.shape[0], 0 if coef.shape[0] == 1 else 3,
        float(clip) if clip is not None else 0.0, BIG=max_finite(eps_c.dtype), HAS_U=eps_u is not None,
        HAS_X=x is not None, HAS_CLIP=clip is not None, ACC=acc_type(eps_c.dtype), OUT=storage_type(eps_c.dtype),
        BLOCK=ELEMENTWISE_BLOCK)
    norm = partial.to(torch.float64).sum().sqrt().to(torch.float32)
    return g, tgt, norm

