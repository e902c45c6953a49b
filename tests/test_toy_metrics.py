"""Toy metrics against naive formulas and hand-computed cases; the plot writes a PNG."""
import math

import pytest
import torch

from msdfast.toy.datasets import load_dataset, tree_gmm
from msdfast.toy.efficiency import efficiency_from_samples
from msdfast.toy.metrics import (KDE_BANDWIDTH, gmm_nll, kde_log_prob, knn_radii, mmd, nll, nll_of_mean,
                                 precision_recall)
from msdfast.toy.plots import density_grid, plot_panels, plot_samples


def test_knn_radii_exclude_self():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    assert torch.equal(knn_radii(x, 1), torch.tensor([1.0, 1.0, 4.0, 16.0], dtype=torch.float64))
    assert torch.equal(knn_radii(x, 3), torch.tensor([49.0, 36.0, 16.0, 49.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="k"):
        knn_radii(x, 4)


def test_precision_recall_hand_case():
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])     # k = 1 radii: 1 each (squared)
    fake = torch.tensor([[0.5, 0.0], [10.0, 0.0], [11.0, 0.0], [12.0, 0.0]])  # radii 9.25^2, 1, 1, 1
    p, r = precision_recall(real, fake, k=1)
    assert p == 0.25                       # only (0.5, 0) lies in a real ball
    assert r == 1.0                        # the fake point at 0.5 has radius 9.5^2 and covers every real point


def test_precision_recall_distributions():
    a = tree_gmm("A")
    g = torch.Generator().manual_seed(0)
    real, same = a.sample(2000, g), a.sample(2000, g)
    p, r = precision_recall(real, same)
    assert p > 0.93 and r > 0.93
    p, r = precision_recall(real, tree_gmm("B").sample(2000, g))
    assert p < 0.05 and r < 0.05
    # Mode collapse onto one branch: precision stays high, recall drops.
    collapsed = real[real[:, 1] > 0.8]
    p, r = precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.5


def test_kde_matches_naive_and_nll():
    pts = load_dataset("spiral", n_train=10, n_heldout=3000, seed=1).heldout
    x = torch.rand(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3 - 1.5
    h = KDE_BANDWIDTH
    d2 = ((x[:, None] - pts[None]) ** 2).sum(-1)
    naive = torch.log(torch.exp(-d2 / (2 * h * h)).mean(1) / (2 * math.pi * h * h))
    got = kde_log_prob(x, pts)
    ok = torch.isfinite(naive)
    assert ok.sum() > 10 and torch.allclose(got[ok], naive[ok], rtol=1e-10)
    assert torch.isfinite(got).all()      # log-sum-exp: finite where the naive form underflows
    assert nll(x, pts) == pytest.approx(float(-got.mean()))


def test_gmm_nll_of_true_samples():
    a = tree_gmm("A")
    x = a.sample(5000, torch.Generator().manual_seed(3))
    v = gmm_nll(x, a)
    assert -1.45 < v < -1.25              # MATH.md: true class-A samples have NLL about -1.33
    assert nll(x, a) == v
    # the paper's definition -log(mean p): its DDIM (and true samples) give about -1.85 (MATH.md sec. 3)
    assert -1.92 < nll_of_mean(x, a) < -1.78
    p = a.log_prob(x[:7]).exp()
    assert nll_of_mean(x[:7], a) == pytest.approx(float(-p.mean().log()), rel=1e-12)
    assert nll_of_mean(x[:7], a) <= nll(x[:7], a)   # Jensen


def test_mmd_naive_and_properties():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(300, 2, generator=g, dtype=torch.float64), torch.randn(200, 2, generator=g, dtype=torch.float64)
    hs = (0.1, 0.5)
    k = lambda a, b: sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h)) for h in hs) / len(hs)  # noqa: E731
    naive = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert mmd(x, y, hs) == pytest.approx(float(naive), rel=1e-9)
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-12)
    assert mmd(x, y + 1.0) > 3 * mmd(x, y)   # (the biased V-statistic is ~1/n > 0 for equal laws)
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, y, (0.0,))


def test_efficiency_eq17_against_a_true_gradient():
    """Estimates g + sd * n at cost c, measured against the true g: eff = mean|g|^2 / (d sd^2 c), d = 2;
    a bias enters the MSE."""
    g = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    n = torch.randn(20_000, 2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    est = g[None] + 0.5 * n
    out = efficiency_from_samples(est, cost=4, reference=g)
    assert out.log_eff == pytest.approx(math.log(13.0 / (2 * 0.25 * 4)), abs=0.03)
    biased = efficiency_from_samples(est + 1.0, cost=4, reference=g)
    assert biased.log_eff < out.log_eff - 0.5
    with pytest.raises(ValueError, match="reference"):
        efficiency_from_samples(est, cost=4, reference=g[:1])


def test_plots_write_png(tmp_path):
    a = tree_gmm("A")
    x = a.sample(500, torch.Generator().manual_seed(6))
    X, Y, lp = density_grid(a.log_prob, resolution=40)
    assert lp.shape == (40, 40) and X.shape == (40, 40)
    p = plot_samples(tmp_path / "a.png", x, a.log_prob, title="class A", resolution=40)
    q = plot_panels(tmp_path / "sub" / "b.png", [{"samples": x, "title": "one"}, {"samples": x[:10]}],
                    lambda z: kde_log_prob(z, x), resolution=30)
    for f in (p, q):
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 2000
