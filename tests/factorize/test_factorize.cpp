// factorize(): Eckart–Young, the report against an independent recomputation,
// whiten's optimality against the diagonal policies (also on rank-deficient
// calibration data), their equality when R is diagonal, the plain > LQER >
// L²QER ordering on an LLM-like layer, and the contract (rank 0, bias, errors,
// thread-count independence, other formats).
//
// Tolerances are derived from where rounding happens:
//  * the report forms D = Eqᵀ − A B with a float GEMM of k terms: elementwise
//    error ≤ γ_k(u_f)·(|A||B|) plus one rounding of the subtraction, so the
//    reported norm is within γ_{k+1}(u_f)·‖|A||B|‖_F + u_f·‖D‖_F of the exact one;
//  * the exact solver's U, Σ, V are the double SVD rounded to float and
//    B = Σ Vᵀ is formed in float: A B is within 4u_f·|A||B| of the rounded-free
//    product of the double factors;
//  * everything recomputed here is in double from the float data (exact inputs),
//    so the recomputation's own error is O(n·u_d), negligible next to the above.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "factorize/synthetic.hpp"
#include "lqer/factorize/factorize.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/format/intq.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace lqer;
using lqer::test::gamma_n;
using lqer::test::kUnitDouble;
using lqer::test::kUnitFloat;

namespace {

using md = Eigen::MatrixXd;

/// Eq = W − deq(Wq) in double, [out, in].
template <class R>
md error_of(const matrix_rm& w, const R& r) {
  return w.cast<double>() - dequantize(r.layer.wq).template cast<double>();
}
template <class R>
md ab_of(const R& r) {
  return r.a_unquantized.template cast<double>() * r.b_unquantized.template cast<double>();
}
template <class R>
md abq_of(const R& r) {
  return dequantize(r.layer.a).template cast<double>() * dequantize(r.layer.b).template cast<double>();
}
/// ‖|A||B|‖_F: the scale of the float GEMM's rounding in the report.
md abs_product(const matrix_rm& a, const matrix_rm& b) { return a.cast<double>().cwiseAbs() * b.cast<double>().cwiseAbs(); }

/// Bound on |reported ‖D‖ − exact ‖D‖| for D = Eqᵀ − A B computed as in the report.
double weight_tol(const matrix_rm& a, const matrix_rm& b, double d_norm) {
  return gamma_n(double(a.cols() + 1), kUnitFloat) * abs_product(a, b).norm() + kUnitFloat * d_norm;
}

/// sqrt(tr(Dᵀ R D)) for D [in, out].
double act_norm(const md& d, const md& r) { return std::sqrt(std::max(0.0, (d.transpose() * r * d).trace())); }

/// Output error ‖Y − Y_fp‖_F / ‖Y_fp‖_F of the layer's reference forward.
template <class L>
double output_error(const L& layer, const matrix_rm& x, const matrix_rm& w, correction_mode mode) {
  matrix_rm y(x.rows(), w.rows());
  reference_forward(layer, view_of(x), view_of(y), mode);
  const matrix_rm yfp = x * w.transpose();
  return test::rel_error(y, yfp);
}

/// Correlated activations: LLM-like channels mixed by a fixed random rotation
/// of a few channel pairs, so that R = E[x xᵀ] is far from diagonal.
matrix_rm correlated_activations(index_t tokens, index_t in, std::uint64_t seed) {
  matrix_rm x = test::llm_like_activations(tokens, in, 3, seed);
  const md mix = md::Identity(in, in) + 0.5 * test::random_orthonormal(in, in, 99);
  return (x.cast<double>() * mix).cast<float>();
}

}  // namespace

