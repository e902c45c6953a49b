"""The CUDA kernels (csrc/cuda/*_kernel.cu), executed on the CPU by cuemu, against msdfast.ops.reference.

Same shapes, dtypes and tolerances as the GPU runs of tests/test_ops_<op>.py, plus conditions only a GPU
launch has: many blocks, grid-stride loops past the 65535 grid-y limit, block reductions with shuffles and
barriers, atomics. Every case also runs under CUEMU_SCHEDULE=reverse (threads between barriers in reverse
order: a missing __syncthreads changes the result). Skipped when cuemu (../shared/tools/cuemu), g++ or the CUDA
headers are absent. Build: once, into build/cuemu/ (tests/cuemu/cuemu_kernels.py; .ci/run builds it first).
"""
from __future__ import annotations

import shutil

import pytest
import torch

import msdfast.ops as O
from msdfast.ops import reference as R

import cuemu_kernels

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
TOL = {   # tests/ops_helpers.py TOL: one ulp of the output dtype + float32-level slack
    torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3), torch.bfloat16: dict(rtol=8e-3, atol=8e-3)}


@pytest.fixture(scope="module")
def kern() -> cuemu_kernels.Kernels:
    if cuemu_kernels.find_cuemu() is None or shutil.which("g++") is None:
        pytest.skip("cuemu (../shared/tools/cuemu) or g++ not available")
    try:
        return cuemu_kernels.load()
    except FileNotFoundError as exc:   # no cuemu, or no CUDA headers (cuda_runtime.h) to compile against
        pytest.skip(str(exc))


@pytest.fixture(params=["forward", "reverse"], autouse=True)
def schedule(request, monkeypatch) -> str:  # noqa: ANN001
    monkeypatch.setenv("CUEMU_SCHEDULE", request.param)
    return request.param


def _rand(shape, dtype, seed=0, scale=1.0):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _close(got, want, dtype, **kw):  # noqa: ANN001, ANN202
    torch.testing.assert_close(got, want, **{**TOL[dtype], **kw}, equal_nan=True)


# ------------------------------------------------------------------------------------------- ddim_step
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (3, 5, 7), (1, 1), (2, 70000)])   # 70000: grid-stride in x
@pytest.mark.parametrize("opts", ["plain", "all", "broadcast-coef"])
def test_ddim_step(kern, dtype, shape, opts):
    B = shape[0]
    z, ec, eu, c, n = (_rand(shape, dtype, seed=i) for i in range(5))
    rows = 1 if opts == "broadcast-coef" else B
    coef = O.step_coefficients(rows, torch.linspace(0.5, 0.9, rows), torch.linspace(0.8, 0.4, rows), 0.95, 0.3,
                               guidance_scale=torch.linspace(1.0, 7.5, rows), psr=0.9, eta=0.5, decay=0.8)
    args = (z, ec, eu, coef, c, n, True) if opts == "all" else (z, ec, None, coef, None, None, opts == "plain")
    got, want = kern.ddim_step(*args), R.ddim_step(*args)
    _close(got[0], want[0], dtype)
    _close(got[1], want[1], dtype)


def test_ddim_step_batch_beyond_the_grid_y_limit(kern):
    """70000 samples: the launcher clamps grid.y to 65535 and the kernel strides over the rest."""
    z, ec = _rand((70000, 3), torch.float32), _rand((70000, 3), torch.float32, seed=1)
    coef = O.step_coefficients(70000, torch.rand(70000) * 0.5 + 0.4, 0.5, 0.9, 0.3)
    before = kern.stats()["blocks"]
    got, _ = kern.ddim_step(z, ec, None, coef, None, None, False)
    assert kern.stats()["blocks"] - before == 65535
    _close(got, R.ddim_step(z, ec, None, coef, None, None, False)[0], torch.float32)


