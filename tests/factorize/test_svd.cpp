// SVD solvers: the exact one recovers a prescribed spectrum; the randomized one
// is within 1% of the exact residual at rank 32 on spectra like a real layer's
// quantization error, exact on low-rank matrices, and deterministic.
#include <doctest/doctest.h>

#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>
#include <string>

#include "factorize/synthetic.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/factorize/scale_policy.hpp"
#include "lqer/factorize/svd.hpp"
#include "lqer/tensor/eigen.hpp"

using namespace lqer;
using lqer::test::gamma_n;
using lqer::test::kUnitDouble;
using lqer::test::kUnitFloat;

namespace {
/// ‖M − U diag(s) Vᵀ‖_F in double.
double residual(const Eigen::MatrixXf& m, const svd_triplets& t) {
  return (m.cast<double>() - t.u.cast<double>() * t.s.cast<double>().asDiagonal() * t.v.cast<double>().transpose())
      .norm();
}
/// sqrt(Σ_{i>k} σ_i²) = sqrt(‖M‖_F² − Σ_{i≤k} σ_i²), with σ_i² the top eigenvalues
/// of the smaller Gram matrix of M in double (several times cheaper than an SVD;
/// the eigenvalues are accurate to ~n·u_d·σ_1², far below what is compared).
double optimal_residual(const Eigen::MatrixXf& m, index_t k) {
  const Eigen::MatrixXd d = m.cast<double>();
  const Eigen::MatrixXd g = d.rows() <= d.cols() ? Eigen::MatrixXd(d * d.transpose()) : Eigen::MatrixXd(d.transpose() * d);
  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(g, Eigen::EigenvaluesOnly).eigenvalues();
  return std::sqrt(std::max(0.0, d.squaredNorm() - ev.tail(k).sum()));  // ascending: the top k are last
}
}  // namespace

TEST_CASE("exact_svd recovers a prescribed spectrum") {
  const index_t m = 120, n = 90, k = 10;
  Eigen::VectorXd sigma(n);
  for (index_t i = 0; i < n; ++i) sigma(i) = 1.0 / (1.0 + i);
  const Eigen::MatrixXf a = test::with_spectrum(m, n, sigma, 5).cast<float>();
  const svd_triplets t = exact_svd{}(a, k);
  REQUIRE(t.u.rows() == m);
  REQUIRE(t.u.cols() == k);
  REQUIRE(t.v.rows() == n);
  REQUIRE(t.s.size() == k);
  // a is the exact matrix rounded to float: each singular value moves by at
  // most ‖ΔA‖₂ ≤ ‖ΔA‖_F ≤ u_f·‖A‖_F (Weyl); the double SVD adds O(n·u_d).
  const double da = kUnitFloat * sigma.norm();
  for (index_t i = 0; i < k; ++i) CHECK(std::fabs(t.s(i) - sigma(i)) <= da + kUnitFloat * sigma(i));
  // Orthonormal columns, to the float rounding of the double result.
  const double ortho = 2 * gamma_n(double(m), kUnitFloat);
  CHECK((t.u.transpose() * t.u - Eigen::MatrixXf::Identity(k, k)).cwiseAbs().maxCoeff() <= ortho);
  CHECK((t.v.transpose() * t.v - Eigen::MatrixXf::Identity(k, k)).cwiseAbs().maxCoeff() <= ortho);
}

TEST_CASE("randomized_svd is exact on a matrix of rank ≤ k + p") {
  const index_t m = 200, n = 150, k = 8;
  Eigen::VectorXd sigma(12);  // rank 12 ≤ k + p = 18: the sketch spans the range
  for (index_t i = 0; i < 12; ++i) sigma(i) = std::pow(0.7, double(i));
  const Eigen::MatrixXf a = test::with_spectrum(m, n, sigma, 9).cast<float>();
  const svd_triplets t = randomized_svd{}(a, k);
  // Optimal residual sqrt(Σ_{i>k} σ_i²) up to float rounding of a and of the
  // passes: (2q+2) float products of length ≤ max(m, n), each ≤ γ·‖A‖_F.
  const double opt = optimal_residual(a, k);
  const double tol = (2 * randomized_svd{}.power_iterations + 2) * gamma_n(double(m), kUnitFloat) * sigma.norm();
  CHECK(std::fabs(residual(a, t) - opt) <= tol);
  for (index_t i = 0; i < k; ++i) CHECK(std::fabs(t.s(i) - sigma(i)) <= tol);
}

