// lqer — factorize: from a float weight and calibration statistics to an LQER layer.
//
//     Wq = Q_W(W)                            W [out, in], blocks along `in`
//     Eq = W − deq(Wq)                       [out, in]
//     M  = L · Eqᵀ                           [in, out]; L = S = diag(s) or F (whiten)
//     M ≈ U_k Σ_k V_kᵀ                       the solver's top-k triplets
//     A  = L⁻¹ U_k     [in, k]   → Q_LR, blocks along `in` (down A's columns)
//     B  = Σ_k V_kᵀ    [k, out]  → Q_LR, blocks along `k`  (down B's columns)
//
// so that x (Wqᵀ + A B) ≈ x Wᵀ (see scale_policy.hpp for what each L
// minimizes). rank = 0 is plain quantization (A and B empty).
//
// Memory and passes: Eq is formed once (float, out × in). M is never formed:
// the solver sees it as an operator, L·(Eqᵀ X) and Eq·(Lᵀ Y), whose products
// with Eq run as independent row/column bands (detail/parallel.hpp) of the
// register-tiled kernels of detail/thin_gemm.hpp (why not Eigen's GEMM: there).
//
// The report (factorize_report) is recomputed from Eq, A and B, not taken from
// the solver, so it also checks the solver:
//   error_norm                      ‖Eq‖_F
//   residual_norm                   ‖Eqᵀ − A B‖_F, A and B before the low-rank quantization
//   residual_norm_quantized         ‖Eqᵀ − deq(A) deq(B)‖_F, what the layer holds
//   activation_error / _residual[_quantized]
//                                   the same three with the calibration activations:
//                                   sqrt(E_x ‖x D‖²) = sqrt(tr(Dᵀ R D)), R = E[x xᵀ]; the RMS
//                                   over calibration tokens of the output error's norm.
//                                   Basis "gram": the full R (the statistics kept it).
//                                   Basis "diagonal": R ≈ diag(E[x_i²]), i.e.
//                                   sqrt(Σ_i E[x_i²] ‖D_i,:‖²) — exact for uncorrelated
//                                   channels, it drops the cross terms otherwise.
//                                   Basis "none": no statistics (identity without
//                                   calibration data); the three are 0.
// The weight path uses D computed in float (A B as a float FMA chain, its rounding
// ≤ γ_k·|A||B|); the Gram path expands tr(Dᵀ R D) = tr(Eq R Eqᵀ) − 2⟨A B, R Eqᵀ⟩
// + ⟨AᵀRA, B Bᵀ⟩ in double, costing one O(out·in²) product (the same order as
// accumulating R or factoring it). Every sum is taken per band and the bands
// added in order, so the report does not depend on the number of threads.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/calib/activation_stats.hpp"
#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/factorize/detail/parallel.hpp"
#include "lqer/factorize/detail/thin_gemm.hpp"
#include "lqer/factorize/scale_policy.hpp"
#include "lqer/factorize/svd.hpp"
#include "lqer/format/format.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/tensor/check.hpp"
#include "lqer/tensor/eigen.hpp"
#include "lqer/tensor/quantized_matrix.hpp"
#include "lqer/tensor/view.hpp"

