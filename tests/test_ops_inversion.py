"""DDIM inversion (issue 3, op 1) is msdfast.ops.ddim_step with ascending (t, t_next) pairs: the same
fused CFG + PSR + DDIM formula (MATH.md sec. 1: "DDIM step, either direction"), so there is no second
kernel. These tests pin that down on every backend:
  * inversion then sampling with the same eps returns the start exactly (the DDIM map is affine in z for
    a fixed eps, and the two steps are inverse maps);
  * inversion with CFG + PSR coefficients matches the formula written out by hand;
  * the stochastic term of SDI-style inversion (eta, given noise) enters through the c_noise column;
  * a multi-step inversion up the schedule's `inversion_pairs` grid round-trips through `sampling` steps.
"""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from msdfast.ops import STEP_COLUMNS
from msdfast.schedule import VPSchedule
from kernel_helpers import DEVICES, FAST, need

BACKENDS = ("reference",) + FAST


def _coef(sched, B, t, t_next, device, **kw):
    return O.step_coefficients(B, sched.alpha(t), sched.sigma(t), sched.alpha(t_next), sched.sigma(t_next),
                               device=device, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_inversion_then_sampling_round_trips(device, backend):
    need("ddim_step", backend, device)
    sched = VPSchedule.stable_diffusion()
    B = 3
    z0 = torch.randn(B, 4, 6, 5, dtype=torch.float64, device=device)
    eps = torch.randn_like(z0)
    t, t_next = torch.tensor([10, 200, 500]), torch.tensor([300, 600, 900])  # per-sample ascending pairs
    up = O.ddim_step(z0, eps, _coef(sched, B, t, t_next, device), backend=backend)
    assert (up - z0).abs().max() > 0.1  # it moved
    down = O.ddim_step(up, eps, _coef(sched, B, t_next, t, device), backend=backend)
    torch.testing.assert_close(down, z0, rtol=1e-5, atol=1e-5)  # float32 coefficient table


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_inversion_with_cfg_and_psr_matches_formula(device, backend):
    """SDI inverts with CFG (threestudio's -7.5, i.e. diffusers w = -6.5) and optionally PSR."""
    need("ddim_step", backend, device)
    sched = VPSchedule.stable_diffusion()
    B = 2
    z = torch.randn(B, 4, 5, 7, dtype=torch.float64, device=device)
    ec, eu = torch.randn_like(z), torch.randn_like(z)
    w, r = torch.tensor([-6.5, 7.5]), torch.tensor([1.0, 0.95])
    t, tn = torch.tensor([-1, 400]), torch.tensor([100, 700])  # -1: from clean data
    coef = _coef(sched, B, t, tn, device, guidance_scale=w, psr=r)
    out, x0 = O.ddim_step(z, ec, coef, eps_u=eu, return_x0=True, backend=backend)
    c = coef.double().cpu()
    for b in range(B):
        cb = dict(zip(STEP_COLUMNS, c[b].tolist()))
        eps_g = r[b].item() * (eu[b] + w[b].item() * (ec[b] - eu[b]))
        x0_b = (z[b] - sched.sigma(int(t[b])).item() * eps_g) / sched.alpha(int(t[b])).item()
        z_b = sched.alpha(int(tn[b])).item() * x0_b + sched.sigma(int(tn[b])).item() * eps_g
        assert cb["c_eps"] == pytest.approx(sched.sigma(int(tn[b])).item(), rel=1e-6)  # eta = 0: no noise
        torch.testing.assert_close(x0[b], x0_b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[b], z_b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_stochastic_inversion_uses_noise_column(device, backend):
    """Song et al.'s eta formula vanishes for t_next > t (1 - abar/abar' < 0 is clamped), so SDI's stochastic
    inversion sets the table's (c_eps, c_noise) columns directly: z' = alpha' x0 + c_eps eps + c_noise n."""
    need("ddim_step", backend, device)
    sched = VPSchedule.stable_diffusion()
    B = 2
    z = torch.randn(B, 3, 8, dtype=torch.float64, device=device)
    eps, noise = torch.randn_like(z), torch.randn_like(z)
    coef = _coef(sched, B, 100, 400, device, eta=0.3)
    assert torch.all(coef[:, STEP_COLUMNS.index("c_noise")] == 0)
    eta, sn = 0.3, sched.sigma(400).item()
    coef[:, STEP_COLUMNS.index("c_noise")] = eta * sn
    coef[:, STEP_COLUMNS.index("c_eps")] = (1 - eta**2) ** 0.5 * sn
    out = O.ddim_step(z, eps, coef, noise=noise, backend=backend)
    x0 = (z - sched.sigma(100).item() * eps) / sched.alpha(100).item()
    expect = sched.alpha(400).item() * x0 + (1 - eta**2) ** 0.5 * sn * eps + eta * sn * noise
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multistep_inversion_grid_round_trip(backend):
    """10 inversion steps from clean data up to t = 900 with a z-independent eps field, then the reversed
    pairs back down: the trajectory returns to x (each step is exactly inverted by its reverse)."""
    need("ddim_step", backend, "cpu")
    sched = VPSchedule.stable_diffusion()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    eps_at = {t: torch.randn_like(x) for t in range(-1, 1000)}
    pairs = sched.inversion_pairs(10, 900)
    assert pairs[0][0] == -1 and pairs[-1][1] == 900 and all(a < b for a, b in pairs)
    z = x
    for t, tn in pairs:
        z = O.ddim_step(z, eps_at[t], _coef(sched, 2, t, tn, "cpu"), backend=backend)
    for t, tn in reversed(pairs):
        z = O.ddim_step(z, eps_at[t], _coef(sched, 2, tn, t, "cpu"), backend=backend)
    torch.testing.assert_close(z, x, rtol=1e-4, atol=1e-4)
