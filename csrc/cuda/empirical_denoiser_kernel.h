// Pure-CUDA launcher of msdfast::empirical_denoiser (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// Bytes of scratch the launcher needs (the running weighted sums for d != 2; 0 for d = 2).
int64_t empirical_denoiser_workspace_bytes(DType dtype, int64_t m, int64_t d);

// x [m, d], data [n, d], out [m, d] contiguous of `dtype`; s float32 [m] (> 0).
// out = softmax_i(-|x - u_i|^2 / 2 s^2) @ u (MSD paper eq. 16), streamed over the data.
cudaError_t empirical_denoiser_launch(DType dtype, int64_t m, int64_t n, int64_t d, const void* x, const void* data,
                                      const float* s, void* out, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
