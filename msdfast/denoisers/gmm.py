"""Exact denoiser of a Gaussian mixture at any noise level (the tree toy's ideal denoiser, MATH.md sec. 3).

VE form (Karras et al. 2022, eq. 3 / Tweedie): D(x; s) = x + s^2 grad_x log p_s(x) with
p_s = sum_k phi_k N(mu_k, S_k + s^2 I), evaluated by `msdfast.ops.gmm_score` in float64 (the tree's
components are so thin that float32 densities underflow off the tree) and cast back to x's dtype.
VP/eps form comes from the base class: z = alpha_t x, eps = (x - D(x; s_t)) / s_t.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..schedule import VPSchedule
from ..toy.datasets import GMM, TREE_CLASSES, toy_schedule, tree_gmm
from .base import Cond, Denoiser

__all__ = ["GMMDenoiser", "tree_denoiser"]


class GMMDenoiser(Denoiser):
    """Ideal denoiser of one GMM, or of several selected per sample by an integer class condition.

    gmm: a `GMM` (the condition is ignored) or a sequence of GMMs; then cond must be a [B] integer
    tensor of indices into it (e.g. the tree's A = 0, B = 1, A+B = 2, so CFG with uncond = 2 is ONE
    batched call). schedule: the VP schedule of the eps form (default: the toy schedule).
    """

    def __init__(self, gmm: GMM | Sequence[GMM], schedule: VPSchedule | None = None) -> None:
        super().__init__(schedule or toy_schedule())
        gmms = [gmm] if isinstance(gmm, GMM) else list(gmm)
        if not gmms or not all(isinstance(g, GMM) for g in gmms):
            raise TypeError("gmm: expected a GMM or a non-empty sequence of GMMs")
        self.gmms = gmms
        self.conditional = not isinstance(gmm, GMM)

    def _class_ids(self, cond: Cond, batch: int, device: torch.device) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if cond is None:
            raise ValueError("cond: this GMMDenoiser holds several mixtures; give [B] integer class ids")
        ids = torch.as_tensor(cond, device=device).reshape(-1)
        if ids.dtype.is_floating_point or ids.shape[0] != batch:
            raise ValueError(f"cond: expected [{batch}] integer class ids, got {tuple(ids.shape)} {ids.dtype}")
        if torch.any((ids < 0) | (ids >= len(self.gmms))):
            raise ValueError(f"cond: class ids must lie in [0, {len(self.gmms) - 1}]")
        return ids

    def score(self, x: torch.Tensor, s: torch.Tensor | float, cond: Cond = None) -> torch.Tensor:
        """grad log p_s(x) (uncounted; in x's dtype)."""
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x: expected [B, 2] points, got {tuple(x.shape)}")
        s64 = torch.as_tensor(s, dtype=torch.float64, device=x.device)
        s64 = s64.expand(x.shape[0]) if s64.ndim == 0 else s64.reshape(-1)
        ids = self._class_ids(cond, x.shape[0], x.device)
        if ids is None:
            return self.gmms[0].score(x.to(torch.float64), s64).to(x.dtype)
        out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
        for c in ids.unique().tolist():
            m = ids == c
            out[m] = self.gmms[c].score(x[m].to(torch.float64), s64[m])
        return out.to(x.dtype)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        s64 = s.to(torch.float64).reshape(-1)
        d = x.to(torch.float64) + s64[:, None] ** 2 * self.score(x.to(torch.float64), s64, cond).to(torch.float64)
        return d.to(x.dtype)


def tree_denoiser(schedule: VPSchedule | None = None) -> GMMDenoiser:
    """The tree's class-conditional ideal denoiser: cond = 0 (A), 1 (B), 2 (A+B, CFG's unconditional)."""
    return GMMDenoiser([tree_gmm(c) for c in TREE_CLASSES], schedule)
