"""DSD: the exact DSD* setting reproduces DDIM from the seed; the interpolation form caches the seed path."""
from __future__ import annotations

import pytest
import torch

from estimator_helpers import GaussianDenoiser
from msdfast.estimators import build
from msdfast.samplers.ddim import ddim_sample
from msdfast.samplers.guidance import Guidance
from msdfast.schedule import toy_schedule
from msdfast.toy.models import tree_denoiser


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("case", ["latents-cfg", "tree-cfg", "tree-psr"])
def test_dsd_star_reproduces_ddim_sample(case: str) -> None:
    """Optimisation steps == DDIM steps, SGD lr 1 from `initial_point`: x ends at the DDIM sample of eps*."""
    if case == "latents-cfg":
        den, shape, cond, uncond, kw = GaussianDenoiser(toy_schedule()), (3, 4, 5, 5), \
            torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long), {"guidance_scale": 3.0}
    else:
        den, shape = tree_denoiser(), (5, 2)
        cond, uncond = torch.zeros(5, dtype=torch.long), torch.full((5,), 2)
        kw = {"guidance_scale": 2.0} if case == "tree-cfg" else {"guidance_scale": 2.0, "psr_k": 1.5}
    K = 8
    est = build("dsd", den, form="2d", ddim_steps=K, **kw)
    x = est.initial_point(torch.zeros(shape, dtype=torch.float64), cond, uncond, generator=gen(1)).clone()
    g = Guidance(den, cond, uncond, kw["guidance_scale"], psr_k=kw.get("psr_k", 1.0))
    ref = ddim_sample(g, est.seed.clone(), K, spacing="trailing")
    B = shape[0]
    den.stats.reset()
    for i in range(K):
        est.update_step(i, K)
        out = est(x, cond, uncond)
        x = x - out.grad                                   # SGD, lr 1
        assert out.nfe == (0 if i == K - 1 else 4 * B)     # path cached; CFG on both terms (2d default)
    assert den.stats.nfe == 4 * B * (K - 1)
    torch.testing.assert_close(x, ref, atol=2e-5, rtol=1e-5)
    assert (x - ref).abs().max() < 1e-3 * ref.abs().max()


def test_dsd_2d_more_steps_than_ddim_stays_close() -> None:
    """N = 4 K optimisation steps (lr K/N folded into g): close to, not equal to, the DDIM sample."""
    den = GaussianDenoiser(toy_schedule())
    K, N = 5, 20
    est = build("dsd", den, form="2d", ddim_steps=K)
    x = est.initial_point(torch.zeros(4, 2, dtype=torch.float64), generator=gen(2)).clone()
    ref = ddim_sample(Guidance(den), est.seed.clone(), K, spacing="trailing")
    for i in range(N):
        est.update_step(i, N)
        x = x - est(x).grad
    assert (x - ref).abs().max() < 0.05 * ref.abs().max() + 0.02


def test_dsd_interp_caches_the_seed_path() -> None:
    """The seed's DDIM path is simulated once per condition; each call then costs B c_seed + B (c + c_tgt)."""
    den = tree_denoiser()
    B, K = 4, 6
    x = torch.randn(B, 2, generator=gen(3))
    c, u = torch.zeros(B, dtype=torch.long), torch.full((B,), 2)
    est = build("dsd", den, ddim_steps=K, guidance_scale=3.0)
    est.update_step(0, 10)
    first = est(x, c, u, generator=gen(4))
    assert first.nfe == K * B * 2 + B * 2 + B * (2 + 1)
    for i in range(1, 4):
        est.update_step(i, 10)
        assert est(x, c, u).nfe == B * 2 + B * 3
    den.stats.reset()
    est.update_step(4, 10)
    est(x, c, u)
    assert [call.batch for call in den.stats.calls] == [2 * B, 3 * B]   # path eps pair, then ONE gradient batch
    # a new condition builds a new path; the old one stays cached
    assert est(x, torch.ones(B, dtype=torch.long), u).nfe == K * B * 2 + 5 * B
    assert est(x, c, u).nfe == 5 * B
    grid = build("dsd", den, ddim_steps=K, guidance_scale=3.0, path_eps="grid")
    grid(x, c, u, generator=gen(4))
    assert grid(x, c, u).nfe == 3 * B


def test_dsd_interp_gradient_by_hand() -> None:
    """g = w(t) [eps_g(x_hat(t), t) - eps_c(x_hat(t+d), t+d)], x_hat from the path's eps at t + d."""
    den = GaussianDenoiser(toy_schedule())
    B = 3
    x = torch.randn(B, 2, generator=gen(5), dtype=torch.float64)
    c, u = torch.zeros(B, dtype=torch.long), torch.ones(B, dtype=torch.long)
    est = build("dsd", den, ddim_steps=4, guidance_scale=2.0, path_eps="grid")
    est.update_step(3, 10)
    out = est(x, c, u, generator=gen(6))
    t, td, k = int(out.info["t"][0]), int(out.info["t_delta"][0]), out.info["grid_k"]
    assert td == t + max(1, round(0.1 * (t - est.t_min)))
    path = est.path(x, c, u)
    assert path.grid[k] >= td and (k == len(path.grid) - 1 or path.grid[k + 1] < td)
    sch = den.schedule
    e = path.eps[k]
    xt = sch.alpha(t, dtype=torch.float64) * x + sch.sigma(t, dtype=torch.float64) * e
    xd = sch.alpha(td, dtype=torch.float64) * x + sch.sigma(td, dtype=torch.float64) * e
    ec, eu = den.eps_pair(xt, t, c, u)
    g = (1 - sch.alpha_bar(t, dtype=torch.float64)) * (eu + 2.0 * (ec - eu) - den.eps(xd, td, c))
    torch.testing.assert_close(out.grad, g, atol=1e-6, rtol=1e-6)


def test_dsd_state_roundtrip_and_errors() -> None:
    den = GaussianDenoiser(toy_schedule())
    est = build("dsd", den, ddim_steps=4)
    x = torch.randn(3, 2, generator=gen(7))
    est.update_step(2, 10)
    est(x, generator=gen(8))
    st = est.state_dict()
    est2 = build("dsd", den, ddim_steps=4)
    est2.load_state_dict(st)
    torch.testing.assert_close(est2(x).grad, est(x).grad)
    with pytest.raises(ValueError, match="x"):
        est(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="form"):
        build("dsd", den, form="3d")
    with pytest.raises(ValueError, match="state"):
        build("sds", den).load_state_dict(st)
    shared = build("dsd", den, ddim_steps=4, shared_seed=True)
    shared(x, generator=gen(9))
    assert shared.seed.shape == (1, 2)
