"""A small NeRF for text-to-3D (MSD paper sec. 4.4; DreamFusion, Poole et al. 2022; threestudio's
implicit-volume + neural-environment-map background).

* Foreground: x in the bounding sphere |x| <= R -> hash grid (msdfast.fields.hashgrid, tiny-cuda-nn when
  available) on (x / R + 1) / 2 in [0, 1]^3 -> ReLU MLP (paper: 64 hidden units, 2 layers) -> (s, a_raw).
  Density  sigma(x) = act(s + b(x)) with the density blob b near the origin that makes the initial scene an
  object in the middle instead of empty space (threestudio `density_bias`):
      "blob_magic3d":     b(x) = scale (1 - |x| / std)
      "blob_dreamfusion": b(x) = scale exp(-|x|^2 / (2 std^2))
      "none":             b(x) = 0
  act = "shifted_softplus" softplus(v - 1) (threestudio's default), "softplus", or "exp" exp(min(v, 15)).
  Albedo   c(x) = sigmoid(a_raw) in (0, 1)^3 (no shading: the "albedo" shading of DreamFusion).
* Background: a small ReLU MLP on the ray direction d, c_bg(d) = sigmoid(MLP((d + 1) / 2)).
* Volume rendering (Max 1995; NeRF, Mildenhall et al. 2020, eq. 3) on the segment [t_0, t_1] of each ray inside
  the sphere, split into N equal bins of width delta = (t_1 - t_0) / N with one stratified sample per bin
  t_i = t_0 + (i + u_i) delta, u_i ~ U(0, 1) (u_i = 1/2 when not stratified):
      T_i = exp(-sum_{j<i} sigma_j delta),  alpha_i = 1 - exp(-sigma_i delta),  w_i = T_i alpha_i
      rgb = sum_i w_i c_i + (1 - sum_i w_i) c_bg(d),   opacity = sum_i w_i,   depth = sum_i w_i t_i.
  The bins tile the segment exactly, so a constant density sigma gives opacity = 1 - exp(-sigma (t_1 - t_0))
  to rounding (the sum telescopes). Rays that miss the sphere have delta = 0: opacity 0, background colour.
* Empty space (optional, `occupancy_resolution > 0`): an occupancy grid over the sphere's box, updated from the
  density field by `update_occupancy` (msdfast.fields.occupancy: Instant-NGP sec. 4, nerfacc's estimator).
  Rendering keeps the same bins and jitter and evaluates the network only at samples in occupied cells of rays
  that hit the sphere; the others get sigma = 0 (their weight w_i is then 0, so their albedo never matters).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

from .hashgrid import make_encoding
from .occupancy import OccupancyGrid

__all__ = ["NeRF", "default_nerf_grid_config", "sphere_intersect", "composite", "DENSITY_ACTIVATIONS",
           "DENSITY_BIASES"]

DENSITY_ACTIVATIONS = ("shifted_softplus", "softplus", "exp")
DENSITY_BIASES = ("blob_magic3d", "blob_dreamfusion", "none")


def default_nerf_grid_config() -> dict[str, Any]:
    """threestudio's implicit-volume grid: 16 levels x 2 features, 2^19 table, base 16, scale 1.4473 (max 4096)."""
    return {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
            "base_resolution": 16, "per_level_scale": 1.447269237440378}


def _mlp(n_in: int, hidden: int, n_hidden_layers: int, n_out: int) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    width = n_in
    for _ in range(n_hidden_layers):
        layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
        width = hidden
    layers.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*layers)


