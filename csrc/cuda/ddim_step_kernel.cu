// CUDA kernel of msdfast::ddim_step (math in common/ddim_step.h). Pure CUDA: compiled by plain nvcc.
#include "common/ddim_step.h"
#include "common/static_dispatch.h"
#include "cuda/cuda_types.cuh"
#include "cuda/ddim_step_kernel.h"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, bool HAS_U, bool HAS_C, bool HAS_N, bool X0>
__global__ void __launch_bounds__(kThreads)
    ddim_step_kernel(int64_t batch, int64_t per_sample, const float* __restrict__ coef, int64_t coef_stride,
                     const T* __restrict__ z, const T* __restrict__ eps_c, const T* __restrict__ eps_u,
                     const T* __restrict__ center, const T* __restrict__ noise, T* __restrict__ out,
                     T* __restrict__ x0) {
  using A = acc_t<T>;
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    // Coefficients are per sample: read once per block (uniform, cached), never per element.
    const auto k = ddim_step::Coef<A>::load(coef + b * coef_stride);
    const int64_t base = b * per_sample;
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < per_sample;
         j += int64_t(gridDim.x) * blockDim.x) {
      const int64_t i = base + j;
      A x0v;
      const A zn = ddim_step::point<HAS_U, HAS_C, HAS_N>(k, load(z + i), load(eps_c + i),
                                                       HAS_U ? load(eps_u + i) : A(0),
                                                       HAS_C ? load(center + i) : A(0),
                                                       HAS_N ? load(noise + i) : A(0), x0v);
      store(out + i, zn);
      if (X0) store(x0 + i, x0v);
    }
  }
}

}  // namespace

cudaError_t ddim_step_launch(DType dtype, int64_t batch, int64_t per_sample, const float* coef,
                             int64_t coef_stride, const void* z, const void* eps_c, const void* eps_u,
                             const void* center, const void* noise, void* out, void* x0, cudaStream_t stream) {
  if (batch == 0 || per_sample == 0) return cudaSuccess;
  const dim3 grid = grid_2d(per_sample, batch, kThreads);
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    dispatch_bools(
        [&](auto has_u, auto has_c, auto has_n, auto want_x0) {
          ddim_step_kernel<T, decltype(has_u)::value, decltype(has_c)::value, decltype(has_n)::value,
                           decltype(want_x0)::value><<<grid, kThreads, 0, stream>>>(
              batch, per_sample, coef, coef_stride, static_cast<const T*>(z), static_cast<const T*>(eps_c),
              static_cast<const T*>(eps_u), static_cast<const T*>(center), static_cast<const T*>(noise),
              static_cast<T*>(out), static_cast<T*>(x0));
        },
        eps_u != nullptr, center != nullptr, noise != nullptr, x0 != nullptr);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
