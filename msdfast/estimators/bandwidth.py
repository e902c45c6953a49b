"""Bandwidth schedules for mean-shift distillation (MSD paper sec. 3-4, Algorithm 2; MATH.md sec. 2).

MSD anneals the kernel bandwidth lambda monotonically down over the optimisation run and terminates when
lambda < lambda_min (the paper's convergence criterion). Progress p in [0, 1] is the estimator's
`update_step` fraction (step / (total_steps - 1)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

BANDWIDTH_KINDS = ("constant", "linear", "geometric")


@dataclass
class BandwidthSchedule:
    """lambda(p) for progress p in [0, 1].

    kind "constant": lambda0 throughout.
    kind "linear":   lambda0 + (lambda_end - lambda0) p, lambda_end default 0 (the MSD toy protocol:
                     lambda0 = sqrt(0.1) decayed linearly).
    kind "geometric": lambda0 (lambda_end / lambda0)^p, lambda_end default lambda0 / 100 (must be > 0).
    `finished(p)` is True once lambda(p) < lambda_min (or lambda(p) <= 0): MSD then returns g = 0, NFE 0.
    """

    lambda0: float = math.sqrt(0.1)
    kind: str = "constant"
    lambda_end: float | None = None
    lambda_min: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in BANDWIDTH_KINDS:
            raise ValueError(f"bandwidth_schedule: expected one of {BANDWIDTH_KINDS}, got {self.kind!r}")
        if not self.lambda0 > 0:
            raise ValueError(f"bandwidth: lambda0 must be positive, got {self.lambda0}")
        if self.lambda_end is None:
            self.lambda_end = {"constant": self.lambda0, "linear": 0.0, "geometric": self.lambda0 / 100}[self.kind]
        if self.lambda_end < 0 or (self.kind == "geometric" and not self.lambda_end > 0):
            raise ValueError(f"lambda_end: must be {'positive' if self.kind == 'geometric' else 'non-negative'}"
                             f" for a {self.kind} schedule, got {self.lambda_end}")
        if self.lambda_end > self.lambda0:
            raise ValueError(f"lambda_end: the bandwidth must decrease (lambda_end {self.lambda_end} > "
                             f"lambda0 {self.lambda0})")
        if self.lambda_min < 0:
            raise ValueError(f"lambda_min: must be non-negative, got {self.lambda_min}")

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