TEST_CASE("Eckart–Young: identity + exact leaves exactly the discarded singular values") {
  const matrix_rm w = test::heavy_tailed_weight(96, 160, 1);
  for (index_t k : {1, 12, 40}) {
    CAPTURE(k);
    const auto r = factorize<policy::identity, exact_svd>(w, activation_stats{}, k);
    const md e = error_of(w, r);
    const Eigen::BDCSVD<md> svd(e);
    const Eigen::VectorXd s = svd.singularValues();
    const double discarded = std::sqrt(s.tail(s.size() - k).squaredNorm());
    // Recomputed in double from the float factors: only their rounding (4u_f·|A||B|).
    const double exact = (e.transpose() - ab_of(r)).norm();
    const md ab_abs = abs_product(r.a_unquantized, r.b_unquantized);
    CHECK(std::fabs(exact - discarded) <= 4 * kUnitFloat * ab_abs.norm());
    // The report's own float evaluation adds the GEMM's rounding.
    CHECK(std::fabs(r.report.residual_norm - discarded) <=
          4 * kUnitFloat * ab_abs.norm() + weight_tol(r.a_unquantized, r.b_unquantized, discarded));
    // ... and the discarded part really is a function of k: the next singular
    // value is far larger than the tolerance, so a rank-(k−1) answer fails.
    CHECK(std::sqrt(discarded * discarded + s(k - 1) * s(k - 1)) - discarded > 100 * kUnitFloat * ab_abs.norm());
    // The report's singular values are the largest k.
    REQUIRE(static_cast<index_t>(r.report.singular_values.size()) == k);
    for (index_t i = 0; i < k; ++i)
      CHECK(std::fabs(r.report.singular_values[static_cast<std::size_t>(i)] - s(i)) <= 2 * kUnitFloat * s(0));
    CHECK(r.report.activation_basis == "none");
  }
}

TEST_CASE("the report agrees with a recomputation (diagonal and Gram bases)") {
  const index_t out = 80, in = 128, k = 8;
  const matrix_rm w = test::heavy_tailed_weight(out, in, 2);
  const matrix_rm x = correlated_activations(300, in, 3);
  for (gram_mode gm : {gram_mode::off, gram_mode::on}) {
    CAPTURE(int(gm));
    activation_stats st(in, gm);
    st.add_batch(x);
    const auto r = factorize<policy::mean_abs, randomized_svd>(w, st, k);
    const md e = error_of(w, r);
    const md d = e.transpose() - ab_of(r), dq = e.transpose() - abq_of(r);

    CHECK(r.report.policy == "mean_abs");
    CHECK(r.report.solver == "randomized");
    CHECK(r.report.weight_format == default_weight_format::name());
    CHECK(r.report.lowrank_format == default_lowrank_format::name());
    CHECK(r.report.rank == k);
    CHECK(r.report.in_features == in);
    CHECK(r.report.out_features == out);
    // ‖Eq‖: the same float values squared and summed in double, other order.
    CHECK(std::fabs(r.report.error_norm - e.norm()) <= gamma_n(double(e.size()), kUnitDouble) * e.norm());
    CHECK(std::fabs(r.report.residual_norm - d.norm()) <= weight_tol(r.a_unquantized, r.b_unquantized, d.norm()));
    const matrix_rm aq = dequantize(r.layer.a), bq = dequantize(r.layer.b);
    CHECK(std::fabs(r.report.residual_norm_quantized - dq.norm()) <= weight_tol(aq, bq, dq.norm()));
    // The low-rank correction helps, and quantizing it to 8 bits costs little.
    CHECK(r.report.residual_norm < r.report.error_norm);
    CHECK(r.report.residual_norm_quantized < r.report.error_norm);

    if (gm == gram_mode::off) {
      CHECK(r.report.activation_basis == "diagonal");
      const std::vector<double> ms = st.mean_square();
      md rd = md::Zero(in, in);
      for (index_t i = 0; i < in; ++i) rd(i, i) = ms[static_cast<std::size_t>(i)];
      // E[x_i²] rounded to float and multiplied in float: 3u_f relative on the
      // squared norm; D's own rounding enters weighted by sqrt(max E[x_i²]).
      const double sr = std::sqrt(rd.diagonal().maxCoeff());
      const auto check = [&](double got, const md& dd, const matrix_rm& a, const matrix_rm& b) {
        const double want = act_norm(dd, rd);
        CHECK(std::fabs(got - want) <= 2 * kUnitFloat * want + sr * weight_tol(a, b, dd.norm()));
      };
      check(r.report.activation_error, e.transpose(), r.a_unquantized, r.b_unquantized);
      check(r.report.activation_residual, d, r.a_unquantized, r.b_unquantized);
      check(r.report.activation_residual_quantized, dq, aq, bq);
    } else {
      CHECK(r.report.activation_basis == "gram");
      const md rg = st.gram();
      // All in double on exact inputs; the expansion's sums have ≤ in·out terms
      // each bounded by the |·| version of the same product.
      const md ab = abs_product(r.a_unquantized, r.b_unquantized), abq = abs_product(aq, bq);
      const md ea = e.transpose().cwiseAbs(), ra = rg.cwiseAbs();
      const auto bound2 = [&](const md& p) {
        return gamma_n(double(in * out), kUnitDouble) *
               ((ea.transpose() * ra * ea).trace() + 2 * (p.transpose() * ra * ea).trace() +
                (p.transpose() * ra * p).trace());
      };
      const auto check = [&](double got, const md& dd, const md& p) {
        const double want = act_norm(dd, rg);
        CHECK(std::fabs(got * got - want * want) <= bound2(p));
      };
      check(r.report.activation_error, e.transpose(), md::Zero(in, out));
      check(r.report.activation_residual, d, ab);
      check(r.report.activation_residual_quantized, dq, abq);
    }
    CHECK(r.report.activation_residual < r.report.activation_error);
    const auto& t = r.report.seconds;
    CHECK(t.total >= t.stats + t.quantize + t.svd + t.lowrank_quantize + t.report - 1e-9);
  }
}

