// msdfast::chain_mean_shift, CPU: MSD's descent gradient g = x - mean_i y_i in one pass
// (MSD paper Algorithm 2; sign per MATH.md sec. 2). y [N*B, ...] holds N chains laid out chain-major.
// Definition of correct: msdfast.ops.reference.chain_mean_shift.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/chain_mean_shift_checks.h"
#include "common/macros.h"
#include "common/torch_checks.h"
#include "cpu_kernel_util.h"

namespace msdfast::cpu {
namespace {

constexpr int64_t kTile = 2048;  // elements of x per work item: the running sums stay in L1
// Tiles per parallel task: >= 32k elements, so small tensors run inline (no OpenMP fork/join).
constexpr int64_t kGrainTiles = (int64_t(1) << 15) / kTile;

template <typename T>
using A_t = acc_t<T>;

// One pass over a tile for a group of G <= 4 chains: acc = running sum (or 0 for the first group) + the
// group's chains in order (the summation order of torch.mean); the last group writes g = x - acc / N
// directly, so N <= 4 chains (MSD's usual count) take a single pass with no running-sum array.
template <typename T, int G, bool FIRST, bool LAST>
MSDFAST_ISA_CLONES
void chain_group(int64_t n, const T* MSDFAST_RESTRICT y, int64_t stride, A_t<T>* MSDFAST_RESTRICT sum,
                 const T* MSDFAST_RESTRICT x, T* MSDFAST_RESTRICT out, A_t<T> inv_n) {
  using A = A_t<T>;
  const T* MSDFAST_RESTRICT y0 = y;
  const T* MSDFAST_RESTRICT y1 = y + (G > 1 ? stride : 0);
  const T* MSDFAST_RESTRICT y2 = y + (G > 2 ? 2 * stride : 0);
  const T* MSDFAST_RESTRICT y3 = y + (G > 3 ? 3 * stride : 0);
  for (int64_t j = 0; j < n; ++j) {
    A acc = FIRST ? A(y0[j]) : sum[j] + A(y0[j]);
    if constexpr (G > 1) acc += A(y1[j]);
    if constexpr (G > 2) acc += A(y2[j]);
    if constexpr (G > 3) acc += A(y3[j]);
    // multiply by 1/N, as torch.mean's reduction does (a vector division would dominate the loop)
    if constexpr (LAST) out[j] = static_cast<T>(A(x[j]) - acc * inv_n);
    else sum[j] = acc;
  }
}

template <typename T, int G>
void chain_group_dispatch(bool first, bool last, int64_t n, const T* y, int64_t stride, A_t<T>* sum, const T* x,
                          T* out, A_t<T> inv_n) {
  if (first && last) chain_group<T, G, true, true>(n, y, stride, sum, x, out, inv_n);
  else if (first) chain_group<T, G, true, false>(n, y, stride, sum, x, out, inv_n);
  else if (last) chain_group<T, G, false, true>(n, y, stride, sum, x, out, inv_n);
  else chain_group<T, G, false, false>(n, y, stride, sum, x, out, inv_n);
}

template <typename T>
void chain_mean_shift_typed(const T* y, const T* x, T* out, int64_t numel, int64_t n) {
  using A = acc_t<T>;
  const int64_t ntiles = (numel + kTile - 1) / kTile;
  const A inv_n = A(1) / A(n);
  at::parallel_for(0, ntiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
    alignas(64) A sum[kTile];
    // N <= 4 needs no running sums: one pass over the task's whole range (long streams prefetch better).
    const int64_t tile = n <= 4 ? (t1 - t0) * kTile : kTile;
    for (int64_t lo = t0 * kTile; lo < std::min(t1 * kTile, numel); lo += tile) {
      const int64_t len = std::min({tile, numel - lo, t1 * kTile - lo});
      for (int64_t i0 = 0; i0 < n; i0 += 4) {
        const int64_t g = std::min<int64_t>(4, n - i0);
        const bool first = i0 == 0, last = i0 + g >= n;
        const T* yi = y + i0 * numel + lo;
        switch (g) {
          case 1: chain_group_dispatch<T, 1>(first, last, len, yi, numel, sum, x + lo, out + lo, inv_n); break;
          case 2: chain_group_dispatch<T, 2>(first, last, len, yi, numel, sum, x + lo, out + lo, inv_n); break;
          case 3: chain_group_dispatch<T, 3>(first, last, len, yi, numel, sum, x + lo, out + lo, inv_n); break;
          default: chain_group_dispatch<T, 4>(first, last, len, yi, numel, sum, x + lo, out + lo, inv_n); break;
        }
      }
    }
  });
}

at::Tensor chain_mean_shift_cpu(const at::Tensor& y_, const at::Tensor& x_, int64_t n_chains) {
  check_chain_mean_shift_args(y_, x_, n_chains);
  const at::Tensor y = y_.contiguous(), x = x_.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "chain_mean_shift_cpu", [&] {
    chain_mean_shift_typed<scalar_t>(y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                     out.mutable_data_ptr<scalar_t>(), x.numel(), n_chains);
  });
  return out;
}

}  // namespace
}  // namespace msdfast::cpu

TORCH_LIBRARY_FRAGMENT(msdfast, m) { m.def("chain_mean_shift(Tensor y, Tensor x, int n_chains) -> Tensor"); }

TORCH_LIBRARY_IMPL(msdfast, CPU, m) { m.impl("chain_mean_shift", &msdfast::cpu::chain_mean_shift_cpu); }
