"""The toy data sets: the tree's published construction (MATH.md sec. 3), GMM densities/scores, FFJORD sets."""
import math

import pytest
import torch

from msdfast.denoisers.gmm import GMM
from msdfast.schedule import TOY_S_MAX, TOY_S_MIN, toy_schedule
from msdfast.toy.datasets import load_dataset, pinwheel_points, spiral_points, tree_gmm


def _moments(g: GMM) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of a mixture."""
    mean = (g.weights[:, None] * g.means).sum(0)
    second = (g.weights[:, None, None] * (g.covs + g.means[:, :, None] * g.means[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def _naive_logp(x: torch.Tensor, g: GMM, s: float) -> torch.Tensor:
    """Independent log-density: torch.distributions, float64, log-sum-exp over components."""
    mvn = torch.distributions.MultivariateNormal(g.means, covariance_matrix=g.covs + s * s * torch.eye(2,
                                                 dtype=torch.float64))
    return torch.logsumexp(mvn.log_prob(x[:, None, :]) + g.weights.log()[None], dim=1)


def test_tree_statistics():
    a, b, ab = tree_gmm("A"), tree_gmm("B"), tree_gmm("AB")
    assert a.num_components == 1016 and b.num_components == 1016 and ab.num_components == 2032
    _, cov = _moments(ab)
    assert torch.allclose(cov.diagonal().sqrt(), torch.full((2,), 0.5, dtype=torch.float64), atol=2e-3)
    # A's and B's components are exactly AB's (same random stream), weights renormalised per class.
    assert torch.equal(torch.cat([a.means, b.means]), ab.means)
    stds = a.covs.diagonal(dim1=1, dim2=2).sqrt()
    assert 0.003 < float(stds.min()) < 0.005 and 0.015 < float(stds.max()) < 0.025
    # Class A grows towards +x+y from the origin, B towards -x-y.
    assert (_moments(a)[0] > 0.1).all() and (_moments(b)[0] < -0.1).all()
    with pytest.raises(ValueError, match="classes"):
        tree_gmm("C")


def test_tree_matches_published_oracle():
    """MATH.md sec. 2 oracle: lambda^2 grad log p_lambda(x) for class A at x = (0.5, 0.2), lambda = 0.1."""
    x = torch.tensor([[0.5, 0.2]], dtype=torch.float64)
    ms = 0.01 * tree_gmm("A").score(x, 0.1)
    assert torch.allclose(ms, torch.tensor([[-0.011183, 0.013226]], dtype=torch.float64), atol=2e-6)


def test_gmm_sample_moments():
    g = tree_gmm("AB")
    x = g.sample(100_000, torch.Generator().manual_seed(0))
    mean, cov = _moments(g)
    assert x.dtype == torch.float64 and x.shape == (100_000, 2)
    assert torch.allclose(x.mean(0), mean, atol=6e-3)           # 4 sigma of the sample mean (std 0.5 / 316)
    assert torch.allclose(torch.cov(x.T), cov, atol=8e-3)
    again = g.sample(10, torch.Generator().manual_seed(0))
    assert torch.equal(again, g.sample(10, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("s", [0.0, 0.003, 0.05, 0.5])
def test_gmm_score_is_autograd_of_log_density(s):
    g = tree_gmm("A")
    gen = torch.Generator().manual_seed(1)
    x = torch.cat([g.sample(64, gen, s=s), torch.rand(16, 2, generator=gen, dtype=torch.float64) * 3 - 1.5])
    xr = x.clone().requires_grad_(True)
    logp = _naive_logp(xr, g, s)
    (grad,) = torch.autograd.grad(logp.sum(), xr)
    assert torch.allclose(g.log_prob(x, s), logp.detach(), rtol=1e-7, atol=1e-8)
    ok = torch.isfinite(grad).all(dim=1)  # the naive float64 form itself may under/overflow far away
    assert ok.sum() >= 64
    assert torch.allclose(g.score(x, s)[ok], grad[ok], rtol=1e-6, atol=1e-6 * grad[ok].abs().max().item())


def test_gmm_score_finite_far_off_tree_tiny_noise():
    g = tree_gmm("A")
    x = torch.tensor([[5.0, -5.0], [-1.5, 1.5], [0.0, -1.4], [40.0, 40.0]], dtype=torch.float64)
    for s in (0.0, 1e-3, 0.002):
        score, logp = g.score(x, s), g.log_prob(x, s)
        assert torch.isfinite(score).all() and torch.isfinite(logp).all()
        assert (logp < -100).all()  # far away: tiny but representable in log space
        # The score points back towards the tree.
        assert (score[0, 0] < 0) and (score[0, 1] > 0)
    assert torch.isfinite(g.score(x.float(), 1e-3)).all()  # float32 inputs are evaluated in float64 inside


def test_gmm_validates_arguments():
    with pytest.raises(ValueError, match="means"):
        GMM(torch.ones(2), torch.zeros(3, 2), torch.eye(2).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="weights"):
        GMM(torch.tensor([1.0, -1.0]), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="x"):
        tree_gmm("A").score(torch.zeros(3, 3))


@pytest.mark.parametrize("fn", [spiral_points, pinwheel_points])
def test_ffjord_sets(fn):
    x = fn(10_000, torch.Generator().manual_seed(0))
    assert x.shape == (10_000, 2) and x.dtype == torch.float64
    assert torch.equal(x, fn(10_000, torch.Generator().manual_seed(0)))
    inside = ((x.abs() <= 1.5).all(dim=1)).double().mean()
    assert inside > 0.995                                   # "about [-1.5, 1.5]^2"
    assert ((x.std(0) > 0.45) & (x.std(0) < 0.7)).all()
    assert x.mean(0).abs().max() < 0.05                     # both sets are symmetric about the origin
    assert fn(7, torch.Generator().manual_seed(0)).shape == (7, 2)


def test_spiral_and_pinwheel_shapes():
    sp = spiral_points(20_000, torch.Generator().manual_seed(1)) / (1.5 / 4)   # back to FFJORD units
    r = sp.norm(dim=1)
    assert 2.9 < float(r.quantile(0.99)) < 3.6             # 540 degrees of arm: radius up to 3 pi / 3 + noise
    pw = pinwheel_points(20_000, torch.Generator().manual_seed(1)) / (1.5 / 4) / 2
    # Radial coordinate of a pinwheel point is |features| with features[0] ~ 1 + 0.3 N(0, 1).
    assert abs(float(pw.norm(dim=1).median()) - 1.0) < 0.05


def test_load_dataset():
    d = load_dataset("tree", n_train=1000, n_heldout=500, seed=3)
    assert d.train.shape == (1000, 2) and d.heldout.shape == (500, 2) and d.gmm is not None
    assert not torch.equal(d.train[:500], d.heldout)
    assert torch.equal(load_dataset("tree", n_train=1000, n_heldout=500, seed=3).train, d.train)
    s = load_dataset("spiral", n_train=100, n_heldout=100)
    assert s.gmm is None and s.train.shape == (100, 2)
    assert load_dataset("tree_AB", n_train=10, n_heldout=10).gmm.num_components == 2032
    with pytest.raises(ValueError, match="name"):
        load_dataset("moons")


def test_toy_schedule_is_log_uniform_in_s():
    sch = toy_schedule()
    s = sch.ve_sigma(torch.arange(1000), dtype=torch.float64)
    assert math.isclose(float(s[0]), TOY_S_MIN, rel_tol=1e-6) and math.isclose(float(s[-1]), TOY_S_MAX, rel_tol=1e-6)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-9)
    assert float(sch.alpha_bar(-1)) == 1.0
