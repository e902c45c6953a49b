// CUDA kernel of msdfast::noise_to_levels: all L noise levels from one read of x and eps
// (DSD paper eq. 9-10; msdfast/ops/reference.py::noise_to_levels). Pure CUDA.
#include "cuda/cuda_types.cuh"
#include "cuda/noise_to_levels_kernel.h"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    noise_to_levels_kernel(int64_t batch, int64_t per_sample, int64_t levels, const T* __restrict__ x,
                           const T* __restrict__ eps, const float* __restrict__ al, const float* __restrict__ sg,
                           T* __restrict__ out) {
  using A = acc_t<T>;
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < per_sample;
         j += int64_t(gridDim.x) * blockDim.x) {
      const A xv = load(x + b * per_sample + j), ev = load(eps + b * per_sample + j);
      for (int64_t l = 0; l < levels; ++l)
        store(out + (l * batch + b) * per_sample + j, A(al[b * levels + l]) * xv + A(sg[b * levels + l]) * ev);
    }
  }
}

}  // namespace

cudaError_t noise_to_levels_launch(DType dtype, int64_t batch, int64_t per_sample, int64_t levels, const void* x,
                                   const void* eps, const float* alphas, const float* sigmas, void* out,
                                   cudaStream_t stream) {
  if (batch == 0 || per_sample == 0 || levels == 0) return cudaSuccess;
  const dim3 grid = grid_2d(per_sample, batch, kThreads);
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    noise_to_levels_kernel<T><<<grid, kThreads, 0, stream>>>(batch, per_sample, levels, static_cast<const T*>(x),
                                                             static_cast<const T*>(eps), alphas, sigmas,
                                                             static_cast<T*>(out));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
