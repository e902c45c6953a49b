"""Triton kernel of msdfast.ops.empirical_denoiser: the ideal denoiser of an empirical distribution
(MSD paper eq. 16), D(x; s) = softmax_i(-|x - u_i|^2 / 2s^2) @ u, streamed over data tiles with an online
softmax (flash-attention style running max / normaliser / weighted sum): never an M x N matrix.
Definition of correct: msdfast.ops.reference.empirical_denoiser."""
import torch
import triton
import triton.language as tl

from .._triton import triton_backend
from ._common import acc_type


@triton.jit
def _empirical_denoiser_kernel(x_ptr, u_ptr, s_ptr, out_ptr, M, N, D, ACC: tl.constexpr, BLOCK_M: tl.constexpr,
                               BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    rmask = rows < M
    dmask = dims < D
    q = tl.load(x_ptr + rows[:, None] * D + dims[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0).to(ACC)
    s = tl.load(s_ptr + rows, mask=rmask, other=1.0).to(ACC)
    c = 0.5 / (s * s)
    m = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l = tl.zeros([BLOCK_M], dtype=ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < N
        u = tl.load(u_ptr + cols[:, None] * D + dims[None, :], mask=cmask[:, None] & dmask[None, :],
                    other=0.0).to(ACC)
        diff = q[:, None, :] - u[None, :, :]
        logit = -tl.sum(diff * diff, axis=2) * c[:, None]
        logit = tl.where(cmask[None, :], logit, float("-inf"))
        m_new = tl.maximum(m, tl.max(logit, axis=1))  # finite: every tile holds at least one point
        scale = tl.exp(m - m_new)
        p = tl.exp(logit - m_new[:, None])
        l = l * scale + tl.sum(p, axis=1)
        acc = acc * scale[:, None] + tl.sum(p[:, :, None] * u[None, :, :], axis=1)
        m = m_new
    out = acc / l[:, None]
    tl.store(out_ptr + rows[:, None] * D + dims[None, :], out.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & dmask[None, :])


@triton_backend("empirical_denoiser")
def empirical_denoiser(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Backend entry point (same arguments as msdfast.ops.reference.empirical_denoiser)."""
    M, D = x.shape
    out = torch.empty_like(x)
    if M == 0:
        return out
    block_d = triton.next_power_of_2(D)
    # keep the [BLOCK_M, BLOCK_N, BLOCK_D] broadcast tile near 8K elements (registers on a GPU)
    block_n = max(16, min(128, 8192 // (32 * block_d)))
    _empirical_denoiser_kernel[(triton.cdiv(M, 32),)](
        x, data, s, out, M, data.shape[0], D, ACC=acc_type(x.dtype), BLOCK_M=32, BLOCK_N=block_n, BLOCK_D=block_d)
    return out

