// lqer — the reference forward of an LQER layer: scalar and obviously right.
// This is the oracle every kernel is tested against.
//
//     xq = Q(x)                       activations, blocks along `in`
//     u  = xq·A                       [M, k]
//     t  = Q(u)                       blocks along `k`
//     fused: y = xq·Wqᵀ + t·B + bias  — t·B goes into the same accumulators
//     paper: y = (xq·Wqᵀ + Q(bias)) + Q(t·B)   (LinearFlexibleLqer of the LQER
//            reference: the correction's output and the bias are rounded too)
//
// Every product is computed block by block: for each output, for each block
// of the reduction axis in ascending order, the exact integer dot product of
// the two blocks' codes (code_value minus zero points; int64, so it cannot
// overflow) is converted to float, multiplied by the product of the two block
// scales and added to one float accumulator — and for a weight format with a
// block minimum m (Q4_1: value = u·d + m) the block's second term, the exact
// float(Σ activation codes) times (activation scale · m), is added after it; in fused mode the correction's blocks
// continue in the same accumulator after the weight's blocks. For MX formats
// the block scales are powers of two and |dot| < 2^24 (a 16-block of int8×int8
// is at most 16·127·127), so every term is exact and the result depends only on
// that fixed summation order: a kernel that keeps it reproduces this reference
// bit for bit, and one that does not is within the bound of reordering a float
// sum (≤ (n−1)·2^-24·Σ|term|).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/rounding.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/tensor/check.hpp"
#include "lqer/tensor/quantized_matrix.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

/// Which semantics of the correction term (see the file comment).
enum class correction_mode {
  fused,  ///< t·B accumulated with xq·Wqᵀ, never rounded on its own (what the kernels compute)
  paper,  ///< the LQER reference's simulation: Q(t·B) and Q(bias) added to xq·Wqᵀ
};

inline const char* to_string(correction_mode m) noexcept { return m == correction_mode::fused ? "fused" : "paper"; }

namespace detail {
/// Σ over blocks of float(int dot) · scale_a · scale_b for lane `la` of `qa` and
/// lane `lb` of `qb`, accumulated into `acc` in ascending block order.
template <class FA, class FB>
float accumulate_block_dots(float acc, const quantized_matrix<FA>& qa, index_t la, const quantized_matrix<FB>& qb,
                            index_t lb) {
  static_assert(!FA::kHasMin,
                "reference_forward: activations (x, and the correction's Q(x)·A) cannot have a block "
                "minimum: the min term is Σ activation codes times the weight's minimum");
  const index_t blocks = qa.blocks_per_lane();
  const index_t len = qa.block_len();
  const auto sa = qa.lane_scales(la);
  const auto sb = qb.lane_scales(lb);
  for (index_t blk = 0; blk < blocks; ++blk) {
    const int za = FA::zero_point(sa[blk]), zb = FB::zero_point(sb[blk]);
    std::int64_t dot = 0, sum_a = 0;
    const index_t end = std::min((blk + 1) * len, qa.depth());  // padding codes are zero; skip them anyway
    for (index_t i = blk * len; i < end; ++i) {
      const std::int64_t a = FA::code_value(qa.lane_code(la, i)) - za;
      dot += a * static_cast<std::int64_t>(FB::code_value(qb.lane_code(lb, i)) - zb);
      sum_a += a;
    }
    // The term rounded on its own, then added (no FMA contraction): exact for
    // MX formats either way, but a real scale's product rounds.
    const float s_a = FA::scale_value(sa[blk]);
    acc += detail::no_contract(static_cast<float>(dot) * (s_a * FB::scale_value(sb[blk])));
    if constexpr (FB::kHasMin)  // Σ a·(u·d + m) = d·Σ a·u + m·Σ a: the minimum's term, after the scale's
      acc += detail::no_contract(static_cast<float>(sum_a) * (s_a * FB::min_value(sb[blk])));
  }
  return acc;
}

template <class FA, class FB>
void check_reduction(const quantized_matrix<FA>& qa, const quantized_matrix<FB>& qb, const char* what) {
  if (qa.depth() != qb.depth() || qa.block_len() != qb.block_len())
    throw shape_error(std::string("reference_forward: ") + what + ": reduction lengths " + std::to_string(qa.depth()) +
                      " vs " + std::to_string(qb.depth()) + ", blocks " + std::to_string(qa.block_len()) + " vs " +
                      std::to_string(qb.block_len()) + " must match");
}
}  // namespace detail

