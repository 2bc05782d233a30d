// llama — calibration and quantization of the 210 linear layers with lqer.
//
//   1. calibrate: run the float model on calibration text in windows of `ctx`
//      tokens; the forward pass's observer streams every linear layer's input
//      into lqer::activation_stats (with the Gram matrix when `whiten` needs
//      it). q, k and v read the same x, as do gate and up, so a block keeps 4
//      accumulators, not 7 (input_slot);
//   2. factorize each layer, W [out, in] as the file holds it (the Q/K
//      permutation is a row permutation of W, and quantization blocks run
//      along `in`, so it changes nothing), and pack it for the fused kernels:
//      engine::factorize_linear (examples/common/lqer_linear.hpp, shared with
//      use_lite);
//   3. install: model::set_linear for each.
// The formats and policies by name are the shared closed list
// (common/quant_names.hpp); block 16 (the paper's) and 32 (OCP MX) are built,
// one translation unit each (quantize_b16.cpp, quantize_b32.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/layer/reference_forward.hpp>  // correction_mode
#include <span>
#include <string>
#include <vector>

#include "common/quant_names.hpp"
#include "model.hpp"

namespace llama {

using engine::scale_policy_kind;

/// Which accumulator of its block a linear layer's input goes to: q, k, v →
/// 0; o → 1; gate, up → 2; down → 3.
constexpr int input_slot(linear_kind k) noexcept {
  switch (k) {
    case linear_kind::q:
    case linear_kind::k:
    case linear_kind::v: return 0;
    case linear_kind::o: return 1;
    case linear_kind::gate:
    case linear_kind::up: return 2;
    case linear_kind::down: return 3;
  }
  return 0;
}
inline constexpr int kInputsPerBlock = 4;

/// Calibration statistics, kInputsPerBlock accumulators per block.
struct calibration {
  std::vector<lqer::activation_stats> stats;
  std::size_t tokens = 0;
  /// The statistics of linear layer `index`'s input.
  const lqer::activation_stats& of(int index) const {
    return stats.at(static_cast<std::size_t>(index / kLinearsPerBlock * kInputsPerBlock +
                                             input_slot(static_cast<linear_kind>(index % kLinearsPerBlock))));
  }
};

/// Runs `fp32` over `tokens` in windows of `ctx` tokens (a shorter tail is
/// dropped, as in evaluate) and accumulates each window as one batch per layer.
calibration calibrate(const model& fp32, std::span<const std::int32_t> tokens, index_t ctx, thread_pool& pool,
                      lqer::gram_mode gram);

/// What to quantize with (see use_lite's quant_config, whose fields these are).
struct quant_config {
  std::string weight_format = "mxint4";   ///< mxint4 | mxint3; q4_0 | q4_1 (with q8_0 A/B, block 32)
  std::string lowrank_format = "mxint8";  ///< A and B: mxint8 | mxint4; q8_0 (with q4_0 or q4_1 weights)
  std::string rule = "lqer";              ///< the MX exponent rule of every format: lqer | ocp (mxint4 + mxint8 only)
  int block = 16;                         ///< 16 | 32
  scale_policy_kind policy = scale_policy_kind::identity;
  std::vector<int> ranks;  ///< per linear layer (210); see set_rank. Ignored under a budget.
  /// --bits-per-weight: per-layer ranks chosen under a bit budget (off: `ranks`).
  engine::rank_budget budget;
  lqer::correction_mode mode = lqer::correction_mode::fused;
  bool reference_forward = false;
  double whiten_damping = 1e-4;
  /// The output projection (SmolLM2: the tied 49,152 × 576 token table):
  /// "float" keeps it fp32 (the paper quantizes only the blocks' linears);
  /// "mxint8" runs it W8A8 through lqer's fused kernel (MXINT8 weights and
  /// activations of the same block length, LQER rule, no correction), as
  /// llama.cpp quantizes its output tensor too (Q6_K in its Q4_0 files; Q8_0
  /// for SmolLM2, whose 576 columns are no multiple of Q6_K's 256).
  std::string output_format = "float";

  void set_rank(int k, int layers) { ranks.assign(static_cast<std::size_t>(layers), k); }
  std::string describe() const;
};

/// The quantized layers and what factorize() reported for each.
struct quantized_linears {
  std::vector<std::unique_ptr<const linear_op>> linears;
  std::vector<lqer::factorize_report> reports;
  /// Wq, A, B bytes (codes and scales) and the weight count of the 210 linears
  /// (the output projection is not counted: the quality tables compare these).
  std::size_t matrix_bytes = 0, weights = 0;
  std::unique_ptr<const linear_op> output;  ///< the quantized output projection, or null ("float")
  double bits_per_weight() const noexcept { return weights ? 8.0 * double(matrix_bytes) / double(weights) : 0.0; }
};

/// Called after each layer with (index, layers) — for progress lines.
using quantize_progress = std::function<void(int done, int total)>;

/// Factorizes every linear layer of `w`, the layers in parallel on `pool`
/// (null: on the calling thread; the result is the same). value_error for an
/// unsupported combination, a rank outside a layer's [0, min(in, out)],
/// ranks.size() other than the layer count, or a budget below what the
/// weights alone take. `progress` is called from the pool's threads, one call
/// at a time.
quantized_linears quantize_linears(const model_weights& w, const calibration& calib, const quant_config& cfg,
                                   const quantize_progress& progress = {}, thread_pool* pool = nullptr);

/// Installs the quantized layers (and the output projection, if quantized)
/// into `m` (consumes `q.linears` and `q.output`).
void install(model& m, quantized_linears& q);

}  // namespace llama