TEST_CASE("whiten's activation-weighted residual is ≤ every diagonal policy's (full and rank-deficient R)") {
  // whiten minimizes f(D) + λ‖D‖_F² with f(D) = tr(Dᵀ R D); for any other
  // rank-k D', f(D_w) ≤ f(D') + λ(‖D'‖² − ‖D_w‖²) ≤ f(D') + λ‖D'‖_F². On top of
  // that comes the float rounding of each A B (4u_f·|A||B|, plus the SVD's
  // float output), which moves sqrt(f) by ≤ ‖R‖₂^{1/2}·4u_f·‖|A||B|‖_F.
  const index_t out = 64, in = 96, k = 8;
  const matrix_rm w = test::heavy_tailed_weight(out, in, 4);
  for (index_t tokens : {400, 40}) {  // 40 < 96: R has rank ≤ 40
    CAPTURE(tokens);
    activation_stats st(in, gram_mode::on);
    st.add_batch(correlated_activations(tokens, in, 5));
    const md rg = st.gram();
    const double r2 = Eigen::SelfAdjointEigenSolver<md>(rg, Eigen::EigenvaluesOnly).eigenvalues().maxCoeff();
    const auto white = factorize<policy::whiten, exact_svd>(w, st, k);
    const md e = error_of(w, white);
    const auto round_of = [&](const auto& r) {
      return std::sqrt(r2) * 4 * kUnitFloat * abs_product(r.a_unquantized, r.b_unquantized).norm();
    };
    const double f_w = act_norm(e.transpose() - ab_of(white), rg);
    const auto compare = [&](const auto& r, std::string_view name) {
      const md dd = e.transpose() - ab_of(r);
      const double f_d = act_norm(dd, rg);
      const double allowance = std::sqrt(f_d * f_d + white.report.whiten_lambda * dd.squaredNorm()) + round_of(r) +
                               round_of(white);
      MESSAGE("tokens " << tokens << ": whiten " << f_w << " vs " << name << " " << f_d);
      CHECK(f_w <= allowance);
      // And the report, which computes the same quantities in double (Gram basis), agrees.
      const double rep_d = r.report.activation_residual;
      CHECK(white.report.activation_residual <=
            std::sqrt(rep_d * rep_d + white.report.whiten_lambda * dd.squaredNorm()) + round_of(r) + round_of(white));
    };
    compare(factorize<policy::identity, exact_svd>(w, st, k), "identity");
    compare(factorize<policy::mean_abs, exact_svd>(w, st, k), "mean_abs");
    compare(factorize<policy::rms, exact_svd>(w, st, k), "rms");
  }
}

