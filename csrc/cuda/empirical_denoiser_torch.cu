// Torch glue of msdfast::empirical_denoiser on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/torch_checks.h"
#include "cuda/empirical_denoiser_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor empirical_denoiser_cuda(const at::Tensor& x_, const at::Tensor& data_, const at::Tensor& s_) {
  check_float("x", x_);
  TORCH_CHECK(x_.dim() == 2, "x: expected [M, d] queries, got shape ", x_.sizes());
  TORCH_CHECK(data_.dim() == 2 && data_.size(1) == x_.size(1) && data_.size(0) > 0, "data: expected a non-empty [N, ",
              x_.size(1), "] tensor, got shape ", data_.sizes());
  TORCH_CHECK(data_.scalar_type() == x_.scalar_type(), "data: dtype ", data_.scalar_type(), " does not match ",
              x_.scalar_type());
  TORCH_CHECK(data_.device() == x_.device(), "data: on device ", data_.device(), ", expected ", x_.device());
  TORCH_CHECK(s_.dim() == 1 && s_.size(0) == x_.size(0), "s: expected an [M] = [", x_.size(0), "] tensor, got ",
              s_.sizes());
  TORCH_CHECK(s_.scalar_type() == at::kFloat, "s: expected float32, got ", s_.scalar_type());
  TORCH_CHECK(s_.device() == x_.device(), "s: on device ", s_.device(), ", expected ", x_.device());
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), data = data_.contiguous(), s = s_.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const auto dtype = cuda::to_dtype(x);
  const int64_t ws = cuda::empirical_denoiser_workspace_bytes(dtype, x.size(0), x.size(1));
  at::Tensor workspace = at::empty({std::max<int64_t>(ws, 1)}, x.options().dtype(at::kByte));
  MSDFAST_CUDA_CHECK(cuda::empirical_denoiser_launch(dtype, x.size(0), data.size(0), x.size(1), x.const_data_ptr(),
                                                     data.const_data_ptr(), s.const_data_ptr<float>(),
                                                     out.data_ptr(), workspace.data_ptr(), cuda::current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("empirical_denoiser", &empirical_denoiser_cuda); }

}  // namespace msdfast
