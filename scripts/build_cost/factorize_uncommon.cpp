// build_cost: factorize<rms, exact_svd> with formats no list names (MXINT3 / MXINT6, block 32)
// The companion still holds the policy's weighting and the solver; the
// formats' encoders compile here.
#include <lqer/factorize/factorize.hpp>

using W = lqer::mxint<3, 32, lqer::mx_rule::ocp>;
using Lr = lqer::mxint<6, 32, lqer::mx_rule::ocp>;

lqer::factorize_result<W, Lr> run(lqer::matrix_view<const float> w, const lqer::activation_stats& stats) {
  return lqer::factorize<lqer::policy::rms, lqer::exact_svd, W, Lr>(w, stats, 8);
}
