// msdfast::noise_to_levels, CPU: out[l*B + b] = alphas[b, l] x[b] + sigmas[b, l] eps[b] for L levels with
// one shared eps, written level-major in one pass (x and eps are read once for all L levels).
// L = 1: SDS forward noising; L = 2: DSD's x_hat(t), x_hat(t + delta) (DSD paper eq. 9-10).
// Definition of correct: msdfast.ops.reference.noise_to_levels.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/noise_to_levels_checks.h"
#include "common/macros.h"
#include "common/torch_checks.h"
#include "cpu_kernel_util.h"

namespace msdfast::cpu {
namespace {

constexpr int64_t kTile = 4096;
// Work items per parallel task: >= 32k elements, so small tensors run inline (no OpenMP fork/join).
constexpr int64_t kGrainTiles = (int64_t(1) << 15) / kTile;

// Two levels per pass over x and eps (L = 2, DSD's pair, is one pass: 2 loads + 2 stores per element).
template <typename T>
MSDFAST_ISA_CLONES
void levels_span(const T* MSDFAST_RESTRICT x, const T* MSDFAST_RESTRICT eps, int64_t n, acc_t<T> a0, acc_t<T> s0,
                 T* MSDFAST_RESTRICT o0, acc_t<T> a1, acc_t<T> s1, T* MSDFAST_RESTRICT o1) {
  using A = acc_t<T>;
  if (o1 == nullptr) {
    for (int64_t j = 0; j < n; ++j) o0[j] = static_cast<T>(a0 * A(x[j]) + s0 * A(eps[j]));
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    const A xv = A(x[j]), ev = A(eps[j]);
    o0[j] = static_cast<T>(a0 * xv + s0 * ev);
    o1[j] = static_cast<T>(a1 * xv + s1 * ev);
  }
}

template <typename T>
void noise_to_levels_typed(const T* x, const T* eps, const float* al, const float* sg, T* out, int64_t B,
                           int64_t F, int64_t L) {
  using A = acc_t<T>;
  const int64_t tiles_per_b = (F + kTile - 1) / kTile;
  at::parallel_for(0, B * tiles_per_b, kGrainTiles, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / tiles_per_b, lo = (w % tiles_per_b) * kTile, len = std::min(kTile, F - lo);
      const T* xb = x + b * F + lo;
      const T* eb = eps + b * F + lo;
      for (int64_t l = 0; l < L; l += 2) {  // the tile of x and eps stays in L1 between level pairs
        const bool two = l + 1 < L;
        levels_span<T>(xb, eb, len, A(al[b * L + l]), A(sg[b * L + l]), out + (l * B + b) * F + lo,
                       two ? A(al[b * L + l + 1]) : A(0), two ? A(sg[b * L + l + 1]) : A(0),
                       two ? out + ((l + 1) * B + b) * F + lo : nullptr);
      }
    }
  });
}

at::Tensor noise_to_levels_cpu(const at::Tensor& x_, const at::Tensor& eps_, const at::Tensor& alphas_,
                               const at::Tensor& sigmas_) {
  check_noise_to_levels_args(x_, eps_, alphas_, sigmas_);
  const int64_t B = x_.size(0);
  const at::Tensor x = x_.contiguous(), eps = eps_.contiguous(), alphas = alphas_.contiguous(),
                   sigmas = sigmas_.contiguous();
  const int64_t L = alphas.size(1);
  at::Tensor out = at::empty(noise_to_levels_out_shape(x, L), x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "noise_to_levels_cpu", [&] {
    noise_to_levels_typed<scalar_t>(x.const_data_ptr<scalar_t>(), eps.const_data_ptr<scalar_t>(),
                                    alphas.const_data_ptr<float>(), sigmas.const_data_ptr<float>(),
                                    out.mutable_data_ptr<scalar_t>(), B, x.numel() / B, L);
  });
  return out;
}

}  // namespace
}  // namespace msdfast::cpu

TORCH_LIBRARY_FRAGMENT(msdfast, m) {
  m.def("noise_to_levels(Tensor x, Tensor eps, Tensor alphas, Tensor sigmas) -> Tensor");
}

TORCH_LIBRARY_IMPL(msdfast, CPU, m) { m.impl("noise_to_levels", &msdfast::cpu::noise_to_levels_cpu); }
