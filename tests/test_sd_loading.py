"""diffusers-native loading: save_pretrained folders (tokenizer.json only), fp16 variants, cached hub ids,
in-memory pipelines; never a network access, never HF_HUB_OFFLINE set for the process."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from msdfast.denoisers.sd import from_pipeline, load_stable_diffusion
from msdfast.errors import UserInputError
from msdfast.testing.tiny_sd import tiny_sd_path

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def tiny(root: Path) -> Path:  # noqa: D103
    return tiny_sd_path(root=root)


@pytest.fixture(scope="module")
def pipe(tiny: Path):  # noqa: ANN201
    return diffusers.StableDiffusionPipeline.from_pretrained(
        str(tiny), safety_checker=None, feature_extractor=None, requires_safety_checker=False, local_files_only=True)


def _eps(den) -> torch.Tensor:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 8, 8, generator=g)
    c = den.encode_prompts(["a hamburger", ""])
    return den.eps(z, torch.tensor([10, 700]), c)


@pytest.fixture(scope="module")
def ref(tiny: Path) -> torch.Tensor:
    return _eps(load_stable_diffusion(tiny, cache_dir=False))


def test_save_pretrained_folder_with_tokenizer_json_only(pipe, tmp_path: Path, ref: torch.Tensor) -> None:  # noqa: ANN001
    out = tmp_path / "saved"
    pipe.save_pretrained(out, safe_serialization=True)
    tok = out / "tokenizer"
    assert (tok / "tokenizer.json").exists()
    for f in ("vocab.json", "merges.txt"):  # transformers >= 5 writes tokenizer.json; make sure it is all we need
        (tok / f).unlink(missing_ok=True)
    den = load_stable_diffusion(out, cache_dir=False)
    torch.testing.assert_close(_eps(den), ref, rtol=0, atol=0)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_fp16_variant_folder(pipe, tmp_path: Path, ref: torch.Tensor) -> None:  # noqa: ANN001
    out = tmp_path / "fp16"
    pipe.save_pretrained(out, variant="fp16", safe_serialization=True)
    assert list((out / "unet").glob("*.fp16.safetensors"))
    for sub in ("unet", "vae", "text_encoder"):  # a variant-only folder, as the hub's fp16 branches
        for f in (out / sub).glob("*.safetensors"):
            if ".fp16." not in f.name:
                f.unlink()
    with pytest.raises(UserInputError, match="variant='fp16'"):
        load_stable_diffusion(out, cache_dir=False)
    den = load_stable_diffusion(out, cache_dir=False, variant="fp16")
    torch.testing.assert_close(_eps(den), ref, rtol=0, atol=0)   # the weights were saved in fp32 under the variant


def test_hub_id_from_the_local_cache_only(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          ref: torch.Tensor) -> None:
    import huggingface_hub.constants as hc
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-sd"
    shutil.copytree(tiny, repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    den = load_stable_diffusion("tiny-org/tiny-sd", cache_dir=False)
    torch.testing.assert_close(_eps(den), ref, rtol=0, atol=0)
    with pytest.raises(UserInputError, match="hf download tiny-org/not-cached") as e:
        load_stable_diffusion("tiny-org/not-cached", cache_dir=False)
    assert "\n" not in str(e.value)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_from_pipeline_shares_the_modules(pipe, ref: torch.Tensor) -> None:  # noqa: ANN001
    den = from_pipeline(pipe, cache_dir=False, channels_last=False)
    assert den.unet is pipe.unet and den.vae is pipe.vae
    torch.testing.assert_close(_eps(den), ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(UserInputError, match="vae"):
        from_pipeline(type("P", (), {"unet": pipe.unet, "vae": None})())


def test_missing_diffusers_names_the_extra(monkeypatch: pytest.MonkeyPatch, tiny: Path) -> None:
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "diffusers" else real(n, *a))
    with pytest.raises(UserInputError, match=r"msdfast\[diffusers\]") as e:
        load_stable_diffusion(tiny)
    assert "\n" not in str(e.value)


def test_loading_is_quiet_unless_verbose(tiny: Path, capfd: pytest.CaptureFixture) -> None:
    capfd.readouterr()
    load_stable_diffusion(tiny, cache_dir=False)
    quiet = capfd.readouterr()
    assert quiet.out == "" and quiet.err == "", quiet
