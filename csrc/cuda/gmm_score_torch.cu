// Torch glue of msdfast::gmm_score on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "common/gmm_score_checks.h"
#include "common/torch_checks.h"
#include "cuda/gmm_score_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

std::tuple<at::Tensor, at::Tensor> gmm_score_cuda(const at::Tensor& x_, const at::Tensor& weights_,
                                                  const at::Tensor& means_, const at::Tensor& covs_,
                                                  const at::Tensor& s_) {
  const int64_t K = check_gmm_score_args(x_, weights_, means_, covs_, s_);
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
