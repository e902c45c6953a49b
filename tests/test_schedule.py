"""msdfast.schedule vs diffusers' schedulers (alphas_cumprod, final alpha, time grids, v-prediction) and the
PSR factor's limits (thesis ch. 1, eq. 1.6)."""
from __future__ import annotations

import pytest
import torch

from msdfast.schedule import VPSchedule, eps_from_v, eps_from_x0, psr_factor, v_from_eps, x0_from_eps

diffusers = pytest.importorskip("diffusers")

CONFIGS = {
    "sd": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "linear": dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02),
    "cosine": dict(beta_schedule="squaredcos_cap_v2"),
}


def _ddim(cfg: dict, **kw):
    return diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False, **cfg, **kw)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("one", [False, True])
def test_alphas_cumprod_match_diffusers(name, one):
    cfg = CONFIGS[name]
    ref = _ddim(cfg, set_alpha_to_one=one)
    sch = VPSchedule.from_config(dict(cfg, set_alpha_to_one=one))
    torch.testing.assert_close(sch.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-6, atol=1e-7)
    assert sch.final_alpha_cumprod == pytest.approx(float(ref.final_alpha_cumprod), rel=1e-6)
    assert sch.alpha_bar(-1).item() == pytest.approx(float(ref.final_alpha_cumprod), rel=1e-6)
    t = torch.tensor([0, 17, 500, 999])
    torch.testing.assert_close(sch.alpha_bar(t), ref.alphas_cumprod[t], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 999])
@pytest.mark.parametrize("offset", [0, 1])
def test_timesteps_match_diffusers(spacing, n, offset):
    ref = _ddim(CONFIGS["sd"], timestep_spacing=spacing, steps_offset=offset)
    ref.set_timesteps(n)
    sch = VPSchedule.from_config(dict(CONFIGS["sd"], steps_offset=offset))
    assert sch.timesteps(n, spacing).tolist() == ref.timesteps.tolist()


def test_sampling_pairs_end_at_clean_data():
    sch = VPSchedule.stable_diffusion()
    pairs = sch.sampling_pairs(10, "trailing")
    assert pairs[0][0] == 999 and pairs[-1][1] == -1
    assert all(tn < t for t, tn in pairs) and all(pairs[i][1] == pairs[i + 1][0] for i in range(9))
    inv = sch.inversion_pairs(5, t_end=801)
    assert inv[0][0] == -1 and inv[-1][1] == 801 and all(tn > t for t, tn in inv)


def test_alpha_sigma_snr_ve_sigma_identities():
    sch = VPSchedule.stable_diffusion()
    t = torch.arange(0, 1000, 37)
    a, s = sch.alpha(t, dtype=torch.float64), sch.sigma(t, dtype=torch.float64)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))
    torch.testing.assert_close(sch.snr(t, dtype=torch.float64), a**2 / s**2)
    torch.testing.assert_close(sch.ve_sigma(t, dtype=torch.float64), s / a)
    assert torch.all(sch.alpha(t[1:]) < sch.alpha(t[:-1]))  # noise increases with t
    # t_for_ve_sigma inverts ve_sigma on the grid
    assert sch.t_for_ve_sigma(sch.ve_sigma(t, dtype=torch.float64)).tolist() == t.tolist()


def test_psr_factor_limits():
    k = 1.7
    assert psr_factor(torch.tensor(1e9), k).item() == pytest.approx(k, rel=1e-6)          # t -> 0: r -> k
    assert psr_factor(torch.tensor(1e-9), k).item() == pytest.approx(1.0, rel=1e-6)       # high noise: r -> 1
    snr = torch.logspace(-4, 4, 50, dtype=torch.float64)
    assert torch.allclose(psr_factor(snr, 1.0), torch.ones_like(snr))                     # k = 1: identity
    r = psr_factor(snr, k)
    assert torch.all(r[1:] > r[:-1]) and torch.all((r > 1) & (r < k))                     # monotone, between
    # the closed form at a finite point, and the scale s acts through SNR s^2
    assert psr_factor(torch.tensor(2.0), 0.5).item() == pytest.approx((2 + 1) / (2 / 0.5 + 1))
    torch.testing.assert_close(psr_factor(snr, k, s=2.0), psr_factor(4 * snr, k))
    with pytest.raises(ValueError, match="k"):
        psr_factor(1.0, 0.0)


def test_conversions_round_trip_and_match_diffusers_velocity():
    sch = VPSchedule.stable_diffusion()
    t = torch.tensor([999, 500, 3])
    a = sch.alpha(t, dtype=torch.float64)[:, None]
    s = sch.sigma(t, dtype=torch.float64)[:, None]
    x0, eps = torch.randn(2, 3, 8, dtype=torch.float64).unbind(0)
    z = a * x0 + s * eps
    v = v_from_eps(z, eps, a, s)
    torch.testing.assert_close(v, a * eps - s * x0)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, **CONFIGS["sd"])
    torch.testing.assert_close(v.float(), ref.get_velocity(x0.float(), eps.float(), t), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eps_from_v(z, v, a, s), eps)
    torch.testing.assert_close(x0_from_eps(z, eps, a, s), x0)
    torch.testing.assert_close(eps_from_x0(z, x0, a, s), eps)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_to_eps(pred):
    base = VPSchedule.stable_diffusion()
    sch = VPSchedule(base.alphas_cumprod, base.final_alpha_cumprod, prediction_type=pred)
    t = torch.tensor([900, 10])
    a, s = (f(t, dtype=torch.float64)[:, None] for f in (sch.alpha, sch.sigma))
    x0, eps = torch.randn(2, 2, 5, dtype=torch.float64).unbind(0)
    z = (a * x0 + s * eps).float()
    out = {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[pred].float()
    torch.testing.assert_close(sch.to_eps(out, z, t), eps.float(), rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_named():
    sch = VPSchedule.stable_diffusion()
    with pytest.raises(ValueError, match="spacing"):
        sch.timesteps(10, "sideways")
    with pytest.raises(ValueError, match="num_steps"):
        sch.timesteps(0)
    with pytest.raises(ValueError, match="t:"):
        sch.alpha_bar(1000)
    with pytest.raises(ValueError, match="beta_schedule"):
        VPSchedule.from_config({"beta_schedule": "sigmoid"})