TEST_CASE("randomized vs exact: within 1% of the residual at rank 32 on real-layer spectra") {
  // (1) The L²QER-scaled quantization error of the LQER reference's mid layer
  //     (384 × 512): a few large singular values from the outlier channels, then
  //     the flat bulk of a noise-like error — the hard case for a range finder.
  // (2) The same unscaled (LQER): flat from the start.
  // (3) A power law σ_i = (1 + i/8)^-1/2 on 300 × 500, the slow decay of a
  //     trained layer's error spectrum.
  const matrix_rm w = test::load_matrix("layer_mid_W");
  const matrix_rm x = test::load_matrix("layer_mid_Xcal");
  activation_stats st(x.cols());
  st.add_batch(x);
  const std::vector<float> s = policy::mean_abs{}.scale(st, x.cols());
  const Eigen::MatrixXf e = (w - fake_quantize<default_weight_format>(w)).transpose();  // [in, out]
  Eigen::MatrixXf scaled = e;
  for (index_t i = 0; i < scaled.rows(); ++i) scaled.row(i) *= s[static_cast<std::size_t>(i)];
  Eigen::VectorXd sigma(300);
  for (index_t i = 0; i < 300; ++i) sigma(i) = 1.0 / std::sqrt(1.0 + i / 8.0);
  const Eigen::MatrixXf power_law = test::with_spectrum(300, 500, sigma, 21).cast<float>();

  const index_t k = 32;
  const Eigen::MatrixXf* cases[] = {&scaled, &e, &power_law};
  const char* names[] = {"layer_mid, mean_abs-scaled", "layer_mid, unscaled", "power law"};
  for (int c = 0; c < 3; ++c) {
    const std::string name = names[c];
    CAPTURE(name);
    const Eigen::MatrixXf* m = cases[c];
    // The exact truncated SVD's residual is the Eckart–Young optimum (that
    // exact_svd attains it is checked above and in test_factorize); comparing
    // against the singular values saves computing its vectors here.
    const double exact = optimal_residual(*m, k);
    const double rand = residual(*m, randomized_svd{}(*m, k));
    MESSAGE(name << ": exact " << exact << ", randomized " << rand << " (+"
                    << 100 * (rand / exact - 1) << "%)");
    // rand is evaluated in double from float factors: it can undercut the
    // optimum only by their rounding, ≤ 3u_f·‖|U||ΣVᵀ|‖_F ≤ 3u_f·√k·‖M‖_F.
    const double rounding = 3 * std::sqrt(double(k)) * kUnitFloat * m->cast<double>().norm();
    CHECK(rand <= 1.01 * exact);
    CHECK(rand >= exact - rounding);  // nothing beats Eckart–Young
  }
}

TEST_CASE("randomized_svd is deterministic, and the seed matters") {
  Eigen::VectorXd sigma(60);
  for (index_t i = 0; i < 60; ++i) sigma(i) = 1.0 / (1.0 + i);
  const Eigen::MatrixXf a = test::with_spectrum(80, 70, sigma, 3).cast<float>();
  const svd_triplets t1 = randomized_svd{}(a, 5), t2 = randomized_svd{}(a, 5);
  CHECK(t1.u == t2.u);
  CHECK(t1.s == t2.s);
  CHECK(t1.v == t2.v);
  randomized_svd other;
  other.seed = 7;
  CHECK(other(a, 5).u != t1.u);
}

TEST_CASE("the Gaussian test matrix is standard normal") {
  // Mean and variance of N = 200 000 samples: standard errors 1/sqrt(N) and
  // sqrt(2/N); 6 standard errors is a bound a correct generator exceeds with
  // probability ~2e-9.
  const Eigen::MatrixXf g = randomized_svd{}.gaussian(1000, 200);
  const double n = double(g.size());
  const double mean = g.cast<double>().mean();
  const double var = (g.cast<double>().array() - mean).square().sum() / (n - 1);
  CHECK(std::fabs(mean) <= 6 / std::sqrt(n));
  CHECK(std::fabs(var - 1) <= 6 * std::sqrt(2 / n));
}

TEST_CASE("solvers reject a rank outside [1, min(m, n)]") {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Ones(6, 4);
  CHECK_THROWS_AS(exact_svd{}(a, 0), value_error);
  CHECK_THROWS_AS(exact_svd{}(a, 5), value_error);
  CHECK_THROWS_AS(randomized_svd{}(a, 5), value_error);
  randomized_svd bad;
  bad.power_iterations = -1;
  CHECK_THROWS_AS(bad(a, 2), value_error);
  // k + p beyond min(m, n) is clamped, not an error.
  CHECK(randomized_svd{}(a, 4).s.size() == 4);
}
