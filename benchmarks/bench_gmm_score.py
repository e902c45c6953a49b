"""gmm_score (2D Gaussian-mixture score + log-density, streaming log-sum-exp over components) vs the eager
reference (which materialises [M, K] tensors). Compute-bound, so no copy bound. float64 is the tree toy's
setting (thin components). Run: pytest benchmarks/bench_gmm_score.py --benchmark-only"""
from __future__ import annotations

import pytest
import torch
from kernel_bench import DEVICE, backends, run

SIZES = {"M1e4-K64": (10_000, 64), "M1e5-K64": (100_000, 64)}


@pytest.mark.parametrize("backend", backends("gmm_score", copy=False))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("size", list(SIZES))
def test_gmm_score(benchmark, size, dtype, backend):
    M, K = SIZES[size]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, 2, generator=g, dtype=dtype).to(DEVICE)
    w = torch.rand(K, generator=g, dtype=dtype).to(DEVICE)
    mu = torch.randn(K, 2, generator=g, dtype=dtype).to(DEVICE)
    A = torch.randn(K, 2, 2, generator=g, dtype=dtype) * 0.1
    cov = (A @ A.transpose(1, 2) + 1e-4 * torch.eye(2, dtype=dtype)).to(DEVICE)
    s = (torch.rand(M, generator=g, dtype=dtype) * 0.5).to(DEVICE)
    run(benchmark, "gmm_score", backend, (x, w, mu, cov, s), size=f"{size}-{str(dtype)[6:]}", shape=(M, K),
        nbytes=0, dtype=dtype)
