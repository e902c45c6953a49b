"""Every Triton kernel, run in the interpreter, checked for what only a GPU compile would reveal
(tests/triton_audit.py): float scalars typed fp64, int scalars and block offsets int64, no tensor over
Triton's 2^20-element limit. Kernel-vs-reference values are tested in tests/test_ops_<op>.py."""
from __future__ import annotations

import pytest
import torch

import msdfast.ops as O
from msdfast.ops import _dispatch

from triton_audit import MAX_TENSOR_NUMEL, audit

pytestmark = pytest.mark.skipif("triton" not in _dispatch.available("ddim_step", "cpu"),
                                reason="Triton (interpreter) unavailable")


def _run_every_op(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    z = r(2, 3, 5)
    coef = O.step_coefficients(2, 0.8, 0.6, 0.9, 0.43, guidance_scale=3.0, eta=0.5, decay=0.7)
    O.ddim_step(z, r(2, 3, 5), coef, eps_u=r(2, 3, 5), center=r(2, 3, 5), noise=r(2, 3, 5), return_x0=True,
                backend="triton")
    O.distill_grad(r(2, 3, 5), r(2, 3, 5), O.grad_coefficients(2, 0.5, guidance_scale=2.0), eps_u=r(2, 3, 5),
                   x=r(2, 3, 5), clip=0.3, backend="triton")
    O.chain_mean_shift(r(6, 3, 5), r(2, 3, 5), backend="triton")
    O.noise_to_levels(r(2, 3, 5), r(2, 3, 5), torch.rand(2, 2), torch.rand(2, 2), backend="triton")
    O.empirical_denoiser(r(5, 3), r(7, 3), 0.5, backend="triton")
    O.gmm_score(r(5, 2), torch.rand(3).to(dtype), r(3, 2), torch.eye(2).expand(3, 2, 2).to(dtype), 0.5,
                backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_scalars_offsets_and_tiles_survive_a_gpu_compile(dtype):
    with audit() as rec:
        _run_every_op(dtype)
    assert len(rec.kernels) >= 6, rec.kernels
    assert not rec.problems(), rec.problems()


def test_hash_grid_scalars_and_offsets():
    from msdfast.fields.hashgrid import HashGridEncoding

    enc = HashGridEncoding(3, {"n_levels": 4, "n_features_per_level": 2, "log2_hashmap_size": 8,
                               "base_resolution": 4}, seed=0)
    x = torch.rand(37, 3)
    with audit() as rec:
        out = O.hash_grid_encode(x, enc.params.detach().requires_grad_(), enc.grid, 2, backend="triton")
        out.sum().backward()
    assert {"_encode_kernel", "_backward_kernel"} <= rec.kernels
    assert not rec.problems(), rec.problems()


def test_empirical_denoiser_tiles_stay_under_the_limit_for_large_dimensions():
    # D = 2100 built a [32, 16, 4096] = 2^21-element tile before the dimension loop.
    x, data = torch.randn(2, 2100, dtype=torch.float64), torch.randn(3, 2100, dtype=torch.float64)
    with audit() as rec:
        out = O.empirical_denoiser(x, data, 30.0, backend="triton")
    assert rec.max_numel["_empirical_denoiser_kernel"] <= MAX_TENSOR_NUMEL
    torch.testing.assert_close(out, O.empirical_denoiser(x, data, 30.0, backend="reference"), rtol=1e-12,
                               atol=1e-12)


def test_gmm_score_float64_tiles_are_smaller():
    x = torch.randn(70, 2, dtype=torch.float64)
    with audit() as rec:
        O.gmm_score(x, torch.rand(100, dtype=torch.float64), torch.randn(100, 2, dtype=torch.float64),
                    torch.eye(2, dtype=torch.float64).expand(100, 2, 2), 0.3, backend="triton")
    meta = rec.meta["_gmm_score_kernel"][0]
    assert meta["BLOCK_M"] * meta["BLOCK_K"] <= 1024


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_launch_runs_on_the_tensors_device():
    """Triton launches on the current device: the launcher makes the tensors' device current (device_guard)."""
    z = torch.randn(2, 3, 5, device="cuda:1")
    coef = O.step_coefficients(2, 0.8, 0.6, 0.9, 0.43, device="cuda:1")
    with torch.cuda.device(0):
        out = O.ddim_step(z, z, coef, backend="triton")
    torch.testing.assert_close(out, O.ddim_step(z, z, coef, backend="reference"))
