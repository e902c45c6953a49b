"""DDIM / DDPM sampling and DDIM inversion loops on the guided step (docs/math.md sec. 1).

Each loop is Python orchestration only: one denoiser call and one fused op per step.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .. import ops
from .guidance import Guidance, guided_step


def ddim_sample(guidance: Guidance, z: torch.Tensor, num_steps: int, *, eta: float = 0.0,
                spacing: str = "trailing", t_start: int | None = None,
                generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Sample from z (pure noise at the first timestep, or noised data at t_start) down to clean data.

    eta = 0: DDIM (Song et al. 2021 eq. 12); eta = 1: DDPM ancestral sampling.
    """
    pairs = guidance.schedule.sampling_pairs(num_steps, spacing, t_start=t_start)
    with ops.checks_once():   # the fused step's arguments are validated at the first step
        for t, t_next in tqdm(pairs, disable=not progress, desc="sample", leave=False):
            noise = None
            if eta:
                noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = guided_step(guidance, z, t, t_next, eta=eta, noise=noise, tag="sample")
    return z


def ddim_invert(guidance: Guidance, x: torch.Tensor, num_steps: int, t_end: int, *,
                trajectory: bool = False) -> torch.Tensor | list[tuple[int, torch.Tensor]]:
    """Deterministic DDIM inversion of clean x up to timestep t_end (the DDIM step with t_next > t).

    With trajectory=True returns [(t, z_t)] for every grid point including (-1, x), ascending:
    the MSD stable solver's kernel centres c_t and SDI's inverted noise come from this.
    """
    pairs = guidance.schedule.inversion_pairs(num_steps, t_end)
    z = x
    traj = [(-1, x)]
    with ops.checks_once():   # the fused step's arguments are validated at the first step
        for t, t_next in pairs:
            # t = -1 (clean data) has no model input: evaluate at timestep 0, as diffusers' inverse scheduler.
            z = guided_step(guidance, z, t, t_next, eval_t=max(t, 0), tag="invert")
            traj.append((t_next, z))
    return traj if trajectory else z

