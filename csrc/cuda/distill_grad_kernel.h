// Pure-CUDA launcher of msdfast::distill_grad (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// Number of float32 partial sums of g^2 the launcher needs in `partial` (one per thread block).
int64_t distill_grad_num_partials(int64_t batch, int64_t per_sample);

// All tensors contiguous [batch, per_sample] of `dtype`; eps_u, x and target may be null (absent).
// coef is float32 [batch or 1, 3] with row stride coef_stride (0 broadcasts one row). clip <= 0: none.
// Writes g, target (if x), the per-block partial sums and finally norm[0] = sqrt(sum of partials)
// (float32, reduced in a fixed order by a second single-block kernel: deterministic).
cudaError_t distill_grad_launch(DType dtype, int64_t batch, int64_t per_sample, const float* coef,
                                int64_t coef_stride, const void* eps_c, const void* eps_target, const void* eps_u,
                                const void* x, double clip, void* g, void* target, float* partial, float* norm,
                                cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
