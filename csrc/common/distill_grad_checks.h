// The argument checks of msdfast::distill_grad: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/distill_grad.h"
#include "common/torch_checks.h"

namespace msdfast {

inline void check_distill_grad_args(const at::Tensor& eps_c, const at::Tensor& eps_target,
                                    const std::optional<at::Tensor>& eps_u, const at::Tensor& coef,
                                    const std::optional<at::Tensor>& x, std::optional<double> clip) {
  check_float("eps_c", eps_c);
  TORCH_CHECK(eps_c.dim() >= 1, "eps_c: expected a batch [B, ...], got a 0-d tensor");
  check_like("eps_target", eps_target, eps_c);
  check_like("eps_u", eps_u, eps_c);
  check_like("x", x, eps_c);
  check_coef("coef", coef, eps_c.size(0), distill_grad::kNumCols, eps_c);
  TORCH_CHECK(!clip.has_value() || *clip > 0, "clip: must be positive or None, got ", *clip);
}

}  // namespace msdfast
