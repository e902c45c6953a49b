"""MSD: mean-shift distillation (MSD paper sec. 3-4, Algorithm 2; docs/math.md sec. 2)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..samplers.product import SOLVER_OPTIONS, SOLVERS, product_sample, solver_options
from .bandwidth import BandwidthSchedule
from .common import GuidedEstimator


class MSD(GuidedEstimator):
    """Mean-shift distillation: g = x - mean_i y_i, y_i ~ q(y | x) ~ p(y) G_lambda(x - y) (MSD paper eq. 10-11).

    The product samples come from msdfast.samplers.product (N chains as ONE batch [N*B, ...], chain-major);
    the mean over chains is the fused op `ops.chain_mean_shift`. Kernel convention: G(u) ~
    exp(-|u|^2 / (2 lambda^2)), score (c - z) / lambda^2 (the paper drops the 2; docs/math.md sec. 2).

    Options (plus `GuidedEstimator`'s: guidance_scale, guide, guidance_interval, psr_k, psr_s):
        solver: "stable" (eq. 15, Algorithm 2, default), "naive" (eq. 12), "posterior" (exact product sampling
            by DDPM from s_t = lambda), "tweedie" (its expectation, 1 NFE, zero variance) or "exact" (closed-form
            posterior sampling for a GMM denoiser without guidance: the oracle, 0 NFE).
        chains: N product samples per element of x (ignored by "tweedie").
        steps: solver steps T (for "posterior": at most, the steps below t_lambda are used).
        bandwidth: lambda0 (default sqrt(0.1), the paper's toy value).
        bandwidth_schedule: "linear" (default: the paper's monotonically decreasing schedule, sec. 4.2 / 4.4) |
            "geometric" | "constant" (an ablation) over the run (update_step progress).
        lambda_end: final bandwidth of the schedule (linear default 0, geometric default lambda0 / 100).
        lambda_min: termination (Algorithm 2): once lambda < lambda_min, `finished` is True and calls return
            g = 0, NFE 0 (info "finished", "lambda", "lambda_min"); the pipelines then stop and say so.
            bandwidth < lambda_min at the start is a msdfast.errors.UserInputError naming both.
        kernel_interval: (t_lo, t_hi): apply the kernel term only for solver steps starting at t inside.
        inversion_guidance_scale: CFG weight of the stable solver's DDIM inversion (default 1: conditional).
            The inversion runs without PSR (it only locates x's trajectory); the solvers use PSR if psr_k != 1.
        kernel_time: the stable solver's kernel-ODE time u in d = exp(-|u_t - u_t'| / lambda^2) (eq. 14-15; the
            paper does not state u, docs/math.md sec. 2): "sigma" (u = VE noise level s_t, 0 for clean data: the
            toy/EDM reading, with centers="scaled" the toy study's "MSD (paper)" row), "t" (integer timestep:
            the Stable Diffusion reading of fig. 5's bandwidths), "tau" (t / T; default, msdfast's first
            choice, kept) or "noised" (msdfast's exact flow of the noised kernel score (c - x)/(lambda^2 + s^2)).
            See samplers.product.kernel_decay.
        centers: the stable solver's kernel centres c_t: "inversion" (DDIM inversion trajectory of x, the
            paper's Stable Diffusion heuristic, sec. 4.3; default) or "scaled" (alpha_t x, the centre x of eq.
            9/12; 0 inversion NFE; the toy reading).
        naive_form: the naive solver's eq. 12: "score" (default; eps_g - sigma_t (alpha_t x - z) / lambda^2, the
            kernel score in eps form) or "eq12" (the paper's printed eps_g - (x - z) / lambda^2).
        t_range: its t_max is the solver's top timestep (default T - 1); t_min is unused.

    NFE per call (batch B, N chains, T steps, c = 2 with CFG/autoguidance else 1, c_inv likewise for the
    inversion; with a guidance_interval only the steps inside count 2):
        stable:    T B c_inv + T N B c   (centers="scaled": T N B c)
        naive:     T N B c
        posterior: min(T, t_lambda + 1) N B c
        tweedie:   B c
        exact:     0
    """

    name = "msd"
    default_t_range = (0.0, 1.0)

    def __init__(self, denoiser: Denoiser, *, solver: str = "stable", chains: int = 1, steps: int = 10,
                 bandwidth: float = math.sqrt(0.1), bandwidth_schedule: str = "linear",
                 lambda_end: float | None = None, lambda_min: float = 1e-3,
                 kernel_interval: tuple[int, int] | None = None, inversion_guidance_scale: float = 1.0,
                 kernel_time: str = "tau", centers: str = "inversion", naive_form: str = "score",
                 **options: Any) -> None:
        super().__init__(denoiser, **options)
        if int(steps) > self.t_max + 1:
            raise UserInputError(f"steps: must be in [1, {self.t_max + 1}], got {steps}")
        # the chosen solver's options dataclass (validated here, before any call); the others are ignored
        given = {"chains": chains, "steps": steps, "t_top": self.t_max, "kernel_interval": kernel_interval,
                 "kernel_time": kernel_time, "centers": centers, "naive_form": naive_form}
        if solver not in SOLVER_OPTIONS:
            raise UserInputError(f"solver: expected one of {SOLVERS}, got {solver!r}")
        fields = {f.name for f in dataclasses.fields(SOLVER_OPTIONS[solver])}
        self.solver_options = solver_options(solver, **{k: v for k, v in given.items() if k in fields})
        self.solver, self.chains, self.steps = solver, int(chains), int(steps)
        self.bandwidth = BandwidthSchedule(float(bandwidth), bandwidth_schedule, lambda_end, float(lambda_min))
        self.inversion_guidance_scale = float(inversion_guidance_scale)

    @property
    def lam(self) -> float:
        """The current bandwidth lambda (from the schedule and update_step's progress)."""
        return self.bandwidth(self.progress)

    @property
    def finished(self) -> bool:
        """True once lambda < lambda_min: the paper's termination criterion."""
        return self.bandwidth.finished(self.progress)

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        lam = self.lam
        if self.finished:
            return torch.zeros_like(x), {"lambda": lam, "lambda_min": self.bandwidth.lambda_min, "finished": True}
        guidance = self.guidance(cond, uncond)
        inversion = None
        if self.solver == "stable" and self.solver_options.centers == "inversion":
            inversion = self.guidance(cond, uncond, scale=self.inversion_guidance_scale, psr=False)
        y, info = product_sample(self.solver, guidance, x, lam, self.solver_options, inversion=inversion,
                                 generator=generator)
        g = ops.chain_mean_shift(y, x)
        info = {k: v for k, v in info.items() if k in ("t_lambda", "lambda_eff", "grid")}
        info.update({"lambda": lam, "lambda_min": self.bandwidth.lambda_min, "finished": False, "samples": y})
        return g, info

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bandwidth": vars(self.bandwidth).copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.bandwidth = BandwidthSchedule(**state["bandwidth"])
