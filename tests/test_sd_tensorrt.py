"""The TensorRT UNet denoiser: engine cache, binding logic (through the CPU stand-in of tests/fake_tensorrt.py)
and, on a machine with TensorRT and a GPU, the real engine against the torch UNet."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fake_tensorrt import make_fake_tensorrt

from msdfast.denoisers.tensorrt import TensorRTDenoiser, build_trt_engine, engine_cache_path

pytest.importorskip("onnx")


def _inputs(host, batch: int, seed: int = 0):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = host.encode_prompts(["a cat", "a dog", ""] * 3)[:batch]
    return z, t, cond


@pytest.mark.parametrize("version", ["10", "11"])
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_built_cached_and_matches_torch(den, tmp_path: Path, fp16: bool, version: str) -> None:  # noqa: ANN001
    """TensorRT 10 and 11 (no BuilderFlag.FP16): a strongly typed network whose fp16 comes from an fp16 export."""
    trt = make_fake_tensorrt(den.unet, version)
    trt_den = TensorRTDenoiser(den, trt=trt, cache_dir=tmp_path, max_batch=8, fp16=fp16)
    assert trt.builds == [{"fp16": fp16, "min_batch": 1, "opt_batch": 2, "max_batch": 8, "sample": [4, 8, 8],
                           "text": [77, 32]}]
    assert trt_den.engine_path.parent.parent == tmp_path and trt_den.engine_path.suffix == ".plan"
    z, t, cond = _inputs(den, 5)
    out = trt_den.eps(z, t, cond)
    ref = den.eps(z, t, cond)
    torch.testing.assert_close(out, ref, **(dict(rtol=2e-2, atol=2e-2) if fp16 else dict(rtol=1e-5, atol=1e-5)))
    assert out.dtype == z.dtype and trt_den.stats.nfe == 5
    ex = trt_den.context.executes
    assert len(ex) == 1 and ex[0]["sample"] == (5, 4, 8, 8) and ex[0]["encoder_hidden_states"] == (5, 77, 32)
    # a second denoiser for the same model and profile loads the cached engine instead of building again
    again = TensorRTDenoiser(den, trt=trt, cache_dir=tmp_path, max_batch=8, fp16=fp16)
    assert len(trt.builds) == 1 and again.engine_path == trt_den.engine_path


def test_cfg_pair_is_one_execute(den, tmp_path: Path) -> None:  # noqa: ANN001
    trt = make_fake_tensorrt(den.unet)
    trt_den = TensorRTDenoiser(den, trt=trt, cache_dir=tmp_path, max_batch=8, fp16=False)
    pe = trt_den.prompt_embeddings("a cat", "blurry")   # delegated to the torch host
    z = torch.randn(3, 4, 8, 8)
    c, u = pe.cond.expand(3, -1, -1), pe.uncond.expand(3, -1, -1)
    ec, eu = trt_den.eps_pair(z, 300, c, u)
    hc, hu = den.eps_pair(z, 300, c, u)
    torch.testing.assert_close(ec, hc, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(eu, hu, rtol=1e-5, atol=1e-5)
    assert [e["sample"] for e in trt_den.context.executes] == [(6, 4, 8, 8)]


def test_batch_outside_profile_and_bad_paths_name_the_argument(den, tmp_path: Path) -> None:  # noqa: ANN001
    trt = make_fake_tensorrt(den.unet)
    trt_den = TensorRTDenoiser(den, trt=trt, cache_dir=tmp_path, max_batch=4, fp16=False)
    with pytest.raises(ValueError, match="z: batch 6"):
        trt_den.eps(*_inputs(den, 6))
    with pytest.raises(FileNotFoundError, match="engine_path"):
        TensorRTDenoiser(den, trt=trt, engine_path=tmp_path / "none.plan")
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        TensorRTDenoiser(den, trt=trt, onnx_path=tmp_path / "none.onnx", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="max_batch"):
        TensorRTDenoiser(den, trt=trt, cache_dir=tmp_path, opt_batch=8, max_batch=4)
    bad = tmp_path / "garbage.plan"
    bad.write_bytes(b"\x00not an engine")
    with pytest.raises(RuntimeError, match="deserialize"):
        TensorRTDenoiser(den, trt=trt, engine_path=bad)


def test_cache_key_tracks_model_profile_and_precision(tmp_path: Path) -> None:
    onnx = tmp_path / "u.onnx"
    onnx.write_bytes(b"graph-1")
    kw = dict(trt_version="10.1", device_name="H200", min_batch=1, opt_batch=2, max_batch=16, fp16=True)
    base = engine_cache_path(onnx, tmp_path, **kw)
    assert base == engine_cache_path(onnx, tmp_path, **kw)   # deterministic
    others = {engine_cache_path(onnx, tmp_path, **{**kw, k: v}) for k, v in
              (("trt_version", "10.2"), ("device_name", "A100"), ("max_batch", 32), ("fp16", False))}
    assert base not in others and len(others) == 4
    onnx.write_bytes(b"graph-2")
    assert engine_cache_path(onnx, tmp_path, **kw) != base


def test_without_tensorrt_the_error_names_it(den, tmp_path: Path) -> None:  # noqa: ANN001
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except Exception:  # noqa: BLE001
        pass
    with pytest.raises(ImportError, match="tensorrt"):
        TensorRTDenoiser(den, cache_dir=tmp_path)
    with pytest.raises(ImportError, match="tensorrt"):
        build_trt_engine(tmp_path / "x.onnx", tmp_path / "x.plan")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_tensorrt_engine_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt")
    from msdfast.denoisers.sd import load_stable_diffusion
    from msdfast.testing.tiny_sd import tiny_sd_path

    host = load_stable_diffusion(tiny_sd_path(root=tmp_path), device="cuda", cache_dir=tmp_path / "cache")
    trt_den = TensorRTDenoiser(host, cache_dir=tmp_path / "trt", max_batch=8, fp16=False)
    z, t, cond = (v.cuda() for v in _inputs(host, 4))
    torch.testing.assert_close(trt_den.eps(z, t, cond), host.eps(z, t, cond), rtol=1e-3, atol=1e-3)


def test_rejected_shape_or_address_is_an_error_naming_the_tensor(den, tmp_path: Path) -> None:  # noqa: ANN001
    """set_input_shape / set_tensor_address return False for a bad shape or address: checked, never ignored."""
    trt = make_fake_tensorrt(den.unet)
    trt_den = TensorRTDenoiser(den, trt=trt, cache_dir=tmp_path, max_batch=8, fp16=False)
    for name in ("encoder_hidden_states", "latent"):
        trt_den.context.reject = {name}
        with pytest.raises(RuntimeError, match=name):
            trt_den.eps(*_inputs(den, 2))
    assert trt_den.context.executes == []


def test_fp16_engine_needs_an_fp16_graph(den, tmp_path: Path) -> None:  # noqa: ANN001
    """A strongly typed engine computes in the graph's types: fp16=True on a float32 export is refused."""
    from msdfast.denoisers.exported import cached_export

    onnx32 = cached_export(den, cache_dir=tmp_path / "onnx")
    with pytest.raises(ValueError, match="onnx_path: .* float32 export"):
        build_trt_engine(onnx32, tmp_path / "x.plan", fp16=True, trt=make_fake_tensorrt(den.unet))
