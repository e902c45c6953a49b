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
    eps_c, eps_u, w = g.predict(z, 500)
    assert [c.batch for c in gauss.stats.calls] == [12] and gauss.stats.nfe == 12
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
    eps_c, eps_u, w = g.predict(_z(4), 300)
    assert eps_u is None and w == 1.0 and gauss.stats.nfe == 4


def test_interval_guidance_switches_off_outside(gauss):
    g = Guidance(gauss, cond=torch.ones(1, 2, dtype=torch.float64), uncond=torch.zeros(1, 2, dtype=torch.float64),
                 scale=2.0, interval=(100, 600))
    assert g.predict(_z(3), 700)[1] is None
    assert g.predict(_z(3), 300)[1] is not None


def test_autoguidance_uses_the_guide_model(gauss):
    guide = GaussianDenoiser(torch.tensor([0.0, 0.0], dtype=torch.float64), 0.5)
    g = Guidance(gauss, guide=guide, scale=2.0)
    gauss.stats.reset()
    eps_c, eps_u, w = g.predict(_z(5), 200)
    assert gauss.stats.nfe == 5 and guide.stats.nfe == 5
    torch.testing.assert_close(eps_u, guide._eps(_z(5), torch.full((5,), 200), None))


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
