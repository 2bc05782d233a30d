// A program that links the compiled companions lqer::offline and lqer::kernels
// (issue #18) the way a user's CMake project does. It factorizes a small layer
// (the default formats, L²QER), packs it and checks linear() against
// reference_forward bit for bit and the correction against the plain error.
#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/layer/reference_forward.hpp>
#include <lqer/lqer.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

#if !defined(LQER_OFFLINE_LIBRARY) || !defined(LQER_KERNELS_LIBRARY)
#error "linking lqer::offline and lqer::kernels must define LQER_OFFLINE_LIBRARY and LQER_KERNELS_LIBRARY"
#endif

int main() {
  const lqer::index_t out = 32, in = 64, tokens = 96;
  std::vector<float> w(static_cast<std::size_t>(out * in)), x(static_cast<std::size_t>(tokens * in));
  // Deterministic, irregular values (no <random>: its distributions differ between standard libraries).
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 7919) % 201) / 4000.0f - 0.025f;
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 104729) % 199) / 99.0f - 1.0f;
  lqer::activation_stats stats(in);
  stats.add_batch(lqer::matrix_view<const float>(x.data(), tokens, in));
  const auto f = lqer::factorize<lqer::policy::mean_abs, lqer::randomized_svd>(
      lqer::matrix_view<const float>(w.data(), out, in), stats, 8);
  if (!(f.report.activation_residual < f.report.activation_error)) {
    std::printf("consumer_compiled: the rank-8 correction did not lower the error\n");
    return 1;
  }
  const auto packed = lqer::pack(f.layer);
  std::vector<float> y(static_cast<std::size_t>(tokens * out)), ref(y.size());
  lqer::linear(packed, lqer::matrix_view<const float>(x.data(), tokens, in),
               lqer::matrix_view<float>(y.data(), tokens, out));
  lqer::reference_forward(f.layer, lqer::matrix_view<const float>(x.data(), tokens, in),
                          lqer::matrix_view<float>(ref.data(), tokens, out));
  if (std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) != 0) {
    std::printf("consumer_compiled: linear() differs from reference_forward\n");
    return 1;
  }
  std::printf("consumer_compiled: factorize + linear through lqer::offline and lqer::kernels ok\n");
  return 0;
}
