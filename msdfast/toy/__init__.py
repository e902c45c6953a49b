"""The 2D toy world of the MSD paper (sec. 4.1-4.2): data sets, their schedule, training, metrics and plots.

Light on import: only the data sets and the toy VP schedule load here; denoisers live in
msdfast.denoisers (gmm, empirical, mlp), samplers in msdfast.samplers (ddim, edm), and the two helpers
below import them on call.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .datasets import (DATASETS, GMM, TOY_S_MAX, TOY_S_MIN, TOY_SCHEDULE, TREE_CLASS_IDS,  # noqa: F401
                       TREE_CLASSES, ToyDataset, load_dataset, pinwheel_points, spiral_points, toy_schedule,
                       tree_gmm)

if TYPE_CHECKING:
    from ..denoisers.base import Denoiser
    from ..schedule import VPSchedule


def ideal_denoiser(name: str, schedule: "VPSchedule | None" = None, seed: int = 0) -> "Denoiser":
    """The ideal denoiser of a toy set: "tree" -> the exact class-conditional GMM denoiser (cond = class ids
    TREE_CLASS_IDS: A 0, B 1, A+B 2); "spiral" / "pinwheel" -> the empirical one (MSD eq. 16) over the 1e4
    training points of load_dataset(name, seed=seed)."""
    if name.startswith("tree"):
        from ..denoisers.gmm import tree_denoiser
        return tree_denoiser(schedule)
    from ..denoisers.empirical import EmpiricalDenoiser
    return EmpiricalDenoiser(load_dataset(name, seed=seed).train, schedule)


def learned_denoiser(name: str, schedule: "VPSchedule | None" = None) -> "Denoiser":
    """A shipped toy MLP: "tree" / "tree_A" (class A), "tree_AB" (CFG's unconditional model), "tree_A_guide"
    (autoguidance), "spiral", "pinwheel". CFG on the tree: Guidance(tree_A, guide=tree_AB, scale=4);
    autoguidance: Guidance(tree_A, guide=tree_A_guide, scale=3) (Karras et al. 2024's weights)."""
    from ..denoisers.mlp import load_toy_mlp
    return load_toy_mlp("tree_A" if name == "tree" else name, schedule)
