"""gmm_score (2D Gaussian-mixture score + log-density, streaming log-sum-exp over K components) vs the eager
reference, which materialises ~15 [M, K] tensors. Compute-bound: no clone bound. float64 is the tree toy's
setting (thin components); float32 for comparison."""
from __future__ import annotations

import pytest
import torch
from bench_utils import device_params, sync

from msdfast import ops
from msdfast.ops import _dispatch

SIZES = [(10_000, 64), (100_000, 64)]


@pytest.mark.parametrize("impl", ["reference", "compiled"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"M{s[0]}-K{s[1]}")
@pytest.mark.parametrize("device", device_params())
def test_gmm_score(record_env, device, size, dtype, impl):
    benchmark = record_env
    M, K = size
    benchmark.group = f"gmm_score-{device}-M{M}-K{K}-{str(dtype)[6:]}"
    benchmark.extra_info.update(op="gmm_score", impl=impl, device=device, shape=[M, K], dtype=str(dtype)[6:])
    if impl not in _dispatch.available("gmm_score", device):
        pytest.skip(f"{impl} backend unavailable on {device}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, 2, generator=g, dtype=dtype).to(device)
    w = torch.rand(K, generator=g, dtype=dtype).to(device)
    mu = torch.randn(K, 2, generator=g, dtype=dtype).to(device)
    A = torch.randn(K, 2, 2, generator=g, dtype=dtype) * 0.1
    cov = (A @ A.transpose(1, 2) + 1e-4 * torch.eye(2, dtype=dtype)).to(device)
    s = (torch.rand(M, generator=g, dtype=dtype) * 0.5).to(device)

    def fn():
        out = ops.gmm_score(x, w, mu, cov, s, backend=impl)
        sync(device)
        return out

    score, logp = benchmark(fn)
    ref = ops.gmm_score(x, w, mu, cov, s, backend="reference")
    torch.testing.assert_close(logp, ref[1], rtol=1e-4, atol=1e-4)
