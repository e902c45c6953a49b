"""The sampler core: Guidance (CFG / autoguidance / interval / PSR) and guided_step / DDIM loops.

Oracle: data N(m, v I) has the exact eps prediction eps(z, t) = sigma_t (z - alpha_t m) / (alpha_t^2 v + sigma_t^2).
"""
from __future__ import annotations

import pytest
import torch

from msdfast import ops
from msdfast.denoisers.base import Denoiser
from msdfast.samplers.ddim import ddim_invert, ddim_sample
from msdfast.samplers.guidance import Guidance, guided_step, match_batch
from msdfast.schedule import VPSchedule, psr_factor

SCHED = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "set_alpha_to_one": True}


class GaussianDenoiser(Denoiser):
    """Exact eps for N(mean, var I); cond (if given) shifts the mean by cond[:, :d]."""

    def __init__(self, mean: torch.Tensor, var: float) -> None:
        super().__init__(VPSchedule.from_config(SCHED))
        self.mean, self.var = mean, var

    def _eps(self, z, t, cond):
        a = self.schedule.alpha(t, dtype=z.dtype).reshape(-1, 1)
        s = self.schedule.sigma(t, dtype=z.dtype).reshape(-1, 1)
        m = self.mean if cond is None else self.mean + cond
        return s * (z - a * m) / (a * a * self.var + s * s)


@pytest.fixture
def gauss() -> GaussianDenoiser:
    return GaussianDenoiser(torch.tensor([0.5, -1.0], dtype=torch.float64), 0.04)


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_ddim_samples_the_gaussian(gauss):
    x = ddim_sample(Guidance(gauss), _z(3000), 400)
    torch.testing.assert_close(x.mean(0), gauss.mean, atol=0.01, rtol=0)
    # DDIM's discretisation loses a little variance at low noise (0.0376 at 200 steps, 0.0398 at 1000).
    assert abs(x.var(0).mean().item() - 0.04) < 0.002


def test_ddpm_sampling_matches_marginals(gauss):
    x = ddim_sample(Guidance(gauss), _z(3000), 400, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x.mean(0), gauss.mean, atol=0.01, rtol=0)
    assert abs(x.var(0).mean().item() - 0.04) < 0.003


def _round_trip_error(g: Guidance, x0: torch.Tensor, steps: int) -> float:
    traj = ddim_invert(g, x0, steps, 999, trajectory=True)
    assert traj[0][0] == -1 and traj[-1][0] == 999 and len(traj) == steps + 1
    z = traj[-1][1]
    # Sample back along the same grid.
    for (t_next, _), (t, _) in zip(reversed(traj[:-1]), reversed(traj[1:])):
        z = guided_step(g, z, t, t_next, eval_t=max(t, 0))
    return (z - x0).abs().max().item()


def test_inversion_then_sampling_round_trips(gauss):
    """DDIM inversion is exact only as steps -> infinity: its error is first order in the step."""
    x0 = gauss.mean + 0.2 * _z(16, seed=1)
    g = Guidance(gauss)
    e100, e400 = _round_trip_error(g, x0, 100), _round_trip_error(g, x0, 400)
    assert e400 < 0.035
    assert 2.5 < e100 / e400 < 6.0  # ~4x for 4x the steps


def test_cfg_is_one_batched_call_and_matches_formula(gauss):
    cond = torch.tensor([[0.3, 0.1]], dtype=torch.float64)
    uncond = torch.zeros(1, 2, dtype=torch.float64)
    g = Guidance(gauss, cond=cond, uncond=uncond, scale=3.0)
    z = _z(6)
    gauss.stats.reset()
    p = g.predict(z, 500)
    eps_c, eps_u = p.eps_c, p.eps_u
    assert p.w == 3.0 and [c.batch for c in gauss.stats.calls] == [12] and gauss.stats.nfe == 12
    torch.testing.assert_close(eps_c, gauss._eps(z, torch.full((6,), 500), cond.expand(6, 2)))
    torch.testing.assert_close(eps_u, gauss._eps(z, torch.full((6,), 500), None))
    # The guided step equals the reference formula eps_u + w (eps_c - eps_u).
    out = guided_step(g, z, 500, 400)
    sch = gauss.schedule
    eps = eps_u + 3.0 * (eps_c - eps_u)
    x0 = (z - sch.sigma(500, dtype=torch.float64) * eps) / sch.alpha(500, dtype=torch.float64)
    want = sch.alpha(400, dtype=torch.float64) * x0 + sch.sigma(400, dtype=torch.float64) * eps
    torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-6)


def test_scale_one_is_pure_conditional_single_call(gauss):
    cond = torch.tensor([[0.3, 0.1]], dtype=torch.float64)
    g = Guidance(gauss, cond=cond, uncond=torch.zeros(1, 2, dtype=torch.float64), scale=1.0)
    gauss.stats.reset()
    p = g.predict(_z(4), 300)
    assert p.eps_u is None and p.w == 1.0 and gauss.stats.nfe == 4


def test_interval_guidance_switches_off_outside(gauss):
    g = Guidance(gauss, cond=torch.ones(1, 2, dtype=torch.float64), uncond=torch.zeros(1, 2, dtype=torch.float64),
                 scale=2.0, interval=(100, 600))
    assert g.predict(_z(3), 700).eps_u is None
    assert g.predict(_z(3), 300).eps_u is not None


