"""The learned toy denoiser: a small magnitude-preserving MLP that outputs a log density (docs/math.md sec. 3).

Architecture (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself", public toy
code; EDM2's magnitude-preserving layers, Karras et al. 2024b eq. 47-49):
    input  [x / sqrt(sigma_data^2 + s^2), log(s) / 4, 1]       sigma_data = 0.5
    layers MPLinear(4, W), then num_layers x (MPSiLU, MPLinear(W, W))
    log p  = gain * mean(y^2) / s - |x / sqrt(sigma_data^2 + s^2)|^2 / 2
    score  = grad_x log p (autograd),  D(x; s) = x + s^2 score      (Tweedie, VE form)
MPLinear uses the weight normalised to unit norm per output row divided by sqrt(fan_in); MPSiLU is
silu(x) / 0.596. During training the stored weights are also re-normalised in place (forced weight
normalisation). The score needs autograd, so evaluation enables grad even inside torch.no_grad().
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..schedule import VPSchedule, toy_schedule
from .base import Cond, Denoiser

__all__ = ["ToyMLP", "MLPDenoiser", "load_mlp_denoiser", "save_toy_mlp"]


def _normalize(w: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Each row to unit norm (EDM2's normalize on a [out, in] weight)."""
    norm = torch.linalg.vector_norm(w, dim=1, keepdim=True, dtype=torch.promote_types(w.dtype, torch.float32))
    norm = torch.add(eps, norm, alpha=math.sqrt(norm.numel() / w.numel()))
    return w / norm.to(w.dtype)


class MPLinear(torch.nn.Module):
    """Magnitude-preserving linear layer without bias."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_dim, in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.weight.copy_(_normalize(self.weight))
        w = _normalize(self.weight) / math.sqrt(self.weight.shape[1])
        return x @ w.t()


class MPSiLU(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) / 0.596


class ToyMLP(torch.nn.Module):
    """log p(x; s) up to a constant, for 2D points x [B, 2] and noise levels s [B] (or a scalar)."""

    def __init__(self, hidden_dim: int = 64, num_layers: int = 4, sigma_data: float = 0.5, in_dim: int = 2) -> None:
        super().__init__()
        if hidden_dim < 1 or num_layers < 0 or sigma_data <= 0:
            raise ValueError("hidden_dim / num_layers / sigma_data: expected positive sizes and sigma_data > 0")
        self.hidden_dim, self.num_layers, self.sigma_data, self.in_dim = hidden_dim, num_layers, sigma_data, in_dim
        layers: list[torch.nn.Module] = [MPLinear(in_dim + 2, hidden_dim)]
        for _ in range(num_layers):
            layers += [MPSiLU(), MPLinear(hidden_dim, hidden_dim)]
        self.layers = torch.nn.Sequential(*layers)
        self.gain = torch.nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, s: torch.Tensor | float) -> torch.Tensor:
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device).broadcast_to(x.shape[:-1]).unsqueeze(-1)
        xs = x / (self.sigma_data ** 2 + s ** 2).sqrt()
        y = self.layers(torch.cat([xs, s.log() / 4, torch.ones_like(s)], dim=-1))
        return (y ** 2).mean(-1) * self.gain / s.squeeze(-1) - 0.5 * (xs ** 2).sum(-1)

    def score(self, x: torch.Tensor, s: torch.Tensor | float, create_graph: bool = False) -> torch.Tensor:
        """grad_x log p(x; s) by autograd (enabled here even under torch.no_grad)."""
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            logp = self(xx, s)
            (g,) = torch.autograd.grad(logp.sum(), xx, create_graph=create_graph)
        return g

    def config(self) -> dict:
        return {"hidden_dim": self.hidden_dim, "num_layers": self.num_layers, "sigma_data": self.sigma_data,
                "in_dim": self.in_dim}


class MLPDenoiser(Denoiser):
    """VE denoiser D(x; s) = x + s^2 grad log p_theta(x; s) of a trained `ToyMLP` (the condition is ignored:
    each toy model is trained on one class or data set; CFG / autoguidance use a second model as `guide`)."""

    def __init__(self, net: ToyMLP, schedule: VPSchedule | None = None, name: str = "") -> None:
        super().__init__(schedule or toy_schedule())
        self.net = net.eval().requires_grad_(False)
        self.name = name

    def log_density(self, x: torch.Tensor, s: torch.Tensor | float) -> torch.Tensor:
        """The model's unnormalised log p(x; s) [B] (float32)."""
        return self.net(x.to(torch.float32), s)

    def score(self, x: torch.Tensor, s: torch.Tensor | float) -> torch.Tensor:
        return self.net.score(x.to(torch.float32), torch.as_tensor(s, dtype=torch.float32, device=x.device)).to(x.dtype)

    def _denoise_ve(self, x: torch.Tensor, s: torch.Tensor, cond: Cond) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.net.in_dim:
            raise ValueError(f"x: expected [B, {self.net.in_dim}] points, got {tuple(x.shape)}")
        s32 = s.to(torch.float32).reshape(-1)
        d = x.to(torch.float32) + s32[:, None] ** 2 * self.net.score(x.to(torch.float32), s32)
        return d.to(x.dtype)


def save_toy_mlp(net: ToyMLP, path: str | Path, metadata: dict | None = None) -> None:
    """Save a ToyMLP as safetensors; its config (and any metadata) go into the header as JSON."""
    from safetensors.torch import save_file
    meta = {"config": json.dumps(net.config()), **{k: json.dumps(v) for k, v in (metadata or {}).items()}}
    save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(path), metadata=meta)


def load_mlp_denoiser(path: str | Path, schedule: VPSchedule | None = None) -> MLPDenoiser:
    """An MLPDenoiser from a .safetensors file written by `save_toy_mlp` (safetensors only: no pickle).

    The ToyMLP config comes from the file's metadata; the other metadata entries end up in `.metadata`.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no weights at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    if "config" not in meta:
        raise ValueError(f"path: {path} holds no ToyMLP config in its safetensors metadata")
    net = ToyMLP(**meta.pop("config"))
    net.load_state_dict(load_file(str(path)))
    den = MLPDenoiser(net, schedule, name=path.stem)
    den.metadata = meta
    return den
