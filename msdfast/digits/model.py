"""The digits latent-diffusion model in Stable Diffusion's exact diffusers folder format.

Components (all diffusers / transformers classes SD uses; only the sizes differ):
* vae/: AutoencoderKL, 3 encoder blocks (spatial factor 4): 32x32 RGB <-> 4x8x8 latents; its
  `scaling_factor` is set after training to 1 / std of the training latents (as SD's 0.18215 was chosen).
* text_encoder/ + tokenizer/: a 2-layer CLIPTextModel (hidden TEXT_DIM) and a real CLIPTokenizer whose BPE
  vocabulary is the 256 byte symbols (+ end-of-word forms) plus whole-word merges for the prompt words, so
  "a handwritten seven" is 3 tokens; model_max_length MAX_TOKENS.
* unet/: UNet2DConditionModel with cross-attention on the text states (sample_size 8).
* scheduler/: DDIMScheduler config with SD's scaled_linear betas (training is DDPM on the same betas).

`digits_model_path()` is the shipped, trained folder (package data, `msdfast digits train` remakes it);
`resolve_model("digits")` maps the built-in name to it, any other string is a folder path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

__all__ = ["NUMBER_WORDS", "PROMPT_TEMPLATES", "STUDY_TEMPLATE", "prompt_for", "training_prompts",
           "build_components", "write_tokenizer", "save_folder", "digits_model_path", "resolve_model",
           "TEXT_DIM", "MAX_TOKENS", "LATENT_SIZE", "BUILTIN_NAME"]

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# {d}: the numeral, {w}: the word.
PROMPT_TEMPLATES = ("a handwritten {d}", "a handwritten {w}", "{w}", "{d}", "the digit {d}", "the number {w}")
STUDY_TEMPLATE = "a handwritten {d}"
_EXTRA_WORDS = ("a", "handwritten", "the", "digit", "number")
TEXT_DIM = 64
MAX_TOKENS = 16
LATENT_SIZE = 8
BUILTIN_NAME = "digits"
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def prompt_for(digit: int, template: str = STUDY_TEMPLATE) -> str:
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit: expected 0..9, got {digit!r}")
    return template.format(d=int(digit), w=NUMBER_WORDS[int(digit)])


def training_prompts(digit: int) -> list[str]:
    return [prompt_for(digit, t) for t in PROMPT_TEMPLATES]


def digits_model_path() -> Path:
    """The shipped trained folder (msdfast/digits/model/; the SD loader's built-in model 'digits')."""
    from ..denoisers.sd import BUILTIN_MODELS
    return BUILTIN_MODELS[BUILTIN_NAME]


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """'digits' -> the shipped folder (unless a path named 'digits' exists); else the SD loader's resolution."""
    from ..denoisers.sd import resolve_model as sd_resolve_model
    return sd_resolve_model(name_or_path)


def write_tokenizer(folder: Path) -> int:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, configs); returns the vocabulary size.

    Vocabulary: the byte-level symbols and their end-of-word forms (every string tokenises), then for each
    prompt word w the chain of merges (w0 w1), (w0w1 w2), ..., ending in 'w</w>', then the two specials.
    """
    from ..testing.tiny_sd import _bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[str] = []
    for word in NUMBER_WORDS + _EXTRA_WORDS:
        if len(word) < 2:
            continue
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        cur = parts[0]
        for nxt in parts[1:]:
            line = f"{cur} {nxt}"
            if line not in merges:
                merges.append(line)
            cur = cur + nxt
            vocab.setdefault(cur, len(vocab))
    for s in (_BOS, _EOS):
        vocab.setdefault(s, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_TOKENS, "bos_token": _BOS,
        "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS, "do_lower_case": True}), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": _BOS, "eos_token": _EOS, "unk_token": _EOS, "pad_token": _EOS}), encoding="utf-8")
    return len(vocab)


def build_components(vocab_size: int, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Fresh (untrained) unet, vae, text_encoder with the digits model's configs (seeded)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=4, sample_size=LATENT_SIZE * 4)
    torch.manual_seed(seed + 1)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1, projection_dim=TEXT_DIM,
        layer_norm_eps=1e-5))
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_DIM,
        attention_head_dim=16, norm_num_groups=8)
    return {"vae": vae, "text_encoder": text, "unet": unet}


def scheduler_config() -> dict:
    from diffusers import DDIMScheduler

    return dict(DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type="epsilon").config)


def save_folder(root: Path, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module) -> Path:
    """save_pretrained every component (safetensors) + tokenizer + scheduler + model_index.json."""
    from diffusers import DDIMScheduler
    import diffusers

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(root / "unet", safe_serialization=True)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    text_encoder.save_pretrained(root / "text_encoder", safe_serialization=True)
    write_tokenizer(root / "tokenizer")
    DDIMScheduler.from_config(scheduler_config()).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False}, indent=2), encoding="utf-8")
    return root
