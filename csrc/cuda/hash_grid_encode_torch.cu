// Torch glue of msdfast::hash_grid_encode(_backward) on CUDA: checks, allocation, stream; kernels are pure CUDA.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "common/hash_grid_encode_checks.h"
#include "common/torch_checks.h"
#include "cuda/hash_grid_encode_kernel.h"
#include "cuda/torch_glue.h"

namespace msdfast {
namespace {

at::Tensor hash_grid_encode_cuda(const at::Tensor& x_, const at::Tensor& params_, c10::ArrayRef<double> scales,
                                 c10::ArrayRef<int64_t> resolutions, c10::ArrayRef<int64_t> sizes,
                                 c10::ArrayRef<int64_t> offsets, int64_t n_features, int64_t interp) {
  const hash_grid::Levels lv =
      check_hash_grid_encode_args(x_, params_, scales, resolutions, sizes, offsets, n_features, interp);
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), params = params_.contiguous();
  const int64_t N = x.size(0), L = static_cast<int64_t>(scales.size());
  at::Tensor out = at::empty({N, L * n_features}, x.options());
  MSDFAST_CUDA_CHECK(cuda::hash_grid_encode_launch(N, static_cast<int>(x.size(1)), lv, static_cast<int>(L),
                                                   static_cast<int>(n_features), static_cast<int>(interp),
                                                   x.const_data_ptr<float>(), params.const_data_ptr<float>(),
                                                   out.mutable_data_ptr<float>(), cuda::current_stream()));
  return out;
}

at::Tensor hash_grid_encode_backward_cuda(const at::Tensor& grad_out_, const at::Tensor& x_, int64_t n_params,
                                          c10::ArrayRef<double> scales, c10::ArrayRef<int64_t> resolutions,
                                          c10::ArrayRef<int64_t> sizes, c10::ArrayRef<int64_t> offsets,
                                          int64_t n_features, int64_t interp) {
  const hash_grid::Levels lv = check_hash_grid_encode_backward_args(grad_out_, x_, n_params, scales, resolutions,
                                                                    sizes, offsets, n_features, interp);
  const int64_t N = x_.size(0), L = static_cast<int64_t>(scales.size());
  const c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), grad_out = grad_out_.contiguous();
  at::Tensor grad = at::zeros({n_params}, x.options());
  MSDFAST_CUDA_CHECK(cuda::hash_grid_encode_backward_launch(
      N, static_cast<int>(x.size(1)), lv, static_cast<int>(L), static_cast<int>(n_features), static_cast<int>(interp),
      x.const_data_ptr<float>(), grad_out.const_data_ptr<float>(), grad.mutable_data_ptr<float>(),
      cuda::current_stream()));
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(msdfast, CUDA, m) {
  m.impl("hash_grid_encode", &hash_grid_encode_cuda);
  m.impl("hash_grid_encode_backward", &hash_grid_encode_backward_cuda);
}

}  // namespace msdfast