namespace lqer {

// ---------------------------------------------------------------------------
// Options, report, result

/// Wall-clock seconds of each step of factorize().
struct factorize_timings {
  double stats = 0;             ///< the scale s or the whitening factor F from the statistics
  double quantize = 0;          ///< Wq = Q(W) and Eq = W − deq(Wq)
  double svd = 0;               ///< the solver, and A = L⁻¹U_k, B = Σ_k V_kᵀ
  double lowrank_quantize = 0;  ///< Q(A), Q(B)
  double report = 0;            ///< the residuals of the report
  double total = 0;
};

/// What factorize() did and how well (see the file comment for each number).
struct factorize_report {
  std::string policy, solver, weight_format, lowrank_format;
  index_t in_features = 0, out_features = 0, rank = 0;
  double error_norm = 0;
  double residual_norm = 0;
  double residual_norm_quantized = 0;
  std::string activation_basis = "none";  ///< "gram", "diagonal" or "none"
  double activation_error = 0;
  double activation_residual = 0;
  double activation_residual_quantized = 0;
  std::vector<float> singular_values;  ///< σ_1 … σ_k of M = L·Eqᵀ, the kept ones
  double whiten_lambda = 0;            ///< the absolute damping λ (whiten only)
  factorize_timings seconds;
};

/// Called when factorize() enters a step: step in [1, steps], its name
/// ("stats", "quantize", "svd", "lowrank_quantize", "report").
using factorize_progress = std::function<void(int step, int steps, std::string_view name)>;

/// Parameters of one factorization: the policy's and the solver's own
/// (e.g. `whiten::damping`, `randomized_svd::power_iterations`), an optional
/// bias that passes through to the layer, and an optional progress callback.
template <class Policy, class Solver>
struct factorize_options {
  Policy policy{};
  Solver solver{};
  std::vector<float> bias;  ///< [out] or empty
  factorize_progress progress;
};

template <quantization_format WFormat, quantization_format LrFormat>
struct factorize_result {
  lqer_layer<WFormat, LrFormat> layer;
  factorize_report report;
  std::vector<float> scale;  ///< s [in] of a diagonal policy (all ones for identity); empty for whiten
  matrix_rm a_unquantized;   ///< A [in, k] before Q_LR (0 × 0 when rank = 0)
  matrix_rm b_unquantized;   ///< B [k, out] before Q_LR
};

// ---------------------------------------------------------------------------
// Internals

namespace detail {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Eq = W − deq(Wq), row-major [out, in]; rows in parallel. Decodes through
/// Format::decode, so it is exactly what the layer's Wq holds.
template <class WFormat>
matrix_rm quantization_error(matrix_view<const float> w, const quantized_matrix<WFormat>& wq) {
  matrix_rm e(w.rows, w.cols);
  const index_t len = wq.block_len();
  parallel_chunks(w.rows, 64, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const auto scales = wq.lane_scales(r);
      const float* src = w.row(r);
      float* dst = e.data() + r * w.cols;
      for (index_t c0 = 0; c0 < w.cols; c0 += len) {  // block by block: one scale each, no division
        const auto s = scales[c0 / len];
        const index_t c1 = std::min(c0 + len, w.cols);
        for (index_t c = c0; c < c1; ++c) dst[c] = src[c] - WFormat::decode(wq.lane_code(r, c), s);
      }
    }
  });
  return e;
}

/// M = L·Eqᵀ [in, out] as a linear_operator over Eq (row-major [out, in]):
/// L = diag(s) when `scale` is non-empty, F when `white` is set, I otherwise.
/// A template (White = whitening), as compute_residuals below: only a
/// translation unit that factorizes compiles their bodies (issue #18).
template <class White = whitening>
class weighted_error_operator {
 public:
  weighted_error_operator(const matrix_rm& e, const std::vector<float>* scale, const White* white)
      : e_(e), scale_(scale), white_(white) {}

  index_t rows() const noexcept { return e_.cols(); }
  index_t cols() const noexcept { return e_.rows(); }

  /// L (Eqᵀ X), X [out, c]: bands of Eq's columns, each giving rows of the result.
  Eigen::MatrixXf multiply(const Eigen::MatrixXf& x) const {
    const thin::thin_panel p(x);
    std::vector<float, xsimd::aligned_allocator<float>> y(static_cast<std::size_t>(rows() * p.ld));
    parallel_chunks(rows(), kBandRows, [&](index_t c0, index_t c1) {
      thin::rows_transposed_times_panel(e_.data() + c0, e_.cols(), c1 - c0, p, y.data() + c0 * p.ld, p.ld);
    });
    return apply_left(thin::unpad(y, rows(), x.cols(), p.ld));
  }
  /// Eq (Lᵀ Y), Y [in, c]: bands of Eq's rows.
  Eigen::MatrixXf multiply_transpose(const Eigen::MatrixXf& y) const {
    const thin::thin_panel p(apply_left_transpose(y));
    std::vector<float, xsimd::aligned_allocator<float>> z(static_cast<std::size_t>(cols() * p.ld));
    parallel_chunks(cols(), kBandRows, [&](index_t r0, index_t r1) {
      thin::rows_times_panel(e_.data() + r0 * e_.cols(), e_.cols(), r1 - r0, p, z.data() + r0 * p.ld, p.ld);
    });
    return thin::unpad(z, cols(), y.cols(), p.ld);
  }
  Eigen::MatrixXf dense() const { return apply_left(Eigen::MatrixXf(e_.transpose())); }

  /// L⁻¹ U [in, k].
  Eigen::MatrixXf solve(const Eigen::MatrixXf& u) const {
    if (white_) return white_->solve(u.cast<double>()).template cast<float>();
    if (scale_) {
      Eigen::MatrixXf a = u;
      for (index_t i = 0; i < a.rows(); ++i) a.row(i) /= (*scale_)[static_cast<std::size_t>(i)];
      return a;
    }
    return u;
  }

