// The argument checks of msdfast::hash_grid_encode: one definition shared by its CPU kernel and its CUDA torch glue,
// so both devices reject the same inputs with the same messages. Errors name the argument, like
// msdfast/ops/__init__.py, since torch.ops.msdfast.* can be called directly. Included by this op's files only.
#pragma once

#include <cmath>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/hash_grid.h"
#include "common/torch_checks.h"

namespace msdfast {

// hash_grid_encode(_backward): x float32 [N, D <= 4], the level lists of equal length L <= 32, F >= 1, interp in
// {0, 1, 2}, a table of n_params >= (offset_last + size_last) F values. Returns the levels.
inline hash_grid::Levels check_hash_grid_levels(const at::Tensor& x, int64_t n_params, c10::ArrayRef<double> scales,
                                                c10::ArrayRef<int64_t> resolutions, c10::ArrayRef<int64_t> sizes,
                                                c10::ArrayRef<int64_t> offsets, int64_t n_features, int64_t interp) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x: expected float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2 && x.size(1) >= 1 && x.size(1) <= hash_grid::kMaxDims, "x: expected [N, D] with 1 <= D <= ",
              hash_grid::kMaxDims, ", got shape ", x.sizes());
  const int64_t L = static_cast<int64_t>(scales.size());
  TORCH_CHECK(L >= 1 && L <= hash_grid::kMaxLevels, "scales: expected 1..", hash_grid::kMaxLevels, " levels, got ", L);
  TORCH_CHECK(static_cast<int64_t>(resolutions.size()) == L && static_cast<int64_t>(sizes.size()) == L &&
                  static_cast<int64_t>(offsets.size()) == L,
              "resolutions/sizes/offsets: expected ", L, " entries each (one per level, like scales)");
  TORCH_CHECK(n_features >= 1, "n_features: must be >= 1, got ", n_features);
  TORCH_CHECK(interp >= 0 && interp <= 2, "interp: expected 0 (Linear), 1 (Nearest) or 2 (Smoothstep), got ", interp);
  hash_grid::Levels lv{};
  const int64_t D = x.size(1);
  for (int64_t l = 0; l < L; ++l) {
    TORCH_CHECK(resolutions[l] >= 1 && sizes[l] >= 1 && offsets[l] >= 0, "sizes: level ", l,
                " needs resolution >= 1, size >= 1 and offset >= 0");
    TORCH_CHECK(sizes[l] <= (int64_t(1) << 32), "sizes: level ", l, " exceeds 2^32 entries");
    TORCH_CHECK((offsets[l] + sizes[l]) * n_features <= n_params, "params: ", n_params,
                " values cannot hold level ", l, " (offset ", offsets[l], " + size ", sizes[l], ") x ", n_features);
    lv.l[l] = hash_grid::make_level(scales[l], resolutions[l], sizes[l], offsets[l], D);
  }
  return lv;
}

inline hash_grid::Levels check_hash_grid_encode_args(const at::Tensor& x, const at::Tensor& params,
                                                     c10::ArrayRef<double> scales, c10::ArrayRef<int64_t> resolutions,
                                                     c10::ArrayRef<int64_t> sizes, c10::ArrayRef<int64_t> offsets,
                                                     int64_t n_features, int64_t interp) {
  TORCH_CHECK(params.scalar_type() == at::kFloat && params.dim() == 1, "params: expected a float32 [P] table, got ",
              params.scalar_type(), " ", params.sizes());
  TORCH_CHECK(params.device() == x.device(), "params: on device ", params.device(), ", expected ", x.device());
  return check_hash_grid_levels(x, params.numel(), scales, resolutions, sizes, offsets, n_features, interp);
}

inline hash_grid::Levels check_hash_grid_encode_backward_args(const at::Tensor& grad_out, const at::Tensor& x,
                                                              int64_t n_params, c10::ArrayRef<double> scales,
                                                              c10::ArrayRef<int64_t> resolutions,
                                                              c10::ArrayRef<int64_t> sizes,
                                                              c10::ArrayRef<int64_t> offsets, int64_t n_features,
                                                              int64_t interp) {
  const hash_grid::Levels lv =
      check_hash_grid_levels(x, n_params, scales, resolutions, sizes, offsets, n_features, interp);
  const int64_t N = x.size(0), LF = static_cast<int64_t>(scales.size()) * n_features;
  TORCH_CHECK(grad_out.scalar_type() == at::kFloat && grad_out.dim() == 2 && grad_out.size(0) == N &&
                  grad_out.size(1) == LF,
              "grad_out: expected float32 [", N, ", ", LF, "], got ", grad_out.scalar_type(), " ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == x.device(), "grad_out: on device ", grad_out.device(), ", expected ", x.device());
  return lv;
}

}  // namespace msdfast
