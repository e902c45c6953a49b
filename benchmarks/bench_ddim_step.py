"""The fused sampling step (compiled) vs the eager reference chain (~8 temporaries), with a memory-bandwidth bound:
a torch.clone moving the same number of bytes (read z, eps_c, eps_u, center; write z_out = 5 tensors)."""
from __future__ import annotations

import pytest
import torch
from bench_utils import device_params, sync

from msdfast import ops
from msdfast.ops import _dispatch
from msdfast.schedule import VPSchedule, psr_factor

SHAPES = [(2, 4, 64, 64), (16, 4, 128, 128)]
# reference: the eager chain; compiled: the public msdfast.ops.ddim_step (argument checks + dispatch + kernel);
# compiled-raw: torch.ops.msdfast.ddim_step alone (what torch.compile'd code calls); clone: the bandwidth bound.
IMPLS = ["reference", "compiled", "compiled-raw", "clone"]
SCH = VPSchedule.stable_diffusion()


def _inputs(shape, device):
    g = torch.Generator().manual_seed(0)
    z, eps_c, eps_u, center = (torch.randn(shape, generator=g).to(device) for _ in range(4))
    B = shape[0]
    t = torch.linspace(981, 21, B).round().long()
    coef = ops.step_coefficients(B, SCH.alpha(t), SCH.sigma(t), SCH.alpha(t - 20), SCH.sigma(t - 20),
                                 guidance_scale=7.5, psr=psr_factor(SCH.snr(t), 0.9), decay=0.97, device=device)
    return z, eps_c, eps_u, center, coef


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device", device_params())
def test_ddim_step(record_env, device, shape, impl):
    benchmark = record_env
    benchmark.group = f"ddim_step-{device}-{'x'.join(map(str, shape))}-fp32"
    z, eps_c, eps_u, center, coef = _inputs(shape, device)
    nbytes = 5 * z.numel() * z.element_size()
    benchmark.extra_info.update(op="ddim_step", impl=impl, device=device, shape=list(shape), dtype="float32",
                                bytes=nbytes)
    if impl == "clone":
        src = torch.randn(nbytes // 2 // z.element_size(), device=device)  # read + write = nbytes

        def fn():
            out = torch.clone(src)
            sync(device)
            return out
    else:
        backend = impl.removesuffix("-raw")
        if backend not in _dispatch.available("ddim_step", device):
            pytest.skip(f"{backend} backend unavailable on {device}")

        def fn():
            out = ops.ddim_step(z, eps_c, coef, eps_u=eps_u, center=center, backend=impl)
            sync(device)
            return out

        def fn_raw():
            out = torch.ops.msdfast.ddim_step(z, eps_c, eps_u, coef, center, None, False)[0]
            sync(device)
            return out

        if impl == "compiled-raw":
            fn = fn_raw  # noqa: F811

    out = benchmark(fn)
    if impl != "clone":  # the timed result is also checked
        ref = ops.ddim_step(z, eps_c, coef, eps_u=eps_u, center=center, backend="reference")
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
