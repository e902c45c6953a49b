"""distill_grad (CFG + PSR + weight + nan_to_num + clip + loss-trick target + grad norm in one pass) vs the eager
reference chain and the clone bound (reads eps_c, eps_target, eps_u, x; writes g, target = 6 tensors)."""
from __future__ import annotations

import pytest
import torch
from bench_utils import device_params
from kernel_bench import IMPLS, SHAPES, bench_op

from msdfast import ops


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", device_params())
def test_distill_grad(record_env, device, shape, impl):
    g = torch.Generator().manual_seed(0)
    ec, et, eu, x = (torch.randn(shape, generator=g).to(device) for _ in range(4))
    coef = ops.grad_coefficients(shape[0], torch.rand(shape[0], generator=g), guidance_scale=7.5, psr=0.95,
                                 device=device)
    out = bench_op(record_env, "distill_grad", device, shape, impl, 6 * ec.numel() * ec.element_size(),
                   lambda b: ops.distill_grad(ec, et, coef, eps_u=eu, x=x, clip=1.0, backend=b),
                   lambda: torch.ops.msdfast.distill_grad(ec, et, eu, coef, x, 1.0))
    if impl != "clone":  # the timed result is also checked
        ref = ops.distill_grad(ec, et, coef, eps_u=eu, x=x, clip=1.0, backend="reference")
        torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)
