// activation_stats: exact values on a hand example, streaming = one-shot,
// merged = single, and every error path.
//
// Tolerances: every statistic is a sum of T terms that are exact in double
// (|x| and x² of a float, and x_i·x_j, a 48-bit product). Two summation orders
// of the same terms each lie within γ_T·Σ|terms| of the exact sum, so they
// differ by at most 2γ_T·Σ|terms| (γ_T with double's u = 2^-53). The per-batch
// maxima and the counts are not sums over different orders and must agree
// bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "factorize/synthetic.hpp"
#include "lqer/calib/activation_stats.hpp"

using namespace lqer;
using lqer::test::gamma_n;
using lqer::test::kUnitDouble;

namespace {
matrix_view<const float> rows_of(const matrix_rm& x, index_t r0, index_t n) {
  return matrix_view<const float>(x.data() + r0 * x.cols(), n, static_cast<index_t>(x.cols()));
}
}  // namespace

TEST_CASE("hand example: every statistic") {
  // Two batches of a 3-channel layer.
  const float b0[] = {1, -2, 0,  //
                      3, 4, 0};
  const float b1[] = {-5, 0, 0};
  activation_stats s(3, gram_mode::on);
  s.add_batch(matrix_view<const float>(b0, 2, 3));
  s.add_batch(matrix_view<const float>(b1, 1, 3));
  CHECK(s.tokens() == 3);
  CHECK(s.batches() == 2);
  // batch means of |x|: (2, 3, 0) and (5, 0, 0) → max (5, 3, 0).
  CHECK(s.batch_mean_abs_max() == std::vector<double>{5.0, 3.0, 0.0});
  CHECK(s.mean_abs() == std::vector<double>{3.0, 2.0, 0.0});
  CHECK(s.mean_square() == std::vector<double>{35.0 / 3, 20.0 / 3, 0.0});
  CHECK(s.rms()[0] == doctest::Approx(std::sqrt(35.0 / 3)).epsilon(1e-15));
  const Eigen::MatrixXd r = s.gram();
  Eigen::MatrixXd want(3, 3);
  want << 35, 10, 0,  //
      10, 20, 0,      //
      0, 0, 0;
  want /= 3;
  CHECK((r - want).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("streaming equals one-shot, and merged equals single") {
  const index_t tokens = 300, in = 40;
  const matrix_rm x = test::llm_like_activations(tokens, in, 2, 7);
  const index_t cuts[] = {0, 13, 50, 51, 120, 200, 257, 300};  // 7 batches of uneven sizes

  activation_stats one(in, gram_mode::on);
  one.add_batch(x);
  activation_stats stream(in, gram_mode::on), first(in, gram_mode::on), second(in, gram_mode::on);
  std::vector<double> batch_max(static_cast<std::size_t>(in), 0.0);
  for (int b = 0; b + 1 < 8; ++b) {
    const auto v = rows_of(x, cuts[b], cuts[b + 1] - cuts[b]);
    stream.add_batch(v);
    (b < 3 ? first : second).add_batch(v);
    for (index_t c = 0; c < in; ++c) {
      long double sum = 0;  // an independent per-batch mean
      for (index_t t = cuts[b]; t < cuts[b + 1]; ++t) sum += std::fabs(static_cast<long double>(x(t, c)));
      batch_max[static_cast<std::size_t>(c)] =
          std::max(batch_max[static_cast<std::size_t>(c)], static_cast<double>(sum / (cuts[b + 1] - cuts[b])));
    }
  }
  activation_stats merged = first;
  merged.merge(second);

  // One batch: the per-batch statistic is the global mean, bit for bit.
  CHECK(one.batch_mean_abs_max() == one.mean_abs());

  const double g2 = 2 * gamma_n(double(tokens), kUnitDouble);
  const Eigen::MatrixXd abs_x = x.cast<double>().cwiseAbs();
  const Eigen::MatrixXd gram_bound = g2 * (abs_x.transpose() * abs_x) / double(tokens);
  for (const activation_stats* s : {&stream, &merged}) {
    CHECK(s->tokens() == tokens);
    CHECK(s->batches() == 7);
    const auto ma = s->mean_abs(), ma1 = one.mean_abs(), ms = s->mean_square(), ms1 = one.mean_square();
    for (index_t c = 0; c < in; ++c) {
      const auto u = static_cast<std::size_t>(c);
      CHECK(std::fabs(ma[u] - ma1[u]) <= g2 * ma1[u]);
      CHECK(std::fabs(ms[u] - ms1[u]) <= g2 * ms1[u]);
      // The per-batch means are computed from the same batches in both: equal bits.
      CHECK(s->batch_mean_abs_max()[u] == stream.batch_mean_abs_max()[u]);
      // ... and equal to the independent long-double computation up to one
      // rounding of a T-term double sum.
      CHECK(std::fabs(s->batch_mean_abs_max()[u] - batch_max[u]) <= g2 * batch_max[u]);
    }
    CHECK(((s->gram() - one.gram()).cwiseAbs().array() <= gram_bound.array()).all());
  }
  // The per-batch statistic really is per batch: here it exceeds the global mean.
  CHECK(stream.batch_mean_abs_max()[3] > one.mean_abs()[3] * (1 + 1e-3));
}

TEST_CASE("merge with a default-constructed accumulator, and the Eigen overload") {
  const matrix_rm x = test::llm_like_activations(20, 8, 1, 3);
  activation_stats a(8), empty;
  a.add_batch(x);
  activation_stats b;
  b.merge(a);  // takes a's shape
  CHECK(b.in_features() == 8);
  CHECK(b.mean_abs() == a.mean_abs());
  a.merge(empty);  // no-op
  CHECK(a.tokens() == 20);

  activation_stats c(8);
  const Eigen::MatrixXf col_major = x;  // a different layout, same values
  c.add_batch(col_major);
  CHECK(c.mean_abs() == a.mean_abs());
  CHECK(c.batch_mean_abs_max() == a.batch_mean_abs_max());
}

TEST_CASE("errors name what is wrong, and leave the accumulator unchanged") {
  matrix_rm x = matrix_rm::Ones(4, 5);
  activation_stats s(5, gram_mode::on);
  s.add_batch(x);
  x(2, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(s.add_batch(x), "activation_stats: batch 1: element (2, 3) is NaN", value_error);
  x(2, 3) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(s.add_batch(x), "activation_stats: batch 1: element (2, 3) is -Inf", value_error);
  CHECK(s.tokens() == 4);
  CHECK(s.batches() == 1);
  CHECK(s.mean_abs() == std::vector<double>(5, 1.0));

  const matrix_rm narrow = matrix_rm::Ones(4, 6);
  CHECK_THROWS_AS(s.add_batch(narrow), shape_error);
  CHECK_THROWS_AS(s.add_batch(matrix_view<const float>(x.data(), 0, 5)), shape_error);
  CHECK_THROWS_AS(activation_stats(0), value_error);
  CHECK_THROWS_AS(activation_stats().add_batch(x), shape_error);

  activation_stats other(6), no_gram(5);
  CHECK_THROWS_AS(s.merge(other), shape_error);
  CHECK_THROWS_AS(s.merge(no_gram), shape_error);
  CHECK_THROWS_AS(no_gram.gram(), value_error);
  CHECK_THROWS_AS(no_gram.mean_abs(), value_error);  // no tokens
}
