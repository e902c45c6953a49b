"""Shared pytest setup. Must run before msdfast is imported anywhere.

Without a CUDA GPU, Triton kernels run on CPU tensors in Triton's interpreter, which reads
TRITON_INTERPRET when kernels are decorated (i.e. when msdfast.ops._triton imports them), so it is set here,
at conftest import time (REFERENCE.md sec. 3). On a GPU machine the real compiler is tested instead.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import msdfast  # noqa: E402,F401  (import after the environment is final)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same global RNG state (tests that need streams use a Generator)."""
    torch.manual_seed(0)


# The tiny random Stable Diffusion shared by the SD tests: written once per session, loaded once per module.
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def den(root):  # noqa: ANN001, ANN201
    from msdfast.denoisers.sd import load_stable_diffusion
    from msdfast.testing.tiny_sd import tiny_sd_path

    return load_stable_diffusion(tiny_sd_path(root=root), cache_dir=root / "cache")
