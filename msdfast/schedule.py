"""Variance-preserving noise schedules, time grids and prediction conversions.

Conventions (docs/math.md sec. 1): discrete t in {0..T-1}, abar_t = alphas_cumprod[t],
alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), SNR_t = abar_t / (1 - abar_t), VE noise level
s_t = sigma_t / alpha_t, normalised time tau = t / T. Forward process z_t = alpha_t x + sigma_t eps.

The index t = -1 means "clean data" (the end of a sampling run): its abar is `final_alpha_cumprod`
(1.0 when `set_alpha_to_one`, else abar_0, as diffusers' DDIMScheduler).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from .ops import checks

Tensorish = torch.Tensor | float | int | Sequence[int]

__all__ = ["VPSchedule", "check_scheduler_config", "rescale_zero_terminal_snr", "psr_factor", "eps_from_v", "eps_from_x0", "x0_from_eps", "v_from_eps", "toy_schedule",
           "TOY_S_MIN", "TOY_S_MAX"]


def _betas(config: Mapping[str, Any]) -> torch.Tensor:
    """Betas in float64 exactly as diffusers builds them for the common schedules."""
    T = int(config.get("num_train_timesteps", 1000))
    kind = config.get("beta_schedule", "scaled_linear")
    b0 = float(config.get("beta_start", 0.00085))
    b1 = float(config.get("beta_end", 0.012))
    if config.get("trained_betas") is not None:
        return torch.as_tensor(config["trained_betas"], dtype=torch.float64)
    if kind == "linear":
        return torch.linspace(b0, b1, T, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(b0**0.5, b1**0.5, T, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)],
                            dtype=torch.float64)
    raise ValueError(f"beta_schedule: unsupported value {kind!r} "
                     "(expected 'linear', 'scaled_linear' or 'squaredcos_cap_v2')")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Algorithm 1): shift and scale sqrt(abar) so that sqrt(abar_{T-1}) = 0 and sqrt(abar_0) is unchanged."""
    sa = torch.cumprod(1.0 - betas, dim=0).sqrt()
    s0, sT = sa[0].clone(), sa[-1].clone()
    sa = (sa - sT) * s0 / (s0 - sT)
    ab = sa ** 2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas


# diffusers scheduler-config keys (scheduler_config.json), by what msdfast does with them:
_SCHEDULE_KEYS = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "set_alpha_to_one",
                  "steps_offset", "prediction_type", "timestep_spacing", "rescale_betas_zero_snr"}
# switches of sampler features msdfast's own DDIM/DDPM samplers do not have: accepted only when off
_OFF_ONLY = {"clip_sample": False, "thresholding": False, "use_karras_sigmas": False, "use_exponential_sigmas": False,
             "use_beta_sigmas": False}
# parameters of those switched-off features, and solver choices of other diffusers schedulers (PNDM, Euler,
# DPM-Solver, DDPM's variance): msdfast samples with its own DDIM/DDPM on the same alphas_cumprod
_SAMPLER_ONLY = {"clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value", "sigma_min", "sigma_max",
                 "skip_prk_steps", "variance_type", "interpolation_type", "timestep_type", "final_sigmas_type",
                 "algorithm_type", "solver_order", "solver_type", "lower_order_final", "euler_at_final",
                 "lambda_min_clipped", "use_lu_lambdas", "use_flow_sigmas", "flow_shift"}
SPACINGS = ("leading", "trailing", "linspace")


def check_scheduler_config(config: Mapping[str, Any]) -> None:
    """Raise UserInputError naming the first scheduler-config key msdfast cannot honour."""
    from .errors import UserInputError
    for key, value in config.items():
        if key in _SCHEDULE_KEYS or key.startswith("_") or key in _SAMPLER_ONLY:  # "_...": diffusers metadata
            continue
        if key in _OFF_ONLY:
            if value not in (False, None):
                raise UserInputError(f"scheduler config: {key}={value!r} is not supported (msdfast's samplers have "
                                     f"no {key}); set it to false")
            continue
        raise UserInputError(f"scheduler config: unsupported key {key!r}")
    if config.get("timestep_spacing", "leading") not in SPACINGS:
        raise UserInputError(f"scheduler config: timestep_spacing must be one of {SPACINGS}, got "
                             f"{config.get('timestep_spacing')!r}")


