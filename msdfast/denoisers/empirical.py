"""Ideal denoiser of an empirical distribution (MSD paper eq. 16; docs/math.md sec. 3).

D*(x; s) = sum_i u_i N(x; u_i, s^2 I) / sum_i N(x; u_i, s^2 I) over the training points u_i: a softmax
over data, computed streaming by `msdfast.ops.empirical_denoiser` (never a [queries x data] matrix in the
fused backends). VP/eps form from the base class (z = alpha_t x, eps = (x - D) / s_t).
"""
from __future__ import annotations

import torch

from .. import ops
from ..schedule import VPSchedule, toy_schedule
from .base import Cond, Denoiser

__all__ = ["EmpiricalDenoiser"]


class EmpiricalDenoiser(Denoiser):
    """D*(x; s) over `points` [N, d] (the condition is ignored: the sets are unconditional).

    The points are kept as given (float64 from `load_dataset`) and cast to the query dtype for the
    computation: pass float64 queries for a float64 evaluation.
    schedule: VP schedule of the eps form (default: the toy schedule).
    """

    def __init__(self, points: torch.Tensor, schedule: VPSchedule | None = None) -> None:
        super().__init__(schedule or toy_schedule())
        if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[0] == 0:
            raise ValueError("points: expected a non-empty [N, d] tensor")
        if not torch.isfinite(points).all():
            raise ValueError("points: must be finite")
        self.register_buffer("points", points.detach().clone())

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.points.shape[1]:
            raise ValueError(f"x: expected [B, {self.points.shape[1]}] points, got {tuple(x.shape)}")
        return ops.empirical_denoiser(x, self.points.to(x.device), s.to(x.device))
