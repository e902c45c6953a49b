// extern "C" entry points over the pure-CUDA launchers of csrc/cuda/*_kernel.cu, for the cuemu build (the
// kernels compiled with g++ and run on the CPU with CUDA's execution model; ../shared/tools/cuemu/README.md).
// Python (tests/cuemu/cuemu_kernels.py) loads the library with ctypes and passes CPU tensors' data_ptr()s.
// Every function returns the launcher's cudaError_t as an int (0 = success); dtype is msdfast::DType's value.
#include "cuemu.h"

#include "common/hash_grid.h"
#include "cuda/chain_mean_shift_kernel.h"
#include "cuda/ddim_step_kernel.h"
#include "cuda/distill_grad_kernel.h"
#include "cuda/empirical_denoiser_kernel.h"
#include "cuda/gmm_score_kernel.h"
#include "cuda/hash_grid_encode_kernel.h"
#include "cuda/noise_to_levels_kernel.h"

using msdfast::DType;
namespace mc = msdfast::cuda;

namespace {
msdfast::hash_grid::Levels levels(int64_t dims, int n_levels, const double* scales, const int64_t* res,
                                  const int64_t* sizes, const int64_t* offsets) {
  msdfast::hash_grid::Levels lv{};
  for (int l = 0; l < n_levels && l < msdfast::hash_grid::kMaxLevels; ++l)
    lv.l[l] = msdfast::hash_grid::make_level(scales[l], res[l], sizes[l], offsets[l], dims);
  return lv;
}
}  // namespace

extern "C" {

int cuemu_ddim_step(int dtype, int64_t batch, int64_t per_sample, const float* coef, int64_t coef_stride,
                    const void* z, const void* eps_c, const void* eps_u, const void* center, const void* noise,
                    void* out, void* x0) {
  return mc::ddim_step_launch(DType(dtype), batch, per_sample, coef, coef_stride, z, eps_c, eps_u, center, noise,
                              out, x0, nullptr);
}

int64_t cuemu_distill_grad_num_partials(int64_t batch, int64_t per_sample) {
  return mc::distill_grad_num_partials(batch, per_sample);
}

int cuemu_distill_grad(int dtype, int64_t batch, int64_t per_sample, const float* coef, int64_t coef_stride,
                       const void* eps_c, const void* eps_target, const void* eps_u, const void* x, double clip,
                       void* g, void* target, float* partial, float* norm) {
  return mc::distill_grad_launch(DType(dtype), batch, per_sample, coef, coef_stride, eps_c, eps_target, eps_u, x,
                                 clip, g, target, partial, norm, nullptr);
}

int cuemu_chain_mean_shift(int dtype, int64_t numel, int64_t n_chains, const void* y, const void* x, void* out) {
  return mc::chain_mean_shift_launch(DType(dtype), numel, n_chains, y, x, out, nullptr);
}

int cuemu_noise_to_levels(int dtype, int64_t batch, int64_t per_sample, int64_t n_levels, const void* x,
                          const void* eps, const float* alphas, const float* sigmas, void* out) {
  return mc::noise_to_levels_launch(DType(dtype), batch, per_sample, n_levels, x, eps, alphas, sigmas, out, nullptr);
}

int64_t cuemu_empirical_denoiser_workspace_bytes(int dtype, int64_t m, int64_t d) {
  return mc::empirical_denoiser_workspace_bytes(DType(dtype), m, d);
}

int cuemu_empirical_denoiser(int dtype, int64_t m, int64_t n, int64_t d, const void* x, const void* data,
                             const float* s, void* out, void* workspace) {
  return mc::empirical_denoiser_launch(DType(dtype), m, n, d, x, data, s, out, workspace, nullptr);
}

int cuemu_gmm_score(int dtype, int64_t m, int64_t k, const void* x, const void* s, const void* weights,
                    const void* means, const void* covs, void* score, void* logp) {
  return mc::gmm_score_launch(DType(dtype), m, k, x, s, weights, means, covs, score, logp, nullptr);
}

int cuemu_hash_grid_encode(int64_t n, int dims, int n_levels, const double* scales, const int64_t* res,
                           const int64_t* sizes, const int64_t* offsets, int features, int interp, const float* x,
                           const float* params, float* out) {
  return mc::hash_grid_encode_launch(n, dims, levels(dims, n_levels, scales, res, sizes, offsets), n_levels, features,
                                     interp, x, params, out, nullptr);
}

int cuemu_hash_grid_encode_backward(int64_t n, int dims, int n_levels, const double* scales, const int64_t* res,
                                    const int64_t* sizes, const int64_t* offsets, int features, int interp,
                                    const float* x, const float* grad_out, float* grad) {
  return mc::hash_grid_encode_backward_launch(n, dims, levels(dims, n_levels, scales, res, sizes, offsets), n_levels,
                                              features, interp, x, grad_out, grad, nullptr);
}

}  // extern "C"
