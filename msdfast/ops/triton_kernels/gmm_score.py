"""Triton kernel of msdfast.ops.gmm_score: score and log-density of a 2D full-covariance Gaussian mixture at
per-query noise level s (covariances S_k + s^2 I, closed-form 2x2 inverse), streamed over components with
an online log-sum-exp (docs/math.md sec. 3). Definition of correct: msdfast.ops.reference.gmm_score."""
import math

import torch
import triton
import triton.language as tl

from .._triton import triton_backend
from ._common import acc_type


@triton.jit
def _gmm_score_kernel(x_ptr, s_ptr, logw_ptr, mu_ptr, cov_ptr, score_ptr, logp_ptr, M: tl.int64, K: tl.int64,
                      LOG2PI: tl.constexpr, ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)   # 64-bit offsets
    rmask = rows < M
    x0 = tl.load(x_ptr + 2 * rows, mask=rmask, other=0.0).to(ACC)
    x1 = tl.load(x_ptr + 2 * rows + 1, mask=rmask, other=0.0).to(ACC)
    sv = tl.load(s_ptr + rows, mask=rmask, other=0.0).to(ACC)
    s2 = (sv * sv)[:, None]
    m = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
    l = tl.zeros([BLOCK_M], dtype=ACC)
    g0 = tl.zeros([BLOCK_M], dtype=ACC)
    g1 = tl.zeros([BLOCK_M], dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K).to(tl.int64)
        kmask = ks < K
        lw = tl.load(logw_ptr + ks, mask=kmask, other=float("-inf")).to(ACC)
        mx = tl.load(mu_ptr + 2 * ks, mask=kmask, other=0.0).to(ACC)
        my = tl.load(mu_ptr + 2 * ks + 1, mask=kmask, other=0.0).to(ACC)
        ca = tl.load(cov_ptr + 4 * ks, mask=kmask, other=1.0).to(ACC)
        cb = tl.load(cov_ptr + 4 * ks + 1, mask=kmask, other=0.0).to(ACC)
        cd = tl.load(cov_ptr + 4 * ks + 3, mask=kmask, other=1.0).to(ACC)
        a = ca[None, :] + s2
        d = cd[None, :] + s2
        b = cb[None, :]
        det = a * d - b * b
        dx = mx[None, :] - x0[:, None]
        dy = my[None, :] - x1[:, None]
        sol0 = (d * dx - b * dy) / det
        sol1 = (a * dy - b * dx) / det
        logit = lw[None, :] - 0.5 * (dx * sol0 + dy * sol1) - 0.5 * tl.log(det)
        logit = tl.where(kmask[None, :], logit, float("-inf"))
        m_new = tl.maximum(m, tl.max(logit, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all-zero-weight tile so far: no NaN
        scale = tl.exp(m - m_safe)
        p = tl.exp(logit - m_safe[:, None])
        l = l * scale + tl.sum(p, axis=1)
        g0 = g0 * scale + tl.sum(p * sol0, axis=1)
        g1 = g1 * scale + tl.sum(p * sol1, axis=1)
        m = m_new
    log2pi = tl.full([BLOCK_M], LOG2PI, ACC)  # an exact fp64 constant when ACC is fp64
    dt = score_ptr.dtype.element_ty
    tl.store(score_ptr + 2 * rows, (g0 / l).to(dt), mask=rmask)
    tl.store(score_ptr + 2 * rows + 1, (g1 / l).to(dt), mask=rmask)
    tl.store(logp_ptr + rows, (m + tl.log(l) - log2pi).to(dt), mask=rmask)


@triton_backend("gmm_score")
def gmm_score(x: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
              s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Backend entry point (same arguments as msdfast.ops.reference.gmm_score)."""
    M, K = x.shape[0], weights.shape[0]
    score = torch.empty_like(x)
    logp = x.new_empty(M)
    if M == 0:
        return score, logp
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = weights.to(acc)
    logw = torch.log(w / w.sum())  # K values, once per call
    # [BLOCK_M, BLOCK_K] tiles of ~10 live values each: 64 x 64 in fp32, a quarter of that in fp64 (registers:
    # fp64 values take two, and fp64 throughput is a fraction of fp32's on most GPUs)
    block_m, kmax = (32, 32) if x.dtype == torch.float64 else (64, 64)
    block_k = max(16, min(kmax, triton.next_power_of_2(K)))
    _gmm_score_kernel[(triton.cdiv(M, block_m),)](
        x, s, logw, means, covs, score, logp, M, K, LOG2PI=math.log(2 * math.pi), ACC=acc_type(x.dtype),
        BLOCK_M=block_m, BLOCK_K=block_k)
    return score, logp

