// The argument checks of msdfast::gmm_score: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/torch_checks.h"

namespace msdfast {

// Returns K, the number of mixture components.
inline int64_t check_gmm_score_args(const at::Tensor& x, const at::Tensor& weights, const at::Tensor& means,
                                    const at::Tensor& covs, const at::Tensor& s) {
  check_float("x", x);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 2, "x: expected [M, 2] points, got shape ", x.sizes());
  const int64_t K = weights.dim() == 1 ? weights.size(0) : -1;
  TORCH_CHECK(K > 0, "weights: expected a non-empty [K] tensor, got shape ", weights.sizes());
  TORCH_CHECK(means.dim() == 2 && means.size(0) == K && means.size(1) == 2, "means: expected shape [", K,
              ", 2], got ", means.sizes());
  TORCH_CHECK(covs.dim() == 3 && covs.size(0) == K && covs.size(1) == 2 && covs.size(2) == 2,
              "covs: expected shape [", K, ", 2, 2], got ", covs.sizes());
  TORCH_CHECK(s.dim() == 1 && s.size(0) == x.size(0), "s: expected an [M] = [", x.size(0), "] tensor, got ",
              s.sizes());
  for (const auto& [name, t] : {std::pair{"weights", &weights}, std::pair{"means", &means},
                                std::pair{"covs", &covs}, std::pair{"s", &s}}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), name, ": dtype ", t->scalar_type(), " does not match ",
                x.scalar_type());
    TORCH_CHECK(t->device() == x.device(), name, ": on device ", t->device(), ", expected ", x.device());
  }
  return K;
}

}  // namespace msdfast
