"""MSD estimator and product samplers against MATH.md sec. 2's oracles (tree GMM, Tweedie, NFE formulas)."""
from __future__ import annotations

import math

import pytest
import torch

from estimator_helpers import GaussianDenoiser, IsoMixtureDenoiser, gmm_mean_shift, small_gmm
from msdfast.denoisers.gmm import GMMDenoiser
from msdfast.estimators import build
from msdfast.samplers.guidance import Guidance, guided_step
from msdfast.estimators.bandwidth import BandwidthSchedule
from msdfast.samplers.product import StableOptions, product_grid, stable_product
from msdfast.schedule import toy_schedule
from msdfast.toy.datasets import tree_gmm
from msdfast.toy.models import tree_denoiser

X_TREE = torch.tensor([[0.5, 0.2]], dtype=torch.float64)
ORACLE_TREE = torch.tensor([-0.011183, 0.013226], dtype=torch.float64)   # MATH.md's example value


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_oracle_value_matches_math_md() -> None:
    got = gmm_mean_shift(tree_gmm("A"), X_TREE, 0.1)[0]
    torch.testing.assert_close(got, ORACLE_TREE, atol=2e-6, rtol=0)


def test_exact_product_sampler_mean_is_the_mean_shift() -> None:
    """Single-sample estimates y - x with exact product samples: mean = lambda^2 grad log p_lambda within MC error."""
    n = 40000
    est = build("msd", GMMDenoiser(tree_gmm("A")), solver="exact", chains=n, bandwidth=0.1)
    out = est(X_TREE, generator=gen(1))
    assert out.nfe == 0
    shift = -out.grad[0]                                   # g = x - mean y
    se = (out.info["samples"] - X_TREE).std(0) / math.sqrt(n)
    assert torch.all((shift - ORACLE_TREE).abs() < 4 * se), (shift, ORACLE_TREE, se)
    assert torch.all(se < ORACLE_TREE.abs() / 10)          # the test resolves the value (sign, factor 2)


def test_exact_product_sampler_per_class_condition() -> None:
    x = X_TREE.repeat(2, 1)
    est = build("msd", tree_denoiser(), solver="exact", chains=20000, bandwidth=0.1)
    out = est(x, torch.tensor([0, 1]), generator=gen(2))
    oracle_b = gmm_mean_shift(tree_gmm("B"), X_TREE, 0.1)[0]
    assert (-out.grad[1] - oracle_b).abs().max() < 0.01 and (-out.grad[0] - ORACLE_TREE).abs().max() < 0.003


def test_tweedie_matches_oracle_to_float_precision() -> None:
    gmm = tree_gmm("A")
    est = build("msd", GMMDenoiser(gmm), solver="tweedie", bandwidth=0.1)
    out = est(X_TREE)
    lam = out.info["lambda_eff"]
    assert abs(lam - 0.1) < 0.002 and out.nfe == 1
    torch.testing.assert_close(-out.grad, gmm_mean_shift(gmm, X_TREE, lam), atol=1e-12, rtol=1e-9)


def test_posterior_sampler_converges_with_steps() -> None:
    """Exact-for-an-exact-denoiser product sampling: the bias of the mean shrinks as DDPM steps grow.

    Measured with 20000 chains (lambda 0.2, t_lambda 434): error 0.083 (4 steps), 0.079 (8), 0.027 (32),
    0.0082 (128), 0.0020 (all 435 steps; MC se 0.0019). One step is Tweedie itself (exact mean, no variance).
    """
    den = IsoMixtureDenoiser(toy_schedule(), [0.6, 0.4], [[0.3, 0.1], [-0.3, 0.2]], [0.002, 0.004])
    x, n = torch.tensor([[0.05, 0.3]], dtype=torch.float64), 2000
    errs = {}
    for steps in (1, 4, 64):
        out = build("msd", den, solver="posterior", chains=n, steps=steps, bandwidth=0.2)(x, generator=gen(3))
        errs[steps] = (-out.grad - den.mean_shift(x, out.info["lambda_eff"])).norm().item()
    assert errs[1] < 1e-7, errs                            # y = D(alpha x, t_lambda) for every chain
    assert errs[4] > 0.05 and errs[64] < errs[4] / 3, errs


