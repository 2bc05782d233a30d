// use_lite — the typed half of quantize.cpp: the factorization of the 10
// layers for one block length, and loading a stored layer of that block
// length from a model file (checkpoint.cpp). Included only by
// quantize_b{16,32,64}.cpp, one translation unit per block length: each
// format combination instantiates factorize (× 4 policies), pack, the fused
// kernels of every CPU path and the reference forward, so splitting by block
// lets a parallel build compile them side by side.
#pragma once

#include <Eigen/Core>
#include <lqer/factorize/factorize.hpp>
#include <lqer/layer/reference_forward.hpp>
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

/// Factorizes and packs the 10 layers into `qm` (see quantize_model), in
/// parallel on `pool`, with the exact SVD.
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_model& qm,
                     thread_pool& pool, const quantize_progress& progress) {
  engine::with_formats<B>(cfg.weight_format, cfg.lowrank_format, cfg.rule, [&]<class T>(T) {
    engine::with_policy(cfg.policy, cfg.whiten_damping, [&]<class P>(const P& policy) {
      const std::string desc = cfg.describe();
      std::vector<engine::layer_task> tasks(kNumLinears);
      for (int i = 0; i < kNumLinears; ++i) {
        auto& t = tasks[static_cast<std::size_t>(i)];
        t.weights = &w.linears[i];
        // identity needs no statistics; when there are some, factorize still
        // uses them for the report's activation residuals.
        t.stats = calib.stats[i].empty() ? nullptr : &calib.stats[i];
        t.rank = cfg.budget.enabled() ? 0 : cfg.ranks[i];
        t.description = desc + " [" + linear_name(i) + "]";
      }
      auto f = engine::factorize_layers<T, P, lqer::exact_svd>(tasks, policy, cfg.mode, cfg.reference_forward,
                                                               cfg.budget, pool, progress);
      for (int i = 0; i < kNumLinears; ++i) {
        auto& fi = f[static_cast<std::size_t>(i)];
        const dense_weights& d = w.linears[i];
        qm.matrix_bytes += fi.matrix_bytes;
        qm.weights += static_cast<std::size_t>(d.in * d.out);
        qm.reports[i] = std::move(fi.report);
        qm.linears[i] = std::move(fi.op);
      }
    });
  });
}

/// Layer `name` of `ck` as an lqer linear_op, if stored in a block-B format
/// of the engine's list (see checkpoint.cpp); null otherwise.
template <int B>
std::unique_ptr<const linear_op> load_linear(const lqer::io::checkpoint_file& ck, const std::string& name,
                                             lqer::correction_mode mode, bool reference) {
  const auto& info = ck.layer(name);
  return engine::load_linear<B>(
      ck, name, mode, reference,
      info.weight_format + ", A/B " + info.lowrank_format + ", rank " + std::to_string(info.rank) + " [" + name + "]");
}

}  // namespace use_lite::detail
