// Portable qualifiers shared by the CPU (g++) and CUDA (nvcc) kernels. No torch, no CUDA headers.
#pragma once

#if defined(__CUDACC__)
#define MSDFAST_HD __host__ __device__ __forceinline__
#else
#define MSDFAST_HD inline
#endif

// Inputs and outputs of our kernels never alias (the wrappers allocate fresh outputs), which lets the
// compiler vectorise the elementwise loops without runtime overlap checks.
#define MSDFAST_RESTRICT __restrict__
