"""Bandwidth schedules for mean-shift distillation (MSD paper sec. 3-4, Algorithm 2; docs/math.md sec. 2).

MSD anneals the kernel bandwidth lambda monotonically down over the optimisation run and terminates when
lambda < lambda_min (the paper's convergence criterion). Progress p in [0, 1] is the estimator's
`update_step` fraction (step / (total_steps - 1)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import UserInputError

BANDWIDTH_KINDS = ("constant", "linear", "geometric")


@dataclass
class BandwidthSchedule:
    """lambda(p) for progress p in [0, 1].

    kind "constant": lambda0 throughout (not the paper's; for ablations).
    kind "linear":   lambda0 + (lambda_end - lambda0) p, lambda_end default 0 (MSD's default everywhere: the
                     paper's monotonically decreasing schedule; its toy protocol decays lambda0 = sqrt(0.1)
                     linearly, sec. 4.2, and its SD runs use "a monotonically decreasing schedule", sec. 4.4).
    kind "geometric": lambda0 (lambda_end / lambda0)^p, lambda_end default lambda0 / 100 (must be > 0).
    `finished(p)` is True once lambda(p) < lambda_min (or lambda(p) <= 0): MSD then returns g = 0, NFE 0 and
    the pipelines stop (Algorithm 2: "if lambda < lambda_min then terminate"). A lambda0 already below
    lambda_min is a UserInputError naming both (a run that would stop before its first step).
    """

    lambda0: float = math.sqrt(0.1)
    kind: str = "linear"
    lambda_end: float | None = None
    lambda_min: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in BANDWIDTH_KINDS:
            raise UserInputError(f"bandwidth_schedule: expected one of {BANDWIDTH_KINDS}, got {self.kind!r}")
        if not (self.lambda0 > 0 and math.isfinite(self.lambda0)):
            raise UserInputError(f"bandwidth: lambda0 must be positive, got {self.lambda0}")
        if self.lambda_end is None:
            self.lambda_end = {"constant": self.lambda0, "linear": 0.0, "geometric": self.lambda0 / 100}[self.kind]
        if self.lambda_end < 0 or (self.kind == "geometric" and not self.lambda_end > 0):
            raise UserInputError(f"lambda_end: must be {'positive' if self.kind == 'geometric' else 'non-negative'}"
                             f" for a {self.kind} schedule, got {self.lambda_end}")
        if self.lambda_end > self.lambda0:
            raise UserInputError(f"lambda_end: the bandwidth must decrease (lambda_end {self.lambda_end} > "
                             f"lambda0 {self.lambda0})")
        if not self.lambda_min >= 0:
            raise UserInputError(f"lambda_min: must be non-negative, got {self.lambda_min}")
        if self.lambda0 < self.lambda_min:
            raise UserInputError(f"bandwidth: lambda_0 = {self.lambda0:g} is already below lambda_min = "
                                 f"{self.lambda_min:g}: the run would stop before its first step; raise the "
                                 f"bandwidth or lower lambda_min")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "BandwidthSchedule":
        """The schedule MSD builds from its estimator options (bandwidth, bandwidth_schedule, lambda_end,
        lambda_min; the rest ignored): lets a pipeline check them before any model loads."""
        names = {"bandwidth": "lambda0", "bandwidth_schedule": "kind", "lambda_end": "lambda_end",
                 "lambda_min": "lambda_min"}
        return cls(**{field: options[opt] for opt, field in names.items() if opt in options})

    def __call__(self, progress: float) -> float:
        p = min(max(float(progress), 0.0), 1.0)
        if self.kind == "constant":
            return self.lambda0
        if self.kind == "linear":
            return self.lambda0 + (self.lambda_end - self.lambda0) * p
        return self.lambda0 * (self.lambda_end / self.lambda0) ** p

    def finished(self, progress: float) -> bool:
        lam = self(progress)
        return lam <= 0 or lam < self.lambda_min
