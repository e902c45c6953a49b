"""Product-density samplers of mean-shift distillation (MSD paper sec. 3.3-3.4, Algorithm 2; docs/math.md sec. 2).

MSD needs samples y ~ q(y | x) ~ p(y) G_lambda(x - y): the data density times a Gaussian kernel centred on the
current x. msdfast's kernel is G(u) ~ exp(-|u|^2 / (2 lambda^2)) with score (c - z) / lambda^2; the paper writes
exp(-|u|^2 / lambda^2) but uses the score (c - z) / lambda^2, i.e. it silently drops the 2 (docs/math.md sec. 2).

Every solver runs N chains for a batch x [B, ...] as ONE batch [N*B, ...] laid out chain-major
(y.view(N, B, ...)[i] is chain i), with conditions repeated by `match_batch` inside `Guidance`, so each solver
step is ONE denoiser call (a CFG pair is one call of 2 N B). Each returns y [N*B, ...] and an info dict.

Solvers (all on the one fused step `guided_step` = predict + `ops.ddim_step`):
  naive     eq. 12, two forms (`naive_form`): "score" (msdfast's, default): eps_tot = eps_g - sigma_t (c_t - z) /
            lambda^2 with c_t = alpha_t x, i.e. the kernel SCORE (c_t - z)/lambda^2 turned into eps form
            (eps = -sigma_t score, docs/math.md sec. 1); "eq12" (the paper's printed form): eps_tot = eps_g -
            (x - z) / lambda^2, centre x, no sigma_t factor. DDIM either way.
  stable    eq. 14-15 / Algorithm 2 "stable": DDIM step t -> t', then the exact solution of the kernel ODE,
            z <- c_t' + (z' - c_t') exp(-|u_t - u_t'| / lambda^2), in the kernel-ODE time u of `kernel_time`
            ("sigma", "t", "tau"; or the "noised" kernel's exact flow), centres c_t = alpha_t x ("scaled", eq.
            9/12's centre) or the DDIM inversion trajectory of x ("inversion", the paper's Stable Diffusion
            practice; computed ONCE, shared by all N chains). See `kernel_decay` for which reading each is.
  posterior exact product sampling (not in the paper): q(y | x) is the posterior of clean y given the noisy
            observation x = y + lambda n; start at z = alpha_{t_lambda} x with s_{t_lambda} = lambda and run
            DDPM (eta = 1) down to clean data.
  tweedie   its expectation in 1 NFE: E[y] = D(alpha_{t_lambda} x, t_lambda) (zero variance).
  exact     direct sampling from the closed-form posterior of a Gaussian mixture (`GMM.product_sample`):
            the oracle, for GMM denoisers (msdfast.denoisers.gmm.GMMDenoiser) without guidance, 0 NFE.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .. import ops
from ..denoisers.base import Denoiser
from ..denoisers.gmm import GMMDenoiser
from ..errors import UserInputError
from .ddim import ddim_invert
from .guidance import Guidance, guided_step

SOLVERS = ("stable", "naive", "posterior", "tweedie", "exact")
NAIVE_FORMS = ("score", "eq12")
KERNEL_TIMES = ("sigma", "t", "tau", "noised")
CENTERS = ("inversion", "scaled")


# ---------------------------------------------------------------------- options: one dataclass per solver
def _interval(name: str, v: Any) -> tuple[int, int] | None:
    if v is None:
        return None
    if len(v) != 2 or v[0] > v[1]:
        raise UserInputError(f"{name}: expected (t_lo, t_hi) with t_lo <= t_hi, got {v!r}")
    return (int(v[0]), int(v[1]))


def _at_least_one(name: str, v: Any) -> None:
    if int(v) < 1:
        raise UserInputError(f"{name}: must be >= 1, got {v}")


def _choice(name: str, v: Any, valid: tuple[str, ...]) -> None:
    if v not in valid:
        raise UserInputError(f"{name}: expected one of {valid}, got {v!r}")


@dataclass(frozen=True)
class TweedieOptions:
    """The tweedie solver has no options (one NFE, one "chain")."""


@dataclass(frozen=True)
class ExactOptions:
    """chains: N exact samples per element of x."""

    chains: int = 1

    def __post_init__(self) -> None:
        _at_least_one("chains", self.chains)


@dataclass(frozen=True)
class PosteriorOptions(ExactOptions):
    """chains: N samples per element; steps: at most this many DDPM steps below t_lambda."""

    steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one("steps", self.steps)


@dataclass(frozen=True)
class _GridOptions(PosteriorOptions):
    """chains, steps; t_top: the grid's top timestep (default T - 1); kernel_interval: (t_lo, t_hi), the kernel
    term only for steps starting inside."""

    t_top: int | None = None
    kernel_interval: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "kernel_interval", _interval("kernel_interval", self.kernel_interval))


@dataclass(frozen=True)
class NaiveOptions(_GridOptions):
    """chains, steps, t_top, kernel_interval; naive_form: "score" | "eq12" (see `naive_product`)."""

    naive_form: str = "score"

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("naive_form", self.naive_form, NAIVE_FORMS)


@dataclass(frozen=True)
class StableOptions(_GridOptions):
    """chains, steps, t_top, kernel_interval; kernel_time: "sigma" | "t" | "tau" | "noised"; centers:
    "inversion" | "scaled" (see `stable_product`)."""

    kernel_time: str = "tau"
    centers: str = "inversion"

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("kernel_time", self.kernel_time, KERNEL_TIMES)
        _choice("centers", self.centers, CENTERS)


SOLVER_OPTIONS: dict[str, type] = {"stable": StableOptions, "naive": NaiveOptions, "posterior": PosteriorOptions,
                                   "tweedie": TweedieOptions, "exact": ExactOptions}


def solver_options(solver: str, **options: Any) -> Any:
    """The options dataclass of `solver` from keyword options; an unknown option is a one-line UserInputError
    naming it and listing the valid ones."""
    if solver not in SOLVER_OPTIONS:
        raise UserInputError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    cls = SOLVER_OPTIONS[solver]
    valid = [f.name for f in dataclasses.fields(cls)]
    for k in options:
        if k not in valid:
            raise UserInputError(f"{k}: not an option of the {solver} solver (valid: {', '.join(valid) or 'none'})")
    return cls(**options)


def _check(x: torch.Tensor, lam: float) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x: expected a batch tensor [B, ...]")
    if not (isinstance(lam, (int, float)) and lam > 0 and math.isfinite(lam)):
        raise ValueError(f"lam: the bandwidth must be a positive finite number, got {lam!r}")


def product_grid(guidance: Guidance, steps: int, t_top: int | None = None) -> list[int]:
    """Ascending timesteps [-1, ..., t_top] shared by the inversion (up) and the product solvers (down)."""
    sch = guidance.schedule
    t_top = sch.num_train_timesteps - 1 if t_top is None else int(t_top)
    if not 0 <= t_top < sch.num_train_timesteps:
        raise ValueError(f"t_top: must be in [0, {sch.num_train_timesteps - 1}], got {t_top}")
    if int(steps) > t_top + 1:
        raise ValueError(f"steps: at most t_top + 1 = {t_top + 1} solver steps fit below t_top, got {steps}")
    return [p[0] for p in sch.inversion_pairs(steps, t_top)] + [t_top]


def _in(t: int, interval: tuple[int, int] | None) -> bool:
    return interval is None or interval[0] <= t <= interval[1]



def naive_product(guidance: Guidance, x: torch.Tensor, lam: float, options: NaiveOptions = NaiveOptions(), *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Naive product solver: DDIM on the composite eps of MSD paper eq. 12 (Algorithm 2, first ODESolver).

    z_T ~ N(0, I); each DDIM step t -> t' uses eps_tot (the kernel term only for t in kernel_interval if given):
      naive_form "score" (msdfast's reading, default): eps_tot = eps_g(z, t) - sigma_t (alpha_t x - z) / lambda^2,
          the product score of eq. 9 (kernel centred on alpha_t x in the VP variable) in eps form
          eps = -sigma_t grad log p (docs/math.md sec. 1);
      naive_form "eq12" (the paper's eq. 12 as printed): eps_tot = eps_g(z, t) - (x - z) / lambda^2, centre x
          and no sigma_t factor (read literally, eq. 12 mixes a score with an eps).
    NFE = steps N B (x 2 with CFG). Unstable for small lambda (an explicit step of a stiff term): that is the
    paper's point (sec. 3.4).
    """
    _check(x, lam)
    o = options
    sch, dev = guidance.schedule, x.device
    grid = product_grid(guidance, o.steps, o.t_top)
    xr = Denoiser.repeat_cond(x, o.chains)
    z = torch.randn(xr.shape, generator=generator, device=dev, dtype=x.dtype)
    with ops.checks_once():   # the fused step's arguments are validated at the first step
        for t, tn in zip(grid[::-1][:-1], grid[::-1][1:]):
            kernel = None   # the kernel score's eps-form term, added to the guided eps by the shared step
            if _in(t, o.kernel_interval):
                if o.naive_form == "eq12":
                    kernel = -((xr - z) / (lam * lam))
                else:
                    a, s = sch.alpha(t, device=dev).to(x.dtype), sch.sigma(t, device=dev).to(x.dtype)
                    kernel = -(s * (a * xr - z) / (lam * lam))
            z = guided_step(guidance, z, t, tn, offset=kernel, tag="msd-naive")
    return z, {"grid": grid}



