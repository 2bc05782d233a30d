// lqer — per-layer ranks under a bit budget.
//
// A model's layers do not all gain the same from a rank of correction. One SVD
// per layer at a generous rank K tells what every smaller rank would give: the
// calibrated output error left at rank r is ‖M‖² − Σ_{i≤r} σ_i² for the
// weighted error M = L·Eqᵀ (exactly the output error for whiten, whose L is
// the Cholesky factor of the calibration Gram matrix; the policy's proxy of it
// otherwise). So raising a layer's rank from r to r + s removes
// Σ_{r<i≤r+s} σ_i² of error and costs the bits of s more columns of A and s
// more rows of B.
//
// allocate_ranks spends a budget of bits greedily: always the step with the
// largest error reduction per bit, among the steps that still fit. A layer's
// steps come in σ order, so each layer's gains never increase (concave). With
// equal step costs that greedy choice is optimal (an exchange argument: any
// allocation that skips a larger-ratio step for a smaller one can swap them);
// with unequal costs it is optimal for every budget it exhausts exactly and
// otherwise within one step's gain of the optimum (the 0/1 knapsack remainder).
// Steps of `step` ranks (the low-rank format's block length) keep B's blocks
// whole, so each step of a layer costs the same.
//
// truncate() then gives the layer at its allotted rank from the rank-K
// factorization: the first r singular triplets, A's first r columns and B's
// first r rows re-quantized from their float values — what factorize() at rank
// r would produce from the same SVD (A's kept columns come out identical:
// A is blocked down its columns; B is blocked along k, so its blocks change).
#pragma once

#include <cstddef>
#include <queue>
#include <span>
#include <string>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/factorize/factorize.hpp"

namespace lqer {

/// One layer's choices for allocate_ranks: its rank may rise in steps of
/// `step`, up to gains.size() steps; step j (rank j·step → (j+1)·step)
/// removes gains[j] of error and costs `step_cost` (bits).
struct rank_candidates {
  std::vector<double> gains;  ///< non-negative, non-increasing
  double step_cost = 0;       ///< > 0
  index_t step = 1;           ///< > 0

  /// The candidates of a layer whose weighted error has singular values `s`
  /// (descending, as factorize_report::singular_values): gains[j] = Σ σ_i²
  /// over step j's ranks (a last partial step counts what it has).
  static rank_candidates from_singular_values(std::span<const float> s, index_t step, double step_cost) {
    if (step <= 0) throw value_error("rank_candidates: step " + std::to_string(step) + " is not positive");
    rank_candidates c;
    c.step = step;
    c.step_cost = step_cost;
    const auto n = static_cast<index_t>(s.size());
    for (index_t r = 0; r + step <= n; r += step) {
      double g = 0;
      for (index_t i = r; i < r + step; ++i)
        g += double(s[static_cast<std::size_t>(i)]) * double(s[static_cast<std::size_t>(i)]);
      c.gains.push_back(g);
    }
    return c;
  }
};

/// What allocate_ranks chose.
struct rank_allocation {
  std::vector<index_t> ranks;  ///< per layer, a multiple of its step
  double cost = 0;             ///< bits spent (≤ the budget)
  double gain = 0;             ///< error removed: the sum of the chosen gains
};

/// Spends at most `budget` bits on rank steps, greedily by gain per bit (see
/// the file comment). Ties go to the lower layer index, so the result depends
/// on the input alone. value_error for a negative or non-finite budget, a
/// non-positive cost or step, or gains that are negative, non-finite or
/// increasing within a layer (the greedy order would then not be σ order).
inline rank_allocation allocate_ranks(std::span<const rank_candidates> layers, double budget) {
  if (!(budget >= 0) || budget > 1e300)
    throw value_error("allocate_ranks: the budget " + std::to_string(budget) + " is not a finite non-negative number");
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const rank_candidates& c = layers[l];
    const std::string who = "allocate_ranks: layer " + std::to_string(l);
    if (!(c.step_cost > 0) || c.step_cost > 1e300)
      throw value_error(who + ": step cost " + std::to_string(c.step_cost) + " is not positive and finite");
    if (c.step <= 0) throw value_error(who + ": step " + std::to_string(c.step) + " is not positive");
    for (std::size_t j = 0; j < c.gains.size(); ++j) {
      if (!(c.gains[j] >= 0) || c.gains[j] > 1e300)
        throw value_error(who + ": gain " + std::to_string(j) + " is not a finite non-negative number");
      if (j > 0 && c.gains[j] > c.gains[j - 1])
        throw value_error(who + ": gains increase at step " + std::to_string(j) + " (they must follow σ order)");
    }
  }
  struct item {
    double ratio;
    std::size_t layer;
    bool operator<(const item& o) const noexcept {  // max-heap: larger ratio first, then lower layer
      return ratio != o.ratio ? ratio < o.ratio : layer > o.layer;
    }
  };
  rank_allocation out;
  out.ranks.assign(layers.size(), 0);
  std::vector<std::size_t> taken(layers.size(), 0);
  std::priority_queue<item> heap;
  for (std::size_t l = 0; l < layers.size(); ++l)
    if (!layers[l].gains.empty()) heap.push({layers[l].gains[0] / layers[l].step_cost, l});
  while (!heap.empty()) {
    const item top = heap.top();
    heap.pop();
    const rank_candidates& c = layers[top.layer];
    // A step that does not fit now never will (the budget only shrinks), and
    // the layer's later steps cost the same: the layer is done.
    if (out.cost + c.step_cost > budget) continue;
    out.cost += c.step_cost;
    out.gain += c.gains[taken[top.layer]];
    const std::size_t next = ++taken[top.layer];
    out.ranks[top.layer] += c.step;
    if (next < c.gains.size()) heap.push({c.gains[next] / c.step_cost, top.layer});
  }
  return out;
}

