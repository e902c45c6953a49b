// The argument checks of msdfast::ddim_step: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/ddim_step.h"
#include "common/torch_checks.h"

namespace msdfast {

inline void check_ddim_step_args(const at::Tensor& z, const at::Tensor& eps_c, const std::optional<at::Tensor>& eps_u,
                                 const at::Tensor& coef, const std::optional<at::Tensor>& center,
                                 const std::optional<at::Tensor>& noise) {
  check_float("z", z);
  TORCH_CHECK(z.dim() >= 1, "z: expected a batch [B, ...], got a 0-d tensor");
  check_like("eps_c", eps_c, z);
  check_like("eps_u", eps_u, z);
  check_like("center", center, z);
  check_like("noise", noise, z);
  check_coef("coef", coef, z.size(0), ddim_step::kNumCols, z);
}

}  // namespace msdfast