def kernel_time_of(sch: Any, kernel_time: str) -> Callable[[int], float]:
    """u(t): the kernel-ODE time of timestep t (t = -1 is clean data) for kernel_time "sigma" | "t" | "tau"."""
    if kernel_time == "sigma":
        return lambda t: float(sch.ve_sigma(t, dtype=torch.float64)) if t >= 0 else 0.0
    if kernel_time == "t":
        return lambda t: float(t)
    if kernel_time == "tau":
        T = sch.num_train_timesteps
        return lambda t: t / T
    raise ValueError(f"kernel_time: expected one of {KERNEL_TIMES}, got {kernel_time!r}")


def kernel_decay(sch: Any, lam: float, kernel_time: str) -> Callable[[int, int], float]:
    """The factor d(t, t') of the kernel pull z' = c + (z' - c) d of one stable-solver step t -> t'.

    The paper (eq. 14-15, supplement C) solves the kernel ODE dz/du = (c - z) / lambda^2 exactly,
    d = exp(-|u_t - u_t'| / lambda^2), but never says what its time u is (docs/math.md sec. 2 audits the readings):
    "sigma":  u = s_t, the VE noise level (EDM's sigma; 0 for clean data, t = -1). The toy study's reading:
              the paper's 2D experiments run on Karras et al.'s EDM code, whose ODE time is sigma, and there
              eq. 12 and eq. 14 are exactly consistent. The toy's "MSD (paper)" row.
    "t":      u = t, the integer timestep (clean data t = -1). The Stable Diffusion reading: only in it do the
              paper's fig. 5 bandwidths (1e3 / 10 / 1e-2) behave as the figure shows.
    "tau":    u = t / T (msdfast's first choice, kept; no passage of the paper supports it). lambda^2 is then
              1 / T of the "t" reading's.
    "noised": not a time unit but msdfast's addition: the exact flow of the NOISED kernel's score
              (c - x)/(lambda^2 + s^2) -- a Gaussian kernel of width lambda convolved with the noise at s --
              which solves dy/ds = s y / (lambda^2 + s^2) in closed form (y = x - c):
              d = sqrt((lambda^2 + s_t'^2) / (lambda^2 + s_t^2)). The pull vanishes at high noise and the
              kernel alone flows N(c, s_T^2) noise to N(c, lambda^2). Still biased: at high noise DDIM and the
              kernel step each shrink (z - c) by ~s'/s, while the noised product N(m, C + s^2) shrinks once
              (the sum of noised scores is not the noised product's score). Measured: 16-28% relative error in
              g on the tree vs 95-100% for "tau" with inversion centres.
    """
    if kernel_time == "noised":
        ve2 = lambda t: float(sch.ve_sigma(t, dtype=torch.float64)) ** 2 if t >= 0 else 0.0  # noqa: E731
        return lambda t, tn: math.sqrt((lam**2 + ve2(tn)) / (lam**2 + ve2(t)))
    u = kernel_time_of(sch, kernel_time)
    return lambda t, tn: math.exp(-abs(u(t) - u(tn)) / lam**2)


