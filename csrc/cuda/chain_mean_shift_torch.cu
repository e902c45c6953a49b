// Torch glue of msdfast::chain_mean_shift on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/torch_checks.h"
#include "cuda/chain_mean_shift_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor chain_mean_shift_cuda(const at::Tensor& y_, const at::Tensor& x_, int64_t n_chains) {
  check_float("x", x_);
  TORCH_CHECK(x_.dim() >= 1, "x: expected a batch [B, ...], got a 0-d tensor");
  TORCH_CHECK(n_chains >= 1, "n_chains: must be >= 1, got ", n_chains);
  TORCH_CHECK(y_.device() == x_.device(), "y: on device ", y_.device(), ", expected ", x_.device());
  TORCH_CHECK(y_.scalar_type() == x_.scalar_type(), "y: dtype ", y_.scalar_type(), " does not match ",
              x_.scalar_type());
  TORCH_CHECK(y_.dim() == x_.dim() && y_.sizes().slice(1) == x_.sizes().slice(1) &&
                  y_.size(0) == n_chains * x_.size(0),
              "y: shape ", y_.sizes(), " is not [n_chains * B, ...] for x of shape ", x_.sizes());
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor y = y_.contiguous(), x = x_.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  MSDFAST_CUDA_CHECK(cuda::chain_mean_shift_launch(cuda::to_dtype(x), x.numel(), n_chains, y.const_data_ptr(),
                                                   x.const_data_ptr(), out.data_ptr(), cuda::current_stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) { m.impl("chain_mean_shift", &chain_mean_shift_cuda); }

}  // namespace msdfast
