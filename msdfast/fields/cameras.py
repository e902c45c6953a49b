"""Random cameras for text-to-3D (DreamFusion sec. 3 / threestudio's random-camera data module).

Conventions (threestudio's): world z is up; a camera at elevation e, azimuth a (degrees) and distance r sits at

    p = r (cos e cos a, cos e sin a, sin e)

and looks at the origin. Look-at frame (OpenGL: the camera looks along its -z axis):

    f = normalize(target - p),  right = normalize(f x up),  u = right x f,   c2w[:3, :3] = [right | u | -f],
    c2w[:3, 3] = p.

Pixel (i, j) of an H x W image with vertical field of view fovy has the camera-space direction

    d_cam = ((j + 0.5 - W / 2) / F, -(i + 0.5 - H / 2) / F, -1),   F = (H / 2) / tan(fovy / 2),

rotated to world space and normalised; every ray starts at p. Azimuth 0 looks at the object's front (+x side),
so the view-dependent prompt suffix (DreamFusion sec. 3: "front view" / "side view" / "back view", "overhead
view" above `overhead_threshold` degrees of elevation) follows from the azimuth bucket; the buckets are
`msdfast.prompts.view_direction`'s (one definition shared with the SD prompt embeddings).

All randomness comes from the caller's torch.Generator (reproducible, checkpointable).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..prompts import VIEW_SUFFIXES, view_direction

__all__ = ["CameraRanges", "Cameras", "sample_cameras", "fixed_cameras", "look_at", "camera_positions",
           "ray_bundle", "view_index", "view_suffixes", "VIEW_SUFFIXES"]


@dataclass(frozen=True)
class CameraRanges:
    """Uniform sampling ranges (threestudio's DreamFusion defaults; angles in degrees)."""

    elevation_range: tuple[float, float] = (-10.0, 45.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance_range: tuple[float, float] = (1.5, 2.0)
    fovy_range: tuple[float, float] = (40.0, 70.0)

    def validate(self) -> None:
        for name in ("elevation_range", "azimuth_range", "distance_range", "fovy_range"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name}: expected (lo, hi), got {getattr(self, name)!r}")
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name}: range must satisfy lo <= hi, got ({lo}, {hi})")
        if not (-90.0 <= self.elevation_range[0] and self.elevation_range[1] <= 90.0):
            raise ValueError(f"elevation_range: must lie in [-90, 90] degrees, got {self.elevation_range}")
        if self.distance_range[0] <= 0:
            raise ValueError(f"distance_range: must be positive, got {self.distance_range}")
        if not (0.0 < self.fovy_range[0] and self.fovy_range[1] < 180.0):
            raise ValueError(f"fovy_range: must lie in (0, 180) degrees, got {self.fovy_range}")


@dataclass
class Cameras:
    """A batch of B cameras: angles in degrees, c2w [B, 4, 4] (camera-to-world, OpenGL axes)."""

    elevation: torch.Tensor
    azimuth: torch.Tensor
    distance: torch.Tensor
    fovy: torch.Tensor
    c2w: torch.Tensor

    def __len__(self) -> int:
        return int(self.elevation.shape[0])


def camera_positions(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """p = r (cos e cos a, cos e sin a, sin e) [B, 3] from degrees."""
    e, a = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    return distance[:, None] * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], dim=-1)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: Sequence[float] = (0.0, 0.0, 1.0)
            ) -> torch.Tensor:
    """Camera-to-world [B, 4, 4] whose -z axis points from eye [B, 3] to target [B, 3] (default origin)."""
    if eye.ndim != 2 or eye.shape[1] != 3:
        raise ValueError(f"eye: expected [B, 3], got {tuple(eye.shape)}")
    target = torch.zeros_like(eye) if target is None else target.expand_as(eye)
    f = torch.nn.functional.normalize(target - eye, dim=-1)
    upv = torch.tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    right = torch.linalg.cross(f, upv, dim=-1)
    # Looking straight along `up` (elevation +-90): any right vector is valid; take world +y's.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.linalg.cross(f, torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype,
                                                                       device=eye.device).expand_as(eye)), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    u = torch.linalg.cross(right, f, dim=-1)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, u, -f, eye
    c2w[:, 3, 3] = 1.0
    return c2w


def _cameras(elevation: torch.Tensor, azimuth: torch.Tensor, distance: torch.Tensor,
             fovy: torch.Tensor) -> Cameras:
    return Cameras(elevation, azimuth, distance, fovy, look_at(camera_positions(elevation, azimuth, distance)))


def sample_cameras(n: int, ranges: CameraRanges = CameraRanges(), *, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Cameras:
    """n cameras with elevation, azimuth, distance and fovy drawn uniformly from `ranges` (4 draws of [n]).

    Elevation is uniform in degrees (threestudio's default, not uniform on the sphere).
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    ranges.validate()
    device = device if device is not None else (generator.device if generator is not None else "cpu")

    def uniform(lo_hi: tuple[float, float]) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=device)
        return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * u

    el, az, r, fov = (uniform(ranges.elevation_range), uniform(ranges.azimuth_range),
                      uniform(ranges.distance_range), uniform(ranges.fovy_range))
    return _cameras(el, az, r, fov)


def fixed_cameras(azimuths: Sequence[float], *, elevation: float = 15.0, distance: float = 1.75,
                  fovy: float = 55.0, device: torch.device | str | None = None) -> Cameras:
    """Cameras at the given azimuths (degrees), one elevation/distance/fovy -- the snapshot views."""
    az = torch.tensor(list(azimuths), dtype=torch.float32, device=device)
    full = lambda v: torch.full_like(az, float(v))  # noqa: E731
    return _cameras(full(elevation), az, full(distance), full(fovy))


def ray_bundle(cameras: Cameras, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray origins and unit directions, each [B, H, W, 3] in world space (pixel centres, see module doc)."""
    if height < 1 or width < 1:
        raise ValueError(f"height/width: must be >= 1, got {height}x{width}")
    c2w = cameras.c2w
    dev, dt = c2w.device, c2w.dtype
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fovy.to(dt)))             # [B]
    i = torch.arange(height, device=dev, dtype=dt) + 0.5
    j = torch.arange(width, device=dev, dtype=dt) + 0.5
    gi, gj = torch.meshgrid(i, j, indexing="ij")
    f = focal.view(-1, 1, 1)
    x, y = (gj - 0.5 * width) / f, -(gi - 0.5 * height) / f                                 # [B, H, W]
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)                                # [B, H, W, 3]
    d = torch.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], d_cam)
    d = torch.nn.functional.normalize(d, dim=-1)
    o = c2w[:, None, None, :3, 3].expand_as(d)
    return o, d


def view_index(cameras: Cameras) -> torch.Tensor:
    """Bucket per camera: 0 side, 1 front, 2 back, 3 overhead (threestudio's thresholds: 45, 45, 60 degrees)."""
    return view_direction(cameras.elevation.float().cpu(), cameras.azimuth.float().cpu())


def view_suffixes(cameras: Cameras) -> list[str]:
    """The DreamFusion prompt suffix of each camera ("front view", "side view", "back view", "overhead view")."""
    return [VIEW_SUFFIXES[int(k)] for k in view_index(cameras)]
