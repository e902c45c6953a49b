// Element types of the pure-CUDA kernels: DType -> storage type, accumulation type, conversions.
// Only CUDA headers: compiled by plain nvcc in the CMake check.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/dtype.h"

namespace msdfast {
namespace cuda {

// Accumulate in float (double for double inputs), like at::opmath_type on the CPU.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

template <typename T> __device__ __forceinline__ acc_t<T> load(const T* p) { return acc_t<T>(*p); }
template <> __device__ __forceinline__ float load<__half>(const __half* p) { return __half2float(*p); }
template <> __device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

template <typename T> __device__ __forceinline__ void store(T* p, acc_t<T> v) { *p = T(v); }
template <> __device__ __forceinline__ void store<__half>(__half* p, float v) { *p = __float2half_rn(v); }
template <> __device__ __forceinline__ void store<__nv_bfloat16>(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// Calls f(T{}) with the storage type of dtype (a null pointer of that type as a tag).
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(static_cast<float*>(nullptr));
    case DType::kFloat64: return f(static_cast<double*>(nullptr));
    case DType::kFloat16: return f(static_cast<__half*>(nullptr));
    case DType::kBFloat16: return f(static_cast<__nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

// Grid for an elementwise op over [batch, per_sample]: x covers one sample, y walks samples.
inline dim3 grid_2d(long long per_sample, long long batch, int threads) {
  long long gx = (per_sample + threads - 1) / threads;
  gx = gx < 1 ? 1 : (gx > 65535 ? 65535 : gx);
  long long gy = batch < 1 ? 1 : (batch > 65535 ? 65535 : batch);
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), 1);
}

}  // namespace cuda
}  // namespace msdfast
