"""What every score-distillation estimator shares: guidance options, time ranges, weightings, state.

`GuidedEstimator` turns the common options into a `msdfast.samplers.guidance.Guidance` per call (the call's
cond/uncond: CFG, autoguidance, the guidance interval and PSR are computed there, per sample), resolves the
timestep range, evaluates the weighting w(t) and gives checkpointable state.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..samplers.guidance import Guidance
from .base import Estimator, GradientEstimate

WEIGHTINGS = ("sds", "uniform", "fantasia3d")


def resolve_t_range(t_range: Sequence[float] | None, T: int, default: tuple[float, float]) -> tuple[int, int]:
    """(t_min, t_max) integer timesteps from fractions of T (both <= 1 and floats) or integers."""
    t_range = default if t_range is None else t_range
    if len(t_range) != 2:
        raise UserInputError(f"t_range: expected (t_min, t_max), got {t_range!r}")
    lo, hi = t_range
    if all(isinstance(v, float) for v in (lo, hi)) and 0 <= lo <= 1 and 0 <= hi <= 1:
        lo, hi = int(lo * T), int(hi * T)
    lo, hi = int(lo), min(int(hi), T - 1)
    if not 0 <= lo <= hi:
        raise UserInputError(f"t_range: expected 0 <= t_min <= t_max < {T}, got {t_range!r}")
    return lo, hi


def weighting(kind: str, schedule: Any, t: torch.Tensor) -> torch.Tensor:
    """w(t) [B] (docs/math.md sec. 2): "sds" 1 - abar_t, "uniform" 1, "fantasia3d" alpha_t (1 - abar_t)."""
    abar = schedule.alpha_bar(t, device=t.device)
    if kind == "sds":
        return 1.0 - abar
    if kind == "uniform":
        return torch.ones_like(abar)
    if kind == "fantasia3d":
        return abar.sqrt() * (1.0 - abar)
    raise UserInputError(f"weighting: expected one of {WEIGHTINGS}, got {kind!r}")


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample [B] tensor shaped to broadcast over like's trailing dims."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class GuidedEstimator(Estimator):
    """Base of all msdfast estimators: the options every method accepts.

    Args:
        denoiser: the pretrained model (msdfast Denoiser protocol).
        guidance_scale: CFG weight w in diffusers form, eps_g = eps_u + w (eps_c - eps_u); 1 = pure conditional.
            threestudio's/the MSD paper's scale s maps to w = s + 1 (docs/math.md sec. 1). Needs `uncond` at call time
            (or `guide`).
        guide: a second Denoiser used as the "unconditional" branch: autoguidance (Karras et al. 2024) or a
            separate unconditional model. Mutually exclusive with passing uncond.
        guide_cond: the condition fed to `guide` (default: the call's cond).
        guidance_interval: (t_lo, t_hi) integer timesteps; CFG only inside, eps_c elsewhere (Kynkaanniemi 2024).
        psr_k, psr_s: parametric score rescaling (thesis eq. 1.6) applied after CFG; k = 1 is off.
        t_range: (t_min, t_max) as fractions of T (floats <= 1) or integer timesteps; method default if None.
        weighting: w(t) of the gradient: "sds" (1 - abar_t), "uniform", "fantasia3d" (alpha_t (1 - abar_t)).
        clip: element-wise clipping of g (None: off). g always goes through nan_to_num.
    """

    name = "guided"
    default_t_range: tuple[float, float] = (0.02, 0.98)

    def __init__(self, denoiser: Denoiser, *, guidance_scale: float = 1.0, guide: Denoiser | None = None,
                 guide_cond: Cond = None, guidance_interval: tuple[int, int] | None = None,
                 psr_k: float = 1.0, psr_s: float = 1.0, t_range: Sequence[float] | None = None,
                 weighting: str = "sds", clip: float | None = None) -> None:
        super().__init__(denoiser)
        if guide is not None and not isinstance(guide, Denoiser):
            raise TypeError(f"guide: expected a msdfast Denoiser, got {type(guide).__name__}")
        if guidance_interval is not None and (len(guidance_interval) != 2
                                              or guidance_interval[0] > guidance_interval[1]):
            raise UserInputError(f"guidance_interval: expected (t_lo, t_hi) with t_lo <= t_hi, got {guidance_interval!r}")
        if weighting not in WEIGHTINGS:
            raise UserInputError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
        if clip is not None and not clip > 0:
            raise UserInputError(f"clip: must be positive or None, got {clip}")
        if not float(guidance_scale) == float(guidance_scale):
            raise UserInputError("guidance_scale: must be a number")
        self.guidance_scale = float(guidance_scale)
        self.guide = guide
        self.guide_cond = guide_cond
        self.guidance_interval = None if guidance_interval is None else tuple(int(v) for v in guidance_interval)
        self.psr_k, self.psr_s = float(psr_k), float(psr_s)
        self.weighting = weighting
        self.clip = clip
        T = denoiser.schedule.num_train_timesteps
        self.t_min, self.t_max = resolve_t_range(t_range, T, self.default_t_range)
        for name, v in (("psr_k", self.psr_k), ("psr_s", self.psr_s)):
            if not v > 0:
                raise UserInputError(f"{name}: must be positive, got {v}")

    def __call__(self, x: torch.Tensor, cond: Cond = None, uncond: Cond = None, *,
                 generator: torch.Generator | None = None) -> GradientEstimate:
        """The base contract; NFE also counts the guide model's evaluations (autoguidance)."""
        g0 = self.guide.stats.nfe if self.guide is not None else 0
        out = super().__call__(x, cond, uncond, generator=generator)
        if self.guide is not None and self.guide is not self.denoiser:
            out.nfe += self.guide.stats.nfe - g0
        return out

    # ------------------------------------------------------------------ helpers
    @property
    def schedule(self):  # noqa: ANN201
        return self.denoiser.schedule

    @property
    def cfg(self) -> bool:
        return self.guidance_scale != 1.0

    def guidance(self, cond: Cond, uncond: Cond, *, scale: float | None = None, psr: bool = True,
                 interval: bool = True) -> Guidance:
        """The Guidance of this call (scale defaults to guidance_scale; psr/interval may be switched off)."""
        scale = self.guidance_scale if scale is None else float(scale)
        if scale != 1.0 and uncond is None and self.guide is None:
            raise ValueError("uncond: guidance_scale != 1 needs the unconditional condition (or a guide model)")
        return Guidance(self.denoiser, cond, uncond if (scale != 1.0 and self.guide is None) else None, scale,
                        self.guide if scale != 1.0 else None, self.guide_cond,
                        self.guidance_interval if interval else None,
                        self.psr_k if psr else 1.0, self.psr_s if psr else 1.0)

    def sample_t(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """t ~ U{t_min..t_max} per sample (threestudio: randint(min_step, max_step + 1))."""
        return torch.randint(self.t_min, self.t_max + 1, (batch,), generator=generator, device=device)

    def annealed_t(self, batch: int, device: torch.device) -> torch.Tensor:
        """Deterministic t linearly annealed from t_max to t_min over the run (update_step's progress)."""
        t = round(self.t_max - (self.t_max - self.t_min) * self.progress)
        return torch.full((batch,), int(t), dtype=torch.long, device=device)

    def set_t_range(self, t_range: Sequence[float]) -> None:
        """Change (t_min, t_max) during a run (threestudio's min/max_step schedules): fractions of T or timesteps."""
        self.t_min, self.t_max = resolve_t_range(t_range, self.schedule.num_train_timesteps, self.default_t_range)
