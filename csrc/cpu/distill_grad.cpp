// msdfast::distill_grad: schema + CPU kernel of the score-distillation gradient combination, one pass:
//
//   g      = nan_to_num( weight (r (eps_u + w (eps_c - eps_u)) - eps_target) ), clamped to [-clip, clip]
//   target = x - g                  (threestudio's loss trick; SDS/ASD/VSD/DSD/SDI, MATH.md sec. 2)
//   norm   = ||g||_2 over the batch (float32 scalar; per-block partial sums reduced in a fixed order)
//
// Math in common/distill_grad.h; msdfast/ops/reference.py::distill_grad is the definition of correct.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/distill_grad_checks.h"
#include "common/distill_grad.h"
#include "common/static_dispatch.h"
#include "common/torch_checks.h"
#include "cpu_kernel_util.h"

namespace msdfast {
namespace {

using cpu::acc_t;

constexpr int64_t kBlock = 1 << 15;  // elements per parallel task (fixed: it fixes the norm's sum order)

// One run inside one sample: coefficients fixed, no branches on optional inputs, restrict pointers and an
// OpenMP SIMD reduction for the squared norm, so g++ -O3 vectorises it. Returns sum g^2.
template <typename T, bool HAS_U, bool HAS_X>
MSDFAST_ISA_CLONES
acc_t<T> span(const distill_grad::Coef<acc_t<T>>& k, int64_t n, const T* MSDFAST_RESTRICT ec,
              const T* MSDFAST_RESTRICT et, const T* MSDFAST_RESTRICT eu, const T* MSDFAST_RESTRICT x,
              T* MSDFAST_RESTRICT g, T* MSDFAST_RESTRICT tgt, acc_t<T> clip) {
  using A = acc_t<T>;
  constexpr bool kExact = std::is_same_v<T, A>;  // float/double: rounding to T is the identity
  const A big = cpu::max_finite<T>();
  const A bound = kExact ? std::min(big, clip) : big;
  A sum = A(0);
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    A gv = distill_grad::raw<HAS_U>(k, A(ec[j]), HAS_U ? A(eu[j]) : A(0), A(et[j]), bound);
    if constexpr (!kExact) gv = distill_grad::clip(A(T(gv)), clip);  // round first, as the reference does
    g[j] = T(gv);
    if constexpr (HAS_X) tgt[j] = T(A(x[j]) - gv);
    sum += gv * gv;
  }
  return sum;
}

template <typename T, bool HAS_U, bool HAS_X>
double run(int64_t numel, int64_t per_sample, const float* coef, int64_t coef_stride, const T* ec, const T* et,
           const T* eu, const T* x, T* g, T* tgt, acc_t<T> clip) {
  using A = acc_t<T>;
  const int64_t nblocks = (numel + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(nblocks), 0.0);
  at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t lo = blk * kBlock, hi = std::min(numel, lo + kBlock);
      double acc = 0.0;
      // A block may straddle samples: split it at sample boundaries and reload the coefficients per run.
      for (int64_t s = lo; s < hi;) {
        const int64_t b = s / per_sample, e = std::min(hi, (b + 1) * per_sample);
        const auto k = distill_grad::Coef<A>::load(coef + b * coef_stride);
        acc += double(span<T, HAS_U, HAS_X>(k, e - s, ec + s, et + s, HAS_U ? eu + s : nullptr,
                                            HAS_X ? x + s : nullptr, g + s, HAS_X ? tgt + s : nullptr, clip));
        s = e;
      }
      partial[static_cast<size_t>(blk)] = acc;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> distill_grad_cpu(
    const at::Tensor& eps_c_, const at::Tensor& eps_target_, const std::optional<at::Tensor>& eps_u,
    const at::Tensor& coef_, const std::optional<at::Tensor>& x, std::optional<double> clip) {
  check_distill_grad_args(eps_c_, eps_target_, eps_u, coef_, x, clip);

  const at::Tensor eps_c = eps_c_.contiguous(), eps_target = eps_target_.contiguous(), coef = coef_.contiguous();
  at::Tensor g = at::empty(eps_c.sizes(), eps_c.options());
  at::Tensor tgt = at::empty(x.has_value() ? eps_c.sizes() : at::IntArrayRef{0}, eps_c.options());
  const int64_t numel = eps_c.numel();
  double sumsq = 0.0;
  if (numel > 0) {
    const double clip_v = clip.has_value() ? *clip : std::numeric_limits<double>::infinity();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, eps_c.scalar_type(), "msdfast::distill_grad", [&] {
      at::Tensor u_keep, x_keep;
      const scalar_t* eu = opt_ptr<scalar_t>(eps_u, u_keep);
      const scalar_t* xp = opt_ptr<scalar_t>(x, x_keep);
      dispatch_bools(
          [&](auto has_u, auto has_x) {
            sumsq = run<scalar_t, decltype(has_u)::value, decltype(has_x)::value>(
                numel, numel / eps_c.size(0), coef.data_ptr<float>(),
                coef.size(0) == 1 ? 0 : distill_grad::kNumCols, eps_c.data_ptr<scalar_t>(),
                eps_target.data_ptr<scalar_t>(), eu, xp, g.data_ptr<scalar_t>(),
                xp ? tgt.data_ptr<scalar_t>() : nullptr, acc_t<scalar_t>(clip_v));
          },
          eu != nullptr, xp != nullptr);
    });
  }
  at::Tensor norm = at::full({}, std::sqrt(sumsq), eps_c.options().dtype(at::kFloat));
  return {g, tgt, norm};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(msdfast, m) {
  m.def("distill_grad(Tensor eps_c, Tensor eps_target, Tensor? eps_u, Tensor coef, Tensor? x, float? clip)"
        " -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(msdfast, CPU, m) { m.impl("distill_grad", &distill_grad_cpu); }

}  // namespace msdfast
