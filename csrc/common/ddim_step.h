// Pointwise math of the fused sampling step, shared by the CPU and CUDA kernels (one definition).
// msdfast/ops/reference.py::ddim_step is the definition of correct; MATH.md sec. 1-2, MSD paper eq. 14-15.
#pragma once

#include <cstdint>

#include "macros.h"

namespace msdfast {
namespace ddim_step {

// Columns of the [B or 1, 8] float32 coefficient table (msdfast.ops.STEP_COLUMNS).
constexpr int kNumCols = 8;

// One sample's coefficients, converted once to the accumulation type (float; double for float64 inputs).
// 1/alpha_t is hoisted here: a per-element division would make the step compute-bound on SSE2 (divps is ~5x
// slower than mulps); the result differs from the reference's division by at most 1 ulp of x0_hat.
template <typename acc_t>
struct Coef {
  acc_t w, r, inv_alpha, sigma, alpha_next, c_eps, c_noise, decay;

  MSDFAST_HD static Coef load(const float* row) {
    return Coef{acc_t(row[0]), acc_t(row[1]), acc_t(1) / acc_t(row[2]), acc_t(row[3]),
                acc_t(row[4]), acc_t(row[5]), acc_t(row[6]), acc_t(row[7])};
  }
};

//   eps_g  = r (eps_u + w (eps_c - eps_u))          CFG (diffusers form) + PSR
//   x0_hat = (z - sigma_t eps_g) / alpha_t           Tweedie
//   z'     = alpha_next x0_hat + c_eps eps_g + c_noise noise
//   z_out  = c + (z' - c) decay                      exact kernel-ODE pull towards the centre c
// Unused inputs are ignored at compile time (HAS_*), so callers may pass anything for them.
template <bool HAS_U, bool HAS_C, bool HAS_N, typename acc_t>
MSDFAST_HD acc_t point(const Coef<acc_t>& k, acc_t z, acc_t eps_c, acc_t eps_u, acc_t center, acc_t noise,
                       acc_t& x0) {
  acc_t eps = HAS_U ? eps_u + k.w * (eps_c - eps_u) : eps_c;
  eps = k.r * eps;
  x0 = (z - k.sigma * eps) * k.inv_alpha;
  acc_t zn = k.alpha_next * x0 + k.c_eps * eps;
  if (HAS_N) zn = zn + k.c_noise * noise;
  if (HAS_C) zn = center + (zn - center) * k.decay;
  return zn;
}

}  // namespace ddim_step
}  // namespace msdfast
