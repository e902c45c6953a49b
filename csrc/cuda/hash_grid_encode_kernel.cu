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

template <int D>
__global__ void __launch_bounds__(kThreads)
    encode_kernel(int64_t n, hash_grid::Levels lv, int levels, int features, int interp, const float* __restrict__ x,
                  const float* __restrict__ params, float* __restrict__ out) {
  const int l = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t idx[1 << D];
  float w[1 << D];
  const int C = hash_grid::corners<D>(x + i * D, lv.l[l], interp, idx, w);
  float* o = out + i * levels * features + l * features;
  for (int f = 0; f < features; ++f) {
    float acc = 0.0f;
    for (int c = 0; c < C; ++c) acc += w[c] * __ldg(params + idx[c] * features + f);
    o[f] = acc;
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(int64_t n, hash_grid::Levels lv, int levels, int features, int interp,
                    const float* __restrict__ x, const float* __restrict__ grad_out, float* __restrict__ grad) {
  const int l = blockIdx.y;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t idx[1 << D];
  float w[1 << D];
  const int C = hash_grid::corners<D>(x + i * D, lv.l[l], interp, idx, w);
  const float* go = grad_out + i * levels * features + l * features;
  for (int f = 0; f < features; ++f) {
    const float g = go[f];
    for (int c = 0; c < C; ++c) atomicAdd(grad + idx[c] * features + f, w[c] * g);
  }
}

template <typename Launch>
cudaError_t by_dims(int dims, Launch&& launch) {
  switch (dims) {
    case 1: return launch(std::integral_constant<int, 1>{});
    case 2: return launch(std::integral_constant<int, 2>{});
    case 3: return launch(std::integral_constant<int, 3>{});
    case 4: return launch(std::integral_constant<int, 4>{});
  }
  return cudaErrorInvalidValue;
}

dim3 grid_for(int64_t n, int levels) {
  return dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(levels), 1);
}

}  // namespace

cudaError_t hash_grid_encode_launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features,
                                    int interp, const float* x, const float* params, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return by_dims(dims, [&](auto d) -> cudaError_t {
    encode_kernel<decltype(d)::value><<<grid_for(n, levels), kThreads, 0, stream>>>(n, lv, levels, features, interp,
                                                                                     x, params, out);
    return cudaGetLastError();
  });
}

cudaError_t hash_grid_encode_backward_launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features,
                                             int interp, const float* x, const float* grad_out, float* grad,
                                             cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return by_dims(dims, [&](auto d) -> cudaError_t {
    backward_kernel<decltype(d)::value><<<grid_for(n, levels), kThreads, 0, stream>>>(n, lv, levels, features,
                                                                                       interp, x, grad_out, grad);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace msdfast
