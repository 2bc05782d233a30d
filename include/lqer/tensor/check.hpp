// lqer — checks on float data that every layer shares: "is every element finite?".
//
// The `.npy` reader does not reject NaN or ±Inf (a file may legitimately hold
// them, and the caller knows whether it can cope); the code that consumes the
// data calls these to fail early, naming the first bad element.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <string>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

namespace detail {

/// True when `v` is NaN or ±Inf. Tests the exponent bits instead of calling
/// std::isfinite, which -ffast-math (-ffinite-math-only) may fold to `true`:
/// an engine built that way still gets its inputs checked.
constexpr bool is_non_finite(float v) noexcept {
  return (std::bit_cast<std::uint32_t>(v) & 0x7f800000u) == 0x7f800000u;
}

/// "NaN", "+Inf" or "-Inf" for a non-finite `v` (the exponent is all ones;
/// a non-zero mantissa makes it a NaN).
constexpr const char* non_finite_name(float v) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(v);
  if (bits & 0x007fffffu) return "NaN";
  return (bits & 0x80000000u) ? "-Inf" : "+Inf";
}

}  // namespace detail

/// Throws value_error naming the first non-finite element of a row-major
/// matrix with `cols` columns, e.g. "W.npy: element (3, 17) is NaN".
/// Throws shape_error when `cols` < 1 or does not divide `data.size()`.
inline void require_finite(std::span<const float> data, index_t cols, const std::string& what) {
  if (cols < 1 || data.size() % static_cast<std::size_t>(cols) != 0)
    throw shape_error(what + ": " + std::to_string(data.size()) + " elements do not form rows of " +
                      std::to_string(cols) + " columns");
  for (std::size_t i = 0; i < data.size(); ++i)
    if (detail::is_non_finite(data[i])) {
      const auto c = static_cast<std::size_t>(cols);
      throw value_error(what + ": element (" + std::to_string(i / c) + ", " + std::to_string(i % c) + ") is " +
                        detail::non_finite_name(data[i]));
    }
}

/// Throws value_error naming the first non-finite element of a vector,
/// e.g. "scale.npy: element 5 is -Inf".
inline void require_finite(std::span<const float> data, const std::string& what) {
  for (std::size_t i = 0; i < data.size(); ++i)
    if (detail::is_non_finite(data[i]))
      throw value_error(what + ": element " + std::to_string(i) + " is " + detail::non_finite_name(data[i]));
}

/// Throws value_error naming the first non-finite element of a (strided) view,
/// in the same words as the span overloads. The view is not validated: an
/// empty view has nothing to check.
inline void require_finite(matrix_view<const float> m, const std::string& what) {
  for (index_t r = 0; r < m.rows; ++r)
    for (index_t c = 0; c < m.cols; ++c)
      if (detail::is_non_finite(m(r, c)))
        throw value_error(what + ": element (" + std::to_string(r) + ", " + std::to_string(c) + ") is " +
                          detail::non_finite_name(m(r, c)));
}

}  // namespace lqer
