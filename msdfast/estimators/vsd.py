"""VSD: variational score distillation (ProlificDreamer, Wang et al. 2023, eq. 9; docs/math.md sec. 2).

eps_phi: on Stable Diffusion, ProlificDreamer's LoRA of the UNet with its camera conditioning
(msdfast.estimators.vsd_lora); on the 2D toys and other denoisers, a small MLP / conv net (`VariationalNet`).

Guidance-scale conventions of the public code of each baseline (msdfast's `guidance_scale` is always the
diffusers w of eps_u + w (eps_c - eps_u); docs/math.md sec. 1):
  VSD (ProlificDreamer, threestudio's stable-diffusion-vsd-guidance): eps_u + s (eps_c - eps_u) -- the diffusers
      form, so its s = 7.5 is msdfast's w = 7.5; eps_phi is used camera-conditional (its guidance_scale_lora 1).
  SDS (DreamFusion; threestudio's stable-diffusion-guidance) and SDI (threestudio's stable-diffusion-sdi-guidance):
      eps_c + s (eps_c - eps_u), i.e. w = s + 1 (SDI's inversion s = -7.5 is w = -6.5).
  MSD (paper eq. 13): (1 + w') eps_c - w' eps_u, i.e. w = w' + 1.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from .. import ops
from ..denoisers.base import Cond, Denoiser
from ..errors import UserInputError
from ..samplers.guidance import coefficients
from .common import GuidedEstimator, weighting


def _time_features(t: torch.Tensor, T: int, n: int = 8) -> torch.Tensor:
    """Sinusoidal features of tau = t / T: [B, 2n]."""
    freqs = torch.exp(torch.arange(n, device=t.device, dtype=torch.float32) * math.log(1000.0) / max(n - 1, 1))
    a = (t.to(torch.float32) / T)[:, None] * freqs[None] * math.pi
    return torch.cat([a.sin(), a.cos()], dim=1)


class VariationalNet(nn.Module):
    """The default eps_phi(z, t): an MLP for points [B, d], a small conv net for latents [B, C, H, W].

    Time enters as sinusoidal features of t / T (concatenated; broadcast over pixels for latents). The last
    layer starts at zero, so eps_phi = 0 at the start of a run. Unconditional: one eps_phi per estimator.
    """

    def __init__(self, sample_shape: Sequence[int], T: int, width: int = 64) -> None:
        super().__init__()
        self.sample_shape, self.T = tuple(int(s) for s in sample_shape), int(T)
        nt = 16
        if len(self.sample_shape) == 1:
            d = self.sample_shape[0]
            self.net = nn.Sequential(nn.Linear(d + nt, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                     nn.Linear(width, d))
        elif len(self.sample_shape) == 3:
            c = self.sample_shape[0]
            self.net = nn.Sequential(nn.Conv2d(c + nt, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                     nn.Conv2d(width, c, 3, padding=1))
        else:
            raise ValueError(f"x: the default variational net handles [B, d] or [B, C, H, W], got sample shape "
                             f"{self.sample_shape}; pass phi= for other shapes")
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Cond = None,
                camera: torch.Tensor | None = None) -> torch.Tensor:
        """eps_phi(z, t); the condition and camera are ignored (one unconditional eps_phi per estimator)."""
        f = _time_features(t, self.T).to(z.dtype)
        if z.ndim == 2:
            return self.net(torch.cat([z, f], dim=1))
        f = f[:, :, None, None].expand(-1, -1, z.shape[2], z.shape[3])
        return self.net(torch.cat([z, f], dim=1))


class VSD(GuidedEstimator):
    """g = w(t) (eps_g(z_t, t) - eps_phi(z_t, t, c)), eps_phi trained online on the current x (ProlificDreamer).

        t ~ U{t_min..t_max}, eps ~ N(0, I), z_t = alpha_t x + sigma_t eps;
        g from the CURRENT eps_phi (ops.distill_grad with eps_target = eps_phi), then eps_phi takes
        `phi_steps` optimiser steps on the denoising loss of z = alpha x + sigma n at an INDEPENDENTLY drawn t'
        with x detached (the particles' current distribution), `phi_batch` noise draws per particle.

    eps_phi (option `phi`, default chosen by the denoiser):
      * Stable Diffusion (a denoiser with a diffusers UNet): ProlificDreamer's -- LoRA rank 4 on the UNet's
        attention projections (peft) plus the camera embedding added to the time embedding, both zero at step 0
        (eps_phi == the frozen UNet exactly), AdamW lr 1e-4, t' ~ U{0..T-1}, camera dropped for 10% of the
        batches, native (eps / v) target (`msdfast.estimators.vsd_lora`). Give the cameras with `set_camera`
        (camera-to-world [B, 4, 4]; None = zero camera, the 2D case).
      * otherwise (2D toys, latent toys): `VariationalNet`, a small MLP / conv net, Adam lr 1e-3, t' ~ U{t_min..t_max}.
      * or a module phi(z, t, cond) -> eps of your own (Adam).

    Options (plus `GuidedEstimator`'s; guidance_scale is ProlificDreamer's own s, module doc):
        phi: the variational model (default: chosen by the denoiser, above).
        phi_lr: eps_phi's learning rate (default 1e-4 for the LoRA, ProlificDreamer's; 1e-3 for the small net).
        phi_steps: optimiser steps of eps_phi per call (1, ProlificDreamer's).
        phi_batch: noise draws per particle in each eps_phi step (1).
        phi_width: hidden width of `VariationalNet` (64).

    NFE per call (batch B, c = 2 with CFG/autoguidance else 1): B c for the pretrained model. eps_phi's
    evaluations (B for g, phi_steps phi_batch B for training) are reported as info["phi_evals"].
    """

    name = "vsd"

    def __init__(self, denoiser: Denoiser, *, phi: nn.Module | None = None, phi_lr: float | None = None,
                 phi_steps: int = 1, phi_batch: int = 1, phi_width: int = 64, **options: Any) -> None:
        super().__init__(denoiser, **options)
        if phi_lr is not None and not phi_lr > 0:
            raise UserInputError(f"phi_lr: must be positive, got {phi_lr}")
        if int(phi_steps) < 0 or int(phi_batch) < 1:
            raise UserInputError("phi_steps: must be >= 0 and phi_batch >= 1")
        self.phi, self.phi_lr, self.phi_steps, self.phi_batch = phi, phi_lr, int(phi_steps), int(phi_batch)
        self.phi_width = int(phi_width)
        self.optimizer: torch.optim.Optimizer | None = None
        self.camera: torch.Tensor | None = None
        if phi is not None:
            self.optimizer = torch.optim.Adam(phi.parameters(), lr=self.phi_lr or 1e-3)
        self._pending_state: dict[str, Any] | None = None

    @property
    def lora(self) -> bool:
        """True when eps_phi is ProlificDreamer's LoRA of the Stable Diffusion UNet."""
        from .vsd_lora import LoRAVariationalUNet
        return isinstance(self.phi, LoRAVariationalUNet)

    def set_camera(self, camera: torch.Tensor | None) -> None:
        """Camera-to-world matrices [B, 4, 4] of the renders of the next calls (None: zero camera, 2D)."""
        if camera is not None and (camera.ndim != 3 or tuple(camera.shape[1:]) != (4, 4)):
            raise ValueError(f"camera: expected camera-to-world matrices [B, 4, 4], got {tuple(camera.shape)}")
        self.camera = None if camera is None else camera.detach()

    def _ensure_phi(self, x: torch.Tensor) -> None:
        if self.phi is None:
            from .vsd_lora import ADAMW, LoRAVariationalUNet, torch_sd_denoiser
            sd = torch_sd_denoiser(self.denoiser)
            if sd is not None and x.ndim == 4:
                self.phi = LoRAVariationalUNet(sd)
                self.optimizer = torch.optim.AdamW(self.phi.trainable().values(),
                                                   **{**ADAMW, "lr": self.phi_lr or ADAMW["lr"]})
            else:
                self.phi = VariationalNet(x.shape[1:], self.schedule.num_train_timesteps, self.phi_width)
                self.phi.to(device=x.device, dtype=x.dtype)
                self.optimizer = torch.optim.Adam(self.phi.parameters(), lr=self.phi_lr or 1e-3)
        if self._pending_state is not None:
            if self.lora:
                self.phi.load_trainable(self._pending_state["phi"])
            else:
                self.phi.load_state_dict(self._pending_state["phi"])
            self.optimizer.load_state_dict(self._pending_state["optimizer"])
            self._pending_state = None

    def _phi(self, z: torch.Tensor, t: torch.Tensor, cond: Cond, camera: torch.Tensor | None) -> torch.Tensor:
        return self.phi(z, t, cond, camera) if self.lora else self.phi(z, t, cond)

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        self._ensure_phi(x)
        B, dev, sch = x.shape[0], x.device, self.schedule
        t = self.sample_t(B, dev, generator)
        eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        z = ops.noise_to_levels(x, eps, sch.alpha(t, device=dev)[:, None], sch.sigma(t, device=dev)[:, None])
        guidance = self.guidance(cond, uncond)
        pred = guidance.predict(z, t, tag=self.name)
        eps_phi = self._phi(z, t, cond, self.camera).detach()
        coef = coefficients(guidance, B, t, dev, w=pred.w, r=pred.r, weight=weighting(self.weighting, sch, t))
        g, _, norm = ops.distill_grad(pred.eps_c, eps_phi.to(pred.eps_c.dtype), coef, eps_u=pred.eps_u,
                                      clip=self.clip)
        phi_loss = self._train_phi(x, cond, generator)
        return g, {"t": t, "grad_norm": norm, "phi_loss": phi_loss,
                   "phi_evals": B + self.phi_steps * self.phi_batch * B}

    def _train_phi(self, x: torch.Tensor, cond: Cond, generator: torch.Generator | None) -> float | None:
        """phi_steps optimiser steps of the denoising loss on the current particles (x detached), each at a t
        drawn independently of the gradient's (the LoRA: U{0..T-1} as ProlificDreamer; else U{t_min..t_max})."""
        if self.phi_steps == 0:
            return None
        sch, dev = self.schedule, x.device
        xr = x.detach().repeat(self.phi_batch, *([1] * (x.ndim - 1)))
        cr = None if cond is None else cond.repeat(self.phi_batch, *([1] * (cond.ndim - 1)))
        loss_v = None
        with torch.enable_grad():
            for _ in range(self.phi_steps):
                if self.lora:
                    from .vsd_lora import CAMERA_DROP
                    T = sch.num_train_timesteps
                    t = torch.randint(0, T, (xr.shape[0],), generator=generator, device=dev)
                    n = torch.randn(xr.shape, generator=generator, device=dev, dtype=x.dtype)
                    drop = bool(torch.rand((), generator=generator, device=dev) < CAMERA_DROP)
                    cam = None if self.camera is None or drop else self.camera
                    loss = self.phi.loss(xr, t, n, cr, cam)
                else:
                    t = self.sample_t(xr.shape[0], dev, generator)
                    n = torch.randn(xr.shape, generator=generator, device=dev, dtype=x.dtype)
                    z = ops.noise_to_levels(xr, n, sch.alpha(t, device=dev)[:, None], sch.sigma(t, device=dev)[:, None])
                    loss = (self._phi(z, t, cr, None) - n).pow(2).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_v = loss.detach()
        return loss_v

    def state_dict(self) -> dict[str, Any]:
        """Step counters, eps_phi's trainable weights (the LoRA and camera embedding on SD, the whole small net
        otherwise) and its optimiser state."""
        st = super().state_dict()
        if self.phi is not None:
            phi = self.phi.state_dict_trainable() if self.lora else \
                {k: v.detach().cpu().clone() for k, v in self.phi.state_dict().items()}
            st.update(phi=phi, optimizer=copy.deepcopy(self.optimizer.state_dict()))
        return st

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "phi" in state:
            self._pending_state = {"phi": state["phi"], "optimizer": state["optimizer"]}
            if self.phi is not None:
                self._ensure_phi(torch.empty(0))
