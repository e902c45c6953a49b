"""Triton kernels of msdfast.ops.hash_grid_encode and its params backward (Instant-NGP grid encoding with
tiny-cuda-nn's math; msdfast.ops.reference._grid_corners): one launch per level, a block of points per
program, the 2^D corners unrolled at compile time; the backward scatters with atomic adds (as tcnn).
Definition of correct: msdfast.ops.reference.hash_grid_encode(_backward)."""
import torch
import triton
import triton.language as tl

from .._triton import triton_backend

# Scalar arguments are annotated: `scale` fp64 (a plain float compiles as fp32, and the reference rounds
# x * scale + 0.5 once from the exact product), sizes int64 (64-bit offsets).
_BLOCK = 128
_P1, _P2, _P3 = 2654435761, 805459861, 3674653429   # tcnn's CoherentPrime factors of dims 1..3 (dim 0: 1)


@triton.jit
def _corner(x_ptr, offs, mask, scale, res, size, C: tl.constexpr, D: tl.constexpr, INTERP: tl.constexpr,
            HASHED: tl.constexpr):
    """Table index (within the level) and weight of corner C of each point: reference._grid_corners."""
    w = tl.full(offs.shape, 1.0, tl.float32)
    h = tl.zeros(offs.shape, tl.int64)
    dense = tl.zeros(offs.shape, tl.int64)
    stride = 1
    for d in tl.static_range(D):
        xd = tl.load(x_ptr + offs * D + d, mask=mask, other=0.0)
        pos = (xd.to(tl.float64) * scale + 0.5).to(tl.float32)   # one rounding, like the reference
        gf = tl.floor(pos)
        fr = pos - gf
        if INTERP == 2:
            fr = fr * fr * (3.0 - 2.0 * fr)
        bit: tl.constexpr = (C >> d) & 1
        g = gf.to(tl.int64) + bit
        if INTERP != 1:
            if bit == 1:
                w = w * fr
            else:
                w = w * (1.0 - fr)
        if d == 0:
            h = h ^ (g & 0xFFFFFFFF)
        elif d == 1:
            h = h ^ ((g * _P1) & 0xFFFFFFFF)
        elif d == 2:
            h = h ^ ((g * _P2) & 0xFFFFFFFF)
        else:
            h = h ^ ((g * _P3) & 0xFFFFFFFF)
        dense = dense + g * stride
        stride = stride * res
    if HASHED:
        idx = h % size
    else:
        idx = ((dense % size) + size) % size   # floor modulo, like torch's % on int64
    return idx, w


@triton.jit
def _block(N, col, out_stride, F: tl.constexpr, FP: tl.constexpr, BLOCK: tl.constexpr):
    """This program's points, their mask, the feature lanes and the offsets of its [BLOCK, F] output tile."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)   # 64-bit offsets
    mask = offs < N
    f = tl.arange(0, FP)
    fmask = mask[:, None] & (f < F)[None, :]
    return offs, mask, f, fmask, offs[:, None] * out_stride + col + f[None, :]


@triton.jit
def _encode_kernel(x_ptr, params_ptr, out_ptr, N: tl.int64, scale: tl.float64, res: tl.int64, size: tl.int64,
                   offset: tl.int64, col: tl.int64, out_stride: tl.int64, D: tl.constexpr, F: tl.constexpr,
                   FP: tl.constexpr, INTERP: tl.constexpr, HASHED: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask, f, fmask, row = _block(N, col, out_stride, F, FP, BLOCK)
    acc = tl.zeros((BLOCK, FP), tl.float32)
    for c in tl.static_range(1 if INTERP == 1 else 2 ** D):
        idx, w = _corner(x_ptr, offs, mask, scale, res, size, c, D, INTERP, HASHED)
        vals = tl.load(params_ptr + (((offset + idx) * F)[:, None] + f[None, :]), mask=fmask, other=0.0)
        acc += w[:, None] * vals
    tl.store(out_ptr + row, acc, mask=fmask)


@triton.jit
def _backward_kernel(x_ptr, grad_out_ptr, grad_ptr, N: tl.int64, scale: tl.float64, res: tl.int64,
                     size: tl.int64, offset: tl.int64, col: tl.int64, out_stride: tl.int64, D: tl.constexpr,
                     F: tl.constexpr, FP: tl.constexpr, INTERP: tl.constexpr, HASHED: tl.constexpr,
                     BLOCK: tl.constexpr):
    offs, mask, f, fmask, row = _block(N, col, out_stride, F, FP, BLOCK)
    go = tl.load(grad_out_ptr + row, mask=fmask, other=0.0)
    for c in tl.static_range(1 if INTERP == 1 else 2 ** D):
        idx, w = _corner(x_ptr, offs, mask, scale, res, size, c, D, INTERP, HASHED)
        tl.atomic_add(grad_ptr + (((offset + idx) * F)[:, None] + f[None, :]), w[:, None] * go, mask=fmask)


def _per_level(x: torch.Tensor, scales: list[float], resolutions: list[int], sizes: list[int],
               offsets: list[int], n_features: int, interp: int, launch) -> None:  # noqa: ANN001
    N, D = x.shape
    for lvl, (scale, res, size, off) in enumerate(zip(scales, resolutions, sizes, offsets)):
        meta = dict(D=D, F=n_features, FP=triton.next_power_of_2(n_features), INTERP=interp,
                    HASHED=res ** D > size, BLOCK=_BLOCK)
        launch((triton.cdiv(N, _BLOCK),), (N, float(scale), res, size, off, lvl * n_features,
                                           len(scales) * n_features), meta)


@triton_backend("hash_grid_encode")
def hash_grid_encode(x: torch.Tensor, params: torch.Tensor, scales: list[float], resolutions: list[int],
                     sizes: list[int], offsets: list[int], n_features: int, interp: int) -> torch.Tensor:
    """Backend entry point (same arguments as msdfast.ops.reference.hash_grid_encode)."""
    out = x.new_empty((x.shape[0], len(scales) * n_features))
    if x.shape[0]:
        _per_level(x, scales, resolutions, sizes, offsets, n_features, interp,
                   lambda grid, args, meta: _encode_kernel[grid](x, params, out, *args, **meta))
    return out


@triton_backend("hash_grid_encode_backward")
def hash_grid_encode_backward(grad_out: torch.Tensor, x: torch.Tensor, n_params: int, scales: list[float],
                              resolutions: list[int], sizes: list[int], offsets: list[int], n_features: int,
                              interp: int) -> torch.Tensor:
    """Backend entry point (same arguments as msdfast.ops.reference.hash_grid_encode_backward)."""
    grad = torch.zeros(n_params, dtype=torch.float32, device=x.device)
    if x.shape[0]:
        _per_level(x, scales, resolutions, sizes, offsets, n_features, interp,
                   lambda grid, args, meta: _backward_kernel[grid](x, grad_out, grad, *args, **meta))
    return grad
