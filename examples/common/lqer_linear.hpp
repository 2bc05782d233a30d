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
#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/factorize/reference_forward.hpp>
#include <lqer/format/mxint.hpp>
#include <lqer/kernel/linear.hpp>
#include <lqer/kernel/pack.hpp>
#include <lqer/tensor/eigen.hpp>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

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
  lqer_linear(lqer::lqer_layer<WF, LF> layer, lqer::correction_mode mode, bool reference, std::string description)
      : layer_(std::move(layer)),
        packed_(lqer::pack<AF>(layer_)),
        mode_(mode),
        reference_(reference || mode != lqer::correction_mode::fused),
        description_(std::move(description)) {}

  index_t in_features() const noexcept override { return layer_.in_features(); }
  index_t out_features() const noexcept override { return layer_.out_features(); }
  std::size_t storage_bytes() const noexcept override { return layer_.storage_bytes(); }
  std::string describe() const override { return description_; }
  const lqer::lqer_layer<WF, LF>& layer() const noexcept { return layer_; }

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
};

// ---------------------------------------------------------------------------
// From names to format types, for one block length: the closed list. It holds
// what the quality tables and the exploration use, not every template argument
// lqer accepts: MX integer formats, the ones lqer's fused kernels run. The
// LQER reference's exponent rule for every combination; the OCP MX rule for
// the paper's combination only (MXINT4 weights, MXINT8 activations and A/B):
// it gives the same 4-bit codes except on rounding ties and blocks whose
// largest magnitude is a power of two (measured on USE-lite: identical table
// rows), so each further combination would only add build time. A
// scaled-integer weight format such as GPTQ-style int4 would only run on the
// scalar reference, far too slow for a whole model.

template <class WF, class AF, class LF>
struct format_triple {
  using weight = WF;
  using activation = AF;
  using lowrank = LF;
};

template <int B, class WF, class V>
void with_lowrank(std::string_view lowrank_format, V&& visit) {
  using act = lqer::mxint<8, B, lqer::mx_rule::lqer>;
  if (lowrank_format == "mxint8")
    visit(format_triple<WF, act, lqer::mxint<8, B, lqer::mx_rule::lqer>>{});
  else if (lowrank_format == "mxint4")
    visit(format_triple<WF, act, lqer::mxint<4, B, lqer::mx_rule::lqer>>{});
  else
    throw lqer::value_error("unknown A/B format '" + std::string(lowrank_format) + "' (" + supported_formats() + ")");
}

/// Calls visit(format_triple<W, x, A/B formats>{}) for the named formats of
/// block B and the exponent rule `rule` ("lqer" or "ocp", see above).
template <int B, class V>
void with_formats(std::string_view weight_format, std::string_view lowrank_format, std::string_view rule, V&& visit) {
  if (rule == "ocp") {
    using F4 = lqer::mxint<4, B, lqer::mx_rule::ocp>;
    using F8 = lqer::mxint<8, B, lqer::mx_rule::ocp>;
    if (weight_format != "mxint4" || lowrank_format != "mxint8")
      throw lqer::value_error("the OCP rule is built for mxint4 weights with mxint8 A/B only, not " +
                              std::string(weight_format) + " with " + std::string(lowrank_format));
    visit(format_triple<F4, F8, F8>{});
  } else if (rule == "lqer") {
    if (weight_format == "mxint4")
      with_lowrank<B, lqer::mxint<4, B, lqer::mx_rule::lqer>>(lowrank_format, visit);
    else if (weight_format == "mxint3")
      with_lowrank<B, lqer::mxint<3, B, lqer::mx_rule::lqer>>(lowrank_format, visit);
    else
      throw lqer::value_error("unknown weight format '" + std::string(weight_format) + "' (" + supported_formats() +
                              ")");
  } else {
    throw lqer::value_error("unknown exponent rule '" + std::string(rule) + "' (lqer | ocp)");
  }
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

/// Factorizes `d` (either layout) at `rank` with `policy` and `stats` (empty
/// statistics: none, which only identity accepts) into formats T.
template <class T, class P, class Solver = lqer::exact_svd>
factorized_linear factorize_linear(const dense_weights& d, const lqer::activation_stats& stats, int rank,
                                   const P& policy, lqer::correction_mode mode, bool reference,
                                   std::string description) {
  using WF = typename T::weight;
  using AF = typename T::activation;
  using LF = typename T::lowrank;
  const std::vector<float> w = d.out_in();  // lqer takes W [out, in] (nn.Linear)
  lqer::factorize_options<P, Solver> opt;
  opt.policy = policy;
  opt.bias = d.b;
  auto res =
      lqer::factorize<P, Solver, WF, LF>(lqer::matrix_view<const float>(w.data(), d.out, d.in), stats, rank, opt);
  factorized_linear f;
  f.matrix_bytes =
      res.layer.wq.storage_bytes() + (res.layer.rank() ? res.layer.a.storage_bytes() + res.layer.b.storage_bytes() : 0);
  f.report = std::move(res.report);
  f.op = std::make_unique<lqer_linear<WF, AF, LF>>(std::move(res.layer), mode, reference, std::move(description));
  return f;
}

}  // namespace engine
