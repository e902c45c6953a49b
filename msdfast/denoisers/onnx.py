"""Stable Diffusion's UNet under ONNX Runtime: `OnnxDenoiser`, the Denoiser protocol on an InferenceSession
(CPU or CUDA execution provider) of the graph exported by msdfast.denoisers.exported; text encoding and the VAE
stay with the torch `StableDiffusionDenoiser` it wraps (`host`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .exported import INPUT_NAMES, OUTPUT_NAMES, ExportedUNetDenoiser

__all__ = ["OnnxDenoiser"]


class OnnxDenoiser(ExportedUNetDenoiser):
    """eps_hat from an ONNX UNet under onnxruntime; one session call per batched evaluation."""

    def __init__(self, onnx_path: str | os.PathLike, host: Any, *, providers: list[str] | None = None) -> None:
        super().__init__(host)
        import onnxruntime as ort

        if not Path(onnx_path).exists():
            raise FileNotFoundError(f"onnx_path: {str(onnx_path)!r} does not exist (export it with export_unet_onnx)")
        avail = ort.get_available_providers()
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        self.session = ort.InferenceSession(str(onnx_path), providers=providers)
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES:
            raise ValueError(f"onnx_path: expected inputs {INPUT_NAMES}, the graph has {names}")
        self._np_dtype = {"tensor(float16)": "float16"}.get(self.session.get_inputs()[0].type, "float32")

    def _run(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        feed = {"sample": sample.cpu().numpy().astype(self._np_dtype), "timestep": timestep.cpu().long().numpy(),
                "encoder_hidden_states": hidden.cpu().numpy().astype(self._np_dtype)}
        return torch.from_numpy(self.session.run(list(OUTPUT_NAMES), feed)[0])
