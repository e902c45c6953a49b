// Torch glue of msdfast::ddim_step on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "common/ddim_step_checks.h"
#include "common/ddim_step.h"
#include "common/torch_checks.h"
#include "cuda/ddim_step_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

std::tuple<at::Tensor, at::Tensor> ddim_step_cuda(const at::Tensor& z_, const at::Tensor& eps_c_,
                                                  const std::optional<at::Tensor>& eps_u,
                                                  const at::Tensor& coef_, const std::optional<at::Tensor>& center,
                                                  const std::optional<at::Tensor>& noise, bool return_x0) {
  check_ddim_step_args(z_, eps_c_, eps_u, coef_, center, noise);
  const int64_t batch = z_.size(0);

  const c10::cuda::CUDAGuard guard(z_.device());
  const at::Tensor z = z_.contiguous(), eps_c = eps_c_.contiguous(), coef = coef_.contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options());
  at::Tensor x0 = at::empty(return_x0 ? z.sizes() : at::IntArrayRef{0}, z.options());
  if (z.numel() == 0) return {out, x0};
  at::Tensor u_keep, c_keep, n_keep;
  MSDFAST_CUDA_CHECK(cuda::ddim_step_launch(
      cuda::to_dtype(z), batch, z.numel() / batch, coef.const_data_ptr<float>(),
      coef.size(0) == 1 ? 0 : ddim_step::kNumCols, z.const_data_ptr(), eps_c.const_data_ptr(),
      opt_data(eps_u, u_keep), opt_data(center, c_keep), opt_data(noise, n_keep), out.data_ptr(),
      return_x0 ? x0.data_ptr() : nullptr, cuda::current_stream()));
  return {out, x0};
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("ddim_step", &ddim_step_cuda); }

}  // namespace msdfast
