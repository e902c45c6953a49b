"""EDM Euler / Heun sampling of the probability-flow ODE in VE form (Karras et al. 2022, Algorithm 1).

dx/ds = (x - D(x; s)) / s = eps(x; s). The noise levels follow EDM's rho-spaced grid
    s_i = (s_max^(1/rho) + i / (N - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho,  i = 0..N-1,  s_N = 0,
with the public toy defaults N = 32, s in [0.002, 5], rho = 7 (started from data noised to s_max,
or from s_max * N(0, I)). eps is the guided, PSR-rescaled prediction of `Guidance.predict(..., ve=True)` (CFG,
autoguidance, limited interval, PSR: the one guidance). An Euler step x' = x + (s' - s) eps is the DDIM step in
VE form (alpha = 1, sigma = s), so every update is the shared guided step (`samplers.guidance.step`, the fused
op `ops.ddim_step`); Heun's second-order correction averages eps at both ends (skipped on the last step, to
s = 0).
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import ops
from .guidance import Guidance, GuidedEps, step

__all__ = ["edm_sigmas", "edm_sample"]


def edm_sigmas(num_steps: int = 32, sigma_min: float = 0.002, sigma_max: float = 5.0,
               rho: float = 7.0) -> torch.Tensor:
    """EDM's time grid (Karras et al. 2022, eq. 5): [num_steps + 1] float64, descending, ending at 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps: must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho: must be positive, got {rho}")
    i = torch.arange(num_steps, dtype=torch.float64)
    frac = i / max(num_steps - 1, 1)
    s = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def edm_sample(guidance: Guidance, x: torch.Tensor, num_steps: int = 32, *, sigma_min: float = 0.002,
               sigma_max: float = 5.0, rho: float = 7.0, heun: bool = True, progress: bool = False,
               trajectory: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Integrate from x at noise level sigma_max down to s = 0 with Euler (heun=False) or Heun steps.

    NFE: num_steps (Euler) or 2 num_steps - 1 (Heun) denoiser calls per sample, doubled by CFG.
    With trajectory=True returns the list of iterates [x_0 (input), ..., x_N].
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x: expected a batch tensor [B, ...]")
    sig = edm_sigmas(num_steps, sigma_min, sigma_max, rho).tolist()
    traj = [x]
    with ops.checks_once():   # the fused step's arguments are validated at the first step
        for i, (s, s_next) in enumerate(tqdm(list(zip(sig[:-1], sig[1:])), disable=not progress, desc="edm",
                                             leave=False)):
            pred = guidance.predict(x, s, ve=True, tag="sample")
            x_next = step(guidance, x, pred, s, s_next, ve=True)
            if heun and s_next > 0:
                pred_next = guidance.predict(x_next, s_next, ve=True, tag="sample")
                mean = GuidedEps(0.5 * (pred.combined() + pred_next.combined()), None)
                x_next = step(guidance, x, mean, s, s_next, ve=True)
            x = x_next
            if trajectory:
                traj.append(x)
    return traj if trajectory else x
