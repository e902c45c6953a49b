"""Stable Diffusion's UNet as a TensorRT engine: build it from the ONNX export, cache it, run it (TensorRT 10, 11).

    export_unet_onnx (msdfast.denoisers.exported)  ->  build_trt_engine  ->  <cache>/trt/unet-<key>/engine.plan
    ->  TensorRTDenoiser (the Denoiser protocol; text encoder and VAE stay with the torch host)

* The engine is cached under a key of everything it depends on: the ONNX graph and its external-data files
  (content hashes), the TensorRT version, the GPU, the batch profile (min/opt/max), the precision and msdfast's
  version, so a changed model, driver stack or profile rebuilds it and an unchanged one loads in seconds
  instead of minutes. Entries are verified cache folders (msdfast.cache_entry): a corrupt one is rebuilt.
* One optimisation profile spans the batch axis, so a single engine serves CFG pairs, MSD's N chains and a
  3D step's views (batch 2 N B) with one execute per denoiser call.
* Execution uses the name-based I/O API (set_input_shape / set_tensor_address / execute_async_v3) on torch's
  current CUDA stream: the inputs and the output are torch CUDA tensors, so nothing is copied to the host and
  no synchronisation is added.

* Precision: the network is STRONGLY TYPED (TensorRT 11 removed the weakly typed BuilderFlag.FP16 path; 10.x
  has both): the engine computes in the ONNX graph's types, so fp16=True builds from an fp16 export of the UNet
  (`cached_export(..., dtype=torch.float16)`), fp16=False from a float32 one.
* Every set_input_shape / set_tensor_address result is checked (a shape outside the profile or a bad address
  is an error naming the tensor, not a silent garbage output); execution runs under the engine's CUDA device.

TensorRT is optional: without it `build_trt_engine` and `TensorRTDenoiser` raise an ImportError naming
`tensorrt`; the tests drive the binding logic through a stand-in module and skip the real engine without a GPU.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..cache_dir import default_cache_dir
from ..cache_entry import cached_folder
from .exported import INPUT_NAMES, OUTPUT_NAMES, ExportedUNetDenoiser, cached_export

__all__ = ["build_trt_engine", "engine_cache_path", "TensorRTDenoiser"]


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as e:  # noqa: BLE001  (a broken install raises OSError, not ImportError)
        raise ImportError(f"tensorrt: not importable ({type(e).__name__}: {e}); install TensorRT >= 10 on a "
                          "CUDA machine to build and run engines") from None
    return trt


def _check_profile(min_batch: int, opt_batch: int, max_batch: int) -> None:
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"min_batch/opt_batch/max_batch: expected 1 <= min <= opt <= max, got "
                         f"{min_batch}/{opt_batch}/{max_batch}")


def build_trt_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, *, latent_size: int = 64,
                     channels: int = 4, text_len: int = 77, text_dim: int = 768, min_batch: int = 1,
                     opt_batch: int = 2, max_batch: int = 16, fp16: bool = True,
                     workspace_bytes: int = 4 << 30, trt: Any = None) -> Path:
    """Build and serialize a strongly typed TensorRT engine (10.x and 11.x API) for the ONNX UNet, batch
    min/opt/max profile. fp16 states the precision the graph must have (an fp16 export for True)."""
    trt = trt or _import_tensorrt()
    _check_profile(min_batch, opt_batch, max_batch)
    graph_dtype = onnx_input_dtype(onnx_path, "sample")
    want = "float16" if fp16 else "float32"
    if graph_dtype is not None and graph_dtype != want:
        raise ValueError(f"onnx_path: {onnx_path} is a {graph_dtype} export but fp16={fp16} needs {want}: a "
                         f"strongly typed engine computes in the graph's types (export it with dtype=torch.{want})")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # explicit batch is the only mode since TensorRT 10; strongly typed: the precision is the graph's
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"onnx_path: TensorRT could not parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    shapes = {"sample": (channels, latent_size, latent_size), "timestep": (), "encoder_hidden_states": (text_len, text_dim)}
    for name, rest in shapes.items():
        profile.set_shape(name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_suffix(engine_path.suffix + ".tmp")
    tmp.write_bytes(bytes(blob))
    os.replace(tmp, engine_path)   # a killed build never leaves a truncated engine behind
    return engine_path


def onnx_input_dtype(onnx_path: str | os.PathLike, name: str) -> str | None:
    """The element type of graph input `name` ("float16", "float32", ...), or None without the onnx package."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name == name:
            return onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type).name
    return None


