"""The 2D toy data sets of the MSD paper (sec. 4.2): the fractal tree GMM, spiral and pinwheel.

Conventions and constants: ../../shared/MATH.md section 3.

* `tree_gmm(classes)` -- the two-class fractal Gaussian mixture of Karras et al. 2024 ("Guiding a
  diffusion model with a bad version of itself", public toy code): 127 branches x 8 thin Gaussians
  = 1016 components per class, A+B has std 0.5 per axis. Densities and scores are evaluated with
  log-sum-exp in float64 (component stds go down to 0.003: float32 densities underflow off the tree).
* `spiral_points` / `pinwheel_points` -- the FFJORD generators (Grathwohl et al. 2019, public code),
  scaled by 1.5/4 so FFJORD's [-4, 4]^2 plotting box maps onto the paper's [-1.5, 1.5]^2 grid.
* `load_dataset(name)` -- seeded training (1e4 points) and held-out sets, plus the GMM for the tree.
* `toy_schedule()` -- the VP schedule every toy denoiser and sampler uses (see its docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .. import ops
from ..schedule import VPSchedule

__all__ = ["GMM", "tree_gmm", "spiral_points", "pinwheel_points", "load_dataset", "ToyDataset",
           "toy_schedule", "TOY_SCHEDULE", "TOY_S_MIN", "TOY_S_MAX",
           "TREE_CLASSES", "TREE_CLASS_IDS", "DATASETS", "FFJORD_SCALE"]

# Class ids used as conditions by the tree denoisers: A, B, and A+B (the "unconditional" class for CFG).
TREE_CLASSES = ("A", "B", "AB")
TREE_CLASS_IDS = {name: i for i, name in enumerate(TREE_CLASSES)}
DATASETS = ("tree", "tree_A", "tree_B", "tree_AB", "spiral", "pinwheel")
# FFJORD draws on [-4, 4]^2; the MSD paper's grid is [-1.5, 1.5]^2.
FFJORD_SCALE = 1.5 / 4.0
TOY_S_MIN, TOY_S_MAX = 0.002, 80.0
_CHUNK = 2048  # queries per gmm_score call: [chunk, K] float64 temporaries stay ~20 MB for K = 1016


def toy_schedule(num_train_timesteps: int = 1000, s_min: float = TOY_S_MIN, s_max: float = TOY_S_MAX) -> VPSchedule:
    """The VP schedule of all toy denoisers: VE noise levels log-uniform in [s_min, s_max] = [0.002, 80].

    s_t = exp(log s_min + t / (T - 1) (log s_max - log s_min)), abar_t = 1 / (1 + s_t^2), T = 1000, and
    t = -1 is clean data (set_alpha_to_one). The range is EDM's (Karras et al. 2022: sigma in [0.002, 80]):
    s_0 = 0.002 lies below the tree's thinnest component std (0.004) and s_999 = 80 >> the data std 0.5.
    Why not DDPM's linear betas (1e-4 .. 0.02, s from 0.01 to 157): their grid is coarse exactly where the
    thin tree needs steps (s = 0.01 -> 0.11 within 31 steps), and 32-step DDIM of class A with the exact
    denoiser then lands off the branches (NLL +0.42 vs true -1.36 with "leading" spacing, +8.3 "trailing");
    on this log-uniform grid every DDIM step shrinks s by the same factor (1.39 at 32 steps) and 32-step
    DDIM gives NLL -1.30, precision 0.97, recall 0.97 (tests/test_toy_samplers.py). SDS-style t ~ U[...]
    draws are then log-uniform in s, as EDM's training distribution roughly is.
    """
    if num_train_timesteps < 2 or not 0 < s_min < s_max:
        raise ValueError("num_train_timesteps / s_min / s_max: expected T >= 2 and 0 < s_min < s_max")
    s = torch.exp(torch.linspace(math.log(s_min), math.log(s_max), num_train_timesteps, dtype=torch.float64))
    return VPSchedule(1.0 / (1.0 + s * s), final_alpha_cumprod=1.0)


TOY_SCHEDULE = toy_schedule()


# ----------------------------------------------------------------------------------------- GMM
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


@lru_cache(maxsize=None)
def _tree_components(seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(class index, weight, mean, cov) of every component of both tree classes.

    Karras et al. 2024 public toy code (constants in MATH.md sec. 3): one RandomState(seed) stream, class A
    generated first then class B, each branch recursing depth first into its '+' child before its '-' child.
    """
    rnd = np.random.RandomState(seed)
    origin = np.array([0.0030, 0.0325])
    scale = np.array([1.3136, 1.3844])
    cls_, phi, mu, cov = [], [], [], []

    def branch(c: int, depth: int, pos: np.ndarray, angle: float) -> None:
        if depth >= 7:
            return
        direction = np.array([np.cos(angle), np.sin(angle)])
        dist = 0.292 * (0.8 ** depth) * (rnd.randn() * 0.2 + 1)
        thick = 0.2 * (0.8 ** depth) / dist
        size = scale * dist * 0.06
        along = np.outer(direction, direction)
        sigma = (along + (np.eye(2) - along) * thick ** 2) * np.outer(size, size)
        for t in np.linspace(0.07, 0.93, num=8):
            cls_.append(c)
            phi.append(dist * 0.5 ** depth)
            mu.append((pos + direction * dist * t) * scale)
            cov.append(sigma)
        for sign in (1, -1):  # '+' child first; the random draws happen in this order
            branch(c, depth + 1, pos + direction * dist, angle + sign * (0.7 ** depth) * (rnd.randn() * 0.2 + 1))

    branch(0, 0, origin, np.pi * 0.25)   # class A
    branch(1, 0, origin, np.pi * 1.25)   # class B
    return np.array(cls_), np.array(phi), np.array(mu), np.array(cov)


