"""Metrics of the digits study, all on the evaluation classifier (msdfast.digits.classifier), never on the
generator:

* accuracy: share of images whose argmax class is the prompted digit; confidence: mean softmax probability
  of the prompted digit.
* precision / recall: improved k-NN precision and recall (Kynkaanniemi et al. 2019, k = 3) on the
  penultimate features -- the SAME implementation as the 2D toy study (msdfast.toy.metrics.precision_recall).
* Frechet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017, the FID formula):
      FD = |mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})
  (the symmetric form of tr (C_a C_b)^{1/2}; eigen-decompositions in float64, negative round-off clamped).
* diversity: mean pairwise Euclidean feature distance among the images of one prompt (its seeds),
  averaged over prompts with at least two images.
"""
from __future__ import annotations

import torch

from ..toy.metrics import PR_K, precision_recall
from .classifier import DigitClassifier

__all__ = ["frechet_distance", "diversity", "evaluate_images", "PR_K", "precision_recall"]


def _sqrt_psd(c: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between Gaussian fits of feature sets a [N, d] and b [M, d] (N, M >= 2)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ValueError(f"a, b: expected [N, d] and [M, d] with N, M >= 2, got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    sa = _sqrt_psd(ca)
    cross = torch.linalg.eigvalsh(sa @ cb @ sa).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + torch.trace(ca) + torch.trace(cb) - 2 * cross)


def diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise distance within each label's group, averaged over groups of >= 2 (nan if none)."""
    vals = []
    for c in labels.unique():
        f = features[labels == c].double()
        if f.shape[0] >= 2:
            d = torch.cdist(f, f)
            n = f.shape[0]
            vals.append(float(d.sum() / (n * (n - 1))))
    return sum(vals) / len(vals) if vals else float("nan")


@torch.no_grad()
def evaluate_images(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor,
                    reference_features: torch.Tensor, k: int = PR_K) -> dict[str, float]:
    """All metrics of gray images [N, 32, 32] in [0, 1] prompted with `labels`, against real features."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"labels: {labels.shape[0]} labels for {images.shape[0]} images")
    feats = classifier.features(images.float())
    prob = classifier.head(feats).softmax(-1)
    out = {"n": int(images.shape[0]),
           "accuracy": float((prob.argmax(1) == labels).double().mean()),
           "confidence": float(prob.gather(1, labels[:, None].long()).double().mean()),
           "diversity": diversity(feats, labels)}
    if images.shape[0] > k:
        out["precision"], out["recall"] = precision_recall(reference_features, feats, k)
    else:
        out["precision"] = out["recall"] = float("nan")
    out["fd"] = frechet_distance(feats, reference_features) if images.shape[0] >= 2 else float("nan")
    return out
