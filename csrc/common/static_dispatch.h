// Turn runtime booleans (optional inputs present? extra output wanted?) into compile-time constants, so
// each variant of an elementwise kernel has a branch-free, vectorisable inner loop. No torch dependency:
// used by both csrc/cpu/*.cpp and csrc/cuda/*_kernel.cu.
//
//   dispatch_bools([&](auto has_u, auto has_c) { run<T, decltype(has_u)::value, decltype(has_c)::value>(); },
//                  eps_u != nullptr, center != nullptr);
#pragma once

#include <type_traits>
#include <utility>

namespace msdfast {

template <typename F>
inline void dispatch_bools(F&& f) {
  f();
}

template <typename F, typename... Rest>
inline void dispatch_bools(F&& f, bool first, Rest... rest) {
  if (first) {
    dispatch_bools([&](auto... cs) { f(std::true_type{}, cs...); }, rest...);
  } else {
    dispatch_bools([&](auto... cs) { f(std::false_type{}, cs...); }, rest...);
  }
}

}  // namespace msdfast
