// CUDA kernel of msdfast::distill_grad (math in common/distill_grad.h). Pure CUDA: compiled by plain nvcc.
#include <cfloat>
#include <limits>

#include "common/distill_grad.h"
#include "common/static_dispatch.h"
#include "cuda/cuda_types.cuh"
#include "cuda/distill_grad_kernel.h"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T> struct MaxFinite { static constexpr double value = FLT_MAX; };
template <> struct MaxFinite<double> { static constexpr double value = DBL_MAX; };
template <> struct MaxFinite<__half> { static constexpr double value = 65504.0; };
template <> struct MaxFinite<__nv_bfloat16> { static constexpr double value = 3.3895313892515355e38; };

__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // valid in thread 0
}

template <typename T, bool HAS_U, bool HAS_X>
__global__ void __launch_bounds__(kThreads)
    distill_grad_kernel(int64_t batch, int64_t per_sample, const float* __restrict__ coef, int64_t coef_stride,
                        const T* __restrict__ ec, const T* __restrict__ et, const T* __restrict__ eu,
                        const T* __restrict__ x, acc_t<T> clip, T* __restrict__ g, T* __restrict__ tgt,
                        float* __restrict__ partial) {
  using A = acc_t<T>;
  const A big = A(MaxFinite<T>::value);
  float sq = 0.0f;
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    const auto k = distill_grad::Coef<A>::load(coef + b * coef_stride);  // uniform per block
    const int64_t base = b * per_sample;
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < per_sample;
         j += int64_t(gridDim.x) * blockDim.x) {
      const int64_t i = base + j;
      const A v = distill_grad::raw<HAS_U>(k, load(ec + i), HAS_U ? load(eu + i) : A(0), load(et + i), big);
      T rounded;
      store(&rounded, v);  // round to the storage dtype before clipping, as the reference does
      const A gv = distill_grad::clip(load(&rounded), clip);
      store(g + i, gv);
      if (HAS_X) store(tgt + i, load(x + i) - gv);
      sq += float(gv * gv);
    }
  }
  sq = block_sum(sq);
  if (threadIdx.x == 0) partial[blockIdx.y * gridDim.x + blockIdx.x] = sq;
}

// One block sums the partials in a fixed order (deterministic), in double, and takes the sqrt.
__global__ void __launch_bounds__(kThreads) norm_kernel(const float* __restrict__ partial, int64_t n,
                                                        float* __restrict__ norm) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partial[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) norm[0] = float(sqrt(s[0]));
}

}  // namespace

int64_t distill_grad_num_partials(int64_t batch, int64_t per_sample) {
  const dim3 grid = grid_2d(per_sample, batch, kThreads);
  return int64_t(grid.x) * grid.y;
}

cudaError_t distill_grad_launch(DType dtype, int64_t batch, int64_t per_sample, const float* coef,
                                int64_t coef_stride, const void* eps_c, const void* eps_target, const void* eps_u,
                                const void* x, double clip, void* g, void* target, float* partial, float* norm,
                                cudaStream_t stream) {
  if (batch == 0 || per_sample == 0) {
    return cudaMemsetAsync(norm, 0, sizeof(float), stream);
  }
  const dim3 grid = grid_2d(per_sample, batch, kThreads);
  const double clip_v = clip > 0 ? clip : std::numeric_limits<double>::infinity();
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    dispatch_bools(
        [&](auto has_u, auto has_x) {
          distill_grad_kernel<T, decltype(has_u)::value, decltype(has_x)::value><<<grid, kThreads, 0, stream>>>(
              batch, per_sample, coef, coef_stride, static_cast<const T*>(eps_c), static_cast<const T*>(eps_target),
              static_cast<const T*>(eps_u), static_cast<const T*>(x), acc_t<T>(clip_v), static_cast<T*>(g),
              static_cast<T*>(target), partial);
        },
        eps_u != nullptr, x != nullptr);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    norm_kernel<<<1, kThreads, 0, stream>>>(partial, int64_t(grid.x) * grid.y, norm);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
