"""msdfast.ops.hash_grid_encode (Instant-NGP grid encoding with tiny-cuda-nn's math) and its params backward:
every backend vs the reference (dense and hashed levels, 1-4 dims, Linear / Nearest / Smoothstep, several
features), autograd through the fused path, the deterministic CPU backward, opcheck, argument errors. The
reference itself is checked against a from-the-formulas Python loop in tests/test_hashgrid.py."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import DEVICES, FAST, need, noncontiguous, opcheck

import msdfast.ops as O
from msdfast.fields.hashgrid import HashGridEncoding
from msdfast.ops import _dispatch, reference


def _grid(D: int, interp: str = "Linear", F: int = 2, n_levels: int = 5, device: str = "cpu"):  # noqa: ANN202
    enc = HashGridEncoding(D, {"n_levels": n_levels, "n_features_per_level": F, "log2_hashmap_size": 7,
                               "base_resolution": 3, "per_level_scale": 1.7, "interpolation": interp}, seed=0)
    if D > 1:   # both dense (coarse) and hashed (fine) levels
        assert any(v["hashed"] for v in enc.levels) and any(not v["hashed"] for v in enc.levels)
    params = torch.randn(enc.params.shape, generator=torch.Generator().manual_seed(1)).to(device)
    return enc.grid, params   # O(1) params so that a wrong index shows


def _points(N: int, D: int, device: str, seed: int = 2) -> torch.Tensor:
    x = torch.rand(N, D, generator=torch.Generator().manual_seed(seed))
    x[0], x[1] = 0.0, 1.0          # exact grid points and the box corners
    return x.to(device)


def _interp_id(interp: str) -> int:
    return reference.GRID_INTERPOLATIONS.index(interp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("D,interp,F", [(2, "Linear", 2), (3, "Linear", 2), (3, "Smoothstep", 1), (2, "Nearest", 4),
                                        (1, "Linear", 3), (4, "Linear", 2)])
def test_forward_and_backward_match_reference(device, backend, D, interp, F):
    need("hash_grid_encode", backend, device)
    levels, params = _grid(D, interp, F, device=device)
    x = _points(53, D, device)
    out = O.hash_grid_encode(x, params, levels, F, interp, backend=backend)
    ref = O.hash_grid_encode(x, params, levels, F, interp, backend="reference")
    assert out.shape == (53, 5 * F) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(device)
    args = (go, x, params.numel(), *levels, F, _interp_id(interp))
    grad = _dispatch.call("hash_grid_encode_backward", device, backend, *args)
    torch.testing.assert_close(grad, reference.hash_grid_encode_backward(*args), rtol=1e-5, atol=1e-5)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", FAST)
def test_autograd_through_the_fused_path(device, backend):
    """params.grad from the fused forward + scatter backward equals autograd of the reference."""
    need("hash_grid_encode", backend, device)
    levels, p0 = _grid(3, device=device)
    x = noncontiguous(_points(40, 3, device))
    w = torch.randn(40, 10, generator=torch.Generator().manual_seed(4)).to(device)
    grads = {}
    for b in (backend, "reference"):
        p = p0.clone().requires_grad_()
        (O.hash_grid_encode(x, p, levels, 2, backend=b) * w).sum().backward()
        grads[b] = p.grad
    torch.testing.assert_close(grads[backend], grads["reference"], rtol=1e-5, atol=1e-5)


def test_default_routing_fast_path_and_reference_fallbacks():
    """float32 without input gradients takes the fused kernel; float64 or x.requires_grad take the reference,
    which autograd differentiates w.r.t. x as well."""
    levels, p = _grid(2)
    x = _points(9, 2, "cpu")
    fast = O.hash_grid_encode(x, p, levels, 2)
    torch.testing.assert_close(fast, O.hash_grid_encode(x, p, levels, 2, backend="reference"), rtol=1e-5, atol=1e-5)
    xg = x.double().requires_grad_()
    out = O.hash_grid_encode(xg, p.double(), levels, 2)
    out.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    if "compiled" in _dispatch.available("hash_grid_encode", "cpu"):
        with pytest.raises(ValueError, match="backend"):
            O.hash_grid_encode(x.double(), p.double(), levels, 2, backend="compiled")


def test_cpu_backward_is_deterministic():
    need("hash_grid_encode", "compiled", "cpu")
    levels, p = _grid(3, n_levels=6)
    x = _points(30000, 3, "cpu")
    go = torch.randn(30000, 12, generator=torch.Generator().manual_seed(5))
    args = (go, x, p.numel(), *levels, 2, 0)
    g0 = _dispatch.call("hash_grid_encode_backward", "cpu", "compiled", *args)
    assert all(torch.equal(g0, _dispatch.call("hash_grid_encode_backward", "cpu", "compiled", *args))
               for _ in range(3))


@pytest.mark.parametrize("backend", FAST)
def test_opcheck(backend):
    need("hash_grid_encode", backend, "cpu")
    levels, p = _grid(2)
    x = _points(11, 2, "cpu")
    opcheck("hash_grid_encode", backend, (x, p, *map(list, levels), 2, 0))
    go = torch.randn(11, 10)
    opcheck("hash_grid_encode_backward", backend, (go, x, p.numel(), *map(list, levels), 2, 0))


def test_errors_name_the_argument():
    levels, p = _grid(2)
    x = _points(5, 2, "cpu")
    with pytest.raises(ValueError, match="x"):
        O.hash_grid_encode(x[:, :1].reshape(5, 1, 1), p, levels, 2)
    with pytest.raises(ValueError, match="params"):
        O.hash_grid_encode(x, p[:10], levels, 2)
    with pytest.raises(ValueError, match="interpolation"):
        O.hash_grid_encode(x, p, levels, 2, "Cubic")
    with pytest.raises(ValueError, match="levels"):
        O.hash_grid_encode(x, p, levels._replace(sizes=levels.sizes[:-1]), 2)
    if "compiled" in _dispatch.available("hash_grid_encode", "cpu"):   # the C++ checks, called directly
        with pytest.raises(RuntimeError, match="params"):
            torch.ops.msdfast.hash_grid_encode(x, p[:10], *map(list, levels), 2, 0)
        with pytest.raises(RuntimeError, match="grad_out"):
            torch.ops.msdfast.hash_grid_encode_backward(torch.zeros(4, 10), x, p.numel(), *map(list, levels), 2, 0)


@pytest.mark.parametrize("backend", FAST)
def test_direct_op_callers_get_params_gradients(backend):
    """issue 16 item 6: the backward is registered on the op itself (torch.library.register_autograd), so
    calling torch.ops.msdfast.hash_grid_encode / the Triton custom op directly gives d loss / d params."""
    need("hash_grid_encode", backend, "cpu")
    from kernel_helpers import custom_op

    lv, params = _grid(3)
    x = _points(50, 3, "cpu")
    p_op, p_ref = params.clone().requires_grad_(), params.clone().requires_grad_()
    args = (*lv, 2, _interp_id("Linear"))
    out = custom_op("hash_grid_encode", backend)(x, p_op, *[list(a) for a in lv], 2, 0)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * w).sum().backward()
    (reference.hash_grid_encode(x, p_ref, *args) * w).sum().backward()
    torch.testing.assert_close(p_op.grad, p_ref.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("compiled" not in FAST, reason="msdfast._C not built")
def test_cpu_backward_reuses_a_large_gradient_block_zeroed() -> None:
    """A gradient of >= 4 MiB (the NeRF's table: 50 MB) reuses the block of the previous, freed gradient instead of
    page-faulting a fresh one in each step; it must come back zeroed: the second backward, on other points,
    equals the reference exactly where the first one wrote too."""
    need("hash_grid_encode", "compiled", "cpu")
    enc = HashGridEncoding(3, {"n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 19,
                               "base_resolution": 16, "per_level_scale": 8.0}, seed=0)
    n = enc.params.numel()
    assert n * 4 >= 4 << 20
    F = enc.n_features_per_level
    op = torch.ops.msdfast.hash_grid_encode_backward.default
    grads, ptrs = [], []
    for seed in (5, 6, 7):
        x = _points(300, 3, "cpu", seed=seed)
        go = torch.randn(300, 2 * F, generator=torch.Generator().manual_seed(seed))
        args = (go, x, n, *enc.grid, F, 0)
        g = op(*args)
        ptrs.append(g.data_ptr())
        assert torch.equal(g, reference.hash_grid_encode_backward(*args))   # deterministic scatter: exact
        grads.append(g.nonzero().numel())
        del g                                                              # as zero_grad(set_to_none=True)
    assert ptrs[0] == ptrs[1] == ptrs[2] and min(grads) > 0
    kept = op(*args)       # a live gradient is never handed out twice
    other = op(*args)
    assert kept.data_ptr() != other.data_ptr() and torch.equal(kept, other)
