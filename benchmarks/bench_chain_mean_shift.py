"""chain_mean_shift (MSD's g = x - mean of N = 4 chains) vs the eager reference and the clone bound
(reads 4 chains + x, writes g = 6 tensors)."""
from __future__ import annotations

import pytest
import torch
from bench_utils import device_params
from kernel_bench import IMPLS, SHAPES, bench_op

from msdfast import ops

N_CHAINS = 4


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", device_params())
def test_chain_mean_shift(record_env, device, shape, impl):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device)
    y = torch.randn((N_CHAINS * shape[0],) + shape[1:], generator=g).to(device)
    out = bench_op(record_env, "chain_mean_shift", device, shape, impl, (N_CHAINS + 2) * x.numel() * x.element_size(),
                   lambda b: ops.chain_mean_shift(y, x, backend=b),
                   lambda: torch.ops.msdfast.chain_mean_shift(y, x, N_CHAINS))
    if impl != "clone":
        torch.testing.assert_close(out, ops.chain_mean_shift(y, x, backend="reference"), rtol=1e-5, atol=1e-5)
