"""Toy samplers with the exact denoisers: PSR statistics, DDIM inversion round trip, DDIM/EDM on the tree.

Statistical tolerances are stated per test; seeds are fixed, so a pass is reproducible, and each tolerance
is several standard errors wide yet far tighter than a factor-2 or sign error would produce.
"""
import math

import pytest
import torch

from msdfast.denoisers.gmm import GMM, GMMDenoiser
from msdfast.samplers.ddim import ddim_invert, ddim_sample
from msdfast.samplers.edm import edm_sample, edm_sigmas
from msdfast.samplers.guidance import Guidance
from msdfast.schedule import toy_schedule
from msdfast.toy.datasets import TREE_CLASS_IDS, tree_gmm
from msdfast.toy.metrics import gmm_nll, precision_recall
from msdfast.toy.models import tree_denoiser

V = 0.04  # per-axis variance of the test Gaussians (std 0.2)


def _gaussian(m=(0.3, -0.2)) -> GMMDenoiser:
    return GMMDenoiser(GMM(torch.ones(1), torch.tensor([m], dtype=torch.float64), V * torch.eye(2)[None]))


def _mixture() -> GMMDenoiser:
    """Two well separated isotropic modes (std 0.1, 12 std apart), weights 0.3 / 0.7."""
    return GMMDenoiser(GMM(torch.tensor([0.3, 0.7]), torch.tensor([[-0.6, 0.0], [0.6, 0.0]]),
                           0.01 * torch.eye(2).repeat(2, 1, 1)))


@pytest.mark.parametrize("k", [2.0, 0.5])
def test_psr_scales_gaussian_variance_by_1_over_k_ddim(k):
    """PSR (thesis eq. 1.6) with s = the mode std is exact for an isotropic Gaussian: variance V / k.

    DDIM's own discretisation shrinks the variance (here 0.0372 vs 0.04 at 100 steps), identically for
    every k when the same noise is used, so the test compares var(k) / var(k = 1) with 1 / k: n = 20000,
    the ratio's sampling error is < 1% (shared noise); tolerance 4%. Means must not move (tol 0.01).
    """
    den, n = _gaussian(), 20_000
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = ddim_sample(Guidance(den), z, 100)
    xk = ddim_sample(Guidance(den, psr_k=k, psr_s=math.sqrt(V)), z, 100)
    ratio = xk.var(0) / x1.var(0)
    assert torch.allclose(ratio, torch.full((2,), 1 / k, dtype=torch.float64), rtol=0.04), ratio
    assert torch.allclose(xk.mean(0), torch.tensor([0.3, -0.2], dtype=torch.float64), atol=0.01)
    assert den.stats.nfe == 200 * n


@pytest.mark.parametrize("k", [1.0, 2.0, 0.5])
def test_psr_gaussian_variance_edm_heun(k):
    """EDM Heun (32 steps, s in [0.002, 5]) integrates accurately: var = V / k within 4% (n = 20000: the
    sampling error of a variance is sqrt(2 / n) = 1%), started from N(m, 25 I) ~ data noised to s = 5."""
    den, n = _gaussian(), 20_000
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5 + \
        torch.tensor([0.3, -0.2], dtype=torch.float64)
    out = edm_sample(Guidance(den, psr_k=k, psr_s=math.sqrt(V)), x, 32)
    assert torch.allclose(out.var(0), torch.full((2,), V / k, dtype=torch.float64), rtol=0.04), out.var(0)
    assert den.stats.nfe == (2 * 32 - 1) * n


@pytest.mark.parametrize("k", [2.0, 0.5])
def test_psr_mixture_keeps_weights_scales_modes(k):
    """Well separated isotropic mixture (EDM Heun, 32 steps, n = 10000, one shared noise for all k):
    PSR keeps the weights -- the share of x < 0 equals the k = 1 run's within 0.01 and 0.3 within 0.025
    (binomial std 0.0046) -- and scales each mode's variance by 1 / k: ratio to the k = 1 run within 7%
    (each mode's variance has a 2.5-3.6% sampling error) and absolute V_mode / k within 12%."""
    den, n = _mixture(), 10_000
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 5
    x1 = edm_sample(Guidance(den), z, 32)
    xk = edm_sample(Guidance(den, psr_k=k, psr_s=0.1), z, 32)
    left1, leftk = x1[:, 0] < 0, xk[:, 0] < 0
    assert abs(float(leftk.double().mean()) - 0.3) < 0.025
    assert abs(float(leftk.double().mean()) - float(left1.double().mean())) < 0.01
    for side1, sidek in ((left1, leftk), (~left1, ~leftk)):
        ratio = xk[sidek].var(0) / x1[side1].var(0)
        assert torch.allclose(ratio, torch.full((2,), 1 / k, dtype=torch.float64), rtol=0.07), ratio
        assert torch.allclose(xk[sidek].var(0), torch.full((2,), 0.01 / k, dtype=torch.float64), rtol=0.12)


def test_ddim_inversion_round_trip_exact_denoiser():
    """Invert clean points to t = 500 (s = 0.4) and sample back on the same grid with the exact mixture
    denoiser: DDIM inversion is first order, so the error halves with twice the steps (measured medians
    0.0050 / 0.0025 / 0.0013 at 50 / 100 / 200 steps; max 0.03 at 100)."""
    den = _mixture()
    x0 = den.gmms[0].sample(256, torch.Generator().manual_seed(3))
    g = Guidance(den)
    errs = {}
    for steps in (50, 100):
        zt = ddim_invert(g, x0, steps, 500)
        assert (zt - x0).norm(dim=1).median() > 0.1     # really moved: alpha_500 = 0.93, s = 0.4
        errs[steps] = (ddim_sample(g, zt, steps, t_start=500) - x0).norm(dim=1)
    assert errs[100].median() < 0.005 and errs[100].max() < 0.06, errs[100].max()
    assert errs[100].median() < 0.65 * errs[50].median()