 private:
  Eigen::MatrixXf apply_left(Eigen::MatrixXf y) const {
    if (white_) return white_->apply(y.cast<double>()).template cast<float>();
    if (scale_)
      for (index_t i = 0; i < y.rows(); ++i) y.row(i) *= (*scale_)[static_cast<std::size_t>(i)];
    return y;
  }
  Eigen::MatrixXf apply_left_transpose(const Eigen::MatrixXf& y) const {
    if (white_) return white_->apply_transpose(y.cast<double>()).template cast<float>();
    return apply_left(y);  // diagonal: Lᵀ = L
  }

  const matrix_rm& e_;
  const std::vector<float>* scale_;
  const White* white_;
};

/// The sums behind the report's residuals, for one band of output rows.
struct residual_sums {
  double e2 = 0, d2 = 0, dq2 = 0;     // weight space: ‖Eq‖², ‖D‖², ‖Dq‖²
  double we2 = 0, wd2 = 0, wdq2 = 0;  // diagonal basis: Σ_i r_i (·)²
  double ge = 0, gc = 0, gcq = 0;     // Gram basis: ⟨Eq, Eq R⟩, ⟨A B, R Eqᵀ⟩, same with deq(A), deq(B)
};

/// Fills the report's residuals (see the file comment). `a`, `b` may be empty (rank 0).
template <class Stats = activation_stats>
void compute_residuals(const matrix_rm& e, const matrix_rm& a, const matrix_rm& b, const matrix_rm& aq,
                       const matrix_rm& bq, const Stats& stats, factorize_report& rep) {
  const index_t out = e.rows(), in = e.cols(), k = a.cols();
  const bool have_stats = !stats.empty() && stats.in_features() == in;
  const bool gram = have_stats && stats.has_gram();
  const bool diag = have_stats && !gram;
  Eigen::MatrixXd r;
  Eigen::VectorXf w;  // E[x_i²] for the diagonal basis
  if (gram) r = stats.gram();
  if (diag) {
    const std::vector<double> ms = stats.mean_square();
    w.resize(in);
    for (index_t i = 0; i < in; ++i) w(i) = static_cast<float>(ms[static_cast<std::size_t>(i)]);
  }
  const matrix_rm at = a.transpose(), aqt = aq.transpose();  // [k, in]
  const Eigen::MatrixXd atd = at.cast<double>(), aqtd = aqt.cast<double>();
  const thin::residual_factors factors{k, in, out, at.data(), aqt.data(), b.data(), bq.data()};

  std::vector<residual_sums> bands(static_cast<std::size_t>(chunk_count(out, kBandRows)));
  parallel_chunks(out, kBandRows, [&](index_t r0, index_t r1) {
    residual_sums& s = bands[static_cast<std::size_t>(r0 / kBandRows)];
    const index_t n = r1 - r0;
    const thin::band_sums t = thin::residual_band(e.data(), in, r0, r1, factors, diag ? w.data() : nullptr);
    s.e2 = t.e2, s.d2 = t.d2, s.dq2 = t.dq2;
    s.we2 = t.we2, s.wd2 = t.wd2, s.wdq2 = t.wdq2;
    if (gram) {
      const Eigen::MatrixXd ed = e.middleRows(r0, n).cast<double>();
      const Eigen::MatrixXd g = ed * r;  // rows r0..r1 of Eq R
      s.ge = (ed.array() * g.array()).sum();
      if (k > 0) {
        // ⟨A B, R Eqᵀ⟩ over these output columns = ⟨Aᵀ, B_band · G_band⟩.
        s.gc = (atd.array() * (b.middleCols(r0, n).cast<double>() * g).array()).sum();
        s.gcq = (aqtd.array() * (bq.middleCols(r0, n).cast<double>() * g).array()).sum();
      }
    }
  });
  residual_sums t;
  for (const residual_sums& s : bands) {
    t.e2 += s.e2, t.d2 += s.d2, t.dq2 += s.dq2;
    t.we2 += s.we2, t.wd2 += s.wd2, t.wdq2 += s.wdq2;
    t.ge += s.ge, t.gc += s.gc, t.gcq += s.gcq;
  }
  if (k == 0) t.d2 = t.dq2 = t.e2, t.wd2 = t.wdq2 = t.we2;
  rep.error_norm = std::sqrt(t.e2);
  rep.residual_norm = std::sqrt(t.d2);
  rep.residual_norm_quantized = std::sqrt(t.dq2);
  if (diag) {
    rep.activation_basis = "diagonal";
    rep.activation_error = std::sqrt(t.we2);
    rep.activation_residual = std::sqrt(t.wd2);
    rep.activation_residual_quantized = std::sqrt(t.wdq2);
  } else if (gram) {
    rep.activation_basis = "gram";
    rep.activation_error = std::sqrt(std::max(0.0, t.ge));
    if (k == 0) {
      rep.activation_residual = rep.activation_residual_quantized = rep.activation_error;
    } else {
      // ⟨AᵀRA, B Bᵀ⟩ = ‖A B‖²_R; rounding can push a near-zero total below 0.
      const auto quad = [&r](const Eigen::MatrixXd& amt, const matrix_rm& bm) {
        const Eigen::MatrixXd bd = bm.cast<double>();
        const Eigen::MatrixXd ara = amt * r * amt.transpose();
        return (ara.array() * (bd * bd.transpose()).array()).sum();
      };
      rep.activation_residual = std::sqrt(std::max(0.0, t.ge - 2 * t.gc + quad(atd, b)));
      rep.activation_residual_quantized = std::sqrt(std::max(0.0, t.ge - 2 * t.gcq + quad(aqtd, bq)));
    }
  } else {
    rep.activation_basis = "none";
  }
}

