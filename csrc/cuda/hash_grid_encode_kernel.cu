// CUDA kernels of msdfast::hash_grid_encode (Instant-NGP grid encoding, tiny-cuda-nn's math in
// common/hash_grid.h): one thread per (point, level); the backward scatters with atomicAdd like tcnn (so its
// float sums are not bit-reproducible across runs, unlike the CPU kernel). Pure CUDA.
// Definition of correct: msdfast.ops.reference.hash_grid_encode(_backward).
#include <cuda_runtime.h>

#include "cuda/hash_grid_encode_kernel.h"

namespace msdfast {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// One thread per (point i, level l). Forward: out[i, l F + f] = sum_c w_c table[idx_c F + f] (src = params).
// BACKWARD: table[idx_c F + f] += w_c grad_out[i, l F + f] (src = grad_out, dst = the zeroed gradient table).
template <int D, bool BACKWARD>
__global__ void __launch_bounds__(kThreads)
    grid_kernel(int64_t n, hash_grid::Levels lv, int levels, int features, int interp, const float* __restrict__ x,
                const float* __restrict__ src, float* __restrict__ dst) {
  const int l = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t idx[1 << D];
  float w[1 << D];
  const int C = hash_grid::corners<D>(x + i * D, lv.l[l], interp, idx, w);
  const int64_t row = i * levels * features + l * features;
  for (int f = 0; f < features; ++f) {
    if constexpr (BACKWARD) {
      const float g = src[row + f];
      for (int c = 0; c < C; ++c) atomicAdd(dst + idx[c] * features + f, w[c] * g);
    } else {
      float acc = 0.0f;
      for (int c = 0; c < C; ++c) acc += w[c] * __ldg(src + idx[c] * features + f);
      dst[row + f] = acc;
    }
  }
}

template <bool BACKWARD>
cudaError_t launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features, int interp,
                   const float* x, const float* src, float* dst, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(levels), 1);
  switch (dims) {
    case 1: grid_kernel<1, BACKWARD><<<grid, kThreads, 0, stream>>>(n, lv, levels, features, interp, x, src, dst); break;
    case 2: grid_kernel<2, BACKWARD><<<grid, kThreads, 0, stream>>>(n, lv, levels, features, interp, x, src, dst); break;
    case 3: grid_kernel<3, BACKWARD><<<grid, kThreads, 0, stream>>>(n, lv, levels, features, interp, x, src, dst); break;
    case 4: grid_kernel<4, BACKWARD><<<grid, kThreads, 0, stream>>>(n, lv, levels, features, interp, x, src, dst); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t hash_grid_encode_launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features,
                                    int interp, const float* x, const float* params, float* out, cudaStream_t stream) {
  return launch<false>(n, dims, lv, levels, features, interp, x, params, out, stream);
}

cudaError_t hash_grid_encode_backward_launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features,
                                             int interp, const float* x, const float* grad_out, float* grad,
                                             cudaStream_t stream) {
  return launch<true>(n, dims, lv, levels, features, interp, x, grad_out, grad, stream);
}

}  // namespace cuda
}  // namespace msdfast
