// msdfast::gmm_score, CPU: score and log-density of a 2D full-covariance Gaussian mixture smoothed to a
// per-query noise level s (MATH.md sec. 3):
//
//   p_s(x) = sum_k phi_k N(x; mu_k, C_k),  C_k = S_k + s^2 I,
//   score  = sum_k r_k(x) C_k^-1 (mu_k - x),  r_k = softmax_k(log phi_k + log N(x; mu_k, C_k))
//
// streamed over components with an online log-sum-exp (one exp per (query, component) pair, no M x K
// matrix); C_k^-1 is the closed-form 2x2 inverse, since C_k changes with each query's s. When a chunk of
// queries shares one s (a sampler step, MSD's chains, Tweedie: the common case) C_k^-1 and log |C_k| are
// computed once per (chunk, component) instead of once per pair: no division, sqrt or log in the pair loop.
// Computed in float64 for float64 inputs (the tree toy's thin components), float32 otherwise.
// Definition of correct: msdfast.ops.reference.gmm_score.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/gmm_score_checks.h"
#include "common/gmm_score.h"
#include "common/torch_checks.h"
#include "cpu_kernel_util.h"

namespace msdfast::cpu {
namespace {

constexpr int64_t kTile = 256;   // components per pass (4 buffers of kTile values stay in L1)
constexpr int64_t kChunk = 64;   // queries converted to the accumulation type per kernel call
constexpr int64_t kGrainPairs = int64_t(1) << 17;  // query x component pairs per parallel task (~0.1-0.2 ms)
constexpr int kLanes = 8;        // independent partial maxima: lets the max reduction vectorise

// Per-component constants in SoA form, computed once: log phi_k (normalised), mu_k, S_k entries.
template <typename A>
struct Components {
  std::vector<A> logw, mx, my, ca, cb, cd;
};

// The components at one noise level s^2: C_k^-1 = [[ia, ib], [ib, id]] and log phi_k - log |C_k| / 2.
template <typename A>
struct AtLevel {
  A s2 = A(-1);   // the level these hold (-1: none yet)
  std::vector<A> logw, ia, ib, id;

