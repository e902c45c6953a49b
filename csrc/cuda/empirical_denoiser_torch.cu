// Torch glue of msdfast::empirical_denoiser on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/empirical_denoiser_checks.h"
#include "common/torch_checks.h"
#include "cuda/empirical_denoiser_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor empirical_denoiser_cuda(const at::Tensor& x_, const at::Tensor& data_, const at::Tensor& s_) {
  check_empirical_denoiser_args(x_, data_, s_);
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
