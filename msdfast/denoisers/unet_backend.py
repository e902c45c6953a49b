"""Which runtime runs Stable Diffusion's UNet: the torch module itself, ONNX Runtime or a TensorRT engine."""
from __future__ import annotations

import os
from typing import Any

__all__ = ["UNET_BACKENDS", "exported_unet"]

UNET_BACKENDS = ("torch", "onnx", "tensorrt")


def exported_unet(host: Any, backend: str, *, onnx_path: str | os.PathLike | None = None,
                  max_batch: int = 16) -> Any:
    """host (a StableDiffusionDenoiser) with its UNet run by `backend`: "torch" (host itself), "onnx"
    (onnxruntime; exported to onnx_path, default the msdfast cache, when missing) or "tensorrt" (an engine
    built from that export and cached, batch up to max_batch: msdfast.denoisers.tensorrt)."""
    if backend not in UNET_BACKENDS:
        raise ValueError(f"unet_backend: expected one of {UNET_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return host
    if backend == "tensorrt":
        from .tensorrt import TensorRTDenoiser
        return TensorRTDenoiser(host, onnx_path=onnx_path, max_batch=max_batch)
    from .exported import cached_export
    from .onnx import OnnxDenoiser
    return OnnxDenoiser(cached_export(host, onnx_path), host)