  void compute(const Components<A>& c, A level) {
    const int64_t K = static_cast<int64_t>(c.logw.size());
    for (auto* v : {&logw, &ia, &ib, &id}) v->resize(K);
    for (int64_t k = 0; k < K; ++k) {
      const A a = c.ca[k] + level, b = c.cb[k], d = c.cd[k] + level, det = a * d - b * b;
      ia[k] = d / det; ib[k] = -b / det; id[k] = a / det;
      logw[k] = c.logw[k] - A(0.5) * std::log(det);
    }
    s2 = level;
  }
};

// Score and log-density (without -log 2pi) of nq queries (x0, x1, s^2) against all components; one clone per
// ISA level (the loops are compute-bound).
// SHARED: every query has the noise level lv.s2, whose per-component terms lv holds (pass 1 is then a few
// multiply-adds per pair); otherwise C_k = S_k + s_q^2 I is inverted per pair.
template <typename A, bool SHARED>
MSDFAST_ISA_CLONES
void score_queries(const Components<A>& c, const AtLevel<A>& lv, const A* x0s, const A* x1s, const A* s2s,
                   int64_t nq, A* g0s, A* g1s, A* lps) {
  const int64_t K = static_cast<int64_t>(c.logw.size());
  const A ninf = -std::numeric_limits<A>::infinity();
  alignas(64) A qv[kTile], rd[kTile], v0[kTile], v1[kTile];
  for (int64_t q = 0; q < nq; ++q) {
    const A x0 = x0s[q], x1 = x1s[q], s2 = SHARED ? lv.s2 : s2s[q];
    // Streaming log-sum-exp, shifted by the running max m of q_k = log phi_k - maha_k / 2 (no log per
    // pair): weight_k = exp(q_k - m) |C_k|^-1/2, logp = m + log(sum weights) - log 2pi.
    OnlineSoftmax<A> st;   // key = q_k
    A g0 = A(0), g1 = A(0);
    for (int64_t k0 = 0; k0 < K; k0 += kTile) {
      const int64_t len = std::min(kTile, K - k0);
      if constexpr (SHARED) {
        for (int64_t j = 0; j < len; ++j) {  // pass 1: v = C_k^-1 (mu_k - x), q = log phi_k - (maha + log|C_k|) / 2
          const int64_t k = k0 + j;
          const A dx = c.mx[k] - x0, dy = c.my[k] - x1;
          v0[j] = lv.ia[k] * dx + lv.ib[k] * dy;
          v1[j] = lv.ib[k] * dx + lv.id[k] * dy;
          qv[j] = lv.logw[k] - A(0.5) * (dx * v0[j] + dy * v1[j]);
        }
      } else {
        for (int64_t j = 0; j < len; ++j) {  // pass 1: divisions and sqrt (vectorised: needs -fno-math-errno)
          A det;
          const int64_t k = k0 + j;
          qv[j] = gmm_score::component_q(c.logw[k], c.mx[k], c.my[k], c.ca[k], c.cb[k], c.cd[k], s2, x0, x1,
                                         v0[j], v1[j], det);
          rd[j] = A(1) / std::sqrt(det);
        }
      }
      A lane_max[kLanes];
      for (int i = 0; i < kLanes; ++i) lane_max[i] = ninf;
      const int64_t nfull = len - len % kLanes;
      for (int64_t j = 0; j < nfull; j += kLanes)
        for (int i = 0; i < kLanes; ++i) lane_max[i] = std::max(lane_max[i], qv[j + i]);
      A tmax = ninf;
      for (int64_t j = nfull; j < len; ++j) tmax = std::max(tmax, qv[j]);
      for (int i = 0; i < kLanes; ++i) tmax = std::max(tmax, lane_max[i]);
      if (!(tmax > ninf)) continue;  // only zero-weight components
      const A r = st.rebase(tmax);   // online rescale, once per tile
      g0 *= r; g1 *= r;
      const A m = st.m;
      A sl = A(0), s0 = A(0), s1 = A(0);
#pragma omp simd reduction(+ : sl, s0, s1)
      for (int64_t j = 0; j < len; ++j) {  // pass 2: one exp per pair
        const A e = SHARED ? fast_exp(qv[j] - m) : fast_exp(qv[j] - m) * rd[j];
        sl += e; s0 += e * v0[j]; s1 += e * v1[j];
      }
      st.l += sl; g0 += s0; g1 += s1;
    }
    g0s[q] = g0 / st.l;
    g1s[q] = g1 / st.l;
    lps[q] = st.m + std::log(st.l);
  }
}

template <typename T>
void gmm_score_typed(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& means, const at::Tensor& covs,
                     const at::Tensor& s, at::Tensor& score, at::Tensor& logp) {
  using A = acc_t<T>;
  const int64_t M = x.size(0), K = weights.size(0);
  const T* xp = x.const_data_ptr<T>();
  const T* sp = s.const_data_ptr<T>();
  Components<A> c;
  for (auto* v : {&c.logw, &c.mx, &c.my, &c.ca, &c.cb, &c.cd}) v->resize(K);
  {
    const T* w = weights.const_data_ptr<T>();
    const T* mu = means.const_data_ptr<T>();
    const T* cv = covs.const_data_ptr<T>();
    A wsum = 0;
    for (int64_t k = 0; k < K; ++k) wsum += A(w[k]);
    for (int64_t k = 0; k < K; ++k) {
      c.logw[k] = std::log(A(w[k]) / wsum);
      c.mx[k] = A(mu[2 * k]); c.my[k] = A(mu[2 * k + 1]);
      c.ca[k] = A(cv[4 * k]); c.cb[k] = A(cv[4 * k + 1]); c.cd[k] = A(cv[4 * k + 3]);
    }
  }
  const A log2pi = std::log(A(2) * A(M_PI));
  T* sc = score.mutable_data_ptr<T>();
  T* lp = logp.mutable_data_ptr<T>();
  const int64_t nchunks = (M + kChunk - 1) / kChunk;
  // Chunks per parallel task: >= kGrainPairs query x component pairs, so a call under ~0.2 ms of work runs
  // inline on one thread (no OpenMP fork/join, no wait for a descheduled worker on a shared machine). The
  // split does not change results: every query is scored on its own.
  const int64_t grain = std::max<int64_t>(1, kGrainPairs / std::max<int64_t>(K * kChunk, 1));
  at::parallel_for(0, nchunks, grain, [&](int64_t c0, int64_t c1) {
    A x0[kChunk], x1[kChunk], s2[kChunk], g0[kChunk], g1[kChunk], l[kChunk];
    AtLevel<A> lv;   // per task: reused by consecutive chunks at the same level
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t q0 = ch * kChunk, nq = std::min(kChunk, M - q0);
      bool shared = true;
      for (int64_t i = 0; i < nq; ++i) {
        x0[i] = A(xp[2 * (q0 + i)]); x1[i] = A(xp[2 * (q0 + i) + 1]);
        const A sv = A(sp[q0 + i]);
        s2[i] = sv * sv;
        shared = shared && s2[i] == s2[0];
      }
      // A shared level pays K inversions once instead of nq K; worth it from a few queries on.
      if (shared && nq >= 4) {
        if (lv.s2 != s2[0]) lv.compute(c, s2[0]);
        score_queries<A, true>(c, lv, x0, x1, s2, nq, g0, g1, l);
      } else {
        score_queries<A, false>(c, lv, x0, x1, s2, nq, g0, g1, l);
      }
      for (int64_t i = 0; i < nq; ++i) {
        sc[2 * (q0 + i)] = T(g0[i]);
        sc[2 * (q0 + i) + 1] = T(g1[i]);
        lp[q0 + i] = T(l[i] - log2pi);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> gmm_score_cpu(const at::Tensor& x_, const at::Tensor& weights_,
                                                 const at::Tensor& means_, const at::Tensor& covs_,
                                                 const at::Tensor& s_) {
  check_gmm_score_args(x_, weights_, means_, covs_, s_);
  const at::Tensor x = x_.contiguous(), weights = weights_.contiguous(), means = means_.contiguous(),
                   covs = covs_.contiguous(), s = s_.contiguous();
  at::Tensor score = at::empty(x.sizes(), x.options());
  at::Tensor logp = at::empty({x.size(0)}, x.options());
  if (x.size(0) == 0) return {score, logp};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gmm_score_cpu",
                                  [&] { gmm_score_typed<scalar_t>(x, weights, means, covs, s, score, logp); });
  return {score, logp};
}

}  // namespace
}  // namespace msdfast::cpu

TORCH_LIBRARY_FRAGMENT(msdfast, m) {
  m.def("gmm_score(Tensor x, Tensor weights, Tensor means, Tensor covs, Tensor s) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(msdfast, CPU, m) { m.impl("gmm_score", &msdfast::cpu::gmm_score_cpu); }