def stable_product(guidance: Guidance, x: torch.Tensor, lam: float, options: StableOptions = StableOptions(), *,
                   inversion: Guidance | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Stable product solver (MSD paper eq. 14-15, Algorithm 2 "stable"): operator splitting of eq. 12.

    1. Centres c_t on the solver's grid: "scaled" c_t = alpha_t x (eq. 9/12's kernel centre x in the VP
       variable; 0 NFE; the toy study's paper reading) or "inversion" (default): the DDIM inversion trajectory
       of x (`inversion` guidance, default `guidance` without CFG/PSR; the paper's Stable Diffusion heuristic,
       sec. 4.3), computed ONCE and shared by the N chains; c_{-1} = x.
    2. z_T = c_T + (eps - c_T) d(T, T'), eps ~ N(0, I), d the decay of the first step (Algorithm 2's start).
    3. Each step: z' = DDIM(z, eps_g, t -> t') then z = c_t' + (z' - c_t') d(t, t') (fused in ops.ddim_step):
       the pull towards the centre of the level AFTER the step (Algorithm 2 prints z*_t, the current level;
       taken literally it diverges, docs/math.md sec. 2). Outside kernel_interval (judged at t) d = 1 (plain DDIM).
    kernel_time: the time u of the kernel ODE, d(t, t') = exp(-|u_t - u_t'| / lambda^2) (`kernel_decay` says
       which reading each is): "sigma" (u = s_t, the toy/EDM reading), "t" (integer timestep, the SD reading),
       "tau" (t / T, default, kept for existing runs) or "noised" (msdfast's exact noised-kernel flow; the
       chains then start from pure noise, the pull at s_T being negligible by construction).
    NFE = steps B (x 2 if the inversion uses CFG; 0 for "scaled") + steps N B (x 2 for steps with CFG).
    """
    _check(x, lam)
    o = options
    sch, dev = guidance.schedule, x.device
    grid = product_grid(guidance, o.steps, o.t_top)
    if o.centers == "inversion":
        inv = inversion if inversion is not None else Guidance(guidance.denoiser, guidance.cond)
        traj = ddim_invert(inv, x, o.steps, grid[-1], trajectory=True)
    else:   # "scaled"
        traj = [(t, x * sch.alpha(t, device=dev).to(x.dtype)) for t in grid]
    centers = {t: Denoiser.repeat_cond(c, o.chains) for t, c in traj}   # repeated over the chains once, not per step
    if sorted(centers) != sorted(set(grid)):
        raise RuntimeError("internal: inversion grid does not match the product grid")
    decay_of = kernel_decay(sch, lam, o.kernel_time)
    desc = grid[::-1]
    cT = centers[desc[0]]
    eps = torch.randn(cT.shape, generator=generator, device=dev, dtype=x.dtype)
    # The paper pulls the start towards c_T; under the noised kernel the pull at s_T is negligible by
    # construction, so its chains start from pure noise.
    d0 = decay_of(desc[0], desc[1]) if _in(desc[0], o.kernel_interval) and o.kernel_time != "noised" else 1.0
    z = cT + (eps - cT) * d0
    with ops.checks_once():   # the fused step's arguments are validated at the first step
        for t, tn in zip(desc[:-1], desc[1:]):
            active = _in(t, o.kernel_interval)
            z = guided_step(guidance, z, t, tn, center=centers[tn] if active else None,
                            decay=decay_of(t, tn) if active else 1.0, tag="msd-stable")
    return z, {"grid": grid}


def posterior_level(guidance: Guidance, lam: float) -> tuple[int, float]:
    """(t_lambda, s_{t_lambda}): the timestep whose VE level is closest to lambda (log scale) and its level."""
    sch = guidance.schedule
    t = int(sch.t_for_ve_sigma(lam))
    return t, float(sch.ve_sigma(t))   # the float32 level the denoiser protocol sees


def posterior_product(guidance: Guidance, x: torch.Tensor, lam: float, options: PosteriorOptions = PosteriorOptions(),
                      *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Exact product sampling by reverse DDPM from the noise level s_t = lambda (docs/math.md sec. 2).

    z = alpha_{t_lambda} x (chains repeated), then min(steps, t_lambda + 1) DDPM steps (eta = 1) down to clean
    data. For an exact denoiser y is an exact sample of q(y | x) with bandwidth lambda_eff = s_{t_lambda}
    (the discrete level closest to lambda; reported in info). NFE = min(steps, t_lambda + 1) N B (x 2 CFG).
    """
    _check(x, lam)
    sch, dev = guidance.schedule, x.device
    t_lam, lam_eff = posterior_level(guidance, lam)
    z = Denoiser.repeat_cond(x, options.chains) * sch.alpha(t_lam, device=dev).to(x.dtype)
    n = min(int(options.steps), t_lam + 1)   # spacing >= 1: no repeated timesteps
    ts = torch.linspace(t_lam, 0, n, dtype=torch.float64).round().long().tolist() if n > 1 else [t_lam]
    pairs = list(zip(ts, ts[1:] + [-1]))
    with ops.checks_once():   # the fused step's arguments are validated at the first step
        for t, tn in pairs:
            noise = torch.randn(z.shape, generator=generator, device=dev, dtype=x.dtype)
            z = guided_step(guidance, z, t, tn, eta=1.0, noise=noise, tag="msd-posterior")
    return z, {"t_lambda": t_lam, "lambda_eff": lam_eff, "pairs": pairs}


