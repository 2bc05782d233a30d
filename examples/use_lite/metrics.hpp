// use_lite — how close a quantized model's embeddings are to the fp32 ones.
//
//  * cosine: per sentence, between its quantized and fp32 embedding;
//  * Spearman: a sentence encoder is used through similarities, so compare the
//    two pairwise-similarity matrices (upper triangles, i < j) by rank
//    correlation: 1 means every pair keeps its place in the ranking;
//  * relative error of one layer's output, ‖Yq − Y‖_F / ‖Y‖_F.
// Everything is accumulated in double.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <lqer/error.hpp>
#include <numeric>
#include <span>
#include <vector>

#include "common/relative_error.hpp"

namespace use_lite {

/// Cosine similarity of two vectors (0 when either is zero).
inline double cosine(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) throw lqer::shape_error("cosine: vectors of different lengths");
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ab += double(a[i]) * b[i];
    aa += double(a[i]) * a[i];
    bb += double(b[i]) * b[i];
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

/// Cosine of row i of `a` with row i of `b`, both [n, dim] row-major.
inline std::vector<double> row_cosines(std::span<const float> a, std::span<const float> b, std::size_t dim) {
  if (a.size() != b.size() || dim == 0 || a.size() % dim != 0) throw lqer::shape_error("row_cosines: shapes differ");
  std::vector<double> c(a.size() / dim);
  for (std::size_t i = 0; i < c.size(); ++i) c[i] = cosine(a.subspan(i * dim, dim), b.subspan(i * dim, dim));
  return c;
}

/// Ranks 1…n, ties sharing the average of their ranks (the usual Spearman rule).
inline std::vector<double> average_ranks(std::span<const double> v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) { return v[i] < v[j]; });
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double rank = 0.5 * double(i + j) + 1.0;
    for (std::size_t k = i; k <= j; ++k) r[order[k]] = rank;
    i = j + 1;
  }
  return r;
}

inline double pearson(std::span<const double> x, std::span<const double> y) {
  const double n = double(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
}

/// The upper triangle (i < j) of E·Eᵀ for E [n, dim] row-major.
inline std::vector<double> pairwise_similarities(std::span<const float> e, std::size_t dim) {
  const std::size_t n = e.size() / dim;
  std::vector<double> s;
  s.reserve(n * (n - 1) / 2);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) {
      double d = 0;
      for (std::size_t c = 0; c < dim; ++c) d += double(e[i * dim + c]) * e[j * dim + c];
      s.push_back(d);
    }
  return s;
}

/// Spearman correlation of the pairwise-similarity matrices of `a` and `b`
/// ([n, dim] each, n ≥ 3 for a meaningful value).
inline double similarity_spearman(std::span<const float> a, std::span<const float> b, std::size_t dim) {
  if (a.size() != b.size() || a.size() < 3 * dim)
    throw lqer::shape_error("similarity_spearman: need ≥ 3 rows of equal shape");
  const auto sa = pairwise_similarities(a, dim), sb = pairwise_similarities(b, dim);
  const auto ra = average_ranks(sa), rb = average_ranks(sb);
  return pearson(ra, rb);
}

/// ‖approx − exact‖_F / ‖exact‖_F.
using engine::relative_error;

}  // namespace use_lite
