"""Stable Diffusion's UNet through ONNX: export, an onnxruntime denoiser, and a TensorRT engine builder.

* `export_unet_onnx`: the UNet as an ONNX graph with the IO names of diffusers' TensorRT community pipeline
  (inputs `sample`, `timestep`, `encoder_hidden_states`; output `latent`) and a dynamic batch axis, so ONE
  session serves CFG pairs, MSD chains and views of any batch (../shared/REFERENCE.md sec. 5).
* `OnnxDenoiser`: the Denoiser protocol on an onnxruntime InferenceSession (CPU or CUDA execution provider);
  text encoding and the VAE stay with the torch `StableDiffusionDenoiser` it wraps (`host`).
* `build_trt_engine`: ONNX -> serialized TensorRT engine (TensorRT >= 10 name-based API, fp16, one
  optimisation profile over the batch). TensorRT is optional; its absence raises a clear ImportError.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .base import Cond, Denoiser

__all__ = ["export_unet_onnx", "OnnxDenoiser", "build_trt_engine", "INPUT_NAMES", "OUTPUT_NAMES"]

INPUT_NAMES = ("sample", "timestep", "encoder_hidden_states")
OUTPUT_NAMES = ("latent",)


class _UNetWrapper(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


def export_unet_onnx(host: Any, path: str | os.PathLike, *, batch: int = 2, opset: int = 18) -> Path:
    """Export host.unet (a StableDiffusionDenoiser's) to `path` with a dynamic batch axis; returns the path.

    Uses the TorchScript exporter (dynamo=False): one self-contained file, no onnxscript needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unet = host.unet
    dev, dt = host.device, host.dtype
    n, c = host.latent_size, host.latent_channels
    d = int(unet.config.cross_attention_dim)
    L = int(host.tokenizer.model_max_length)
    args = (torch.randn(batch, c, n, n, device=dev, dtype=dt), torch.full((batch,), 500, dtype=torch.long, device=dev),
            torch.randn(batch, L, d, device=dev, dtype=dt))
    dyn = {"sample": {0: "B"}, "timestep": {0: "B"}, "encoder_hidden_states": {0: "B"}, "latent": {0: "B"}}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # diffusers' shape asserts/branches trace as constants (batch < 64 etc.): harmless, silence them
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_UNetWrapper(unet).eval(), args, str(path), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, opset_version=opset, dynamo=False)
    return path


class OnnxDenoiser(Denoiser):
    """eps_hat from an ONNX UNet under onnxruntime; one session call per batched evaluation.

    host: the torch StableDiffusionDenoiser whose schedule, text encoder and VAE are used (prompt_embeddings,
    encode_images and decode_latents are delegated), so the pipelines run unchanged on this denoiser.
    """

    def __init__(self, onnx_path: str | os.PathLike, host: Any, *, providers: list[str] | None = None) -> None:
        super().__init__(host.schedule)
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
        self.host = [host]  # a list: keep the host out of this Module's children (no double registration)

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        if cond is None:
            raise ValueError("cond: the ONNX UNet needs text embeddings [B, 77, D]")
        if cond.shape[0] != z.shape[0]:
            cond = cond.expand(z.shape[0], *cond.shape[1:])
        feed = {"sample": z.detach().cpu().numpy().astype(self._np_dtype),
                "timestep": t.detach().cpu().long().numpy(),
                "encoder_hidden_states": cond.detach().cpu().numpy().astype(self._np_dtype)}
        out = torch.from_numpy(self.session.run(list(OUTPUT_NAMES), feed)[0]).to(device=z.device, dtype=torch.float32)
        return self.schedule.to_eps(out, z.float(), t).to(z.dtype)

    # delegated to the torch host (text encoder and VAE are not part of the ONNX graph)
    def __getattr__(self, name: str) -> Any:
        if name in ("prompt_embeddings", "encode_prompts", "encode_images", "decode_latents", "latent_size",
                    "latent_channels", "encode_resolution", "dtype", "device"):
            return getattr(self.__dict__["host"][0], name)
        return super().__getattr__(name)


def build_trt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, latent_size: int = 64,
                     channels: int = 4, text_len: int = 77, text_dim: int = 768, min_batch: int = 1,
                     opt_batch: int = 2, max_batch: int = 16, fp16: bool = True,
                     workspace_bytes: int = 4 << 30) -> Path:
    """Build and serialize a TensorRT engine for the ONNX UNet (TensorRT >= 10 API), batch min/opt/max profile."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001
        raise ImportError(f"tensorrt: not importable ({type(e).__name__}: {e}); install TensorRT >= 10 on a "
                          "CUDA machine to build engines") from None
    if not min_batch <= opt_batch <= max_batch:
        raise ValueError("min_batch/opt_batch/max_batch: expected min <= opt <= max")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"onnx_path: TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    shapes = {"sample": (channels, latent_size, latent_size), "timestep": (), "encoder_hidden_states": (text_len, text_dim)}
    for name, rest in shapes.items():
        profile.set_shape(name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(blob))
    return engine_path
