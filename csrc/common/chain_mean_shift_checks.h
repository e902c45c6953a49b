// The argument checks of msdfast::chain_mean_shift: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/torch_checks.h"

namespace msdfast {

inline void check_chain_mean_shift_args(const at::Tensor& y, const at::Tensor& x, int64_t n_chains) {
  check_float("x", x);
  TORCH_CHECK(x.dim() >= 1, "x: expected a batch [B, ...], got a 0-d tensor");
  TORCH_CHECK(n_chains >= 1, "n_chains: must be >= 1, got ", n_chains);
  TORCH_CHECK(y.device() == x.device(), "y: on device ", y.device(), ", expected ", x.device());
  TORCH_CHECK(y.scalar_type() == x.scalar_type(), "y: dtype ", y.scalar_type(), " does not match ", x.scalar_type());
  TORCH_CHECK(y.dim() == x.dim() && y.sizes().slice(1) == x.sizes().slice(1) && y.size(0) == n_chains * x.size(0),
              "y: shape ", y.sizes(), " is not [n_chains * B, ...] for x of shape ", x.sizes(),
              " and n_chains = ", n_chains);
}

}  // namespace msdfast
