// CUDA kernel of msdfast::empirical_denoiser: the ideal denoiser of an empirical distribution (MSD paper
// eq. 16), one thread per query streaming over the data with an online softmin of the squared distances
// (common/online_lse.h: weights exp(-(d2 - d2_min) c), c = 1 / 2s^2 clamped finite, so a tiny s gives the nearest
// point as the reference defines): never an M x N matrix, one exp per (query, point) pair. d = 2 stages data
// tiles in shared memory; any
// other d reads the data through the cache (all threads of a warp read the same point: a broadcast)
// and keeps its running sums in a per-query workspace row. Pure CUDA: compiled by plain nvcc.
#include <limits>

#include "common/online_lse.h"
#include "cuda/cuda_types.cuh"
#include "cuda/empirical_denoiser_kernel.h"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 512;

// 1 / 2s^2, clamped to the largest finite value (s^2 underflows or the quotient overflows for tiny s).
template <typename A>
__device__ __forceinline__ A half_inv_var(float s) {
  const A sv = A(s), c = A(0.5) / (sv * sv), cmax = std::numeric_limits<A>::max();
  return c < cmax ? c : cmax;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    denoise2_kernel(int64_t m, int64_t n, const T* __restrict__ x, const T* __restrict__ u,
                    const float* __restrict__ s, T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ A tile[2 * kTile];
  const int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool active = q < m;
  const A px = active ? load(x + 2 * q) : A(0), py = active ? load(x + 2 * q + 1) : A(0);
  const A c = half_inv_var<A>(active ? s[q] : 1.0f);
  OnlineSoftmin<A> st{std::numeric_limits<A>::infinity(), A(0)};
  A g0 = A(0), g1 = A(0);
  for (int64_t t0 = 0; t0 < n; t0 += kTile) {
    const int len = int(min(int64_t(kTile), n - t0));
    __syncthreads();
    for (int i = threadIdx.x; i < 2 * len; i += kThreads) tile[i] = load(u + 2 * t0 + i);
    __syncthreads();
    for (int j = 0; j < len; ++j) {
      const A ux = tile[2 * j], uy = tile[2 * j + 1];
      const A dx = px - ux, dy = py - uy;
      A r;
      const A e = st.push(dx * dx + dy * dy, c, r);
      g0 = g0 * r + e * ux;
      g1 = g1 * r + e * uy;
    }
  }
  if (active) {
    store(out + 2 * q, g0 / st.l);
    store(out + 2 * q + 1, g1 / st.l);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    denoise_generic_kernel(int64_t m, int64_t n, int64_t d, const T* __restrict__ x, const T* __restrict__ u,
                           const float* __restrict__ s, T* __restrict__ out, acc_t<T>* __restrict__ acc) {
  using A = acc_t<T>;
  const int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (q >= m) return;
  const T* p = x + q * d;
  A* a = acc + q * d;
  for (int64_t k = 0; k < d; ++k) a[k] = A(0);
  const A c = half_inv_var<A>(s[q]);
  OnlineSoftmin<A> st{std::numeric_limits<A>::infinity(), A(0)};
  for (int64_t i = 0; i < n; ++i) {
    const T* ui = u + i * d;
    A d2 = A(0);
    for (int64_t k = 0; k < d; ++k) {
      const A df = load(p + k) - load(ui + k);
      d2 += df * df;
    }
    A r;
    const A e = st.push(d2, c, r);  // one exp per pair either way
    if (r != A(1))
      for (int64_t k = 0; k < d; ++k) a[k] *= r;
    for (int64_t k = 0; k < d; ++k) a[k] += e * load(ui + k);
  }
  for (int64_t k = 0; k < d; ++k) store(out + q * d + k, a[k] / st.l);
}

}  // namespace

int64_t empirical_denoiser_workspace_bytes(DType dtype, int64_t m, int64_t d) {
  if (d == 2) return 0;
  return m * d * (dtype == DType::kFloat64 ? int64_t(sizeof(double)) : int64_t(sizeof(float)));
}

cudaError_t empirical_denoiser_launch(DType dtype, int64_t m, int64_t n, int64_t d, const void* x, const void* data,
                                      const float* s, void* out, void* workspace, cudaStream_t stream) {
  if (m == 0 || d == 0) return cudaSuccess;
  const long long blocks = (m + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(blocks), 1, 1);
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    if (d == 2) {
      denoise2_kernel<T><<<grid, kThreads, 0, stream>>>(m, n, static_cast<const T*>(x), static_cast<const T*>(data),
                                                        s, static_cast<T*>(out));
    } else {
      denoise_generic_kernel<T><<<grid, kThreads, 0, stream>>>(m, n, d, static_cast<const T*>(x),
                                                               static_cast<const T*>(data), s, static_cast<T*>(out),
                                                               static_cast<acc_t<T>*>(workspace));
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