def sphere_intersect(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances t_0 <= t_1 of unit-direction rays with the sphere |x| = radius, clamped to
    t >= 0 (a camera inside the sphere starts at its origin); t_0 = t_1 for rays that miss. Shapes [R]."""
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - radius * radius
    disc = b * b - c                       # |o + t d|^2 = R^2  <=>  t^2 + 2 b t + c = 0
    hit = disc > 0
    sq = torch.sqrt(disc.clamp_min(0.0))
    t0 = (-b - sq).clamp_min(0.0)
    t1 = torch.where(hit, (-b + sq).clamp_min(0.0), t0)
    return t0, t1


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, delta: torch.Tensor,
              background: torch.Tensor) -> dict[str, torch.Tensor]:
    """NeRF eq. 3 quadrature: sigma [R, N], rgb [R, N, 3], t [R, N], delta [R, 1] or [R, N], background [R, 3].

    Transmittance from the exclusive cumulative sum of optical depths (exact telescoping, no cumprod drift).
    """
    tau = sigma * delta                                                    # optical depth of each bin
    T = torch.exp(-(torch.cumsum(tau, dim=-1) - tau))                      # exclusive: sum_{j<i}
    w = T * (1.0 - torch.exp(-tau))
    opacity = w.sum(-1, keepdim=True)
    color = (w[..., None] * rgb).sum(-2) + (1.0 - opacity) * background
    return {"rgb": color, "opacity": opacity, "depth": (w * t).sum(-1, keepdim=True), "weights": w}


class NeRF(torch.nn.Module):
    """Foreground hash-grid MLP (density + albedo) inside a sphere of radius `radius`, background MLP on d.

    `render(rays_o, rays_d)` takes rays [B, H, W, 3] (unit directions) and returns rgb [B, H, W, 3] in (0, 1),
    opacity [B, H, W, 1] and depth [B, H, W, 1].
    """

    def __init__(self, *, radius: float = 1.0, grid: Mapping[str, Any] | None = None, hidden: int = 64,
                 n_hidden_layers: int = 2, n_samples: int = 64, density_activation: str = "shifted_softplus",
                 density_bias: str = "blob_magic3d", blob_scale: float = 10.0, blob_std: float = 0.5,
                 bg_hidden: int = 16, bg_hidden_layers: int = 1, implementation: str = "auto",
                 seed: int | None = None, occupancy_resolution: int = 0, occupancy_threshold: float = 0.01,
                 occupancy_decay: float = 0.95) -> None:
        super().__init__()
        if not radius > 0:
            raise ValueError(f"radius: must be positive, got {radius}")
        if n_samples < 1:
            raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
        if hidden < 1 or n_hidden_layers < 0:
            raise ValueError(f"hidden/n_hidden_layers: must be >= 1 / >= 0, got {hidden}/{n_hidden_layers}")
        if density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"density_activation: expected one of {DENSITY_ACTIVATIONS}, "
                             f"got {density_activation!r}")
        if density_bias not in DENSITY_BIASES:
            raise ValueError(f"density_bias: expected one of {DENSITY_BIASES}, got {density_bias!r}")
        if not blob_std > 0:
            raise ValueError(f"blob_std: must be positive, got {blob_std}")
        self.radius, self.n_samples = float(radius), int(n_samples)
        self.density_activation, self.density_bias = density_activation, density_bias
        self.blob_scale, self.blob_std = float(blob_scale), float(blob_std)
        self.encoding = make_encoding(3, grid or default_nerf_grid_config(), implementation=implementation,
                                      seed=seed)
        self.mlp = _mlp(self.encoding.n_output_dims, hidden, n_hidden_layers, 4)
        self.bg_mlp = _mlp(3, bg_hidden, bg_hidden_layers, 3)
        if occupancy_resolution < 0:
            raise ValueError(f"occupancy_resolution: must be >= 0 (0: no grid), got {occupancy_resolution}")
        # step = the longest chord's bin width, so every ray's bins are no wider (module doc of .occupancy)
        self.occupancy = (OccupancyGrid(self.radius, occupancy_resolution, occupancy_threshold, occupancy_decay,
                                        step=2.0 * self.radius / self.n_samples)
                          if occupancy_resolution else None)

    # ------------------------------------------------------------------ fields
    def _bias(self, x: torch.Tensor) -> torch.Tensor:
        if self.density_bias == "blob_magic3d":
            return self.blob_scale * (1.0 - x.norm(dim=-1) / self.blob_std)
        if self.density_bias == "blob_dreamfusion":
            return self.blob_scale * torch.exp(-0.5 * (x * x).sum(-1) / self.blob_std ** 2)
        return torch.zeros_like(x[..., 0])

    def _activate(self, v: torch.Tensor) -> torch.Tensor:
        if self.density_activation == "shifted_softplus":
            return F.softplus(v - 1.0)
        if self.density_activation == "softplus":
            return F.softplus(v)
        return torch.exp(v.clamp_max(15.0))   # threestudio's trunc_exp bound: avoids inf densities early on

    def density_albedo(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma(x) [N] >= 0 and albedo(x) [N, 3] in (0, 1) at world points x [N, 3]."""
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"x: expected [N, 3], got {tuple(x.shape)}")
        u = ((x / self.radius + 1.0) * 0.5).clamp(0.0, 1.0)   # sphere's bounding box -> [0, 1]^3
        h = self.mlp(self.encoding(u).float())
        return self._activate(h[:, 0] + self._bias(x)), torch.sigmoid(h[:, 1:])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """sigma(x) [N] at world points x [N, 3]."""
        return self.density_albedo(x)[0]

    def update_occupancy(self, generator: torch.Generator | None = None) -> None:
        """One occupancy-grid update from the current density field (no-op without a grid)."""
        if self.occupancy is not None:
            self.occupancy.update(self.density, generator=generator)

    def background(self, d: torch.Tensor) -> torch.Tensor:
        """c_bg(d) [N, 3] in (0, 1) for unit directions d [N, 3]."""
        return torch.sigmoid(self.bg_mlp((d + 1.0) * 0.5))

    # ------------------------------------------------------------------ rendering
    def render(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, generator: torch.Generator | None = None,
               stratified: bool = True, n_samples: int | None = None, skip_empty: bool = True
               ) -> dict[str, torch.Tensor]:
        """Volume-render rays [..., 3] (module doc); stratified jitter from `generator` (midpoints if False).

        skip_empty: with an occupancy grid, evaluate the network only at samples in occupied cells (module doc);
        False renders densely. "samples_evaluated" in the result is the fraction of samples evaluated."""
        if rays_o.shape != rays_d.shape or rays_o.shape[-1] != 3:
            raise ValueError(f"rays_o/rays_d: expected equal shapes [..., 3], got {tuple(rays_o.shape)} and "
                             f"{tuple(rays_d.shape)}")
        n = int(n_samples or self.n_samples)
        lead = rays_o.shape[:-1]
        o, d = rays_o.reshape(-1, 3).float(), rays_d.reshape(-1, 3).float()
        t0, t1 = sphere_intersect(o, d, self.radius)
        delta = ((t1 - t0) / n)[:, None]                                           # [R, 1]
        if stratified:
            u = torch.rand(o.shape[0], n, generator=generator, device=o.device)
        else:
            u = torch.full((o.shape[0], n), 0.5, device=o.device)
        t = t0[:, None] + (torch.arange(n, device=o.device, dtype=o.dtype) + u) * delta   # [R, N]
        pts = (o[:, None, :] + t[..., None] * d[:, None, :]).reshape(-1, 3)
        if skip_empty and self.occupancy is not None:
            keep = self.occupancy.occupied(pts) & (delta > 0).expand(-1, n).reshape(-1)
            idx = keep.nonzero().squeeze(1)
            s_k, a_k = self.density_albedo(pts[idx])
            sigma = s_k.new_zeros(pts.shape[0]).index_copy(0, idx, s_k)
            albedo = a_k.new_zeros(pts.shape[0], 3).index_copy(0, idx, a_k)
            evaluated = idx.numel() / max(pts.shape[0], 1)
        else:
            sigma, albedo = self.density_albedo(pts)
            evaluated = 1.0
        out = composite(sigma.view(-1, n), albedo.view(-1, n, 3), t, delta, self.background(d))
        return {"rgb": out["rgb"].reshape(*lead, 3), "opacity": out["opacity"].reshape(*lead, 1),
                "depth": out["depth"].reshape(*lead, 1), "samples_evaluated": evaluated}
