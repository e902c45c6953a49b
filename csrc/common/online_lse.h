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

// Online softmin over a stream of keys (squared distances): weight_i = exp(-(key_i - kmin) c) with kmin the
// smallest key so far and c > 0 FINITE (callers clamp 1 / 2s^2 to the largest finite value). Shifting by the
// minimum distance, not by a maximum logit -key c, keeps the nearest point's weight exactly 1 when key c
// overflows (a tiny noise level): the result is then the nearest point (equally near ones averaged), the limit
// msdfast.ops.reference.empirical_denoiser defines, never 0/0. push() returns the key's weight and sets
// `rescale` to the factor (<= 1; 0 before the first key) by which the caller multiplies its running weighted
// sums before adding weight * v. Used by the CUDA empirical-denoiser kernels (any data dimension).
template <typename acc_t>
struct OnlineSoftmin {
  acc_t kmin, l;  // start with {+inf, 0}
  MSDFAST_HD acc_t push(acc_t key, acc_t c, acc_t& rescale) {
    if (key < kmin) {  // new nearest point: one exp (the rescale), its own weight is 1
      rescale = std::exp((key - kmin) * c);
      l = l * rescale + acc_t(1);
      kmin = key;
      return acc_t(1);
    }
    rescale = acc_t(1);
    const acc_t e = std::exp((kmin - key) * c);
    l += e;
    return e;
  }
};

}  // namespace msdfast
