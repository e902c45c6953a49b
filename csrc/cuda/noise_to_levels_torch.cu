// Torch glue of msdfast::noise_to_levels on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "common/torch_checks.h"
#include "cuda/noise_to_levels_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor noise_to_levels_cuda(const at::Tensor& x_, const at::Tensor& eps_, const at::Tensor& alphas_,
                                const at::Tensor& sigmas_) {
  check_float("x", x_);
  TORCH_CHECK(x_.dim() >= 1, "x: expected a batch [B, ...], got a 0-d tensor");
  check_like("eps", eps_, x_);
  const int64_t B = x_.size(0);
  for (const auto& [name, t] : {std::pair{"alphas", &alphas_}, std::pair{"sigmas", &sigmas_}}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == B, name, ": expected a [", B, ", L] table, got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == at::kFloat, name, ": expected float32, got ", t->scalar_type());
    TORCH_CHECK(t->device() == x_.device(), name, ": on device ", t->device(), ", expected ", x_.device());
  }
  TORCH_CHECK(alphas_.size(1) == sigmas_.size(1), "sigmas: must have as many levels (columns) as alphas");
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), eps = eps_.contiguous(), alphas = alphas_.contiguous(),
                   sigmas = sigmas_.contiguous();
  const int64_t L = alphas.size(1);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[0] = L * B;
  at::Tensor out = at::empty(shape, x.options());
  MSDFAST_CUDA_CHECK(cuda::noise_to_levels_launch(cuda::to_dtype(x), B, B > 0 ? x.numel() / B : 0, L,
                                                  x.const_data_ptr(), eps.const_data_ptr(),
                                                  alphas.const_data_ptr<float>(), sigmas.const_data_ptr<float>(),
                                                  out.data_ptr(), cuda::current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("noise_to_levels", &noise_to_levels_cuda); }

}  // namespace msdfast
