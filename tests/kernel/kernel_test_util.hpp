// Helpers for the kernel tests: random LQER layers built directly from
// quantized_matrix (no dependency on the factorization code), bitwise float
// comparison, and the list of paths to run with the ones this CPU lacks named.
#pragma once

#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lqer/layer/layer.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer_test {

using lqer::index_t;

/// Random float matrix (row-major, rows × cols): normal(0, sigma) with, when
/// `outliers`, every 37th element ×20 (activation-like heavy channels).
inline std::vector<float> random_matrix(index_t rows, index_t cols, float sigma, std::uint32_t seed,
                                        bool outliers = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = nd(rng);
    if (outliers && i % 37 == 5) v[i] *= 20.0f;
  }
  return v;
}

/// A layer with W [N, K] ~ N(0, w_sigma), A [K, rank], B [rank, N] and an
/// optional bias, quantized with the layer's formats.
template <class W, class Lr>
lqer::lqer_layer<W, Lr> random_layer(index_t N, index_t K, index_t rank, bool bias, std::uint32_t seed,
                                     float w_sigma = 0.05f, float a_sigma = -1.0f, float b_sigma = 0.01f) {
  using lqer::block_axis;
  using lqer::matrix_view;
  lqer::lqer_layer<W, Lr> layer;
  const auto w = random_matrix(N, K, w_sigma, seed);
  layer.wq = lqer::quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
  if (rank > 0) {
    if (a_sigma < 0) a_sigma = 1.0f / std::sqrt(float(K));
    const auto a = random_matrix(K, rank, a_sigma, seed + 1);
    const auto b = random_matrix(rank, N, b_sigma, seed + 2);
    layer.a = lqer::quantized_matrix<Lr>::quantize(matrix_view<const float>(a.data(), K, rank), block_axis::rows);
    layer.b = lqer::quantized_matrix<Lr>::quantize(matrix_view<const float>(b.data(), rank, N), block_axis::rows);
  }
  if (bias) layer.bias = random_matrix(1, N, 0.5f, seed + 3);
  return layer;
}

/// Equal bits, or both NaN.
inline bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

/// Number of elements whose bits differ; `first` describes the first one.
inline index_t count_mismatches(const std::vector<float>& got, const std::vector<float>& want, index_t cols,
                                std::string* first = nullptr) {
  index_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!same_float(got[i], want[i])) {
      if (bad == 0 && first) {
        // Appended piece by piece: GCC 12 warns falsely (-Wrestrict, bug 105651) on `"(" + std::string`.
        std::ostringstream os;
        os << "(" << index_t(i) / cols << ", " << index_t(i) % cols << "): got " << got[i] << " want " << want[i];
        *first = os.str();
      }
      ++bad;
    }
  return bad;
}

/// The usable paths; built paths this CPU lacks are reported, once per test binary.
inline std::vector<lqer::kernel_path> paths_to_test() {
  static bool reported = false;
  if (!reported) {
    reported = true;
    for (auto p : lqer::built_paths())
      if (!lqer::is_usable(p))
        MESSAGE("kernel path " << std::string(lqer::to_string(p)) << " is built but this CPU lacks it: its tests are SKIPPED");
  }
  return lqer::usable_paths();
}

}  // namespace lqer_test
