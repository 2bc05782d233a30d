// detail/thin_gemm.hpp: the factorization's big-times-thin products and the
// report's residual sums against plain double loops, on shapes that exercise
// every tail (rows not a multiple of the 8-row tile, panels of 1–7 vectors with
// a partial last one, reductions shorter and longer than the L2 chunk), on a
// band of a wider matrix (the leading dimension is not the width).
//
// Tolerances: each output of the products is a float FMA chain over n terms,
// so |y − y_exact| ≤ γ_n(u_f)·Σ|e||p| elementwise (Higham, Thm 3.5). The
// residual kernel forms each d = e − Σ_t a_t b_t as a float chain of k terms
// and one subtraction: |d_f − d| ≤ δ = γ_{k+1}(u_f)·(|e| + Σ|a||b|); the squares
// are then exact in double and summed in double, so
// |Σ w d_f² − Σ w d²| ≤ Σ w (2|d|δ + δ²) + γ_N(u_d)·Σ w d_f² (N terms).
// This file is compiled twice: for the baseline ISA and with -march=native
// (test_thin_gemm_native), because the tiles and tails depend on the vector width.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "factorize/synthetic.hpp"
#include "lqer/factorize/detail/thin_gemm.hpp"
#include "lqer/tensor/eigen.hpp"

using namespace lqer;
using lqer::test::gamma_n;
using lqer::test::kUnitDouble;
using lqer::test::kUnitFloat;
namespace thin = lqer::detail::thin;

namespace {

matrix_rm random_rm(index_t rows, index_t cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  matrix_rm m(rows, cols);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = u(gen);
  return m;
}
Eigen::MatrixXf random_cm(index_t rows, index_t cols, std::uint64_t seed) { return random_rm(rows, cols, seed); }

/// Padded row-major output buffer, filled with a value the kernels must overwrite.
std::vector<float, xsimd::aligned_allocator<float>> output(index_t rows, index_t ld) {
  return std::vector<float, xsimd::aligned_allocator<float>>(static_cast<std::size_t>(rows * ld), 12345.0f);
}

}  // namespace

TEST_CASE("thin_panel pads each row with zeros to whole vectors") {
  const Eigen::MatrixXf m = random_cm(5, 3, 1);
  const thin::thin_panel p(m);
  CHECK(p.rows == 5);
  CHECK(p.cols == 3);
  CHECK(p.ld == thin::kLanes);
  for (index_t r = 0; r < 5; ++r) {
    for (index_t c = 0; c < 3; ++c) CHECK(p.row(r)[c] == m(r, c));
    for (index_t c = 3; c < p.ld; ++c) CHECK(p.row(r)[c] == 0.0f);
  }
}

TEST_CASE("rows_times_panel and rows_transposed_times_panel agree with double loops within γ_n·Σ|e||p|") {
  const index_t width_pad = 7;  // E is a band of a wider matrix
  for (index_t m : {1, 7, 8, 9, 33}) {
    for (index_t n : {1, 5, 1023, 1025, 2100}) {
      for (index_t l : {1, 15, 16, 17, 42, 49, 97, 129}) {
        if (n * l > 60000 && m > 9) continue;  // keep the test fast; the tails are covered either way
        CAPTURE(m);
        CAPTURE(n);
        CAPTURE(l);
        // Y = E · P with E [m, n]
        {
          const matrix_rm wide = random_rm(m, n + width_pad, static_cast<std::uint64_t>(m * 131 + n * 7 + l));
          const Eigen::MatrixXf pm = random_cm(n, l, static_cast<std::uint64_t>(l * 17 + n));
          const thin::thin_panel p(pm);
          auto y = output(m, p.ld);
          thin::rows_times_panel(wide.data() + 3, wide.cols(), m, p, y.data(), p.ld);
          const Eigen::MatrixXd e = wide.middleCols(3, n).cast<double>();
          const Eigen::MatrixXd want = e * pm.cast<double>();
          const Eigen::MatrixXd bound = gamma_n(double(n), kUnitFloat) * (e.cwiseAbs() * pm.cast<double>().cwiseAbs());
          const Eigen::MatrixXf got = thin::unpad(y, m, l, p.ld);
          bool ok = true;
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < l; ++j) ok = ok && std::fabs(double(got(i, j)) - want(i, j)) <= bound(i, j);
          CHECK(ok);
          // The padding columns are written (with the zero panel's products), nothing is left stale.
          for (index_t i = 0; i < m; ++i)
            for (index_t j = l; j < p.ld; ++j) CHECK(y[static_cast<std::size_t>(i * p.ld + j)] == 0.0f);
        }
        // Y = Eᵀ · P with E [n, m] (m columns of a wider matrix)
        {
          const matrix_rm wide = random_rm(n, m + width_pad, static_cast<std::uint64_t>(m * 29 + n * 3 + l));
          const Eigen::MatrixXf pm = random_cm(n, l, static_cast<std::uint64_t>(l * 5 + n + 1));
          const thin::thin_panel p(pm);
          auto y = output(m, p.ld);
          thin::rows_transposed_times_panel(wide.data() + 2, wide.cols(), m, p, y.data(), p.ld);
          const Eigen::MatrixXd e = wide.middleCols(2, m).cast<double>();
          const Eigen::MatrixXd want = e.transpose() * pm.cast<double>();
          const Eigen::MatrixXd bound =
              gamma_n(double(n), kUnitFloat) * (e.cwiseAbs().transpose() * pm.cast<double>().cwiseAbs());
          const Eigen::MatrixXf got = thin::unpad(y, m, l, p.ld);
          bool ok = true;
          for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < l; ++j) ok = ok && std::fabs(double(got(i, j)) - want(i, j)) <= bound(i, j);
          CHECK(ok);
        }
      }
    }
  }
}

