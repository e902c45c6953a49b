// msdfast::empirical_denoiser, CPU: the ideal denoiser of an empirical distribution (MSD paper eq. 16),
//
//   D(x; s) = sum_i u_i N(x; u_i, s^2 I) / sum_i N(x; u_i, s^2 I) = softmax_i(-|x - u_i|^2 / 2s^2) @ u
//
// streamed over the data with an online softmax: never an M x N matrix; per query a running minimum
// distance (the running max logit), a running normaliser and a running weighted sum, rescaled once per
// data tile, so exp is evaluated once per (query, point) pair. c = 1 / 2s^2 is clamped to the largest finite
// value, so a tiny s gives the nearest point (the limit the reference defines), never 0 * inf = NaN. Queries are processed in blocks that
// share each data tile while it is in L1. fp32 accumulation (fp64 for fp64 inputs).
// Definition of correct: msdfast.ops.reference.empirical_denoiser.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "common/empirical_denoiser_checks.h"
#include "common/torch_checks.h"
#include "cpu_kernel_util.h"

namespace msdfast::cpu {
namespace {

constexpr int64_t kTile = 512;   // data points per tile (d = 2: 4 KiB of coordinates)
constexpr int64_t kQBlock = 16;  // queries sharing a tile

// d = 2, fp32 accumulation: SoA coordinates, branch-free lane loops that vectorise (one clone per ISA).
MSDFAST_ISA_CLONES
void denoise2_block(const float* qx, const float* qy, const float* inv2s2, int64_t nq, const float* ux,
                    const float* uy, int64_t N, float* ox, float* oy) {
  OnlineSoftmax<float> st[kQBlock];   // key = -|x - u|^2: m = -(nearest squared distance so far)
  float ax[kQBlock], ay[kQBlock];
  for (int64_t q = 0; q < nq; ++q) ax[q] = ay[q] = 0.0f;
  alignas(64) float d2[kTile];
  for (int64_t t0 = 0; t0 < N; t0 += kTile) {
    const int64_t len = std::min(kTile, N - t0);
    const float* tx = ux + t0;
    const float* ty = uy + t0;
    for (int64_t q = 0; q < nq; ++q) {
      const float px = qx[q], py = qy[q], c = inv2s2[q];
      // pass 1: squared distances and their minimum (the tile's max logit). `omp simd` makes GCC if-convert
      // the min (and fast_exp's clamp below): without it only the AVX-512 clone vectorises (masked ops).
      float tmin = std::numeric_limits<float>::infinity();
#pragma omp simd reduction(min : tmin)
      for (int64_t j = 0; j < len; ++j) {
        const float dx = px - tx[j], dy = py - ty[j];
        const float v = dx * dx + dy * dy;
        d2[j] = v;
        tmin = std::min(tmin, v);
      }
      // online-softmax rescale when this tile holds a closer point
      const float r = st[q].rebase(-tmin, c);
      ax[q] *= r; ay[q] *= r;
      const float m = -st[q].m;   // the nearest squared distance so far
      // pass 2: weights exp((dmin - d2) c) <= 1
      float sl = 0.0f, sx = 0.0f, sy = 0.0f;
#pragma omp simd reduction(+ : sl, sx, sy)
      for (int64_t j = 0; j < len; ++j) {
        const float e = fast_exp((m - d2[j]) * c);
        sl += e; sx += e * tx[j]; sy += e * ty[j];
      }
      st[q].l += sl; ax[q] += sx; ay[q] += sy;
    }
  }
  for (int64_t q = 0; q < nq; ++q) { ox[q] = ax[q] / st[q].l; oy[q] = ay[q] / st[q].l; }
}

// Any d (and fp64): the same streaming scheme over row-major [N, d] data in the accumulation type.
template <typename A>
void denoise_generic_block(const A* q, const A* inv2s2, int64_t nq, const A* u, int64_t N, int64_t d, A* out) {
  std::vector<OnlineSoftmax<A>> st(nq);   // key = -|x - u|^2
  std::vector<A> acc(nq * d, A(0)), d2(kTile);
  for (int64_t t0 = 0; t0 < N; t0 += kTile) {
    const int64_t len = std::min(kTile, N - t0);
    const A* tu = u + t0 * d;
    for (int64_t iq = 0; iq < nq; ++iq) {
      const A* p = q + iq * d;
      const A c = inv2s2[iq];
      A tmin = std::numeric_limits<A>::infinity();
      for (int64_t j = 0; j < len; ++j) {
        A v = 0;
        for (int64_t k = 0; k < d; ++k) { const A df = p[k] - tu[j * d + k]; v += df * df; }
        d2[j] = v;
        tmin = std::min(tmin, v);
      }
      A* a = acc.data() + iq * d;
      const A r = st[iq].rebase(-tmin, c);
      if (r != A(1))
        for (int64_t k = 0; k < d; ++k) a[k] *= r;
      const A m = -st[iq].m;   // the nearest squared distance so far
      for (int64_t j = 0; j < len; ++j) {
        const A e = fast_exp((m - d2[j]) * c);
        st[iq].l += e;
        for (int64_t k = 0; k < d; ++k) a[k] += e * tu[j * d + k];
      }
    }
  }
  for (int64_t iq = 0; iq < nq; ++iq)
    for (int64_t k = 0; k < d; ++k) out[iq * d + k] = acc[iq * d + k] / st[iq].l;
}

template <typename T>
void empirical_denoiser_typed(const at::Tensor& x, const at::Tensor& data, const at::Tensor& s, at::Tensor& out) {
  using A = acc_t<T>;
  const int64_t M = x.size(0), d = x.size(1), N = data.size(0);
  const T* xp = x.const_data_ptr<T>();
  const T* up = data.const_data_ptr<T>();
  const float* sp = s.const_data_ptr<float>();
  T* op = out.mutable_data_ptr<T>();
  const int64_t nblocks = (M + kQBlock - 1) / kQBlock;
  // Small problems run on one thread: the pool's wake-up costs more than the work.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, N * d * kQBlock));
  if (d == 2 && std::is_same_v<A, float>) {
    std::vector<float> ux(N), uy(N);  // SoA copy of the data: O(N d), not O(M N)
    for (int64_t i = 0; i < N; ++i) { ux[i] = float(up[2 * i]); uy[i] = float(up[2 * i + 1]); }
    at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
      float qx[kQBlock], qy[kQBlock], c[kQBlock], ox[kQBlock], oy[kQBlock];
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t q0 = b * kQBlock, nq = std::min(kQBlock, M - q0);
        for (int64_t i = 0; i < nq; ++i) {
          qx[i] = float(xp[2 * (q0 + i)]);
          qy[i] = float(xp[2 * (q0 + i) + 1]);
          c[i] = std::min(0.5f / (sp[q0 + i] * sp[q0 + i]), std::numeric_limits<float>::max());
        }
        denoise2_block(qx, qy, c, nq, ux.data(), uy.data(), N, ox, oy);
        for (int64_t i = 0; i < nq; ++i) { op[2 * (q0 + i)] = T(ox[i]); op[2 * (q0 + i) + 1] = T(oy[i]); }
      }
    });
    return;
  }
  std::vector<A> u(N * d);
  for (int64_t i = 0; i < N * d; ++i) u[i] = A(up[i]);
  at::parallel_for(0, nblocks, grain, [&](int64_t b0, int64_t b1) {
    std::vector<A> q(kQBlock * d), o(kQBlock * d), c(kQBlock);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q0 = b * kQBlock, nq = std::min(kQBlock, M - q0);
      for (int64_t i = 0; i < nq * d; ++i) q[i] = A(xp[q0 * d + i]);
      for (int64_t i = 0; i < nq; ++i)
        c[i] = std::min(A(0.5) / (A(sp[q0 + i]) * A(sp[q0 + i])), std::numeric_limits<A>::max());
      denoise_generic_block<A>(q.data(), c.data(), nq, u.data(), N, d, o.data());
      for (int64_t i = 0; i < nq * d; ++i) op[q0 * d + i] = T(o[i]);
    }
  });
}

at::Tensor empirical_denoiser_cpu(const at::Tensor& x_, const at::Tensor& data_, const at::Tensor& s_) {
  check_empirical_denoiser_args(x_, data_, s_);
  const at::Tensor x = x_.contiguous(), data = data_.contiguous(), s = s_.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "empirical_denoiser_cpu",
                                  [&] { empirical_denoiser_typed<scalar_t>(x, data, s, out); });
  return out;
}

}  // namespace
}  // namespace msdfast::cpu

TORCH_LIBRARY_FRAGMENT(msdfast, m) { m.def("empirical_denoiser(Tensor x, Tensor data, Tensor s) -> Tensor"); }

TORCH_LIBRARY_IMPL(msdfast, CPU, m) { m.impl("empirical_denoiser", &msdfast::cpu::empirical_denoiser_cpu); }
