"""SDS (DreamFusion) and ASD (ScaleDreamer): single-noise-level score distillation (docs/math.md sec. 2)."""
from __future__ import annotations

from typing import Any

import torch

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..samplers.guidance import coefficients, guided_eps
from .common import GuidedEstimator, weighting


class SDS(GuidedEstimator):
    """Score distillation sampling (Poole et al. 2022, DreamFusion eq. 3; docs/math.md sec. 2).

        t ~ U{t_min..t_max},  eps ~ N(0, I),  z = alpha_t x + sigma_t eps   (ops.noise_to_levels, L = 1)
        g = w(t) (eps_g(z, t) - eps)                                        (ops.distill_grad: CFG, PSR,
                                                                              nan_to_num, clipping fused)
    Options: see `GuidedEstimator` (guidance_scale, guide, guidance_interval, psr_k, psr_s, t_range default
    (0.02, 0.98) of T, weighting "sds" | "uniform" | "fantasia3d", clip).

    NFE per call (batch B): B without guidance; 2B with CFG or autoguidance (a CFG pair counts 2).
    """

    name = "sds"

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        B = x.shape[0]
        t = self.sample_t(B, x.device, generator)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        sch = self.schedule
        z = ops.noise_to_levels(x, eps, sch.alpha(t, device=x.device)[:, None], sch.sigma(t, device=x.device)[:, None])
        guidance = self.guidance(cond, uncond)
        pred = guidance.predict(z, t, tag=self.name)
        coef = coefficients(guidance, B, t, x.device, w=pred.w, r=pred.r, weight=weighting(self.weighting, sch, t))
        g, _, norm = ops.distill_grad(pred.eps_c, eps, coef, eps_u=pred.eps_u, clip=self.clip)
        return g, {"t": t, "grad_norm": norm}


class ASD(GuidedEstimator):
    """Asynchronous score distillation (ScaleDreamer, Ma et al. 2024; public code; docs/math.md sec. 2).

        t ~ U{t_min..t_max}, t+ = t + round(U * delta_frac * (t - t_min)), one shared eps ~ N(0, I),
        z_t, z_t+ = alpha x + sigma eps at both levels (ONE ops.noise_to_levels call, L = 2)
        g = w(t) (eps_g(z_t, t) - eps_c(z_t+, t+))       (CFG on the first, pure conditional on the second)
    Options (plus `GuidedEstimator`'s):
        delta_frac: t+ - t as a fraction of t - t_min (default 0.1, the public code's).

    NFE per call (batch B): 2B without guidance, 3B with CFG (cond, uncond at t and cond at t+ in ONE
    batch), 3B with autoguidance (2B main-model batch + B on the guide).
    """

    name = "asd"

    def __init__(self, denoiser: Denoiser, *, delta_frac: float = 0.1, **options: Any) -> None:
        super().__init__(denoiser, **options)
        if not delta_frac >= 0:
            raise UserInputError(f"delta_frac: must be non-negative, got {delta_frac}")
        self.delta_frac = float(delta_frac)

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        B, dev, sch = x.shape[0], x.device, self.schedule
        t = self.sample_t(B, dev, generator)
        u = torch.rand(B, generator=generator, device=dev)
        tp = (t + (u * self.delta_frac * (t - self.t_min)).round().long()).clamp_max(sch.num_train_timesteps - 1)
        eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        tt = torch.stack([t, tp], dim=1)
        z = ops.noise_to_levels(x, eps, sch.alpha(tt, device=dev), sch.sigma(tt, device=dev))
        guidance = self.guidance(cond, uncond)
        pred = guidance.predict(z[:B], t, extra=[(z[B:], tp, cond)], tag=self.name)
        target = guided_eps(pred.extra[0], None, r=guidance.psr(tp, dev))   # pure conditional at t+, PSR'd
        coef = coefficients(guidance, B, t, dev, w=pred.w, r=pred.r, weight=weighting(self.weighting, sch, t))
        g, _, norm = ops.distill_grad(pred.eps_c, target, coef, eps_u=pred.eps_u, clip=self.clip)
        return g, {"t": t, "t_plus": tp, "grad_norm": norm}