TEST_CASE("diagonal policies equal whiten when R is diagonal") {
  // Each token has one non-zero channel (token t → channel t mod in, value
  // ±a_c), so R = E[x xᵀ] is exactly diagonal, R_cc = a_c²/in, and with every
  // channel hit equally often mean|x_c| = a_c/in ∝ rms_c = a_c/sqrt(in): all
  // three weightings are the same up to a common factor, which does not change
  // A B. whiten uses no damping here (R is positive definite).
  const index_t out = 48, in = 64, k = 6, tokens = 4 * in;
  const matrix_rm w = test::heavy_tailed_weight(out, in, 6);
  matrix_rm x = matrix_rm::Zero(tokens, in);
  for (index_t t = 0; t < tokens; ++t) {
    const index_t c = t % in;
    const float a = 0.5f + float(c % 7) + (c % 16 == 3 ? 40.0f : 0.0f);  // a few outlier channels
    x(t, c) = (t / in) % 2 ? -a : a;
  }
  activation_stats st(in, gram_mode::on);
  st.add_batch(x);
  const md rg = st.gram();
  REQUIRE((rg - md(rg.diagonal().asDiagonal())).cwiseAbs().maxCoeff() == 0.0);

  factorize_options<policy::whiten, exact_svd> wo;
  wo.policy.damping = 0;
  const auto white = factorize<policy::whiten, exact_svd>(w, st, k, wo);
  wo.policy.factorization = whiten_factorization::eigen;
  const auto white_eig = factorize<policy::whiten, exact_svd>(w, st, k, wo);
  const auto mabs = factorize<policy::mean_abs, exact_svd>(w, st, k);
  const auto rms = factorize<policy::rms, exact_svd>(w, st, k);

  // Tolerance from the perturbation theory of the truncated SVD: the weighted
  // matrices M = L·Eqᵀ differ by rounding only, ‖ΔM‖_F ≤ 3u_f·‖M‖_F (the float
  // scale, the float products). The rank-k truncation then moves by at most
  // ‖ΔM‖_F·(1 + 2√k·σ_1/δ), δ = σ_k − σ_{k+1} − ‖ΔM‖_F (Wedin's sin θ bound
  // on the top-k singular subspaces), and mapping back through L⁻¹ multiplies
  // by ‖L⁻¹‖₂ = 1/min s. Plus each result's own float rounding (4u_f·|A||B|).
  const md e = error_of(w, white);
  md m = e.transpose();
  Eigen::VectorXd sd = rg.diagonal().cwiseSqrt();
  for (index_t i = 0; i < in; ++i) m.row(i) *= sd(i);
  const Eigen::VectorXd sv = Eigen::BDCSVD<md>(m).singularValues();
  const double dm = 3 * kUnitFloat * m.norm();
  const double delta = sv(k - 1) - sv(k) - dm;
  REQUIRE(delta > 0);
  const double move = dm * (1 + 2 * std::sqrt(double(k)) * sv(0) / delta) / sd.minCoeff();
  const md ref = ab_of(white);
  const auto own = [](const auto& r) { return 4 * kUnitFloat * abs_product(r.a_unquantized, r.b_unquantized).norm(); };
  CHECK((ab_of(white_eig) - ref).norm() <= move + own(white) + own(white_eig));
  CHECK((ab_of(mabs) - ref).norm() <= move + own(white) + own(mabs));
  CHECK((ab_of(rms) - ref).norm() <= move + own(white) + own(rms));
  MESSAGE("‖AB(mean_abs) − AB(whiten)‖ = " << (ab_of(mabs) - ref).norm() << ", tolerance " << move + own(white) + own(mabs)
                                            << ", ‖AB‖ = " << ref.norm());
  // And not trivially: with correlated channels they differ by far more.
  activation_stats corr(in, gram_mode::on);
  corr.add_batch(correlated_activations(tokens, in, 8));
  const auto wc = factorize<policy::whiten, exact_svd>(w, corr, k);
  const auto mc = factorize<policy::mean_abs, exact_svd>(w, corr, k);
  CHECK((ab_of(wc) - ab_of(mc)).norm() > 100 * (move + own(wc) + own(mc)));
}

