// build_cost: one linear() instantiation (default formats, serial executor).
#include <lqer/lqer.hpp>

void run(const lqer::packed_layer<lqer::default_weight_format>& p, lqer::matrix_view<const float> x,
         lqer::matrix_view<float> y) {
  lqer::linear(p, x, y);
}
