// Pure-CUDA launcher of msdfast::chain_mean_shift (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// x, out contiguous [numel] of `dtype`; y contiguous [n_chains, numel] (chain-major). out = x - mean_i y_i.
cudaError_t chain_mean_shift_launch(DType dtype, int64_t numel, int64_t n_chains, const void* y, const void* x,
                                    void* out, cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
