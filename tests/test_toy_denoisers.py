"""Toy denoisers: exact GMM (VE and VP/eps forms, class-conditional) and the empirical ideal denoiser (eq. 16)."""
import pytest
import torch

from msdfast.denoisers.empirical import EmpiricalDenoiser
from msdfast.denoisers.gmm import GMM, GMMDenoiser
from msdfast.schedule import toy_schedule
from msdfast.toy.datasets import load_dataset, tree_gmm
from msdfast.toy.models import tree_denoiser


def test_gmm_denoiser_is_tweedie():
    g = tree_gmm("A")
    den = GMMDenoiser(g)
    x = g.sample(200, torch.Generator().manual_seed(0), s=0.1)
    for s in (0.002, 0.1, 3.0):
        d = den.denoise_ve(x, s)
        assert torch.allclose(d, x + s * s * g.score(x, s), rtol=0, atol=1e-12)
    assert den.stats.nfe == 600


def test_gmm_denoiser_eps_form_matches_ve_form():
    den = tree_denoiser()
    sch = toy_schedule()
    gen = torch.Generator().manual_seed(1)
    x0 = tree_gmm("A").sample(64, gen)
    t = torch.randint(0, 1000, (64,), generator=gen)
    a, sig = sch.alpha(t, dtype=torch.float64), sch.sigma(t, dtype=torch.float64)
    eps = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    z = a[:, None] * x0 + sig[:, None] * eps
    cond = torch.zeros(64, dtype=torch.long)
    eps_hat = den.eps(z, t, cond)
    # The base class reads float32 schedule lookups (device tables): use the same rounded coefficients.
    a32, s32 = sch.alpha(t).double(), sch.ve_sigma(t).double()
    x = z / a32[:, None]
    expected = (x - den.denoise_ve(x, s32, cond)) / s32[:, None]
    assert torch.allclose(eps_hat, expected, atol=1e-8)
    # The denoiser is exact: its eps has the right conditional mean, so it beats the trivial predictor z.
    assert (eps_hat - eps).square().mean() < 0.5 * eps.square().mean()


def test_tree_denoiser_classes_and_cfg_pair():
    den = tree_denoiser()
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    s = torch.full((10,), 0.3, dtype=torch.float64)
    ids = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    d = den.denoise_ve(x, s, ids)
    for c, name in enumerate(("A", "B", "AB")):
        m = ids == c
        assert torch.allclose(d[m], GMMDenoiser(tree_gmm(name)).denoise_ve(x[m], s[m]), atol=1e-12)
    den.stats.reset()
    dc, du = den.denoise_ve_pair(x, s, torch.zeros(10, dtype=torch.long), torch.full((10,), 2))
    assert den.stats.nfe == 20 and len(den.stats.calls) == 1          # ONE batched call for the CFG pair
    assert not torch.allclose(dc, du)
    with pytest.raises(ValueError, match="cond"):
        den.denoise_ve(x, s, None)
    with pytest.raises(ValueError, match="cond"):
        den.denoise_ve(x, s, torch.full((10,), 3))


def test_gmm_denoiser_finite_far_off_tree_at_tiny_noise():
    den = GMMDenoiser(tree_gmm("A"))
    x = torch.tensor([[5.0, -5.0], [-1.5, 1.5], [30.0, 0.0]])
    for dtype in (torch.float32, torch.float64):
        d = den.denoise_ve(x.to(dtype), 0.002)
        assert d.dtype == dtype and torch.isfinite(d).all()
    # At tiny noise D is (close to) the input: the score is large but s^2 score stays O(distance * s^2 / var).
    t0 = torch.zeros(3, dtype=torch.long)
    assert torch.isfinite(den.eps(x, t0)).all()


def _naive_empirical(x: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Eq. 16 literally: sum_i u_i N(x; u_i, s^2 I) / sum_i N(x; u_i, s^2 I) with explicit Gaussian densities."""
    d2 = ((x[:, None, :] - u[None]) ** 2).sum(-1)
    n = torch.exp(-d2 / (2 * s[:, None] ** 2)) / (2 * torch.pi * s[:, None] ** 2)
    return (n[..., None] * u[None]).sum(1) / n.sum(1, keepdim=True)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_empirical_denoiser_equals_naive_formula(dtype, atol):
    u = load_dataset("spiral", n_train=3000, n_heldout=1).train
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(257, 2, generator=gen, dtype=torch.float64) * 3 - 1.5
    s = torch.exp(torch.rand(257, generator=gen, dtype=torch.float64) * 3 - 3)   # 0.05 .. 1: no underflow
    den = EmpiricalDenoiser(u)
    d = den.denoise_ve(x.to(dtype), s.to(dtype))
    assert d.dtype == dtype
    assert torch.allclose(d.double(), _naive_empirical(x, u, s), atol=atol)


def test_empirical_denoiser_limits():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    den = EmpiricalDenoiser(u)
    x = torch.tensor([[0.9, 0.1], [10.0, 10.0]], dtype=torch.float64)
    d = den.denoise_ve(x, 1e-3)                      # tiny noise: the nearest data point, even far away
    assert torch.allclose(d, torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
    d = den.denoise_ve(x, 1e4)                       # huge noise: the data mean
    assert torch.allclose(d, u.mean(0).expand(2, 2), atol=1e-6)
    with pytest.raises(ValueError, match="points"):
        EmpiricalDenoiser(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="s"):
        den.denoise_ve(x, 0.0)


def test_empirical_denoiser_converges_to_gmm_denoiser():
    """With many data points at moderate noise the empirical ideal denoiser approaches the population one."""
    g = GMM(torch.tensor([0.3, 0.7]), torch.tensor([[-0.5, 0.0], [0.5, 0.2]]), 0.01 * torch.eye(2).repeat(2, 1, 1))
    u = g.sample(20_000, torch.Generator().manual_seed(4))
    x = torch.tensor([[0.0, 0.0], [0.4, 0.4], [-0.6, -0.1]], dtype=torch.float64)
    d_emp = EmpiricalDenoiser(u).denoise_ve(x, 0.3)
    d_gmm = GMMDenoiser(g).denoise_ve(x, 0.3)
    assert torch.allclose(d_emp, d_gmm, atol=0.01)


def test_toy_world_helpers():
    from msdfast.toy.models import ideal_denoiser
    tree = ideal_denoiser("tree")
    assert isinstance(tree, GMMDenoiser) and len(tree.gmms) == 3
    spiral = ideal_denoiser("spiral")
    assert isinstance(spiral, EmpiricalDenoiser) and spiral.points.shape == (10_000, 2)
    assert torch.equal(spiral.points, load_dataset("spiral", seed=0).train)
