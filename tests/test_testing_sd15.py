"""msdfast.testing.sd15: SD-1.5's UNet and VAE from the published configs (random weights, no download), built on
the meta device (no memory): the parameter counts of the released model and the forward shapes."""
from __future__ import annotations

import torch

from msdfast.testing.sd15 import SD15_UNET_PARAMS, SD15_VAE_PARAMS, sd15_unet, sd15_unet_inputs, sd15_vae


def test_sd15_unet_and_vae_have_the_released_architecture():
    unet, vae = sd15_unet(device="meta"), sd15_vae(device="meta")
    assert sum(p.numel() for p in unet.parameters()) == SD15_UNET_PARAMS == 859_520_964
    assert sum(p.numel() for p in vae.parameters()) == SD15_VAE_PARAMS == 83_653_863
    assert all(p.dtype == torch.float16 for p in unet.parameters())
    z, t, text = sd15_unet_inputs(2, device="meta")
    out = unet(z, t, encoder_hidden_states=text).sample
    assert out.shape == (2, 4, 64, 64) and out.dtype == torch.float16
    lat = vae.encode(torch.empty(1, 3, 512, 512, device="meta", dtype=torch.float16)).latent_dist.mean
    assert lat.shape == (1, 4, 64, 64)
