"""A stand-in for the `tensorrt` module (TensorRT 10.x / 11.x name-based API) that runs on the CPU.

It implements exactly what msdfast.denoisers.tensorrt calls -- Builder / OnnxParser / optimisation profile /
build_serialized_network, Runtime.deserialize_cuda_engine, and an execution context with set_input_shape /
set_tensor_address / get_tensor_shape / execute_async_v3 -- so the binding logic (which tensors go where, in
which dtype and shape, one execute per batched call) is tested without a GPU. The "engine" is a JSON blob
(I/O dtype, batch profile); executing it reads the inputs from the raw addresses it was given (ctypes), runs
the given torch UNet in float32 and writes the result to the output address, as TensorRT would.

Versions: `version="11"` (default) has no BuilderFlag.FP16 (TensorRT 11 removed weak typing); "10" has it, but
both reject builder precision flags on a STRONGLY_TYPED network, as the real library does. A strongly typed
engine's I/O precision is the ONNX graph's (read with the onnx package). `ctx.reject` (a set of tensor names)
makes set_input_shape / set_tensor_address return False for them, as TensorRT does for a bad shape or address.
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

_NAMES = ("sample", "timestep", "encoder_hidden_states", "latent")
_TORCH = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64}


def _view(ptr: int, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over raw CPU memory at ptr (what the engine reads from / writes to)."""
    n = int(torch.Size(shape).numel()) * torch.empty(0, dtype=dtype).element_size()
    return torch.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=dtype).reshape(shape)


class _Context:
    def __init__(self, engine: "_Engine") -> None:
        self.engine, self.shapes, self.addresses, self.executes, self.reject = engine, {}, {}, [], set()

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        lo, hi = self.engine.spec["min_batch"], self.engine.spec["max_batch"]
        assert name in _NAMES[:3]
        if name in self.reject or not lo <= shape[0] <= hi:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name in self.reject:
            return False
        self.addresses[name] = int(ptr)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        assert name == "latent"
        return self.shapes["sample"]

    def execute_async_v3(self, stream: int) -> bool:
        e = self.engine
        ins = {n: _view(self.addresses[n], self.shapes[n], _TORCH[e.dtype_name(n)]) for n in _NAMES[:3]}
        self.executes.append({n: t.shape for n, t in ins.items()} | {"stream": stream})
        with torch.no_grad():
            out = e.unet(ins["sample"].float(), ins["timestep"].long(),
                         encoder_hidden_states=ins["encoder_hidden_states"].float(), return_dict=False)[0]
        dst = _view(self.addresses["latent"], self.shapes["sample"], _TORCH[e.dtype_name("latent")])
        dst.copy_(out.to(dst.dtype))
        return True


class _Engine:
    def __init__(self, spec: dict, unet: torch.nn.Module) -> None:
        self.spec, self.unet, self.contexts = spec, unet, []

    num_io_tensors = len(_NAMES)

    def get_tensor_name(self, i: int) -> str:
        return _NAMES[i]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name != "latent" else "OUTPUT"

    def dtype_name(self, name: str) -> str:
        return "INT64" if name == "timestep" else ("HALF" if self.spec["fp16"] else "FLOAT")

    def get_tensor_dtype(self, name: str) -> str:
        return self.dtype_name(name)

    def create_execution_context(self) -> _Context:
        self.contexts.append(_Context(self))
        return self.contexts[-1]


_STRONGLY_TYPED = 1


def make_fake_tensorrt(unet: torch.nn.Module, version: str = "11") -> SimpleNamespace:
    """A `tensorrt`-like module whose engines run `unet`; `.builds` counts engine builds, `.engines` loads."""
    mod = SimpleNamespace(__version__=f"{version}.fake", builds=[], engines=[])

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.network = None

        def create_network(self, flags: int) -> SimpleNamespace:
            self.network = SimpleNamespace(strongly_typed=bool(flags & (1 << _STRONGLY_TYPED)), fp16=False)
            return self.network

        def create_builder_config(self) -> SimpleNamespace:
            cfg = SimpleNamespace(flags=[], profiles=[])
            cfg.set_memory_pool_limit = lambda pool, nbytes: None
            cfg.set_flag = lambda flag: cfg.flags.append(flag)
            cfg.add_optimization_profile = lambda p: cfg.profiles.append(p)
            return cfg

        def create_optimization_profile(self) -> SimpleNamespace:
            prof = SimpleNamespace(shapes={})
            prof.set_shape = lambda name, lo, opt, hi: prof.shapes.__setitem__(name, (lo, opt, hi))
            return prof

        def build_serialized_network(self, network: Any, cfg: Any) -> bytes | None:
            if network.strongly_typed and cfg.flags:   # precision flags are an error on a strongly typed network
                return None
            if not network.strongly_typed and version != "10":   # TensorRT 11: strongly typed only
                return None
            lo, opt, hi = cfg.profiles[0].shapes["sample"]
            spec = {"fp16": network.fp16 if network.strongly_typed else "FP16" in cfg.flags, "min_batch": lo[0], "opt_batch": opt[0], "max_batch": hi[0],
                    "sample": list(lo[1:]), "text": list(cfg.profiles[0].shapes["encoder_hidden_states"][0][1:])}
            mod.builds.append(spec)
            return json.dumps(spec).encode()

    class OnnxParser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.num_errors, self.network = 0, network

        def parse_from_file(self, path: str) -> bool:
            if not (Path(path).exists() and Path(path).stat().st_size > 0):
                return False
            import onnx

            graph = onnx.load(path, load_external_data=False).graph
            sample = next(i for i in graph.input if i.name == "sample")
            self.network.fp16 = sample.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
            return True

    class Runtime:
        def __init__(self, logger: Any) -> None:
            pass

        def deserialize_cuda_engine(self, blob: bytes) -> _Engine | None:
            try:
                spec = json.loads(blob)
            except ValueError:
                return None
            mod.engines.append(_Engine(spec, unet))
            return mod.engines[-1]

    mod.Builder, mod.OnnxParser, mod.Runtime = Builder, OnnxParser, Runtime
    mod.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    mod.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    mod.BuilderFlag = SimpleNamespace(FP16="FP16") if version == "10" else SimpleNamespace()
    mod.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=_STRONGLY_TYPED)
    mod.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    mod.DataType = SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT64="INT64")
    return mod
