"""Reconstructed loss landscape of a gradient estimator (MSD paper sec. 4.2, figures 1 and 3).

The paper evaluates each method's gradient over the domain and "numerically integrates them to
reconstruct the loss functions they represent". An estimator's mean descent gradient g(x) is in
general not a true gradient field (SDS, VSD and SDI are not gradients of any function), so msdfast
integrates it in the least-squares sense (Poisson integration): find L on a regular grid minimising

    sum_edges ( (L_j - L_i) / h - 0.5 (g_i + g_j) . e_ij )^2 ,

i.e. the finite-difference gradient of L matches the trapezoid average of g along every grid edge.
For a true gradient field of a quadratic this is exact (the trapezoid rule integrates linear g
exactly), which is the test. L is defined up to a constant: msdfast pins its mean to zero.
The figure shows the OBJECTIVE F = -L (x <- x - lr g ascends F): its peaks are where points go.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import lsqr

GradField = Callable[[torch.Tensor], torch.Tensor]


def make_grid(n: int, lo: float = -1.5, hi: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """A regular n x n grid over [lo, hi]^2: (xs [n], points [n*n, 2]) with x varying fastest."""
    if n < 2:
        raise ValueError("n: the landscape grid needs at least 2 points per axis")
    if not hi > lo:
        raise ValueError("hi: must be greater than lo")
    xs = np.linspace(lo, hi, n)
    gx, gy = np.meshgrid(xs, xs, indexing="xy")  # gx[i, j] = xs[j], gy[i, j] = xs[i]
    return xs, np.stack([gx.ravel(), gy.ravel()], axis=1)


def integrate_gradient(grad: np.ndarray, h: float) -> np.ndarray:
    """Least-squares (Poisson) integration of a gradient field sampled on an n x n grid.

    grad: [n, n, 2] with grad[i, j] = g at (x = xs[j], y = xs[i]); h: grid spacing.
    Returns L [n, n] with the same layout, mean zero, such that grad L ~= grad (see module doc).
    """
    grad = np.asarray(grad, dtype=np.float64)
    if grad.ndim != 3 or grad.shape[0] != grad.shape[1] or grad.shape[2] != 2:
        raise ValueError(f"grad: expected shape [n, n, 2], got {grad.shape}")
    if not np.isfinite(grad).all():
        raise ValueError("grad: contains NaN or inf")
    if not h > 0:
        raise ValueError("h: grid spacing must be positive")
    n = grad.shape[0]
    idx = np.arange(n * n).reshape(n, n)
    rows, cols, vals, rhs = [], [], [], []
    r = 0
    # x-edges (j -> j+1) carry the x component, y-edges (i -> i+1) the y component.
    for (a, b, comp) in ((idx[:, :-1], idx[:, 1:], 0), (idx[:-1, :], idx[1:, :], 1)):
        a, b = a.ravel(), b.ravel()
        gi = grad.reshape(-1, 2)[a, comp]
        gj = grad.reshape(-1, 2)[b, comp]
        m = a.size
        er = np.arange(r, r + m)
        rows += [er, er]
        cols += [b, a]
        vals += [np.full(m, 1.0 / h), np.full(m, -1.0 / h)]
        rhs.append(0.5 * (gi + gj))
        r += m
    # One extra row pins the mean (the null space is the constant).
    rows.append(np.full(n * n, r))
    cols.append(idx.ravel())
    vals.append(np.full(n * n, 1.0 / (n * n)))
    rhs.append(np.zeros(1))
    A = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(r + 1, n * n)).tocsr()
    sol = lsqr(A, np.concatenate(rhs), atol=1e-12, btol=1e-12, iter_lim=20 * n * n)[0]
    L = sol.reshape(n, n)
    return L - L.mean()


def mean_gradient_field(grad_fn: GradField, points: torch.Tensor, repeats: int = 1,
                        batch: int = 4096) -> np.ndarray:
    """Mean of `repeats` independent estimates of g at `points` [P, 2] -> [P, 2] (float64 numpy)."""
    if repeats < 1:
        raise ValueError("repeats: must be >= 1")
    acc = torch.zeros(points.shape, dtype=torch.float64)
    for _ in range(repeats):
        for s in range(0, points.shape[0], batch):
            acc[s:s + batch] += grad_fn(points[s:s + batch]).detach().double().cpu()
    return (acc / repeats).numpy()


def reconstruct_landscape(grad_fn: GradField, n: int = 48, repeats: int = 4, lo: float = -1.5,
                          hi: float = 1.5, dtype: torch.dtype = torch.float32) -> dict[str, np.ndarray]:
    """Evaluate the mean gradient field on an n x n grid and integrate it (module doc).

    Returns {"xs": [n], "grad": [n, n, 2], "loss": L [n, n], "objective": -L [n, n]}.
    """
    xs, pts = make_grid(n, lo, hi)
    g = mean_gradient_field(grad_fn, torch.as_tensor(pts, dtype=dtype), repeats)
    g = np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0).reshape(n, n, 2)
    L = integrate_gradient(g, float(xs[1] - xs[0]))
    return {"xs": xs, "grad": g, "loss": L, "objective": -L}
