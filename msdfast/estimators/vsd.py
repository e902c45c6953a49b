"""VSD: variational score distillation (ProlificDreamer, Wang et al. 2023, eq. 9; MATH.md sec. 2)."""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
from torch import nn

from .. import ops
from ..denoisers.base import Cond, Denoiser
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

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        f = _time_features(t, self.T).to(z.dtype)
        if z.ndim == 2:
            return self.net(torch.cat([z, f], dim=1))
        f = f[:, :, None, None].expand(-1, -1, z.shape[2], z.shape[3])
        return self.net(torch.cat([z, f], dim=1))


class VSD(GuidedEstimator):
    """g = w(t) (eps_g(z_t, t) - eps_phi(z_t, t, c)), eps_phi trained online on the current x (ProlificDreamer).

        t ~ U{t_min..t_max}, eps ~ N(0, I), z_t = alpha_t x + sigma_t eps;
        g from the CURRENT eps_phi (ops.distill_grad with eps_target = eps_phi), then eps_phi takes
        `phi_steps` Adam steps on the denoising loss |eps_phi(alpha x + sigma n, t') - n|^2 over fresh
        (t', n) with x detached (the particles' current distribution), `phi_batch` noise draws per particle.

    Options (plus `GuidedEstimator`'s):
        phi: the variational model, a module called phi(z, t, cond) -> eps (default `VariationalNet`, built
            lazily for x's sample shape). LoRA hook for UNets (TODO, not implemented here): pass a
            LoRA-wrapped UNet adapter with that signature, and ProlificDreamer's camera/condition input.
        phi_lr (1e-3), phi_steps (1 per call, ProlificDreamer's), phi_batch (1), phi_width (64).

    NFE per call (batch B, c = 2 with CFG/autoguidance else 1): B c for the pretrained model. eps_phi's
    evaluations (B for g, phi_steps phi_batch B for training) are reported as info["phi_evals"].
    """

    name = "vsd"

    def __init__(self, denoiser: Denoiser, *, phi: nn.Module | None = None, phi_lr: float = 1e-3,
                 phi_steps: int = 1, phi_batch: int = 1, phi_width: int = 64, **options: Any) -> None:
        super().__init__(denoiser, **options)
        if not phi_lr > 0:
            raise ValueError(f"phi_lr: must be positive, got {phi_lr}")
        if int(phi_steps) < 0 or int(phi_batch) < 1:
            raise ValueError("phi_steps: must be >= 0 and phi_batch >= 1")
        self.phi, self.phi_lr, self.phi_steps, self.phi_batch = phi, float(phi_lr), int(phi_steps), int(phi_batch)
        self.phi_width = int(phi_width)
        self.optimizer: torch.optim.Optimizer | None = None
        if phi is not None:
            self.optimizer = torch.optim.Adam(phi.parameters(), lr=self.phi_lr)
        self._pending_state: dict[str, Any] | None = None

    def _ensure_phi(self, x: torch.Tensor) -> None:
        if self.phi is None:
            self.phi = VariationalNet(x.shape[1:], self.schedule.num_train_timesteps, self.phi_width)
            self.phi.to(device=x.device, dtype=x.dtype)
            self.optimizer = torch.optim.Adam(self.phi.parameters(), lr=self.phi_lr)
        if self._pending_state is not None:
            self.phi.load_state_dict(self._pending_state["phi"])
            self.optimizer.load_state_dict(self._pending_state["optimizer"])
            self._pending_state = None

    def _estimate(self, x: torch.Tensor, cond: Cond, uncond: Cond,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, dict[str, Any]]:
        self._ensure_phi(x)
        B, dev, sch = x.shape[0], x.device, self.schedule
        t = self.sample_t(B, dev, generator)
        eps = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
        z = ops.noise_to_levels(x, eps, sch.alpha(t, device=dev)[:, None], sch.sigma(t, device=dev)[:, None])
        guidance = self.guidance(cond, uncond)
        pred = guidance.predict(z, t, tag=self.name)
        eps_phi = self.phi(z, t, cond).detach()
        coef = coefficients(guidance, B, t, dev, w=pred.w, r=pred.r, weight=weighting(self.weighting, sch, t))
        g, _, norm = ops.distill_grad(pred.eps_c, eps_phi.to(pred.eps_c.dtype), coef, eps_u=pred.eps_u,
                                      clip=self.clip)
        phi_loss = self._train_phi(x, cond, generator)
        return g, {"t": t, "grad_norm": norm, "phi_loss": phi_loss,
                   "phi_evals": B + self.phi_steps * self.phi_batch * B}

    def _train_phi(self, x: torch.Tensor, cond: Cond, generator: torch.Generator | None) -> float | None:
        """phi_steps Adam steps of the denoising loss on the current particles (x detached)."""
        if self.phi_steps == 0:
            return None
        sch, dev = self.schedule, x.device
        xr = x.detach().repeat(self.phi_batch, *([1] * (x.ndim - 1)))
        cr = None if cond is None else cond.repeat(self.phi_batch, *([1] * (cond.ndim - 1)))
        loss_v = None
        with torch.enable_grad():
            for _ in range(self.phi_steps):
                t = self.sample_t(xr.shape[0], dev, generator)
                n = torch.randn(xr.shape, generator=generator, device=dev, dtype=x.dtype)
                z = ops.noise_to_levels(xr, n, sch.alpha(t, device=dev)[:, None], sch.sigma(t, device=dev)[:, None])
                loss = (self.phi(z, t, cr) - n).pow(2).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_v = loss.detach()
        return loss_v

    def state_dict(self) -> dict[str, Any]:
        """Step counters, eps_phi's weights and its optimiser state."""
        st = super().state_dict()
        if self.phi is not None:
            st.update(phi={k: v.detach().cpu().clone() for k, v in self.phi.state_dict().items()},
                      optimizer=copy.deepcopy(self.optimizer.state_dict()))
        return st

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "phi" in state:
            self._pending_state = {"phi": state["phi"], "optimizer": state["optimizer"]}
            if self.phi is not None:
                self._ensure_phi(torch.empty(0))
