// The argument checks of each op, shared by its CPU kernel and its CUDA torch glue (one definition, so the two
// devices reject the same inputs with the same messages). Errors name the argument, like msdfast/ops/__init__.py,
// because torch.ops.msdfast.* can be called directly.
#pragma once

#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <utility>

#include "common/ddim_step.h"
#include "common/distill_grad.h"
#include "common/hash_grid.h"
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
