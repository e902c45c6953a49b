// The msdfast._C Python module. Ops register themselves through TORCH_LIBRARY_FRAGMENT/TORCH_LIBRARY_IMPL
// in csrc/cpu/<op>.cpp and csrc/cuda/<op>_torch.cu when the shared library loads; this file only
// claims the `msdfast` namespace and exposes build information through pybind11 (no torch objects
// cross this boundary, so only pybind11's headers are needed).
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include <string>

#ifndef MSDFAST_WITH_CUDA
#define MSDFAST_WITH_CUDA 0
#endif

// The namespace owner. Every op file adds its schema with TORCH_LIBRARY_FRAGMENT(msdfast, m).
TORCH_LIBRARY(msdfast, m) {}

namespace {

std::string simd_flags() {
  std::string s;
#if defined(__AVX512F__)
  s += "avx512f ";
#endif
#if defined(__AVX2__)
  s += "avx2 ";
#endif
#if defined(__AVX__)
  s += "avx ";
#endif
#if defined(__SSE2__)
  s += "sse2 ";
#endif
#if defined(__ARM_NEON)
  s += "neon ";
#endif
  return s.empty() ? "none" : s.substr(0, s.size() - 1);
}

pybind11::dict build_info() {
  pybind11::dict d;
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
  d["cplusplus"] = static_cast<long>(__cplusplus);
#if defined(__OPTIMIZE__)
  d["optimized"] = true;
#else
  d["optimized"] = false;
#endif
  d["simd"] = simd_flags();
#if defined(_OPENMP)
  d["openmp"] = static_cast<long>(_OPENMP);
#else
  d["openmp"] = false;
#endif
  d["threads"] = static_cast<long>(at::get_num_threads());
  d["with_cuda"] = static_cast<bool>(MSDFAST_WITH_CUDA);
#if MSDFAST_WITH_CUDA && defined(MSDFAST_CUDART_VERSION)
  d["cuda_runtime"] = static_cast<long>(MSDFAST_CUDART_VERSION);
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "msdfast compiled kernels (ops live in torch.ops.msdfast)";
  m.def("build_info", &build_info, "Compiler, flags, OpenMP and CUDA of this build");
}
