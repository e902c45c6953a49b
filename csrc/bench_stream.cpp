// msdfast_bench::stream_mix -- not an op of the library: the memory-traffic yardstick of `msdfast bench kernels`
// (msdfast/bench), in its own namespace so the op conventions (reference, fake kernel, dispatch) do not apply.
//
//   stream_mix(inputs, n_outputs) -> [n_outputs, numel]: every output row = the sum of the inputs, elementwise,
//   in ONE pass.
//
// It makes exactly the memory traffic of an ideal one-pass elementwise op with R = len(inputs) float32 input
// streams and W = n_outputs output streams of the same length: every input element read once, every output
// element written once into ONE fresh at::empty tensor (so the allocator hands it memory as it does the op's
// outputs), all streams advancing together element by element, split over threads with the latent kernels'
// 32k-element grain, and no arithmetic beyond the sum. An op with the same reads and writes moves at least these
// bytes in the same pattern and does more work per byte, so its time is >= this kernel's: the bandwidth bound
// of that op's table row.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <array>
#include <utility>
#include <vector>

#include "common/macros.h"
#include "cpu/cpu_kernel_util.h"

namespace msdfast_bench {
namespace {

constexpr int kMaxIn = 8, kMaxOut = 4;
constexpr int64_t kGrain = int64_t(1) << 15;   // elements per parallel task, as the latent kernels

// All R input streams and W output streams advance together, element by element, as in the ops' fused loops
// (the hardware prefetchers see R + W continuous streams); the constants make the loop over streams unroll and
// `omp simd` vectorises the element loop (the streams do not alias: fresh outputs).
template <int R, int W>
MSDFAST_ISA_CLONES
void mix_span(const float* const* src, float* const* dst, int64_t lo, int64_t n) {
  const float* s[R];
  float* d[W];
  for (int k = 0; k < R; ++k) s[k] = src[k] + lo;
  for (int k = 0; k < W; ++k) d[k] = dst[k] + lo;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    float acc = s[0][j];
    for (int k = 1; k < R; ++k) acc += s[k][j];
    for (int k = 0; k < W; ++k) d[k][j] = acc;
  }
}

using SpanFn = void (*)(const float* const*, float* const*, int64_t, int64_t);

template <int R, int... Ws>
constexpr std::array<SpanFn, sizeof...(Ws)> row(std::integer_sequence<int, Ws...>) {
  return {&mix_span<R, Ws + 1>...};
}

template <int... Rs>
constexpr std::array<std::array<SpanFn, kMaxOut>, sizeof...(Rs)> table(std::integer_sequence<int, Rs...>) {
  return {row<Rs + 1>(std::make_integer_sequence<int, kMaxOut>{})...};
}

constexpr auto kSpans = table(std::make_integer_sequence<int, kMaxIn>{});   // kSpans[R - 1][W - 1]

at::Tensor stream_mix(at::TensorList inputs, int64_t n_outputs) {
  const int64_t n_in = static_cast<int64_t>(inputs.size());
  TORCH_CHECK(1 <= n_in && n_in <= kMaxIn, "stream_mix: inputs: expected 1 to ", kMaxIn, " tensors, got ", n_in);
  TORCH_CHECK(1 <= n_outputs && n_outputs <= kMaxOut, "stream_mix: n_outputs: expected 1 to ", kMaxOut, ", got ",
              n_outputs);
  const int64_t numel = inputs[0].numel();
  std::vector<const float*> src;
  for (const at::Tensor& t : inputs) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == numel,
                "stream_mix: inputs: expected contiguous float32 CPU tensors of one size");
    src.push_back(t.const_data_ptr<float>());
  }
  // ONE fresh allocation holding the W outputs (as noise_to_levels' levels; an op with W separate outputs pays
  // W - 1 more allocations than this yardstick, which keeps it a bound)
  at::Tensor out = at::empty({n_outputs, numel}, inputs[0].options());
  std::vector<float*> dst;
  for (int64_t j = 0; j < n_outputs; ++j) dst.push_back(out.mutable_data_ptr<float>() + j * numel);
  const SpanFn span = kSpans[n_in - 1][n_outputs - 1];
  at::parallel_for(0, numel, kGrain, [&](int64_t lo, int64_t hi) { span(src.data(), dst.data(), lo, hi - lo); });
  return out;
}

}  // namespace

TORCH_LIBRARY(msdfast_bench, m) {
  m.def("stream_mix(Tensor[] inputs, int n_outputs) -> Tensor");
}

TORCH_LIBRARY_IMPL(msdfast_bench, CPU, m) { m.impl("stream_mix", &stream_mix); }

}  // namespace msdfast_bench
