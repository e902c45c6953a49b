// msdfast_bench::stream_mix -- not an op of the library: the memory-traffic yardstick of `msdfast bench kernels`
// (msdfast/bench), in its own namespace so the op conventions (reference, fake kernel, dispatch) do not apply.
//
//   stream_mix(inputs, n_outputs): every output = sum of the inputs, elementwise, in ONE pass.
//
// It makes exactly the memory traffic of an ideal one-pass elementwise op with R = len(inputs) float32 input
// streams and W = n_outputs output streams of the same length: every input element read once, every output
// element written once into a fresh at::empty tensor (so the allocator hands it the same memory it hands the
// op's outputs), tiles of every stream interleaved, split over threads with the latent kernels' 32k-element
// grain, and (almost) no arithmetic. An op with the same R:W mix moves at least these bytes in the same pattern
// and does more work per byte, so its time is >= this kernel's: the bandwidth bound of that op's table row.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/macros.h"
#include "cpu/cpu_kernel_util.h"

namespace msdfast_bench {
namespace {

constexpr int64_t kTile = 2048;                          // floats per stream per tile (the sum stays in L1)
constexpr int64_t kGrainTiles = (int64_t(1) << 15) / kTile;  // >= 32k elements per task, as the kernels

MSDFAST_ISA_CLONES
void add_into(float* MSDFAST_RESTRICT acc, const float* MSDFAST_RESTRICT src, int64_t n, bool first) {
  if (first) {
    for (int64_t j = 0; j < n; ++j) acc[j] = src[j];
  } else {
    for (int64_t j = 0; j < n; ++j) acc[j] += src[j];
  }
}

MSDFAST_ISA_CLONES
void store(float* MSDFAST_RESTRICT dst, const float* MSDFAST_RESTRICT acc, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = acc[j];
}

std::vector<at::Tensor> stream_mix(at::TensorList inputs, int64_t n_outputs) {
  TORCH_CHECK(!inputs.empty(), "stream_mix: inputs: expected at least one tensor");
  TORCH_CHECK(n_outputs >= 1, "stream_mix: n_outputs: expected >= 1, got ", n_outputs);
  const int64_t numel = inputs[0].numel();
  std::vector<const float*> src;
  for (const at::Tensor& t : inputs) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel,
                "stream_mix: inputs: expected contiguous float32 CPU tensors of one size");
    src.push_back(t.const_data_ptr<float>());
  }
  std::vector<at::Tensor> outs;
  std::vector<float*> dst;
  for (int64_t j = 0; j < n_outputs; ++j) {
    outs.push_back(at::empty({numel}, inputs[0].options()));
    dst.push_back(outs.back().mutable_data_ptr<float>());
  }
  const int64_t ntiles = (numel + kTile - 1) / kTile;
  at::parallel_for(0, ntiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
    alignas(64) float acc[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t lo = t * kTile, n = std::min(kTile, numel - lo);
      for (size_t k = 0; k < src.size(); ++k) add_into(acc, src[k] + lo, n, k == 0);
      for (float* d : dst) store(d + lo, acc, n);
    }
  });
  return outs;
}

}  // namespace

TORCH_LIBRARY(msdfast_bench, m) {
  m.def("stream_mix(Tensor[] inputs, int n_outputs) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(msdfast_bench, CPU, m) { m.impl("stream_mix", &stream_mix); }

}  // namespace msdfast_bench