def tree_gmm(classes: str = "A") -> GMM:
    """The fractal tree mixture for classes "A", "B" or "AB" (Karras et al. 2024; MATH.md sec. 3).

    Both classes are always generated from the same random stream; the selected components' weights are
    renormalised. 1016 components per class; A+B has std 0.5 per axis. The result is cached (one object
    per class set): treat its tensors as read-only.
    """
    if classes not in TREE_CLASSES:
        raise ValueError(f"classes: expected one of {TREE_CLASSES}, got {classes!r}")
    return _tree_gmm(classes)


@lru_cache(maxsize=None)
def _tree_gmm(classes: str) -> GMM:
    cls_, phi, mu, cov = _tree_components()
    sel = np.isin(cls_, [i for i, name in enumerate("AB") if name in classes])
    return GMM(torch.from_numpy(phi[sel]), torch.from_numpy(mu[sel]), torch.from_numpy(cov[sel]))


# ----------------------------------------------------------------------------------------- FFJORD sets
def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")


def spiral_points(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """FFJORD's "2spirals": r = sqrt(U) 540 deg, points (-cos r r + U/2, sin r r + U/2) and their negation,
    / 3, + N(0, 0.1^2); then scaled by 1.5/4 into about [-1.5, 1.5]^2. float64 [n, 2]."""
    _check_n(n)
    h = (n + 1) // 2
    r = torch.rand(h, 1, generator=generator, dtype=torch.float64).sqrt() * 540 * (2 * math.pi) / 360
    dx = -torch.cos(r) * r + torch.rand(h, 1, generator=generator, dtype=torch.float64) * 0.5
    dy = torch.sin(r) * r + torch.rand(h, 1, generator=generator, dtype=torch.float64) * 0.5
    arm = torch.cat([dx, dy], dim=1)
    x = torch.cat([arm, -arm])[:n] / 3
    x = x + torch.randn(x.shape, generator=generator, dtype=torch.float64) * 0.1
    return (x * FFJORD_SCALE)[torch.randperm(n, generator=generator)]


def pinwheel_points(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """FFJORD's "pinwheel": 5 arms, radial std 0.3, tangential std 0.1, rate 0.25, times 2; then scaled by
    1.5/4 into about [-1.5, 1.5]^2. float64 [n, 2]."""
    _check_n(n)
    num_classes, rate = 5, 0.25
    feats = torch.randn(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([0.3, 0.1],
                                                                                        dtype=torch.float64)
    feats[:, 0] += 1.0
    labels = torch.arange(n) % num_classes
    angles = labels.to(torch.float64) * (2 * math.pi / num_classes) + rate * feats[:, 0].exp()
    c, s = torch.cos(angles), torch.sin(angles)
    # FFJORD: x_j = sum_i f_i R_ij with R = [[cos, -sin], [sin, cos]].
    x = torch.stack([feats[:, 0] * c + feats[:, 1] * s, -feats[:, 0] * s + feats[:, 1] * c], dim=1)
    return (2 * x * FFJORD_SCALE)[torch.randperm(n, generator=generator)]


# ----------------------------------------------------------------------------------------- loading
@dataclass
class ToyDataset:
    """Seeded training and held-out points of one toy data set (float64), and its GMM when known."""

    name: str
    train: torch.Tensor
    heldout: torch.Tensor
    gmm: GMM | None = None


def load_dataset(name: str, n_train: int = 10_000, n_heldout: int = 10_000, seed: int = 0) -> ToyDataset:
    """Training and held-out points of a toy set: "tree" (= "tree_A"), "tree_B", "tree_AB", "spiral", "pinwheel".

    The training set (paper: 1e4 points, the empirical ideal denoiser's data) and the held-out set are
    independent draws from one torch.Generator seeded with `seed`.
    """
    if name not in DATASETS:
        raise ValueError(f"name: expected one of {DATASETS}, got {name!r}")
    _check_n(n_train)
    _check_n(n_heldout)
    g = torch.Generator().manual_seed(int(seed))
    if name.startswith("tree"):
        gmm = tree_gmm(name[5:] or "A")
        return ToyDataset(name, gmm.sample(n_train, g), gmm.sample(n_heldout, g), gmm)
    fn = spiral_points if name == "spiral" else pinwheel_points
    return ToyDataset(name, fn(n_train, g), fn(n_heldout, g))
