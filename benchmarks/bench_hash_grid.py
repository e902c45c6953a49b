"""hash_grid_encode forward + params backward (one optimisation step's encoding work) vs the reference, which
autograd differentiates: a 2D image field (threestudio-style 16 levels, 2^19 table, max resolution 512) and a
3D NeRF (msdfast.fields.nerf's default grid) at 2^16 points. Memory-bound gathers and scatters: no clone bound.
The Triton kernels are benchmarked on CUDA only (the CPU interpreter is not a benchmark)."""
from __future__ import annotations

import pytest
import torch
from bench_utils import device_params, sync

from msdfast import ops
from msdfast.fields.hashgrid import HashGridEncoding
from msdfast.fields.nerf import default_nerf_grid_config
from msdfast.ops import _dispatch

N_POINTS = 1 << 16
CASES = {"2d-image": (2, {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
                          "base_resolution": 16, "max_resolution": 512}),
         "3d-nerf": (3, default_nerf_grid_config())}


@pytest.mark.parametrize("impl", ["reference", "compiled", "triton"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device", device_params())
def test_hash_grid(record_env, device, case, impl):
    benchmark = record_env
    D, cfg = CASES[case]
    benchmark.group = f"hash_grid-{device}-{case}-N{N_POINTS}-fwd+bwd"
    benchmark.extra_info.update(op="hash_grid_encode", impl=impl, device=device, shape=[N_POINTS, D], dtype="float32")
    if impl not in _dispatch.available("hash_grid_encode", device) or (impl == "triton" and device == "cpu"):
        pytest.skip(f"{impl} backend not benchmarked on {device}")
    enc = HashGridEncoding(D, cfg, seed=0).to(device)
    x = torch.rand(N_POINTS, D, generator=torch.Generator().manual_seed(0)).to(device)
    w = torch.randn(N_POINTS, enc.n_output_dims, generator=torch.Generator().manual_seed(1)).to(device)

    def fn():
        enc.params.grad = None
        out = ops.hash_grid_encode(x, enc.params, enc.grid, enc.n_features_per_level, backend=impl)
        (out * w).sum().backward()
        sync(device)
        return enc.params.grad

    grad = benchmark(fn)
    enc.params.grad = None
    (ops.hash_grid_encode(x, enc.params, enc.grid, enc.n_features_per_level, backend="reference") * w).sum().backward()
    torch.testing.assert_close(grad, enc.params.grad, rtol=1e-4, atol=1e-4)
