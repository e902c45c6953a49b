"""Estimator efficiency, MSD paper eq. 17 (table 3).

    eff(g_hat(x)) = |g(x)|^2 / ( MSE(g_hat(x)) * cost(g_hat(x)) )

g(x) is the estimator's own mean at x (so bias does not count, only spread), MSE is the mean squared
deviation of ONE estimate from that mean, cost the denoiser evaluations (NFE) one estimate of one
point spends. The paper "accumulates MSE and cost over many independent estimations and averages over
many x" and reports the log. msdfast's estimate, from R independent estimates at each of P points:

    g_bar(x) = mean_r g_r(x);   v(x) = sum_r |g_r(x) - g_bar(x)|^2 / (R - 1)      (unbiased MSE)
    |g(x)|^2 ~ |g_bar(x)|^2 - v(x) / R                                            (unbiased, see why)
    log_eff  = log( mean_x |g(x)|^2 / (mean_x v(x) * cost) )                       (ratio of averages)

Why the correction and the ratio of averages: a noisy estimator's spread can be far above its mean (the
paper reports SDS at log eff -7), so |g_bar|^2 alone would be dominated by leftover noise (v / R) unless R
were huge, and a mean of per-point ratios is dominated by the few points where v ~ 0. A zero-variance
estimator (Tweedie MSD; SDI at a fixed t with deterministic inversion; the stable MSD solver, whose kernel
decay exp(-dtau / lambda^2) erases its start noise at the probe's lambda) has eff = +inf: reported as such,
not as a number. The per-point geometric mean (mean_x log eff(x)) is returned too, for comparison.

Which x (msdfast.toy.study): the estimator's own targets at the probe step (default) or a uniform grid;
the estimator's state is the one saved at the probe (protocol.estimate_fn restores it for every repeat).

Deterministic estimators and the paper's ~14: the spread of SDI / stable / Tweedie MSD between float32 and
float64 evaluation, used as MSE, gives log eff 19.7-22 (SDI), 16.6-18.9 (stable MSD), 28-34 (Tweedie) on
the tree with the exact denoiser (CPU), so the paper's 13.4-14.2 is a round-off (or reduced-precision,
e.g. TF32) floor, not a property of the estimators; msdfast reports inf.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch

# estimate(x, generator) -> (g [P, D] descent gradient, nfe spent on the whole batch)
EstimateFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, int]]


@dataclass
class Efficiency:
    log_eff: float          # log of eq. 17, ratio of averages (+inf: zero variance; nan: mean not resolved)
    log_eff_geo: float      # mean over x of log eff(x) (points with zero variance or mean left out)
    mean_sq: float          # mean_x |g(x)|^2 (bias-corrected)
    mse: float              # mean_x MSE of one estimate
    cost: float             # NFE per estimate per point
    repeats: int
    points: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()} | {
            "log_eff_str": format_log_eff(self.log_eff)}


def format_log_eff(v: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.2f}"


def efficiency_from_samples(samples: torch.Tensor, cost: float, rel_tol: float = 1e-10,
                            reference: torch.Tensor | None = None) -> Efficiency:
    """Eq. 17 from R independent estimates at P points: samples [R, P, D] (module doc).

    By default g is the estimator's own mean (docs/math.md), so MSE is the unbiased variance and |g|^2 is
    bias-corrected. With `reference` [P, D] (a true gradient, e.g. the exact mean shift) g is that and the
    MSE counts the estimator's bias too. Variance below rel_tol * |g|^2 is float rounding, not randomness:
    counted as zero.
    """
    if samples.ndim != 3 or samples.shape[0] < 2:
        raise ValueError(f"samples: expected [R >= 2, P, D], got {tuple(samples.shape)}")
    if not cost > 0:
        raise ValueError("cost: NFE per estimate must be positive")
    s = samples.double()
    R, P, _ = s.shape
    if reference is not None:
        if reference.shape != s.shape[1:]:
            raise ValueError(f"reference: expected shape {tuple(s.shape[1:])}, got {tuple(reference.shape)}")
        ref = reference.double()
        v = (s - ref).pow(2).sum(-1).mean(0)                      # MSE against the true g, [P]
        g2c = g2 = ref.pow(2).sum(-1)
    else:
        gbar = s.mean(0)
        v = (s - gbar).pow(2).sum(-1).sum(0) / (R - 1)           # [P]
        g2 = gbar.pow(2).sum(-1)
        g2c = g2 - v / R
    v = torch.where(v <= rel_tol * g2, torch.zeros_like(v), v)
    mean_sq, mse = float(g2c.mean()), float(v.mean())
    if mse == 0.0:
        log_eff = math.inf if mean_sq > 0 else math.nan
    elif mean_sq <= 0:
        log_eff = math.nan  # the mean is not resolved by R repeats: more repeats needed
    else:
        log_eff = math.log(mean_sq / (mse * cost))
    ok = (v > 0) & (g2c > 0)
    geo = float(torch.log(g2c[ok] / (v[ok] * cost)).mean()) if bool(ok.any()) else (
        math.inf if bool((v == 0).all()) and mean_sq > 0 else math.nan)
    return Efficiency(log_eff, geo, mean_sq, mse, float(cost), R, P)


def measure_efficiency(estimate: EstimateFn, points: torch.Tensor, repeats: int = 16,
                       seed: int = 0) -> Efficiency:
    """Run `repeats` independent estimates at `points` [P, D] (one call each) and apply eq. 17.

    Each repeat is a separate call with its own generator seed, so estimators that draw one t per
    call (rather than per point) still give independent repeats.
    """
    if repeats < 2:
        raise ValueError("repeats: eq. 17 needs at least 2 independent estimates")
    if points.ndim != 2:
        raise ValueError(f"points: expected [P, D], got {tuple(points.shape)}")
    outs, nfe = [], 0
    for r in range(repeats):
        gen = torch.Generator(device=points.device).manual_seed(seed * 100003 + r)
        g, n = estimate(points, gen)
        if g.shape != points.shape:
            raise ValueError(f"estimate: returned shape {tuple(g.shape)}, expected {tuple(points.shape)}")
        outs.append(torch.nan_to_num(g.detach().double().cpu()))
        nfe += int(n)
    cost = nfe / (repeats * points.shape[0])
    return efficiency_from_samples(torch.stack(outs), cost)
