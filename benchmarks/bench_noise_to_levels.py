"""noise_to_levels (DSD's x_hat(t), x_hat(t + delta) from one eps: L = 2 levels) vs the eager reference and the
clone bound (reads x, eps; writes 2 levels = 4 tensors)."""
from __future__ import annotations

import pytest
import torch
from bench_utils import device_params
from kernel_bench import IMPLS, SHAPES, bench_op

from msdfast import ops

LEVELS = 2


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", device_params())
def test_noise_to_levels(record_env, device, shape, impl):
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)
    a, s = torch.rand(shape[0], LEVELS, generator=g).to(device), torch.rand(shape[0], LEVELS, generator=g).to(device)
    out = bench_op(record_env, "noise_to_levels", device, shape, impl, (2 + LEVELS) * x.numel() * x.element_size(),
                   lambda b: ops.noise_to_levels(x, eps, a, s, backend=b),
                   lambda: torch.ops.msdfast.noise_to_levels(x, eps, a, s))
    if impl != "clone":
        torch.testing.assert_close(out, ops.noise_to_levels(x, eps, a, s, backend="reference"), rtol=1e-5, atol=1e-5)
