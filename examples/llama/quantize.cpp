// llama — calibration and the untyped half of quantization (see quantize.hpp).
#include "quantize.hpp"

#include <algorithm>
#include <cstdio>
#include <type_traits>

namespace llama {

namespace detail {
// Defined (explicitly instantiated) in quantize_b{16,32}.cpp.
template <int B>
std::string format_names(const quant_config& cfg);
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_linears& q,
                     const quantize_progress& progress, thread_pool& pool);

template <class F>
decltype(auto) with_block(const quant_config& c, F&& f) {
  switch (c.block) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    default:
      throw lqer::value_error("unsupported block length " + std::to_string(c.block) +
                              " (the llama engine builds 16 | 32)");
  }
}
}  // namespace detail

calibration calibrate(const model& fp32, std::span<const std::int32_t> tokens, index_t ctx, thread_pool& pool,
                      lqer::gram_mode gram) {
  if (ctx <= 0) throw lqer::value_error("calibrate: context " + std::to_string(ctx) + " is not positive");
  calibration c;
  for (index_t b = 0; b < fp32.cfg().n_layers; ++b)
    for (const auto k : {linear_kind::q, linear_kind::o, linear_kind::gate, linear_kind::down})
      c.stats.emplace_back(fp32.linear(linear_index(b, k)).in_features(), gram);
  const linear_observer observe = [&](int i, lqer::matrix_view<const float> x) {
    const auto kind = static_cast<linear_kind>(i % kLinearsPerBlock);
    // q, k, v share one x, as do gate and up: add it once.
    if (kind == linear_kind::k || kind == linear_kind::v || kind == linear_kind::up) return;
    c.stats[static_cast<std::size_t>(i / kLinearsPerBlock * kInputsPerBlock + input_slot(kind))].add_batch(x);
  };
  const index_t windows = static_cast<index_t>(tokens.size()) / ctx;
  for (index_t w = 0; w < windows; ++w) {
    const auto win = tokens.subspan(static_cast<std::size_t>(w * ctx), static_cast<std::size_t>(ctx));
    kv_cache cache(fp32.cfg(), ctx);
    (void)fp32.forward(win, cache, pool, true, &observe);
    c.tokens += win.size();
  }
  return c;
}

std::string quant_config::describe() const {
  std::string s = detail::with_block(*this, [&](auto b) { return detail::format_names<decltype(b)::value>(*this); });
  const bool uniform = std::all_of(ranks.begin(), ranks.end(), [&](int r) { return r == ranks.front(); });
  if (budget.enabled()) {
    char b[64];
    std::snprintf(b, sizeof b, ", ranks for %.3g bits/weight", budget.bits_per_weight);
    s += b;
  } else if (ranks.empty() || uniform) {
    s += ", rank " + std::to_string(ranks.empty() ? 0 : ranks.front());
  } else {
    s += ", per-layer ranks";
  }
  s += ", ";
  s += to_string(policy);
  s += ", ";
  s += lqer::to_string(mode);
  return s;
}

quantized_linears quantize_linears(const model_weights& w, const calibration& calib, const quant_config& cfg,
                                   const quantize_progress& progress, thread_pool* pool) {
  const std::size_t n = w.linears.size();
  if (cfg.budget.enabled()) {
    if (!(cfg.budget.bits_per_weight < 64) || cfg.budget.max_rank <= 0)
      throw lqer::value_error("quantize: a bit budget of " + std::to_string(cfg.budget.bits_per_weight) +
                              " bits per weight with ranks up to " + std::to_string(cfg.budget.max_rank) +
                              " is not one to allocate");
  } else if (cfg.ranks.size() != n)
    throw lqer::value_error("quantize: " + std::to_string(cfg.ranks.size()) + " ranks for " + std::to_string(n) +
                            " linear layers");
  for (std::size_t i = 0; i < n && !cfg.budget.enabled(); ++i) {
    const index_t limit = std::min(w.linears[i].in, w.linears[i].out);
    if (cfg.ranks[i] < 0 || cfg.ranks[i] > limit)
      throw lqer::value_error("quantize: rank " + std::to_string(cfg.ranks[i]) + " is outside layer " +
                              linear_name(static_cast<int>(i)) + "'s [0, " + std::to_string(limit) + "]");
  }
  quantized_linears q;
  q.linears.resize(n);
  q.reports.resize(n);
  thread_pool serial(1);
  thread_pool& p = pool ? *pool : serial;
  detail::with_block(cfg, [&](auto b) { detail::quantize_layers<decltype(b)::value>(w, calib, cfg, q, progress, p); });
  return q;
}

void install(model& m, quantized_linears& q) {
  for (std::size_t i = 0; i < q.linears.size(); ++i)
    if (q.linears[i]) m.set_linear(static_cast<int>(i), std::move(q.linears[i]));
  if (q.output) m.set_output(std::move(q.output));
}

}  // namespace llama