def test_ddim_class_a_ideal_denoiser_quality():
    """DDIM, 32 steps, class A, exact denoiser (MSD paper table 1 DDIM row: NLL -1.85, P 0.97, R 0.93).
    Measured (n = 1000): NLL -1.30 vs true samples' -1.36, precision 0.97, recall 0.97."""
    A, den, n = tree_gmm("A"), tree_denoiser(), 1000
    gen = torch.Generator().manual_seed(5)
    real = A.sample(4000, gen)
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x = ddim_sample(Guidance(den, cond=torch.tensor([TREE_CLASS_IDS["A"]])), z, 32)
    p, r = precision_recall(real, x)
    nll, nll_true = gmm_nll(x, A), gmm_nll(real, A)
    assert p >= 0.9 and r >= 0.85, (p, r)
    assert abs(nll - nll_true) <= 0.3, (nll, nll_true)
    assert den.stats.nfe == 32 * n


def test_cfg_on_tree_is_one_batched_call_and_sharpens():
    """CFG A vs A+B (w = 4): one call of 2B per step; with exact scores guidance extrapolates away from the
    A+B density, pushing samples outwards along class A's direction (measured mean x + y: 0.73 -> 1.52)."""
    A, den, n = tree_gmm("A"), tree_denoiser(), 400
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    cond, uncond = torch.tensor([0]), torch.tensor([2])
    plain = ddim_sample(Guidance(den, cond=cond), z, 16)
    den.stats.reset()
    guided = ddim_sample(Guidance(den, cond=cond, uncond=uncond, scale=4.0), z, 16)
    assert den.stats.nfe == 2 * 16 * n and len(den.stats.calls) == 16
    assert float(guided.sum(1).mean()) > float(plain.sum(1).mean()) + 0.4
    assert bool((A.log_prob(guided) > tree_gmm("B").log_prob(guided)).all())
    # scale 1 is the pure conditional prediction.
    same = ddim_sample(Guidance(den, cond=cond, uncond=uncond, scale=1.0), z, 16)
    assert torch.allclose(same, plain)


def test_guidance_denoise_ve_matches_eps_form():
    """Guidance.denoise_ve (EDM form) and Guidance.eps (VP form) are one mechanism: at s = s_t,
    eps_bar(z, t) == (x - D_bar(x; s_t)) / s_t with z = alpha_t x, for CFG + PSR, autoguidance, interval."""
    den = tree_denoiser()
    sch = toy_schedule()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 0.6
    guide = GMMDenoiser(tree_gmm("AB"))
    cases = [Guidance(den, cond=torch.tensor([0]), uncond=torch.tensor([2]), scale=3.0, psr_k=1.5, psr_s=0.5),
             Guidance(den, cond=torch.tensor([0]), guide=guide, scale=2.0, psr_k=0.8),
             Guidance(den, cond=torch.tensor([0]), uncond=torch.tensor([2]), scale=3.0, interval=(100, 500))]
    for g in cases:
        for t in (50, 300, 700):
            a, s = float(sch.alpha(t, dtype=torch.float64)), float(sch.ve_sigma(t, dtype=torch.float64))
            a32, s32 = float(sch.alpha(t)), float(sch.ve_sigma(t))  # what the eps path reads
            eps = g.eps(a32 * x, t)
            d = g.denoise_ve(x, s32)
            assert torch.allclose(eps, (x - d) / s32, atol=2e-4 * max(1.0, float(eps.abs().max()))), (t, g)
    # The interval switches guidance off outside (t = 700 > 500): equal to the conditional denoiser.
    s = float(sch.ve_sigma(700))
    assert torch.allclose(cases[2].denoise_ve(x, s), den.denoise_ve(x, s, torch.zeros(32, dtype=torch.long)))


def test_edm_grid_and_heun_on_tree():
    s = edm_sigmas()
    assert s.shape == (33,) and float(s[0]) == pytest.approx(5.0) and float(s[31]) == pytest.approx(0.002)
    assert float(s[32]) == 0.0 and bool((s[1:] < s[:-1]).all())
    with pytest.raises(ValueError, match="sigma_min"):
        edm_sigmas(8, 5.0, 1.0)
    A, den, n = tree_gmm("A"), tree_denoiser(), 500
    gen = torch.Generator().manual_seed(8)
    x = A.sample(n, gen, s=5.0)                  # the public sampler starts from data noised to s_max = 5
    out = edm_sample(Guidance(den, cond=torch.tensor([0])), x, 32)
    p, r = precision_recall(A.sample(4000, gen), out)
    assert p >= 0.9 and r >= 0.85, (p, r)
    euler = edm_sample(Guidance(den, cond=torch.tensor([0])), x, 8, heun=False, trajectory=True)
    assert len(euler) == 9 and torch.equal(euler[0], x)


def test_ve_levels_straddling_the_interval_are_guided_per_sample():
    """The EDM form judges the interval per sample at the nearest timestep of each level s: a batch across the
    edge equals its samples denoised one by one."""
    den, sch = tree_denoiser(), toy_schedule()
    g = Guidance(den, cond=torch.tensor([0]), uncond=torch.tensor([2]), scale=2.5, interval=(100, 600))
    t = torch.tensor([50, 300, 800])
    s = sch.ve_sigma(t, dtype=torch.float64)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.5
    assert g.predict(x, s, ve=True).w.tolist() == [1.0, 2.5, 1.0]
    d = g.denoise_ve(x, s)
    for i in range(3):
        torch.testing.assert_close(d[i:i + 1], g.denoise_ve(x[i:i + 1], float(s[i])))
