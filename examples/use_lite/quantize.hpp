// use_lite — turning the fp32 model into a W4A8 one with lqer: calibration,
// factorization of the 10 linear layers, and the lqer implementation of
// linear_op.
//
// The flow (DESIGN.md §3, applied to a whole model):
//   1. calibrate: run the fp32 encoder on calibration sentences; an observer
//      feeds every linear layer's input batch into that layer's
//      lqer::activation_stats (with the Gram matrix when `whiten` needs it);
//   2. factorize each layer offline, W [out, in] = the TF.js kernel transposed:
//      Wq, A, B in their formats (lqer::factorize<Policy, Solver, WF, LF>);
//   3. pack each layer for the fused kernels (lqer::pack) and run it with
//      lqer::linear(packed, x, y, pool): y = Q(x)·Wqᵀ + Q(Q(x)·A)·B + b, the
//      engine's thread pool being the kernel's executor.
// The SVD is Eigen's exact BDCSVD (lqer::exact_svd): these layers are at most
// 1536 × 512, where it takes well under a second and leaves no solver error in
// the numbers. The 10 layers are factorized in parallel on the engine's pool
// (engine::factorize_layers, shared with llama): each factorization is serial
// and depends on its layer alone, so the result is the same for any pool.
//
// Formats are types in lqer; the command line names them, so a closed list
// maps names to types (quantize_impl.hpp). The paper's setup is the
// default: MXINT4 block 16 weights, MXINT8 block 16 activations and A/B, all
// with the LQER reference's exponent rule.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/layer/reference_forward.hpp>  // correction_mode
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/quant_names.hpp"
#include "linear.hpp"
#include "model.hpp"

namespace use_lite {

// The scale policies by name, shared with the llama engine (common/quant_names.hpp).
using engine::parse_scale_policy;
using engine::scale_policy_kind;
using engine::to_string;

/// What to quantize with. Block lengths are shared: lqer computes products
/// block by block, so weights, activations and A/B use one block length.
struct quant_config {
  std::string weight_format = "mxint4";   ///< mxint4 | mxint3
  std::string lowrank_format = "mxint8";  ///< A and B: mxint8 | mxint4
  std::string rule = "lqer";              ///< the MX exponent rule of every format: lqer | ocp (mxint4 + mxint8 only)
  int block = 16;                         ///< 16 | 32 | 64
  scale_policy_kind policy = scale_policy_kind::identity;
  std::array<int, kNumLinears> ranks{};  ///< per layer (all equal unless explored); ignored under a budget
  /// --bits-per-weight: per-layer ranks chosen under a bit budget (off: `ranks`).
  engine::rank_budget budget;
  lqer::correction_mode mode = lqer::correction_mode::fused;
  /// Run lqer's scalar reference forward instead of the fused kernel (always
  /// for mode == paper, which only the reference implements).
  bool reference_forward = false;
  double whiten_damping = 1e-4;

  void set_rank(int k) { ranks.fill(k); }
  /// e.g. "mxint4_b16_lqer W, mxint8_b16_lqer A/B and x, rank 32, whiten"
  std::string describe() const;
  /// The names the closed list accepts, for --help.
  static std::string supported();
};

/// Calibration statistics, one accumulator per linear layer.
struct calibration {
  std::array<lqer::activation_stats, kNumLinears> stats;
  std::size_t sentences = 0;
  bool has_gram() const noexcept { return stats[0].has_gram(); }
};

/// Runs `fp32` on the sentences and accumulates each linear layer's input
/// statistics (one batch per encoder batch, so mean_abs's per-batch maximum
/// is over batches of up to encoder::kBatch sentences).
calibration calibrate(const encoder& fp32, std::span<const std::vector<std::int32_t>> ids, thread_pool& pool,
                      lqer::gram_mode gram);

/// The 10 quantized layers and what factorize() reported for each.
struct quantized_model {
  linear_set linears;
  std::array<lqer::factorize_report, kNumLinears> reports;
  /// Bytes of Wq, A and B (codes and scales) over all layers, and the weight count.
  std::size_t matrix_bytes = 0, weights = 0;
  double bits_per_weight() const noexcept { return weights ? 8.0 * double(matrix_bytes) / double(weights) : 0.0; }
};

/// Each layer's rank against min(in, out) of that layer, before any
/// calibration or factorization: a usage mistake is reported at once, naming
/// `option` and the layer (value_error), not by factorize after the work.
void check_ranks(const model_weights& w, const std::array<int, kNumLinears>& ranks, const std::string& option);

/// Called after each layer's factorization with (layers done, layers): from
/// the pool's threads, one call at a time (progress lines; it may throw, as
/// interrupt_guard::check does, to stop the work).
using quantize_progress = std::function<void(int done, int total)>;

/// Factorizes every linear layer of `w` under `cfg`, the layers in parallel on
/// `pool` (null: on the calling thread; the result is the same). value_error
/// for an unsupported combination (naming what is supported), or a budget
/// below what the weights alone take.
quantized_model quantize_model(std::shared_ptr<const model_weights> w, const calibration& calib,
                               const quant_config& cfg, thread_pool* pool = nullptr,
                               const quantize_progress& progress = {});

}  // namespace use_lite
