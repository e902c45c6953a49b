"""Exact toy denoisers and closed forms for the estimator oracle tests (MATH.md sec. 2).

* `GaussianDenoiser`: data N(mu + offsets[cond], v I) in any shape ([B, 2] points or [B, C, H, W] latents);
  its ideal denoiser is linear, so SDS's expectation has a closed form (`sds_expected`).
* `small_gmm()`: a 3-component anisotropic 2D mixture (fast, for solver-convergence tests); the tree GMM and
  its ideal denoiser come from msdfast.denoisers.gmm / msdfast.toy.datasets.
* `gmm_mean_shift`: the oracle E_q[y] - x = lambda^2 grad log p_lambda(x).
"""
from __future__ import annotations

import torch

from msdfast.denoisers.base import Cond, Denoiser
from msdfast.schedule import VPSchedule
from msdfast.denoisers.gmm import GMM


class GaussianDenoiser(Denoiser):
    """Ideal denoiser of N(mu + offsets[cond], v I); cond is a long tensor [B] of class ids (None -> class 0)."""

    def __init__(self, schedule: VPSchedule, mu: float = 0.3, v: float = 0.25,
                 offsets: tuple[float, ...] = (0.0, 1.0)) -> None:
        super().__init__(schedule)
        self.mu, self.v = float(mu), float(v)
        self.offsets = torch.tensor(offsets, dtype=torch.float64)

    def mean(self, cond: Cond, like: torch.Tensor) -> torch.Tensor:
        off = torch.zeros(like.shape[0], dtype=torch.float64) if cond is None else self.offsets[cond.long().cpu()]
        return (self.mu + off.reshape(-1, *([1] * (like.ndim - 1)))).to(like.dtype)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        s2 = s.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return (self.v * x + s2 * self.mean(cond, x)) / (self.v + s2)


def sds_expected(den: GaussianDenoiser, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
                 mean: torch.Tensor | float) -> torch.Tensor:
    """E_eps[g] at fixed t = w(t) alpha sigma (x - m) / (alpha^2 v + sigma^2), m the (guided) mean.

    eps_hat(z) = sigma (z - alpha m) / (alpha^2 v + sigma^2) for N(m, v I) data, z = alpha x + sigma eps;
    CFG is linear in the means, so the guided mean is m_u + w (m_c - m_u).
    """
    sch = den.schedule
    shape = (-1,) + (1,) * (x.ndim - 1)
    a = sch.alpha(t, dtype=torch.float64).reshape(shape)
    s = sch.sigma(t, dtype=torch.float64).reshape(shape)
    return w.to(torch.float64).reshape(shape) * a * s * (x.double() - mean) / (a * a * den.v + s * s)


def small_gmm() -> GMM:
    """Three anisotropic components (stds 0.04..0.14): cheap, yet multi-modal at bandwidths 0.1..0.2."""
    return GMM(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([[0.3, 0.1], [-0.2, 0.4], [0.6, 0.5]]),
               torch.tensor([[[0.01, 0.004], [0.004, 0.003]], [[0.002, 0.0], [0.0, 0.02]],
                             [[0.005, 0.0], [0.0, 0.005]]]))


def gmm_mean_shift(gmm: GMM, x: torch.Tensor, lam: float) -> torch.Tensor:
    """Oracle mean shift E_q[y] - x = lambda^2 grad log p_lambda(x) (MATH.md sec. 2), float64."""
    return lam * lam * gmm.score(x.double(), lam)


class IsoMixtureDenoiser(Denoiser):
    """Ideal denoiser of sum_k phi_k N(mu_k, v_k I) in any dimension (cheap: plain tensor ops, 2-3 components).

    D(x; s) = sum_k r_k(x) (v_k x + s^2 mu_k) / (v_k + s^2), r_k ~ phi_k N(x; mu_k, (v_k + s^2) I).
    """

    def __init__(self, schedule: VPSchedule, weights: list[float], means: list[list[float]],
                 variances: list[float]) -> None:
        super().__init__(schedule)
        self.w = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.mu = torch.tensor(means, dtype=torch.float64)
        self.v = torch.tensor(variances, dtype=torch.float64)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        x64 = x.double().flatten(1)
        d = x64.shape[1]
        s2 = s.double().reshape(-1, 1) ** 2                                     # [B, 1]
        var = self.v[None] + s2                                                 # [B, K]
        d2 = torch.cdist(x64, self.mu.expand(-1, d) if self.mu.shape[1] == 1 else self.mu) ** 2
        logits = self.w.log()[None] - 0.5 * d2 / var - 0.5 * d * var.log()
        r = torch.softmax(logits, dim=1)                                        # [B, K]
        dk = (self.v[None, :, None] * x64[:, None] + s2[:, :, None] * self.mu[None]) / var[:, :, None]
        return (r[:, :, None] * dk).sum(1).reshape(x.shape).to(x.dtype)

    def mean_shift(self, x: torch.Tensor, lam: float) -> torch.Tensor:
        """Oracle E_q[y] - x = lam^2 grad log p_lam(x) = D(x; lam) - x (uncounted)."""
        return self._denoise_ve(x.double(), torch.full((x.shape[0],), lam, dtype=torch.float64), None) - x.double()
