"""The 2D toy data sets of the MSD paper (sec. 4.2): the fractal tree GMM, spiral and pinwheel.

Conventions and constants: docs/math.md sec. 3.

* `tree_gmm(classes)` -- the two-class fractal Gaussian mixture of Karras et al. 2024 ("Guiding a
  diffusion model with a bad version of itself", public toy code): 127 branches x 8 thin Gaussians
  = 1016 components per class, A+B has std 0.5 per axis. Densities and scores are evaluated with
  log-sum-exp in float64 (component stds go down to 0.003: float32 densities underflow off the tree).
* `spiral_points` / `pinwheel_points` -- the FFJORD generators (Grathwohl et al. 2019, public code),
  scaled by 1.5/4 so FFJORD's [-4, 4]^2 plotting box maps onto the paper's [-1.5, 1.5]^2 grid.
* `load_dataset(name)` -- seeded training (1e4 points) and held-out sets, plus the GMM for the tree.
The mixture itself (`GMM`) lives with its exact denoiser in msdfast.denoisers.gmm; the toy VP schedule
(`toy_schedule`) in msdfast.schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..denoisers.gmm import GMM

__all__ = ["tree_gmm", "spiral_points", "pinwheel_points", "load_dataset", "ToyDataset",
           "TREE_CLASSES", "TREE_CLASS_IDS", "DATASETS", "FFJORD_SCALE"]

# Class ids used as conditions by the tree denoisers: A, B, and A+B (the "unconditional" class for CFG).
TREE_CLASSES = ("A", "B", "AB")
TREE_CLASS_IDS = {name: i for i, name in enumerate(TREE_CLASSES)}
DATASETS = ("tree", "tree_A", "tree_B", "tree_AB", "spiral", "pinwheel")
# FFJORD draws on [-4, 4]^2; the MSD paper's grid is [-1.5, 1.5]^2.
FFJORD_SCALE = 1.5 / 4.0


@lru_cache(maxsize=None)
def _tree_components(seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(class index, weight, mean, cov) of every component of both tree classes.

    Karras et al. 2024 public toy code (constants in docs/math.md sec. 3): one RandomState(seed) stream, class A
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
    """The fractal tree mixture for classes "A", "B" or "AB" (Karras et al. 2024; docs/math.md sec. 3).

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
