// engine — the lqer implementation of linear_op, and the closed list that maps
// the command lines' format and policy names to lqer's types. Shared by
// use_lite and llama: both factorize a float layer W [out, in] with its input
// statistics and run it through lqer::linear on the engine's pool. What each
// engine keeps: its own quant_config (which layers, which ranks) and the loop
// over its layers.
//
// Heavy to compile (each format combination instantiates factorize, pack and
// every CPU path's kernels): include it only in translation units that
// factorize, one block length per unit where build time matters.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <functional>
#include <limits>
#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/factorize/rank_allocation.hpp>
#include <lqer/format/mxint.hpp>
#include <lqer/format/table.hpp>
#include <lqer/io/checkpoint.hpp>
#include <lqer/kernel/linear.hpp>
#include <lqer/kernel/pack.hpp>
#include <lqer/layer/reference_forward.hpp>
#include <lqer/tensor/eigen.hpp>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "linear.hpp"
#include "quant_names.hpp"

namespace engine {

// ---------------------------------------------------------------------------
// Scale policies by name (the names: quant_names.hpp)

/// Calls visit(policy object) for `kind` (whiten with `whiten_damping`).
template <class V>
void with_policy(scale_policy_kind kind, double whiten_damping, V&& visit) {
  switch (kind) {
    case scale_policy_kind::identity: return visit(lqer::policy::identity{});
    case scale_policy_kind::mean_abs: return visit(lqer::policy::mean_abs{});
    case scale_policy_kind::rms: return visit(lqer::policy::rms{});
    case scale_policy_kind::whiten: {
      lqer::policy::whiten p;
      p.damping = whiten_damping;
      return visit(p);
    }
  }
}

// ---------------------------------------------------------------------------
// The lqer implementation of linear_op

/// One factorized layer. The hot path is lqer::linear on the layer packed for
/// the fused kernels, with the engine's pool as the executor: the kernel cuts
/// the work into output tiles whose results do not depend on the thread count.
/// The layer itself is kept too, for lqer's reference forward: the `paper`
/// semantics (which only the reference implements) and cross-checks (the
/// kernel reproduces the fused reference bit for bit).
template <class WF, class AF, class LF>
class lqer_linear final : public linear_op {
 public:
  /// `info`: how the layer was made, recorded when it is stored (add_to).
  lqer_linear(lqer::lqer_layer<WF, LF> layer, lqer::correction_mode mode, bool reference, std::string description,
              lqer::io::layer_info info = {})
      : layer_(std::move(layer)),
        packed_(lqer::pack<AF>(layer_)),
        mode_(mode),
        reference_(reference || mode != lqer::correction_mode::fused),
        description_(std::move(description)),
        info_(std::move(info)) {}

  index_t in_features() const noexcept override { return layer_.in_features(); }
  index_t out_features() const noexcept override { return layer_.out_features(); }
  std::size_t storage_bytes() const noexcept override { return layer_.storage_bytes(); }
  std::string describe() const override { return description_; }
  const lqer::lqer_layer<WF, LF>& layer() const noexcept { return layer_; }
  /// Viewed by the writer: this object must outlive w.write().
  void add_to(lqer::io::checkpoint_writer& w, std::string name) const override {
    w.add(std::move(name), layer_, info_);
  }

  void forward(lqer::matrix_view<const float> x, lqer::matrix_view<float> y, thread_pool& pool) const override {
    detail::check_linear_shapes(*this, x, y);
    if (!reference_) {
      lqer::linear(packed_, x, y, pool);
      return;
    }
    // The scalar reference, kRowsPerTask rows per task: each row's result is
    // its fixed-order block sum whatever the chunking.
    detail::for_row_chunks(x.rows, pool, [&](index_t r0, index_t rows) {
      lqer::reference_forward<AF>(layer_, lqer::matrix_view<const float>(x.row(r0), rows, x.cols, x.row_stride),
                                  lqer::matrix_view<float>(y.row(r0), rows, y.cols, y.row_stride), mode_);
    });
  }

