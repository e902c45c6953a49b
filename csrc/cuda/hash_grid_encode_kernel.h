// Pure-CUDA launchers of msdfast::hash_grid_encode and its params backward (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/hash_grid.h"

namespace msdfast {
namespace cuda {

// x float32 [n, dims] contiguous, params float32 table; out float32 [n, levels * features].
cudaError_t hash_grid_encode_launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features,
                                    int interp, const float* x, const float* params, float* out, cudaStream_t stream);

// grad (zero-initialised float32 table) += the encoding's transpose applied to grad_out [n, levels * features].
cudaError_t hash_grid_encode_backward_launch(int64_t n, int dims, const hash_grid::Levels& lv, int levels, int features,
                                             int interp, const float* x, const float* grad_out, float* grad,
                                             cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