TEST_CASE("LLM-like layer: output error orders plain W4A8 > LQER > L²QER") {
  // Heavy-tailed weights and 4 activation channels 20–50× larger than the rest;
  // calibrated on one set of tokens, measured on another.
  const index_t out = 192, in = 256, k = 16;
  const matrix_rm w = test::heavy_tailed_weight(out, in, 10);
  const matrix_rm xcal = test::llm_like_activations(512, in, 4, 11);
  const matrix_rm xtest = test::llm_like_activations(128, in, 4, 12);
  activation_stats st(in);
  st.add_batch(xcal.topRows(256));
  st.add_batch(xcal.bottomRows(256));
  const auto plain = factorize<policy::identity, exact_svd>(w, st, 0);
  const auto lqer = factorize<policy::identity, randomized_svd>(w, st, k);
  const auto l2qer = factorize<policy::mean_abs, randomized_svd>(w, st, k);
  for (auto mode : {correction_mode::paper, correction_mode::fused}) {
    const std::string mode_name = to_string(mode);
    CAPTURE(mode_name);
    const double e0 = output_error(plain.layer, xtest, w, mode);
    const double e1 = output_error(lqer.layer, xtest, w, mode);
    const double e2 = output_error(l2qer.layer, xtest, w, mode);
    MESSAGE(mode_name << ": plain " << e0 << ", LQER " << e1 << ", L²QER " << e2);
    CHECK(e0 > e1);
    CHECK(e1 > e2);
  }
  // The calibration-side report orders them the same way.
  CHECK(plain.report.activation_residual_quantized > lqer.report.activation_residual_quantized);
  CHECK(lqer.report.activation_residual_quantized > l2qer.report.activation_residual_quantized);
}

TEST_CASE("rank 0 is plain quantization, and the bias passes through") {
  const matrix_rm w = test::heavy_tailed_weight(40, 64, 13);
  const matrix_rm x = test::llm_like_activations(10, 64, 1, 14);
  factorize_options<policy::identity, exact_svd> opt;
  for (index_t j = 0; j < 40; ++j) opt.bias.push_back(0.25f * float(j));
  const auto r = factorize<policy::identity, exact_svd>(w, activation_stats{}, 0, opt);
  CHECK(r.layer.rank() == 0);
  CHECK(r.layer.a.empty());
  CHECK(r.layer.b.empty());
  CHECK(r.layer.bias == opt.bias);
  CHECK(r.report.residual_norm == r.report.error_norm);
  CHECK(r.report.residual_norm_quantized == r.report.error_norm);
  CHECK(r.report.singular_values.empty());
  r.layer.validate();
  // Wq is exactly the weight format applied to W.
  CHECK(dequantize(r.layer.wq) == fake_quantize<default_weight_format>(w));
  // Fused forward with the bias = without it + bias, exactly (one float add).
  matrix_rm y(10, 40), y0(10, 40);
  reference_forward(r.layer, view_of(x), view_of(y));
  auto nobias = r.layer;
  nobias.bias.clear();
  reference_forward(nobias, view_of(x), view_of(y0));
  for (index_t t = 0; t < 10; ++t)
    for (index_t j = 0; j < 40; ++j) CHECK(y(t, j) == y0(t, j) + opt.bias[static_cast<std::size_t>(j)]);
}

