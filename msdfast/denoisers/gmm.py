"""Exact denoiser of a Gaussian mixture at any noise level (the tree toy's ideal denoiser, docs/math.md sec. 3).

VE form (Karras et al. 2022, eq. 3 / Tweedie): D(x; s) = x + s^2 grad_x log p_s(x) with
p_s = sum_k phi_k N(mu_k, S_k + s^2 I), evaluated by `msdfast.ops.gmm_score` in float64 (the tree's
components are so thin that float32 densities underflow off the tree) and cast back to x's dtype.
VP/eps form comes from the base class: z = alpha_t x, eps = (x - D(x; s_t)) / s_t.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .. import ops
from ..schedule import VPSchedule, toy_schedule
from .base import Cond, Denoiser

__all__ = ["GMM", "GMMDenoiser"]

_CHUNK = 2048  # queries per gmm_score call: [chunk, K] float64 temporaries stay ~20 MB for K = 1016


@dataclass
class GMM:
    """A 2D Gaussian mixture: weights [K] (normalised), means [K, 2], covs [K, 2, 2], all float64 on the CPU."""

    weights: torch.Tensor
    means: torch.Tensor
    covs: torch.Tensor

    def __post_init__(self) -> None:
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.covs = torch.as_tensor(self.covs, dtype=torch.float64)
        K = self.weights.shape[0] if self.weights.ndim == 1 else 0
        if K == 0 or torch.any(~(self.weights > 0)):
            raise ValueError("weights: expected a non-empty [K] tensor of positive values")
        if self.means.shape != (K, 2):
            raise ValueError(f"means: expected shape [{K}, 2], got {tuple(self.means.shape)}")
        if self.covs.shape != (K, 2, 2):
            raise ValueError(f"covs: expected shape [{K}, 2, 2], got {tuple(self.covs.shape)}")
        self.weights = self.weights / self.weights.sum()
        self._chol = torch.linalg.cholesky(self.covs)  # raises if a covariance is not positive definite
        self._device_copies: dict[str, tuple[torch.Tensor, ...]] = {}

    def _params_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, means, covs) on device, copied once per device (no per-call host->device transfer)."""
        key = str(device)
        if key not in self._device_copies:
            self._device_copies[key] = tuple(t.to(device) for t in (self.weights, self.means, self.covs))
        return self._device_copies[key]

    @property
    def num_components(self) -> int:
        return int(self.weights.shape[0])

    def to_device(self, device: torch.device | str) -> "GMM":
        return GMM(self.weights.to(device), self.means.to(device), self.covs.to(device))

    def sample(self, n: int, generator: torch.Generator | None = None, s: float = 0.0) -> torch.Tensor:
        """n float64 samples of p_s = sum_k phi_k N(mu_k, S_k + s^2 I) (s = 0: the data itself)."""
        if n < 0:
            raise ValueError(f"n: must be non-negative, got {n}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, dtype=torch.float64, generator=generator, device=self.weights.device)
        x = self.means[k] + torch.einsum("nij,nj->ni", self._chol[k], eps)
        if s:
            x = x + s * torch.randn(n, 2, dtype=torch.float64, generator=generator, device=self.weights.device)
        return x

    def _eval(self, x: torch.Tensor, s: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x: expected [M, 2] points, got {getattr(x, 'shape', type(x).__name__)}")
        dt, dev = x.dtype, x.device
        x64 = x.to(torch.float64)
        sv = torch.as_tensor(s, dtype=torch.float64, device=dev)
        sv = sv.expand(x.shape[0]) if sv.ndim == 0 else sv.reshape(-1)
        if sv.shape[0] != x.shape[0]:
            raise ValueError(f"s: expected a scalar or [{x.shape[0]}] noise levels, got {tuple(sv.shape)}")
        w, m, c = self._params_on(dev)
        scores, logps = [], []
        for i in range(0, x.shape[0], _CHUNK):
            sc, lp = ops.gmm_score(x64[i:i + _CHUNK], w, m, c, sv[i:i + _CHUNK])
            scores.append(sc)
            logps.append(lp)
        score = torch.cat(scores) if scores else x64.new_zeros(0, 2)
        logp = torch.cat(logps) if logps else x64.new_zeros(0)
        return score.to(dt), logp.to(dt)

    def log_prob(self, x: torch.Tensor, s: torch.Tensor | float = 0.0) -> torch.Tensor:
        """log p_s(x) [M] by log-sum-exp in float64 (cast back to x's dtype)."""
        return self._eval(x, s)[1]

    def score(self, x: torch.Tensor, s: torch.Tensor | float = 0.0) -> torch.Tensor:
        """grad_x log p_s(x) [M, 2] with covariances S_k + s^2 I (float64 inside)."""
        return self._eval(x, s)[0]

    def product_sample(self, x: torch.Tensor, lam: float, n: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples per point of q(y | x) ~ p(y) N(x; y, lam^2 I), chain-major [n*B, 2] (docs/math.md sec. 2.6).

        r_k ~ phi_k N(x; mu_k, S_k + lam^2 I); y | k ~ N(m_k, C_k), C_k = (S_k^-1 + lam^-2 I)^-1,
        m_k = C_k (S_k^-1 mu_k + lam^-2 x). Computed in float64 on x's device, returned in x's dtype.
        """
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x: expected [B, 2] points, got {getattr(x, 'shape', type(x).__name__)}")
        if not (isinstance(lam, (int, float)) and lam > 0 and math.isfinite(lam)):
            raise ValueError(f"lam: the bandwidth must be a positive finite number, got {lam!r}")
        if int(n) < 1:
            raise ValueError(f"n: must be >= 1, got {n}")
        dev, dt = x.device, torch.float64
        x64 = x.to(dt)
        w, mu, S = self.weights.to(dev, dt), self.means.to(dev, dt), self.covs.to(dev, dt)
        eye = torch.eye(2, dtype=dt, device=dev)
        C = S + lam * lam * eye                                                       # [K, 2, 2]
        diff = x64[:, None, :] - mu[None]                                             # [B, K, 2]
        maha = torch.einsum("bki,kij,bkj->bk", diff, torch.linalg.inv(C), diff)
        logits = w.log()[None] - 0.5 * maha - 0.5 * torch.logdet(C)[None]             # log r_k + const
        # [B, n] component draws, then chain-major [n*B]
        k = torch.multinomial(torch.softmax(logits, 1), n, replacement=True, generator=generator).t().reshape(-1)
        Sinv = torch.linalg.inv(S)
        Ck = torch.linalg.inv(Sinv + eye / lam**2)                                    # [K, 2, 2]
        xr = x64.repeat(n, 1)
        mk = torch.einsum("nij,nj->ni", Ck[k], torch.einsum("nij,nj->ni", Sinv[k], mu[k]) + xr / lam**2)
        e = torch.randn(xr.shape, dtype=dt, device=dev, generator=generator)
        return (mk + torch.einsum("nij,nj->ni", torch.linalg.cholesky(Ck)[k], e)).to(x.dtype)


class GMMDenoiser(Denoiser):
    """Ideal denoiser of one GMM, or of several selected per sample by an integer class condition.

    gmm: a `GMM` (the condition is ignored) or a sequence of GMMs; then cond must be a [B] integer
    tensor of indices into it (e.g. the tree's A = 0, B = 1, A+B = 2, so CFG with uncond = 2 is ONE
    batched call). schedule: the VP schedule of the eps form (default: the toy schedule).
    """

    def __init__(self, gmm: GMM | Sequence[GMM], schedule: VPSchedule | None = None) -> None:
        super().__init__(schedule or toy_schedule())
        gmms = [gmm] if isinstance(gmm, GMM) else list(gmm)
        if not gmms or not all(isinstance(g, GMM) for g in gmms):
            raise TypeError("gmm: expected a GMM or a non-empty sequence of GMMs")
        self.gmms = gmms
        self.conditional = not isinstance(gmm, GMM)

    def class_groups(self, cond: Cond, batch: int, device: torch.device) -> list[tuple[GMM, torch.Tensor | None]]:
        """(mixture, boolean [B] mask of the samples it serves) per class present in cond, by ascending class id;
        one (mixture, None) entry when the denoiser holds a single mixture (cond ignored)."""
        if not self.conditional:
            return [(self.gmms[0], None)]
        if cond is None:
            raise ValueError("cond: this GMMDenoiser holds several mixtures; give [B] integer class ids")
        ids = torch.as_tensor(cond, device=device).reshape(-1)
        if ids.dtype.is_floating_point or ids.shape[0] != batch:
            raise ValueError(f"cond: expected [{batch}] integer class ids, got {tuple(ids.shape)} {ids.dtype}")
        if torch.any((ids < 0) | (ids >= len(self.gmms))):
            raise ValueError(f"cond: class ids must lie in [0, {len(self.gmms) - 1}]")
        return [(self.gmms[c], ids == c) for c in ids.unique().tolist()]

    def score(self, x: torch.Tensor, s: torch.Tensor | float, cond: Cond = None) -> torch.Tensor:
        """grad log p_s(x) (uncounted; in x's dtype)."""
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"x: expected [B, 2] points, got {tuple(x.shape)}")
        s64 = torch.as_tensor(s, dtype=torch.float64, device=x.device)
        s64 = s64.expand(x.shape[0]) if s64.ndim == 0 else s64.reshape(-1)
        groups = self.class_groups(cond, x.shape[0], x.device)
        if groups[0][1] is None:
            return groups[0][0].score(x.to(torch.float64), s64).to(x.dtype)
        out = torch.empty(x.shape, dtype=torch.float64, device=x.device)
        for gmm, m in groups:
            out[m] = gmm.score(x[m].to(torch.float64), s64[m])
        return out.to(x.dtype)

    def product_sample(self, x: torch.Tensor, lam: float, cond: Cond = None, n: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples per point of q(y | x) ~ p(y | cond) N(x; y, lam^2 I) (`GMM.product_sample` of each
        sample's class), chain-major [n*B, 2]: the MSD product sampler's oracle, 0 NFE."""
        groups = self.class_groups(cond, x.shape[0], x.device)
        if groups[0][1] is None:
            return groups[0][0].product_sample(x, lam, n, generator)
        y = torch.empty((n,) + tuple(x.shape), dtype=x.dtype, device=x.device)
        for gmm, m in groups:
            y[:, m] = gmm.product_sample(x[m], lam, n, generator).reshape(n, -1, 2)
        return y.reshape(-1, 2)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        s64 = s.to(torch.float64).reshape(-1)
        d = x.to(torch.float64) + s64[:, None] ** 2 * self.score(x.to(torch.float64), s64, cond).to(torch.float64)
        return d.to(x.dtype)

