// Torch glue of msdfast::chain_mean_shift on CUDA: checks, allocation, stream; the kernel is pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common/chain_mean_shift_checks.h"
#include "common/torch_checks.h"
#include "cuda/chain_mean_shift_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor chain_mean_shift_cuda(const at::Tensor& y_, const at::Tensor& x_, int64_t n_chains) {
  check_chain_mean_shift_args(y_, x_, n_chains);
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