TEST_CASE("bad input: a sentence and the right error type") {
  const matrix_rm w = test::heavy_tailed_weight(20, 32, 15);
  activation_stats st(32), wrong(31), gram(32, gram_mode::on);
  st.add_batch(test::llm_like_activations(8, 32, 1, 16));
  gram.add_batch(test::llm_like_activations(8, 32, 1, 16));
  wrong.add_batch(test::llm_like_activations(8, 31, 1, 16));
  // (Lambdas: a template argument list's comma would split the CHECK macros' arguments.)
  using opts = factorize_options<policy::mean_abs, exact_svd>;
  const auto l2 = [](const matrix_rm& wm, const activation_stats& s, index_t k, const opts& o = {}) {
    return factorize<policy::mean_abs, exact_svd>(wm, s, k, o);
  };
  const auto wh = [](const matrix_rm& wm, const activation_stats& s, index_t k) {
    return factorize<policy::whiten, exact_svd>(wm, s, k);
  };
  CHECK_THROWS_WITH_AS(l2(w, st, 21), doctest::Contains("rank 21"), value_error);
  CHECK_THROWS_AS(l2(w, st, -1), value_error);
  CHECK_THROWS_WITH_AS(l2(w, wrong, 4), doctest::Contains("31 channels"), shape_error);
  CHECK_THROWS_AS(l2(w, activation_stats{}, 4), value_error);  // no tokens
  CHECK_THROWS_AS(wh(w, st, 4), value_error);                  // no Gram matrix
  matrix_rm bad = w;
  bad(3, 7) = std::nanf("");
  CHECK_THROWS_WITH_AS(l2(bad, st, 4), doctest::Contains("W: quantize: element (3, 7) is NaN"), value_error);
  opts opt;
  opt.bias.assign(19, 0.0f);
  CHECK_THROWS_AS(l2(w, st, 4, opt), shape_error);
  opt.bias.assign(20, 0.0f);
  opt.bias[5] = INFINITY;
  CHECK_THROWS_AS(l2(w, st, 4, opt), value_error);
  // Progress: every step once, in order.
  factorize_options<policy::whiten, randomized_svd> po;
  std::vector<std::string> steps;
  po.progress = [&](int i, int n, std::string_view name) {
    CHECK(n == 5);
    CHECK(i == static_cast<int>(steps.size()) + 1);
    steps.emplace_back(name);
  };
  (void)factorize<policy::whiten, randomized_svd>(w, gram, 4, po);
  CHECK(steps == std::vector<std::string>{"stats", "quantize", "svd", "lowrank_quantize", "report"});
}

TEST_CASE("results do not depend on the thread count or on the matrix layout") {
  // 600 outputs = 3 bands of 256 rows: the parallel paths really split.
  const matrix_rm w = test::heavy_tailed_weight(600, 288, 17);
  activation_stats st(288);
  st.add_batch(test::llm_like_activations(64, 288, 2, 18));
#if defined(_OPENMP)
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = factorize<policy::mean_abs, randomized_svd>(w, st, 16);
  omp_set_num_threads(2);
  const auto two = factorize<policy::mean_abs, randomized_svd>(w, st, 16);
  omp_set_num_threads(saved);
  CHECK(one.a_unquantized == two.a_unquantized);
  CHECK(one.b_unquantized == two.b_unquantized);
  CHECK(one.report.residual_norm == two.report.residual_norm);
  CHECK(one.report.activation_residual_quantized == two.report.activation_residual_quantized);
#endif
  const auto rm = factorize<policy::mean_abs, randomized_svd>(w, st, 16);
  const Eigen::MatrixXf cm = w;  // column-major: evaluated row-major first
  const auto c = factorize<policy::mean_abs, randomized_svd>(cm, st, 16);
  CHECK(rm.a_unquantized == c.a_unquantized);
  CHECK(rm.b_unquantized == c.b_unquantized);
  const auto v = factorize<policy::mean_abs, randomized_svd>(view_of(w), st, 16);
  CHECK(rm.b_unquantized == v.b_unquantized);
}

TEST_CASE("other formats: OCP MXINT4 block 32 weights, per-channel INT8 factors") {
  using wf = mxint<4, 32, mx_rule::ocp>;
  using lf = mxint<8, 32, mx_rule::ocp>;
  const matrix_rm w = test::heavy_tailed_weight(64, 96, 19);
  activation_stats st(96);
  st.add_batch(test::llm_like_activations(32, 96, 2, 20));
  const auto r = factorize<policy::rms, randomized_svd, wf, lf>(w, st, 8);
  r.layer.validate();
  CHECK(r.report.weight_format == wf::name());
  CHECK(r.layer.rank() == 8);
  CHECK(r.report.residual_norm_quantized < r.report.error_norm);
  const auto ri = factorize<policy::rms, randomized_svd, intq<4, 32>, intq<8, kPerRow>>(w, st, 8);
  ri.layer.validate();
  CHECK(ri.report.residual_norm_quantized < ri.report.error_norm);
}
