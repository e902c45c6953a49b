"""Builds the optional compiled extension msdfast._C (metadata lives in pyproject.toml).

Sources are globbed, so adding an op means adding files (csrc/README.md), never editing this file:
  csrc/*.cpp, csrc/cpu/*.cpp     always (C++17/20 + OpenMP via at::parallel_for)
  csrc/cuda/*.cu, csrc/cuda/*.cpp only when the installed torch has CUDA (CUDAExtension)
Switches (environment):
  MSDFAST_BUILD_NO_EXT=1   pure-Python install (reference + Triton backends only)
  MSDFAST_BUILD_NO_CUDA=1  CPU kernels only, even with a CUDA torch
  MSDFAST_DEBUG=1          -O0 -g
  MAX_JOBS=N               parallel compile jobs (ninja)
  TORCH_CUDA_ARCH_LIST     CUDA archs, e.g. "8.0;9.0" (always set it when building without a visible GPU)
Install with `pip install --no-build-isolation -e .`: build isolation would download another torch.
"""
from __future__ import annotations

import glob
import os

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions() -> tuple[list, dict]:
    if os.environ.get("MSDFAST_BUILD_NO_EXT") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    # CUDAExtension needs a CUDA torch (REFERENCE.md sec. 2.1): nvcc alone is not enough.
    with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
                 and os.environ.get("MSDFAST_BUILD_NO_CUDA") != "1")
    debug = os.environ.get("MSDFAST_DEBUG") == "1"
    # -g0 overrides the -g in Python's own CFLAGS: debug info for torch-header-heavy TUs costs compile time.
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # No -march=native / -ffast-math: the wheel must run on other CPUs, and NaN/inf must propagate.
    # -fno-math-errno: sqrt/exp need not set errno, so loops over them vectorise (NaN/inf still propagate).
    cxx = opt + ["-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
    sources = _rel("csrc/*.cpp") + _rel("csrc/cpu/*.cpp")
    macros = [("MSDFAST_WITH_CUDA", "1" if with_cuda else "0")]
    kwargs = dict(name="msdfast._C", include_dirs=[os.path.join(ROOT, "csrc")], define_macros=macros,
                  extra_link_args=["-fopenmp"])
    if with_cuda:
        major, minor = (int(v) for v in torch.version.cuda.split(".")[:2])
        macros.append(("MSDFAST_CUDART_VERSION", str(major * 1000 + minor * 10)))
        sources += _rel("csrc/cuda/*.cu") + _rel("csrc/cuda/*.cpp")
        nvcc = (["-O0", "-g"] if debug else ["-O3"]) + ["--expt-relaxed-constexpr", "-lineinfo"]
        ext = CUDAExtension(sources=sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc}, **kwargs)
    else:
        ext = CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
