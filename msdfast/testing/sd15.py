"""Stable Diffusion 1.5's UNet and VAE from their published configurations, with random weights (no download).

For GPU timings with the real FLOP shape (scripts/gpu_validate.sh): the same architecture as the released
model (runwayml/stable-diffusion-v1-5 unet/ and vae/ config.json; diffusers' UNet2DConditionModel and
AutoencoderKL): 859,520,964 UNet and 83,653,863 VAE parameters, fp16 by default. The weights are random
(seeded), so outputs are meaningless; only speed and memory are representative. The text encoder is not built:
a step takes random [B, 77, 768] text states (CLIP ViT-L/14's hidden size).
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["SD15_UNET_CONFIG", "SD15_VAE_CONFIG", "SD15_UNET_PARAMS", "SD15_VAE_PARAMS", "sd15_unet", "sd15_vae",
           "sd15_unet_inputs"]

SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "sample_size": 512, "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "act_fn": "silu", "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}
SD15_UNET_PARAMS = 859_520_964
SD15_VAE_PARAMS = 83_653_863
TEXT_TOKENS, TEXT_DIM = 77, 768


def _build(cls: type, config: dict[str, Any], dtype: torch.dtype, device: torch.device | str, seed: int) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = cls(**config)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def sd15_unet(dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu", seed: int = 0) -> Any:
    """SD-1.5's UNet2DConditionModel (published config), random weights. device="meta" builds it without memory."""
    from diffusers import UNet2DConditionModel

    return _build(UNet2DConditionModel, SD15_UNET_CONFIG, dtype, device, seed)


def sd15_vae(dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu", seed: int = 0) -> Any:
    """SD-1.5's AutoencoderKL (published config), random weights."""
    from diffusers import AutoencoderKL

    return _build(AutoencoderKL, SD15_VAE_CONFIG, dtype, device, seed)


def sd15_unet_inputs(batch: int, dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu",
                     resolution: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents [B, 4, res/8, res/8], timesteps [B], text states [B, 77, 768]) for one UNet call."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 4, resolution // 8, resolution // 8, generator=g).to(device=device, dtype=dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    text = torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=g).to(device=device, dtype=dtype)
    return z, t, text
