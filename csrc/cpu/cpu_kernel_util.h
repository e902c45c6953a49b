// Shared helpers of the msdfast CPU kernels: accumulation type, largest finite value, a vectorisable exp,
// and a per-ISA cloning attribute for the compute-bound streaming kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include <ATen/OpMathType.h>

namespace msdfast::cpu {

// fp32 accumulation for fp16/bf16/fp32 storage, fp64 for fp64 (matches reference._acc_dtype).
template <typename T> using acc_t = at::opmath_type<T>;

// Largest finite value of the storage type, in the accumulation type (torch.nan_to_num's +inf image).
template <typename T> inline acc_t<T> max_finite() {
  return static_cast<acc_t<T>>(std::numeric_limits<T>::max());
}

// Compute-bound kernels get one clone per ISA level (AVX-512, AVX2+FMA, baseline), picked at load time
// by the dynamic loader, so the extension stays portable while using the machine's vector width.
// no-tree-pre: GCC 12's partial-redundancy elimination hoists the constant branch of a clamp (fast_exp's
// bound, nan_to_num, clipping) out of the loop and leaves a PHI that if-conversion cannot remove, so the
// loop stays scalar in the AVX2 and baseline clones (only AVX-512's masked ops survived). Measured on an
// AVX2-only EPYC: empirical_denoiser 1e3 x 1e4, 1 thread, 65 ms -> 7.8 ms; gmm_score fp32 3.6 -> 1.3 ms.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define MSDFAST_ISA_CLONES \
  __attribute__((optimize("no-tree-pre"), target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MSDFAST_ISA_CLONES
#endif

// exp(x) for x in [-inf, 88], branch-free so loops over it vectorise (Cephes expf: Cody-Waite range
// reduction x = n ln2 + r, degree-5 minimax polynomial for exp(r) on |r| <= ln2/2; ~1 ulp).
// Inputs below -87.3 are clamped, returning ~1e-38 instead of 0: harmless in a softmax whose
// largest term is 1.
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.3f), 88.0f);
  const float t = x * 1.44269504088896341f;
  // round-to-nearest without floorf (which would not vectorise on the baseline ISA)
  const float n = (t + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// exp(x) for doubles, branch-free for the same reason (Cephes exp: x = n ln2 + r with a two-part ln2, Pade
// form exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)); ~1 ulp on |r| <= ln2/2). Inputs below -708.39 are
// clamped (returning ~2e-308 instead of 0 or a subnormal): harmless in a softmax whose largest term is 1.
inline double fast_exp(double x) {
  x = std::min(std::max(x, -708.39), 709.78);
  const double t = x * 1.4426950408889634074;
  const double n = (t + 6755399441055744.0) - 6755399441055744.0;  // round to nearest (1.5 * 2^52 trick)
  double r = x - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
  const double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr
                   + 2.00000000000000000009e0;
  const double e = 1.0 + 2.0 * (p / (q - p));
  const int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e * scale;
}

// The running state of a tiled online softmax (the streaming CPU kernels: empirical_denoiser's two paths and
// gmm_score): per query the largest key m seen so far (a max logit, or minus the nearest squared distance) and
// the normaliser l = sum exp((key - m) c). Per tile the caller finds the tile's largest key, calls rebase(),
// which moves m and rescales l ONCE when the maximum grows and returns the factor (<= 1) by which the caller
// rescales its own weighted sums, then adds exp((key - m) c) per element (one exp per pair) to l and its sums.
// c is finite (empirical_denoiser clamps 1 / 2s^2; gmm_score uses 1). Before the first tile l = 0: factor 0.
template <typename A>
struct OnlineSoftmax {
  A m = -std::numeric_limits<A>::infinity();
  A l = A(0);

  A rebase(A tile_max, A c = A(1)) {
    if (!(tile_max > m)) return A(1);
    const A r = l > A(0) ? std::exp((m - tile_max) * c) : A(0);
    l *= r;
    m = tile_max;
    return r;
  }
};

}  // namespace msdfast::cpu