/// The weighting L of step 1, from the statistics: a scale s for the diagonal
/// policies, the factor F for whitening ones.
struct error_weighting {
  std::vector<float> scale;  ///< s [in] (all ones for identity); empty for whitening policies
  whitening white;           ///< F (whitening policies only)
  bool use_scale = false;    ///< apply s (false for identity: L = I, no scaling pass at all)
  bool use_white = false;    ///< apply F
};

/// Step 1 for one policy (format-independent: compiled once in lqer::offline).
template <class Policy>
error_weighting weighting_of(const Policy& policy, const activation_stats& stats, index_t in) {
  error_weighting l;
  if constexpr (whitening_scale_policy<Policy>) {
    l.white = policy.factor(stats, in);
    l.use_white = true;
  } else {
    l.scale = policy.scale(stats, in);
    require_finite(std::span<const float>(l.scale), "factorize: scale");
    for (float s : l.scale)
      if (!(s > 0.0f)) throw value_error("factorize: the scale policy produced a non-positive scale");
    l.use_scale = !std::is_same_v<Policy, policy::identity>;
  }
  return l;
}

/// The unquantized factors of step 3.
struct lowrank_factors {
  matrix_rm a;                         ///< A = L⁻¹ U_k [in, k]
  matrix_rm b;                         ///< B = Σ_k V_kᵀ [k, out]
  std::vector<float> singular_values;  ///< σ_1 … σ_k
};

/// Step 3 for one solver: the top-k triplets of M = L·Eqᵀ, A = L⁻¹U_k and
/// B = Σ_k V_kᵀ (format-independent: compiled once in lqer::offline). rank > 0.
template <class Solver>
lowrank_factors solve_lowrank(const matrix_rm& e, const error_weighting& l, index_t rank, const Solver& solver) {
  const weighted_error_operator<> op(e, l.use_scale ? &l.scale : nullptr, l.use_white ? &l.white : nullptr);
  const svd_triplets t = solver(op, rank);
  lowrank_factors f;
  f.a = op.solve(t.u);
  f.b = t.s.asDiagonal() * t.v.transpose();
  f.singular_values.assign(t.s.data(), t.s.data() + t.s.size());
  return f;
}