def test_stable_solver_limits() -> None:
    """lambda -> inf: no kernel pull, plain DDIM from the same noise; lambda -> 0: y = x (decay 0)."""
    den = GMMDenoiser(small_gmm())
    x = torch.tensor([[0.35, 0.3], [0.0, 0.0]], dtype=torch.float64)
    g = Guidance(den)
    y, _ = stable_product(g, x, 1e6, StableOptions(chains=2, steps=8), generator=gen(4))
    noise = torch.randn(4, 2, dtype=torch.float64, generator=gen(4))
    grid = product_grid(g, 8)
    assert grid == [-1, 124, 249, 374, 499, 624, 749, 874, 999]
    z = noise                                              # DDIM over exactly that grid
    for t, tn in zip(grid[::-1][:-1], grid[::-1][1:]):
        z = guided_step(g, z, t, tn)
    torch.testing.assert_close(y, z, atol=1e-6, rtol=1e-6)
    y0, _ = stable_product(g, x, 1e-3, StableOptions(chains=2, steps=8), generator=gen(4))
    torch.testing.assert_close(y0, x.repeat(2, 1), atol=1e-9, rtol=0)


def test_stable_kernel_interval_switches_the_pull_off_outside() -> None:
    """A kernel interval containing no solver step gives the kernel-free run (lambda = inf), one inside all
    steps gives the full-kernel run."""
    den = GMMDenoiser(small_gmm())
    x = torch.tensor([[0.35, 0.3]], dtype=torch.float64)
    g = Guidance(den)
    free, _ = stable_product(g, x, 1e6, StableOptions(chains=3, steps=5), generator=gen(11))
    off, _ = stable_product(g, x, 0.3, StableOptions(chains=3, steps=5, kernel_interval=(1000, 1000)), generator=gen(11))
    full, _ = stable_product(g, x, 0.3, StableOptions(chains=3, steps=5), generator=gen(11))
    on, _ = stable_product(g, x, 0.3, StableOptions(chains=3, steps=5, kernel_interval=(0, 999)), generator=gen(11))
    torch.testing.assert_close(off, free, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(on, full, atol=0, rtol=0)
    assert (full - free).abs().max() > 1e-2


@pytest.mark.parametrize("solver,kw", [("stable", {}), ("stable", {"kernel_time": "sigma", "centers": "scaled"}),
                                       ("naive", {}), ("posterior", {})])
def test_one_denoiser_call_per_step_and_nfe_formula(solver: str, kw: dict) -> None:
    """N chains x B points x CFG: ONE batched call per solver step; NFE per MSD class docstring."""
    den = tree_denoiser()
    B, N, T = 3, 4, 6
    x = torch.tensor([[0.5, 0.2], [0.1, -0.3], [-0.4, 0.6]])
    cond, uncond = torch.zeros(B, dtype=torch.long), torch.full((B,), 2)
    est = build("msd", den, solver=solver, chains=N, steps=T, bandwidth=0.3, guidance_scale=2.0, **kw)
    den.stats.reset()
    out = est(x, cond, uncond, generator=gen(5))
    inv = T * B if (solver == "stable" and kw.get("centers", "inversion") == "inversion") else 0
    steps = T if solver != "posterior" else min(T, out.info["t_lambda"] + 1)
    assert out.nfe == inv + steps * N * B * 2
    sampling_calls = [c for c in den.stats.calls if c.batch == 2 * N * B]
    assert len(sampling_calls) == steps
    assert len(den.stats.calls) == steps + (T if inv else 0)
    assert out.grad.shape == x.shape and torch.isfinite(out.grad).all()


def test_tweedie_nfe_and_inversion_cfg_nfe() -> None:
    den = tree_denoiser()
    x = torch.zeros(2, 2)
    c, u = torch.zeros(2, dtype=torch.long), torch.full((2,), 2)
    assert build("msd", den, solver="tweedie", guidance_scale=3.0)(x, c, u).nfe == 2 * 2
    guide = GMMDenoiser(small_gmm())                       # autoguidance: main B + guide B per step
    est = build("msd", den, solver="posterior", steps=4, chains=3, guidance_scale=3.0, guide=guide, bandwidth=0.3)
    assert est(x, c, generator=gen()).nfe == 4 * 3 * 2 * 2 and guide.stats.nfe == 4 * 3 * 2
    est = build("msd", den, solver="stable", steps=5, chains=3, guidance_scale=3.0, inversion_guidance_scale=2.0)
    assert est(x, c, u, generator=gen()).nfe == 5 * 2 * 2 + 5 * 3 * 2 * 2


def test_guidance_interval_counts_only_guided_steps() -> None:
    den = tree_denoiser()
    x, c, u = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.full((2,), 2)
    est = build("msd", den, solver="stable", steps=10, chains=2, guidance_scale=3.0, guidance_interval=(0, 500))
    grid = product_grid(Guidance(den), 10)
    guided = sum(1 for t in grid[::-1][:-1] if t <= 500)
    assert est(x, c, u, generator=gen()).nfe == 10 * 2 + 10 * 2 * 2 + guided * 2 * 2


def test_latent_batches_work_like_points() -> None:
    den = GaussianDenoiser(toy_schedule())
    x = torch.randn(2, 3, 4, 4, generator=gen(6))
    for solver in ("stable", "naive", "posterior", "tweedie"):
        out = build("msd", den, solver=solver, chains=3, steps=4, bandwidth=1.0)(x, generator=gen(7))
        assert out.grad.shape == x.shape and torch.isfinite(out.grad).all()


def test_tweedie_on_gaussian_latents_is_closed_form() -> None:
    """N(mu, v I) data: E_q[y] - x = lambda^2 (mu - x) / (v + lambda^2), in [B, C, H, W]."""
    den = GaussianDenoiser(toy_schedule(), mu=0.3, v=0.25)
    x = torch.randn(2, 3, 4, 4, generator=gen(8), dtype=torch.float64)
    out = build("msd", den, solver="tweedie", bandwidth=0.5)(x)
    lam = out.info["lambda_eff"]
    torch.testing.assert_close(-out.grad, lam**2 * (0.3 - x) / (0.25 + lam**2), atol=1e-10, rtol=1e-8)


def test_bandwidth_schedules_and_termination() -> None:
    lin = BandwidthSchedule(math.sqrt(0.1), "linear", lambda_min=0.05)
    assert lin(0) == pytest.approx(math.sqrt(0.1)) and lin(0.5) == pytest.approx(math.sqrt(0.1) / 2)
    assert not lin.finished(0.5) and lin.finished(1.0)
    geo = BandwidthSchedule(1.0, "geometric", lambda_end=0.01)
    assert geo(0.5) == pytest.approx(0.1)
    assert BandwidthSchedule(0.3, "constant")(0.9) == 0.3 and BandwidthSchedule(0.3)(0.9) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="lambda_end"):
        BandwidthSchedule(0.1, "linear", lambda_end=0.2)
    with pytest.raises(ValueError, match="bandwidth_schedule"):
        BandwidthSchedule(0.1, "cosine")
    den = GMMDenoiser(small_gmm())
    est = build("msd", den, solver="tweedie", bandwidth=0.3, bandwidth_schedule="linear", lambda_min=0.05)
    est.update_step(0, 11)
    assert est.lam == pytest.approx(0.3) and not est.finished
    est.update_step(10, 11)
    out = est(torch.zeros(2, 2))
    assert est.finished and out.nfe == 0 and torch.all(out.grad == 0) and out.info["finished"]


