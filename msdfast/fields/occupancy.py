"""An occupancy grid over a NeRF's bounding box, updated from its density field, so rendering evaluates the
network only where there is density (Instant-NGP, Mueller et al. 2022, sec. 4 "Accelerated ray marching";
the same estimator as nerfacc's OccGridEstimator that threestudio uses).

The box [-R, R]^3 is cut into res^3 cells. Each update draws one uniform point x_c in every cell c and keeps a
decaying maximum of the density there (Instant-NGP's update rule):

    d_c <- max(decay * d_c, sigma(x_c))

A cell is occupied when a sample step of length `step` inside it, or in one of its `dilate`-neighbours (the
(2 dilate + 1)^3 cells around it), would have optical depth above `threshold`:

    occupied_c  <=>  max_{c' within dilate cells of c} d_c' * step > threshold
                     (step = 2 R / n_samples: the longest ray's bin width)

The dilation (default 1) is our conservative addition to Instant-NGP's rule: a cell only partly covered by an
object (its sampled point may fall outside) is still sampled when a neighbour saw the density, so sharp surfaces
are not clipped between updates; it costs a shell of one cell around the occupied set.

Rendering (msdfast.fields.nerf.NeRF.render) keeps the dense sampler's bins and stratified jitter and only skips
the network at samples in empty cells (their density is taken as 0). Every ray's bins are no wider than `step`,
so a skipped sample whose density is what the grid measured contributes optical depth tau <= threshold;
dropping it changes the transmittance by a factor exp(-tau) >= 1 - threshold and the rendered colour and opacity
by at most ~threshold per skipped sample in front of visible density (the tested tolerance is stated in
tests/test_occupancy.py). Cells whose density peaks between the sampled points can be missed until an update
lands on the peak; the decaying maximum keeps what earlier updates saw.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["OccupancyGrid"]


class OccupancyGrid(torch.nn.Module):
    """res^3 cells over [-radius, radius]^3; `density` (buffer, saved with the field) is d_c above."""

    def __init__(self, radius: float, resolution: int = 32, threshold: float = 0.01, decay: float = 0.95,
                 step: float = 2.0 / 64, dilate: int = 1) -> None:
        super().__init__()
        if resolution < 1:
            raise ValueError(f"resolution: must be >= 1, got {resolution}")
        if not threshold >= 0:
            raise ValueError(f"threshold: must be >= 0, got {threshold}")
        if not 0 <= decay <= 1:
            raise ValueError(f"decay: must be in [0, 1], got {decay}")
        if not step > 0:
            raise ValueError(f"step: must be positive, got {step}")
        if dilate < 0:
            raise ValueError(f"dilate: must be >= 0, got {dilate}")
        self.radius, self.resolution = float(radius), int(resolution)
        self.threshold, self.decay, self.step, self.dilate = float(threshold), float(decay), float(step), int(dilate)
        # +inf until the first update: every cell occupied, rendering is the dense sampler's
        self.register_buffer("density", torch.full((resolution,) * 3, float("inf")))

    def cell_index(self, x: torch.Tensor) -> torch.Tensor:
        """Flat cell index [N] of points x [N, 3] (clamped into the box)."""
        r = self.resolution
        ijk = ((x / self.radius + 1.0) * (0.5 * r)).long().clamp_(0, r - 1)
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]

    def occupied_cells(self) -> torch.Tensor:
        """Bool [res^3]: max over the dilate-neighbourhood of d_c * step > threshold."""
        occ = (self.density * self.step > self.threshold).float()[None, None]
        if self.dilate:
            k = 2 * self.dilate + 1
            occ = torch.nn.functional.max_pool3d(occ, k, stride=1, padding=self.dilate)
        return occ.reshape(-1) > 0

    def occupied(self, x: torch.Tensor) -> torch.Tensor:
        """Bool [N]: whether each point x [N, 3] lies in an occupied cell."""
        return self.occupied_cells()[self.cell_index(x)]

    def fraction_occupied(self) -> float:
        return float(self.occupied_cells().float().mean())

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], *,
               generator: torch.Generator | None = None, chunk: int = 1 << 16) -> None:
        """One update: d_c <- max(decay d_c, sigma(x_c)) at one uniform point x_c per cell (draws res^3 x 3
        uniforms from `generator`); the first update replaces the +inf initial values."""
        r = self.resolution
        dev = self.density.device
        ijk = torch.stack(torch.meshgrid(*(torch.arange(r, device=dev),) * 3, indexing="ij"), -1).reshape(-1, 3)
        u = torch.rand(ijk.shape[0], 3, generator=generator, device=dev)
        x = ((ijk + u) / r * 2.0 - 1.0) * self.radius
        sigma = torch.cat([density_fn(x[i:i + chunk]).float() for i in range(0, x.shape[0], chunk)])
        old = self.density.reshape(-1)
        new = torch.where(torch.isinf(old), sigma, torch.maximum(old * self.decay, sigma))
        self.density.copy_(new.reshape(self.density.shape))
