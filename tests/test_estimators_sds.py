"""SDS, ASD and SDI against closed forms on Gaussian data (MATH.md sec. 2)."""
from __future__ import annotations

import math

import pytest
import torch

from estimator_helpers import GaussianDenoiser, sds_expected
from msdfast.estimators import build
from msdfast.estimators.common import weighting
from msdfast.samplers.ddim import ddim_invert
from msdfast.samplers.guidance import Guidance
from msdfast.schedule import toy_schedule


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def den() -> GaussianDenoiser:
    return GaussianDenoiser(toy_schedule(), mu=0.3, v=0.25, offsets=(0.0, 1.0))


@pytest.mark.parametrize("kind", ["sds", "uniform", "fantasia3d"])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_sds_expectation_closed_form(den: GaussianDenoiser, kind: str, scale: float) -> None:
    """E_eps[g] at fixed t = w(t) alpha sigma (x - m_g) / (alpha^2 v + sigma^2), m_g the CFG mean."""
    n, t0 = 20000, 550
    x = torch.tensor([[0.9, -0.4]], dtype=torch.float64).repeat(n, 1)
    cond, uncond = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    est = build("sds", den, t_range=(t0, t0), guidance_scale=scale, weighting=kind)
    out = est(x, cond, uncond if scale != 1 else None, generator=gen(1))
    assert out.nfe == n * (2 if scale != 1 else 1)
    t = torch.tensor([t0])
    m_g = 1.3 + scale * (0.3 - 1.3)                         # m_u + w (m_c - m_u)
    exp = sds_expected(den, x[:1], t, weighting(kind, den.schedule, t), m_g)[0]
    se = out.grad.double().std(0) / math.sqrt(n)
    assert torch.all((out.grad.double().mean(0) - exp).abs() < 4 * se + 1e-6), (out.grad.mean(0), exp, se)
    assert torch.all(exp.abs() > 20 * se)                 # resolves sign and factor-2 errors


def test_sds_expectation_over_t_range_latents(den: GaussianDenoiser) -> None:
    """Over t ~ U{t_min..t_max}: the average of the per-t closed form, on [B, C, H, W] latents."""
    n = 4000
    x = torch.full((n, 2, 3, 3), 0.7, dtype=torch.float64)
    est = build("sds", den, t_range=(0.02, 0.98))
    out = est(x, generator=gen(2))
    T = den.schedule.num_train_timesteps
    ts = torch.arange(int(0.02 * T), int(0.98 * T) + 1)
    exp = sds_expected(den, torch.full((ts.numel(), 1), 0.7, dtype=torch.float64), ts,
                       weighting("sds", den.schedule, ts), 0.3).mean()
    got = out.grad.double().mean()
    se = out.grad.double().mean((1, 2, 3)).std() / math.sqrt(n)
    assert abs(got - exp) < 4 * se, (got, exp, se)


def test_sds_nan_to_num_and_clip(den: GaussianDenoiser) -> None:
    x = torch.full((64, 2), 50.0)
    out = build("sds", den, clip=0.01, weighting="uniform")(x, generator=gen(3))
    assert out.grad.abs().max() <= 0.01 + 1e-7 and torch.isfinite(out.grad).all()
    with pytest.raises(ValueError, match="x"):
        build("sds", den)(torch.full((2, 2), float("nan")))


def test_asd_one_batch_and_expectation(den: GaussianDenoiser) -> None:
    """ASD: ONE denoiser call of 3B with CFG; E[g] = w(t) (E eps_g(z_t) - E eps_c(z_t+)) (closed form)."""
    n, t0 = 6000, 400
    x = torch.tensor([[0.9, -0.4]], dtype=torch.float64).repeat(n, 1)
    c, u = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    est = build("asd", den, t_range=(t0, t0 + 200), guidance_scale=2.0)
    den.stats.reset()
    out = est(x, c, u, generator=gen(4))
    assert out.nfe == 3 * n and len(den.stats.calls) == 1 and den.stats.calls[0].batch == 3 * n
    t, tp = out.info["t"], out.info["t_plus"]
    assert torch.all(tp >= t) and torch.all(tp <= t + (0.1 * (t - t0)).round().long())
    sch = den.schedule
    # E[eps_hat(z_s) | x] for N(m, v) data and z_s = alpha_s x + sigma_s eps: alpha sigma (x - m) / (alpha^2 v + sigma^2)
    def e_eps(tt: torch.Tensor, m: float) -> torch.Tensor:
        return sds_expected(den, x, tt, torch.ones(n), m)
    exp = (1 - sch.alpha_bar(t, dtype=torch.float64))[:, None] * (e_eps(t, 1.3 + 2.0 * (0.3 - 1.3)) - e_eps(tp, 0.3))
    diff = (out.grad.double() - exp).mean(0)
    se = (out.grad.double() - exp).std(0) / math.sqrt(n)
    assert torch.all(diff.abs() < 4 * se), (diff, se)