def test_naive_kernel_pulls_toward_x() -> None:
    """Sign of eq. 12's kernel term: a tighter kernel brings the product samples closer to x."""
    den = GaussianDenoiser(toy_schedule(), mu=0.0, v=0.25)
    x = torch.full((1, 2), 0.8, dtype=torch.float64)
    far = build("msd", den, solver="naive", chains=2000, steps=50, bandwidth=100.0)(x, generator=gen(9))
    near = build("msd", den, solver="naive", chains=2000, steps=50, bandwidth=0.5)(x, generator=gen(9))
    assert near.grad.norm() < far.grad.norm() * 0.6


def test_bad_options_name_the_argument() -> None:
    den = GMMDenoiser(small_gmm())
    for kw, name in (({"solver": "heun"}, "solver"), ({"chains": 0}, "chains"), ({"steps": 0}, "steps"),
                     ({"kernel_interval": (5, 1)}, "kernel_interval"), ({"kernel_time": "s"}, "kernel_time"),
                     ({"bandwidth": -1.0}, "bandwidth"), ({"centers": "x"}, "centers")):
        with pytest.raises(ValueError, match=name):
            build("msd", den, **kw)
    with pytest.raises(ValueError, match="uncond"):
        build("msd", den, guidance_scale=2.0)(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="solver"):
        build("msd", GaussianDenoiser(toy_schedule()), solver="exact")(torch.zeros(1, 2))


