"""noise_to_levels (DSD's x_hat(t), x_hat(t + delta) from one eps: L = 2 levels) vs the eager reference and
the copy bound. Run: pytest benchmarks/bench_noise_to_levels.py --benchmark-only"""
from __future__ import annotations

import pytest
import torch
from kernel_bench import DEVICE, SHAPES, backends, run

LEVELS = 2


@pytest.mark.parametrize("backend", backends("noise_to_levels"))
@pytest.mark.parametrize("size", list(SHAPES))
def test_noise_to_levels(benchmark, size, backend):
    shape = SHAPES[size]
    x, eps = torch.randn(shape, device=DEVICE), torch.randn(shape, device=DEVICE)
    a, s = torch.rand(shape[0], LEVELS, device=DEVICE), torch.rand(shape[0], LEVELS, device=DEVICE)
    nbytes = (2 + LEVELS) * x.numel() * x.element_size()  # reads x, eps; writes L levels
    run(benchmark, "noise_to_levels", backend, (x, eps, a, s), size=size, shape=shape, nbytes=nbytes)
