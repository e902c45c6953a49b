"""ctypes front end of the cuemu build of csrc/cuda/*_kernel.cu (tests/cuemu/capi.cpp).

cuemu (../shared/tools/cuemu, see its README) compiles the unmodified CUDA kernel sources with g++ and runs them
on the CPU with CUDA's execution model. `load()` builds build/cuemu/libkernels.so once (again only when a kernel,
header or capi.cpp is newer than it; .ci/run builds it before the tests) and returns a `Kernels` object whose
methods take the arguments of msdfast.ops.reference.<op> (CPU tensors) and return what the reference returns, so
a test compares the CUDA kernel with the reference directly.

SAN=1 (environment) builds and loads build/cuemu/libkernels_san.so instead: AddressSanitizer + UBSan. The test
process must then run with the ASan runtime preloaded:
    SAN=1 LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)" ASAN_OPTIONS=detect_leaks=0 \\
        python -m pytest -q tests/cuemu
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[2]
DTYPE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}   # msdfast::DType
P, I64, I32, F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double


def find_cuemu() -> Optional[Path]:
    """The cuemu sources: $CUEMU_DIR, the CI layout ../shared/tools/cuemu beside the clone, or /work/shared."""
    for cand in (os.environ.get("CUEMU_DIR"), ROOT.parent / "shared" / "tools" / "cuemu",
                 Path("/work/shared/tools/cuemu")):
        if cand and (Path(cand) / "build.sh").is_file():
            return Path(cand)
    return None


def sources() -> list[Path]:
    return sorted((ROOT / "csrc" / "cuda").glob("*_kernel.cu"))


def _stale(lib: Path) -> bool:
    if not lib.exists():
        return True
    deps = sources() + list((ROOT / "csrc").glob("*/*.h")) + list((ROOT / "csrc" / "cuda").glob("*.cuh")) + \
        [Path(__file__).with_name("capi.cpp")]
    return any(d.stat().st_mtime > lib.stat().st_mtime for d in deps)


def build(san: bool = False) -> Path:
    """Build (if stale) and return the library; raises with the compiler output on failure."""
    cuemu = find_cuemu()
    if cuemu is None:
        raise FileNotFoundError("cuemu not found (set CUEMU_DIR)")
    lib = ROOT / "build" / "cuemu" / ("libkernels_san.so" if san else "libkernels.so")
    if _stale(lib):
        env = dict(os.environ, CUEMU_INCLUDES=str(ROOT / "csrc"), SAN="1" if san else "0")
        cmd = [str(cuemu / "build.sh"), str(lib), *map(str, sources()), "--",
               str(Path(__file__).with_name("capi.cpp"))]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode and "no cuda_runtime.h" in res.stdout + res.stderr:
            raise FileNotFoundError("cuemu: the CUDA toolkit's headers (cuda_runtime.h) are not installed")
        if res.returncode:
            raise RuntimeError(f"cuemu build failed:\n{res.stdout}\n{res.stderr}")
    return lib


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    if t is None:
        return None
    assert t.device.type == "cpu" and t.is_contiguous()
    return t.data_ptr()


class CudaError(RuntimeError):
    """A launcher returned an error (e.g. cudaErrorInvalidConfiguration for a launch beyond CUDA's limits)."""

    def __init__(self, op: str, code: int) -> None:
        super().__init__(f"{op}: cudaError {code}")
        self.code = code


CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_CONFIGURATION = 1, 9


class Kernels:
    """The CUDA kernels, called like msdfast.ops.reference.<op> on contiguous CPU tensors."""

    def __init__(self, path: Path) -> None:
        self.lib = lib = ctypes.CDLL(str(path))
        sig = {
            "cuemu_ddim_step": (I32, [I32, I64, I64, P, I64, P, P, P, P, P, P, P]),
            "cuemu_distill_grad_num_partials": (I64, [I64, I64]),
            "cuemu_distill_grad": (I32, [I32, I64, I64, P, I64, P, P, P, P, F64, P, P, P, P]),
            "cuemu_chain_mean_shift": (I32, [I32, I64, I64, P, P, P]),
            "cuemu_noise_to_levels": (I32, [I32, I64, I64, I64, P, P, P, P, P]),
            "cuemu_empirical_denoiser_workspace_bytes": (I64, [I32, I64, I64]),
            "cuemu_empirical_denoiser": (I32, [I32, I64, I64, I64, P, P, P, P, P]),
            "cuemu_gmm_score": (I32, [I32, I64, I64, P, P, P, P, P, P, P]),
            "cuemu_hash_grid_encode": (I32, [I64, I32, I32, P, P, P, P, I32, I32, P, P, P]),
            "cuemu_hash_grid_encode_backward": (I32, [I64, I32, I32, P, P, P, P, I32, I32, P, P, P]),
            "cuemu_stats": (None, [P]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args

    def _check(self, op: str, rc: int) -> None:
        if rc:
            raise CudaError(op, rc)

    def stats(self) -> dict[str, int]:
        """Counters since load: launches, blocks, threads, syncs, shuffles, atomics, fiber blocks."""
        buf = (ctypes.c_ulonglong * 7)()
        self.lib.cuemu_stats(ctypes.addressof(buf))
        return dict(zip(("launches", "blocks", "threads", "syncs", "shuffles", "atomics", "fiber_blocks"), buf))

    # ------------------------------------------------------------------ ops (reference signatures)
    def ddim_step(self, z, eps_c, eps_u, coef, center, noise, return_x0):  # noqa: ANN001, ANN201
        out = torch.empty_like(z)
        x0 = torch.empty_like(z) if return_x0 else z.new_empty(0)
        if z.numel():
            B = z.shape[0]
            self._check("ddim_step", self.lib.cuemu_ddim_step(
                DTYPE[z.dtype], B, z.numel() // B, _ptr(coef), 0 if coef.shape[0] == 1 else coef.shape[1], _ptr(z),
                _ptr(eps_c), _ptr(eps_u), _ptr(center), _ptr(noise), _ptr(out), _ptr(x0) if return_x0 else None))
        return out, x0

    def distill_grad(self, eps_c, eps_target, eps_u, coef, x, clip):  # noqa: ANN001, ANN201
        B = eps_c.shape[0]
        per = eps_c.numel() // B if B else 0
        g = torch.empty_like(eps_c)
        tgt = torch.empty_like(eps_c) if x is not None else eps_c.new_empty(0)
        norm = torch.empty((), dtype=torch.float32)
        partial = torch.empty(max(1, self.lib.cuemu_distill_grad_num_partials(B, per)), dtype=torch.float32)
        self._check("distill_grad", self.lib.cuemu_distill_grad(
            DTYPE[eps_c.dtype], B, per, _ptr(coef), 0 if coef.shape[0] == 1 else coef.shape[1], _ptr(eps_c),
            _ptr(eps_target), _ptr(eps_u), _ptr(x), 0.0 if clip is None else float(clip), _ptr(g),
            _ptr(tgt) if x is not None else None, _ptr(partial), _ptr(norm)))
        return g, tgt, norm

    def chain_mean_shift(self, y, x, n_chains):  # noqa: ANN001, ANN201
        out = torch.empty_like(x)
        self._check("chain_mean_shift", self.lib.cuemu_chain_mean_shift(
            DTYPE[x.dtype], x.numel(), n_chains, _ptr(y), _ptr(x), _ptr(out)))
        return out

    def noise_to_levels(self, x, eps, alphas, sigmas):  # noqa: ANN001, ANN201
        B, L = alphas.shape
        out = x.new_empty((L * B,) + tuple(x.shape[1:]))
        self._check("noise_to_levels", self.lib.cuemu_noise_to_levels(
            DTYPE[x.dtype], B, x.numel() // B if B else 0, L, _ptr(x), _ptr(eps), _ptr(alphas), _ptr(sigmas),
            _ptr(out)))
        return out

    def empirical_denoiser(self, x, data, s):  # noqa: ANN001, ANN201
        M, D = x.shape
        out = torch.empty_like(x)
        ws = torch.empty(max(1, self.lib.cuemu_empirical_denoiser_workspace_bytes(DTYPE[x.dtype], M, D)),
                         dtype=torch.uint8)
        self._check("empirical_denoiser", self.lib.cuemu_empirical_denoiser(
            DTYPE[x.dtype], M, data.shape[0], D, _ptr(x), _ptr(data), _ptr(s), _ptr(out), _ptr(ws)))
        return out

    def gmm_score(self, x, weights, means, covs, s):  # noqa: ANN001, ANN201
        score, logp = torch.empty_like(x), x.new_empty(x.shape[0])
        self._check("gmm_score", self.lib.cuemu_gmm_score(
            DTYPE[x.dtype], x.shape[0], weights.shape[0], _ptr(x), _ptr(s), _ptr(weights), _ptr(means), _ptr(covs),
            _ptr(score), _ptr(logp)))
        return score, logp

    def _levels(self, scales, resolutions, sizes, offsets):  # noqa: ANN001, ANN202
        keep = (torch.tensor(scales, dtype=torch.float64), torch.tensor(resolutions, dtype=torch.int64),
                torch.tensor(sizes, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64))
        return keep, [_ptr(t) for t in keep]

    def hash_grid_encode(self, x, params, scales, resolutions, sizes, offsets, n_features, interp):  # noqa: ANN001, ANN201
        N, D = x.shape
        out = torch.empty(N, len(scales) * n_features, dtype=torch.float32)
        keep, lv = self._levels(scales, resolutions, sizes, offsets)
        self._check("hash_grid_encode", self.lib.cuemu_hash_grid_encode(
            N, D, len(scales), *lv, n_features, interp, _ptr(x), _ptr(params), _ptr(out)))
        return out

    def hash_grid_encode_backward(self, grad_out, x, n_params, scales, resolutions, sizes, offsets, n_features,  # noqa: ANN001, ANN201
                                  interp):
        N, D = x.shape
        grad = torch.zeros(n_params, dtype=torch.float32)
        keep, lv = self._levels(scales, resolutions, sizes, offsets)
        self._check("hash_grid_encode_backward", self.lib.cuemu_hash_grid_encode_backward(
            N, D, len(scales), *lv, n_features, interp, _ptr(x), _ptr(grad_out), _ptr(grad)))
        return grad


_LOADED: dict[bool, Kernels] = {}


def load() -> Kernels:
    """Build (if needed) and load the library once per process (SAN=1: the sanitizer build)."""
    san = os.environ.get("SAN") == "1"
    if san not in _LOADED:
        _LOADED[san] = Kernels(build(san))
    return _LOADED[san]
