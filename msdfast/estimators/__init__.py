"""Score-distillation estimators behind one contract (msdfast.estimators.base; docs/math.md sec. 2).

Use the factory::

    from msdfast.estimators import build, METHODS
    est = build("msd", denoiser, guidance_scale=7.5, solver="stable", chains=4, bandwidth=0.3)
    est.update_step(step, total_steps)          # once per optimisation step (annealing, bandwidth)
    out = est(x, cond, uncond, generator=gen)   # out.grad (descent g), out.loss (loss trick), out.nfe
    out.loss.backward()                         # x.grad == g / B

Common options accepted by every method (see `msdfast.estimators.common.GuidedEstimator`):
  guidance_scale    CFG weight in diffusers form w (1 = pure conditional; threestudio's s is w - 1).
  guide             a second Denoiser for autoguidance (or a separate unconditional model); excludes uncond.
  guidance_interval (t_lo, t_hi): CFG only for t in that range (limited-interval guidance), eps_c elsewhere.
  psr_k, psr_s      parametric score rescaling (thesis eq. 1.6) applied after CFG in every sampler/gradient.
  t_range           (t_min, t_max) as fractions of T (<= 1) or integer timesteps.
Method-specific options are documented on each class (`help(msdfast.estimators.build("sds", d))`).

Every estimator has `state_dict()` / `load_state_dict()` for exact checkpoint/resume.
"""
from __future__ import annotations

from typing import Any

from ..denoisers.base import Denoiser
from ..errors import UserInputError
from .base import Estimator, GradientEstimate, loss_trick  # noqa: F401
from .options import option_specs
from .registry import METHODS, estimator_class


def build(method: str, denoiser: Denoiser, **options: Any) -> Estimator:
    """Build the estimator `method` (one of METHODS) on `denoiser` with its options (see each class)."""
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser: expected a msdfast Denoiser, got {type(denoiser).__name__}")
    cls = estimator_class(method)
    valid = {spec.name for spec in option_specs(method)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise UserInputError(f"{method}: unknown option {unknown[0]!r}; valid options: {', '.join(sorted(valid))}")
    return cls(denoiser, **options)


__all__ = ["METHODS", "build", "estimator_class", "Estimator", "GradientEstimate", "loss_trick"]
