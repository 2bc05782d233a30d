// build_cost: only factorize<mean_abs, randomized_svd> for the default formats.
#include <lqer/factorize/factorize.hpp>

lqer::factorize_result<lqer::default_weight_format, lqer::default_lowrank_format> run(
    lqer::matrix_view<const float> w, const lqer::activation_stats& stats) {
  return lqer::factorize<lqer::policy::mean_abs, lqer::randomized_svd>(w, stats, 8);
}
