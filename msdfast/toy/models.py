"""The toy world's denoisers by name: the exact ones (tree GMM, empirical sets) and the shipped learned MLPs.

* `tree_denoiser()`: the tree's class-conditional exact GMM denoiser (cond = TREE_CLASS_IDS: A 0, B 1, A+B 2).
* `ideal_denoiser(name)`: the ideal denoiser of a toy set ("tree" -> the above; "spiral"/"pinwheel" -> the
  empirical one over the training points, MSD paper eq. 16).
* `load_toy_mlp(name)` / `learned_denoiser(name)`: a shipped ToyMLP (TOY_MODELS, files in WEIGHTS_DIR).
"""
from __future__ import annotations

from pathlib import Path

from ..denoisers.base import Denoiser
from ..denoisers.empirical import EmpiricalDenoiser
from ..denoisers.gmm import GMMDenoiser
from ..denoisers.mlp import MLPDenoiser, load_mlp_denoiser
from ..schedule import VPSchedule
from .datasets import TREE_CLASSES, load_dataset, tree_gmm

__all__ = ["tree_denoiser", "ideal_denoiser", "learned_denoiser", "load_toy_mlp", "TOY_MODELS", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Shipped models: name -> what it is (the training recipes live in msdfast.toy.train.RECIPES).
TOY_MODELS = {
    "tree_A": "tree class A, 64 wide, 4096 iterations (the conditional model)",
    "tree_AB": "tree classes A+B, 32 wide, 512 iterations (CFG's unconditional model, as the public code)",
    "tree_A_guide": "tree class A, 32 wide, 512 iterations (autoguidance's guiding model)",
    "spiral": "spiral, 64 wide, 4096 iterations",
    "pinwheel": "pinwheel, 64 wide, 4096 iterations",
}


def tree_denoiser(schedule: VPSchedule | None = None) -> GMMDenoiser:
    """The tree's class-conditional ideal denoiser: cond = 0 (A), 1 (B), 2 (A+B, CFG's unconditional)."""
    return GMMDenoiser([tree_gmm(c) for c in TREE_CLASSES], schedule)


def ideal_denoiser(name: str, schedule: VPSchedule | None = None, seed: int = 0) -> Denoiser:
    """The ideal denoiser of a toy set: "tree" -> the exact class-conditional GMM denoiser (cond = class ids
    TREE_CLASS_IDS: A 0, B 1, A+B 2); "spiral" / "pinwheel" -> the empirical one (MSD eq. 16) over the 1e4
    training points of load_dataset(name, seed=seed)."""
    if name.startswith("tree"):
        return tree_denoiser(schedule)
    return EmpiricalDenoiser(load_dataset(name, seed=seed).train, schedule)


def load_toy_mlp(name: str, schedule: VPSchedule | None = None,
                 weights_dir: str | Path | None = None) -> MLPDenoiser:
    """Load a shipped toy model (safetensors only): one of TOY_MODELS, or a path to a .safetensors file."""
    path = Path(name)
    if path.suffix != ".safetensors":
        if name not in TOY_MODELS:
            raise ValueError(f"name: expected one of {sorted(TOY_MODELS)} or a .safetensors path, got {name!r}")
        path = Path(weights_dir or WEIGHTS_DIR) / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"name: no weights at {path}; train them with `msdfast toy train {path.stem}`")
    return load_mlp_denoiser(path, schedule)


def learned_denoiser(name: str, schedule: VPSchedule | None = None) -> MLPDenoiser:
    """A shipped toy MLP: "tree" / "tree_A" (class A), "tree_AB" (CFG's unconditional model), "tree_A_guide"
    (autoguidance), "spiral", "pinwheel". CFG on the tree: Guidance(tree_A, guide=tree_AB, scale=4);
    autoguidance: Guidance(tree_A, guide=tree_A_guide, scale=3) (Karras et al. 2024's weights)."""
    return load_toy_mlp("tree_A" if name == "tree" else name, schedule)
