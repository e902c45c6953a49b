// Argument checks shared by the CPU kernels and the CUDA torch glue. Errors name the argument, like the
// Python API (msdfast/ops/__init__.py), because torch.ops.msdfast.* can be called directly.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace msdfast {

inline bool is_supported_float(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16;
}

inline void check_float(const char* name, const at::Tensor& t) {
  TORCH_CHECK(is_supported_float(t), name, ": expected float32/float64/float16/bfloat16, got ", t.scalar_type());
}

// Same shape, dtype and device as `like`.
inline void check_like(const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device(), name, ": on device ", t.device(), ", expected ", like.device());
  TORCH_CHECK(t.sizes() == like.sizes(), name, ": shape ", t.sizes(), " does not match ", like.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, ": dtype ", t.scalar_type(), " does not match ",
              like.scalar_type());
}

inline void check_like(const char* name, const std::optional<at::Tensor>& t, const at::Tensor& like) {
  if (t.has_value()) check_like(name, *t, like);
}

// A float32 [batch or 1, ncol] per-sample coefficient table on like's device.
inline void check_coef(const char* name, const at::Tensor& coef, int64_t batch, int64_t ncol,
                       const at::Tensor& like) {
  TORCH_CHECK(coef.dim() == 2 && coef.size(1) == ncol && (coef.size(0) == batch || coef.size(0) == 1), name,
              ": expected a [", batch, " or 1, ", ncol, "] coefficient table, got ", coef.sizes());
  TORCH_CHECK(coef.scalar_type() == at::kFloat, name, ": expected float32, got ", coef.scalar_type());
  TORCH_CHECK(coef.device() == like.device(), name, ": on device ", coef.device(), ", expected ", like.device());
}

// Contiguous data pointer of an optional input, or nullptr. `keep` holds the contiguous copy alive.
template <typename T>
inline const T* opt_ptr(const std::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!t.has_value()) return nullptr;
  keep = t->contiguous();
  return keep.data_ptr<T>();
}

// Untyped variant for launchers that take void pointers (the CUDA glue).
inline const void* opt_data(const std::optional<at::Tensor>& t, at::Tensor& keep) {
  if (!t.has_value()) return nullptr;
  keep = t->contiguous();
  return keep.const_data_ptr();
}

}  // namespace msdfast
