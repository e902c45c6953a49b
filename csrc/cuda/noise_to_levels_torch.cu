// Torch glue of msdfast::noise_to_levels on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "common/noise_to_levels_checks.h"
#include "common/torch_checks.h"
#include "cuda/noise_to_levels_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor noise_to_levels_cuda(const at::Tensor& x_, const at::Tensor& eps_, const at::Tensor& alphas_,
                                const at::Tensor& sigmas_) {
  check_noise_to_levels_args(x_, eps_, alphas_, sigmas_);
  const int64_t B = x_.size(0);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), eps = eps_.contiguous(), alphas = alphas_.contiguous(),
                   sigmas = sigmas_.contiguous();
  const int64_t L = alphas.size(1);
  at::Tensor out = at::empty(noise_to_levels_out_shape(x, L), x.options());
  MSDFAST_CUDA_CHECK(cuda::noise_to_levels_launch(cuda::to_dtype(x), B, B > 0 ? x.numel() / B : 0, L,
                                                  x.const_data_ptr(), eps.const_data_ptr(),
                                                  alphas.const_data_ptr<float>(), sigmas.const_data_ptr<float>(),
                                                  out.data_ptr(), cuda::current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("noise_to_levels", &noise_to_levels_cuda); }

}  // namespace msdfast
