"""The evaluation classifier: a small CNN trained ONLY on the real train split, independent of the generator.

Architecture (gray [N, 32, 32] in [0, 1], ink high): three conv3x3 + ReLU + 2x2 max-pool stages
(1 -> 16 -> 32 -> 64 channels, 32 -> 4 px), flatten (1024), Linear 1024 -> FEATURE_DIM + ReLU (the
PENULTIMATE FEATURES every metric uses), Linear FEATURE_DIM -> 10 logits.
Training: cross-entropy, Adam lr 2e-3, EPOCHS epochs of batch 64, each image randomly shifted by up to
SHIFT px (zero fill: the background is 0) -- seeded, deterministic on the CPU.
The trained weights ship as msdfast/digits/classifier.safetensors (`msdfast digits train-classifier`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import RESOLUTION, load_digits_split

__all__ = ["DigitClassifier", "train_classifier", "load_classifier", "save_classifier", "run_train_classifier",
           "add_train_classifier_arguments", "classifier_path", "heldout_accuracy",
           "FEATURE_DIM"]

FEATURE_DIM = 32
EPOCHS = 20
SHIFT = 2


def classifier_path() -> Path:
    return Path(__file__).resolve().parent / "classifier.safetensors"


class DigitClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1),
                                    nn.Conv2d(32, 64, 3, padding=1)])
        self.fc = nn.Linear(64 * (RESOLUTION // 8) ** 2, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 3 or tuple(images.shape[1:]) != (RESOLUTION, RESOLUTION):
            raise ValueError(f"images: expected [N, {RESOLUTION}, {RESOLUTION}] gray in [0, 1], "
                             f"got {tuple(images.shape)}")
        return images[:, None].float()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, FEATURE_DIM] of gray images [N, 32, 32] in [0, 1] (ink high)."""
        h = self._check(images)
        for c in self.convs:
            h = F.max_pool2d(F.relu(c(h)), 2)
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _shift(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image translated by (dy, dx) in [-SHIFT, SHIFT]^2, zero fill."""
    n, h, w = x.shape
    pad = F.pad(x, (SHIFT, SHIFT, SHIFT, SHIFT))
    d = torch.randint(0, 2 * SHIFT + 1, (n, 2), generator=g)
    return torch.stack([pad[i, d[i, 0]:d[i, 0] + h, d[i, 1]:d[i, 1] + w] for i in range(n)])


def train_classifier(seed: int = 0, epochs: int = EPOCHS, progress: bool = True) -> tuple[DigitClassifier, dict]:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    split = load_digits_split()
    torch.manual_seed(seed)
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 1)
    x, y = split.train_images, split.train_labels
    for _ in tqdm(range(epochs), desc="train classifier", disable=not progress):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(_shift(x[idx], g)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval().requires_grad_(False)
    info = {"seed": seed, "epochs": epochs, "heldout_accuracy": heldout_accuracy(net),
            "train_size": int(x.shape[0]), "heldout_size": int(split.heldout_images.shape[0]),
            "seconds": time.perf_counter() - t0}
    return net, info


@torch.no_grad()
def heldout_accuracy(net: DigitClassifier) -> float:
    split = load_digits_split()
    return float((net(split.heldout_images).argmax(1) == split.heldout_labels).double().mean())


def save_classifier(net: DigitClassifier, path: Path, info: dict) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"info": json.dumps(info)})


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The shipped classifier (or the one at `path`), eval mode, no grad."""
    from safetensors.torch import load_file
    p = Path(path) if path is not None else classifier_path()
    if not p.is_file():
        raise FileNotFoundError(f"classifier: {str(p)!r} does not exist (run `msdfast digits train-classifier`)")
    net = DigitClassifier()
    net.load_state_dict(load_file(str(p)))
    return net.eval().requires_grad_(False)


def add_train_classifier_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(classifier_path()), help="safetensors file to write (default: shipped)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--no-progress", action="store_true")


def run_train_classifier(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        from ..errors import UserInputError
        raise UserInputError(f"--epochs: must be >= 1, got {args.epochs}")
    net, info = train_classifier(args.seed, args.epochs, progress=not args.no_progress)
    save_classifier(net, Path(args.out), info)
    print(f"digit classifier: held-out accuracy {info['heldout_accuracy']:.4f} "
          f"({info['heldout_size']} held-out, {info['train_size']} train, {info['seconds']:.0f} s) -> {args.out}")
    return 0
