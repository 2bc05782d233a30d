// lqer — Eigen interop for the offline API: views of Eigen matrices, quantize
// from any Eigen expression, dequantize into an Eigen matrix. The kernels never
// include this header (the hot path stays free of Eigen).
#pragma once

#include <Eigen/Core>

#include "lqer/tensor/quantized_matrix.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

/// Row-major float matrix, the layout lqer's views describe.
using matrix_rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline matrix_view<const float> view_of(const matrix_rm& m) noexcept {
  return {m.data(), static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols()), static_cast<index_t>(m.cols())};
}
inline matrix_view<float> view_of(matrix_rm& m) noexcept {
  return {m.data(), static_cast<index_t>(m.rows()), static_cast<index_t>(m.cols()), static_cast<index_t>(m.cols())};
}

/// Quantizes any Eigen float expression (evaluated row-major first).
template <quantization_format Format, class Derived>
quantized_matrix<Format> quantize(const Eigen::MatrixBase<Derived>& m, block_axis axis = block_axis::cols) {
  const matrix_rm rm = m.template cast<float>();
  return quantized_matrix<Format>::quantize(view_of(rm), axis);
}

/// The dequantized matrix.
template <quantization_format Format>
matrix_rm dequantize(const quantized_matrix<Format>& q) {
  matrix_rm out(q.rows(), q.cols());
  q.dequantize(view_of(out));
  return out;
}

/// Quantize then dequantize an Eigen matrix (the researcher's "fake quantization").
template <quantization_format Format, class Derived>
matrix_rm fake_quantize(const Eigen::MatrixBase<Derived>& m, block_axis axis = block_axis::cols) {
  return dequantize(quantize<Format>(m, axis));
}

}  // namespace lqer
