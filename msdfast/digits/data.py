"""scikit-learn's handwritten digits (UCI optdigits test set: 1797 8x8 images, 10 classes, no download).

Pixels are ink counts 0..16 (ink HIGH); we divide by 16 so images lie in [0, 1] with ink high, and upsample
8x8 -> RESOLUTION x RESOLUTION bilinearly (torch `F.interpolate`, align_corners=False). The split is fixed:
per class, a numpy RandomState(SPLIT_SEED) permutation puts the first HELDOUT_FRACTION (rounded) of that class
in the held-out split, the rest in train. The generator and the classifier see only train.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import require_packages

__all__ = ["DigitsSplit", "load_digits_split", "upsample", "to_rgb", "to_gray", "RESOLUTION", "SPLIT_SEED",
           "HELDOUT_FRACTION"]

RESOLUTION = 32
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.25


@dataclass(frozen=True)
class DigitsSplit:
    train_images: torch.Tensor     # [N, R, R] float32 in [0, 1], ink high
    train_labels: torch.Tensor     # [N] int64
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor


def upsample(images8: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """[N, 8, 8] in [0, 1] -> [N, resolution, resolution] (bilinear, align_corners=False), clamped to [0, 1]."""
    if images8.ndim != 3:
        raise ValueError(f"images8: expected [N, H, W], got {tuple(images8.shape)}")
    x = F.interpolate(images8[:, None].float(), size=(resolution, resolution), mode="bilinear",
                      align_corners=False)
    return x[:, 0].clamp(0.0, 1.0)


def to_rgb(gray: torch.Tensor) -> torch.Tensor:
    """[N, H, W] -> [N, 3, H, W] (the gray level in every channel: the model is an RGB Stable Diffusion)."""
    return gray[:, None].expand(-1, 3, -1, -1)


def to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, H, W], the channel mean."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb: expected [N, 3, H, W], got {tuple(rgb.shape)}")
    return rgb.mean(1)


def load_digits_split(resolution: int = RESOLUTION) -> DigitsSplit:
    """The fixed train / held-out split of scikit-learn's digits, upsampled to `resolution`."""
    require_packages("the digits world", ("sklearn",), "digits")
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0)
    labels = np.asarray(d.target, dtype=np.int64)
    rs = np.random.RandomState(SPLIT_SEED)
    held = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rs.permutation(len(idx))]
        held[idx[:int(round(HELDOUT_FRACTION * len(idx)))]] = True
    up = upsample(images, resolution)
    lab = torch.from_numpy(labels)
    tr, ho = torch.from_numpy(~held), torch.from_numpy(held)
    return DigitsSplit(up[tr], lab[tr], up[ho], lab[ho])
