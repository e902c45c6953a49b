"""msdfast.ops.noise_to_levels (SDS noising, DSD's x_hat(t), x_hat(t + delta) from one eps, DSD eq. 9-10):
backends vs reference, a hand-written oracle of the level-major layout, opcheck, errors."""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from kernel_helpers import DEVICES, FAST, TOL, need, noncontiguous as noncontig, opcheck

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(shape, L, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    eps = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    a = torch.rand(shape[0], L, generator=g).to(device)
    s = torch.rand(shape[0], L, generator=g).to(device)
    return x, eps, a, s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,L", [((3, 5, 7), 2), ((1, 4, 9, 11), 1), ((2, 3), 5)])
def test_matches_reference(device, backend, dtype, shape, L):
    need("noise_to_levels", backend, device)
    x, eps, a, s = _inputs(shape, L, dtype, device)
    out = O.noise_to_levels(x, eps, a, s, backend=backend)
    torch.testing.assert_close(out, O.noise_to_levels(x, eps, a, s, backend="reference"), **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_oracle_level_major(device, backend):
    need("noise_to_levels", backend, device)
    B, L = 3, 2
    x, eps, a, s = _inputs((B, 4, 5), L, torch.float64, device, seed=1)
    out = O.noise_to_levels(x, eps, a, s, backend=backend)
    assert out.shape == (L * B, 4, 5)
    for lvl in range(L):
        for b in range(B):
            expect = a[b, lvl].item() * x[b] + s[b, lvl].item() * eps[b]
            torch.testing.assert_close(out[lvl * B + b], expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_broadcast_row_and_noncontiguous(device, backend):
    need("noise_to_levels", backend, device)
    x, eps, a, s = _inputs((3, 4, 6), 2, torch.float32, device, seed=2)
    a1, s1 = a[:1], s[:1]  # one row for the whole batch
    out = O.noise_to_levels(noncontig(x), noncontig(eps), a1, s1, backend=backend)
    torch.testing.assert_close(out, O.noise_to_levels(x, eps, a1, s1, backend="reference"), **TOL[torch.float32])


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    need("noise_to_levels", backend, "cpu")
    x, eps, a, s = _inputs((2, 3, 5), 2, torch.float32, "cpu")
    opcheck("noise_to_levels", backend, (x, eps, a, s))


def test_errors_name_the_argument():
    x, eps, a, s = _inputs((2, 3), 2, torch.float32, "cpu")
    with pytest.raises(ValueError, match="eps"):
        O.noise_to_levels(x, eps[:1], a, s)
    with pytest.raises(ValueError, match="alphas"):
        O.noise_to_levels(x, eps, a[0], s)
    with pytest.raises(ValueError, match="sigmas"):
        O.noise_to_levels(x, eps, a, s[:, :1])
    if "compiled" in O._dispatch.available("noise_to_levels", "cpu"):
        with pytest.raises(RuntimeError, match="alphas: expected float32"):
            torch.ops.msdfast.noise_to_levels(x, eps, a.double(), s)