def test_samples_exact_sampler_is_chain_major() -> None:
    gmm = small_gmm()
    x = torch.tensor([[0.3, 0.1], [-0.2, 0.4]], dtype=torch.float64)
    y = gmm.product_sample(x, 1e-3, 5, gen(10))       # lambda -> 0: y = x for every chain
    torch.testing.assert_close(y, x.repeat(5, 1), atol=5e-3, rtol=0)


def test_solver_study_smoke() -> None:
    from msdfast.toy.solver_study import ROWS, run
    rows = run(points=2, chains=4, lambdas=(0.3,))
    assert len(rows) == len(ROWS)
    by = {(r["solver"], tuple(sorted(r["options"].items()))): r for r in rows}
    assert by[("tweedie", ())]["bias"] < 1e-6 and by[("tweedie", ())]["nfe_per_sample"] == 1
    assert by[("stable", (("steps", 10),))]["nfe_per_sample"] == pytest.approx(10 + 10 / 4)


def test_noised_kernel_decay_telescopes_to_the_kernel_width():
    """Over a whole run the noised-kernel pull shrinks s_T noise to exactly lambda: prod d = lambda / sqrt(lambda^2 + s_T^2)."""
    import math

    from msdfast.samplers.product import kernel_decay

    sch, lam = toy_schedule(), 0.2
    grid = [999, 700, 400, 150, 20, -1]
    d = kernel_decay(sch, lam, "noised")
    prod = math.prod(d(t, tn) for t, tn in zip(grid[:-1], grid[1:]))
    s_top = float(sch.ve_sigma(999, dtype=torch.float64))
    assert abs(prod - lam / math.sqrt(lam**2 + s_top**2)) < 1e-12
    s20 = float(sch.ve_sigma(20, dtype=torch.float64))
    assert abs(d(20, -1) - lam / math.sqrt(lam**2 + s20**2)) < 1e-12  # the last step lands on width lambda


def test_noised_stable_solver_tracks_the_mean_shift_where_the_paper_unit_collapses():
    """Tree class A, lambda = 0.3: the paper's tau unit pins chains to the inversion path (|g| ~ 0), the noised
    kernel with centres alpha_t x recovers most of the exact mean shift (Tweedie) -- a biased splitting."""
    from msdfast.estimators import build

    torch.manual_seed(0)
    d = tree_denoiser()
    x = torch.rand(32, 2) * 3 - 1.5
    c = torch.zeros(32, dtype=torch.long)
    ref = build("msd", d, solver="tweedie", bandwidth=0.3)(x, c).grad

    def rel_err(**kw):
        g = build("msd", d, solver="stable", bandwidth=0.3, steps=10, chains=32, **kw)(
            x, c, generator=torch.Generator().manual_seed(0)).grad
        return ((g - ref).norm(dim=1).mean() / ref.norm(dim=1).mean()).item()

    assert rel_err() > 0.8
    assert rel_err(kernel_time="noised", centers="scaled") < 0.3


def test_each_solver_takes_one_options_dataclass_and_names_unknown_options() -> None:
    from msdfast.errors import UserInputError
    from msdfast.samplers.product import SOLVER_OPTIONS, NaiveOptions, product_sample, solver_options

    assert solver_options("naive", chains=2, naive_form="eq12") == NaiveOptions(chains=2, naive_form="eq12")
    with pytest.raises(UserInputError, match=r"^kernel_time: not an option of the naive solver \(valid: chains, "
                                             r"steps, t_top, kernel_interval, naive_form\)$"):
        solver_options("naive", kernel_time="sigma")
    with pytest.raises(UserInputError, match="chains: not an option of the tweedie solver"):
        solver_options("tweedie", chains=3)
    with pytest.raises(UserInputError, match="centers: expected one of"):
        solver_options("stable", centers="middle")
    with pytest.raises(UserInputError, match="kernel_interval"):
        solver_options("stable", kernel_interval=(5, 1))
    with pytest.raises(UserInputError, match="solver"):
        solver_options("heun")
    assert set(SOLVER_OPTIONS) == {"stable", "naive", "posterior", "tweedie", "exact"}
    den = tree_denoiser()
    x = torch.zeros(2, 2)
    with pytest.raises(TypeError, match="StableOptions"):
        product_sample("stable", Guidance(den, torch.zeros(2, dtype=torch.long)), x, 0.3, NaiveOptions())
    # the estimator validates its solver's options when built, before any call
    with pytest.raises(UserInputError, match="naive_form"):
        build("msd", den, solver="naive", naive_form="paper")
