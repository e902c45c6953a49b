// msdfast::ddim_step: schema + CPU kernel of the fused CFG + PSR + DDIM(eta) step + MSD kernel pull.
// One pass over memory (the eager reference makes ~8 temporaries); math in csrc/common/ddim_step.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "common/ddim_step_checks.h"
#include "common/ddim_step.h"
#include "common/static_dispatch.h"
#include "common/torch_checks.h"
#include "cpu_kernel_util.h"

namespace msdfast {
namespace {

// Elements per parallel task: large enough that OpenMP fork/join (~µs) is amortised over a
// memory-bound loop, small enough that 16x4x128x128 spreads over all cores.
constexpr int64_t kGrain = 1 << 15;

// One contiguous run [0, n) inside one sample: coefficients fixed, restrict pointers, no branches,
// so g++ -O3 vectorises it; one clone per ISA level (on x86-64's SSE2 baseline the step is compute-bound).
template <typename scalar_t, bool HAS_U, bool HAS_C, bool HAS_N, bool X0>
MSDFAST_ISA_CLONES
void span(const ddim_step::Coef<at::opmath_type<scalar_t>>& k, int64_t n, const scalar_t* MSDFAST_RESTRICT z,
          const scalar_t* MSDFAST_RESTRICT ec, const scalar_t* MSDFAST_RESTRICT eu,
          const scalar_t* MSDFAST_RESTRICT c, const scalar_t* MSDFAST_RESTRICT nz, scalar_t* MSDFAST_RESTRICT out,
          scalar_t* MSDFAST_RESTRICT x0out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    acc_t x0;
    const acc_t zn = ddim_step::point<HAS_U, HAS_C, HAS_N>(
        k, acc_t(z[i]), acc_t(ec[i]), HAS_U ? acc_t(eu[i]) : acc_t(0), HAS_C ? acc_t(c[i]) : acc_t(0),
        HAS_N ? acc_t(nz[i]) : acc_t(0), x0);
    out[i] = scalar_t(zn);
    if (X0) x0out[i] = scalar_t(x0);
  }
}

template <typename scalar_t, bool HAS_U, bool HAS_C, bool HAS_N, bool X0>
void run(int64_t batch, int64_t per_sample, const float* coef, int64_t coef_stride, const scalar_t* z,
         const scalar_t* ec, const scalar_t* eu, const scalar_t* c, const scalar_t* nz, scalar_t* out,
         scalar_t* x0out) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, batch * per_sample, kGrain, [&](int64_t begin, int64_t end) {
    // A task may straddle samples: split it at sample boundaries and reload the coefficients per run.
    for (int64_t b = begin / per_sample; b * per_sample < end; ++b) {
      const int64_t lo = std::max(begin, b * per_sample), hi = std::min(end, (b + 1) * per_sample);
      const auto k = ddim_step::Coef<acc_t>::load(coef + b * coef_stride);
      auto at = [lo](const scalar_t* p) { return p ? p + lo : nullptr; };
      span<scalar_t, HAS_U, HAS_C, HAS_N, X0>(k, hi - lo, z + lo, ec + lo, at(eu), at(c), at(nz), out + lo,
                                              X0 ? x0out + lo : nullptr);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> ddim_step_cpu(const at::Tensor& z_, const at::Tensor& eps_c_,
                                                 const std::optional<at::Tensor>& eps_u,
                                                 const at::Tensor& coef_, const std::optional<at::Tensor>& center,
                                                 const std::optional<at::Tensor>& noise, bool return_x0) {
  check_ddim_step_args(z_, eps_c_, eps_u, coef_, center, noise);
  const int64_t batch = z_.size(0);

  const at::Tensor z = z_.contiguous(), eps_c = eps_c_.contiguous(), coef = coef_.contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options());
  at::Tensor x0 = at::empty(return_x0 ? z.sizes() : at::IntArrayRef{0}, z.options());
  if (z.numel() == 0) return {out, x0};
  const int64_t per_sample = z.numel() / batch;
  const int64_t coef_stride = coef.size(0) == 1 ? 0 : ddim_step::kNumCols;  // [1, 8] broadcasts

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "msdfast::ddim_step", [&] {
    at::Tensor u_keep, c_keep, n_keep;
    const scalar_t* eu = opt_ptr<scalar_t>(eps_u, u_keep);
    const scalar_t* c = opt_ptr<scalar_t>(center, c_keep);
    const scalar_t* nz = opt_ptr<scalar_t>(noise, n_keep);
    dispatch_bools(
        [&](auto has_u, auto has_c, auto has_n, auto x0_flag) {
          run<scalar_t, decltype(has_u)::value, decltype(has_c)::value, decltype(has_n)::value,
              decltype(x0_flag)::value>(batch, per_sample, coef.data_ptr<float>(), coef_stride,
                                        z.data_ptr<scalar_t>(), eps_c.data_ptr<scalar_t>(), eu, c, nz,
                                        out.data_ptr<scalar_t>(), return_x0 ? x0.data_ptr<scalar_t>() : nullptr);
        },
        eu != nullptr, c != nullptr, nz != nullptr, return_x0);
  });
  return {out, x0};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(msdfast, m) {
  m.def(
      "ddim_step(Tensor z, Tensor eps_c, Tensor? eps_u, Tensor coef, Tensor? center, Tensor? noise, "
      "bool return_x0) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(msdfast, CPU, m) { m.impl("ddim_step", &ddim_step_cpu); }

}  // namespace msdfast
