// Pure-CUDA launcher of msdfast::noise_to_levels (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// x, eps contiguous [batch, per_sample] of `dtype`; alphas, sigmas float32 [batch, levels];
// out contiguous [levels * batch, per_sample]: out[l*B + b] = alphas[b, l] x[b] + sigmas[b, l] eps[b].
cudaError_t noise_to_levels_launch(DType dtype, int64_t batch, int64_t per_sample, int64_t levels, const void* x,
                                   const void* eps, const float* alphas, const float* sigmas, void* out,
                                   cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
