// Build-only shim: CPU torch wheels ship c10/cuda headers but not this generated file (REFERENCE.md 2.1).
// Used by CMakeLists.txt to compile-check the CUDA torch glue without a CUDA torch. Never installed.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
