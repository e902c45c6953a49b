// Helpers for the torch glue files csrc/cuda/<op>_torch.cu (compiled only with a CUDA torch).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

inline DType to_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, "msdfast CUDA kernels: unsupported dtype ", t.scalar_type());
  }
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

#define MSDFAST_CUDA_CHECK(expr)                                                             \
  do {                                                                                       \
    const cudaError_t msdfast_err_ = (expr);                                                 \
    TORCH_CHECK(msdfast_err_ == cudaSuccess, "msdfast CUDA error: ", cudaGetErrorString(msdfast_err_)); \
  } while (0)

}  // namespace cuda
}  // namespace msdfast
