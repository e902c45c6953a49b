"""msdfast.ops.empirical_denoiser (MSD paper eq. 16, streaming online softmax): backends vs a float64
reference, limits that any correct implementation must satisfy, opcheck, errors."""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from kernel_helpers import DEVICES, FAST, need, noncontiguous as noncontig, opcheck


def _inputs(M, N, d, dtype, device, seed=0, s_range=(0.02, 0.5)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, d, generator=g).to(device=device, dtype=dtype)
    data = torch.randn(N, d, generator=g).to(device=device, dtype=dtype)
    s = (torch.rand(M, generator=g) * (s_range[1] - s_range[0]) + s_range[0]).to(device)
    return x, data, s


def _ref64(x, data, s):
    return O.empirical_denoiser(x.double(), data.double(), s, backend="reference")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M,N,d", [(37, 1300, 2), (5, 700, 3), (19, 129, 5), (1, 1, 2), (3, 2, 1)])
def test_matches_float64_reference(device, backend, dtype, M, N, d):
    need("empirical_denoiser", backend, device)
    if backend == "triton" and device == "cpu":
        N = min(N, 300)  # the interpreter runs ~1 ms per program and tile
    x, data, s = _inputs(M, N, d, dtype, device)
    out = O.empirical_denoiser(x, data, s, backend=backend)
    assert out.dtype == dtype and out.shape == x.shape
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(out, _ref64(x, data, s).to(dtype), **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(device, backend, dtype):
    need("empirical_denoiser", backend, device)
    x, data, s = _inputs(9, 200, 2, dtype, device, seed=1)
    out = O.empirical_denoiser(x, data, s, backend=backend)
    ref = O.empirical_denoiser(x.float(), data.float(), s, backend="reference").to(dtype)  # same rounded inputs
    torch.testing.assert_close(out, ref, rtol=1.6e-2, atol=1.6e-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_limits(device, backend):
    """Tiny s: the nearest data point (exact, however far the query: log-sum-exp stability).
    Huge s: the data mean. Queries far from the data must not produce NaN."""
    need("empirical_denoiser", backend, device)
    x, data, _ = _inputs(16, 250, 2, torch.float32, device, seed=2)
    x = x * 50  # far queries: -|x-u|^2 / 2 s^2 ~ -1e9, exp underflows without max subtraction
    near = data[torch.cdist(x, data).argmin(1)]
    out = O.empirical_denoiser(x, data, 1e-3, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, near, rtol=0, atol=1e-5)
    wide = O.empirical_denoiser(x / 50, data, 1e4, backend=backend)
    torch.testing.assert_close(wide, data.mean(0).expand_as(wide), rtol=0, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_noncontiguous_and_scalar_s(device, backend):
    need("empirical_denoiser", backend, device)
    x, data, _ = _inputs(11, 150, 2, torch.float32, device, seed=3)
    out = O.empirical_denoiser(noncontig(x), noncontig(data), 0.3, backend=backend)
    torch.testing.assert_close(out, _ref64(x, data, torch.full((11,), 0.3)).float(), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
def test_score_is_tweedie(device, backend):
    need("empirical_denoiser", backend, device)
    x, data, s = _inputs(7, 64, 2, torch.float64, device, seed=4)
    sc = O.empirical_score(x, data, s, backend=backend)
    d = O.empirical_denoiser(x, data, s, backend="reference")
    torch.testing.assert_close(sc, (d - x) / s.double()[:, None] ** 2)


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    need("empirical_denoiser", backend, "cpu")
    x, data, s = _inputs(6, 40, 2, torch.float32, "cpu")
    opcheck("empirical_denoiser", backend, (x, data, s))


def test_errors_name_the_argument():
    x, data, s = _inputs(4, 10, 2, torch.float32, "cpu")
    with pytest.raises(ValueError, match="data"):
        O.empirical_denoiser(x, data[:, :1], s)
    with pytest.raises(ValueError, match="s"):
        O.empirical_denoiser(x, data, torch.zeros(4))
    with pytest.raises(ValueError, match="s"):
        O.empirical_denoiser(x, data, torch.ones(3))
    if "compiled" in O._dispatch.available("empirical_denoiser", "cpu"):
        with pytest.raises(RuntimeError, match="s: expected float32"):
            torch.ops.msdfast.empirical_denoiser(x, data, s.double())
        with pytest.raises(RuntimeError, match="data: dtype"):
            torch.ops.msdfast.empirical_denoiser(x, data.double(), s)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ("reference",) + FAST)
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("s", [1e-20, 1e-30])
def test_vanishing_noise_level_gives_the_nearest_point(device, backend, d, dtype, s):
    """Once 1 / 2s^2 overflows (s < ~1.2e-19 in float32) every logit is -inf: the defined limit is the nearest
    data point (equally near ones averaged), on every backend, never NaN (review of 176313d: the reference and
    the CUDA d != 2 kernel returned NaN)."""
    need("empirical_denoiser", backend, device)
    x, data, _ = _inputs(9, 40, d, dtype, device, seed=4)
    data = torch.cat([data, data[:1]])          # a duplicated point: ties average (to the same point)
    x[0] = data[0]                              # a query exactly on a data point (d2 = 0: 0 * inf)
    near = data[torch.cdist(x.double(), data.double()).argmin(1)]
    out = O.empirical_denoiser(x, data, torch.full((9,), s, device=device), backend=backend)
    torch.testing.assert_close(out, near, rtol=0, atol=0)
