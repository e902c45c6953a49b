"""A tiny random Stable Diffusion saved as a local diffusers pipeline folder (no network, ever).

Every msdfast test and the CI smoke run use it in place of real SD weights. The components follow the tiny
configs of diffusers' own tests, shrunk so that a CPU forward takes
milliseconds, but keep SD's STRUCTURE: a UNet2DConditionModel with cross-attention, an AutoencoderKL with
SD's 8x spatial factor (4 encoder blocks), a CLIP text encoder, a CLIPTokenizer and a DDIM scheduler with SD's
scaled_linear betas. The UNet's `sample_size` is 8, so the natural render is 64x64 px -> 8x8 latents.

The tokenizer needs no hub download: we write a byte-level BPE vocabulary (the 256 byte symbols, the same with
the end-of-word marker, and the two CLIP specials; no merges) into `tokenizer/`, so every word is tokenised
character by character -- a real CLIPTokenizer, just with a trivial vocabulary (vocab size 514 < 1000).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import torch

__all__ = ["make_tiny_sd", "tiny_sd_path", "TINY_LATENT_SIZE", "TINY_RENDER_SIZE"]

TINY_LATENT_SIZE = 8     # unet sample_size
TINY_RENDER_SIZE = 64    # sample_size * 2 ** (len(vae blocks) - 1)
_TEXT_DIM = 32
_lock = threading.Lock()
_cache: dict[tuple, Path] = {}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (public algorithm)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _write_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(s, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "do_lower_case": True}), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}), encoding="utf-8")


def make_tiny_sd(folder: str | os.PathLike, *, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Build the tiny random SD and save it as a diffusers pipeline folder at `folder`; returns the path.

    prediction_type: "epsilon" (SD 1.5 / 2.1-base) or "v_prediction" (SD 2.1-768), written to the
    scheduler config exactly as real SD folders carry it.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type: expected 'epsilon' or 'v_prediction', got {prediction_type!r}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    # Seed before each component, as diffusers' tests do, so the folder is a pure function of the seed.
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=TINY_LATENT_SIZE, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=_TEXT_DIM,
        attention_head_dim=4, norm_num_groups=4)
    unet.save_pretrained(root / "unet")
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[4, 4, 8, 8], in_channels=3, out_channels=3, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, norm_num_groups=2, sample_size=TINY_RENDER_SIZE)
    vae.save_pretrained(root / "vae")
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=_TEXT_DIM, intermediate_size=37,
        layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=514,
        max_position_embeddings=77, projection_dim=_TEXT_DIM))
    text.save_pretrained(root / "text_encoder")
    _write_tokenizer(root / "tokenizer")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type
                  ).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"]}, indent=2), encoding="utf-8")
    return root


def tiny_sd_path(prediction_type: str = "epsilon", root: str | os.PathLike | None = None) -> Path:
    """The tiny SD folder, built once per process (and reused across processes when `root` is given)."""
    import tempfile

    key = (prediction_type, str(root))
    with _lock:
        if key not in _cache:
            base = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="msdfast-tiny-sd-"))
            folder = base / f"tiny-sd-{prediction_type}"
            if not (folder / "model_index.json").exists():
                make_tiny_sd(folder, prediction_type=prediction_type)
            _cache[key] = folder
        return _cache[key]


if __name__ == "__main__":  # python -m msdfast.testing.tiny_sd OUT_DIR [epsilon|v_prediction]
    import sys

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m msdfast.testing.tiny_sd OUT_DIR [epsilon|v_prediction]")
    print(make_tiny_sd(sys.argv[1], prediction_type=sys.argv[2] if len(sys.argv) > 2 else "epsilon"))
