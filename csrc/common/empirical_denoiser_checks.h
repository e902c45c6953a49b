// The argument checks of msdfast::empirical_denoiser: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/torch_checks.h"

namespace msdfast {

inline void check_empirical_denoiser_args(const at::Tensor& x, const at::Tensor& data, const at::Tensor& s) {
  check_float("x", x);
  TORCH_CHECK(x.dim() == 2, "x: expected [M, d] queries, got shape ", x.sizes());
  TORCH_CHECK(data.dim() == 2 && data.size(1) == x.size(1) && data.size(0) > 0, "data: expected a non-empty [N, ",
              x.size(1), "] tensor, got shape ", data.sizes());
  TORCH_CHECK(data.scalar_type() == x.scalar_type(), "data: dtype ", data.scalar_type(), " does not match ",
              x.scalar_type());
  TORCH_CHECK(data.device() == x.device(), "data: on device ", data.device(), ", expected ", x.device());
  TORCH_CHECK(s.dim() == 1 && s.size(0) == x.size(0), "s: expected an [M] = [", x.size(0), "] tensor, got ",
              s.sizes());
  TORCH_CHECK(s.scalar_type() == at::kFloat, "s: expected float32, got ", s.scalar_type());
  TORCH_CHECK(s.device() == x.device(), "s: on device ", s.device(), ", expected ", x.device());
}

}  // namespace msdfast
