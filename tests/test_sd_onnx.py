"""ONNX export of the tiny SD UNet and the onnxruntime denoiser: parity with the torch denoiser (CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from msdfast.denoisers.exported import export_unet_onnx  # noqa: E402
from msdfast.denoisers.onnx import OnnxDenoiser  # noqa: E402
from msdfast.testing.tiny_sd import tiny_sd_path  # noqa: E402


@pytest.fixture(scope="module")
def host(den):  # noqa: ANN001, ANN201
    """The tiny random SD denoiser of conftest.py."""
    return den


@pytest.fixture(scope="module")
def onnx_den(host, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    path = export_unet_onnx(host, tmp_path_factory.mktemp("onnx") / "unet.onnx")
    return OnnxDenoiser(path, host, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch", [1, 6])  # the batch axis is dynamic: CFG pairs and chains share one session
def test_onnx_matches_torch(host, onnx_den, batch: int) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = host.encode_prompts(["a cat", "a dog", ""] * 2)[:batch]
    ref = host.eps(z, t, cond)
    out = onnx_den.eps(z, t, cond)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert onnx_den.stats.calls[-1].batch == batch


def test_onnx_eps_pair_and_delegation(host, onnx_den) -> None:  # noqa: ANN001
    pe = onnx_den.prompt_embeddings("a cat", "blurry")  # delegated to the torch host
    z = torch.randn(2, 4, 8, 8)
    ec, eu = onnx_den.eps_pair(z, 300, pe.cond.expand(2, -1, -1), pe.uncond.expand(2, -1, -1))
    hc, hu = host.eps_pair(z, 300, pe.cond.expand(2, -1, -1), pe.uncond.expand(2, -1, -1))
    torch.testing.assert_close(ec, hc, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(eu, hu, rtol=1e-4, atol=1e-4)
    assert onnx_den.latent_size == 8 and onnx_den.encode_resolution == 64


def test_missing_file_named(host, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        OnnxDenoiser(tmp_path / "none.onnx", host)


def test_profile_cli_with_onnx_unet(tmp_path: Path, host, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import argparse
    import json

    from msdfast.profile import add_profile_arguments, run_profile

    monkeypatch.setenv("MSDFAST_CACHE", str(tmp_path / "cache"))
    p = argparse.ArgumentParser()
    add_profile_arguments(p)
    model = tiny_sd_path(root=tmp_path.parent)
    args = p.parse_args(["--method", "sds", "--model", str(model), "--unet-onnx", str(tmp_path / "u.onnx"),
                         "--n-grads", "1", "--warmup", "0", "--json", str(tmp_path / "p.json")])
    assert run_profile(args) == 0 and (tmp_path / "u.onnx").exists()
    assert json.loads((tmp_path / "p.json").read_text())["gradients"][0]["calls"][0]["batch"] == 2
