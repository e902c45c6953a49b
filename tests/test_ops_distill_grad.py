"""msdfast.ops.distill_grad: every backend against the reference, an independent oracle, opcheck, errors."""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from msdfast.ops import reference
from kernel_helpers import DEVICES, FAST, TOL, need, noncontiguous as noncontig, opcheck

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ec, et, eu, x = (torch.randn(shape, generator=g).to(device=device, dtype=dtype) for _ in range(4))
    B = shape[0]
    coef = O.grad_coefficients(B, torch.rand(B, generator=g) + 0.5, guidance_scale=torch.rand(B, generator=g) * 7.5,
                               psr=torch.rand(B, generator=g) + 0.5, device=device)
    return ec, et, eu, x, coef


def _close(out, ref, dtype):
    g, tgt, norm = out
    rg, rtgt, rnorm = ref
    torch.testing.assert_close(g, rg, **TOL[dtype])
    if rtgt is None:
        assert tgt is None
    else:
        tol = dict(TOL[dtype])
        if dtype == torch.bfloat16:
            # target = x - g uses g rounded to bf16; the Triton interpreter rounds toward zero (numpy has no
            # bf16), so g may sit one bf16 ulp of |g| away and x - g inherits that absolute difference
            tol["atol"] = max(tol["atol"], 2**-7 * rg.abs().max().item())
        torch.testing.assert_close(tgt, rtgt, **tol)
    # the norm is float32 for every dtype; bf16 g differs by up to one ulp under the interpreter
    torch.testing.assert_close(norm, rnorm, rtol=1e-2 if dtype == torch.bfloat16 else 2e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 7, 3), (1, 4, 9, 11), (5, 1)])