template <class Policy, class Solver, class WFormat, class LrFormat>
factorize_result<WFormat, LrFormat> factorize_impl(matrix_view<const float> w, const activation_stats& stats,
                                                   index_t rank, const factorize_options<Policy, Solver>& opt) {
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  w.validate("factorize: W");
  const index_t out = w.rows, in = w.cols;
  if (rank < 0 || rank > std::min(in, out))
    throw value_error("factorize: rank " + std::to_string(rank) + " is outside [0, min(in, out)] = [0, " +
                      std::to_string(std::min(in, out)) + "] for W of " + std::to_string(out) + "x" +
                      std::to_string(in));
  if (stats.in_features() != 0 && stats.in_features() != in)
    throw shape_error("factorize: the calibration statistics have " + std::to_string(stats.in_features()) +
                      " channels but W [out, in] = " + std::to_string(out) + "x" + std::to_string(in) + " has " +
                      std::to_string(in) + " inputs");
  if (!opt.bias.empty()) {
    if (static_cast<index_t>(opt.bias.size()) != out)
      throw shape_error("factorize: the bias has " + std::to_string(opt.bias.size()) + " elements, W has " +
                        std::to_string(out) + " outputs");
    require_finite(std::span<const float>(opt.bias), "factorize: bias");
  }
  constexpr int kSteps = 5;
  const auto step = [&](int i, std::string_view name) {
    if (opt.progress) opt.progress(i, kSteps, name);
  };

  factorize_result<WFormat, LrFormat> res;
  factorize_report& rep = res.report;
  rep.policy = std::string(Policy::kName);
  rep.solver = std::string(Solver::kName);
  rep.weight_format = WFormat::name();
  rep.lowrank_format = LrFormat::name();
  rep.in_features = in;
  rep.out_features = out;
  rep.rank = rank;

  // Steps 1, 3 and 5 do not depend on the formats: they are separate function
  // templates over the policy, the solver and nothing, so that lqer::offline
  // can hold them compiled once for every format combination (issue #18).
  // 1. The weighting L from the statistics.
  step(1, "stats");
  auto t0 = clock::now();
  error_weighting weighting = weighting_of(opt.policy, stats, in);
  if (weighting.use_white) rep.whiten_lambda = weighting.white.lambda();
  rep.seconds.stats = seconds_since(t0);

  // 2. Wq and Eq.
  step(2, "quantize");
  t0 = clock::now();
  try {
    // Rows in parallel (bands of 64 rows): at 4096 × 11008 the serial encoder
    // alone would take a large part of the whole factorization.
    res.layer.wq = quantized_matrix<WFormat>::quantize(w, block_axis::cols, parallel_chunks_executor{64});
  } catch (const value_error& e) {
    throw value_error(std::string("factorize: W: ") + e.what());
  }
  const matrix_rm e = quantization_error(w, res.layer.wq);
  rep.seconds.quantize = seconds_since(t0);

  // 3. Truncated SVD of M = L·Eqᵀ; A = L⁻¹U_k, B = Σ_k V_kᵀ.
  step(3, "svd");
  t0 = clock::now();
  if (rank > 0) {
    lowrank_factors f = solve_lowrank(e, weighting, rank, opt.solver);
    res.a_unquantized = std::move(f.a);
    res.b_unquantized = std::move(f.b);
    rep.singular_values = std::move(f.singular_values);
  }
  res.scale = std::move(weighting.scale);
  rep.seconds.svd = seconds_since(t0);

  // 4. The low-rank factors in their format, each blocked along its product's reduction axis.
  step(4, "lowrank_quantize");
  t0 = clock::now();
  matrix_rm aq, bq;
  if (rank > 0) {
    try {
      res.layer.a = quantized_matrix<LrFormat>::quantize(view_of(res.a_unquantized), block_axis::rows);
      res.layer.b = quantized_matrix<LrFormat>::quantize(view_of(res.b_unquantized), block_axis::rows);
    } catch (const value_error& err) {
      throw value_error(std::string("factorize: the low-rank factors: ") + err.what());
    }
    aq = dequantize(res.layer.a);
    bq = dequantize(res.layer.b);
  }
  res.layer.bias = opt.bias;
  rep.seconds.lowrank_quantize = seconds_since(t0);

  // 5. The report, recomputed from Eq, A and B.
  step(5, "report");
  t0 = clock::now();
  compute_residuals(e, res.a_unquantized, res.b_unquantized, aq, bq, stats, rep);
  rep.seconds.report = seconds_since(t0);
  rep.seconds.total = seconds_since(t_start);
  return res;
}

}  // namespace detail

// ---------------------------------------------------------------------------
// The entry points

/// Factorizes W [out, in] (row-major view; nn.Linear layout) at `rank` with the
/// scale policy and SVD solver given as types (see the file comment). `stats`
/// are the calibration statistics of the layer's inputs (a default-constructed
/// activation_stats is enough for policy::identity; the report's activation
/// residuals are then "none").
///
/// Throws shape_error for mismatched shapes (W vs stats, bias), value_error for a
/// rank outside [0, min(in, out)], non-finite W or bias, statistics the policy
/// cannot use (no tokens, no Gram matrix for whiten).
template <scale_policy Policy = policy::mean_abs, svd_solver Solver = randomized_svd,
          quantization_format WFormat = default_weight_format, quantization_format LrFormat = default_lowrank_format>
