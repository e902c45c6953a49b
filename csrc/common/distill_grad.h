// Pointwise math of msdfast::distill_grad, shared by the CPU and CUDA kernels (one definition).
// msdfast/ops/reference.py::distill_grad is the definition of correct; MATH.md sec. 2.
#pragma once

#include "macros.h"

namespace msdfast {
namespace distill_grad {

// Columns of the [B or 1, 3] float32 coefficient table (msdfast.ops.GRAD_COLUMNS).
constexpr int kNumCols = 3;

template <typename acc_t>
struct Coef {
  acc_t w, r, weight;
  MSDFAST_HD static Coef load(const float* row) { return Coef{acc_t(row[0]), acc_t(row[1]), acc_t(row[2])}; }
};

// Clamp to [-bound, bound] after mapping NaN to 0. Written as the select patterns compilers turn into
// cmpeq/and + max/min vector instructions (NaN is gone before the comparisons, so they are exact).
template <typename acc_t>
MSDFAST_HD acc_t nan_to_zero_clamp(acc_t v, acc_t bound) {
  v = v == v ? v : acc_t(0);
  v = v < -bound ? -bound : v;
  return v > bound ? bound : v;
}

//   g = weight (r (eps_u + w (eps_c - eps_u)) - eps_target), then nan_to_num: NaN -> 0, +-inf -> +-big
// (big = the storage dtype's largest finite value; clamping before rounding to the storage dtype gives
// the same result as torch.nan_to_num after rounding, since values that round to inf clamp to big).
// When the storage dtype is the accumulation dtype, rounding is the identity and the element-wise clip
// folds into the same clamp: bound = min(big, clip).
template <bool HAS_U, typename acc_t>
MSDFAST_HD acc_t raw(const Coef<acc_t>& k, acc_t eps_c, acc_t eps_u, acc_t eps_target, acc_t bound) {
  const acc_t e = HAS_U ? eps_u + k.w * (eps_c - eps_u) : eps_c;
  return nan_to_zero_clamp(k.weight * (k.r * e - eps_target), bound);
}

// Element-wise clipping of the (already rounded) gradient; clip = +inf when disabled.
template <typename acc_t>
MSDFAST_HD acc_t clip(acc_t g, acc_t c) {
  g = g < -c ? -c : g;
  return g > c ? c : g;
}

}  // namespace distill_grad
}  // namespace msdfast
