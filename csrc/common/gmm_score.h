// Per-(query, component) math of msdfast::gmm_score, shared by the CPU and CUDA kernels.
// msdfast/ops/reference.py::gmm_score is the definition of correct; MATH.md sec. 3.
#pragma once

#include <cmath>

#include "macros.h"
#include "online_lse.h"

namespace msdfast {
namespace gmm_score {

// Component k at noise level s: C = S_k + s^2 I (symmetric 2x2 [[a, b], [b, d]]). Returns
// q = log phi_k - (mu_k - x)^T C^-1 (mu_k - x) / 2, and sol = C^-1 (mu_k - x) (closed-form inverse; its
// responsibility-weighted sum is the score) and det = |C|. log N(x; mu_k, C) = q - log phi_k - log|C|/2 - log 2pi.
template <typename acc_t>
MSDFAST_HD acc_t component_q(acc_t logw, acc_t mx, acc_t my, acc_t a, acc_t b, acc_t d, acc_t s2, acc_t x0, acc_t x1,
                             acc_t& sol0, acc_t& sol1, acc_t& det) {
  a += s2;
  d += s2;
  det = a * d - b * b;
  const acc_t dx = mx - x0, dy = my - x1;
  sol0 = (d * dx - b * dy) / det;
  sol1 = (a * dy - b * dx) / det;
  return logw - acc_t(0.5) * (dx * sol0 + dy * sol1);
}

// The component's log-weight + log N(x; mu_k, C) WITHOUT the constant -log(2 pi) (added once per query).
template <typename acc_t>
MSDFAST_HD acc_t component(acc_t logw, acc_t mx, acc_t my, acc_t a, acc_t b, acc_t d, acc_t s2, acc_t x0, acc_t x1,
                           acc_t& sol0, acc_t& sol1) {
  acc_t det;
  const acc_t q = component_q(logw, mx, my, a, b, d, s2, x0, x1, sol0, sol1, det);
  return q - acc_t(0.5) * std::log(det);
}

}  // namespace gmm_score
}  // namespace msdfast
