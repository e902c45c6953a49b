"""No host sync between two denoiser calls (issue 15 item 3): count device-to-host conversions per step.

On a GPU every read of a tensor value into Python waits for the device; tests/host_syncs.py counts those reads
on the CPU. Value checks are off here (`set_value_checks("never")`, what "auto" does for accelerator tensors):
what must be zero is everything else -- schedule lookups, coefficient tables, guidance weights, the fused step.
"""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from msdfast.ops import checks
from msdfast.samplers.guidance import Guidance, guided_step

from host_syncs import count_conversions


@pytest.fixture
def no_value_checks():  # noqa: ANN201
    old = checks.set_value_checks("never")
    yield
    checks.set_value_checks(old)


@pytest.fixture(scope="module")
def guidance(den):  # noqa: ANN001, ANN201
    cond, uncond = den.encode_prompts(["a cat"]), den.encode_prompts([""])
    return Guidance(den, cond, uncond, 7.5, interval=(100, 800), psr_k=0.7)


def test_counter_sees_the_reads_it_must_catch():
    t = torch.tensor([1.0, 2.0])
    with count_conversions() as log:
        if torch.any(t > 1):
            pass
        t.sum().item()
        float(t[0])
        t.tolist()
    assert len(log) == 4, log


@pytest.mark.parametrize("timesteps", ["python", "per-sample"])
def test_guided_ddim_step_reads_no_device_value(den, guidance, no_value_checks, timesteps):
    """A CFG + interval + PSR + eta step with the tiny SD UNet: 0 conversions from the 2nd step on (the 1st
    builds the cached coefficient rows of a python grid on the host)."""
    z = torch.randn(2, 4, 8, 8)
    grid = [(900, 800), (800, 700), (700, 600)]
    if timesteps == "per-sample":
        grid = [(torch.tensor([t, t - 50]), torch.tensor([tn, tn - 50])) for t, tn in grid]
    counts = []
    for t, tn in grid:
        with count_conversions() as log:
            z = guided_step(guidance, z, t, tn, eta=0.5, noise=torch.randn_like(z))
        counts.append(log)
    assert counts[1] == [] and counts[2] == [], counts[1:]


def test_ops_read_no_value_of_tensor_arguments(no_value_checks):
    x = torch.randn(6, 2)
    s = torch.full((6,), 0.3)
    with count_conversions() as log:
        O.step_coefficients(6, torch.rand(6) + 0.1, torch.rand(6), 0.9, 0.3, guidance_scale=torch.rand(6))
        O.empirical_denoiser(x, torch.randn(10, 2), s)
        O.empirical_score(x, torch.randn(10, 2), s)
        O.gmm_score(x, torch.rand(3), torch.randn(3, 2), torch.eye(2).expand(3, 2, 2), s)
        O.distill_grad(x, x, O.grad_coefficients(6, torch.rand(6)), clip=0.5)
    assert log == [], log


def test_value_checks_run_on_cpu_tensors_and_in_debug_mode_only():
    bad = torch.tensor([0.5, -1.0])
    with pytest.raises(ValueError, match="s: noise level"):
        O.empirical_denoiser(torch.randn(2, 2), torch.randn(3, 2), bad)            # auto: CPU tensors checked
    meta = torch.empty(2, device="meta")                                          # stands in for a GPU tensor
    assert checks.value_checks() == "auto" and checks.wanted(bad) and not checks.wanted(meta)
    old = checks.set_value_checks("always")
    try:
        assert checks.wanted(meta)
    finally:
        checks.set_value_checks(old)
    old = checks.set_value_checks("never")
    try:
        assert not checks.wanted(bad)
        with pytest.raises(ValueError, match="s: noise level"):                    # python numbers: always checked
            O.empirical_denoiser(torch.randn(2, 2), torch.randn(3, 2), -1.0)
    finally:
        checks.set_value_checks(old)
    with pytest.raises(ValueError, match="mode"):
        checks.set_value_checks("sometimes")
