// The compiled companions lqer::offline and lqer::kernels (issue #18), built
// twice from this one file: test_companions links them, test_header_only does
// not (LQER_TEST_HEADER_ONLY). The same checks then run once on the
// libraries' explicit instantiations and once on the header-only templates,
// for every policy × solver and every layer type the libraries list (the
// tests iterate the headers' own lists, so a new entry is tested without an
// edit here), plus a combination no list holds.
//
// What must hold either way:
//   * factorize: the report's residual after the rank-k correction is below
//     the plain quantization error (Eckart–Young: the truncated SVD of L·Eqᵀ
//     can only lower ‖L·(Eqᵀ − A B)‖; the weight-space residual with L = I),
//     and A, B have the asked shape;
//   * linear: equal bit for bit to reference_forward(fused) on every path this
//     CPU runs (the kernels' contract, linear.hpp).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kernel/kernel_test_util.hpp"
#include "lqer/calib/activation_stats.hpp"
#include "lqer/factorize/factorize.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"

#if defined(LQER_TEST_HEADER_ONLY)
#if defined(LQER_OFFLINE_LIBRARY) || defined(LQER_KERNELS_LIBRARY)
#error "test_header_only must not link the companions: it checks lqer without them"
#endif
#else
#if !defined(LQER_OFFLINE_LIBRARY) || !defined(LQER_KERNELS_LIBRARY)
#error "test_companions must link lqer::offline and lqer::kernels (which define these macros)"
#endif
#endif

namespace {

using lqer::index_t;
using lqer::matrix_view;
using lqer_test::random_matrix;

constexpr index_t kOut = 48, kIn = 96, kTokens = 200, kRank = 8;

const std::vector<float>& weight() {
  static const std::vector<float> w = random_matrix(kOut, kIn, 0.05f, 11);
  return w;
}
const lqer::activation_stats& stats() {
  static const lqer::activation_stats s = [] {
    const std::vector<float> x = random_matrix(kTokens, kIn, 1.0f, 12, /*outliers=*/true);
    lqer::activation_stats st(kIn, lqer::gram_mode::on);
    st.add_batch(matrix_view<const float>(x.data(), kTokens, kIn));
    return st;
  }();
  return s;
}

template <class Policy, class Solver, class W = lqer::default_weight_format,
          class Lr = lqer::default_lowrank_format>
void check_factorize() {
  const auto r = lqer::factorize<Policy, Solver, W, Lr>(matrix_view<const float>(weight().data(), kOut, kIn),
                                                         stats(), kRank);
  INFO("policy " << Policy::kName << ", solver " << Solver::kName << ", " << W::name() << " / " << Lr::name());
  CHECK(r.layer.rank() == kRank);
  CHECK(r.layer.a.rows() == kIn);
  CHECK(r.layer.b.cols() == kOut);
  CHECK(r.report.singular_values.size() == std::size_t(kRank));
  CHECK(r.report.error_norm > 0);
  if (std::string(Policy::kName) == "identity") CHECK(r.report.residual_norm < r.report.error_norm);
  CHECK(r.report.activation_basis == "gram");
  CHECK(r.report.activation_residual < r.report.activation_error);
}

template <class P>
void check_linear() {
  using W = typename P::weight_format;
  using Lr = typename P::lowrank_format;
  using Act = typename P::activation_format;
  constexpr index_t M = 5, N = 40, K = 4 * P::kBlock;  // N: a partial tile of 16-output groups
  const auto layer = lqer_test::random_layer<W, Lr>(N, K, 16, /*bias=*/true, 21);
  const P packed = lqer::pack<Act>(layer);
  const std::vector<float> x = random_matrix(M, K, 1.0f, 22, /*outliers=*/true);
  std::vector<float> want(M * N), got(M * N);
  lqer::reference_forward<Act>(layer, matrix_view<const float>(x.data(), M, K),
                               matrix_view<float>(want.data(), M, N), lqer::correction_mode::fused);
  for (const auto path : lqer_test::paths_to_test()) {
    INFO("path " << lqer::to_string(path) << ", " << W::name());
    lqer::linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(got.data(), M, N),
                 lqer::serial_executor{}, path);
    std::string first;
    CHECK_MESSAGE(lqer_test::count_mismatches(got, want, N, &first) == 0, first);
  }
}

}  // namespace

TEST_CASE("factorize: every policy x solver the offline library lists") {
#define LQER_TEST_SOLVERS_FOR(P)                                  \
  {                                                               \
    using policy_type = P;                                        \
    LQER_OFFLINE_SOLVERS(LQER_TEST_FACTORIZE)                     \
  }
#define LQER_TEST_FACTORIZE(S) check_factorize<policy_type, S>();
  using namespace lqer;
  LQER_OFFLINE_POLICIES(LQER_TEST_SOLVERS_FOR)
#undef LQER_TEST_FACTORIZE
#undef LQER_TEST_SOLVERS_FOR
}

TEST_CASE("factorize: a format combination no library holds compiles header-only") {
  using W = lqer::mxint<3, 32, lqer::mx_rule::ocp>;
  using Lr = lqer::mxint<6, 32, lqer::mx_rule::ocp>;
  check_factorize<lqer::policy::rms, lqer::exact_svd, W, Lr>();
  check_factorize<lqer::policy::whiten, lqer::randomized_svd, W, Lr>();
}

TEST_CASE("linear: every layer type the kernels library lists, on every path") {
#define LQER_TEST_LINEAR(P) check_linear<P>();
  using namespace lqer;
  LQER_KERNELS_LAYERS(LQER_TEST_LINEAR)
#undef LQER_TEST_LINEAR
}

TEST_CASE("linear: a layer type no library holds compiles header-only") {
  check_linear<lqer::packed_layer<lqer::mxint<3, 16, lqer::mx_rule::lqer>, lqer::mxint<4, 16, lqer::mx_rule::lqer>,
                                  lqer::mxint<8, 16, lqer::mx_rule::lqer>>>();
}
