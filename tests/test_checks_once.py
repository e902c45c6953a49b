"""ops.checks_once(): the sampler loops validate the fused step's arguments once per loop, not per call.

Counted by wrapping the op's check function; results must equal the checked path bit for bit; bad input must
still raise the checked path's error (at the loop's first step).
"""
from __future__ import annotations

import threading

import pytest
import torch

from msdfast import ops
from msdfast.denoisers.base import Denoiser
from msdfast.denoisers.gmm import GMM, GMMDenoiser
from msdfast.samplers.ddim import ddim_invert, ddim_sample
from msdfast.samplers.edm import edm_sample
from msdfast.samplers.guidance import Guidance, guided_step
from msdfast.samplers.product import solver_options, stable_product


def _mixture() -> GMMDenoiser:
    return GMMDenoiser(GMM(torch.tensor([0.3, 0.7]), torch.tensor([[-0.6, 0.0], [0.6, 0.0]]),
                           0.01 * torch.eye(2).repeat(2, 1, 1)))


def _guidance(scale: float = 3.0) -> Guidance:
    den = _mixture()
    return Guidance(den, torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long), scale)


def _z(seed: int = 0) -> torch.Tensor:
    return torch.randn(8, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def count_ddim_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = ops._check_ddim_step

    def counted(*args: object) -> None:
        calls[0] += 1
        real(*args)

    monkeypatch.setattr(ops, "_check_ddim_step", counted)
    return calls


@pytest.mark.parametrize("steps", [3, 9])
def test_ddim_loop_checks_once_and_matches_the_checked_path(count_ddim_checks: list[int], steps: int) -> None:
    g = _guidance()
    out = ddim_sample(g, _z(), steps)
    assert count_ddim_checks[0] == 1   # once per loop, whatever the number of steps
    # the checked path: the same steps, every call validated
    z = _z()
    for t, tn in g.schedule.sampling_pairs(steps, "trailing"):
        z = guided_step(g, z, t, tn, tag="sample")
    assert count_ddim_checks[0] == 1 + steps
    assert torch.equal(out, z)


def test_each_argument_pattern_is_checked_once(count_ddim_checks: list[int]) -> None:
    """EDM Heun calls the step with eps_u (the CFG prediction) and without (the Heun mean): two patterns, each
    checked once; the stable solver checks its inversion loop and its own loop (with and without a centre)."""
    edm_sample(_guidance(), _z() * 5, 6)
    assert count_ddim_checks[0] == 2
    count_ddim_checks[0] = 0
    g = _guidance()
    opts = solver_options("stable", steps=6, chains=2, kernel_interval=(0, 500))
    stable_product(g, _z(), 0.3, opts, generator=torch.Generator().manual_seed(0))
    # inversion loop (no CFG: one pattern) + the chains' loop: with and without a centre
    assert count_ddim_checks[0] == 3


class _WrongShape(Denoiser):
    """Returns eps of the wrong shape: the fused step must name eps_c at the loop's first step."""

    def __init__(self) -> None:
        super().__init__(_mixture().schedule)

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: object) -> torch.Tensor:
        return torch.zeros(z.shape[0], 3, dtype=z.dtype)


def test_bad_input_raises_the_checked_error_at_loop_entry(count_ddim_checks: list[int]) -> None:
    g = Guidance(_WrongShape())
    with pytest.raises(ValueError) as direct:
        guided_step(g, _z(), 999, 900)
    with pytest.raises(ValueError) as looped:
        ddim_sample(g, _z(), 5)
    assert str(looped.value) == str(direct.value) and str(direct.value).startswith("eps_c: shape")
    assert count_ddim_checks[0] == 2   # each failed at its first check; the loop did not go on
    with pytest.raises(ValueError, match="eps_c: shape"):
        ddim_invert(g, _z(), 5, 500)


def test_outside_a_loop_every_call_is_checked_and_blocks_nest(count_ddim_checks: list[int]) -> None:
    z = torch.randn(2, 4, 8, 8)
    coef = ops.step_coefficients(2, 0.9, 0.4, 0.95, 0.3)
    for _ in range(3):
        ops.ddim_step(z, z, coef)
    assert count_ddim_checks[0] == 3
    with ops.checks_once():
        ops.ddim_step(z, z, coef)
        with ops.checks_once():            # an inner loop validates its own first call
            ops.ddim_step(z, z, coef)
            ops.ddim_step(z, z, coef)
        ops.ddim_step(z, z, coef)          # back in the outer block: still validated there
        ops.ddim_step(z, z, coef, eps_u=z)   # a new pattern: checked
    assert count_ddim_checks[0] == 3 + 3
    ops.ddim_step(z, z, coef)
    assert count_ddim_checks[0] == 7


def test_a_block_marks_only_its_own_thread(count_ddim_checks: list[int]) -> None:
    z = torch.randn(2, 4, 8, 8)
    coef = ops.step_coefficients(2, 0.9, 0.4, 0.95, 0.3)
    with ops.checks_once():
        ops.ddim_step(z, z, coef)
        t = threading.Thread(target=lambda: [ops.ddim_step(z, z, coef) for _ in range(2)])
        t.start()
        t.join()
    assert count_ddim_checks[0] == 3


def test_every_latent_op_uses_the_block() -> None:
    """The four latent ops skip their checks after the first call in a block: bad arguments raise outside a
    block and on a block's first call, and the trusted calls return what the checked ones do."""
    x, e = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    a = torch.rand(2, 2)
    gc = ops.grad_coefficients(2, 0.5, guidance_scale=3.0)
    checked = (ops.noise_to_levels(x, e, a, a), ops.distill_grad(x, e, gc, x=x)[0],
               ops.chain_mean_shift(torch.cat([x, e]), x))
    with ops.checks_once():
        for _ in range(2):
            trusted = (ops.noise_to_levels(x, e, a, a), ops.distill_grad(x, e, gc, x=x)[0],
                       ops.chain_mean_shift(torch.cat([x, e]), x))
            assert all(torch.equal(p, q) for p, q in zip(checked, trusted))
    with ops.checks_once(), pytest.raises(ValueError, match="y: shape"):
        ops.chain_mean_shift(torch.randn(3, 4, 8, 8), x)
    with ops.checks_once(), pytest.raises(ValueError, match="sigmas"):
        ops.noise_to_levels(x, e, a, a[:, :1])
    with ops.checks_once(), pytest.raises(ValueError, match="eps_target"):
        ops.distill_grad(x, e[:1], gc)
