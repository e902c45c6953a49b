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

//   g = weight (r (eps_u + w (eps_c - eps_u)) - eps_target), then nan_to_num: NaN -> 0, +-inf -> +-big
// (big = the storage dtype's largest finite value; clamping before rounding to the storage dtype gives
// the same result as torch.nan_to_num after rounding, since values that round to inf clamp to big).
template <bool HAS_U, typename acc_t>
MSDFAST_HD acc_t raw(const Coef<acc_t>& k, acc_t eps_c, acc_t eps_u, acc_t eps_target, acc_t big) {
  const acc_t e = HAS_U ? eps_u + k.w * (eps_c - eps_u) : eps_c;
  const acc_t v = k.weight * (k.r * e - eps_target);
  if (v != v) return acc_t(0);
  return v < -big ? -big : (v > big ? big : v);
}

// Element-wise clipping of the (already rounded) gradient; clip = +inf when disabled.
template <typename acc_t>
MSDFAST_HD acc_t clip(acc_t g, acc_t c) {
  return g < -c ? -c : (g > c ? c : g);
}

}  // namespace distill_grad
}  // namespace msdfast
