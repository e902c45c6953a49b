"""SDI: score distillation via inversion (Lukoianov et al. 2024; public code; docs/math.md sec. 2)."""
from __future__ import annotations

import math
from typing import Any

import torch

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..samplers.ddim import ddim_invert
from ..samplers.guidance import coefficients
from .common import GuidedEstimator, bcast, weighting


class SDI(GuidedEstimator):
    """SDS with the noise found by DDIM inversion of x instead of drawn at random.

        t = t_max -> t_min annealed linearly over the run (update_step), default 980 -> 250;
        z_t = DDIM-invert(x, 0 -> t, `inversion_steps` steps, CFG `inversion_guidance_scale`);
        eps = (z_t - alpha_t x) / sigma_t   (the inverted noise);
        optional stochasticity eta: eps <- sqrt(1 - eta^2) eps + eta n, n ~ N(0, I), z_t re-noised with it
            (msdfast's variance-preserving reading of the public code's eta 0.3; the public code's exact
            mixing is not stated in the paper);
        g = w(t) (eps_g(z_t, t) - eps)     (ops.distill_grad; normalised like SDS, docs/math.md sec. 2).

    Options (plus `GuidedEstimator`'s; t_range default (250, 980) integer timesteps):
        inversion_steps: DDIM inversion steps from 0 to t (default 10).
        inversion_guidance_scale: CFG of the inversion, diffusers w (the public -7.5 is threestudio's form,
            i.e. w = -6.5; default None = -6.5 when an uncond or guide is available, else 1 = conditional).
        eta: stochasticity of the inverted noise (default 0; the public code's stochastic variant uses 0.3).

    NFE per call (batch B, c = 2 with CFG/autoguidance else 1):
        inversion_steps B c_inv + B c
    """

    name = "sdi"
    default_t_range = (250, 980)

    def __init__(self, denoiser: Denoiser, *, inversion_steps: int = 10,
                 inversion_guidance_scale: float | None = None, eta: float = 0.0, **options: Any) -> None:
        super().__init__(denoiser, **options)
        if int(inversion_steps) < 1:
            raise UserInputError(f"inversion_steps: must be >= 1, got {inversion_steps}")
        if not 0 <= eta <= 1:
            raise UserInputError(f"eta: must be in [0, 1], got {eta}")
        self.inversion_steps, self.eta = int(inversion_steps), float(eta)
        self.inversion_guidance_scale = inversion_guidance_scale

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        B, dev, sch = x.shape[0], x.device, self.schedule
        t = self.annealed_t(B, dev)
        t_int = int(round(self.t_max - (self.t_max - self.t_min) * self.progress))
        w_inv = self.inversion_guidance_scale
        if w_inv is None:
            w_inv = -6.5 if (uncond is not None or self.guide is not None) else 1.0
        inv = self.guidance(cond, uncond, scale=w_inv, psr=False)
        z = ddim_invert(inv, x, min(self.inversion_steps, t_int + 1), t_int)
        a, s = bcast(sch.alpha(t, device=dev), x), bcast(sch.sigma(t, device=dev), x)
        eps = (z - a * x) / s
        if self.eta > 0:
            n = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            eps = math.sqrt(1 - self.eta**2) * eps + self.eta * n
            z = ops.noise_to_levels(x, eps, sch.alpha(t, device=dev)[:, None], sch.sigma(t, device=dev)[:, None])
        guidance = self.guidance(cond, uncond)
        pred = guidance.predict(z, t, tag=self.name)
        coef = coefficients(guidance, B, t, dev, w=pred.w, r=pred.r, weight=weighting(self.weighting, sch, t))
        g, _, norm = ops.distill_grad(pred.eps_c, eps, coef, eps_u=pred.eps_u, clip=self.clip)
        return g, {"t": t, "grad_norm": norm, "inversion_guidance_scale": w_inv}
