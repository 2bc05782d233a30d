// lqer — configuration: version, index type, small macros shared by every header.
#pragma once

#include <cstddef>
#include <cstdint>

#define LQER_VERSION_MAJOR 0
#define LQER_VERSION_MINOR 1
#define LQER_VERSION_PATCH 0

// "0.1.0": the three numbers above as one string literal (kept equal to the
// CMake project version; tests/io/test_checkpoint.cpp checks it).
#define LQER_DETAIL_STRINGIFY2(x) #x
#define LQER_DETAIL_STRINGIFY(x) LQER_DETAIL_STRINGIFY2(x)
#define LQER_VERSION_STRING                 \
  LQER_DETAIL_STRINGIFY(LQER_VERSION_MAJOR) \
  "." LQER_DETAIL_STRINGIFY(LQER_VERSION_MINOR) "." LQER_DETAIL_STRINGIFY(LQER_VERSION_PATCH)

namespace lqer {

/// Signed index type for shapes and strides (signed so that differences and
/// negative-shape checks are well defined, as in Eigen's `Index`).
using index_t = std::ptrdiff_t;

/// The library's version, "major.minor.patch" (files lqer writes record it).
inline constexpr const char* kVersionString = LQER_VERSION_STRING;

namespace detail {
/// For `static_assert(dependent_false<T>, "...")` in the unsupported branch of
/// a template: the assertion fires only when that branch is instantiated.
template <class...>
inline constexpr bool dependent_false = false;
}  // namespace detail

}  // namespace lqer
