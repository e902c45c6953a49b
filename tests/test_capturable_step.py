"""A capturable solver loop (issue 15 item 3): one MSD / DSD / SDI solver iteration -- the tiny SD UNet call (CFG
pair in one batch, through the static input buffers) and the fused op that consumes it -- traces with
torch.compile(fullgraph=True): no graph break, hence no host sync, no Python value read from a device tensor.
The eager backend is enough to prove the trace (inductor would only add minutes of CPU codegen); results equal
the uncompiled iteration. On a GPU the same graph is what mode="reduce-overhead" captures (gpu_validate.sh).
"""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from msdfast.samplers.guidance import Guidance, coefficients, guided_eps, guided_step

pytestmark = pytest.mark.slow   # each trace walks the UNet's Python once (~10-30 s on 2 busy cores)


@pytest.fixture(scope="module")
def guidance(den):  # noqa: ANN001, ANN201
    c, u = den.encode_prompts(["a cat"]).expand(2, -1, -1), den.encode_prompts([""]).expand(2, -1, -1)
    return Guidance(den, c, u, 7.5, psr_k=0.7)


def _same_compiled(fn, *args):  # noqa: ANN001, ANN202
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager")   # raises on any graph break
    got, want = compiled(*args), fn(*args)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_msd_product_step_is_one_graph(guidance):  # noqa: ANN001
    """MSD's stable product solver step: guided DDIM step + the kernel pull to the centre (MSD paper eq. 15)."""
    z, center = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    _same_compiled(lambda z, c: guided_step(guidance, z, 900, 800, center=c, decay=0.8), z, center)


def test_dsd_step_is_one_graph(guidance, den):  # noqa: ANN001
    """DSD's step: both noise levels in one noise_to_levels, one UNet batch (t and t + delta), distill_grad."""
    sch = den.schedule

    def dsd(x, eps):  # noqa: ANN001, ANN202
        B = x.shape[0]
        t, td = torch.full((B,), 500), torch.full((B,), 520)
        tt = torch.stack([t, td], dim=1)
        zz = O.noise_to_levels(x, eps, sch.alpha(tt), sch.sigma(tt))
        pred = guidance.predict(zz[:B], t, extra=[(zz[B:], td, guidance.cond)])
        target = guided_eps(pred.extra[0], None, 1.0, guidance.psr(td))
        coef = coefficients(guidance, B, t, x.device, w=pred.w, r=pred.r, weight=sch.sigma(t) ** 2)
        return O.distill_grad(pred.eps_c, target, coef, eps_u=pred.eps_u, clip=1.0)

    _same_compiled(dsd, torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8))


def test_sdi_inversion_step_is_one_graph(guidance):  # noqa: ANN001
    """SDI's DDIM inversion step (t -> t_next > t) with CFG."""
    _same_compiled(lambda z: guided_step(guidance, z, 300, 400), torch.randn(2, 4, 8, 8))
