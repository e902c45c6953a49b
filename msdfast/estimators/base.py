"""The one contract every score-distillation estimator follows (docs/math.md sec. 2).

An estimator maps a batch x [B, ...] (latents or 2D points) and its condition to a DESCENT gradient
g of x's shape: x <- x - lr g raises the likelihood. It also returns the threestudio loss-trick loss
    target = (x - g).detach();  loss = 0.5 * sum((x - target)^2) / B   so that dloss/dx = g / B,
the number of denoiser evaluations it spent (NFE: a CFG pair counts 2, a batch of N counts N), and a
dict of diagnostics (t, lambda, grad_norm, ...).

Non-finite values: every estimator's g goes through torch.nan_to_num (threestudio's rule, documented once here;
MSD's chain mean shift and the guided estimators' fused distill_grad alike). The pipelines still stop with an
error naming the step when a loss or gradient norm is not finite.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..ops import checks


@dataclass
class GradientEstimate:
    grad: torch.Tensor            # descent gradient g, x's shape, detached
    loss: torch.Tensor            # loss-trick scalar; backward() puts g / B into x.grad
    nfe: int                      # denoiser evaluations spent on this estimate
    info: dict[str, Any] = field(default_factory=dict)


def loss_trick(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """0.5 * sum((x - (x - g).detach())^2) / B: its gradient w.r.t. x is g / B (threestudio)."""
    target = (x - g).detach()
    return 0.5 * (x - target).pow(2).sum() / x.shape[0]


class Estimator:
    """Base class: subclasses implement `_estimate`; `__call__` validates and accounts NFE."""

    name: str = "estimator"

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self.step = 0
        self.total_steps = 1

    # ------------------------------------------------------------------ state (checkpoint / exact resume)
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (subclasses add their own entries)."""
        return {"method": self.name, "step": self.step, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["method"] != self.name:
            raise ValueError(f"state: saved by estimator {state['method']!r}, loading into {self.name!r}")
        self.step, self.total_steps = int(state["step"]), int(state["total_steps"])

    def update_step(self, step: int, total_steps: int) -> None:
        """Called once per optimisation step (time-range / bandwidth annealing; threestudio hook)."""
        self.step, self.total_steps = int(step), max(int(total_steps), 1)

    @property
    def progress(self) -> float:
        """Fraction of the run done, in [0, 1]."""
        return min(self.step / max(self.total_steps - 1, 1), 1.0)

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, cond: Cond = None, uncond: Cond = None, *,
                 generator: torch.Generator | None = None) -> GradientEstimate:
        """The estimate for x under (cond, uncond). A condition tensor must have x's batch (one row per element:
        repeat it explicitly, nothing is tiled silently); an empty batch is an error; the gradient goes through
        torch.nan_to_num (NaN -> 0, +-inf -> the dtype's largest finite value), the same rule for every
        estimator (the fused distill_grad of the guided estimators applies it too)."""
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError("x: expected a batch tensor [B, ...]")
        if x.shape[0] == 0:
            raise UserInputError(f"x: empty batch (shape {tuple(x.shape)}); an estimate needs B >= 1")
        for name, c in (("cond", cond), ("uncond", uncond)):
            if isinstance(c, torch.Tensor) and c.ndim >= 1 and c.shape[0] != x.shape[0]:
                raise UserInputError(f"{name}: batch {c.shape[0]} does not match x's batch {x.shape[0]} (give one "
                                     f"condition per element, e.g. {name}.expand({x.shape[0]}, ...))")
        # a value check: on an accelerator only in debug mode (a host sync per step otherwise; msdfast.ops.checks)
        checks.require(x, lambda v: ~torch.isfinite(v), "x: contains NaN or inf")
        nfe0 = self.denoiser.stats.nfe
        with torch.no_grad():
            g, info = self._estimate(x.detach(), cond, uncond, generator)
        g = torch.nan_to_num(g)   # the one rule for every estimator (threestudio's; module doc)
        return GradientEstimate(g, loss_trick(x, g), self.denoiser.stats.nfe - nfe0, info)

