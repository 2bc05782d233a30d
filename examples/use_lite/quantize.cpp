// use_lite — calibration and quantization of the model (see quantize.hpp); the
// typed part, per block length, is in quantize_impl.hpp and quantize_b*.cpp.
#include "quantize.hpp"

#include <algorithm>
#include <cstdio>

namespace use_lite {

namespace detail {
// Defined (explicitly instantiated) in quantize_b{16,32,64}.cpp.
template <int B>
std::string format_names(const quant_config& cfg);
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_model& qm,
                     thread_pool& pool, const quantize_progress& progress);

/// Calls f(std::integral_constant<int, B>) for the config's block length.
template <class F>
decltype(auto) with_block(const quant_config& c, F&& f) {
  switch (c.block) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    default:
      throw lqer::value_error("unsupported block length " + std::to_string(c.block) + " (" + quant_config::supported() +
                              ")");
  }
}
}  // namespace detail

void check_ranks(const model_weights& w, const std::array<int, kNumLinears>& ranks, const std::string& option) {
  for (int i = 0; i < kNumLinears; ++i) {
    const index_t limit = std::min(w.linears[i].in, w.linears[i].out);
    if (ranks[i] < 0 || ranks[i] > limit)
      throw lqer::value_error(option + ": rank " + std::to_string(ranks[i]) + " is outside layer " + linear_name(i) +
                              "'s [0, min(in, out)] = [0, " + std::to_string(limit) + "]");
  }
}

std::string quant_config::supported() { return engine::supported_formats(); }

std::string quant_config::describe() const {
  std::string s = detail::with_block(*this, [&](auto b) { return detail::format_names<decltype(b)::value>(*this); });
  const bool uniform = std::all_of(ranks.begin(), ranks.end(), [&](int r) { return r == ranks[0]; });
  if (budget.enabled()) {
    char b[80];
    std::snprintf(b, sizeof b, ", ranks for %.4g bits/weight (at most %d)", budget.bits_per_weight, budget.max_rank);
    s += b;
  } else if (uniform) {
    s += ", rank " + std::to_string(ranks[0]);
  } else {
    s += ", ranks";
    for (int r : ranks) {
      s += ' ';
      s += std::to_string(r);
    }
  }
  s += ", ";
  s += to_string(policy);
  s += ", ";
  s += lqer::to_string(mode);
  return s;
}

calibration calibrate(const encoder& fp32, std::span<const std::vector<std::int32_t>> ids, thread_pool& pool,
                      lqer::gram_mode gram) {
  calibration c;
  c.sentences = ids.size();
  for (int i = 0; i < kNumLinears; ++i) c.stats[i] = lqer::activation_stats(fp32.weights().linears[i].in, gram);
  const linear_observer observe = [&](linear_id id, lqer::matrix_view<const float> x) {
    c.stats[static_cast<int>(id)].add_batch(x);
  };
  (void)fp32.embed(ids, pool, &observe);
  return c;
}

quantized_model quantize_model(std::shared_ptr<const model_weights> w, const calibration& calib,
                               const quant_config& cfg, thread_pool* pool, const quantize_progress& progress) {
  if (cfg.budget.enabled()) {
    if (!(cfg.budget.bits_per_weight < 64) || cfg.budget.max_rank <= 0)
      throw lqer::value_error("quantize: a bit budget of " + std::to_string(cfg.budget.bits_per_weight) +
                              " bits per weight with ranks up to " + std::to_string(cfg.budget.max_rank) +
                              " is not one to allocate");
  } else {
    check_ranks(*w, cfg.ranks, "quantize");
  }
  quantized_model qm;
  thread_pool serial(1);
  thread_pool& p = pool ? *pool : serial;
  detail::with_block(cfg,
                     [&](auto b) { detail::quantize_layers<decltype(b)::value>(*w, calib, cfg, qm, p, progress); });
  return qm;
}

}  // namespace use_lite
