"""Stable Diffusion's UNet as an exported graph: the ONNX export and what its runtimes share.

* `export_unet_onnx`: the UNet as an ONNX graph with the IO names of diffusers' TensorRT community pipeline
  (inputs `sample`, `timestep`, `encoder_hidden_states`; output `latent`) and a dynamic batch axis, so ONE
  session or engine serves CFG pairs, MSD chains and views of any batch.
* `cached_export`: that export in the msdfast cache, keyed on the content it depends on (`export_key`).
* `ExportedUNetDenoiser`: the base of the runtimes that run the exported graph (ONNX Runtime:
  msdfast.denoisers.onnx; TensorRT: msdfast.denoisers.tensorrt): host delegation and the eps conversion.
The backend factory (torch / onnx / tensorrt) is msdfast.denoisers.unet_backend.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..cache_dir import default_cache_dir
from .base import Cond, Denoiser

__all__ = ["export_unet_onnx", "cached_export", "export_key", "ExportedUNetDenoiser", "INPUT_NAMES", "OUTPUT_NAMES"]

INPUT_NAMES = ("sample", "timestep", "encoder_hidden_states")
OUTPUT_NAMES = ("latent",)


class _UNetWrapper(torch.nn.Module):
    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


def export_unet_onnx(host: Any, path: str | os.PathLike, *, batch: int = 2, opset: int = 18,
                     dtype: torch.dtype | None = None) -> Path:
    """Export host.unet (a StableDiffusionDenoiser's) to `path` with a dynamic batch axis; returns the path.

    dtype (default: the host's) is the graph's precision: a copy of the UNet in that dtype is exported (a
    strongly typed TensorRT engine takes its precision from the graph). Uses the TorchScript exporter
    (dynamo=False): one self-contained file, no onnxscript needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    unet = host.unet
    dev, dt = host.device, (dtype or host.dtype)
    if dt != host.dtype:
        import copy

        unet = copy.deepcopy(getattr(unet, "_orig_mod", unet)).to(dt)
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


class ExportedUNetDenoiser(Denoiser):
    """Base of the denoisers that run an exported UNet graph (ONNX Runtime, TensorRT).

    host: the torch StableDiffusionDenoiser whose schedule, text encoder and VAE are used (prompt_embeddings,
    encode_images and decode_latents are delegated), so the pipelines run unchanged on these denoisers.
    Subclasses implement `_run(sample, timestep, encoder_hidden_states) -> the model's native prediction`.
    """

    _DELEGATED = ("prompt_embeddings", "encode_prompts", "encode_images", "decode_latents", "latent_size",
                  "latent_channels", "encode_resolution", "dtype", "device", "model_path", "model_hash")

    def __init__(self, host: Any) -> None:
        super().__init__(host.schedule)
        self.host = [host]  # a list: keep the host out of this Module's children (no double registration)

    def _run(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        if cond is None:
            raise ValueError(f"cond: the exported UNet ({type(self).__name__}) needs text embeddings [B, 77, D]")
        if cond.shape[0] != z.shape[0]:
            cond = cond.expand(z.shape[0], *cond.shape[1:])
        out = self._run(z.detach(), t.detach(), cond.detach()).to(device=z.device, dtype=torch.float32)
        return self.schedule.to_eps(out, z.float(), t).to(z.dtype)

    # delegated to the torch host (text encoder and VAE are not part of the exported graph)
    def __getattr__(self, name: str) -> Any:
        if name in ExportedUNetDenoiser._DELEGATED:
            return getattr(self.__dict__["host"][0], name)
        return super().__getattr__(name)


def export_key(host: Any, *, batch: int = 2, opset: int = 18, dtype: torch.dtype | None = None) -> str:
    """Content key of an ONNX export of host's UNet: its weights as loaded (names, dtype, bytes), its config,
    the export settings (batch, opset, latent size, text length, device type) and the torch/msdfast versions."""
    from .. import __version__
    from ..content_hash import hash_bytes, tensors_hash

    unet = host.unet
    unet = getattr(unet, "_orig_mod", unet)   # a torch.compile'd UNet: the module underneath
    cfg = json.dumps(dict(getattr(unet, "config", {})), sort_keys=True, default=str)
    return hash_bytes("unet-onnx", __version__, torch.__version__, tensors_hash(unet.state_dict().items()), cfg,
                      str(dtype or host.dtype), str(batch), str(opset), str(host.latent_size),
                      str(host.tokenizer.model_max_length), host.device.type)


def cached_export(host: Any, onnx_path: str | os.PathLike | None = None, *,
                  cache_dir: str | os.PathLike | None = None, batch: int = 2,
                  dtype: torch.dtype | None = None) -> Path:
    """The ONNX export of host's UNet: onnx_path, exported there if missing; by default the verified cache entry
    <cache_dir (the msdfast cache's onnx/)>/unet-<export_key>/unet.onnx (msdfast.cache_entry: built in a
    temporary folder and renamed, with its external-data files of a > 2 GB export inside; a corrupt entry is
    reported and rebuilt; an unwritable cache warns once and exports to a temporary folder)."""
    from ..cache_entry import cached_folder

    if onnx_path is None:
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "onnx"
        entry = root / f"unet-{export_key(host, batch=batch, dtype=dtype)[:24]}"
        return cached_folder(entry, lambda tmp: export_unet_onnx(host, tmp / "unet.onnx", batch=batch, dtype=dtype),
                             what="ONNX export") / "unet.onnx"
    onnx_path = Path(onnx_path)
    if not onnx_path.exists():   # export next to it, then move the files in (the graph last: it marks completion)
        import tempfile

        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix=f".{onnx_path.name}.") as tmp_name:
            tmp = Path(tmp_name)
            export_unet_onnx(host, tmp / onnx_path.name, batch=batch, dtype=dtype)
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == onnx_path.name):
                os.replace(f, onnx_path.parent / f.name)
    return onnx_path
