// Torch glue of msdfast::gmm_score on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "common/torch_checks.h"
#include "cuda/gmm_score_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

std::tuple<at::Tensor, at::Tensor> gmm_score_cuda(const at::Tensor& x_, const at::Tensor& weights_,
                                                  const at::Tensor& means_, const at::Tensor& covs_,
                                                  const at::Tensor& s_) {
  check_float("x", x_);
  TORCH_CHECK(x_.dim() == 2 && x_.size(1) == 2, "x: expected [M, 2] points, got shape ", x_.sizes());
  const int64_t K = weights_.dim() == 1 ? weights_.size(0) : -1;
  TORCH_CHECK(K > 0, "weights: expected a non-empty [K] tensor, got shape ", weights_.sizes());
  TORCH_CHECK(means_.dim() == 2 && means_.size(0) == K && means_.size(1) == 2, "means: expected shape [", K,
              ", 2], got ", means_.sizes());
  TORCH_CHECK(covs_.dim() == 3 && covs_.size(0) == K && covs_.size(1) == 2 && covs_.size(2) == 2,
              "covs: expected shape [", K, ", 2, 2], got ", covs_.sizes());
  TORCH_CHECK(s_.dim() == 1 && s_.size(0) == x_.size(0), "s: expected an [M] = [", x_.size(0), "] tensor, got ",
              s_.sizes());
  for (const auto& [name, t] : {std::pair{"weights", &weights_}, std::pair{"means", &means_},
                                std::pair{"covs", &covs_}, std::pair{"s", &s_}}) {
    TORCH_CHECK(t->scalar_type() == x_.scalar_type(), name, ": dtype ", t->scalar_type(), " does not match ",
                x_.scalar_type());
    TORCH_CHECK(t->device() == x_.device(), name, ": on device ", t->device(), ", expected ", x_.device());
  }
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), weights = weights_.contiguous(), means = means_.contiguous(),
                   covs = covs_.contiguous(), s = s_.contiguous();
  at::Tensor score = at::empty(x.sizes(), x.options());
  at::Tensor logp = at::empty({x.size(0)}, x.options());
  MSDFAST_CUDA_CHECK(cuda::gmm_score_launch(cuda::to_dtype(x), x.size(0), K, x.const_data_ptr(), s.const_data_ptr(),
                                            weights.const_data_ptr(), means.const_data_ptr(),
                                            covs.const_data_ptr(), score.data_ptr(), logp.data_ptr(),
                                            cuda::current_stream()));
  return {score, logp};
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("gmm_score", &gmm_score_cuda); }

}  // namespace msdfast