factorize_result<WFormat, LrFormat> factorize(matrix_view<const float> w, const activation_stats& stats, index_t rank,
                                              const factorize_options<Policy, Solver>& options = {}) {
  return detail::factorize_impl<Policy, Solver, WFormat, LrFormat>(w, stats, rank, options);
}

/// The same for any Eigen float matrix expression (a row-major float matrix with
/// direct access is used in place; anything else is evaluated row-major first).
template <scale_policy Policy = policy::mean_abs, svd_solver Solver = randomized_svd,
          quantization_format WFormat = default_weight_format, quantization_format LrFormat = default_lowrank_format,
          class Derived>
factorize_result<WFormat, LrFormat> factorize(const Eigen::MatrixBase<Derived>& w, const activation_stats& stats,
                                              index_t rank, const factorize_options<Policy, Solver>& options = {}) {
  constexpr bool kDirect =
      std::is_same_v<typename Derived::Scalar, float> && (int(Derived::Flags) & Eigen::RowMajorBit) &&
      (int(Derived::Flags) & Eigen::DirectAccessBit) && int(Derived::InnerStrideAtCompileTime) == 1;
  if constexpr (kDirect) {
    const auto& d = w.derived();
    return detail::factorize_impl<Policy, Solver, WFormat, LrFormat>(
        matrix_view<const float>(d.data(), static_cast<index_t>(d.rows()), static_cast<index_t>(d.cols()),
                                 static_cast<index_t>(d.outerStride())),
        stats, rank, options);
  } else {
    const matrix_rm rm = w.template cast<float>();
    return detail::factorize_impl<Policy, Solver, WFormat, LrFormat>(view_of(rm), stats, rank, options);
  }
}

}  // namespace lqer

// ---------------------------------------------------------------------------
// The companion library lqer::offline
//
// What a call of factorize() spends its compile time on (issue #18: 30 s and
// 1.2 GB per translation unit) is Eigen's decompositions in the policies'
// weighting and in the solvers, and the report's double-precision products.
// None of it depends on the formats: it is in weighting_of<Policy>,
// solve_lowrank<Solver> and compute_residuals, which lqer::offline (src/)
// holds compiled for the policies and solvers listed here. Linking that target
// defines LQER_OFFLINE_LIBRARY, and the declarations below then stop every
// includer from compiling them again; only the formats' encoders are left to
// the translation unit. A policy or solver not in the lists (a user's own)
// compiles header-only, as everything does without the target. These lists
// are the only place that names them: src/offline_*.cpp instantiate from them.
// The lists and the instantiations name things relative to namespace lqer,
// where they are expanded.
#define LQER_OFFLINE_POLICIES(X) X(policy::identity) X(policy::mean_abs) X(policy::rms) X(policy::whiten)
#define LQER_OFFLINE_SOLVERS(X) X(exact_svd) X(randomized_svd)

#define LQER_OFFLINE_WEIGHTING(P) \
  template detail::error_weighting detail::weighting_of<P>(const P&, const activation_stats&, index_t);
#define LQER_OFFLINE_SOLVE_LOWRANK(S)                                                                                  \
  template detail::lowrank_factors detail::solve_lowrank<S>(const matrix_rm&, const detail::error_weighting&, index_t, \
                                                            const S&);
#define LQER_OFFLINE_RESIDUALS                                                                                    \
  template void detail::compute_residuals<activation_stats>(const matrix_rm&, const matrix_rm&, const matrix_rm&, \
                                                            const matrix_rm&, const matrix_rm&,                   \
                                                            const activation_stats&, factorize_report&);

#if defined(LQER_OFFLINE_LIBRARY)
namespace lqer {
#define LQER_OFFLINE_EXTERN_WEIGHTING(P) extern LQER_OFFLINE_WEIGHTING(P)
#define LQER_OFFLINE_EXTERN_SOLVE_LOWRANK(S) extern LQER_OFFLINE_SOLVE_LOWRANK(S)
LQER_OFFLINE_POLICIES(LQER_OFFLINE_EXTERN_WEIGHTING)
LQER_OFFLINE_SOLVERS(LQER_OFFLINE_EXTERN_SOLVE_LOWRANK)
extern LQER_OFFLINE_RESIDUALS
#undef LQER_OFFLINE_EXTERN_WEIGHTING
#undef LQER_OFFLINE_EXTERN_SOLVE_LOWRANK
}  // namespace lqer
#endif