 private:
  lqer::lqer_layer<WF, LF> layer_;
  lqer::packed_layer<WF, LF, AF> packed_;
  lqer::correction_mode mode_;
  bool reference_;
  std::string description_;
  lqer::io::layer_info info_;
};

// ---------------------------------------------------------------------------
// From names to format types, for one block length: the closed list (its
// widths and the OCP combination: quant_names.hpp, subsets of lqer's format
// table). It holds what the quality tables and the exploration use, not every
// template argument lqer accepts: MX integer formats with the LQER
// reference's exponent rule for every combination; the OCP MX rule for the
// paper's combination only (MXINT4 weights, MXINT8 activations and A/B): it
// gives the same 4-bit codes except on rounding ties and blocks whose largest
// magnitude is a power of two (measured on USE-lite: identical table rows), so
// each further combination would only add build time. And at block 32
// the format table's llama.cpp layers, Q4_0 or Q4_1 weights with Q8_0 A/B and
// activations (fp16 scales, the fused kernel's real-scale mode): an LQER
// correction on top of the formats 4-bit GGUF files hold.

template <class WF, class AF, class LF>
struct format_triple {
  using weight = WF;
  using activation = AF;
  using lowrank = LF;
};

namespace detail {
/// Visits the closed list's combinations of weights of W bits, block B and
/// rule R; only those in_closed_list are instantiated.
template <int B, lqer::mx_rule R, int W, class V, int... L>
void visit_lowranks(V& visit, lqer::mx_subset<L...>) {
  (
      [&] {
        if constexpr (in_closed_list(W, L, R))
          visit(format_triple<lqer::mx_format<W, B, R>, lqer::mx_format<kClosedActivationBits, B, R>,
                              lqer::mx_format<L, B, R>>{});
      }(),
      ...);
}
template <int B, lqer::mx_rule R, class V, int... W>
void visit_weights(V& visit, lqer::mx_subset<W...>) {
  (visit_lowranks<B, R, W>(visit, closed_lowrank_bits{}), ...);
}
}  // namespace detail

/// Calls visit(format_triple<…>{}) for every combination of block B in the
/// closed list — the one list that selection by name (with_formats) and
/// loading a stored layer (load_linear) both read: the LQER rule's
/// combinations, then the OCP rule's. The activations are MXINT8 of the
/// weights' exponent rule.
template <int B, class V>
void for_each_format(V&& visit) {
  detail::visit_weights<B, lqer::mx_rule::lqer>(visit, closed_weight_bits{});
  detail::visit_weights<B, lqer::mx_rule::ocp>(visit, closed_weight_bits{});
  if constexpr (B == lqer::kGgmlBlock)
    lqer::for_each_ggml_layer(
        [&]<class L>(L) { visit(format_triple<typename L::weight, typename L::activation, typename L::lowrank>{}); });
}

/// Whether the triple T is built for exponent rule `rule`: MX weights for
/// their own rule; llama.cpp's layers (no exponent rule) for any.
template <class T>
bool triple_has_rule(std::string_view rule) {
  if constexpr (requires { T::weight::kRule; })
    return lqer::to_string(T::weight::kRule) == rule;
  else
    return true;
}

/// Calls visit(format_triple<W, x, A/B formats>{}) for the named formats of
/// block B and the exponent rule `rule` ("lqer" or "ocp", see above).
template <int B, class V>
void with_formats(std::string_view weight_format, std::string_view lowrank_format, std::string_view rule, V&& visit) {
  if (!lqer::parse_mx_rule(rule))
    throw lqer::value_error("unknown exponent rule '" + std::string(rule) + "' (lqer | ocp)");
  bool weight_known = false, lowrank_known = false, found = false;
  for_each_format<B>([&]<class T>(T t) {
    weight_known = weight_known || lqer::short_name<typename T::weight>() == weight_format;
    lowrank_known = lowrank_known || lqer::short_name<typename T::lowrank>() == lowrank_format;
    if (found || !triple_has_rule<T>(rule) || lqer::short_name<typename T::weight>() != weight_format ||
        lqer::short_name<typename T::lowrank>() != lowrank_format)
      return;
    found = true;
    visit(t);
  });
  if (found) return;
  if (!weight_known)
    throw lqer::value_error("unknown weight format '" + std::string(weight_format) + "' (" + supported_formats() + ")");
  if (!lowrank_known)
    throw lqer::value_error("unknown A/B format '" + std::string(lowrank_format) + "' (" + supported_formats() + ")");
  const auto is_ggml = [](std::string_view name) {
    const lqer::format_entry* f = lqer::find_format(name);
    return f && f->family == lqer::format_family::ggml;
  };
  if (is_ggml(weight_format) || is_ggml(lowrank_format))
    throw lqer::value_error("llama.cpp's formats are built as " + lqer::ggml_layers_text() + " only, not " +
                            std::string(weight_format) + " with " + std::string(lowrank_format) + " at block " +
                            std::to_string(B));
  throw lqer::value_error("the OCP rule is built for mxint" + std::to_string(kOcpWeightBits) + " weights with mxint" +
                          std::to_string(kOcpLowrankBits) + " A/B only, not " + std::string(weight_format) + " with " +
                          std::string(lowrank_format));
}

/// The W8A8 projection's formats (rank 0, no correction; an LLM's output
/// head): MXINT8 weights and activations of block B and rule Rule.
template <int B, lqer::mx_rule Rule>
using w8a8_formats = format_triple<lqer::mxint<8, B, Rule>, lqer::mxint<8, B, Rule>, lqer::mxint<8, B, Rule>>;

/// Every combination of block B a stored layer may be in: the closed list
/// and the W8A8 projection of either rule. A stored layer names its weight and
/// A/B formats; those two pick the combination (and so the activations').
template <int B, class V>
void for_each_loadable_format(V&& visit) {
  for_each_format<B>(visit);
  visit(w8a8_formats<B, lqer::mx_rule::lqer>{});
  visit(w8a8_formats<B, lqer::mx_rule::ocp>{});
}

/// Layer `name` of checkpoint `ck` as an lqer_linear, packed from its stored
/// codes, if its formats are a block-B combination of for_each_loadable_format;
/// nullptr otherwise (the caller tries its other block lengths, then reports).
/// The file's errors propagate (checkpoint_file::load).
template <int B>
std::unique_ptr<const linear_op> load_linear(const lqer::io::checkpoint_file& ck, std::string_view name,
                                             lqer::correction_mode mode, bool reference,
                                             const std::string& description) {
  const lqer::io::checkpoint_layer& info = ck.layer(name);
  std::unique_ptr<const linear_op> op;
  for_each_loadable_format<B>([&]<class T>(T) {
    using WF = typename T::weight;
    using LF = typename T::lowrank;
    if (op || info.weight_format != WF::name() || info.lowrank_format != LF::name()) return;
    op = std::make_unique<lqer_linear<WF, typename T::activation, LF>>(
        ck.load<WF, LF>(name), mode, reference, description, lqer::io::layer_info{info.policy, info.solver});
  });
  return op;
}

/// "W <weight format>, x <activation format>, A/B <low-rank format>".
template <int B>
std::string format_names(std::string_view weight_format, std::string_view lowrank_format, std::string_view rule) {
  std::string s;
  with_formats<B>(weight_format, lowrank_format, rule, [&]<class T>(T) {
    s = "W " + T::weight::name() + ", x " + T::activation::name() + ", A/B " + T::lowrank::name();
  });
  return s;
}

// ---------------------------------------------------------------------------
// One layer, factorized

/// A factorized layer as a linear_op, with what factorize() reported and its
/// matrix bytes (Wq, A and B: codes and scales; the bias is not counted).
struct factorized_linear {
  std::unique_ptr<const linear_op> op;
  lqer::factorize_report report;
  std::size_t matrix_bytes = 0;
};

/// One layer for factorize_layers: its float weights (either layout), the
/// statistics of its input (empty: none, which only identity accepts), its
/// rank (ignored under a budget) and the description its linear_op reports.
struct layer_task {
  const dense_weights* weights = nullptr;
  const lqer::activation_stats* stats = nullptr;
  int rank = 0;
  std::string description;
};

/// ‖L·Wᵀ‖²_F, the layer's weighted output energy in the metric its singular
/// values are measured in (L·Eqᵀ = M): Σ_c s_c²‖W_:,c‖² for a diagonal
/// policy (identity: s = 1); for whiten, whose L is the Cholesky factor of
/// R + λI (R = E[x xᵀ]), tr(W R Wᵀ) + λ‖W‖² — the mean squared output norm
/// over the calibration tokens, plus the damping's share. W [out, in] row-major.
template <class R>
double weighted_output_energy(const R& r, const std::vector<float>& w, const lqer::activation_stats* stats) {
  const auto in = static_cast<Eigen::Index>(r.report.in_features);
  const auto out = static_cast<Eigen::Index>(r.report.out_features);
  if (r.scale.empty()) {
    const Eigen::MatrixXd wd =
        Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(w.data(), out, in)
            .cast<double>();
    const double trace = stats && stats->has_gram() ? (wd * stats->gram()).cwiseProduct(wd).sum() : 0.0;
    return trace + r.report.whiten_lambda * wd.squaredNorm();
  }
  double e = 0;
  for (std::size_t k = 0; k < w.size(); ++k) {
    const double sc = r.scale[k % static_cast<std::size_t>(in)];
    e += sc * sc * double(w[k]) * double(w[k]);
  }
  return e;
}

/// Called after each layer's factorization with (layers done, layers): from
/// the pool's threads, one call at a time.
using layers_progress = std::function<void(int done, int total)>;

/// Factorizes `tasks` with formats T, policy P and solver S, one layer per
/// task on `pool` (each factorization is serial and depends on its layer
/// alone, so the result is the same for any thread count), at each task's
/// rank or under `budget`. value_error when the budget cannot even pay for
/// the weights (rank 0 everywhere is then the most it could do: the message
/// says what that costs).
template <class T, class P, class Solver>
std::vector<factorized_linear> factorize_layers(std::span<const layer_task> tasks, const P& policy,
                                                lqer::correction_mode mode, bool reference, const rank_budget& budget,
                                                thread_pool& pool, const layers_progress& progress = {}) {
  using WF = typename T::weight;
  using AF = typename T::activation;
  using LF = typename T::lowrank;
  const auto n = static_cast<index_t>(tasks.size());
  constexpr index_t kStep = LF::kBlock;  // whole blocks of B (blocked along k)
  const auto rank_of = [&](const layer_task& t) -> index_t {
    if (!budget.enabled()) return t.rank;
    const index_t limit = std::min(t.weights->in, t.weights->out);
    return std::min<index_t>(budget.max_rank, limit) / kStep * kStep;
  };
  // The weights' own bits, from the shapes: a budget below them is refused
  // before any SVD.
  double weights = 0, wq_bits = 0;
  for (const layer_task& t : tasks) {
    const auto g = lqer::quantized_matrix<WF>::geometry_of(t.weights->out, t.weights->in, lqer::block_axis::cols);
    weights += double(t.weights->in) * double(t.weights->out);
    wq_bits += 8.0 * double(g.lanes) * double(g.lane_code_bytes) +
               double(g.lanes) * double(g.blocks_per_lane) * double(WF::kScaleBits);
  }
  const double total_bits = budget.bits_per_weight * weights;
  if (budget.enabled() && total_bits < wq_bits)
    throw lqer::value_error("a budget of " + std::to_string(budget.bits_per_weight) +
                            " bits per weight is less than the weights alone take (" +
                            std::to_string(wq_bits / weights) + " with " + WF::name() + ")");
  std::vector<lqer::factorize_result<WF, LF>> res(tasks.size());
  std::vector<double> output_energy(tasks.size(), 0.0);
  std::mutex progress_mutex;
  int done = 0;
  pool.parallel_for(n, [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i) {
      const layer_task& t = tasks[static_cast<std::size_t>(i)];
      static const lqer::activation_stats kNone;
      const std::vector<float> w = t.weights->out_in();  // lqer takes W [out, in] (nn.Linear)
      lqer::factorize_options<P, Solver> opt;
      opt.policy = policy;
      opt.bias = t.weights->b;
      auto& r = res[static_cast<std::size_t>(i)];
      r = lqer::factorize<P, Solver, WF, LF>(lqer::matrix_view<const float>(w.data(), t.weights->out, t.weights->in),
                                             t.stats ? *t.stats : kNone, rank_of(t), opt);
      if (budget.enabled() && budget.relative)
        output_energy[static_cast<std::size_t>(i)] = weighted_output_energy(r, w, t.stats);
      if (progress) {
        const std::lock_guard lock(progress_mutex);
        progress(++done, static_cast<int>(n));
      }
    }
  });
  std::vector<index_t> ranks(tasks.size());
  for (std::size_t i = 0; i < tasks.size(); ++i) ranks[i] = res[i].layer.rank();
  if (budget.enabled()) {
    std::vector<lqer::rank_candidates> cand;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      const dense_weights& d = *tasks[i].weights;
      cand.push_back(lqer::rank_candidates::from_singular_values(res[i].report.singular_values, kStep,
                                                                 lqer::lowrank_bits<LF>(d.in, d.out, kStep)));
      // relative: σ² as a fraction of the layer's weighted output (see rank_budget).
      if (budget.relative && output_energy[i] > 0)
        for (double& g : cand.back().gains) g /= output_energy[i];
    }
    ranks = lqer::allocate_ranks(cand, total_bits - wq_bits).ranks;
  }
  std::vector<factorized_linear> out(tasks.size());
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    auto& r = res[i];
    factorized_linear& f = out[i];
    lqer::lqer_layer<WF, LF> layer = ranks[i] == r.layer.rank() ? std::move(r.layer) : lqer::truncate(r, ranks[i]);
    f.matrix_bytes = layer.wq.storage_bytes() + (layer.rank() ? layer.a.storage_bytes() + layer.b.storage_bytes() : 0);
    f.report = std::move(r.report);
    if (ranks[i] != f.report.rank) {
      // The report describes the rank-K factorization; of its numbers only
      // the kept singular values and the rank carry over to the cut layer.
      f.report.rank = ranks[i];
      f.report.singular_values.resize(static_cast<std::size_t>(ranks[i]));
      f.report.residual_norm = f.report.residual_norm_quantized = std::numeric_limits<double>::quiet_NaN();
      f.report.activation_residual = f.report.activation_residual_quantized = std::numeric_limits<double>::quiet_NaN();
    }
    lqer::io::layer_info info{f.report.policy, f.report.solver};
    f.op = std::make_unique<lqer_linear<WF, AF, LF>>(std::move(layer), mode, reference, tasks[i].description,
                                                     std::move(info));
    r = {};  // release the rank-K factors as we go
  }
  return out;
}

}  // namespace engine
