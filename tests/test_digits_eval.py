"""The digits world's data, evaluation classifier and metrics, on the real scikit-learn digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from msdfast.digits.classifier import FEATURE_DIM, heldout_accuracy, load_classifier  # noqa: E402
from msdfast.digits.data import load_digits_split, to_gray, to_rgb, upsample  # noqa: E402
from msdfast.digits.metrics import diversity, evaluate_images, frechet_distance  # noqa: E402


@pytest.fixture(scope="module")
def split():
    return load_digits_split()


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


def test_split_is_fixed_disjoint_stratified_and_ink_high(split):
    assert split.train_images.shape == (1347, 32, 32) and split.heldout_images.shape == (450, 32, 32)
    again = load_digits_split()
    assert torch.equal(again.heldout_images, split.heldout_images)
    counts = torch.bincount(split.heldout_labels, minlength=10)
    assert counts.min() >= 44 and counts.max() <= 46            # 25% of each class (174..183 per class)
    for x in (split.train_images, split.heldout_images):
        assert x.min() >= 0 and x.max() <= 1
        # ink high: the border (background) is dark, the centre (strokes) bright on average
        assert x[:, :, :2].mean() < 0.05 and x[:, 12:20, 12:20].mean() > 0.3
    # no held-out image appears in train
    d = torch.cdist(split.heldout_images.flatten(1), split.train_images.flatten(1))
    assert d.min(dim=1).values.min() > 0
    from sklearn.datasets import load_digits
    raw = torch.from_numpy(load_digits().images.astype(np.float32) / 16)
    assert torch.allclose(upsample(raw[:1], 8)[0], raw[0])     # 8 -> 8 is the identity
    assert torch.equal(to_gray(to_rgb(split.heldout_images[:3])), split.heldout_images[:3])


def test_classifier_heldout_accuracy_and_features(split, clf):
    acc = heldout_accuracy(clf)
    assert acc >= 0.95
    f = clf.features(split.heldout_images[:20])
    assert f.shape == (20, FEATURE_DIM) and (f >= 0).all()
    assert torch.equal(clf.head(f).argmax(1), clf(split.heldout_images[:20]).argmax(1))
    # the features depend on the image convention: inverted digits (ink low) are mostly misclassified
    inv = (clf(1 - split.heldout_images).argmax(1) == split.heldout_labels).double().mean()
    assert inv < 0.5
    with pytest.raises(ValueError, match="images"):
        clf.features(torch.zeros(2, 16, 16))


def test_metrics_on_real_digits(split, clf):
    ref = clf.features(split.heldout_images)
    real = evaluate_images(clf, split.train_images[:450], split.train_labels[:450], ref)
    assert real["accuracy"] >= 0.95 and real["confidence"] >= 0.9
    assert real["precision"] >= 0.8 and real["recall"] >= 0.75
    # wrong prompts: accuracy collapses although the images are real
    wrong = evaluate_images(clf, split.train_images[:450], (split.train_labels[:450] + 1) % 10, ref)
    assert wrong["accuracy"] < 0.05 and wrong["confidence"] < 0.1
    # noise images: off the real manifold, far in FD
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(100, 32, 32, generator=g)
    bad = evaluate_images(clf, noise, split.train_labels[:100], ref)
    assert bad["precision"] < 0.1 and bad["fd"] > 10 * real["fd"]
    # one digit class repeated: recall drops far below the real set's
    ones = split.train_images[split.train_labels == 1][:100]
    narrow = evaluate_images(clf, ones, torch.ones(100, dtype=torch.long), ref)
    assert narrow["recall"] < 0.3


def test_frechet_distance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(1)
    a = torch.randn(300, 6, generator=g, dtype=torch.float64)
    b = torch.randn(200, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64) + 0.5
    ca, cb = np.cov(a.numpy().T), np.cov(b.numpy().T)
    ref = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + np.trace(ca + cb - 2 * scipy_linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # a pure shift by m adds |m|^2
    assert frechet_distance(a, a + 2.0) == pytest.approx(4.0 * 6, rel=1e-8)


def test_diversity_is_mean_pairwise_distance_within_prompts():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 1.0], [7.0, 7.0]])
    lab = torch.tensor([0, 0, 1, 1, 2])          # label 2 has one image: not counted
    assert diversity(f, lab) == pytest.approx((5.0 + 1.0) / 2)


def test_precision_recall_is_the_toy_implementation():
    from msdfast.digits import metrics
    from msdfast.toy import metrics as toy_metrics
    assert metrics.precision_recall is toy_metrics.precision_recall and metrics.PR_K == 3