def _onnx_content(onnx_path: Path) -> str:
    """Content hash of an ONNX graph and every external-data file it references (msdfast.content_hash): the
    recorded hash of a verified export cache entry, else the graph's bytes plus the files its initializers name."""
    from ..cache_entry import SEAL
    from ..content_hash import file_digest, hash_bytes

    seal = onnx_path.parent / SEAL
    if seal.is_file():   # an msdfast export entry: the folder holds only this graph and its data
        try:
            return json.loads(seal.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            pass
    parts = [file_digest(onnx_path)]
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        locs = sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"})
    except Exception:  # noqa: BLE001 -- no onnx package or not parseable: TensorRT's parser will say so
        locs = [p.name for p in [Path(str(onnx_path) + ".data")] if p.exists()]
    for loc in locs:
        f = onnx_path.parent / loc
        parts.append(f"{loc}:{file_digest(f) if f.is_file() else 'missing'}")
    return hash_bytes(*parts)


def engine_cache_path(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike, *, trt_version: str,
                      device_name: str, min_batch: int, opt_batch: int, max_batch: int, fp16: bool) -> Path:
    """<cache_dir>/unet-<key>/engine.plan, key = sha256 of what the engine depends on (module doc): the ONNX
    graph and its external-data files, TensorRT version, GPU, batch profile, precision and msdfast version."""
    from .. import __version__
    from ..content_hash import hash_bytes

    key = hash_bytes("trt-engine", __version__, _onnx_content(Path(onnx_path)), f"trt={trt_version}",
                     f"gpu={device_name}", f"batch={min_batch},{opt_batch},{max_batch}", f"fp16={fp16}")
    return Path(cache_dir) / f"unet-{key[:24]}" / "engine.plan"


class TensorRTDenoiser(ExportedUNetDenoiser):
    """eps_hat from a TensorRT engine of the host's UNet; one execute_async_v3 per batched evaluation.

    Give `engine_path` (a serialized engine), or `onnx_path` (built into the cache if no engine for it exists),
    or neither (the host's UNet is exported to ONNX in the cache first). `max_batch` bounds the batch the
    engine accepts: CFG doubles it, so MSD with N chains on B views needs 2 N B.
    """

    def __init__(self, host: Any, *, engine_path: str | os.PathLike | None = None,
                 onnx_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 min_batch: int = 1, opt_batch: int = 2, max_batch: int = 16, fp16: bool = True,
                 trt: Any = None, device: str | torch.device | None = None) -> None:
        super().__init__(host)
        trt = trt or _import_tensorrt()
        _check_profile(min_batch, opt_batch, max_batch)
        self._device = torch.device(device) if device is not None else host.device
        cached = engine_path is None
        if cached:
            engine_path = self._cached_engine(host, trt, onnx_path, cache_dir, min_batch, opt_batch, max_batch, fp16)
        engine_path = Path(engine_path)
        if not engine_path.exists():
            raise FileNotFoundError(f"engine_path: {str(engine_path)!r} does not exist")
        self._logger = trt.Logger(trt.Logger.WARNING)   # must outlive the runtime and the engine
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None and cached:   # a cache entry this TensorRT cannot read: report, rebuild once
            import logging
            import shutil
            logging.getLogger("msdfast.cache").warning("msdfast: TensorRT engine %s does not deserialize; "
                                                       "rebuilding it", engine_path)
            shutil.rmtree(engine_path.parent, ignore_errors=True)
            engine_path = self._cached_engine(host, trt, onnx_path, cache_dir, min_batch, opt_batch, max_batch, fp16)
            self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"engine_path: TensorRT could not deserialize {engine_path} (built by another "
                               "TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        self.engine_path = engine_path
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = tuple(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = tuple(n for n in names if n not in inputs)
        if sorted(inputs) != sorted(INPUT_NAMES) or outputs != OUTPUT_NAMES:
            raise ValueError(f"engine_path: expected inputs {INPUT_NAMES} and outputs {OUTPUT_NAMES}, the engine "
                             f"has {inputs} and {outputs}")
        to_torch = {getattr(trt.DataType, k): v for k, v in (
            ("FLOAT", torch.float32), ("HALF", torch.float16), ("BF16", torch.bfloat16), ("INT32", torch.int32),
            ("INT64", torch.int64)) if hasattr(trt.DataType, k)}
        self._dtypes = {n: to_torch[self.engine.get_tensor_dtype(n)] for n in names}
        self.min_batch, self.max_batch = min_batch, max_batch

    def _cached_engine(self, host: Any, trt: Any, onnx_path: str | os.PathLike | None,
                       cache_dir: str | os.PathLike | None, min_batch: int, opt_batch: int, max_batch: int,
                       fp16: bool) -> Path:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "trt"
        if onnx_path is None:   # export next to the engines (or in the msdfast cache)
            onnx_path = cached_export(host, cache_dir=cache_dir, batch=opt_batch,
                                      dtype=torch.float16 if fp16 else torch.float32)
        elif not Path(onnx_path).exists():
            raise FileNotFoundError(f"onnx_path: {str(onnx_path)!r} does not exist (export it with export_unet_onnx)")
        dev = self._device
        gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
        path = engine_cache_path(onnx_path, cache, trt_version=str(getattr(trt, "__version__", "?")), device_name=gpu,
                                 min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch, fp16=fp16)
        unet = host.unet

        def build(tmp: Path) -> None:
            build_trt_engine(onnx_path, tmp / path.name, latent_size=host.latent_size, channels=host.latent_channels,
                             text_len=int(host.tokenizer.model_max_length),
                             text_dim=int(unet.config.cross_attention_dim), min_batch=min_batch,
                             opt_batch=opt_batch, max_batch=max_batch, fp16=fp16, trt=trt)
        return cached_folder(path.parent, build, what="TensorRT engine") / path.name

    def _run(self, sample: torch.Tensor, timestep: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        B = sample.shape[0]
        if not self.min_batch <= B <= self.max_batch:
            raise ValueError(f"z: batch {B} is outside the engine's profile [{self.min_batch}, {self.max_batch}]; "
                             "build it with a larger max_batch (CFG x chains x views)")
        ctx, dev = self.context, self._device
        feeds = {"sample": sample, "timestep": timestep, "encoder_hidden_states": hidden}
        bound = []   # converted inputs: alive until enqueued (later reuse of their memory is stream-ordered)
        # the engine's device is current while binding and enqueueing (its memory and stream live there)
        with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
            for name in INPUT_NAMES:
                t = feeds[name].to(device=dev, dtype=self._dtypes[name]).contiguous()
                if not ctx.set_input_shape(name, tuple(t.shape)):
                    raise RuntimeError(f"{name}: TensorRT rejected the input shape {tuple(t.shape)} (outside the "
                                       "engine's profile?)")
                if not ctx.set_tensor_address(name, t.data_ptr()):
                    raise RuntimeError(f"{name}: TensorRT rejected the tensor address (alignment?)")
                bound.append(t)
            name = OUTPUT_NAMES[0]
            out = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device=dev)
            if not ctx.set_tensor_address(name, out.data_ptr()):
                raise RuntimeError(f"{name}: TensorRT rejected the output address")
            stream = torch.cuda.current_stream(dev).cuda_stream if dev.type == "cuda" else 0
            if not ctx.execute_async_v3(stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        return out
