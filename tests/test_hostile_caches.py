"""Caches keyed on content (issue 17 item 1, issue 15's cache-key item): the text-embedding cache, the ONNX
export and the TensorRT engine cache are keyed on the content they depend on (weights as loaded, dtype,
tokenizer, export settings, external-data files), written to a temporary name and renamed, a corrupt entry is
reported with its path and rebuilt, and an unwritable cache warns once and the run continues uncached."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from msdfast.denoisers.sd import load_stable_diffusion
from msdfast.testing.tiny_sd import make_tiny_sd, tiny_sd_path


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny SDs with the same files, names and sizes, different weights (a 'fine-tuned' model)."""
    root = tmp_path_factory.mktemp("twins")
    a, b = make_tiny_sd(root / "a", seed=0), make_tiny_sd(root / "b", seed=1)
    for sub in ("unet", "text_encoder"):
        fa, fb = sorted((a / sub).glob("*.safetensors")), sorted((b / sub).glob("*.safetensors"))
        assert [f.stat().st_size for f in fa] == [f.stat().st_size for f in fb]
    return a, b


def _fresh_embedding(model: Path, prompt: str) -> torch.Tensor:
    return load_stable_diffusion(model, cache_dir=False).encode_prompts([prompt])[0]


def test_same_size_fine_tuned_text_encoder_gets_its_own_embeddings(twins, tmp_path: Path) -> None:  # noqa: ANN001
    a, b = twins
    cache = tmp_path / "cache"
    ea = load_stable_diffusion(a, cache_dir=cache).encode_prompts(["a cat"])[0]
    # b's files replace a's at the SAME path (same names and sizes): the cache must not serve a's embedding
    shutil.rmtree(a.parent / "swap", ignore_errors=True)
    shutil.copytree(b, a.parent / "swap")
    eb = load_stable_diffusion(a.parent / "swap", cache_dir=cache).encode_prompts(["a cat"])[0]
    torch.testing.assert_close(eb, _fresh_embedding(b, "a cat"), rtol=0, atol=0)
    assert (ea - eb).abs().max() > 1e-3
    assert len(list((cache / "text_embeddings").iterdir())) == 2


def test_embedding_cache_tracks_dtype(twins, tmp_path: Path) -> None:  # noqa: ANN001
    a, _ = twins
    d32 = load_stable_diffusion(a, cache_dir=tmp_path)
    d16 = load_stable_diffusion(a, cache_dir=tmp_path, dtype="bfloat16")
    assert d32._text_key("a cat") != d16._text_key("a cat")


def _flip_in(f: Path, at: float = 0.9) -> None:
    raw = bytearray(f.read_bytes())
    raw[int(len(raw) * at)] ^= 0x55
    f.write_bytes(bytes(raw))


def test_corrupt_embedding_entry_is_reported_and_rebuilt(twins, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    a, _ = twins
    good = load_stable_diffusion(a, cache_dir=tmp_path).encode_prompts(["a cat"])[0]
    f = next((tmp_path / "text_embeddings").glob("*/embedding.safetensors"))
    _flip_in(f)   # a flipped byte in the tensor data still loads: only the recorded hash can tell
    with caplog.at_level(logging.WARNING, logger="msdfast.cache"):
        again = load_stable_diffusion(a, cache_dir=tmp_path).encode_prompts(["a cat"])[0]
    torch.testing.assert_close(again, good, rtol=0, atol=0)
    assert any(str(f.parent) in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    third = load_stable_diffusion(a, cache_dir=tmp_path)   # the rebuilt entry is intact and served
    third.text_encoder.forward = None
    torch.testing.assert_close(third.encode_prompts(["a cat"])[0], good, rtol=0, atol=0)


@pytest.mark.parametrize("damage", ["truncate", "seal"])
def test_incomplete_embedding_entry_is_rebuilt(twins, tmp_path: Path, damage: str) -> None:  # noqa: ANN001
    a, _ = twins
    good = load_stable_diffusion(a, cache_dir=tmp_path).encode_prompts(["a dog"])[0]
    entry = next((tmp_path / "text_embeddings").iterdir())
    if damage == "truncate":
        f = entry / "embedding.safetensors"
        f.write_bytes(f.read_bytes()[:50])
    else:
        (entry / ".complete.json").unlink()
    torch.testing.assert_close(load_stable_diffusion(a, cache_dir=tmp_path).encode_prompts(["a dog"])[0], good,
                               rtol=0, atol=0)


def test_unwritable_cache_warns_once_and_continues(twins, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    a, _ = twins
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="msdfast.cache"):
        den = load_stable_diffusion(a, cache_dir=blocker)
        e = den.encode_prompts(["a cat", "a dog", "a bird"])
        den.encode_prompts(["a fish"])
    torch.testing.assert_close(e[0], _fresh_embedding(a, "a cat"), rtol=0, atol=0)
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]   # once per cache folder (hashes, text)
    assert len({r.getMessage() for r in warnings}) == len(warnings)


# ---------------------------------------------------------------------- ONNX export / TensorRT engine keys
def test_export_key_covers_weights_and_dtype(twins) -> None:  # noqa: ANN001
    from msdfast.denoisers.exported import export_key
    a, b = twins
    ka = export_key(load_stable_diffusion(a, cache_dir=False))
    assert ka == export_key(load_stable_diffusion(a, cache_dir=False))
    assert ka != export_key(load_stable_diffusion(b, cache_dir=False))                   # same sizes, new weights
    assert ka != export_key(load_stable_diffusion(a, cache_dir=False, dtype="float16"))  # fp16 export != fp32
    assert ka != export_key(load_stable_diffusion(a, cache_dir=False), batch=4)          # export settings


def test_onnx_export_entry_is_verified_and_rebuilt(twins, tmp_path: Path, caplog) -> None:  # noqa: ANN001
    pytest.importorskip("onnx")
    from msdfast.denoisers.exported import cached_export
    a, _ = twins
    host = load_stable_diffusion(a, cache_dir=False)
    p = cached_export(host, cache_dir=tmp_path)
    assert p.name == "unet.onnx" and (p.parent / ".complete.json").exists()
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".tmp")]
    good = p.read_bytes()
    _flip_in(p, 0.7)
    with caplog.at_level(logging.WARNING, logger="msdfast.cache"):
        p2 = cached_export(host, cache_dir=tmp_path)
    assert p2 == p and p2.read_bytes() == good
    assert any(str(p.parent) in r.getMessage() for r in caplog.records)


def test_engine_key_covers_external_data(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from msdfast.denoisers.tensorrt import engine_cache_path
    import numpy as np

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w])
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(g), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    kw = dict(trt_version="10.1", device_name="H200", min_batch=1, opt_batch=2, max_batch=16, fp16=True)
    k0 = engine_cache_path(path, tmp_path, **kw)
    data = tmp_path / "weights.bin"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 1   # same graph file, same size, other weights
    data.write_bytes(bytes(raw))
    from msdfast.content_hash import _FILE_CACHE
    _FILE_CACHE.clear()   # mtime granularity: make sure the digest is recomputed
    assert engine_cache_path(path, tmp_path, **kw) != k0