def tweedie_product(guidance: Guidance, x: torch.Tensor, lam: float, options: TweedieOptions = TweedieOptions(), *,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The posterior sampler's expectation in ONE call: y = D(alpha_{t_lambda} x, t_lambda) (Tweedie).

    E[y] - x = lambda_eff^2 grad log p_{lambda_eff}(x) exactly for an exact denoiser: a zero-variance
    mean-shift estimate. Returns y [B, ...] (one "chain"). NFE = B (x 2 with CFG).
    """
    _check(x, lam)
    sch, dev = guidance.schedule, x.device
    t_lam, lam_eff = posterior_level(guidance, lam)
    z = x * sch.alpha(t_lam, device=dev).to(x.dtype)
    eps = guidance.eps(z, t_lam, tag="msd-tweedie")
    y = x - lam_eff * eps   # D = (z - sigma eps) / alpha = x - s eps
    return y.to(x.dtype), {"t_lambda": t_lam, "lambda_eff": lam_eff}


def exact_product(guidance: Guidance, x: torch.Tensor, lam: float, options: ExactOptions = ExactOptions(), *,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The oracle product sampler for a GMM denoiser (`GMMDenoiser.product_sample`; class ids as cond), 0 NFE."""
    den = guidance.denoiser
    if not isinstance(den, GMMDenoiser):
        raise ValueError("solver: 'exact' needs a Gaussian-mixture denoiser (msdfast.denoisers.gmm.GMMDenoiser)")
    if guidance.scale != 1.0 or guidance.psr_k != 1.0:
        raise ValueError("solver: 'exact' samples the unguided mixture; set guidance_scale = 1 and psr_k = 1")
    _check(x, lam)
    return den.product_sample(x, lam, guidance.cond, options.chains, generator), {"lambda_eff": lam}


_SOLVER_FNS = {"stable": stable_product, "naive": naive_product, "posterior": posterior_product,
               "tweedie": tweedie_product, "exact": exact_product}


def product_sample(solver: str, guidance: Guidance, x: torch.Tensor, lam: float, options: Any = None, *,
                   inversion: Guidance | None = None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Dispatch to one of SOLVERS with its options dataclass (`solver_options`; default: the defaults);
    `inversion` is the stable solver's inversion guidance. Returns (y [N*B, ...] chain-major, info)."""
    if solver not in _SOLVER_FNS:
        raise UserInputError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    options = SOLVER_OPTIONS[solver]() if options is None else options
    if not isinstance(options, SOLVER_OPTIONS[solver]):
        raise TypeError(f"options: the {solver} solver takes {SOLVER_OPTIONS[solver].__name__}, "
                        f"got {type(options).__name__}")
    if solver == "stable":
        return stable_product(guidance, x, lam, options, inversion=inversion, generator=generator)
    if inversion is not None:
        raise ValueError(f"inversion: only the stable solver inverts x, not {solver!r}")
    return _SOLVER_FNS[solver](guidance, x, lam, options, generator=generator)
