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

#include "quantize.hpp"

namespace use_lite::detail {

// ---------------------------------------------------------------------------
// The lqer implementation of linear_op.

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

  void forward(lqer::matrix_view<const float> x, lqer::matrix_view<float> y, thread_pool& pool) const override {
    check_linear_shapes(*this, x, y);
    if (!reference_) {
      lqer::linear(packed_, x, y, pool);
      return;
    }
    // The scalar reference, kRowsPerTask rows per task: each row's result is
    // its fixed-order block sum whatever the chunking.
    for_row_chunks(x.rows, pool, [&](index_t r0, index_t rows) {
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
// what the quality table and the exploration use, not every template argument
// lqer accepts: MX integer formats with the LQER rule, the ones lqer's fused
// kernels run. (The OCP rule gives the same 4-bit codes except on ties and
// exact powers of two — measured: identical table rows — so it is not listed;
// a scaled-integer weight format such as GPTQ-style int4 would only run on the
// scalar reference, far too slow for a whole model.)

template <class WF, class AF, class LF>
struct format_triple {
  using weight = WF;
  using activation = AF;
  using lowrank = LF;
};

template <int B, class WF, class V>
void with_lowrank(const quant_config& c, V&& visit) {
  using act = lqer::mxint<8, B, lqer::mx_rule::lqer>;
  if (c.lowrank_format == "mxint8")
    visit(format_triple<WF, act, lqer::mxint<8, B, lqer::mx_rule::lqer>>{});
  else if (c.lowrank_format == "mxint4")
    visit(format_triple<WF, act, lqer::mxint<4, B, lqer::mx_rule::lqer>>{});
  else
    throw lqer::value_error("unknown A/B format '" + c.lowrank_format + "' (" + quant_config::supported() + ")");
}

template <int B, class V>
void with_formats(const quant_config& c, V&& visit) {
  if (c.weight_format == "mxint4")
    with_lowrank<B, lqer::mxint<4, B, lqer::mx_rule::lqer>>(c, visit);
  else if (c.weight_format == "mxint3")
    with_lowrank<B, lqer::mxint<3, B, lqer::mx_rule::lqer>>(c, visit);
  else
    throw lqer::value_error("unknown weight format '" + c.weight_format + "' (" + quant_config::supported() + ")");
}

template <class V>
void with_policy(const quant_config& c, V&& visit) {
  switch (c.policy) {
    case scale_policy_kind::identity:
      return visit(lqer::policy::identity{});
    case scale_policy_kind::mean_abs:
      return visit(lqer::policy::mean_abs{});
    case scale_policy_kind::rms:
      return visit(lqer::policy::rms{});
    case scale_policy_kind::whiten: {
      lqer::policy::whiten p;
      p.damping = c.whiten_damping;
      return visit(p);
    }
  }
}

/// "W <weight format>, x <activation format>, A/B <low-rank format>".
template <int B>
std::string format_names(const quant_config& cfg) {
  std::string s;
  with_formats<B>(cfg, [&]<class T>(T) {
    s = "W " + T::weight::name() + ", x " + T::activation::name() + ", A/B " + T::lowrank::name();
  });
  return s;
}

/// Factorizes and packs the 10 layers into `qm` (see quantize_model).
template <int B>
void quantize_layers(const model_weights& w, const calibration& calib, const quant_config& cfg, quantized_model& qm) {
  with_formats<B>(cfg, [&]<class T>(T) {
    using WF = typename T::weight;
    using AF = typename T::activation;
    using LF = typename T::lowrank;
    with_policy(cfg, [&]<class P>(const P& policy) {
      const std::string desc = cfg.describe();
      for (int i = 0; i < kNumLinears; ++i) {
        const dense_weights& d = w.linears[i];
        // lqer takes W [out, in] (nn.Linear); TF.js stores [in, out].
        using rm = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
        const rm wt = Eigen::Map<const rm>(d.w.data(), d.in, d.out).transpose();
        lqer::factorize_options<P, lqer::exact_svd> opt;
        opt.policy = policy;
        opt.bias = d.b;
        // identity needs no statistics; when there are some, factorize still
        // uses them for the report's activation residuals.
        static const lqer::activation_stats kNone;
        const lqer::activation_stats& stats = calib.stats[i].empty() ? kNone : calib.stats[i];
        auto res = lqer::factorize<P, lqer::exact_svd, WF, LF>(lqer::view_of(wt), stats, cfg.ranks[i], opt);
        qm.matrix_bytes += res.layer.wq.storage_bytes() +
                           (res.layer.rank() ? res.layer.a.storage_bytes() + res.layer.b.storage_bytes() : 0);
        qm.weights += static_cast<std::size_t>(d.in * d.out);
        qm.reports[i] = std::move(res.report);
        qm.linears[i] = std::make_unique<lqer_linear<WF, AF, LF>>(std::move(res.layer), cfg.mode, cfg.reference_forward,
                                                                  desc + " [" + linear_name(i) + "]");
      }
    });
  });
}

}  // namespace use_lite::detail
