// linear() in a translation unit compiled with -ffast-math (issue #19). The
// library is header-only, so an engine's flags apply to it: under
// -ffinite-math-only, std::isfinite and `|x| < Inf` may fold to "finite", and
// the AVX2 and generic paths then quantized a NaN input without a word. Every
// non-finite check in the prologues is a bit test for that reason; this TU
// checks on every usable path that NaN and ±Inf are still refused with the
// element named and y untouched, and that finite inputs give the same y as
// the reference forward (compiled in this TU too, with the same flags).
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"

#if !defined(__FAST_MATH__)
#error "this test must be compiled with -ffast-math (tests/kernel/CMakeLists.txt)"
#endif

using namespace lqer;
using namespace lqer_test;

namespace {
// Built from bits: under -ffast-math the compiler may assume the literals
// std::numeric_limits<float>::quiet_NaN() and infinity() never occur.
float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }
}  // namespace

TEST_CASE("linear under -ffast-math: NaN and ±Inf in x are refused on every path, y untouched") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  // K = 300: 18 whole blocks of 16 (one whole group of 16 blocks for the
  // AVX-512 prologue's 16-at-a-time path) and a partial tail block of 12.
  const index_t M = 3, K = 300, N = 24;
  const auto layer = random_layer<W, Lr>(N, K, 16, true, 950);
  const auto packed = pack<Act>(layer);
  const auto x = random_matrix(M, K, 1.0f, 951);
  struct bad_value {
    std::uint32_t bits;
    const char* name;
  };
  const bad_value bads[] = {{0x7fc00000u, "NaN"}, {0xffc00001u, "NaN"}, {0x7f800000u, "+Inf"}, {0xff800000u, "-Inf"}};
  for (kernel_path path : paths_to_test())
    for (const bad_value& bad : bads)
      for (index_t col : {index_t{0}, index_t{37}, index_t{255}, index_t{290}, K - 1}) {
        INFO("path=" << std::string(to_string(path)) << " value=" << std::string(bad.name) << " column " << col);
        auto xb = x;
        xb[static_cast<std::size_t>(1 * K + col)] = from_bits(bad.bits);
        std::vector<float> y(static_cast<std::size_t>(M * N), 7.0f);
        std::string what;
        try {
          linear(packed, matrix_view<const float>(xb.data(), M, K), matrix_view<float>(y.data(), M, N),
                 serial_executor{}, path);
        } catch (const value_error& e) {
          what = e.what();
        }
        CHECK(what.find("(1, " + std::to_string(col) + ") is " + bad.name) != std::string::npos);
        bool untouched = true;
        for (float v : y) untouched &= std::bit_cast<std::uint32_t>(v) == std::bit_cast<std::uint32_t>(7.0f);
        CHECK(untouched);
      }
}

TEST_CASE("linear under -ffast-math: finite x gives the reference's y on every path, within the float sums' bound") {
  using W = mxint<4, 32, mx_rule::ocp>;
  using Lr = mxint<8, 32, mx_rule::ocp>;
  using Act = mxint<8, 32, mx_rule::ocp>;
  const index_t M = 5, K = 1000, N = 40, R = 32;
  const auto layer = random_layer<W, Lr>(N, K, R, true, 960);
  const auto packed = pack<Act>(layer);
  const auto x = random_matrix(M, K, 1.0f, 961, /*outliers=*/true);
  std::vector<float> want(static_cast<std::size_t>(M * N));
  reference_forward<Act>(layer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(want.data(), M, N),
                         correction_mode::fused);

  // Not bit-identical: -ffast-math lets the compiler reassociate and contract
  // the float sums over blocks, differently in the kernel and in the reference
  // (clang -O1 on the AVX2 path differed in 72 of 200 elements). Every block's
  // product is exact (integer dot × power-of-two scales), so the two can differ
  // by the summation error of n terms, at most n·u·S each, S = Σ|terms|, and by
  // t = Q8(xq·A) rounding a near-tie the other way: one step of t's block
  // (≤ 2^-6 of its largest |t|) times |B|.
  std::vector<float> xq(x.size());
  fake_quantize<Act>(matrix_view<const float>(x.data(), M, K), matrix_view<float>(xq.data(), M, K));
  const auto wd = layer.wq.dequantize(), ad = layer.a.dequantize(), bd = layer.b.dequantize();
  const double u = 0x1p-24, n = double(K / 32 + 1) + double(R / 32 + 1) + 2;
  std::vector<double> tol(want.size());
  for (index_t i = 0; i < M; ++i) {
    std::vector<double> t(static_cast<std::size_t>(R));
    double t_max = 0;
    for (index_t r = 0; r < R; ++r) {
      for (index_t k = 0; k < K; ++k)
        t[static_cast<std::size_t>(r)] +=
            std::abs(double(xq[static_cast<std::size_t>(i * K + k)]) * ad[static_cast<std::size_t>(k * R + r)]);
      t_max = std::max(t_max, t[static_cast<std::size_t>(r)]);
    }
    for (index_t j = 0; j < N; ++j) {
      double s = std::abs(double(layer.bias[static_cast<std::size_t>(j)])), b_abs = 0;
      for (index_t k = 0; k < K; ++k)
        s += std::abs(double(xq[static_cast<std::size_t>(i * K + k)]) * wd[static_cast<std::size_t>(j * K + k)]);
      for (index_t r = 0; r < R; ++r) {
        const double b = std::abs(double(bd[static_cast<std::size_t>(r * N + j)]));
        s += (t[static_cast<std::size_t>(r)] * (1 + 0x1p-6) + t_max * 0x1p-6) * b;
        b_abs += b;
      }
      tol[static_cast<std::size_t>(i * N + j)] = 2 * n * u * s + t_max * 0x1p-6 * b_abs;
    }
  }
  for (kernel_path path : paths_to_test()) {
    INFO("path=" << std::string(to_string(path)));
    std::vector<float> got(want.size());
    linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(got.data(), M, N), serial_executor{},
           path);
    index_t bad = 0, exact = 0;
    double worst = 0;
    for (std::size_t e = 0; e < got.size(); ++e) {
      const double d = std::abs(double(got[e]) - double(want[e]));
      bad += !(d <= tol[e]);  // a NaN fails too
      exact += d == 0;
      worst = std::max(worst, d / tol[e]);
    }
    MESSAGE(std::string(to_string(path)) << ": " << exact << " of " << got.size()
                                         << " bit-identical, worst |diff| / bound " << worst);
    CHECK(bad == 0);
  }
}
