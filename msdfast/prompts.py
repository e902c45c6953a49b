"""Prompt embeddings and threestudio's view-dependent prompting (DreamFusion sec. 3).

* `view_direction(elevation, azimuth)`: the view bucket of each camera: 0 side, 1 front, 2 back, 3 overhead.
* `VIEW_SUFFIXES`: the prompt suffix of each bucket ("<prompt>, front view", ...).
* `PromptEmbeddings`: the text embeddings of one prompt, its negative and its four view variants, with
  threestudio's `get_text_embeddings` signature.

Shared by the Stable Diffusion denoiser (which fills PromptEmbeddings) and the 3D cameras (which bucket
views); it imports nothing of msdfast, so neither layer pulls in the other.
"""
from __future__ import annotations

import torch

__all__ = ["view_direction", "VIEW_SUFFIXES", "PromptEmbeddings"]


def view_direction(elevation: torch.Tensor, azimuth: torch.Tensor, *, front_threshold: float = 45.0,
                   back_threshold: float = 45.0, overhead_threshold: float = 60.0) -> torch.Tensor:
    """threestudio's view-dependent prompting: 0 side, 1 front, 2 back, 3 overhead (later rules win).

    Angles in degrees; azimuth is wrapped to [-180, 180).
    """
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    idx = torch.zeros_like(azimuth, dtype=torch.long)
    idx[(azimuth > -front_threshold) & (azimuth < front_threshold)] = 1
    idx[(azimuth > 180.0 - back_threshold) | (azimuth < -180.0 + back_threshold)] = 2
    idx[elevation > overhead_threshold] = 3
    return idx


VIEW_SUFFIXES = ("side view", "front view", "back view", "overhead view")


class PromptEmbeddings:
    """Text embeddings of one prompt (+ negative, + view-dependent variants).

    `get_text_embeddings` has threestudio's PromptProcessorOutput signature and returns cat([cond, uncond])
    of shape [2B, L, D] -- cond FIRST, as threestudio orders them.
    """

    def __init__(self, cond: torch.Tensor, uncond: torch.Tensor, cond_views: torch.Tensor | None = None,
                 uncond_views: torch.Tensor | None = None) -> None:
        self.cond, self.uncond = cond, uncond              # [1, L, D]
        self.cond_views, self.uncond_views = cond_views, uncond_views   # [4, L, D] (side, front, back, overhead)

    def get_text_embeddings(self, elevation: torch.Tensor, azimuth: torch.Tensor,
                            camera_distances: torch.Tensor | None = None,
                            view_dependent_prompting: bool = True) -> torch.Tensor:
        b = elevation.shape[0]
        if view_dependent_prompting and self.cond_views is not None:
            idx = view_direction(elevation.cpu().float(), azimuth.cpu().float()).to(self.cond_views.device)
            cond, uncond = self.cond_views[idx], self.uncond_views[idx]
        else:
            cond, uncond = self.cond.expand(b, -1, -1), self.uncond.expand(b, -1, -1)
        return torch.cat([cond, uncond], dim=0)
