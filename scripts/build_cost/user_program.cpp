// build_cost: the 25-line user program (calibrate, factorize, pack, linear)
// Calibrates, factorizes one layer (whiten, randomized), packs it and calls
// linear, all in one translation unit.
#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/lqer.hpp>

#include <cstdio>
#include <vector>

int main() {
  const lqer::index_t in = 256, out = 128, tokens = 64;
  std::vector<float> w(static_cast<std::size_t>(out * in)), x(static_cast<std::size_t>(tokens * in));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 7919) % 201) / 100.0f - 1.0f;
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 104729) % 199) / 99.0f - 1.0f;
  lqer::activation_stats stats(in, lqer::gram_mode::on);
  stats.add_batch(lqer::matrix_view<const float>(x.data(), tokens, in));
  const auto f = lqer::factorize<lqer::policy::whiten, lqer::randomized_svd>(
      lqer::matrix_view<const float>(w.data(), out, in), stats, 8);
  const auto packed = lqer::pack(f.layer);
  std::vector<float> y(static_cast<std::size_t>(tokens * out));
  lqer::linear(packed, lqer::matrix_view<const float>(x.data(), tokens, in),
               lqer::matrix_view<float>(y.data(), tokens, out));
  std::printf("%g\n", static_cast<double>(y[0]));
}
