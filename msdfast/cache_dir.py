"""Where msdfast caches derived files (text embeddings, ONNX exports, TensorRT engines): one definition."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """$MSDFAST_CACHE, else ~/.cache/msdfast."""
    return Path(os.environ.get("MSDFAST_CACHE", Path.home() / ".cache" / "msdfast"))