# ------------------------------------------------------------------------------------------- distill_grad
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (3, 5, 7), (1, 1), (4, 3, 100)])
@pytest.mark.parametrize("opts", ["plain", "u-x-clip", "broadcast-coef"])
def test_distill_grad(kern, dtype, shape, opts):
    B = shape[0]
    ec, et, eu, x = (_rand(shape, dtype, seed=i) for i in range(4))
    rows = 1 if opts == "broadcast-coef" else B
    coef = O.grad_coefficients(rows, torch.linspace(0.5, 2.0, rows), guidance_scale=7.5, psr=0.9)
    args = (ec, et, eu, coef, x, 0.3) if opts == "u-x-clip" else (ec, et, None, coef, None, None)
    (g, t, nrm), (wg, wt, wn) = kern.distill_grad(*args), R.distill_grad(*args)
    _close(g, wg, dtype)
    _close(t, wt, dtype)
    torch.testing.assert_close(nrm, wn, rtol=1e-5, atol=1e-6)   # float32 partials, float64 final sum


def test_distill_grad_nan_inf_and_many_blocks(kern):
    """nan_to_num before the clip, and a norm reduced over 2 x 80 blocks (shuffles, barriers, partials)."""
    ec = _rand((2, 80 * 256), torch.float32)
    ec[0, :5] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e38, -1e38])
    et = _rand((2, 80 * 256), torch.float32, seed=1)
    coef = O.grad_coefficients(2, torch.tensor([1.0, 3.0]))
    for clip in (None, 0.7):
        (g, _, nrm), (wg, _, wn) = kern.distill_grad(ec, et, None, coef, None, clip), \
            R.distill_grad(ec, et, None, coef, None, clip)
        _close(g, wg, torch.float32)
        torch.testing.assert_close(nrm, wn, rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------- chain_mean_shift
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n_chains,shape", [(1, (2, 3)), (4, (2, 4, 8, 8)), (3, (1, 70001))])
def test_chain_mean_shift(kern, dtype, n_chains, shape):
    x = _rand(shape, dtype)
    y = _rand((n_chains * shape[0],) + shape[1:], dtype, seed=1)
    _close(kern.chain_mean_shift(y, x, n_chains), R.chain_mean_shift(y, x, n_chains), dtype)


# ------------------------------------------------------------------------------------------- noise_to_levels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("L,shape", [(1, (2, 4, 8, 8)), (2, (3, 5, 7)), (3, (1, 1)), (2, (2, 600))])
def test_noise_to_levels(kern, dtype, L, shape):
    x, eps = _rand(shape, dtype), _rand(shape, dtype, seed=1)
    g = torch.Generator().manual_seed(2)
    a, s = torch.rand(shape[0], L, generator=g), torch.rand(shape[0], L, generator=g)
    _close(kern.noise_to_levels(x, eps, a, s), R.noise_to_levels(x, eps, a, s), dtype)


# ------------------------------------------------------------------------------------------- empirical_denoiser
def _emp_inputs(M, N, d, dtype, seed=0):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    x, data = torch.randn(M, d, generator=g).to(dtype), torch.randn(N, d, generator=g).to(dtype)
    return x, data, torch.rand(M, generator=g) * 0.48 + 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("M,N,d", [(37, 1300, 2), (5, 700, 3), (19, 129, 5), (1, 1, 2), (3, 2, 1), (300, 40, 2)])
def test_empirical_denoiser(kern, dtype, M, N, d):
    """As tests/test_ops_empirical_denoiser.py: vs the float64 reference (d = 2: shared-memory tiles of 512
    points, 1300 = 2 full tiles + a partial one; 300 queries = 3 blocks)."""
    x, data, s = _emp_inputs(M, N, d, dtype)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    want = R.empirical_denoiser(x.double(), data.double(), s).to(dtype)
    torch.testing.assert_close(kern.empirical_denoiser(x, data, s), want, **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("d", [2, 3])
def test_empirical_denoiser_half(kern, dtype, d):
    x, data, s = _emp_inputs(23, 300, d, dtype)
    _close(kern.empirical_denoiser(x, data, s), R.empirical_denoiser(x, data, s), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("s", [1e-3, 1e-20, 1e-30])
def test_empirical_denoiser_tiny_noise_is_the_nearest_point(kern, dtype, d, s):
    """The review's finding at 176313d: the d != 2 kernel returned NaN when the first point's logit was -inf."""
    x, data, _ = _emp_inputs(9, 40, d, dtype, seed=4)
    x = x * 50
    near = data[torch.cdist(x.double(), data.double()).argmin(1)]
    got = kern.empirical_denoiser(x, data, torch.full((9,), s))
    torch.testing.assert_close(got, near, rtol=0, atol=1e-5 if s == 1e-3 else 0)
    torch.testing.assert_close(got, R.empirical_denoiser(x, data, torch.full((9,), s)), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- gmm_score
def _mixture(K, dtype, seed=0, scale=0.3, jitter=1e-3):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(K, generator=g) + 0.1).to(dtype)
    mu = torch.randn(K, 2, generator=g).to(dtype)
    A = (torch.randn(K, 2, 2, generator=g) * scale).to(dtype)
    return w, mu, A @ A.transpose(1, 2) + jitter * torch.eye(2, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("M,K", [(40, 7), (3, 1), (129, 70), (5, 300)])   # 300 components: 3 shared-memory tiles
def test_gmm_score(kern, dtype, M, K):
    w, mu, cov = _mixture(K, dtype)
    x = _rand((M, 2), dtype, seed=5)
    s = (torch.rand(M, generator=torch.Generator().manual_seed(6)) * 0.5).to(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    (sc, lp), (ws, wl) = kern.gmm_score(x, w, mu, cov, s), R.gmm_score(x, w, mu, cov, s)
    torch.testing.assert_close(sc, ws, **tol)
    torch.testing.assert_close(lp, wl, **tol)


def test_gmm_score_thin_float64_components(kern):
    w, mu, cov = _mixture(50, torch.float64, seed=3, scale=0.01, jitter=1e-9)
    x = mu[:20] + 1e-4
    s = torch.full((20,), 1e-4, dtype=torch.float64)
    (sc, lp), (ws, wl) = kern.gmm_score(x, w, mu, cov, s), R.gmm_score(x, w, mu, cov, s)
    torch.testing.assert_close(lp, wl, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(sc, ws, rtol=1e-8, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_gmm_score_half(kern, dtype):
    w, mu, cov = _mixture(7, torch.float32)
    x = _rand((40, 2), torch.float32, seed=5)
    s = torch.full((40,), 0.3)
    args = tuple(t.to(dtype) for t in (x, w, mu, cov, s))
    (sc, lp), (ws, wl) = kern.gmm_score(*args), R.gmm_score(*args)
    _close(sc, ws, dtype, rtol=2e-2, atol=2e-2)
    _close(lp, wl, dtype, rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------------------------------- hash_grid_encode
def _grid(D, n_levels, F, log2_size, base):  # noqa: ANN001, ANN202
    from msdfast.fields.hashgrid import HashGridEncoding
    enc = HashGridEncoding(D, {"n_levels": n_levels, "n_features_per_level": F, "log2_hashmap_size": log2_size,
                               "base_resolution": base}, seed=0)
    return enc.params.detach().float().contiguous(), enc.grid


@pytest.mark.parametrize("D", [1, 2, 3, 4])
@pytest.mark.parametrize("interp", [0, 1, 2])
def test_hash_grid_encode_forward_and_backward(kern, D, interp):
    params, lv = _grid(D, 6, 2, 9, 4)          # coarse levels dense, fine ones hashed
    x = torch.rand(700, D, generator=torch.Generator().manual_seed(D))   # 700 points: 3 blocks per level
    args = (*lv, 2, interp)
    torch.testing.assert_close(kern.hash_grid_encode(x, params, *args), R.hash_grid_encode(x, params, *args),
                               rtol=1e-6, atol=1e-6)
    go = torch.randn(700, 6 * 2, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(kern.hash_grid_encode_backward(go, x, params.numel(), *args),
                               R.hash_grid_encode_backward(go, x, params.numel(), *args), rtol=1e-5, atol=1e-5)
