// lqer — the LQER layer: what factorize() produces and pack() consumes.
//
//     y = Q(x)·Wqᵀ + Q(Q(x)·A)·B (+ bias)
//
// Wq [out, in] with blocks along `in`, A [in, k] with blocks along `in` (down
// its columns), B [k, out] with blocks along `k` (down its columns): every
// factor is blocked along the reduction axis of the product it takes part in.
// The layer rung sits below both factorize/ (which produces layers) and
// kernel/ (which packs and runs them, tested against reference_forward.hpp
// beside this header): it depends on the formats and quantized_matrix only,
// never on Eigen.
#pragma once

#include <string>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer {

/// The paper's default formats: MXINT4 block 16 for W, MXINT8 block 16 for A,
/// B and the activations, all with the LQER reference's rule.
using default_weight_format = mxint<4, 16, mx_rule::lqer>;
using default_lowrank_format = mxint<8, 16, mx_rule::lqer>;
using default_activation_format = mxint<8, 16, mx_rule::lqer>;

template <quantization_format WFormat = default_weight_format, quantization_format LrFormat = default_lowrank_format>
struct lqer_layer {
  using weight_format = WFormat;
  using lowrank_format = LrFormat;

  quantized_matrix<WFormat> wq;  ///< [out, in], block_axis::cols
  quantized_matrix<LrFormat> a;  ///< [in, k], block_axis::rows; empty when rank() == 0
  quantized_matrix<LrFormat> b;  ///< [k, out], block_axis::rows; empty when rank() == 0
  std::vector<float> bias;       ///< [out], or empty for no bias

  index_t in_features() const noexcept { return wq.cols(); }
  index_t out_features() const noexcept { return wq.rows(); }
  index_t rank() const noexcept { return a.empty() ? 0 : a.cols(); }
  bool has_bias() const noexcept { return !bias.empty(); }

  /// Throws shape_error unless the parts fit together as the header comment says.
  void validate() const {
    if (wq.empty()) throw shape_error("lqer_layer: the weight is empty");
    if (wq.axis() != block_axis::cols) throw shape_error("lqer_layer: Wq must be blocked along its columns (in)");
    if (a.empty() != b.empty()) throw shape_error("lqer_layer: A and B must both be present or both absent");
    if (!a.empty()) {
      if (a.rows() != in_features())
        throw shape_error("lqer_layer: A has " + std::to_string(a.rows()) + " rows but the layer has " +
                          std::to_string(in_features()) + " inputs");
      if (b.rows() != a.cols() || b.cols() != out_features())
        throw shape_error("lqer_layer: B is " + std::to_string(b.rows()) + "x" + std::to_string(b.cols()) +
                          ", expected " + std::to_string(a.cols()) + "x" + std::to_string(out_features()));
      if (a.axis() != block_axis::rows || b.axis() != block_axis::rows)
        throw shape_error("lqer_layer: A and B must be blocked down their columns (block_axis::rows)");
    }
    if (!bias.empty() && static_cast<index_t>(bias.size()) != out_features())
      throw shape_error("lqer_layer: bias has " + std::to_string(bias.size()) + " elements, expected " +
                        std::to_string(out_features()));
  }

  /// Bytes of the quantized parameters (codes + block scales + fp32 bias).
  std::size_t storage_bytes() const noexcept {
    return wq.storage_bytes() + (a.empty() ? 0 : a.storage_bytes() + b.storage_bytes()) + bias.size() * sizeof(float);
  }
};

}  // namespace lqer