def test_autoguidance_uses_the_guide_model(gauss):
    guide = GaussianDenoiser(torch.tensor([0.0, 0.0], dtype=torch.float64), 0.5)
    g = Guidance(gauss, guide=guide, scale=2.0)
    gauss.stats.reset()
    p = g.predict(_z(5), 200)
    assert gauss.stats.nfe == 5 and guide.stats.nfe == 5
    torch.testing.assert_close(p.eps_u, guide._eps(_z(5), torch.full((5,), 200), None))


def test_psr_scales_eps_by_the_factor(gauss):
    g = Guidance(gauss, psr_k=1.5, psr_s=1.0)
    z = _z(4)
    r = psr_factor(gauss.schedule.snr(100, dtype=torch.float64), 1.5)
    torch.testing.assert_close(g.eps(z, 100), (r * gauss._eps(z, torch.full((4,), 100), None)))


def test_conditions_repeat_chain_major():
    c = torch.arange(3.0).reshape(3, 1)
    torch.testing.assert_close(match_batch(c, 6), torch.cat([c, c]))
    with pytest.raises(ValueError, match="cond"):
        match_batch(c, 7)


def test_errors_name_the_argument(gauss):
    with pytest.raises(ValueError, match="scale"):
        Guidance(gauss, scale=2.0)
    with pytest.raises(ValueError, match="interval"):
        Guidance(gauss, uncond=torch.zeros(1, 2), scale=2.0, interval=(500, 100))
    with pytest.raises(ValueError, match="k"):
        Guidance(gauss, psr_k=0.0)
    with pytest.raises(ValueError, match="noise"):
        guided_step(Guidance(gauss), _z(2), 500, 400, eta=1.0)
    with pytest.raises(ValueError, match="t"):
        gauss.eps(_z(2), torch.tensor([1, 2, 3]))


def test_stable_msd_step_pulls_towards_centre(gauss):
    """With decay d the step returns c + (z' - c) d: d = 0 lands on the centre, d = 1 is plain DDIM."""
    g = Guidance(gauss)
    z, c = _z(4), _z(4, seed=5)
    plain = guided_step(g, z, 500, 480)
    torch.testing.assert_close(guided_step(g, z, 500, 480, center=c, decay=1.0), plain)
    torch.testing.assert_close(guided_step(g, z, 500, 480, center=c, decay=0.0), c)
    half = guided_step(g, z, 500, 480, center=c, decay=0.25)
    torch.testing.assert_close(half, c + (plain - c) * 0.25)


def test_step_coefficients_eta_one_is_ddpm_posterior():
    """eta = 1: c_noise^2 = posterior variance beta~ = (1 - abar') / (1 - abar) (1 - abar / abar')."""
    ab, abn = torch.tensor(0.5), torch.tensor(0.7)
    coef = ops.step_coefficients(1, ab.sqrt(), (1 - ab).sqrt(), abn.sqrt(), (1 - abn).sqrt(), eta=1.0)
    beta_tilde = (1 - abn) / (1 - ab) * (1 - ab / abn)
    torch.testing.assert_close(coef[0, 6] ** 2, beta_tilde)
    torch.testing.assert_close(coef[0, 5] ** 2 + coef[0, 6] ** 2, 1 - abn)


def test_a_batch_straddling_the_interval_is_guided_per_sample(gauss):
    """Per-sample t across the interval edge: samples inside get w = scale, outside w = 1, in ONE prediction
    and ONE fused step; each sample equals its own unbatched (python-int t) step."""
    cond, uncond = torch.ones(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64)
    g = Guidance(gauss, cond=cond, uncond=uncond, scale=3.0, interval=(100, 600), psr_k=1.3, psr_s=0.7)
    z = _z(4, seed=3)
    t = torch.tensor([50, 300, 600, 800])
    p = g.predict(z, t)
    assert p.w.tolist() == [1.0, 3.0, 3.0, 1.0] and p.eps_u is not None
    r = psr_factor(gauss.schedule.snr(t), 1.3, 0.7)
    torch.testing.assert_close(p.r, r)
    manual = r[:, None].double() * (p.eps_u + p.w[:, None].double() * (p.eps_c - p.eps_u))
    torch.testing.assert_close(p.combined(), manual)
    t_next = t - 40
    out = guided_step(g, z, t, t_next)
    for i in range(4):
        one = guided_step(g, z[i:i + 1], int(t[i]), int(t_next[i]))
        torch.testing.assert_close(out[i:i + 1], one, atol=1e-6, rtol=1e-6)
    # outside-only samples as python ints cost one call; a per-sample batch always evaluates the pair
    gauss.stats.reset()
    g.predict(z, 800)
    assert gauss.stats.nfe == 4


def test_one_coefficient_builder_for_both_fused_ops(gauss):
    from msdfast.samplers.guidance import coefficients
    g = Guidance(gauss, cond=torch.ones(1, 2), uncond=torch.zeros(1, 2), scale=3.0, psr_k=1.5)
    t = torch.tensor([100, 700])
    step_tab = coefficients(g, 2, t, torch.device("cpu"), w=g.cfg_weight(t), t_next=t - 50)
    grad_tab = coefficients(g, 2, t, torch.device("cpu"), w=g.cfg_weight(t), weight=0.5)
    assert step_tab.shape == (2, len(ops.STEP_COLUMNS)) and grad_tab.shape == (2, len(ops.GRAD_COLUMNS))
    # the guidance columns (w, r) are the same in both tables
    torch.testing.assert_close(step_tab[:, :2], grad_tab[:, :2])
    torch.testing.assert_close(grad_tab[:, 1], psr_factor(gauss.schedule.snr(t), 1.5))
    with pytest.raises(ValueError, match="exactly one"):
        coefficients(g, 2, t, torch.device("cpu"))
