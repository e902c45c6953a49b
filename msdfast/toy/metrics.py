"""Metrics of the 2D toy study (MSD paper sec. 4.2, tables 1-3; docs/math.md sec. 3).

* NLL under the true density, two definitions (both reported, labelled): `nll` = mean_i(-log p(x_i)) and
  `nll_of_mean` = -log(mean_i p(x_i)) (the MSD paper's DDIM -1.85 matches the latter: true samples of tree
  class A give about -1.33 / -1.85). The tree's density is its exact GMM (log-sum-exp in float64); spiral / pinwheel have no
  closed form, so their "true density" is a Gaussian KDE over held-out points,
      p(x) = (1/N) sum_i N(x; u_i, h^2 I),   h = KDE_BANDWIDTH = 0.05 (in the [-1.5, 1.5]^2 units),
  about a quarter of the arms' cross-section std (0.1 * 1.5/4 * 2 ~ 0.04-0.08), so the KDE keeps the
  arms thin without resolving individual held-out points (N = 1e4).
* Precision / recall (Kynkaanniemi et al. 2019): each set's k-NN radius (k = 3, squared Euclidean
  distances, self excluded); precision = share of generated points inside some real point's radius,
  recall = share of real points inside some generated point's radius.
* MMD^2 with an RBF kernel averaged over bandwidths MMD_BANDWIDTHS = (0.02, 0.05, 0.1, 0.2, 0.5):
  k(a, b) = mean_h exp(-|a - b|^2 / (2 h^2)); biased V-statistic mean Kxx + mean Kyy - 2 mean Kxy >= 0.
* Estimator efficiency (MSD paper eq. 17) lives in msdfast.toy.efficiency.
Everything streams over query chunks (memory chunk x N), in float64.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..denoisers.gmm import GMM

__all__ = ["nll", "nll_of_mean", "log_prob", "gmm_nll", "kde_log_prob", "precision_recall", "knn_radii", "mmd",
           "KDE_BANDWIDTH", "MMD_BANDWIDTHS", "PR_K"]

KDE_BANDWIDTH = 0.05
MMD_BANDWIDTHS = (0.02, 0.05, 0.1, 0.2, 0.5)
PR_K = 3
_CHUNK = 1024


def _points(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty [N, d] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    return x.detach().to(torch.float64)


def _d2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b).square()


def kde_log_prob(x: torch.Tensor, points: torch.Tensor, bandwidth: float = KDE_BANDWIDTH) -> torch.Tensor:
    """log (1/N) sum_i N(x; u_i, h^2 I) [M] by log-sum-exp, streamed over query chunks."""
    x, u = _points("x", x), _points("points", points)
    if not bandwidth > 0:
        raise ValueError(f"bandwidth: must be positive, got {bandwidth}")
    d = x.shape[1]
    const = -math.log(u.shape[0]) - 0.5 * d * math.log(2 * math.pi * bandwidth ** 2)
    out = [torch.logsumexp(-_d2(x[i:i + _CHUNK], u) / (2 * bandwidth ** 2), dim=1) + const
           for i in range(0, x.shape[0], _CHUNK)]
    return torch.cat(out)


def gmm_nll(x: torch.Tensor, gmm: GMM) -> float:
    """Mean negative log-likelihood of x under a GMM (exact, float64 log-sum-exp)."""
    return float(-gmm.log_prob(_points("x", x)).mean())


def log_prob(x: torch.Tensor, truth: GMM | torch.Tensor, bandwidth: float = KDE_BANDWIDTH) -> torch.Tensor:
    """log p(x) [M] under the true density: a GMM (exact) or the KDE over held-out points (a tensor)."""
    if isinstance(truth, GMM):
        return truth.log_prob(_points("x", x))
    return kde_log_prob(x, truth, bandwidth)


def nll(x: torch.Tensor, truth: GMM | torch.Tensor, bandwidth: float = KDE_BANDWIDTH) -> float:
    """mean_i(-log p(x_i)) under the true density: a GMM (exact) or the KDE over held-out points (a tensor)."""
    return float(-log_prob(x, truth, bandwidth).mean())


def nll_of_mean(x: torch.Tensor, truth: GMM | torch.Tensor, bandwidth: float = KDE_BANDWIDTH) -> float:
    """-log(mean_i p(x_i)) = -(logsumexp_i log p(x_i) - log M): the definition the MSD paper's values match."""
    lp = log_prob(x, truth, bandwidth)
    return float(-(torch.logsumexp(lp, 0) - math.log(lp.shape[0])))


def knn_radii(x: torch.Tensor, k: int = PR_K) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour in the same set, itself excluded."""
    x = _points("x", x)
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k: must be in [1, {x.shape[0] - 1}] for {x.shape[0]} points, got {k}")
    out = []
    for i in range(0, x.shape[0], _CHUNK):
        d = _d2(x[i:i + _CHUNK], x)
        idx = torch.arange(i, min(i + _CHUNK, x.shape[0]))
        d[idx - i, idx] = float("inf")  # exclude self
        out.append(d.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(out)


def _coverage(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of query points inside at least one ball (ref_j, radii_j) (squared distances)."""
    hits = [(_d2(query[i:i + _CHUNK], ref) <= radii[None]).any(dim=1) for i in range(0, query.shape[0], _CHUNK)]
    return float(torch.cat(hits).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, k-NN manifolds, k = 3)."""
    real, fake = _points("real", real), _points("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"fake: dimension {fake.shape[1]} does not match real's {real.shape[1]}")
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return precision, recall


def _kmean(a: torch.Tensor, b: torch.Tensor, bandwidths: Sequence[float]) -> float:
    total = 0.0
    for i in range(0, a.shape[0], _CHUNK):
        d2 = _d2(a[i:i + _CHUNK], b)
        total += float(sum(torch.exp(-d2 / (2 * h * h)).sum() for h in bandwidths)) / len(bandwidths)
    return total / (a.shape[0] * b.shape[0])


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS) -> float:
    """Biased MMD^2 between two point sets with a multi-bandwidth RBF kernel (bandwidths documented above)."""
    x, y = _points("x", x), _points("y", y)
    if not bandwidths or any(not h > 0 for h in bandwidths):
        raise ValueError("bandwidths: expected positive kernel bandwidths")
    return max(_kmean(x, x, bandwidths) + _kmean(y, y, bandwidths) - 2 * _kmean(x, y, bandwidths), 0.0)