def test_sdi_uses_inverted_noise_and_anneals_t(den: GaussianDenoiser) -> None:
    x = torch.randn(3, 2, generator=gen(5), dtype=torch.float64)
    c, u = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    est = build("sdi", den, guidance_scale=3.0)
    assert (est.t_min, est.t_max) == (250, 980)
    est.update_step(0, 11)
    out = est(x, c, u)
    assert int(out.info["t"][0]) == 980 and out.info["inversion_guidance_scale"] == -6.5
    assert out.nfe == 10 * 3 * 2 + 3 * 2
    # the same gradient by hand: invert with w = -6.5, noise = (z - alpha x) / sigma, SDS combination
    z = ddim_invert(Guidance(den, c, u, -6.5), x, 10, 980)
    sch = den.schedule
    a, s = float(sch.alpha(980, dtype=torch.float64)), float(sch.sigma(980, dtype=torch.float64))
    eps = (z - a * x) / s
    ec, eu = den.eps_pair(z, 980, c, u)
    g = (1 - a * a) * (eu + 3.0 * (ec - eu) - eps)
    torch.testing.assert_close(out.grad, g, atol=1e-5, rtol=1e-5)
    est.update_step(10, 11)
    assert int(est(x, c, u).info["t"][0]) == 250
    # without an uncond the inversion is unguided; stochastic eta changes the noise
    assert build("sdi", den)(x).info["inversion_guidance_scale"] == 1.0
    g1 = build("sdi", den, eta=0.3)(x, generator=gen(6)).grad
    assert not torch.allclose(g1, build("sdi", den)(x).grad)
    with pytest.raises(ValueError, match="eta"):
        build("sdi", den, eta=2.0)


def test_guidance_interval_masks_cfg_per_sample(den: GaussianDenoiser) -> None:
    """Samples with t outside the interval get the pure conditional prediction (w = 1)."""
    n = 4
    x = torch.zeros(n, 2, dtype=torch.float64)
    c, u = torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)
    g_in = build("sds", den, t_range=(300, 300), guidance_scale=3.0, guidance_interval=(0, 500))(x, c, u, generator=gen(7))
    g_out = build("sds", den, t_range=(300, 300), guidance_scale=3.0, guidance_interval=(600, 900))(x, c, u, generator=gen(7))
    g_c = build("sds", den, t_range=(300, 300))(x, c, generator=gen(7))
    g_cfg = build("sds", den, t_range=(300, 300), guidance_scale=3.0)(x, c, u, generator=gen(7))
    torch.testing.assert_close(g_out.grad, g_c.grad)
    torch.testing.assert_close(g_in.grad, g_cfg.grad)


def test_psr_rescales_the_guided_eps(den: GaussianDenoiser) -> None:
    from msdfast.schedule import psr_factor
    x = torch.zeros(2, 2, dtype=torch.float64)
    eps_free = build("sds", den, t_range=(100, 100), weighting="uniform")
    g1 = eps_free(x, generator=gen(8)).grad
    g2 = build("sds", den, t_range=(100, 100), weighting="uniform", psr_k=0.95)(x, generator=gen(8)).grad
    g = gen(8)
    torch.randint(100, 101, (2,), generator=g)                         # SDS's draws: t, then eps
    eps = torch.randn(2, 2, generator=g, dtype=torch.float64)
    r = float(psr_factor(den.schedule.snr(100, dtype=torch.float64), 0.95))
    torch.testing.assert_close(g2, r * (g1 + eps) - eps, atol=1e-6, rtol=1e-6)


def test_autoguidance_uses_the_guide_model(den: GaussianDenoiser) -> None:
    """guide=: eps_g = eps_guide + w (eps_c - eps_guide); closed form with the guide's mean; NFE B + B."""
    n, t0 = 20000, 550
    guide = GaussianDenoiser(toy_schedule(), mu=-0.2, v=0.25)
    x = torch.tensor([[0.9, -0.4]], dtype=torch.float64).repeat(n, 1)
    out = build("sds", den, t_range=(t0, t0), guidance_scale=2.5, guide=guide)(x, generator=gen(11))
    assert out.nfe == 2 * n and guide.stats.nfe == n       # main model B + guide B
    t = torch.tensor([t0])
    exp = sds_expected(den, x[:1], t, weighting("sds", den.schedule, t), -0.2 + 2.5 * (0.3 + 0.2))[0]
    se = out.grad.double().std(0) / math.sqrt(n)
    assert torch.all((out.grad.double().mean(0) - exp).abs() < 4 * se), (out.grad.mean(0), exp, se)
