"""Triton kernel of msdfast.ops.chain_mean_shift: MSD's g = x - mean_i y_i in one pass
(MSD paper Algorithm 2; y [N*B, ...] chain-major). Definition of correct: msdfast.ops.reference."""
import torch
import triton
import triton.language as tl

from .._triton import triton_backend
from ._common import ELEMENTWISE_BLOCK, acc_type


@triton.jit
def _chain_mean_shift_kernel(y_ptr, x_ptr, out_ptr, numel: tl.int64, n_chains: tl.int64, ACC: tl.constexpr,
                             BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)   # 64-bit offsets
    mask = offs < numel
    acc = tl.zeros([BLOCK], dtype=ACC)
    yp = y_ptr + offs
    for _ in range(0, n_chains):  # chains in order, as torch.mean sums them
        acc += tl.load(yp, mask=mask, other=0.0).to(ACC)
        yp += numel  # pointer arithmetic is 64-bit: no int32 overflow for large N * numel
    xv = tl.load(x_ptr + offs, mask=mask, other=0.0).to(ACC)
    tl.store(out_ptr + offs, (xv - acc / n_chains).to(out_ptr.dtype.element_ty), mask=mask)


@triton_backend("chain_mean_shift")
def chain_mean_shift(y: torch.Tensor, x: torch.Tensor, n_chains: int) -> torch.Tensor:
    """Backend entry point (same arguments as msdfast.ops.reference.chain_mean_shift)."""
    out = torch.empty_like(x)
    numel = x.numel()
    if numel:
        _chain_mean_shift_kernel[(triton.cdiv(numel, ELEMENTWISE_BLOCK),)](
            y, x, out, numel, n_chains, ACC=acc_type(x.dtype), BLOCK=ELEMENTWISE_BLOCK)
    return out

