// One-pass online softmax shared by the streaming CPU and CUDA kernels (no torch, no CUDA headers).
#pragma once

#include <cmath>

#include "macros.h"

namespace msdfast {

// Online softmax / log-sum-exp over a stream of (logit, 2-vector) pairs: running max m, normaliser
// l = sum exp(logit - m) and weighted sums g = sum exp(logit - m) v. update() costs one exp per pair
// (the sums are rescaled only when the maximum moves). Used by gmm_score (v = C^-1 (mu - x)) and the
// 2D empirical denoiser (v = data point). Result: softmax-weighted mean g / l, log-sum-exp m + log l.
template <typename acc_t>
struct OnlineLse2 {
  acc_t m, l, g0, g1;
  MSDFAST_HD void update(acc_t logit, acc_t v0, acc_t v1) {
    if (logit > m) {                    // new maximum (m = -inf before the first finite component)
      const acc_t r = std::exp(m - logit);
      l = l * r + acc_t(1);
      g0 = g0 * r + v0;
      g1 = g1 * r + v1;
      m = logit;
    } else if (logit > acc_t(-INFINITY)) {  // zero-weight components (logit -inf) contribute nothing
      const acc_t e = std::exp(logit - m);
      l += e;
      g0 += e * v0;
      g1 += e * v1;
    }
  }
};

}  // namespace msdfast
