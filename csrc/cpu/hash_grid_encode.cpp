// msdfast::hash_grid_encode and msdfast::hash_grid_encode_backward, CPU: the multiresolution grid encoding
// (Instant-NGP, Mueller et al. 2022 sec. 3) with tiny-cuda-nn's grid math (common/hash_grid.h), fused: one
// pass per point over all levels and corners, no [N, 2^D, D] index tensors (the reference builds those per
// level). The backward is deterministic -- each task owns whole levels, whose table slices are disjoint, and
// walks the points in order -- so runs resume bit-exactly.
// Definition of correct: msdfast.ops.reference.hash_grid_encode(_backward).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <cstring>
#include <mutex>

#include "common/hash_grid.h"
#include "common/hash_grid_encode_checks.h"
#include "common/torch_checks.h"

namespace msdfast::cpu {
namespace {

constexpr int64_t kPointGrain = 512;   // points per parallel task in the forward

template <int D>
void encode_points(const float* x, const float* params, const hash_grid::Levels& lv, int64_t L, int64_t F,
                   int interp, int64_t n0, int64_t n1, float* out) {
  int64_t idx[1 << D];
  float w[1 << D];
  for (int64_t n = n0; n < n1; ++n) {
    float* o = out + n * L * F;
    for (int64_t l = 0; l < L; ++l) {
      const int C = hash_grid::corners<D>(x + n * D, lv.l[l], interp, idx, w);
      for (int64_t f = 0; f < F; ++f) {
        float acc = 0.0f;
        for (int c = 0; c < C; ++c) acc += w[c] * params[idx[c] * F + f];
        o[l * F + f] = acc;
      }
    }
  }
}

template <int D>
void scatter_level(const float* x, const float* grad_out, const hash_grid::Level& lv, int64_t l, int64_t L, int64_t F,
                   int interp, int64_t N, float* grad) {
  int64_t idx[1 << D];
  float w[1 << D];
  for (int64_t n = 0; n < N; ++n) {
    const int C = hash_grid::corners<D>(x + n * D, lv, interp, idx, w);
    const float* go = grad_out + n * L * F + l * F;
    for (int c = 0; c < C; ++c)
      for (int64_t f = 0; f < F; ++f) grad[idx[c] * F + f] += w[c] * go[f];
  }
}

template <typename Fn>
void dispatch_dims(int64_t D, Fn&& fn) {
  switch (D) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    default: fn(std::integral_constant<int, 4>{}); break;
  }
}

at::Tensor hash_grid_encode_cpu(const at::Tensor& x_, const at::Tensor& params_, c10::ArrayRef<double> scales,
                                c10::ArrayRef<int64_t> resolutions, c10::ArrayRef<int64_t> sizes,
                                c10::ArrayRef<int64_t> offsets, int64_t n_features, int64_t interp) {
  const hash_grid::Levels lv =
      check_hash_grid_encode_args(x_, params_, scales, resolutions, sizes, offsets, n_features, interp);
  const at::Tensor x = x_.contiguous(), params = params_.contiguous();
  const int64_t N = x.size(0), D = x.size(1), L = static_cast<int64_t>(scales.size()), F = n_features;
  at::Tensor out = at::empty({N, L * F}, x.options());
  if (N == 0) return out;
  const float* xp = x.const_data_ptr<float>();
  const float* pp = params.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  dispatch_dims(D, [&](auto dims) {
    constexpr int kD = decltype(dims)::value;
    at::parallel_for(0, N, kPointGrain, [&](int64_t n0, int64_t n1) {
      encode_points<kD>(xp, pp, lv, L, F, static_cast<int>(interp), n0, n1, op);
    });
  });
  return out;
}

// The params gradient is dense: n_params floats, 50 MB at the NeRF defaults. A fresh block that large is mmap'ed by
// the C allocator and page-faulted in (zeroed by the kernel) on every backward, ~20 ms at 50 MB, against ~1 ms to
// zero memory that is already mapped; a training loop frees each step's gradient (zero_grad(set_to_none=True))
// before the next backward. So the LAST freed gradient block of the largest size is kept (one block, leaked at
// exit) and handed out again, zeroed: the same zeros, the same scatter, bit-identical results. Small gradients
// (< kReuseBytes) use at::zeros as before.
constexpr size_t kReuseBytes = size_t(4) << 20;

class GradBlockCache {
 public:
  at::Tensor zeros(int64_t n, const at::TensorOptions& options) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    void* block = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (block_ != nullptr && bytes_ == bytes) std::swap(block, block_);
    }
    if (block == nullptr) block = c10::alloc_cpu(bytes);
    char* base = static_cast<char*>(block);
    at::parallel_for(0, static_cast<int64_t>(bytes), int64_t(1) << 22, [&](int64_t b0, int64_t b1) {
      std::memset(base + b0, 0, static_cast<size_t>(b1 - b0));
    });
    return at::from_blob(block, {n}, [this, bytes](void* p) { release(p, bytes); }, options);
  }

 private:
  // A freed gradient's block: kept if the slot is empty or holds a smaller block; whatever is not kept goes back
  // to the allocator.
  void release(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (block_ == nullptr || bytes >= bytes_) {
        std::swap(p, block_);
        bytes_ = bytes;
      }
    }
    if (p != nullptr) c10::free_cpu(p);
  }

  std::mutex mutex_;
  void* block_ = nullptr;
  size_t bytes_ = 0;
};

