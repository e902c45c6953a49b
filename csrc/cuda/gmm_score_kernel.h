// Pure-CUDA launcher of msdfast::gmm_score (no torch): raw pointers + stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// x [m, 2], s [m], weights [k], means [k, 2], covs [k, 2, 2], score [m, 2], logp [m]: contiguous, `dtype`.
cudaError_t gmm_score_launch(DType dtype, int64_t m, int64_t k, const void* x, const void* s, const void* weights,
                             const void* means, const void* covs, void* score, void* logp, cudaStream_t stream);

}  // namespace cuda
}  // namespace msdfast
