"""VSD's variational denoiser eps_phi on Stable Diffusion, as ProlificDreamer ships it (Wang et al. 2023, sec. 4;
its public code in threestudio's `stable-diffusion-vsd-guidance`).

eps_phi is the pretrained UNet with
* LoRA (rank 4, scale 1) on every attention projection (to_q, to_k, to_v, to_out.0 of self- and
  cross-attention), built with peft (`peft.inject_adapter_in_model`); ProlificDreamer's init: A ~ N(0, 1/r),
  B = 0 (peft's init_lora_weights="gaussian"), so the LoRA adds exactly 0 at step 0;
* its camera conditioning: the camera-to-world matrix, flattened to 16 numbers, through a small embedding
  (diffusers' `TimestepEmbedding(16, time_embed_dim)`: linear, SiLU, linear) installed as the UNet's class
  embedding, so the UNet ADDS it to the time embedding. Zero camera for 2D. threestudio leaves that embedding at
  its default init; msdfast zero-initialises its output layer so that eps_phi equals the frozen UNet EXACTLY at
  step 0 (the LoRA and the embedding both add exact zeros) -- the only departure, and it does not change what
  is trained.
The copy shares every pretrained weight and buffer with the denoiser's UNet (no second UNet in memory); only the
LoRA and camera-embedding parameters are trainable. Trained online by the VSD estimator: one AdamW step per
iteration (lr 1e-4, betas (0.9, 0.99), eps 1e-15: threestudio's prolificdreamer config) on the denoising loss of
the current renders at an independently drawn t ~ U{0..T-1}, against the model's native target (eps or v), with
the camera dropped to zero for 10% of the batches (threestudio's lora_cfg_training).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..denoisers.base import Cond
from ..errors import require_packages

LORA_RANK = 4
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
CAMERA_DIM = 16             # a flattened 4 x 4 camera-to-world matrix
CAMERA_DROP = 0.1           # share of training batches whose camera is zeroed (threestudio lora_cfg_training)
ADAMW = {"lr": 1e-4, "betas": (0.9, 0.99), "eps": 1e-15}   # threestudio prolificdreamer: the guidance's optimiser


def torch_sd_denoiser(denoiser: Any) -> Any:
    """The torch StableDiffusionDenoiser behind `denoiser` (itself, or an exported UNet's `host`), or None."""
    host = getattr(denoiser, "host", denoiser)
    return host if hasattr(host, "unet_output") and hasattr(host, "unet") else None


class LoRAVariationalUNet(nn.Module):
    """eps_phi(z, t, cond, camera) for a Stable Diffusion denoiser (module doc). `sd`: a StableDiffusionDenoiser."""

    def __init__(self, sd: Any, rank: int = LORA_RANK, seed: int = 0) -> None:
        super().__init__()
        require_packages("VSD on Stable Diffusion", ("diffusers", "peft"), "diffusers")
        object.__setattr__(self, "sd", sd)    # not a submodule: its weights are the frozen denoiser's
        # A fixed-seed init that leaves the global RNG streams untouched: a lazily built eps_phi must not shift a
        # resumed run's random draws (pipelines checkpoint the global RNG).
        devices = [sd.device] if sd.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self._build(sd, rank)

    def _build(self, sd: Any, rank: int) -> None:
        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig, inject_adapter_in_model
        base = sd.unet
        shared = {id(p): p for p in base.parameters()} | {id(b): b for b in base.buffers()}
        unet = copy.deepcopy(base, memo=shared)   # new modules around the SAME pretrained tensors
        time_dim = int(unet.time_embedding.linear_2.out_features)
        camera = TimestepEmbedding(CAMERA_DIM, time_dim).to(device=sd.device)
        nn.init.zeros_(camera.linear_2.weight)
        nn.init.zeros_(camera.linear_2.bias)
        unet.class_embedding = camera   # the UNet adds class_embedding(class_labels) to the time embedding
        config = LoraConfig(r=int(rank), lora_alpha=int(rank), init_lora_weights="gaussian",
                            target_modules=list(LORA_TARGETS), lora_dropout=0.0)
        self.unet = inject_adapter_in_model(config, unet, adapter_name="vsd")
        for name, p in self.unet.named_parameters():
            p.requires_grad_("lora_" in name or name.startswith("class_embedding."))
            if p.requires_grad:
                p.data = p.data.float()   # trained in float32 (peft casts adapters to an fp16 base's dtype)
        self.unet.train(False)

    def trainable(self) -> dict[str, nn.Parameter]:
        """The LoRA and camera-embedding parameters, by name (what the optimiser and state_dict hold)."""
        return {n: p for n, p in self.unet.named_parameters() if p.requires_grad}

    def state_dict_trainable(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in self.trainable().items()}

    def load_trainable(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable()
        if set(state) != set(params):
            raise ValueError("state: the saved eps_phi does not match this model's LoRA/camera parameters")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])

    @staticmethod
    def camera_labels(camera: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """[B, 16] flattened camera-to-world matrices (zeros without a camera: 2D)."""
        if camera is None:
            return torch.zeros(batch, CAMERA_DIM, device=device)
        c = camera.reshape(camera.shape[0], -1).to(device=device, dtype=torch.float32)
        if c.shape[1] != CAMERA_DIM:
            raise ValueError(f"camera: expected camera-to-world matrices [B, 4, 4], got {tuple(camera.shape)}")
        if c.shape[0] != batch:
            if batch % c.shape[0]:
                raise ValueError(f"camera: batch {c.shape[0]} does not divide the sample batch {batch}")
            c = c.repeat(batch // c.shape[0], 1)
        return c

    def native(self, z: torch.Tensor, t: torch.Tensor, cond: Cond, camera: torch.Tensor | None) -> torch.Tensor:
        """The UNet's native prediction (eps or v) with LoRA and camera."""
        labels = self.camera_labels(camera, z.shape[0], z.device)
        return self.sd.unet_output(z, t, cond, unet=self.unet, class_labels=labels)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Cond = None,
                camera: torch.Tensor | None = None) -> torch.Tensor:
        """eps_phi, converted from the native prediction exactly as the denoiser converts its own."""
        return self.sd.schedule.to_eps(self.native(z, t, cond, camera).float(), z.float(), t).to(z.dtype)

    def loss(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, cond: Cond,
             camera: torch.Tensor | None) -> torch.Tensor:
        """ProlificDreamer's denoising loss at z = alpha_t x + sigma_t noise: mean |native - target|^2, target
        = noise (eps models) or alpha_t noise - sigma_t x (v models), in float32."""
        sch = self.sd.schedule
        a = sch.alpha(t, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        s = sch.sigma(t, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        z = a * x.float() + s * noise.float()
        if sch.prediction_type == "epsilon":
            target = noise.float()
        elif sch.prediction_type == "v_prediction":
            target = a * noise.float() - s * x.float()
        else:
            target = x.float()
        return (self.native(z.to(x.dtype), t, cond, camera).float() - target).pow(2).mean()
