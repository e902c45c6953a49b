"""The digits model folder (SD format), its training (resumes exactly) and the study end to end (3 steps)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("diffusers")

from msdfast.digits.model import (NUMBER_WORDS, build_components, digits_model_path, prompt_for,  # noqa: E402
                                  resolve_model, save_folder, write_tokenizer)


@pytest.fixture(scope="module")
def untrained_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "model"
    vocab = write_tokenizer(root / "tokenizer")
    c = build_components(vocab, seed=0)
    c["vae"].register_to_config(scaling_factor=0.9)
    return save_folder(root, c["unet"], c["vae"], c["text_encoder"])


def test_folder_loads_through_the_sd_loader(untrained_folder):
    from msdfast.denoisers.sd import load_stable_diffusion

    den = load_stable_diffusion(untrained_folder, cache_dir=False)
    assert den.encode_resolution == 32 and den.latent_size == 8 and den.latent_channels == 4
    assert den.scaling_factor == pytest.approx(0.9)
    idx = json.loads((untrained_folder / "model_index.json").read_text())
    assert idx["unet"] == ["diffusers", "UNet2DConditionModel"] and idx["tokenizer"][1] == "CLIPTokenizer"
    # every prompt word is ONE token: bos, 'a', 'handwritten', 'seven', eos
    ids = den.tokenizer("a handwritten seven").input_ids
    assert len(ids) == 5 and ids[0] == den.tokenizer.bos_token_id and ids[-1] == den.tokenizer.eos_token_id
    for w in NUMBER_WORDS:
        assert len(den.tokenizer(w).input_ids) == 3, w
    emb = den.encode_prompts([prompt_for(7), ""])
    assert emb.shape == (2, 16, 64)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    z = den.encode_images(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8)
    z.sum().backward()
    assert x.grad.abs().sum() > 0
    assert den.decode_latents(z.detach()).shape == (2, 3, 32, 32)


def test_resolve_model_maps_the_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model("digits") == digits_model_path()
    assert str(resolve_model("./some_folder")) == "some_folder"
    (tmp_path / "digits").mkdir()                      # a local folder named 'digits' wins over the built-in
    assert str(resolve_model("digits")) == "digits"


@pytest.mark.slow  # ~30 s on 2 shared cores: three short trainings, each encoding the train split once
def test_training_resumes_exactly(tmp_path):
    from safetensors.torch import load_file

    from msdfast.digits.train import Recipe, train_digits_model

    r = Recipe(vae_steps=2, unet_steps=2, vae_batch=4, unet_batch=4, warmup=1)
    a = train_digits_model(r, tmp_path / "a" / "model", progress=False)
    assert a["steps_done"] == 4
    part = train_digits_model(r, tmp_path / "b" / "model", stop_at=3, progress=False)   # mid UNet phase
    assert part["steps_done"] == 3 and (tmp_path / "b" / "model.ckpt.safetensors").is_file()
    assert not (tmp_path / "b" / "model" / "unet").exists()
    b = train_digits_model(r, tmp_path / "b" / "model", resume=True, progress=False)
    assert b["steps_done"] == 4 and b["scaling_factor"] == a["scaling_factor"]
    for sub in ("unet", "vae", "text_encoder"):
        wa = load_file(str(next((tmp_path / "a" / "model" / sub).glob("*.safetensors"))))
        wb = load_file(str(next((tmp_path / "b" / "model" / sub).glob("*.safetensors"))))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), sub
    train_digits_model(r, tmp_path / "c" / "model", stop_at=1, progress=False)
    with pytest.raises(ValueError, match="different recipe"):
        train_digits_model(Recipe(vae_steps=2, unet_steps=3, vae_batch=4, unet_batch=4, warmup=1),
                           tmp_path / "c" / "model", resume=True, progress=False)


@pytest.mark.slow  # ~30-60 s on 2 shared cores: 8 methods (with PSR k = 1.05) x 2 fields, 3 steps each
def test_study_three_steps_every_method_end_to_end(untrained_folder, tmp_path):
    from msdfast.denoisers.sd import load_stable_diffusion
    from msdfast.digits.study import METHODS, StudyConfig, row_name, run_study

    den = load_stable_diffusion(untrained_folder, cache_dir=False)
    cfg = StudyConfig(model=str(untrained_folder), out=str(tmp_path / "study"), digits=(3,), seeds=(0, 1),
                      psr=(1.05,), fields=("pixel", "grid"), steps=3, ddim_steps=3)
    rows = run_study(cfg, progress=False, denoiser=den)
    names = [r["row"] for r in rows]
    assert names[:2] == ["ddim", "real"] and len(names) == 2 + len(METHODS) * 2
    for m in METHODS:
        assert row_name(m, 1.05, "pixel") in names and row_name(m, 1.05, "grid") in names
    by = {r["row"]: r for r in rows}
    assert by["real"]["accuracy"] == 1.0 and by["ddim"]["nfe_per_gradient"] == 6
    assert by["sds-psr1.05-pixel"]["nfe_per_gradient"] == 2 and by["msd-paper-psr1.05-pixel"]["nfe_per_gradient"] > 2
    out = tmp_path / "study"
    with np.load(out / "images.npz") as z:
        for n in names:
            assert z[n].shape == (2, 32, 32) and z[n].min() >= 0 and z[n].max() <= 1
            assert z[f"{n}_labels"].tolist() == [3, 3]
        assert z["sds-psr1.05-pixel_seeds"].tolist() == [0, 1]
    for f in ("table.md", "table.json", "contact_pixel.png", "contact_grid.png", "nfe.png"):
        assert (out / f).is_file(), f
    # --resume reuses every cell (no denoiser call: a broken denoiser would raise) and reproduces the table
    from msdfast.errors import UserInputError
    with pytest.raises(UserInputError, match="--resume"):
        run_study(cfg, progress=False, denoiser=den)
    again = run_study(cfg, resume=True, progress=False, denoiser=object())
    assert json.dumps(again) == json.dumps(rows)


def test_shipped_model_is_a_trained_sd_folder_loaded_by_name(tmp_path):
    """The package's trained folder: loads by the built-in name through the SD loader, is a few MB, its DDIM + CFG
    samples are recognisably the prompted digits, and `msdfast image --model digits` runs on it."""
    from msdfast.cli import main
    from msdfast.denoisers.sd import load_stable_diffusion
    from msdfast.digits.classifier import load_classifier
    from msdfast.digits.gate import ddim_digits

    root = digits_model_path()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert 1e5 < size < 2e7
    den = load_stable_diffusion("digits", cache_dir=False)
    assert den.encode_resolution == 32 and den.latent_size == 8
    imgs = ddim_digits(den, list(range(10)), [7] * 10, steps=10)
    acc = float((load_classifier()(imgs).argmax(1) == torch.arange(10)).double().mean())
    assert acc >= 0.8            # an untrained folder scores ~0.1 (chance)
    rc = main(["image", "--model", "digits", "--prompt", "a handwritten 7", "--method", "sds", "--steps", "2",
               "--field", "pixel", "--out", str(tmp_path / "run"), "--no-progress", "--snapshot-every", "0"])
    assert rc == 0 and (tmp_path / "run" / "final.png").is_file()
