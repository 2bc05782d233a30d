// llama — the typed half of quantize.cpp for one block length, included only
// by quantize_b{16,32}.cpp (one translation unit per block length, as in
// use_lite: each instantiates factorize, pack and every CPU path's kernels).
#pragma once

#include "common/lqer_linear.hpp"
#include "quantize.hpp"

namespace llama::detail {

template <int B>
std::string format_names(const quant_config& cfg) {
  return engine::format_names<B>(cfg.weight_format, cfg.lowrank_format);
}

/// Factorizes the layers into `q` (see quantize_linears). The randomized SVD
/// (lqer's default solver): 210 layers of up to 1536 × 576.
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_linears& q,
                     const quantize_progress& progress) {
  engine::with_formats<B>(cfg.weight_format, cfg.lowrank_format, [&]<class T>(T) {
    engine::with_policy(cfg.policy, cfg.whiten_damping, [&]<class P>(const P& policy) {
      const std::string desc = cfg.describe();
      static const lqer::activation_stats kNone;
      const int n = static_cast<int>(w.linears.size());
      for (int i = 0; i < n; ++i) {
        const dense_weights& d = w.linears[static_cast<std::size_t>(i)];
        const lqer::activation_stats& stats = calib.stats.empty() || calib.of(i).empty() ? kNone : calib.of(i);
        auto f = engine::factorize_linear<T, P, lqer::randomized_svd>(d, stats, cfg.ranks[static_cast<std::size_t>(i)],
                                                                      policy, cfg.mode, cfg.reference_forward,
                                                                      desc + " [" + linear_name(i) + "]");
        q.matrix_bytes += f.matrix_bytes;
        q.weights += static_cast<std::size_t>(d.in * d.out);
        q.reports[static_cast<std::size_t>(i)] = std::move(f.report);
        q.linears[static_cast<std::size_t>(i)] = std::move(f.op);
        if (progress) progress(i + 1, n);
      }
    });
  });
}

}  // namespace llama::detail
