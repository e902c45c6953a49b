"""The one estimator contract: factory, shapes, loss trick, NFE formulas, checkpoint/resume, VSD's online model."""
from __future__ import annotations

import pytest
import torch

from estimator_helpers import GaussianDenoiser
from msdfast.estimators import METHODS, Estimator, build, estimator_class
from msdfast.schedule import toy_schedule

SHAPES = [(4, 2), (2, 3, 4, 4)]
OPTS = {"sds": {}, "asd": {}, "sdi": {"inversion_steps": 3}, "vsd": {"phi_steps": 2},
        "msd": {"chains": 3, "steps": 4}, "dsd": {"ddim_steps": 3}}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def den() -> GaussianDenoiser:
    return GaussianDenoiser(toy_schedule())


def nfe_formula(method: str, B: int, c: int, first: bool) -> int:
    """Each class docstring's NFE per call (c = 2 with CFG), for OPTS."""
    return {"sds": B * c, "asd": B * (c + 1), "sdi": 3 * B * c + B * c, "vsd": B * c,
            "msd": 4 * B * 1 + 4 * 3 * B * c,
            "dsd": (3 * B * c if first else 0) + B * c + B * (c + 1)}[method]


def test_methods_and_factory_errors(den: GaussianDenoiser) -> None:
    assert METHODS == ("sds", "sdi", "asd", "vsd", "msd", "dsd")
    for m in METHODS:
        assert issubclass(estimator_class(m), Estimator) and estimator_class(m).name == m
    with pytest.raises(ValueError, match="method"):
        build("csd", den)
    with pytest.raises(TypeError, match="denoiser"):
        build("sds", object())
    with pytest.raises(ValueError, match="sds: unknown option 'chains'; valid options: clip, "):
        build("sds", den, chains=3)
    with pytest.raises(ValueError, match="t_range"):
        build("sds", den, t_range=(0.9, 0.1))
    with pytest.raises(ValueError, match="weighting"):
        build("sds", den, weighting="snr")
    with pytest.raises(ValueError, match="psr"):
        build("sds", den, psr_k=0.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cfg", [False, True])
def test_contract(den: GaussianDenoiser, method: str, shape: tuple, cfg: bool) -> None:
    """Points and latents alike: g has x's shape, loss.backward() gives x.grad == g / B, NFE == formula."""
    B = shape[0]
    cond = torch.zeros(B, dtype=torch.long)
    uncond = torch.ones(B, dtype=torch.long) if cfg else None
    est = build(method, den, guidance_scale=3.0 if cfg else 1.0, **OPTS[method])
    est.update_step(1, 10)
    x = torch.randn(shape, generator=gen(1)).requires_grad_(True)
    for first in (True, False):
        out = est(x, cond, uncond, generator=gen(2))
        assert out.grad.shape == x.shape and out.grad.dtype == x.dtype and torch.isfinite(out.grad).all()
        assert not out.grad.requires_grad
        assert out.nfe == nfe_formula(method, B, 2 if cfg else 1, first), (method, out.nfe)
    x.grad = None
    out.loss.backward()
    torch.testing.assert_close(x.grad, out.grad / B)


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_resume_is_exact(den: GaussianDenoiser, method: str) -> None:
    """state_dict() after some steps, load into a fresh estimator: the next gradients are identical."""
    x = torch.randn(3, 2, generator=gen(3))
    est = build(method, den, **OPTS[method])
    for i in range(3):
        est.update_step(i, 10)
        est(x, generator=gen(10 + i))
    state = est.state_dict()
    fresh = build(method, den, **OPTS[method])
    fresh.load_state_dict(state)
    assert (fresh.step, fresh.total_steps) == (est.step, est.total_steps)
    for i in range(3, 5):
        a = est(x, generator=gen(20 + i)).grad
        b = fresh(x, generator=gen(20 + i)).grad
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        est.update_step(i + 1, 10)
        fresh.update_step(i + 1, 10)


def test_vsd_variational_model_learns_the_particles(den: GaussianDenoiser) -> None:
    """eps_phi is trained online on x: its denoising loss falls, and for particles sampled from the data
    the VSD gradient shrinks (eps_phi -> the data's eps; measured: loss 0.88 -> 0.22, |g| 12.7 -> 0.9)."""
    torch.manual_seed(0)
    x = 0.3 + 0.5 * torch.randn(128, 2, generator=gen(4))             # the data distribution N(0.3, 0.25 I)
    est = build("vsd", den, phi_steps=4, phi_batch=4, phi_lr=1e-2, t_range=(0.5, 0.7))
    losses, norms = [], []
    for i in range(16):
        out = est(x, generator=gen(100 + i))
        losses.append(float(out.info["phi_loss"]))
        norms.append(float(out.grad.norm()))
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
    assert sum(norms[-3:]) / 3 < 0.25 * norms[0], norms
    assert out.info["phi_evals"] == 128 + 4 * 4 * 128


def test_vsd_custom_phi_hook(den: GaussianDenoiser) -> None:
    class Phi(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = torch.nn.Parameter(torch.zeros(2))

        def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
            return z * 0 + self.b

    phi = Phi()
    est = build("vsd", den, phi=phi, phi_lr=0.1)
    est(torch.zeros(8, 2), generator=gen(5))
    assert est.phi is phi and phi.b.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_build_rejects_an_unknown_option_naming_it(method):
    """A typo in an option is a one-line UserInputError naming it and listing the valid ones (not a TypeError)."""
    from msdfast.errors import UserInputError
    from msdfast.toy.models import tree_denoiser

    with pytest.raises(UserInputError, match=r"unknown option 'guidance_scal'.*valid options:.*guidance_scale"):
        build(method, tree_denoiser(), guidance_scal=2.0)


def test_a_missing_optional_package_names_the_extra(monkeypatch):
    """One mechanism (errors.require_packages) for every optional dependency: one line naming the pip extra."""
    import importlib.util

    from msdfast.digits.data import load_digits_split
    from msdfast.errors import UserInputError, require_packages

    require_packages("anything", ("torch",), "x")          # present: no error
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(UserInputError, match=r"^the digits world needs sklearn; install with: "
                                             r"pip install 'msdfast\[digits\]'$"):
        load_digits_split()
