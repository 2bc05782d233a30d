// lqer — non-owning strided matrix views: pointer + rows + cols + row stride.
// The hot API (kernels, quantize from a caller's buffer) takes these, never Eigen.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>

#include "lqer/config.hpp"
#include "lqer/error.hpp"

namespace lqer {

/// A row-major matrix view: element (r, c) is `data[r * row_stride + c]`.
/// `T` is `float` for an output view and `const float` for an input view.
/// Invariants (checked by `validate`): rows >= 1, cols >= 1, row_stride >= cols,
/// data != nullptr.
template <class T>
struct matrix_view {
  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t row_stride = 0;

  constexpr matrix_view() = default;
  constexpr matrix_view(T* d, index_t r, index_t c, index_t stride) : data(d), rows(r), cols(c), row_stride(stride) {}
  constexpr matrix_view(T* d, index_t r, index_t c) : matrix_view(d, r, c, c) {}
  /// A mutable view converts to a const one.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  constexpr matrix_view(const matrix_view<U>& o) : data(o.data), rows(o.rows), cols(o.cols), row_stride(o.row_stride) {}

  T& operator()(index_t r, index_t c) const { return data[r * row_stride + c]; }
  T* row(index_t r) const { return data + r * row_stride; }

  /// Throws shape_error naming `what` when the view is not a valid non-empty matrix.
  void validate(const char* what) const {
    if (rows <= 0 || cols <= 0)
      throw shape_error(std::string(what) + ": shape " + std::to_string(rows) + "x" + std::to_string(cols) +
                        " is empty or negative");
    if (row_stride < cols)
      throw shape_error(std::string(what) + ": row stride " + std::to_string(row_stride) +
                        " is smaller than the number of columns " + std::to_string(cols));
    if (data == nullptr) throw shape_error(std::string(what) + ": null data pointer");
  }
};

/// A view over a caller's buffer of `size` elements, checked to hold the whole
/// matrix: (rows − 1)·row_stride + cols ≤ size, without overflow.
template <class T>
matrix_view<T> make_matrix_view(T* data, std::size_t size, index_t rows, index_t cols, index_t row_stride) {
  matrix_view<T> v(data, rows, cols, row_stride);
  v.validate("matrix view");
  // (rows − 1)·stride + cols, compared without overflowing index_t.
  const auto need_rows = static_cast<unsigned long long>(rows - 1);
  const auto stride = static_cast<unsigned long long>(row_stride);
  if (need_rows != 0 &&
      stride > (static_cast<unsigned long long>(size) - static_cast<unsigned long long>(cols)) / need_rows)
    throw shape_error("matrix view: a buffer of " + std::to_string(size) + " elements cannot hold " +
                      std::to_string(rows) + "x" + std::to_string(cols) + " with row stride " +
                      std::to_string(row_stride));
  if (static_cast<unsigned long long>(cols) > size)
    throw shape_error("matrix view: a buffer of " + std::to_string(size) + " elements cannot hold a row of " +
                      std::to_string(cols));
  return v;
}

template <class T>
matrix_view(T*, index_t, index_t, index_t) -> matrix_view<T>;
template <class T>
matrix_view(T*, index_t, index_t) -> matrix_view<T>;

}  // namespace lqer
