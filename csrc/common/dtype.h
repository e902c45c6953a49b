// Element types understood by the pure-CUDA launchers (which cannot see at::ScalarType).
#pragma once

namespace msdfast {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace msdfast