TEST_CASE("the products are not loose: a wrong reduction length is caught by the bound") {
  // Guards the test above against a bound so wide it passes anything: dropping
  // the last reduction term moves the result far outside γ_n·Σ|e||p|.
  const index_t m = 9, n = 1025, l = 17;
  const matrix_rm e = random_rm(m, n, 3);
  const Eigen::MatrixXf pm = random_cm(n, l, 4);
  const thin::thin_panel p(pm);
  Eigen::MatrixXf short_pm = pm;
  short_pm.row(n - 1).setZero();
  const thin::thin_panel ps(short_pm);
  auto y = output(m, p.ld);
  thin::rows_times_panel(e.data(), n, m, ps, y.data(), ps.ld);
  const Eigen::MatrixXd want = e.cast<double>() * pm.cast<double>();
  const Eigen::MatrixXd bound =
      gamma_n(double(n), kUnitFloat) * (e.cast<double>().cwiseAbs() * pm.cast<double>().cwiseAbs());
  const Eigen::MatrixXf got = thin::unpad(y, m, l, ps.ld);
  int outside = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < l; ++j) outside += std::fabs(double(got(i, j)) - want(i, j)) > bound(i, j);
  CHECK(outside > m * l / 2);
}

TEST_CASE("residual_band: Σe², Σd², Σdq² and their w-weighted sums within the derived bound") {
  for (index_t in : {1, 15, 16, 17, 100, 257, 600}) {
    for (index_t k : {0, 1, 3, 32}) {
      for (bool weighted : {false, true}) {
        CAPTURE(in);
        CAPTURE(k);
        CAPTURE(weighted);
        const index_t out = 11, r0 = 2, r1 = 9;  // a band in the middle: rows outside must not count
        const matrix_rm e = random_rm(out, in, static_cast<std::uint64_t>(in * 3 + k));
        const matrix_rm a = random_rm(in, k, 5) * 0.3f, aq = random_rm(in, k, 6) * 0.3f;
        const matrix_rm b = random_rm(k, out, 7) * 0.3f, bq = random_rm(k, out, 8) * 0.3f;
        Eigen::VectorXf w = random_rm(in, 1, 9).cwiseAbs() * 4.0f;
        const matrix_rm at = a.transpose(), aqt = aq.transpose();
        const thin::residual_factors f{k, in, out, at.data(), aqt.data(), b.data(), bq.data()};
        const thin::band_sums got = thin::residual_band(e.data(), in, r0, r1, f, weighted ? w.data() : nullptr);

        const auto check = [&](double got_plain, double got_w, const matrix_rm& am, const matrix_rm& bm) {
          double want = 0, want_w = 0, tol = 0, tol_w = 0, sum_f = 0;
          for (index_t r = r0; r < r1; ++r)
            for (index_t c = 0; c < in; ++c) {
              double p = 0, pa = 0;
              for (index_t t = 0; t < k; ++t) {
                p += double(am(c, t)) * double(bm(t, r));
                pa += std::fabs(double(am(c, t)) * double(bm(t, r)));
              }
              const double d = double(e(r, c)) - p;
              const double delta = gamma_n(double(k + 1), kUnitFloat) * (std::fabs(double(e(r, c))) + pa);
              const double wc = weighted ? double(w(c)) : 0.0;
              want += d * d, want_w += wc * d * d;
              tol += 2 * std::fabs(d) * delta + delta * delta;
              tol_w += wc * (2 * std::fabs(d) * delta + delta * delta);
              sum_f += (std::fabs(d) + delta) * (std::fabs(d) + delta) * (1 + wc);
            }
          const double n_terms = double((r1 - r0) * in);
          CHECK(std::fabs(got_plain - want) <= tol + gamma_n(n_terms, kUnitDouble) * sum_f);
          if (weighted)
            CHECK(std::fabs(got_w - want_w) <= tol_w + gamma_n(n_terms, kUnitDouble) * sum_f);
          else
            CHECK(got_w == 0.0);
        };
        matrix_rm zero_a = matrix_rm::Zero(in, k);
        check(got.e2, got.we2, zero_a, b);
        if (k > 0) {
          check(got.d2, got.wd2, a, b);
          check(got.dq2, got.wdq2, aq, bq);
        } else {
          CHECK(got.d2 == 0.0);  // k = 0: the caller takes d = e
          CHECK(got.dq2 == 0.0);
        }
      }
    }
  }
}