@dataclass
class VPSchedule:
    """A discrete VP schedule holding alphas_cumprod in float64 (the master copy).

    Device copies (float32) are cached per device so that per-step coefficient lookups stay on
    the device: no host synchronisation inside sampling loops.
    """

    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: float = 1.0
    prediction_type: str = "epsilon"
    steps_offset: int = 0
    timestep_spacing: str = "leading"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        ac = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64).flatten()
        if ac.numel() < 2 or not torch.all((ac > 0) & (ac <= 1)):
            raise ValueError("alphas_cumprod: must hold at least 2 values in (0, 1]")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type: unsupported value {self.prediction_type!r}")
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(f"timestep_spacing: expected one of {SPACINGS}, got {self.timestep_spacing!r}")
        self.alphas_cumprod = ac

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None) -> "VPSchedule":
        """From a diffusers scheduler config dict (scheduler_config.json); None = SD's default.

        As diffusers' DDIMScheduler reads it: betas (beta_schedule, trained_betas), rescale_betas_zero_snr
        (`rescale_zero_terminal_snr`, then abar_{T-1} = 2^-24 as diffusers sets it), set_alpha_to_one (the
        clean-data abar), steps_offset and timestep_spacing (the `timesteps` grid), prediction_type. Keys msdfast
        cannot honour raise UserInputError (`check_scheduler_config`); tests compare with diffusers key by key.
        """
        config = dict(config or {})
        check_scheduler_config(config)
        betas = _betas(config)
        if config.get("rescale_betas_zero_snr", False):
            betas = rescale_zero_terminal_snr(betas)
        ac = torch.cumprod(1.0 - betas, dim=0)
        if config.get("rescale_betas_zero_snr", False):
            ac[-1] = 2.0 ** -24
        final = 1.0 if config.get("set_alpha_to_one", False) else float(ac[0])
        return cls(ac, final, config.get("prediction_type", "epsilon"), int(config.get("steps_offset", 0)),
                   config.get("timestep_spacing", "leading"))

    @classmethod
    def stable_diffusion(cls) -> "VPSchedule":
        """SD 1.x/2.x: scaled_linear betas 0.00085..0.012, T = 1000, set_alpha_to_one False."""
        return cls.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                                "set_alpha_to_one": False, "steps_offset": 1})

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    # ----------------------------------------------------------------- lookups
    def _table(self, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
        """abar with the clean-data value appended at index T, so t = -1 indexes it via t % (T+1)."""
        key = (str(device), dtype)
        if key not in self._cache:
            full = torch.cat([self.alphas_cumprod, torch.tensor([self.final_alpha_cumprod], dtype=torch.float64)])
            self._cache[key] = full.to(device=device, dtype=dtype)
        return self._cache[key]

    def alpha_bar(self, t: Tensorish, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """abar_t for integer t (tensor or python); t = -1 gives final_alpha_cumprod."""
        T = self.num_train_timesteps
        if isinstance(t, int) and not isinstance(t, bool):   # a python timestep: checked and indexed on the host
            if not -1 <= t < T:
                raise ValueError(f"t: timesteps must lie in [-1, {T - 1}]")
            return self._table(device, dtype)[T if t < 0 else t].clone()   # a copy: the table is cached
        if isinstance(t, torch.Tensor):
            if t.dtype.is_floating_point:
                raise TypeError("t: expected integer timesteps, got a floating tensor")
            device = t.device if device is None else device
            idx = t.to(device=device).long()
        else:
            idx = torch.as_tensor(t, dtype=torch.long, device=device)
        checks.require(idx, lambda i: (i < -1) | (i >= T), f"t: timesteps must lie in [-1, {T - 1}]")
        return self._table(idx.device, dtype)[torch.where(idx < 0, torch.full_like(idx, T), idx)]

    def alpha(self, t: Tensorish, **kw: Any) -> torch.Tensor:
        return self.alpha_bar(t, **kw).sqrt()

    def sigma(self, t: Tensorish, **kw: Any) -> torch.Tensor:
        return (1.0 - self.alpha_bar(t, **kw)).sqrt()

    def snr(self, t: Tensorish, **kw: Any) -> torch.Tensor:
        ab = self.alpha_bar(t, **kw)
        return ab / (1.0 - ab)

    def ve_sigma(self, t: Tensorish, **kw: Any) -> torch.Tensor:
        """VE noise level s_t = sigma_t / alpha_t (EDM's sigma)."""
        ab = self.alpha_bar(t, **kw)
        return ((1.0 - ab) / ab).sqrt()

    def tau(self, t: Tensorish, device: torch.device | str | None = None) -> torch.Tensor:
        """Normalised time tau = t / T (docs/math.md: the unit of the MSD kernel ODE)."""
        t = torch.as_tensor(t, device=device)
        return t.to(torch.float32) / self.num_train_timesteps

    def t_for_ve_sigma(self, s: float | torch.Tensor) -> torch.Tensor:
        """The integer t whose VE noise level s_t is closest to s (in log space)."""
        s = torch.as_tensor(s, dtype=torch.float64)
        if torch.any(s <= 0):
            raise ValueError("s: noise level must be positive")
        table = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().log()
        return (table[None, :] - s.log().reshape(-1, 1)).abs().argmin(dim=1).reshape(s.shape)

    # ----------------------------------------------------------------- time grids
    def timesteps(self, num_steps: int, spacing: str | None = None, steps_offset: int | None = None) -> torch.Tensor:
        """Descending integer timesteps as diffusers' DDIMScheduler.set_timesteps builds them (spacing None: the
        scheduler config's timestep_spacing)."""
        spacing = self.timestep_spacing if spacing is None else spacing
        T = self.num_train_timesteps
        if not 1 <= int(num_steps) <= T:
            raise ValueError(f"num_steps: must be in [1, {T}], got {num_steps}")
        n = int(num_steps)
        off = self.steps_offset if steps_offset is None else steps_offset
        if spacing == "leading":
            ts = (torch.arange(n, dtype=torch.float64) * (T // n)).round().flip(0) + off
        elif spacing == "trailing":
            ts = torch.arange(float(T), 0.0, -T / n, dtype=torch.float64).round() - 1
        elif spacing == "linspace":
            ts = torch.linspace(0, T - 1, n, dtype=torch.float64).round().flip(0)
        else:
            raise ValueError(f"spacing: expected 'leading', 'trailing' or 'linspace', got {spacing!r}")
        return ts.clamp(0, T - 1).long()

    def sampling_pairs(self, num_steps: int, spacing: str = "trailing",
                       t_start: int | None = None) -> list[tuple[int, int]]:
        """(t, t_next) pairs for a descending run ending at -1 (clean data).

        With t_start, the grid is linspace-like from t_start down (used by posterior sampling and
        SDEdit-style starts from an intermediate noise level).
        """
        if t_start is None:
            ts = self.timesteps(num_steps, spacing).tolist()
        else:
            if not 0 <= t_start < self.num_train_timesteps:
                raise ValueError(f"t_start: must be in [0, {self.num_train_timesteps - 1}]")
            ts = torch.linspace(t_start, 0, num_steps + 1, dtype=torch.float64)[:-1].round().long().tolist()
        ts = [int(t) for t in ts]
        return list(zip(ts, ts[1:] + [-1]))

    def inversion_pairs(self, num_steps: int, t_end: int, t_begin: int = -1) -> list[tuple[int, int]]:
        """Ascending (t, t_next) pairs from t_begin (-1 = clean) up to t_end, evenly spaced."""
        if not 0 <= t_end < self.num_train_timesteps:
            raise ValueError(f"t_end: must be in [0, {self.num_train_timesteps - 1}]")
        pts = torch.linspace(t_begin, t_end, num_steps + 1, dtype=torch.float64).round().long().tolist()
        return list(zip(pts[:-1], pts[1:]))

    # ----------------------------------------------------------------- conversions
    def to_eps(self, model_output: torch.Tensor, z: torch.Tensor, t: Tensorish) -> torch.Tensor:
        """Convert the model's native prediction (schedule.prediction_type) to eps."""
        if self.prediction_type == "epsilon":
            return model_output
        a, s = _bcast(self.alpha(t, device=z.device), z), _bcast(self.sigma(t, device=z.device), z)
        if self.prediction_type == "v_prediction":
            return eps_from_v(z, model_output, a, s)
        return eps_from_x0(z, model_output, a, s)


def _bcast(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample [B] (or scalar) coefficient to broadcast over like's trailing dims."""
    coef = coef.to(like.device)
    if coef.ndim == 0:
        return coef.to(torch.float32)
    return coef.reshape(coef.shape[0], *([1] * (like.ndim - 1)))


def eps_from_v(z: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """v = alpha eps - sigma x0  =>  eps = alpha v + sigma z."""
    return alpha * v + sigma * z


def v_from_eps(z: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """v = alpha eps - sigma x0 with x0 = (z - sigma eps) / alpha."""
    return alpha * eps - sigma * (z - sigma * eps) / alpha


def eps_from_x0(z: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """eps = (z - alpha x0) / sigma."""
    return (z - alpha * x0) / sigma


def x0_from_eps(z: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Tweedie / DDIM: x0 = (z - sigma eps) / alpha."""
    return (z - sigma * eps) / alpha


def psr_factor(snr: torch.Tensor | float, k: float, s: float = 1.0) -> torch.Tensor:
    """PSR rescaling factor r_t(k, s) = (SNR_t s^2 + 1) / (SNR_t s^2 / k + 1) (thesis ch. 1, eq. 1.6).

    k > 1 sharpens, k < 1 flattens, k = 1 is the identity; r -> k as t -> 0 and -> 1 at high noise.
    """
    if k <= 0:
        raise ValueError(f"k: PSR sharpness must be positive, got {k}")
    if s <= 0:
        raise ValueError(f"s: PSR scale must be positive, got {s}")
    snr = torch.as_tensor(snr)
    return (snr * s * s + 1.0) / (snr * s * s / k + 1.0)


# ----------------------------------------------------------------- the 2D toy world's schedule
TOY_S_MIN, TOY_S_MAX = 0.002, 80.0


def toy_schedule(num_train_timesteps: int = 1000, s_min: float = TOY_S_MIN, s_max: float = TOY_S_MAX) -> VPSchedule:
    """The VP schedule of all toy denoisers: VE noise levels log-uniform in [s_min, s_max] = [0.002, 80].

    s_t = exp(log s_min + t / (T - 1) (log s_max - log s_min)), abar_t = 1 / (1 + s_t^2), T = 1000, and
    t = -1 is clean data (set_alpha_to_one). The range is EDM's (Karras et al. 2022: sigma in [0.002, 80]):
    s_0 = 0.002 lies below the tree's thinnest component std (0.004) and s_999 = 80 >> the data std 0.5.
    Why not DDPM's linear betas (1e-4 .. 0.02, s from 0.01 to 157): their grid is coarse exactly where the
    thin tree needs steps (s = 0.01 -> 0.11 within 31 steps), and 32-step DDIM of class A with the exact
    denoiser then lands off the branches (NLL +0.42 vs true -1.36 with "leading" spacing, +8.3 "trailing");
    on this log-uniform grid every DDIM step shrinks s by the same factor (1.39 at 32 steps) and 32-step
    DDIM gives NLL -1.30, precision 0.97, recall 0.97 (tests/test_toy_samplers.py). SDS-style t ~ U[...]
    draws are then log-uniform in s, as EDM's training distribution roughly is.
    """
    if num_train_timesteps < 2 or not 0 < s_min < s_max:
        raise ValueError("num_train_timesteps / s_min / s_max: expected T >= 2 and 0 < s_min < s_max")
    s = torch.exp(torch.linspace(math.log(s_min), math.log(s_max), num_train_timesteps, dtype=torch.float64))
    return VPSchedule(1.0 / (1.0 + s * s), final_alpha_cumprod=1.0)
