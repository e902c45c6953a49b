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

import importlib
from typing import Any

from ..denoisers.base import Denoiser
from ..errors import UserInputError
from .base import Estimator, GradientEstimate, loss_trick  # noqa: F401

METHODS = ("sds", "sdi", "asd", "vsd", "msd", "dsd")

# method -> (module, class); a method's module is imported when it is first used.
_REGISTRY: dict[str, tuple[str, str]] = {
    "sds": ("sds", "SDS"),
    "asd": ("sds", "ASD"),
    "sdi": ("sdi", "SDI"),
    "vsd": ("vsd", "VSD"),
    "msd": ("msd", "MSD"),
    "dsd": ("dsd", "DSD"),
}


def estimator_class(method: str) -> type[Estimator]:
    """The Estimator subclass implementing `method` (one of METHODS); its module is imported on first use."""
    if not isinstance(method, str) or method.lower() not in _REGISTRY:
        raise UserInputError(f"method: expected one of {METHODS}, got {method!r}")
    mod_name, cls_name = _REGISTRY[method.lower()]
    return getattr(importlib.import_module(f"{__name__}.{mod_name}"), cls_name)


def build(method: str, denoiser: Denoiser, **options: Any) -> Estimator:
    """Build the estimator `method` (one of METHODS) on `denoiser` with its options (see each class)."""
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser: expected a msdfast Denoiser, got {type(denoiser).__name__}")
    return estimator_class(method)(denoiser, **options)


__all__ = ["METHODS", "build", "estimator_class", "Estimator", "GradientEstimate", "loss_trick"]
