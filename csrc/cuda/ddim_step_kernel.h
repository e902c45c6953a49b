// Pure-CUDA launcher of the fused sampling step (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// All tensors contiguous [batch, per_sample] of `dtype`; eps_u/center/noise/x0 may be null (absent).
// coef is float32 [batch or 1, 8] with row stride coef_stride (0 broadcasts one row).
cudaError_t ddim_step_launch(DType dtype, int64_t batch, int64_t per_sample, const float* coef,
                             int64_t coef_stride, const void* z, const void* eps_c, const void* eps_u,
                             const void* center, const void* noise, void* out, void* x0, cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