/// The layer of `res` cut to rank `rank` ≤ res.layer.rank() (see the file
/// comment): Wq and the bias as they are, A and B from the first `rank`
/// columns / rows of their unquantized values. value_error for a rank outside
/// [0, res.layer.rank()] or a result without its unquantized factors.
template <quantization_format WFormat, quantization_format LrFormat>
lqer_layer<WFormat, LrFormat> truncate(const factorize_result<WFormat, LrFormat>& res, index_t rank) {
  const index_t k = res.layer.rank();
  if (rank < 0 || rank > k)
    throw value_error("truncate: rank " + std::to_string(rank) + " is outside [0, " + std::to_string(k) + "]");
  if (k > 0 && (res.a_unquantized.cols() != k || res.b_unquantized.rows() != k))
    throw value_error("truncate: the factorization result does not hold its unquantized A and B");
  lqer_layer<WFormat, LrFormat> l;
  l.wq = res.layer.wq;
  l.bias = res.layer.bias;
  if (rank == k) {
    l.a = res.layer.a;
    l.b = res.layer.b;
  } else if (rank > 0) {
    const auto& a = res.a_unquantized;
    const auto& b = res.b_unquantized;
    l.a = quantized_matrix<LrFormat>::quantize(
        matrix_view<const float>(a.data(), static_cast<index_t>(a.rows()), rank, static_cast<index_t>(a.cols())),
        block_axis::rows);
    l.b = quantized_matrix<LrFormat>::quantize(
        matrix_view<const float>(b.data(), rank, static_cast<index_t>(b.cols()), static_cast<index_t>(b.cols())),
        block_axis::rows);
  }
  return l;
}

/// Bits of the low-rank factors A [in, rank] and B [rank, out] in format
/// LrFormat, as lqer_layer stores them (codes, padding and block scales).
template <quantization_format LrFormat>
double lowrank_bits(index_t in, index_t out, index_t rank) {
  if (rank <= 0) return 0;
  using qm = quantized_matrix<LrFormat>;
  const auto bits = [](const typename qm::geometry& g) {
    return 8.0 * double(g.lanes) * double(g.lane_code_bytes) +
           double(g.lanes) * double(g.blocks_per_lane) * double(LrFormat::kScaleBits);
  };
  return bits(qm::geometry_of(in, rank, block_axis::rows)) + bits(qm::geometry_of(rank, out, block_axis::rows));
}

}  // namespace lqer
