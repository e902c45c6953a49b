// The per-point math of msdfast::hash_grid_encode (Instant-NGP multiresolution grid, tiny-cuda-nn's grid math;
// REFERENCE.md sec. 4), shared by the CPU and CUDA kernels. No torch, no CUDA headers.
// Definition of correct: msdfast.ops.reference.hash_grid_encode / _grid_corners.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace msdfast {
namespace hash_grid {

constexpr int kMaxDims = 4;     // compiled kernels: D <= 4 (image fields 2, NeRFs 3); msdfast.ops routes the rest
constexpr int kMaxLevels = 32;  // levels passed by value to the CUDA kernel

// One level of the grid: pos = scale x + 0.5, table of `size` entries starting at entry `offset`; hashed when
// resolution^D > size (tcnn's CoherentPrime hash), dense index otherwise.
struct Level {
  double scale;
  int64_t resolution;
  int64_t size;
  int64_t offset;
  bool hashed;
};

struct Levels {
  Level l[kMaxLevels];
};

// Level of a D-dimensional grid: hashed exactly when the dense grid resolution^D exceeds the table (tcnn's rule;
// msdfast.fields.hashgrid.grid_levels). The one place that decides it (the torch checks and tests/cuemu use it).
inline Level make_level(double scale, int64_t resolution, int64_t size, int64_t offset, int64_t dims) {
  const double dense = std::pow(static_cast<double>(resolution), static_cast<double>(dims));
  return Level{scale, resolution, size, offset, dense > static_cast<double>(size)};
}

MSDFAST_HD uint32_t prime(int d) {
  switch (d) {
    case 0: return 1u;
    case 1: return 2654435761u;
    case 2: return 805459861u;
    default: return 3674653429u;
  }
}

// Absolute table entries idx[c] and weights w[c] of the C corners of point x at level lv; returns C
// (2^D, or 1 for Nearest). interp: 0 Linear, 1 Nearest, 2 Smoothstep.
// pos in double then one rounding to float, as the reference (equal to tcnn's fmaf(scale, x, 0.5f)).
template <int D>
MSDFAST_HD int corners(const float* x, const Level& lv, int interp, int64_t* idx, float* w) {
  float frac[D];
  int64_t g[D];
  for (int d = 0; d < D; ++d) {
    const float pos = static_cast<float>(lv.scale * static_cast<double>(x[d]) + 0.5);
    const float gf = floorf(pos);
    float fr = pos - gf;
    if (interp == 2) fr = fr * fr * (3.0f - 2.0f * fr);
    frac[d] = fr;
    g[d] = static_cast<int64_t>(gf);
  }
  const int C = interp == 1 ? 1 : (1 << D);
  for (int c = 0; c < C; ++c) {
    float wc = 1.0f;
    uint32_t h = 0;
    int64_t dense = 0, stride = 1;
    for (int d = 0; d < D; ++d) {
      const int bit = (c >> d) & 1;
      const int64_t gd = g[d] + bit;
      if (interp != 1) wc *= bit ? frac[d] : 1.0f - frac[d];
      h ^= static_cast<uint32_t>(gd) * prime(d);   // uint32 wraparound, as tcnn
      dense += gd * stride;
      stride *= lv.resolution;
    }
    int64_t i;
    if (lv.hashed) {
      i = static_cast<int64_t>(h % static_cast<uint32_t>(lv.size));
    } else {
      i = dense % lv.size;
      if (i < 0) i += lv.size;   // floor modulo, like torch's % on int64
    }
    idx[c] = lv.offset + i;
    w[c] = wc;
  }
  return C;
}

}  // namespace hash_grid
}  // namespace msdfast