GradBlockCache& grad_blocks() {
  static GradBlockCache* cache = new GradBlockCache();   // never destroyed: gradients may outlive static teardown
  return *cache;
}

at::Tensor hash_grid_encode_backward_cpu(const at::Tensor& grad_out_, const at::Tensor& x_, int64_t n_params,
                                         c10::ArrayRef<double> scales, c10::ArrayRef<int64_t> resolutions,
                                         c10::ArrayRef<int64_t> sizes, c10::ArrayRef<int64_t> offsets,
                                         int64_t n_features, int64_t interp) {
  const hash_grid::Levels lv = check_hash_grid_encode_backward_args(grad_out_, x_, n_params, scales, resolutions,
                                                                    sizes, offsets, n_features, interp);
  const int64_t N = x_.size(0), D = x_.size(1), L = static_cast<int64_t>(scales.size()), F = n_features;
  const at::Tensor x = x_.contiguous(), grad_out = grad_out_.contiguous();
  at::Tensor grad = static_cast<size_t>(n_params) * sizeof(float) >= kReuseBytes
                        ? grad_blocks().zeros(n_params, x.options())
                        : at::zeros({n_params}, x.options());
  if (N == 0) return grad;
  const float* xp = x.const_data_ptr<float>();
  const float* gp = grad_out.const_data_ptr<float>();
  float* dp = grad.mutable_data_ptr<float>();
  dispatch_dims(D, [&](auto dims) {
    constexpr int kD = decltype(dims)::value;
    at::parallel_for(0, L, 1, [&](int64_t l0, int64_t l1) {   // a task owns whole levels: no write conflicts
      for (int64_t l = l0; l < l1; ++l) scatter_level<kD>(xp, gp, lv.l[l], l, L, F, static_cast<int>(interp), N, dp);
    });
  });
  return grad;
}

}  // namespace
}  // namespace msdfast::cpu

TORCH_LIBRARY_FRAGMENT(msdfast, m) {
  m.def("hash_grid_encode(Tensor x, Tensor params, float[] scales, int[] resolutions, int[] sizes, int[] offsets, "
        "int n_features, int interp) -> Tensor");
  m.def("hash_grid_encode_backward(Tensor grad_out, Tensor x, int n_params, float[] scales, int[] resolutions, "
        "int[] sizes, int[] offsets, int n_features, int interp) -> Tensor");
}

TORCH_LIBRARY_IMPL(msdfast, CPU, m) {
  m.impl("hash_grid_encode", &msdfast::cpu::hash_grid_encode_cpu);
  m.impl("hash_grid_encode_backward", &msdfast::cpu::hash_grid_encode_backward_cpu);
}
