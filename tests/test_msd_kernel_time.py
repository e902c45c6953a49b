"""MSD's kernel-ODE time options (MSD paper eq. 12, 14-15; MATH.md sec. 2) against closed forms.

Target: per-coordinate Gaussian data N(mu, v) on the toy schedule (VE levels s_t log-uniform in [0.002, 80]),
kernel centre x (centers="scaled": c_t = alpha_t x). In the VE variable the stable solver is a Lie splitting of
the LINEAR composite ODE, in continuous timestep t (sigma(t) the schedule's level, 0 at t = -1):

    dx/dt = sigma' sigma (x - mu) / (v + sigma^2)  +  u'(t) (x - x0) / lambda^2,

u = sigma ("sigma"), t ("t"), t / T ("tau"); for "noised" the kernel term is sigma' sigma (x - x0) /
(lambda^2 + sigma^2). The reference integrates that ODE to 1e-11 (scipy DOP853) from the solver's own start;
the solver must converge to it at first order in the step size.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from estimator_helpers import GaussianDenoiser
from msdfast.samplers.guidance import Guidance
from msdfast.samplers.product import (KERNEL_TIMES, NaiveOptions, StableOptions, kernel_decay, naive_product,
                                      stable_product)
from msdfast.schedule import TOY_S_MAX, TOY_S_MIN, toy_schedule

scipy_integrate = pytest.importorskip("scipy.integrate")

MU, V, T = 0.3, 0.25, 1000
LOG_RANGE = math.log(TOY_S_MAX / TOY_S_MIN)
X = torch.tensor([[0.8, -0.5], [0.2, 0.1]], dtype=torch.float64)
# a bandwidth per option at which the pull matters but does not pin the chains (u spans 80, 1000, 1, -)
CASES = (("sigma", 2.0), ("sigma", 0.7), ("t", 15.0), ("tau", 0.5), ("noised", 0.3))


def _sigma(t: float) -> float:
    return TOY_S_MIN * math.exp(t / (T - 1) * LOG_RANGE) if t >= 0 else TOY_S_MIN * (t + 1)


def _dsigma(t: float) -> float:
    return _sigma(t) * LOG_RANGE / (T - 1) if t >= 0 else TOY_S_MIN


def composite_ode(kernel_time: str, lam: float, x0: np.ndarray, x_top: np.ndarray, t_top: int = 999) -> np.ndarray:
    """x(t = -1) of the composite ODE (module doc) from x(t_top) = x_top."""
    def f(t: float, x: np.ndarray) -> np.ndarray:
        s, ds = _sigma(t), _dsigma(t)
        if kernel_time == "noised":
            k = ds * s / (lam**2 + s * s)
        else:
            k = {"sigma": ds, "t": 1.0, "tau": 1.0 / T}[kernel_time] / lam**2
        return ds * s * (x - MU) / (V + s * s) + k * (x - x0)
    mid = scipy_integrate.solve_ivp(f, (t_top, 0), x_top, method="DOP853", rtol=1e-11, atol=1e-12).y[:, -1]
    return scipy_integrate.solve_ivp(f, (0, -1), mid, method="DOP853", rtol=1e-11, atol=1e-12).y[:, -1]


def run(kernel_time: str, lam: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(solver output, composite-ODE reference from the solver's own start z_T = c_T + (eps - c_T) d0)."""
    sch = toy_schedule()
    y, info = stable_product(Guidance(GaussianDenoiser(sch, mu=MU, v=V)), X, lam,
                             StableOptions(steps=steps, kernel_time=kernel_time, centers="scaled"),
                             generator=torch.Generator().manual_seed(0))
    eps = torch.randn(X.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    desc = info["grid"][::-1]
    d0 = 1.0 if kernel_time == "noised" else kernel_decay(sch, lam, kernel_time)(desc[0], desc[1])
    x_top = X + (eps / float(sch.alpha(desc[0], dtype=torch.float64)) - X) * d0   # VE start
    ref = np.stack([composite_ode(kernel_time, lam, X[i].numpy(), x_top[i].numpy()) for i in range(X.shape[0])])
    return y.numpy(), ref


@pytest.mark.parametrize("kernel_time,lam", CASES)
def test_stable_solver_converges_to_the_composite_ode(kernel_time: str, lam: float) -> None:
    y200, ref200 = run(kernel_time, lam, 200)      # each grid has its own start pull d0: its own reference
    y1000, ref = run(kernel_time, lam, 1000)
    e200, e1000 = np.abs(y200 - ref200).max(), np.abs(y1000 - ref).max()
    moved = np.abs(ref - X.numpy()).max()
    assert moved > 0.05, moved                      # the kernel and data flows both matter at these settings
    assert e1000 < moved / 100, (e1000, moved)
    assert 3.5 < e200 / e1000 < 6.5, (e200, e1000)   # first-order splitting: error ~ step size


def test_the_units_are_different_odes() -> None:
    """The test can tell the readings apart: sigma's solver is far from the t and tau ODEs at the same lambda."""
    y, ref_sigma = run("sigma", 2.0, 1000)
    eps = torch.randn(X.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for other in ("t", "tau"):
        sch = toy_schedule()
        d0 = kernel_decay(sch, 2.0, other)(999, 998)
        x_top = X + (eps / float(sch.alpha(999, dtype=torch.float64)) - X) * d0
        ref = np.stack([composite_ode(other, 2.0, X[i].numpy(), x_top[i].numpy()) for i in range(2)])
        assert np.abs(y - ref).max() > 100 * np.abs(y - ref_sigma).max()


def test_kernel_decay_per_step_is_the_exact_kernel_flow() -> None:
    sch, lam = toy_schedule(), 0.4
    s = lambda t: float(sch.ve_sigma(t, dtype=torch.float64)) if t >= 0 else 0.0  # noqa: E731
    for t, tn in ((999, 968), (500, 420), (31, 0), (0, -1)):
        assert kernel_decay(sch, lam, "sigma")(t, tn) == pytest.approx(math.exp(-(s(t) - s(tn)) / lam**2), rel=1e-12)
        assert kernel_decay(sch, lam, "t")(t, tn) == pytest.approx(math.exp(-(t - tn) / lam**2), rel=1e-12)
        assert kernel_decay(sch, lam, "tau")(t, tn) == pytest.approx(math.exp(-(t - tn) / T / lam**2), rel=1e-12)
        assert kernel_decay(sch, lam, "noised")(t, tn) == pytest.approx(
            math.sqrt((lam**2 + s(tn) ** 2) / (lam**2 + s(t) ** 2)), rel=1e-12)
    assert kernel_decay(sch, lam, "sigma")(0, -1) == pytest.approx(math.exp(-TOY_S_MIN / lam**2), rel=1e-9)
    assert set(KERNEL_TIMES) == {"sigma", "t", "tau", "noised"}
    with pytest.raises(ValueError, match="kernel_time"):
        kernel_decay(sch, lam, "ve")


@pytest.mark.parametrize("form", ["score", "eq12"])
def test_naive_one_step_closed_form(form: str) -> None:
    """One naive step T-1 -> clean: y = (z - sigma eps_tot) / alpha with the Gaussian eps in closed form,
    eps_tot = eps - sigma (alpha x - z) / lambda^2 ("score") or eps - (x - z) / lambda^2 ("eq12")."""
    sch, lam = toy_schedule(), 3.0
    den = GaussianDenoiser(sch, mu=MU, v=V)
    y, _ = naive_product(Guidance(den), X, lam, NaiveOptions(steps=1, naive_form=form),
                         generator=torch.Generator().manual_seed(1))
    z = torch.randn(X.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, s = float(sch.alpha(999, dtype=torch.float64)), float(sch.sigma(999, dtype=torch.float64))
    eps = s * (z - a * MU) / (a * a * V + s * s)
    eps_tot = eps - (s * (a * X - z) if form == "score" else (X - z)) / lam**2
    torch.testing.assert_close(y, (z - s * eps_tot) / a, rtol=1e-5, atol=1e-5)   # float32 schedule tables
    other, _ = naive_product(Guidance(den), X, lam,
                             NaiveOptions(steps=1, naive_form="eq12" if form == "score" else "score"),
                             generator=torch.Generator().manual_seed(1))
    assert (other - y).abs().max() > 1e-2


def test_naive_form_is_validated() -> None:
    with pytest.raises(ValueError, match="naive_form"):
        naive_product(Guidance(GaussianDenoiser(toy_schedule())), X, 1.0, NaiveOptions(naive_form="paper"))
