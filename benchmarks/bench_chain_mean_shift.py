"""chain_mean_shift (MSD's g = x - mean of N = 4 chains) vs the eager reference and the copy bound.
Run: pytest benchmarks/bench_chain_mean_shift.py --benchmark-only"""
from __future__ import annotations

import pytest
import torch
from kernel_bench import DEVICE, SHAPES, backends, run

N_CHAINS = 4


@pytest.mark.parametrize("backend", backends("chain_mean_shift"))
@pytest.mark.parametrize("size", list(SHAPES))
def test_chain_mean_shift(benchmark, size, backend):
    shape = SHAPES[size]
    x = torch.randn(shape, device=DEVICE)
    y = torch.randn((N_CHAINS * shape[0],) + shape[1:], device=DEVICE)
    nbytes = (N_CHAINS + 2) * x.numel() * x.element_size()  # reads y (N chains) and x; writes g
    run(benchmark, "chain_mean_shift", backend, (y, x, N_CHAINS), size=size, shape=shape, nbytes=nbytes)
