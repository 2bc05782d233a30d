// llama — the typed half of quantize.cpp for one block length, included only
// by quantize_b{16,32}.cpp (one translation unit per block length, as in
// use_lite: each instantiates factorize, pack and every CPU path's kernels).
#pragma once

#include "common/lqer_linear.hpp"
#include "quantize.hpp"

namespace llama::detail {

template <int B>
std::string format_names(const quant_config& cfg) {
  std::string s = engine::format_names<B>(cfg.weight_format, cfg.lowrank_format, cfg.rule);
  if (cfg.output_format == "mxint8")
    s += ", output " +
         (cfg.rule == "ocp" ? lqer::mxint<8, B, lqer::mx_rule::ocp>::name()
                            : lqer::mxint<8, B, lqer::mx_rule::lqer>::name()) +
         " W8A8";
  else if (cfg.output_format != "float")
    throw lqer::value_error("unknown output projection format '" + cfg.output_format + "' (float | mxint8)");
  return s;
}

/// The output projection W8A8: MXINT8 weights (block B along d_model, the
/// configuration's exponent rule) and activations, rank 0, through the fused
/// kernel. No factorize(): a rank-0 layer is its quantized weight alone.
template <int B, lqer::mx_rule Rule>
std::unique_ptr<const linear_op> quantize_output(const dense_weights& d, const quant_config& cfg) {
  using F8 = lqer::mxint<8, B, Rule>;
  const std::vector<float> w = d.out_in();
  lqer::lqer_layer<F8, F8> layer;
  layer.wq = lqer::quantized_matrix<F8>::quantize(lqer::matrix_view<const float>(w.data(), d.out, d.in));
  layer.bias = d.b;
  return std::make_unique<engine::lqer_linear<F8, F8, F8>>(std::move(layer), cfg.mode, cfg.reference_forward,
                                                           "output " + F8::name() + " W8A8");
}

/// Factorizes the layers into `q` (see quantize_linears), in parallel on
/// `pool`. The randomized SVD (lqer's default solver): 210 layers of up to
/// 1536 × 576.
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_linears& q,
                     const quantize_progress& progress, thread_pool& pool) {
  engine::with_formats<B>(cfg.weight_format, cfg.lowrank_format, cfg.rule, [&]<class T>(T) {
    engine::with_policy(cfg.policy, cfg.whiten_damping, [&]<class P>(const P& policy) {
      const std::string desc = cfg.describe();
      const int n = static_cast<int>(w.linears.size());
      std::vector<engine::layer_task> tasks(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) {
        auto& t = tasks[static_cast<std::size_t>(i)];
        t.weights = &w.linears[static_cast<std::size_t>(i)];
        t.stats = calib.stats.empty() || calib.of(i).empty() ? nullptr : &calib.of(i);
        t.rank = cfg.budget.enabled() ? 0 : cfg.ranks[static_cast<std::size_t>(i)];
        t.description = desc + " [" + linear_name(i) + "]";
      }
      auto f = engine::factorize_layers<T, P, lqer::randomized_svd>(tasks, policy, cfg.mode, cfg.reference_forward,
                                                                    cfg.budget, pool, progress);
      for (int i = 0; i < n; ++i) {
        auto& fi = f[static_cast<std::size_t>(i)];
        const dense_weights& d = w.linears[static_cast<std::size_t>(i)];
        q.matrix_bytes += fi.matrix_bytes;
        q.weights += static_cast<std::size_t>(d.in * d.out);
        q.reports[static_cast<std::size_t>(i)] = std::move(fi.report);
        q.linears[static_cast<std::size_t>(i)] = std::move(fi.op);
      }
    });
  });
  if (cfg.output_format == "mxint8")
    q.output = cfg.rule == "ocp" ? quantize_output<B, lqer::mx_rule::ocp>(w.output, cfg)
                                 : quantize_output<B, lqer::mx_rule::lqer>(w.output, cfg);
}

/// Layer `name` of `ck` as an lqer linear_op, if stored in a block-B format
/// of the engine's list (see checkpoint.cpp); null otherwise.
template <int B>
std::unique_ptr<const linear_op> load_linear(const lqer::io::checkpoint_file& ck, const std::string& name,
                                             lqer::correction_mode mode, bool reference) {
  const auto& info = ck.layer(name);
  return engine::load_linear<B>(ck, name, mode, reference,
                                info.weight_format + " + rank " + std::to_string(info.rank) + " [" + name + "]");
}

}  // namespace llama::detail
