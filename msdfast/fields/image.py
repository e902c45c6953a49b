"""Image fields: what text-to-2D distillation optimises (MSD paper sec. 4.4).

* `ImageField`: a coordinate network f(p; theta): [0, 1]^2 -> RGB, a multiresolution hash-grid encoding
  (msdfast.fields.hashgrid; tiny-cuda-nn when available) followed by a small ReLU MLP and a sigmoid.
* `PixelField`: the image itself as parameters (sigmoid of logits), for debugging the pipeline.
* `LatentField`: SD latents as parameters; `render` returns latents directly (`is_latent = True`) so the
  pipeline skips the VAE encoder -- the cheapest debugging setting.

Every field renders a batch [1, C, H, W]; RGB fields output values in [0, 1].
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from .hashgrid import make_encoding

__all__ = ["ImageField", "PixelField", "LatentField", "build_field", "pixel_grid", "FIELDS"]

FIELDS = ("grid", "pixel", "latent")


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel centres ((j + 0.5) / W, (i + 0.5) / H) in [0, 1]^2, row-major: [H * W, 2] as (x, y)."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def default_grid_config(resolution: int) -> dict[str, Any]:
    """Hash grid reaching the render resolution at its finest level (16 levels, 2 features, 2^19 table)."""
    return {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
            "base_resolution": 16, "max_resolution": max(int(resolution), 17)}


class ImageField(torch.nn.Module):
    """f(p; theta) = sigmoid(MLP(HashGrid(p))): [0, 1]^2 -> RGB."""

    is_latent = False

    def __init__(self, resolution: int, *, grid: Mapping[str, Any] | None = None, hidden: int = 64,
                 n_hidden_layers: int = 2, implementation: str = "auto", seed: int | None = None) -> None:
        super().__init__()
        if resolution < 1:
            raise ValueError(f"resolution: must be positive, got {resolution}")
        self.resolution = int(resolution)
        self.encoding = make_encoding(2, grid or default_grid_config(resolution), implementation=implementation,
                                      seed=seed)
        layers: list[torch.nn.Module] = []
        width = self.encoding.n_output_dims
        for _ in range(n_hidden_layers):
            layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, 3))
        self.mlp = torch.nn.Sequential(*layers)
        self.register_buffer("_coords", pixel_grid(self.resolution, self.resolution), persistent=False)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """RGB at points p [N, 2] in [0, 1]^2 -> [N, 3] in (0, 1)."""
        return torch.sigmoid(self.mlp(self.encoding(p).float()))

    def render(self) -> torch.Tensor:
        r = self.resolution
        return self(self._coords).reshape(r, r, 3).permute(2, 0, 1).unsqueeze(0)


class PixelField(torch.nn.Module):
    """The image as parameters: sigmoid(logits) [1, 3, H, W]; starts mid-grey with small noise."""

    is_latent = False

    def __init__(self, resolution: int, *, seed: int | None = None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.logits = torch.nn.Parameter(0.01 * torch.randn(1, 3, resolution, resolution, generator=gen))

    def render(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


class LatentField(torch.nn.Module):
    """SD latents as parameters [1, C, h, w]; the pipeline feeds them to the estimator without the VAE."""

    is_latent = True

    def __init__(self, latent_size: int, channels: int = 4, *, seed: int | None = None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.latents = torch.nn.Parameter(torch.randn(1, channels, latent_size, latent_size, generator=gen))

    def render(self) -> torch.Tensor:
        return self.latents


def build_field(kind: str, *, resolution: int, latent_size: int, latent_channels: int = 4,
                grid: Mapping[str, Any] | None = None, seed: int | None = None) -> torch.nn.Module:
    """A field by name: 'grid' (hash-grid MLP), 'pixel' or 'latent'."""
    if kind == "grid":
        return ImageField(resolution, grid=grid, seed=seed)
    if kind == "pixel":
        return PixelField(resolution, seed=seed)
    if kind == "latent":
        return LatentField(latent_size, latent_channels, seed=seed)
    raise ValueError(f"field: expected one of {FIELDS}, got {kind!r}")
