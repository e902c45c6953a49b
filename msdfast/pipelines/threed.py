"""Text-to-3D: distil Stable Diffusion into a NeRF (MSD paper sec. 4.4, figure 6; DreamFusion's setup as in
threestudio).

Each step samples `batch_size` random cameras (msdfast.fields.cameras: elevation, azimuth, distance, fovy),
volume-renders the NeRF (msdfast.fields.nerf) at `render_size` px (64 by default, as threestudio's first
stage), encodes the renders with the VAE (bilinear upsampling to the model's encode resolution, 512 for SD 1.5),
asks the estimator for a descent gradient on the latents with the VIEW-DEPENDENT prompt of each camera
("<prompt>, front view" / side / back / overhead; the four embeddings are computed once and cached), and
back-propagates the loss trick through the VAE encoder and the renderer into the NeRF; AdamW steps theta.
The paper's settings: AdamW lr 1e-2, 10k steps, foreground MLP 64 hidden x 2 layers on a hash grid, a
monotonically decreasing bandwidth for MSD. DSD uses one seed eps* per shape across all views
(`shared_seed=True` unless given with --option).

The run loop, run folder and `--resume` semantics are `msdfast image`'s (msdfast.pipelines.common): config.json,
metrics.json, snapshots/step_*.png (the fixed snapshot views side by side, rgb above opacity), final.png,
progress.png, checkpoint.pt; resuming reproduces the uninterrupted run exactly on the CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..config import option
from ..errors import UserInputError
from .common import (DistillConfig, add_distill_arguments, make_optimizer, run_distillation, run_job,
                     run_pipeline)

__all__ = ["ThreeDConfig", "distill_3d", "add_3d_arguments", "run_3d", "build_nerf", "camera_ranges"]

_RANGES = ("elevation_range", "azimuth_range", "distance_range", "fovy_range")


@dataclass
class ThreeDConfig(DistillConfig):
    steps: int = 10000                    # paper: 10k for text-to-3D
    out: str = "runs/3d"
    ckpt_every: int = 500
    snapshot_every: int = 500
    render_size: int = option(64, help="NeRF render size in px (threestudio's first stage; upsampled for the VAE)")
    batch_size: int = option(1, help="views per step")
    n_samples: int = option(64, help="stratified samples per ray")
    radius: float = option(1.0, help="radius of the foreground's bounding sphere")
    hidden: int = option(64, help="foreground MLP width (paper: 64)")
    n_hidden_layers: int = option(2, flag="--layers", help="foreground MLP hidden layers (paper: 2)")
    grid: dict[str, Any] = option(default_factory=dict, metavar="KEY=VALUE",
                                  help="hash-grid config override (tiny-cuda-nn keys, repeatable), "
                                       "e.g. --grid n_levels=8")
    density_activation: str = option("shifted_softplus", choices=("shifted_softplus", "softplus", "exp"),
                                     help="density activation")
    density_bias: str = option("blob_magic3d", choices=("blob_magic3d", "blob_dreamfusion", "none"),
                               help="initial density blob")
    blob_scale: float = option(10.0, help="density blob height")
    blob_std: float = option(0.5, help="density blob width")
    elevation_range: tuple[float, float] = option((-10.0, 45.0), help="camera elevation range (degrees)")
    azimuth_range: tuple[float, float] = option((-180.0, 180.0), help="camera azimuth range (degrees)")
    distance_range: tuple[float, float] = option((1.5, 2.0), help="camera distance range")
    fovy_range: tuple[float, float] = option((40.0, 70.0), help="camera vertical field of view range (degrees)")
    view_dependent: bool = option(True, help="DreamFusion's '<prompt>, front/side/back/overhead view' prompts")
    snapshot_views: int = option(4, help="views in each snapshot, evenly spaced azimuths from 0 (front)")
    occupancy_resolution: int = option(32, help="empty-space grid cells per axis; rays evaluate the network only in "
                                                "occupied cells (msdfast.fields.occupancy; 0: off)")
    occupancy_threshold: float = option(0.01, help="optical depth per sample step below which a cell is empty "
                                                   "(nerfacc's occ_thre)")
    occupancy_every: int = option(16, help="steps between occupancy-grid updates (nerfacc / threestudio: 16)")

    def __post_init__(self) -> None:
        for k in _RANGES:   # lists from the CLI/JSON and tuples compare unequal: one canonical form
            setattr(self, k, tuple(float(v) for v in getattr(self, k)))

    def validate(self) -> None:
        super().validate()
        for k in ("render_size", "batch_size", "n_samples", "snapshot_views", "occupancy_every"):
            if getattr(self, k) < 1:
                raise UserInputError(f"{k}: must be >= 1, got {getattr(self, k)}")
        if not self.radius > 0:
            raise UserInputError(f"radius: must be positive, got {self.radius}")
        if self.occupancy_resolution < 0:
            raise UserInputError(f"occupancy_resolution: must be >= 0 (0: no grid), got {self.occupancy_resolution}")
        if not self.occupancy_threshold >= 0:
            raise UserInputError(f"occupancy_threshold: must be >= 0, got {self.occupancy_threshold}")
        try:
            camera_ranges(self).validate()
        except ValueError as e:   # the camera ranges' own check names the range
            raise UserInputError(str(e)) from None
        from ..fields.hashgrid import normalize_config
        from ..fields.nerf import default_nerf_grid_config
        try:   # the hash-grid overrides, checked before the model loads (unknown keys included)
            normalize_config({**default_nerf_grid_config(), **self.grid})
        except (ValueError, TypeError) as e:
            raise UserInputError(f"--grid: {str(e).removeprefix('config: ')}") from None

    def estimator_options(self) -> dict[str, Any]:
        opts = super().estimator_options()
        if self.method == "dsd":
            opts.setdefault("shared_seed", True)   # one eps* per shape across its views (DSD's 3D form)
        return opts


def camera_ranges(cfg: ThreeDConfig) -> Any:
    from ..fields.cameras import CameraRanges

    return CameraRanges(**{k: getattr(cfg, k) for k in _RANGES})


def build_nerf(cfg: ThreeDConfig, *, implementation: str = "auto") -> torch.nn.Module:
    """The NeRF of cfg (hash grid: threestudio's config updated with cfg.grid)."""
    from ..fields.nerf import NeRF, default_nerf_grid_config

    return NeRF(radius=cfg.radius, grid={**default_nerf_grid_config(), **cfg.grid}, hidden=cfg.hidden,
                n_hidden_layers=cfg.n_hidden_layers, n_samples=cfg.n_samples,
                density_activation=cfg.density_activation, density_bias=cfg.density_bias,
                blob_scale=cfg.blob_scale, blob_std=cfg.blob_std, implementation=implementation, seed=cfg.seed,
                occupancy_resolution=cfg.occupancy_resolution, occupancy_threshold=cfg.occupancy_threshold)


def distill_3d(cfg: ThreeDConfig, *, resume: bool = False, overwrite: bool = False, denoiser: Any = None,
               estimator_factory: Callable[..., Any] | None = None,
               stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) text-to-3D distillation; returns the metrics dict written to metrics.json, plus
    "field" (the trained NeRF). Arguments as `msdfast.pipelines.image.distill_image`."""
    return run_pipeline(cfg, _distill_3d, resume=resume, overwrite=overwrite, denoiser=denoiser,
                        estimator_factory=estimator_factory, stop_after=stop_after)


def _distill_3d(cfg: ThreeDConfig, *, device: str, denoiser: Any, estimator_factory: Callable[..., Any],
                resume: bool, stop_after: int | None) -> dict[str, Any]:
    from ..fields.cameras import fixed_cameras, ray_bundle, sample_cameras, view_index

    ranges = camera_ranges(cfg)

    torch.manual_seed(cfg.seed)  # the MLPs' init draws from the global stream
    nerf = build_nerf(cfg).to(device)
    opt = make_optimizer(nerf.parameters(), cfg)
    est = estimator_factory(cfg.method, denoiser, **cfg.estimator_options())
    prompts = denoiser.prompt_embeddings(cfg.prompt, cfg.negative_prompt, view_dependent=cfg.view_dependent)
    if cfg.view_dependent:   # the 4 view buckets' embeddings, computed once (and cached on disk by the denoiser)
        cond_views, uncond_views = prompts.cond_views.to(device), prompts.uncond_views.to(device)
    cond, uncond = prompts.cond.to(device), prompts.uncond.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    S, B = cfg.render_size, cfg.batch_size
    snap_cams = fixed_cameras([360.0 * k / cfg.snapshot_views for k in range(cfg.snapshot_views)],
                              elevation=min(max(15.0, ranges.elevation_range[0]), ranges.elevation_range[1]),
                              distance=sum(ranges.distance_range) / 2, fovy=sum(ranges.fovy_range) / 2,
                              device=device)
    snap_rays = ray_bundle(snap_cams, S, S)

    def step_fn(step: int) -> Any:
        if step % cfg.occupancy_every == 0:
            nerf.update_occupancy(generator=gen)     # empty-space grid from the current density (no-op if off)
        cams = sample_cameras(B, ranges, generator=gen, device=device)
        out = nerf.render(*ray_bundle(cams, S, S), generator=gen)
        latents = denoiser.encode_images(out["rgb"].permute(0, 3, 1, 2), generator=gen)
        if cfg.view_dependent:
            idx = view_index(cams).to(device)
            c, u = cond_views[idx], uncond_views[idx]
        else:
            c, u = cond.expand(B, -1, -1), uncond.expand(B, -1, -1)
        if hasattr(est, "set_camera"):   # VSD's eps_phi is camera-conditioned (ProlificDreamer: c2w)
            est.set_camera(cams.c2w)
        res = est(latents, c, u, generator=gen)
        res.info.update(azimuth=float(cams.azimuth[0]), elevation=float(cams.elevation[0]),
                        samples_evaluated=float(out["samples_evaluated"]))
        return res

    def render_fn() -> torch.Tensor:
        out = nerf.render(*snap_rays, stratified=False)      # deterministic: draws nothing from the run's RNG
        rgb = torch.cat(list(out["rgb"]), dim=1)             # views side by side [S, V S, 3]
        alpha = torch.cat(list(out["opacity"]), dim=1).expand_as(rgb)
        return torch.cat([rgb, alpha], dim=0).permute(2, 0, 1).unsqueeze(0)

    return run_distillation(cfg, field=nerf, optimizer=opt, estimator=est, generator=gen, step_fn=step_fn,
                            render_fn=render_fn, denoiser=denoiser, resume=resume, stop_after=stop_after,
                            job="3d", strip_columns=[f"az {360.0 * k / cfg.snapshot_views:.0f} deg"
                                                     for k in range(cfg.snapshot_views)],
                            run_info={"encode_resolution": denoiser.encode_resolution,
                                      "denoiser_dtype": str(denoiser.dtype),
                                      "hash_grid": type(nerf.encoding).__module__.split(".")[0]})


# ---------------------------------------------------------------------- CLI
def add_3d_arguments(p: argparse.ArgumentParser) -> None:
    add_distill_arguments(p, ThreeDConfig)


def run_3d(args: argparse.Namespace) -> int:
    return run_job(args, ThreeDConfig, distill_3d)
