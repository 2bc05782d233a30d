// lqer — configuration: version, index type, small macros shared by every header.
#pragma once

#include <cstddef>
#include <cstdint>

#define LQER_VERSION_MAJOR 0
#define LQER_VERSION_MINOR 1
#define LQER_VERSION_PATCH 0

namespace lqer {

/// Signed index type for shapes and strides (signed so that differences and
/// negative-shape checks are well defined, as in Eigen's `Index`).
using index_t = std::ptrdiff_t;

namespace detail {
/// For `static_assert(dependent_false<T>, "...")` in the unsupported branch of
/// a template: the assertion fires only when that branch is instantiated.
template <class...>
inline constexpr bool dependent_false = false;
}  // namespace detail

}  // namespace lqer
