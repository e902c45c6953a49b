// Torch glue of msdfast::distill_grad on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "common/distill_grad_checks.h"
#include "common/distill_grad.h"
#include "common/torch_checks.h"
#include "cuda/distill_grad_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> distill_grad_cuda(
    const at::Tensor& eps_c_, const at::Tensor& eps_target_, const std::optional<at::Tensor>& eps_u,
    const at::Tensor& coef_, const std::optional<at::Tensor>& x, std::optional<double> clip) {
  check_distill_grad_args(eps_c_, eps_target_, eps_u, coef_, x, clip);
  const int64_t batch = eps_c_.size(0);

  const c10::cuda::CUDAGuard guard(eps_c_.device());
  const at::Tensor eps_c = eps_c_.contiguous(), eps_target = eps_target_.contiguous(), coef = coef_.contiguous();
  at::Tensor g = at::empty(eps_c.sizes(), eps_c.options());
  at::Tensor tgt = at::empty(x.has_value() ? eps_c.sizes() : at::IntArrayRef{0}, eps_c.options());
  at::Tensor norm = at::empty({}, eps_c.options().dtype(at::kFloat));
  const int64_t per_sample = batch > 0 ? eps_c.numel() / batch : 0;
  at::Tensor partial =
      at::empty({std::max<int64_t>(1, cuda::distill_grad_num_partials(batch, per_sample))}, norm.options());
  at::Tensor u_keep, x_keep;
  MSDFAST_CUDA_CHECK(cuda::distill_grad_launch(
      cuda::to_dtype(eps_c), batch, per_sample, coef.const_data_ptr<float>(),
      coef.size(0) == 1 ? 0 : distill_grad::kNumCols, eps_c.const_data_ptr(), eps_target.const_data_ptr(),
      opt_data(eps_u, u_keep), opt_data(x, x_keep), clip.has_value() ? *clip : 0.0, g.data_ptr(),
      x.has_value() ? tgt.data_ptr() : nullptr, partial.data_ptr<float>(), norm.data_ptr<float>(),
      cuda::current_stream()));
  return {g, tgt, norm};
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("distill_grad", &distill_grad_cuda); }

}  // namespace msdfast
