// The argument checks of msdfast::noise_to_levels: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/torch_checks.h"

namespace msdfast {

inline void check_noise_to_levels_args(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& alphas,
                                       const at::Tensor& sigmas) {
  check_float("x", x);
  TORCH_CHECK(x.dim() >= 1, "x: expected a batch [B, ...], got a 0-d tensor");
  check_like("eps", eps, x);
  const int64_t B = x.size(0);
  for (const auto& [name, t] : {std::pair{"alphas", &alphas}, std::pair{"sigmas", &sigmas}}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == B, name, ": expected a [", B, ", L] table, got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == at::kFloat, name, ": expected float32, got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), name, ": on device ", t->device(), ", expected ", x.device());
  }
  TORCH_CHECK(alphas.size(1) == sigmas.size(1), "sigmas: must have as many levels (columns) as alphas");
}

// noise_to_levels' output [L * B, ...]: x's shape with the batch scaled by the number of levels.
inline std::vector<int64_t> noise_to_levels_out_shape(const at::Tensor& x, int64_t levels) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[0] *= levels;
  return shape;
}

}  // namespace msdfast
