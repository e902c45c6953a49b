"""msdfast's hash grid vs a slow reference written directly from tiny-cuda-nn's formulas (REFERENCE.md sec. 4)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from msdfast.fields import hashgrid
from msdfast.fields.hashgrid import HashGridEncoding, grid_levels, make_encoding

PRIMES = [1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737]


def slow_reference(x: list[list[float]], params: list[float], D: int, n_levels: int, F: int, log2_size: int,
                   base: int, pls: float, interp: str = "Linear") -> list[list[float]]:
    """Pure-Python, one point / level / corner at a time, uint32 hashing with explicit masking."""
    out = []
    offset = 0
    sizes, scales, ress = [], [], []
    f32 = np.float32
    for lvl in range(n_levels):
        # tcnn computes the level scale in float32: exp2f(level * log2f(pls)) * base - 1.0f
        scale = float(f32(f32(np.exp2(f32(f32(lvl) * f32(np.log2(f32(pls)))))) * f32(base)) - f32(1.0))
        res = math.ceil(scale) + 1
        size = min(((res ** D + 7) // 8) * 8, 2 ** log2_size)
        sizes.append(size), scales.append(scale), ress.append(res)
    for p in x:
        feats: list[float] = []
        offset = 0
        for lvl in range(n_levels):
            scale, res, size = scales[lvl], ress[lvl], sizes[lvl]
            pos = [scale * p[d] + 0.5 for d in range(D)]
            g = [math.floor(v) for v in pos]
            fr = [pos[d] - g[d] for d in range(D)]
            if interp == "Smoothstep":
                fr = [f * f * (3 - 2 * f) for f in fr]

            def index(c: list[int]) -> int:
                if res ** D <= size:
                    idx, stride = 0, 1
                    for d in range(D):
                        idx += c[d] * stride
                        stride *= res
                else:
                    idx = 0
                    for d in range(D):
                        idx ^= (c[d] * PRIMES[d]) % 2 ** 32
                return idx % size

            acc = [0.0] * F
            corners = [g] if interp == "Nearest" else \
                [[g[d] + ((k >> d) & 1) for d in range(D)] for k in range(2 ** D)]
            for c in corners:
                w = 1.0
                if interp != "Nearest":
                    for d in range(D):
                        w *= fr[d] if c[d] > g[d] else 1 - fr[d]
                i = index(c)
                for f in range(F):
                    acc[f] += w * params[(offset + i) * F + f]
            feats += acc
            offset += size
        out.append(feats)
    return out


def test_level_sizes_by_hand() -> None:
    # D=2, base 16, scale 2: level 0 res 16 -> 256 entries, dense; level 1 res 32 -> 1024 > 2^8 -> hashed 256.
    lv = grid_levels(2, {"otype": "HashGrid", "n_levels": 2, "log2_hashmap_size": 8, "base_resolution": 16,
                         "per_level_scale": 2.0})
    assert [(v["resolution"], v["size"], v["offset"], v["hashed"]) for v in lv] == \
        [(16, 256, 0, False), (32, 256, 256, True)]
    enc = HashGridEncoding(2, {"n_levels": 2, "n_features_per_level": 3, "log2_hashmap_size": 8,
                               "base_resolution": 16, "per_level_scale": 2.0})
    assert enc.params.numel() == 512 * 3 and enc.n_output_dims == 6
    assert enc.params.abs().max() <= 1e-4  # tcnn's init range


@pytest.mark.parametrize("D,interp", [(2, "Linear"), (3, "Linear"), (2, "Smoothstep"), (2, "Nearest"),
                                      (1, "Linear")])
def test_matches_slow_reference(D: int, interp: str) -> None:
    cfg = {"otype": "Grid", "type": "Hash", "n_levels": 5, "n_features_per_level": 2, "log2_hashmap_size": 7,
           "base_resolution": 3, "per_level_scale": 1.7, "interpolation": interp}
    enc = HashGridEncoding(D, cfg, seed=0).double()
    with torch.no_grad():  # O(1) params so index errors are visible, not hidden by 1e-4 init
        enc.params.copy_(torch.randn(enc.params.shape, generator=torch.Generator().manual_seed(1),
                                     dtype=torch.float64))
    if D > 1:  # both dense (coarse) and hashed (fine) levels are exercised
        assert any(v["hashed"] for v in enc.levels) and any(not v["hashed"] for v in enc.levels)
    x = torch.rand(23, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[0] = 0.0  # exact grid points and the box corners
    x[1] = 1.0
    ref = slow_reference(x.tolist(), enc.params.tolist(), D, 5, 2, 7, 3, 1.7, interp)
    out = enc(x)
    assert out.shape == (23, 10)
    torch.testing.assert_close(out, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_max_resolution_and_dense_grid() -> None:
    cfg = {"otype": "HashGrid", "n_levels": 16, "base_resolution": 16, "max_resolution": 4096}
    enc = HashGridEncoding(3, cfg)
    # threestudio's per_level_scale for max res 4096
    assert enc.config["per_level_scale"] == pytest.approx(1.447269237440378, rel=1e-12)
    dense = HashGridEncoding(2, {"otype": "DenseGrid", "n_levels": 2, "base_resolution": 4, "per_level_scale": 3})
    assert all(not v["hashed"] for v in dense.levels)
    # level 0: scale 3, res 4 -> 16 entries; level 1: scale 4 * 3 - 1 = 11, res 12 -> 144 (a multiple of 8)
    assert [v["size"] for v in dense.levels] == [16, 144]


def test_gradients_flow_to_params_and_inputs() -> None:
    enc = HashGridEncoding(2, {"n_levels": 3, "log2_hashmap_size": 6, "base_resolution": 4}, seed=0).double()
    x = torch.rand(7, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: enc(p), (x,))
    enc(x.detach()).sum().backward()
    assert enc.params.grad is not None and enc.params.grad.abs().sum() > 0


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="otype"):
        HashGridEncoding(2, {"otype": "Frequency"})
    with pytest.raises(ValueError, match="interpolation"):
        HashGridEncoding(2, {"interpolation": "Cubic"})
    with pytest.raises(ValueError, match="x"):
        HashGridEncoding(2, {"n_levels": 2})(torch.rand(4, 3))


def test_tcnn_import_errors_never_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # makes `import tinycudann` raise ImportError
    monkeypatch.setattr(hashgrid, "_TCNN", None)
    assert hashgrid.tcnn_available() is False
    assert isinstance(make_encoding(2, {"n_levels": 2}), HashGridEncoding)

    import builtins
    real_import = builtins.__import__

    def raising_import(name, *a, **k):  # noqa: ANN001, ANN202
        if name == "tinycudann":
            raise OSError("Could not find compatible tinycudann extension for compute capability")
        return real_import(name, *a, **k)
    # A tinycudann whose import raises EnvironmentError (OSError), as it does on CPU machines.
    monkeypatch.delitem(sys.modules, "tinycudann")
    monkeypatch.setattr(builtins, "__import__", raising_import)
    monkeypatch.setattr(hashgrid, "_TCNN", None)
    assert hashgrid.tcnn_available() is False
    assert isinstance(make_encoding(2, {"n_levels": 2}), HashGridEncoding)
    with pytest.raises(RuntimeError, match="implementation"):
        make_encoding(2, {"n_levels": 2}, implementation="tcnn")


def test_backward_is_deterministic_on_cpu() -> None:
    """The image pipeline's bit-exact resume needs a deterministic backward (many points share entries)."""
    enc = HashGridEncoding(2, {"n_levels": 4, "log2_hashmap_size": 8, "base_resolution": 8}, seed=0)
    x = torch.rand(20000, 2, generator=torch.Generator().manual_seed(0))
    w = torch.randn(20000, enc.n_output_dims, generator=torch.Generator().manual_seed(1))
    grads = []
    for _ in range(3):
        enc.params.grad = None
        (enc(x) * w).sum().backward()
        grads.append(enc.params.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_float32_inputs_match_reference() -> None:
    """float32 path (tcnn's fmaf position) against the float64 reference on generic points."""
    cfg = {"n_levels": 6, "n_features_per_level": 2, "log2_hashmap_size": 9, "base_resolution": 4,
           "per_level_scale": 1.447269237440378}
    enc = HashGridEncoding(3, cfg, seed=0)
    with torch.no_grad():
        enc.params.copy_(torch.randn(enc.params.shape, generator=torch.Generator().manual_seed(3)))
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(4))
    ref = slow_reference(x.double().tolist(), enc.params.double().tolist(), 3, 6, 2, 9, 4, 1.447269237440378)
    torch.testing.assert_close(enc(x), torch.tensor(ref, dtype=torch.float32), rtol=1e-5, atol=1e-5)
