"""What msdfast can use on this machine (msdfast.info() and `msdfast info`)."""
from __future__ import annotations

import importlib.util
import platform
from typing import Any

import torch


def _probe(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        mod = __import__(module)
        return f"available ({getattr(mod, '__version__', '?')})"
    except Exception as exc:  # tinycudann raises EnvironmentError on CPU machines
        return f"installed but unusable ({type(exc).__name__})"


def collect() -> dict[str, Any]:
    import msdfast
    from msdfast import _backend, ops
    from msdfast.ops import _triton

    build = {}
    if _backend._C is not None and hasattr(_backend._C, "build_info"):
        build = dict(_backend._C.build_info())
    return {
        "msdfast": msdfast.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "compiled_extension": "loaded" if _backend._C is not None else f"unavailable ({_backend._C_ERROR})",
        "build_info": build,
        "triton": _probe("triton") + (" [runnable]" if _backend.has_triton() else " [no GPU / interpreter off]"),
        "triton_kernel_errors": dict(_triton.ERRORS),
        "tensorrt": _probe("tensorrt"),
        "tinycudann": _probe("tinycudann"),
        "onnxruntime": _probe("onnxruntime"),
        "diffusers": _probe("diffusers"),
        "ops": ops.backend_table(),
    }


def format_info(d: dict[str, Any]) -> str:
    lines = [f"msdfast {d['msdfast']}  (python {d['python']}, torch {d['torch']}, torch CUDA {d['torch_cuda']})",
             f"  GPU: {d['gpu'] or 'none'}",
             f"  compiled extension: {d['compiled_extension']}"]
    for k, v in d["build_info"].items():
        lines.append(f"    {k}: {v}")
    for k in ("triton", "tensorrt", "tinycudann", "onnxruntime", "diffusers"):
        lines.append(f"  {k}: {d[k]}")
        if k == "triton":
            for mod, err in d.get("triton_kernel_errors", {}).items():
                lines.append(f"    kernels {mod} failed to load: {err}")
    # With a CPU-only torch no CUDA tensor can exist: say so rather than list a backend for it.
    cuda_note = None if d["torch_cuda"] else "n/a (torch built without CUDA)"
    lines.append("  op backends (cpu / cuda):")
    width = max((len(op) for op in d["ops"]), default=0) + 1
    for op, row in d["ops"].items():
        lines.append(f"    {op:<{width}} {row['cpu']:<10} {cuda_note or row['cuda']}")
    return "\n".join(lines)
