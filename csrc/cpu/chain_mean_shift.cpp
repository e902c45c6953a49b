// msdfast::chain_mean_shift, CPU: MSD's descent gradient g = x - mean_i y_i in one pass
// (MSD paper Algorithm 2; sign per MATH.md sec. 2). y [N*B, ...] holds N chains laid out chain-major.
// Definition of correct: msdfast.ops.reference.chain_mean_shift.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

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

// sum += y_a (+ y_b): two chains per pass halves the read-modify-write traffic on the running sums.
template <typename T>
void add_chains(A_t<T>* MSDFAST_RESTRICT sum, const T* MSDFAST_RESTRICT ya, const T* MSDFAST_RESTRICT yb,
                int64_t n) {
  using A = A_t<T>;
  if (yb == nullptr) {
    for (int64_t j = 0; j < n; ++j) sum[j] += A(ya[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) sum[j] = (sum[j] + A(ya[j])) + A(yb[j]);
  }
}

template <typename T>
void chain_mean_shift_typed(const T* y, const T* x, T* out, int64_t numel, int64_t n) {
  using A = acc_t<T>;
  const int64_t ntiles = (numel + kTile - 1) / kTile;
  at::parallel_for(0, ntiles, kGrainTiles, [&](int64_t t0, int64_t t1) {
    alignas(64) A sum[kTile];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t lo = t * kTile, len = std::min(kTile, numel - lo);
      const T* y0 = y + lo;
      for (int64_t j = 0; j < len; ++j) sum[j] = A(y0[j]);
      // chains in order: the same summation order as torch.mean over the chain dimension
      for (int64_t i = 1; i < n; i += 2)
        add_chains<T>(sum, y0 + i * numel, i + 1 < n ? y0 + (i + 1) * numel : nullptr, len);
      const A nf = A(n);
      const T* MSDFAST_RESTRICT xt = x + lo;
      T* MSDFAST_RESTRICT ot = out + lo;
      for (int64_t j = 0; j < len; ++j) ot[j] = static_cast<T>(A(xt[j]) - sum[j] / nf);
    }
  });
}

at::Tensor chain_mean_shift_cpu(const at::Tensor& y_, const at::Tensor& x_, int64_t n_chains) {
  check_float("x", x_);
  TORCH_CHECK(x_.dim() >= 1, "x: expected a batch [B, ...], got a 0-d tensor");
  TORCH_CHECK(n_chains >= 1, "n_chains: must be >= 1, got ", n_chains);
  TORCH_CHECK(y_.device() == x_.device(), "y: on device ", y_.device(), ", expected ", x_.device());
  TORCH_CHECK(y_.scalar_type() == x_.scalar_type(), "y: dtype ", y_.scalar_type(), " does not match ", x_.scalar_type());
  TORCH_CHECK(y_.dim() == x_.dim() && y_.sizes().slice(1) == x_.sizes().slice(1) &&
                  y_.size(0) == n_chains * x_.size(0),
              "y: shape ", y_.sizes(), " is not [n_chains * B, ...] for x of shape ", x_.sizes(),
              " and n_chains = ", n_chains);
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
