"""Triton kernel of msdfast.ops.empirical_denoiser: the ideal denoiser of an empirical distribution
(MSD paper eq. 16), D(x; s) = softmax_i(-|x - u_i|^2 / 2s^2) @ u, streamed over data tiles with an online
softmax (flash-attention style running minimum distance / normaliser / weighted sum): never an M x N matrix.

Weights are exp(-(d2_i - d2_min) c) with c = min(1 / 2s^2, largest finite): the softmax shifted by the nearest
distance, so a tiny s (c overflows, every logit -inf) gives the nearest point (ties averaged), the limit the
reference defines. Program (i, j) owns BLOCK_M queries and output columns [j BLOCK_O, (j + 1) BLOCK_O); the
distances loop over the dimension in BLOCK_D chunks, so no tile exceeds Triton's 2^20 elements for any D.
Definition of correct: msdfast.ops.reference.empirical_denoiser."""
import torch
import triton
import triton.language as tl

from .._triton import triton_backend
from ._common import acc_type, max_finite


@triton.jit
def _empirical_denoiser_kernel(x_ptr, u_ptr, s_ptr, out_ptr, M: tl.int64, N: tl.int64, D: tl.int64,
                               CMAX: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                               BLOCK_D: tl.constexpr, BLOCK_O: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)   # 64-bit offsets
    ocols = tl.program_id(1).to(tl.int64) * BLOCK_O + tl.arange(0, BLOCK_O)
    rmask = rows < M
    omask = ocols < D
    s = tl.load(s_ptr + rows, mask=rmask, other=1.0).to(ACC)
    c = tl.minimum(0.5 / (s * s), CMAX)
    dmin = tl.full([BLOCK_M], float("inf"), dtype=ACC)
    l = tl.zeros([BLOCK_M], dtype=ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_O], dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        cmask = cols < N
        d2 = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
        for k0 in range(0, D, BLOCK_D):
            dims = k0 + tl.arange(0, BLOCK_D).to(tl.int64)
            dmask = dims < D
            q = tl.load(x_ptr + rows[:, None] * D + dims[None, :], mask=rmask[:, None] & dmask[None, :],
                        other=0.0).to(ACC)
            u = tl.load(u_ptr + cols[:, None] * D + dims[None, :], mask=cmask[:, None] & dmask[None, :],
                        other=0.0).to(ACC)
            diff = q[:, None, :] - u[None, :, :]
            d2 += tl.sum(diff * diff, axis=2)
        d2 = tl.where(cmask[None, :], d2, float("inf"))
        dmin_new = tl.minimum(dmin, tl.min(d2, axis=1))  # finite: every tile holds at least one point
        scale = tl.exp((dmin_new - dmin) * c)           # 0 on the first tile (dmin = inf)
        p = tl.exp((dmin_new[:, None] - d2) * c[:, None])
        uo = tl.load(u_ptr + cols[:, None] * D + ocols[None, :], mask=cmask[:, None] & omask[None, :],
                     other=0.0).to(ACC)
        l = l * scale + tl.sum(p, axis=1)
        acc = acc * scale[:, None] + tl.sum(p[:, :, None] * uo[None, :, :], axis=1)
        dmin = dmin_new
    out = acc / l[:, None]
    tl.store(out_ptr + rows[:, None] * D + ocols[None, :], out.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & omask[None, :])


BLOCK_M = 32
MAX_TILE = 8192   # elements of the [BLOCK_M, BLOCK_N, BLOCK_D or BLOCK_O] broadcast tile (registers on a GPU)


def launch_blocks(D: int) -> dict[str, int]:
    """The kernel's block sizes for data dimension D (public for the tile-size test)."""
    block_d = min(triton.next_power_of_2(D), 128)
    block_n = max(2, min(128, MAX_TILE // (BLOCK_M * block_d)))
    return dict(BLOCK_M=BLOCK_M, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_O=block_d)


@triton_backend("empirical_denoiser")
def empirical_denoiser(x: torch.Tensor, data: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Backend entry point (same arguments as msdfast.ops.reference.empirical_denoiser)."""
    M, D = x.shape
    out = torch.empty_like(x)
    if M == 0:
        return out
    blocks = launch_blocks(D)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    grid = (triton.cdiv(M, blocks["BLOCK_M"]), triton.cdiv(D, blocks["BLOCK_O"]))
    _empirical_denoiser_kernel[grid](x, data, s, out, M, data.shape[0], D, CMAX=max_finite(acc),
                                     ACC=acc_type(x.dtype), **blocks)
    return out
