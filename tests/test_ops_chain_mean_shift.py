"""msdfast.ops.chain_mean_shift (MSD's g = x - mean_i y_i): backends vs reference, oracle, opcheck, errors."""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from kernel_helpers import DEVICES, FAST, TOL, need, noncontiguous as noncontig, opcheck

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,n", [((3, 5, 7), 4), ((1, 4, 9, 11), 1), ((2, 3), 7)])
def test_matches_reference(device, backend, dtype, shape, n):
    need("chain_mean_shift", backend, device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    y = torch.randn((n * shape[0],) + shape[1:], generator=g).to(device=device, dtype=dtype)
    out = O.chain_mean_shift(y, x, backend=backend)
    torch.testing.assert_close(out, O.chain_mean_shift(y, x, backend="reference"), **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_oracle_chain_major_layout(device, backend):
    """y[i*B + b] = x[b] + (i + 1) c[b]  =>  g = x - mean_i y_i = -c (N + 1) / 2: checks layout and sign."""
    need("chain_mean_shift", backend, device)
    B, N = 3, 5
    x = torch.randn(B, 4, 6, dtype=torch.float64, device=device)
    c = torch.randn(B, 1, 1, dtype=torch.float64, device=device)
    y = torch.cat([x + (i + 1) * c for i in range(N)])
    out = O.chain_mean_shift(y, x, backend=backend)
    torch.testing.assert_close(out, (-c * (N + 1) / 2).expand_as(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_noncontiguous(device, backend):
    need("chain_mean_shift", backend, device)
    x = torch.randn(2, 3, 8, device=device)
    y = torch.randn(6, 3, 8, device=device)
    out = O.chain_mean_shift(noncontig(y), noncontig(x), backend=backend)
    torch.testing.assert_close(out, O.chain_mean_shift(y, x, backend="reference"), **TOL[torch.float32])
    if backend == "compiled":
        torch.testing.assert_close(torch.ops.msdfast.chain_mean_shift(noncontig(y), noncontig(x), 3), out)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    need("chain_mean_shift", backend, "cpu")
    opcheck("chain_mean_shift", backend, (torch.randn(8, 3, 5), torch.randn(2, 3, 5), 4))


def test_errors_name_the_argument():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="y: shape"):
        O.chain_mean_shift(torch.randn(5, 3), x)
    with pytest.raises(TypeError, match="y: dtype"):
        O.chain_mean_shift(torch.randn(4, 3, dtype=torch.float64), x)
    if "compiled" in O._dispatch.available("chain_mean_shift", "cpu"):
        with pytest.raises(RuntimeError, match="n_chains"):
            torch.ops.msdfast.chain_mean_shift(torch.randn(4, 3), x, 0)
        with pytest.raises(RuntimeError, match="y: shape"):
            torch.ops.msdfast.chain_mean_shift(torch.randn(4, 3), x, 3)
