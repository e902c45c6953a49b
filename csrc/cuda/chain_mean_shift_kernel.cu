// CUDA kernel of msdfast::chain_mean_shift: MSD's g = x - mean_i y_i (MSD paper Algorithm 2). Pure CUDA.
#include "cuda/chain_mean_shift_kernel.h"
#include "cuda/cuda_types.cuh"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    chain_mean_shift_kernel(int64_t numel, int64_t n, const T* __restrict__ y, const T* __restrict__ x,
                            T* __restrict__ out) {
  using A = acc_t<T>;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < numel; j += int64_t(gridDim.x) * blockDim.x) {
    A sum = A(0);
    for (int64_t i = 0; i < n; ++i) sum += load(y + i * numel + j);  // chains in order, as torch.mean
    store(out + j, load(x + j) - sum / A(n));
  }
}

}  // namespace

cudaError_t chain_mean_shift_launch(DType dtype, int64_t numel, int64_t n_chains, const void* y, const void* x,
                                    void* out, cudaStream_t stream) {
  if (numel == 0) return cudaSuccess;
  const dim3 grid = grid_2d(numel, 1, kThreads);
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = std::remove_pointer_t<decltype(tag)>;
    chain_mean_shift_kernel<T><<<grid, kThreads, 0, stream>>>(numel, n_chains, static_cast<const T*>(y),
                                                              static_cast<const T*>(x), static_cast<T*>(out));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