/// y [M, out] = the layer applied to x [M, in] (see the file comment). Every
/// input is validated first; on error nothing is written to y.
template <quantization_format ActFormat = default_activation_format, class WFormat, class LrFormat>
void reference_forward(const lqer_layer<WFormat, LrFormat>& layer, matrix_view<const float> x, matrix_view<float> y,
                       correction_mode mode = correction_mode::fused) {
  static_assert(ActFormat::kBlock == WFormat::kBlock,
                "reference_forward: the activation and weight formats must use the same block length: products "
                "are computed block by block, as the kernels do");
  static_assert(ActFormat::kBlock == LrFormat::kBlock,
                "reference_forward: the activation and low-rank formats must use the same block length");
  layer.validate();
  x.validate("reference_forward: x");
  y.validate("reference_forward: y");
  if (x.cols != layer.in_features())
    throw shape_error("reference_forward: x has " + std::to_string(x.cols) + " columns but the layer has " +
                      std::to_string(layer.in_features()) + " inputs");
  if (y.rows != x.rows || y.cols != layer.out_features())
    throw shape_error("reference_forward: y is " + std::to_string(y.rows) + "x" + std::to_string(y.cols) +
                      ", expected " + std::to_string(x.rows) + "x" + std::to_string(layer.out_features()));

  const index_t M = x.rows, N = layer.out_features(), k = layer.rank();
  require_finite(x, "reference_forward: x");  // (quantize would too, without saying which operand)
  const auto xq = quantized_matrix<ActFormat>::quantize(x, block_axis::cols);
  detail::check_reduction(xq, layer.wq, "x·Wqᵀ");

  // The correction's activations t = Q(xq·A), [M, k].
  quantized_matrix<ActFormat> tq;
  if (k > 0) {
    detail::check_reduction(xq, layer.a, "x·A");
    std::vector<float> u(static_cast<std::size_t>(M * k));
    for (index_t m = 0; m < M; ++m)
      for (index_t j = 0; j < k; ++j) u[m * k + j] = detail::accumulate_block_dots(0.0f, xq, m, layer.a, j);
    // A finite x can overflow here (|x| near FLT_MAX against a large A): a
    // value_error that says where, as linear() reports it; y is not written yet.
    require_finite(u, k, "reference_forward: the correction's intermediate Q(x)·A");
    tq = quantized_matrix<ActFormat>::quantize(matrix_view<const float>(u.data(), M, k), block_axis::cols);
    detail::check_reduction(tq, layer.b, "t·B");
  }

  std::vector<float> out(static_cast<std::size_t>(M * N));
  if (mode == correction_mode::fused) {
    for (index_t m = 0; m < M; ++m)
      for (index_t n = 0; n < N; ++n) {
        float acc = detail::accumulate_block_dots(0.0f, xq, m, layer.wq, n);
        if (k > 0) acc = detail::accumulate_block_dots(acc, tq, m, layer.b, n);
        out[m * N + n] = layer.has_bias() ? acc + layer.bias[n] : acc;
      }
  } else {
    std::vector<float> qbias;
    if (layer.has_bias()) {
      qbias.resize(static_cast<std::size_t>(N));
      fake_quantize<ActFormat>(matrix_view<const float>(layer.bias.data(), 1, N),
                               matrix_view<float>(qbias.data(), 1, N));
    }
    std::vector<float> corr;
    if (k > 0) {
      std::vector<float> v(static_cast<std::size_t>(M * N));
      for (index_t m = 0; m < M; ++m)
        for (index_t n = 0; n < N; ++n) v[m * N + n] = detail::accumulate_block_dots(0.0f, tq, m, layer.b, n);
      require_finite(v, N, "reference_forward: the correction's output Q(Q(x)·A)·B (paper mode)");
      corr.resize(v.size());
      fake_quantize<ActFormat>(matrix_view<const float>(v.data(), M, N), matrix_view<float>(corr.data(), M, N));
    }
    for (index_t m = 0; m < M; ++m)
      for (index_t n = 0; n < N; ++n) {
        float acc = detail::accumulate_block_dots(0.0f, xq, m, layer.wq, n);
        if (!qbias.empty()) acc += qbias[n];
        if (k > 0) acc += corr[m * N + n];
        out[m * N + n] = acc;
      }
  }
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) y(m, n) = out[m * N + n];
}

}  // namespace lqer
