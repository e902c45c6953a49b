// CUDA kernel of msdfast::gmm_score: 2D Gaussian-mixture score and log-density at per-query noise level s
// (MATH.md sec. 3; math in common/gmm_score.h), one thread per query streaming over components staged in
// shared memory, online log-sum-exp (common/online_lse.h). Pure CUDA: compiled by plain nvcc.
#include <limits>

#include "common/gmm_score.h"
#include "cuda/cuda_types.cuh"
#include "cuda/gmm_score_kernel.h"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gmm_score_kernel(int64_t m, int64_t k, const T* __restrict__ x, const T* __restrict__ s,
                     const T* __restrict__ w, const T* __restrict__ mu, const T* __restrict__ cov,
                     T* __restrict__ score, T* __restrict__ logp) {
  using A = acc_t<T>;
  __shared__ A red[kThreads];
  __shared__ A lw[kTile], mx[kTile], my[kTile], ca[kTile], cb[kTile], cd[kTile];
  // Normalise the weights (every block: k reads, negligible next to the m x k work).
  A part = A(0);
  for (int64_t i = threadIdx.x; i < k; i += kThreads) part += load(w + i);
  red[threadIdx.x] = part;
  __syncthreads();
  for (int h = kThreads / 2; h > 0; h >>= 1) {
    if (threadIdx.x < h) red[threadIdx.x] += red[threadIdx.x + h];
    __syncthreads();
  }
  const A wsum = red[0];

  const int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = q < m;
  const A x0 = active ? load(x + 2 * q) : A(0), x1 = active ? load(x + 2 * q + 1) : A(0);
  const A sv = active ? load(s + q) : A(0), s2 = sv * sv;
  OnlineLse2<A> st{-std::numeric_limits<A>::infinity(), A(0), A(0), A(0)};
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int len = int(min(int64_t(kTile), k - k0));
    __syncthreads();
    for (int i = threadIdx.x; i < len; i += kThreads) {
      const int64_t c = k0 + i;
      lw[i] = log(load(w + c) / wsum);
      mx[i] = load(mu + 2 * c);
      my[i] = load(mu + 2 * c + 1);
      ca[i] = load(cov + 4 * c);
      cb[i] = load(cov + 4 * c + 1);
      cd[i] = load(cov + 4 * c + 3);
    }
    __syncthreads();
    for (int j = 0; j < len; ++j) {
      A sol0, sol1;
      const A logit = gmm_score::component(lw[j], mx[j], my[j], ca[j], cb[j], cd[j], s2, x0, x1, sol0, sol1);
      st.update(logit, sol0, sol1);
    }
  }
  if (active) {
    const A log2pi = log(A(2) * A(3.14159265358979323846));
    store(score + 2 * q, st.g0 / st.l);
    store(score + 2 * q + 1, st.g1 / st.l);
    store(logp + q, st.m + log(st.l) - log2pi);
  }
}

}  // namespace

cudaError_t gmm_score_launch(DType dtype, int64_t m, int64_t k, const void* x, const void* s, const void* weights,
                             const void* means, const void* covs, void* score, void* logp, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  const long long blocks = (m + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    gmm_score_kernel<T><<<dim3(static_cast<unsigned>(blocks)), kThreads, 0, stream>>>(
        m, k, static_cast<const T*>(x), static_cast<const T*>(s), static_cast<const T*>(weights),
        static_cast<const T*>(means), static_cast<const T*>(covs), static_cast<T*>(score), static_cast<T*>(logp));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
