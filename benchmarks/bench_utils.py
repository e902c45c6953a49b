"""Helpers of the benchmark files (not a conftest, so `pytest tests benchmarks` has no module clash)."""
from __future__ import annotations

import pytest
import torch


def device_params() -> list:
    """"cpu", and "cuda" skipped unless a GPU is visible."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs a CUDA GPU"))]


def sync(device: str) -> None:
    """End of a timed GPU callable: wait for the kernels, or the timer measures only the launch."""
    if device == "cuda":
        torch.cuda.synchronize()
