"""distill_grad (CFG + PSR + weight + nan_to_num + clip + loss-trick target + grad norm, one pass) vs the
eager reference chain and the copy bound. Run: pytest benchmarks/bench_distill_grad.py --benchmark-only"""
from __future__ import annotations

import pytest
import torch
from kernel_bench import DEVICE, SHAPES, backends, run

import msdfast.ops as O


@pytest.mark.parametrize("backend", backends("distill_grad"))
@pytest.mark.parametrize("size", list(SHAPES))
def test_distill_grad(benchmark, size, backend):
    shape = SHAPES[size]
    ec, et, eu, x = (torch.randn(shape, device=DEVICE) for _ in range(4))
    coef = O.grad_coefficients(shape[0], torch.rand(shape[0]), guidance_scale=7.5, psr=0.95, device=DEVICE)
    nbytes = 6 * ec.numel() * ec.element_size()  # reads eps_c, eps_target, eps_u, x; writes g, target
    run(benchmark, "distill_grad", backend, (ec, et, eu, coef, x, 1.0), size=size, shape=shape, nbytes=nbytes)
