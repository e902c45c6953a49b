"""Text-to-2D: distil Stable Diffusion into an image field (MSD paper sec. 4.4, table 4).

Each step renders the field f(p; theta) (a hash-grid coordinate MLP by default), encodes it with the VAE
(threestudio's path: 512 bilinear resize, x * 2 - 1, posterior sample * scaling factor), asks the estimator
for a descent gradient g on the latents, and back-propagates the loss trick (dloss/dx = g / B) through the VAE
encoder into theta; AdamW steps theta. The paper's settings: AdamW lr 1e-2, 400 steps, CFG 7.5 and, for MSD,
a monotonically decreasing bandwidth.

Run folder (`--out`): config.json, metrics.json (per step: loss, |g|, NFE, seconds), snapshots/step_*.png,
final.png, progress.png (the snapshots side by side) and checkpoint.pt (field, optimiser, estimator state,
RNG states, step). `--resume` continues from checkpoint.pt and reproduces the uninterrupted run exactly
(bit-exact on the CPU; CUDA only as deterministic as its kernels).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..errors import UserInputError
from ..config import option
from .common import (DistillConfig, add_distill_arguments, make_optimizer, run_distillation, run_job,
                     run_pipeline)

__all__ = ["ImageConfig", "add_image_arguments", "run_image", "distill_image"]

@dataclass
class ImageConfig(DistillConfig):
    steps: int = 400                    # paper: 400
    out: str = "runs/image"
    field: str = option("grid", choices=("grid", "pixel", "latent"),
                        help="image field: hash-grid MLP, raw pixels or raw latents")
    resolution: int | None = option(None, help="render size in px (default: the model's, 512 for SD 1.5)")

    def validate(self) -> None:
        super().validate()
        if self.resolution is not None and self.resolution < 1:
            raise UserInputError(f"resolution: must be >= 1, got {self.resolution}")


def distill_image(cfg: ImageConfig, *, resume: bool = False, overwrite: bool = False, denoiser: Any = None,
                  estimator_factory: Callable[..., Any] | None = None,
                  stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) text-to-2D distillation; returns the metrics dict written to metrics.json, plus
    "field" (the trained field module).

    denoiser: a loaded StableDiffusionDenoiser (default: load cfg.model). estimator_factory(method, denoiser,
    **options) builds the estimator (default msdfast.estimators.build). stop_after: stop (as if interrupted)
    once that many steps in total are done -- used by the resume tests.
    """
    return run_pipeline(cfg, _distill_image, resume=resume, overwrite=overwrite, denoiser=denoiser,
                        estimator_factory=estimator_factory, stop_after=stop_after)


def _distill_image(cfg: ImageConfig, *, device: str, denoiser: Any, estimator_factory: Callable[..., Any],
                   resume: bool, stop_after: int | None) -> dict[str, Any]:
    from ..fields.image import build_field

    resolution = cfg.resolution or denoiser.encode_resolution

    torch.manual_seed(cfg.seed)  # the field's MLP init draws from the global stream
    fld = build_field(cfg.field, resolution=resolution, latent_size=denoiser.latent_size,
                      latent_channels=denoiser.latent_channels, seed=cfg.seed).to(device)
    opt = make_optimizer(fld.parameters(), cfg)
    est = estimator_factory(cfg.method, denoiser, **cfg.estimator_options())
    prompts = denoiser.prompt_embeddings(cfg.prompt, cfg.negative_prompt)
    cond, uncond = prompts.cond.to(device), prompts.uncond.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def step_fn(step: int) -> Any:
        img = fld.render()
        latents = img if fld.is_latent else denoiser.encode_images(img, generator=gen)
        return est(latents, cond, uncond, generator=gen)

    def render_fn() -> torch.Tensor:
        img = fld.render()
        return denoiser.decode_latents(img) if fld.is_latent else img

    return run_distillation(cfg, field=fld, optimizer=opt, estimator=est, generator=gen, step_fn=step_fn,
                            render_fn=render_fn, denoiser=denoiser, resume=resume, stop_after=stop_after,
                            job="image",
                            run_info={"resolution": resolution, "denoiser_dtype": str(denoiser.dtype)})


# ---------------------------------------------------------------------- CLI
def add_image_arguments(p: argparse.ArgumentParser) -> None:
    add_distill_arguments(p, ImageConfig)


def run_image(args: argparse.Namespace) -> int:
    return run_job(args, ImageConfig, distill_image)