def test_matches_reference(device, backend, dtype, shape):
    need("distill_grad", backend, device)
    ec, et, eu, x, coef = _inputs(shape, dtype, device)
    for u, xx, clip in [(None, None, None), (eu, x, None), (eu, None, 0.3), (None, x, 0.05)]:
        out = O.distill_grad(ec, et, coef, eps_u=u, x=xx, clip=clip, backend=backend)
        ref = O.distill_grad(ec, et, coef, eps_u=u, x=xx, clip=clip, backend="reference")
        _close(out, ref, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_nan_inf_clip_and_broadcast_coef(device, backend):
    need("distill_grad", backend, device)
    ec, et, eu, x, _ = _inputs((2, 3, 4, 4), torch.float16, device, seed=1)
    ec[0, 0, 0, 0] = float("nan")
    et[1, 2, 3, 3] = float("inf")
    ec[1, 0, 1, 1] = 60000.0  # weight * psr * CFG overflows float16: nan_to_num maps it to the max
    coef = O.grad_coefficients(1, 2.0, guidance_scale=3.0, psr=1.0, device=device)  # [1, 3] broadcasts
    for clip in (None, 0.7):
        out = O.distill_grad(ec, et, coef, eps_u=eu, x=x, clip=clip, backend=backend)
        ref = O.distill_grad(ec, et, coef, eps_u=eu, x=x, clip=clip, backend="reference")
        _close(out, ref, torch.float16)
        assert torch.isfinite(out[0]).all()
        if clip is not None:
            assert out[0].abs().max() <= 0.7 + 1e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_oracle(device, backend):
    """Hand-written formula, independent of reference.py: catches sign and factor errors everywhere."""
    need("distill_grad", backend, device)
    ec, et, eu, x, _ = _inputs((2, 6, 5), torch.float64, device, seed=2)
    w, r, weight = torch.tensor([7.5, 2.0]), torch.tensor([1.0, 0.8]), torch.tensor([0.25, 3.0])
    coef = O.grad_coefficients(2, weight, guidance_scale=w, psr=r, device=device)
    g, tgt, norm = O.distill_grad(ec, et, coef, eps_u=eu, x=x, backend=backend)
    expect = torch.stack([weight[b].item() * (r[b].item() * (eu[b] + w[b].item() * (ec[b] - eu[b])) - et[b])
                          for b in range(2)])
    torch.testing.assert_close(g, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tgt, x - expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(norm.double(), expect.pow(2).sum().sqrt(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_noncontiguous(device, backend):
    need("distill_grad", backend, device)
    ec, et, eu, x, coef = _inputs((2, 3, 5, 6), torch.float32, device, seed=3)
    out = O.distill_grad(noncontig(ec), noncontig(et), coef, eps_u=noncontig(eu), x=noncontig(x), clip=0.5,
                         backend=backend)
    _close(out, O.distill_grad(ec, et, coef, eps_u=eu, x=x, clip=0.5, backend="reference"), torch.float32)
    if backend == "compiled":  # the op itself (torch.ops.msdfast.*) also accepts strided inputs
        raw = torch.ops.msdfast.distill_grad(noncontig(ec), noncontig(et), noncontig(eu), coef, noncontig(x), 0.5)
        torch.testing.assert_close(raw[0], out[0])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("with_opt", [False, True])
def test_opcheck(backend, with_opt):
    need("distill_grad", backend, "cpu")
    ec, et, eu, x, coef = _inputs((2, 3, 4, 5), torch.float32, "cpu", seed=4)
    args = (ec, et, eu, coef, x, 0.5) if with_opt else (ec, et, None, coef, None, None)
    opcheck("distill_grad", backend, args)


def test_errors_name_the_argument():
    ec, et, eu, x, coef = _inputs((2, 3, 4), torch.float32, "cpu")
    with pytest.raises(ValueError, match="eps_target"):
        O.distill_grad(ec, et[:1], coef)
    with pytest.raises(TypeError, match="eps_u"):
        O.distill_grad(ec, et, coef, eps_u=eu.double())
    with pytest.raises(ValueError, match="coef"):
        O.distill_grad(ec, et, coef[:, :2])
    with pytest.raises(ValueError, match="clip"):
        O.distill_grad(ec, et, coef, clip=-1.0)
    if "compiled" in O._dispatch.available("distill_grad", "cpu"):  # the C++ op checks too
        with pytest.raises(RuntimeError, match="x: shape"):
            torch.ops.msdfast.distill_grad(ec, et, None, coef, x[:, :2], None)
        with pytest.raises(RuntimeError, match="coef"):
            torch.ops.msdfast.distill_grad(ec, et, None, coef.double(), None, None)


def test_reference_norm_is_float32_scalar():
    ec, et, _, _, coef = _inputs((2, 3), torch.float64, "cpu")
    _, tgt, norm = reference.distill_grad(ec, et, None, coef, None, None)
    assert norm.dtype == torch.float32 and norm.ndim == 0 and tgt.numel() == 0


def test_reference_norm_accumulates_in_float64():
    """The reference defines "correct": ||g|| is the float64 sum of squares rounded once to float32."""
    g = torch.Generator().manual_seed(5)
    ec = (torch.rand(64, 4096, generator=g) * torch.logspace(-4, 2, 4096)).float()
    et = torch.zeros_like(ec)
    coef = O.grad_coefficients(64, 1.0)
    _, _, norm = reference.distill_grad(ec, et, None, coef, None, None)
    exact = ec.double().square().sum().sqrt().float()
    assert norm.item() == exact.item()


@pytest.mark.parametrize("backend", FAST)
def test_float64_clip_is_not_rounded_to_float32(backend):
    """clip = 0.3 clamps float64 values at 0.3, not at float32(0.3) = 0.30000001192... (the Triton kernel
    received clip as an fp32 scalar on a GPU; tests/test_triton_audit.py checks the kernel's parameter type)."""
    need("distill_grad", backend, "cpu")
    ec = torch.full((2, 8), 5.0, dtype=torch.float64)
    coef = O.grad_coefficients(2, 1.0)
    g, _, _ = O.distill_grad(ec, torch.zeros_like(ec), coef, clip=0.3, backend=backend)
    assert (g == 0.3).all()
