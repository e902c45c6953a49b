"""Exact toy denoisers and closed forms for the estimator oracle tests (MATH.md sec. 2).

* `GaussianDenoiser`: data N(mu + offset[cond], v I) in any shape ([B, 2] points or [B, C, H, W] latents);
  its ideal denoiser is linear, so SDS's expectation has a closed form (`sds_expected`).
* `GMMDenoiser`: the ideal denoiser of a 2D Gaussian mixture (msdfast.toy.datasets.GMM) in VE form,
  D(x; s) = x + s^2 grad log p_s(x); used when msdfast.denoisers.gmm is not available.
* `gmm_mean_shift`: the oracle E_q[y] - x = lambda^2 grad log p_lambda(x).
"""
from __future__ import annotations

import torch

from msdfast.denoisers.base import Cond, Denoiser
from msdfast.schedule import VPSchedule
from msdfast.toy.datasets import GMM, toy_schedule


class GaussianDenoiser(Denoiser):
    """Ideal denoiser of N(mu + offsets[cond], v I); cond is a long tensor [B] of class ids (None -> class 0)."""

    def __init__(self, schedule: VPSchedule, mu: float | torch.Tensor = 0.3, v: float = 0.25,
                 offsets: tuple[float, ...] = (0.0, 1.0)) -> None:
        super().__init__(schedule)
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.v = float(v)
        self.offsets = torch.tensor(offsets, dtype=torch.float64)

    def mean(self, cond: Cond, like: torch.Tensor) -> torch.Tensor:
        off = torch.zeros(like.shape[0], dtype=torch.float64) if cond is None else self.offsets[cond.long().cpu()]
        return (self.mu + off.reshape(-1, *([1] * (like.ndim - 1)))).to(like.dtype)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        s2 = s.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return (self.v * x + s2 * self.mean(cond, x)) / (self.v + s2)


def sds_expected(den: GaussianDenoiser, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
                 mean: torch.Tensor) -> torch.Tensor:
    """E_eps[g] = w(t) alpha sigma (x - mean) / (alpha^2 v + sigma^2) for a guided mean (linear in the means)."""
    sch = den.schedule
    a = sch.alpha(t, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
    s = sch.sigma(t, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
    w = w.to(torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
    return w * a * s * (x.double() - mean.double()) / (a * a * den.v + s * s)


class GMMDenoiser(Denoiser):
    """Ideal denoiser of a 2D GMM (exact score with covariances S_k + s^2 I, float64 inside)."""

    def __init__(self, gmm: GMM, schedule: VPSchedule | None = None) -> None:
        super().__init__(schedule or toy_schedule())
        self.gmm = gmm

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        x64 = x.double()
        return (x64 + s.double()[:, None] ** 2 * self.gmm.score(x64, s.double())).to(x.dtype)


def gmm_mean_shift(gmm: GMM, x: torch.Tensor, lam: float) -> torch.Tensor:
    """Oracle mean shift E_q[y] - x = lambda^2 grad log p_lambda(x) (MATH.md sec. 2), float64."""
    return lam * lam * gmm.score(x.double(), lam)


def gmm_posterior_sample(gmm: GMM, x: torch.Tensor, lam: float, n: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """n exact samples per point of q(y | x) ~ p(y) N(x; y, lam^2 I) (MATH.md sec. 2), chain-major [n*B, 2].

    r_k ~ phi_k N(x; mu_k, S_k + lam^2 I);  y | k ~ N(m_k, C_k), C_k = (S_k^-1 + lam^-2 I)^-1,
    m_k = C_k (S_k^-1 mu_k + lam^-2 x).
    """
    x64 = x.double()
    B = x64.shape[0]
    K = gmm.num_components
    S = gmm.covs
    C_all = S + lam * lam * torch.eye(2, dtype=torch.float64)
    diff = x64[:, None, :] - gmm.means[None]                                   # [B, K, 2]
    logn = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), C_all).log_prob(diff)
    logits = gmm.weights.log()[None] + logn                                    # [B, K]
    k = torch.multinomial(torch.softmax(logits, 1).repeat(n, 1), 1, generator=generator).squeeze(1)  # [n*B]
    Sinv = torch.linalg.inv(S)
    Ck = torch.linalg.inv(Sinv + torch.eye(2, dtype=torch.float64) / lam**2)   # [K, 2, 2]
    xr = x64.repeat(n, 1)
    mk = torch.einsum("nij,nj->ni", Ck[k], torch.einsum("nij,nj->ni", Sinv[k], gmm.means[k]) + xr / lam**2)
    L = torch.linalg.cholesky(Ck)[k]
    e = torch.randn(n * B, 2, dtype=torch.float64, generator=generator)
    assert K > 0
    return mk + torch.einsum("nij,nj->ni", L, e)
