// use_lite — the typed half of quantize.cpp: the lqer linear_op and the
// factorization of the 10 layers for one block length. Included only by
// quantize_b{16,32,64}.cpp, one translation unit per block length: each
// format combination instantiates factorize (× 4 policies), pack, the fused
// kernels of every CPU path and the reference forward, so splitting by block
// lets a parallel build compile them side by side.
#pragma once

#include <Eigen/Core>
#include <lqer/factorize/factorize.hpp>
#include <lqer/factorize/reference_forward.hpp>
#include <lqer/format/mxint.hpp>
#include <lqer/kernel/linear.hpp>
#include <lqer/kernel/pack.hpp>
#include <lqer/tensor/eigen.hpp>

#include "common/lqer_linear.hpp"
#include "quantize.hpp"

namespace use_lite::detail {

// The lqer linear_op, the closed list of formats and the policies by name are
// shared with the llama engine (common/lqer_linear.hpp); what is use_lite's is
// the loop over its 10 layers.

/// "W <weight format>, x <activation format>, A/B <low-rank format>".
template <int B>
std::string format_names(const quant_config& cfg) {
  return engine::format_names<B>(cfg.weight_format, cfg.lowrank_format, cfg.rule);
}

/// Factorizes and packs the 10 layers into `qm` (see quantize_model).
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_model& qm) {
  engine::with_formats<B>(cfg.weight_format, cfg.lowrank_format, cfg.rule, [&]<class T>(T) {
    engine::with_policy(cfg.policy, cfg.whiten_damping, [&]<class P>(const P& policy) {
      const std::string desc = cfg.describe();
      for (int i = 0; i < kNumLinears; ++i) {
        const dense_weights& d = w.linears[i];
        // identity needs no statistics; when there are some, factorize still
        // uses them for the report's activation residuals.
        static const lqer::activation_stats kNone;
        const lqer::activation_stats& stats = calib.stats[i].empty() ? kNone : calib.stats[i];
        auto f = engine::factorize_linear<T>(d, stats, cfg.ranks[i], policy, cfg.mode, cfg.reference_forward,
                                             desc + " [" + linear_name(i) + "]");
        qm.matrix_bytes += f.matrix_bytes;
        qm.weights += static_cast<std::size_t>(d.in * d.out);
        qm.reports[i] = std::move(f.report);
        qm.linears[i] = std::move(f.op);
      }
    });
  });
}

}  // namespace use_lite::detail
