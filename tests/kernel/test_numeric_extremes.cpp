// Numeric extremes (issue 7) through the quantized_matrix, reference forward
// and kernel layers: a 2^20-long reduction with the extreme codes, inputs near
// FLT_MAX, subnormals, all-zero rows and blocks, a single huge outlier in a
// block, and E8M0 exponent saturation at both ends. The format layer's own
// rules for these are tested in tests/format/test_mxint.cpp; params.hpp
// ("int32 bounds") carries the overflow argument these tests check.
//
// Kernel vs reference is exact equality (same bits, or both NaN): see
// test_linear.cpp for why that is the right test. Where a result is also
// checked against a value computed in double, the bound is the standard one
// for recursive float summation of n terms t_i (Higham, Accuracy and Stability
// of Numerical Algorithms, §4.2): |fl(Σ t_i) − Σ t_i| ≤ γ_{n−1} Σ|t_i| with
// γ_n = n·u / (1 − n·u), u = 2^-24 — each term dot·2^E itself being exact.
#include <doctest/doctest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"

using namespace lqer;
using namespace lqer_test;

namespace {

using W4 = mxint<4, 16, mx_rule::lqer>;
using Lr8 = mxint<8, 16, mx_rule::lqer>;
using Act8 = mxint<8, 16, mx_rule::lqer>;

/// linear() on every usable path vs reference_forward(fused); returns the reference's y.
template <class Act, class W, class Lr>
std::vector<float> check_paths(const lqer_layer<W, Lr>& layer, const std::vector<float>& x, index_t M,
                               const std::string& what) {
  const index_t K = layer.in_features(), N = layer.out_features();
  std::vector<float> want(static_cast<std::size_t>(M * N));
  reference_forward<Act>(layer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(want.data(), M, N),
                         correction_mode::fused);
  const auto packed = pack<Act>(layer);
  for (kernel_path path : paths_to_test()) {
    std::vector<float> got(want.size(), -12345.0f);
    linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(got.data(), M, N), serial_executor{},
           path);
    std::string first;
    const index_t bad = count_mismatches(got, want, N, &first);
    INFO(what << " path=" << std::string(to_string(path)) << " first mismatch " << first);
    CHECK(bad == 0);
  }
  return want;
}

/// A layer with the given weight (and no correction unless A, B are given).
template <class W, class Lr>
lqer_layer<W, Lr> layer_of(const std::vector<float>& w, index_t N, index_t K) {
  lqer_layer<W, Lr> layer;
  layer.wq = quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
  return layer;
}

double gamma_n(double n) {
  const double u = std::ldexp(1.0, -24);
  return n * u / (1.0 - n * u);
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("K = 2^20 with the extreme codes: no int32 overflow, linear == reference, y == the exact sum within gamma") {
  // Every activation code ±127 (the LQER rule's largest magnitude; both rules
  // clamp symmetrically, so −128 never occurs) and every weight code ±7 (the
  // stored nibble u = q + 8 at its extremes 15 and 1): 0.99 → e = 0,
  // m = round(0.99·2^7) = 127 and round(0.99·2^3) = 8 → 7. Every block's
  // dot is then ±127·7·16 = ±14224 and, in the u8×s8 form, the int32
  // accumulator runs from −8·Σqx = ∓16256 to ±30480: the per-block bound of
  // params.hpp, whatever K is. K only counts blocks (65536 of them here),
  // summed in float.
  constexpr index_t K = index_t{1} << 20, N = 16, M = 4, R = 16;
  std::vector<float> w(static_cast<std::size_t>(N * K));
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k) w[static_cast<std::size_t>(n * K + k)] = (n % 2 == 0) ? 0.99f : -0.99f;
  // Rows: all +, all −, alternating by block (the sum cancels), alternating by element.
  std::vector<float> x(static_cast<std::size_t>(M * K));
  for (index_t k = 0; k < K; ++k) {
    x[static_cast<std::size_t>(0 * K + k)] = 0.99f;
    x[static_cast<std::size_t>(1 * K + k)] = -0.99f;
    x[static_cast<std::size_t>(2 * K + k)] = (k / 16) % 2 == 0 ? 0.99f : -0.99f;
    x[static_cast<std::size_t>(3 * K + k)] = k % 2 == 0 ? 0.99f : -0.99f;
  }
  {
    const auto layer = layer_of<W4, Lr8>(w, N, K);
    REQUIRE(layer.wq.code(0, 0) == 7);
    REQUIRE(layer.wq.code(1, 5) == -7);
    const auto y = check_paths<Act8>(layer, x, M, "K=2^20 rank 0");
    // The exact result in double: x̂ = ±127/128, ŵ = ±7/8, so each block term is
    // ±14224·2^-10 exactly and the sum of 65536 of them is exact in double.
    const double term = 127.0 / 128.0 * 7.0 / 8.0 * 16.0;
    const double nblk = double(K / 16);
    for (index_t n = 0; n < N; ++n) {
      const double sw = n % 2 == 0 ? 1.0 : -1.0;
      const double exact[M] = {sw * term * nblk, -sw * term * nblk, 0.0, 0.0};
      for (index_t m = 0; m < M; ++m) {
        const double got = y[static_cast<std::size_t>(m * N + n)];
        CAPTURE(m);
        CAPTURE(n);
        CHECK(std::abs(got - exact[m]) <= gamma_n(nblk - 1) * term * nblk);
      }
      // Rows 2 and 3 cancel exactly: partial sums alternate between ±term and 0.
      CHECK(y[static_cast<std::size_t>(2 * N + n)] == 0.0f);
      CHECK(y[static_cast<std::size_t>(3 * N + n)] == 0.0f);
    }
  }
  {
    // The same codes under scales outside the magic window (params.hpp): x·2^70
    // and W·2^50 give E = 70 + 50 − 7 − 3 = 110 > 104, so every path takes the
    // exact scale mode with the same extreme int32 accumulators. Rows 0 and 1
    // now overflow float (65536 terms of 14224·2^110 ≈ 2^123.8): ±Inf like the
    // reference; rows 2 and 3 still cancel to exactly 0.
    std::vector<float> wb = w, xb = x;
    for (float& v : wb) v = std::ldexp(v, 50);
    for (float& v : xb) v = std::ldexp(v, 70);
    const auto layer = layer_of<W4, Lr8>(wb, N, K);
    REQUIRE(layer.wq.code(0, 0) == 7);
    const auto y = check_paths<Act8>(layer, xb, M, "K=2^20 rank 0, exact scale mode");
    for (index_t n = 0; n < N; ++n) {
      const float sw = n % 2 == 0 ? 1.0f : -1.0f;
      CHECK(y[static_cast<std::size_t>(0 * N + n)] == sw * std::numeric_limits<float>::infinity());
      CHECK(y[static_cast<std::size_t>(1 * N + n)] == -sw * std::numeric_limits<float>::infinity());
      CHECK(y[static_cast<std::size_t>(2 * N + n)] == 0.0f);
      CHECK(y[static_cast<std::size_t>(3 * N + n)] == 0.0f);
    }
  }
  {
    // With a rank-16 correction of extreme codes too: u = Q(x)·A is a 2^20-long
    // reduction of ±127·127 products (|u| ≈ 2^20, finite), t = Q(u) saturates
    // to ±127 codes, and t·B adds one block of ±127·127 per output.
    auto layer = layer_of<W4, Lr8>(w, N, K);
    std::vector<float> a(static_cast<std::size_t>(K * R)), b(static_cast<std::size_t>(R * N));
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = (i % 3 == 0) ? -0.99f : 0.99f;
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = (i % 2 == 0) ? 0.99f : -0.99f;
    layer.a = quantized_matrix<Lr8>::quantize(matrix_view<const float>(a.data(), K, R), block_axis::rows);
    layer.b = quantized_matrix<Lr8>::quantize(matrix_view<const float>(b.data(), R, N), block_axis::rows);
    REQUIRE(layer.a.code(0, 0) == -127);
    REQUIRE(layer.b.code(0, 0) == 127);
    const auto y = check_paths<Act8>(layer, x, M, "K=2^20 rank 16");
    for (float v : y) CHECK(std::isfinite(v));
  }
}

TEST_CASE("K = 2^20 in blocks of 1024 (the largest mxint block) with 8-bit extreme codes: the int32 bound at its maximum") {
  // W8A8, every code ±127: per block |dot| = 127·127·1024 = 16516096 < 2^24,
  // and the u8×s8 accumulator runs from −128·Σqx = ∓16646144 to ±33030144
  // (< 2^26, params.hpp). Blocks > 256 take the exact scale mode.
  using W = mxint<8, 1024, mx_rule::lqer>;
  using Lr = mxint<8, 1024, mx_rule::lqer>;
  using Act = mxint<8, 1024, mx_rule::lqer>;
  constexpr index_t K = index_t{1} << 20, N = 16, M = 2;
  std::vector<float> w(static_cast<std::size_t>(N * K)), x(static_cast<std::size_t>(M * K));
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k) w[static_cast<std::size_t>(n * K + k)] = (n % 2 == 0) ? 0.99f : -0.99f;
  for (index_t k = 0; k < K; ++k) {
    x[static_cast<std::size_t>(k)] = 0.99f;
    x[static_cast<std::size_t>(K + k)] = -0.99f;
  }
  const auto layer = layer_of<W, Lr>(w, N, K);
  REQUIRE(layer.wq.code(0, 0) == 127);
  const auto y = check_paths<Act>(layer, x, M, "K=2^20 block 1024");
  // Each block term is ±(127/128)²·1024 exactly; 1024 of them summed in float.
  const double term = 127.0 / 128.0 * 127.0 / 128.0 * 1024.0, nblk = double(K / 1024);
  for (index_t n = 0; n < N; ++n)
    for (index_t m = 0; m < M; ++m) {
      const double sign = (n % 2 == 0) == (m == 0) ? 1.0 : -1.0;
      CHECK(std::abs(double(y[static_cast<std::size_t>(m * N + n)]) - sign * term * nblk) <=
            gamma_n(nblk - 1) * term * nblk);
    }
}

TEST_CASE("inputs near FLT_MAX: finite when the product is representable, ±Inf like the reference when not") {
  constexpr index_t K = 64, N = 32, M = 3;
  const float big = std::numeric_limits<float>::max();
  // x near FLT_MAX, weights ~2^-40: y ≈ 2^88, finite. One block at FLT_MAX
  // exactly: the LQER rule's exponent would be ceil(log2 FLT_MAX) = 128,
  // saturated to E8M0's 127 (see format/mxint.hpp), the code clamps to 127.
  std::vector<float> x(static_cast<std::size_t>(M * K));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = (i % 5 == 0 ? -1.0f : 1.0f) * big * (0.5f + 0.5f * float(i % 7) / 7.0f);
  for (index_t k = 16; k < 32; ++k) x[static_cast<std::size_t>(k)] = big;
  auto w = random_matrix(N, K, std::ldexp(1.0f, -40), 700);
  {
    const auto layer = layer_of<W4, Lr8>(w, N, K);
    const auto y = check_paths<Act8>(layer, x, M, "x near FLT_MAX, small w");
    for (float v : y) CHECK(std::isfinite(v));
    // Activation quantization of x itself: every dequantized value finite and
    // the saturated block decodes to 127·2^(127−7).
    const auto xq = quantized_matrix<Act8>::quantize(matrix_view<const float>(x.data(), M, K), block_axis::cols);
    CHECK(xq.scale(0, 16).exponent() == 127);
    CHECK(xq.code(0, 16) == 127);
    CHECK(xq.value(0, 16) == std::ldexp(127.0f, 120));
    for (float v : xq.dequantize()) CHECK(std::isfinite(v));
  }
  {
    // Weights ~2^40 as well: every term overflows float. The reference's
    // float(dot)·s is ±Inf (or NaN where +Inf and −Inf meet) and linear()
    // gives the same bits: linear checks its inputs, not its outputs (the
    // documented contract: y is what the fused arithmetic yields).
    const auto wb = random_matrix(N, K, std::ldexp(1.0f, 40), 701);
    const auto layer = layer_of<W4, Lr8>(wb, N, K);
    const auto y = check_paths<Act8>(layer, x, M, "x near FLT_MAX, huge w");
    index_t nonfinite = 0;
    for (float v : y) nonfinite += !std::isfinite(v);
    CHECK(nonfinite == index_t(y.size()));
  }
}

TEST_CASE("subnormal inputs: quantized, dequantized and multiplied like the reference") {
  constexpr index_t K = 96, N = 32, M = 4;
  const float tiny = std::numeric_limits<float>::denorm_min();
  std::vector<float> x(static_cast<std::size_t>(M * K), 0.0f);
  for (index_t k = 0; k < K; ++k) {
    x[static_cast<std::size_t>(0 * K + k)] = tiny * float(1 + k % 13) * (k % 2 ? -1.0f : 1.0f);  // all subnormal
    x[static_cast<std::size_t>(1 * K + k)] = std::ldexp(1.0f, -130) * float(1 + k % 5);             // subnormal, larger
    x[static_cast<std::size_t>(2 * K + k)] = (k / 16) % 2 ? FLT_MIN * 1.5f : tiny * 3.0f;           // normal/subnormal blocks
    x[static_cast<std::size_t>(3 * K + k)] = k % 16 == 3 ? FLT_MIN : tiny;                           // mixed in one block
  }
  const auto xq = quantized_matrix<Act8>::quantize(matrix_view<const float>(x.data(), M, K), block_axis::cols);
  // amax < 2^-127 saturates the exponent at E8M0's −127: the elements are
  // scaled by 2^(127+7) and round to small codes, never to NaN or Inf.
  CHECK(xq.scale(0, 0).exponent() == -127);
  CHECK(xq.scale(1, 0).exponent() == -127);
  for (float v : xq.dequantize()) CHECK(std::isfinite(v));
  // The step of a saturated block is 2^(−127−7) = 2^-134. Row 0: |x| ≤ 13·2^-149
  // < 2^-135, half a step, so every code is 0 (the block flushes to zero).
  // Row 1: x = j·2^-130 = 16j steps exactly, codes 16..80: lossless.
  for (index_t k = 0; k < K; ++k) {
    CHECK(xq.code(0, k) == 0);
    CHECK(xq.value(1, k) == x[static_cast<std::size_t>(K + k)]);
  }
  const auto layer = random_layer<W4, Lr8>(N, K, 16, true, 710);
  check_paths<Act8>(layer, x, M, "subnormal x");
  // Subnormal weights (through the format: Wq's block exponent −127 as well).
  std::vector<float> w(static_cast<std::size_t>(N * K));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = tiny * float(1 + i % 7) * (i % 3 ? 1.0f : -1.0f);
  const auto lw = layer_of<W4, Lr8>(w, N, K);
  CHECK(lw.wq.scale(0, 0).exponent() == -127);
  const auto xs = random_matrix(M, K, 1.0f, 711);
  check_paths<Act8>(lw, xs, M, "subnormal w");
}

TEST_CASE("all-zero x, all-zero weight and all-zero factors: y is exactly the bias") {
  constexpr index_t K = 48, N = 20, M = 3, R = 16;
  auto layer = random_layer<W4, Lr8>(N, K, R, true, 720);
  const std::vector<float> zeros_w(static_cast<std::size_t>(N * K), 0.0f);
  const std::vector<float> x0(static_cast<std::size_t>(M * K), -0.0f);
  // Zero x through a nonzero layer (correction included): every product is 0.
  auto y = check_paths<Act8>(layer, x0, M, "zero x");
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) CHECK(y[static_cast<std::size_t>(m * N + n)] == layer.bias[static_cast<std::size_t>(n)]);
  // Zero weight and zero factors, nonzero x.
  layer.wq = quantized_matrix<W4>::quantize(matrix_view<const float>(zeros_w.data(), N, K), block_axis::cols);
  const std::vector<float> za(static_cast<std::size_t>(K * R), 0.0f), zb(static_cast<std::size_t>(R * N), 0.0f);
  layer.a = quantized_matrix<Lr8>::quantize(matrix_view<const float>(za.data(), K, R), block_axis::rows);
  layer.b = quantized_matrix<Lr8>::quantize(matrix_view<const float>(zb.data(), R, N), block_axis::rows);
  const auto x = random_matrix(M, K, 1.0f, 721, true);
  y = check_paths<Act8>(layer, x, M, "zero weight and factors");
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) CHECK(y[static_cast<std::size_t>(m * N + n)] == layer.bias[static_cast<std::size_t>(n)]);
}

TEST_CASE("a single huge outlier in a block: it keeps its code, its neighbours round to zero, kernels agree") {
  constexpr index_t K = 64, N = 32, M = 2;
  auto x = random_matrix(M, K, 1.0f, 730);
  // Row 0, block 1: one element 2^60 among values ~1. The block exponent is
  // ceil(log2 2^60) = 60, the step 2^(60−7) ≫ 1, so every neighbour's code is 0
  // (|x|/step < 1/2): the block carries the outlier only.
  x[static_cast<std::size_t>(20)] = std::ldexp(1.0f, 60);
  // Row 1: the outlier negative and not a power of two (no LQER saturation).
  x[static_cast<std::size_t>(K + 40)] = -std::ldexp(1.5f, 50);
  const auto xq = quantized_matrix<Act8>::quantize(matrix_view<const float>(x.data(), M, K), block_axis::cols);
  for (index_t k = 16; k < 32; ++k)
    if (k != 20) CHECK(xq.code(0, k) == 0);
  CHECK(xq.code(0, 20) == 127);  // 2^60 = 2^p: LQER saturates it to 127/128 of itself (format/mxint.hpp)
  CHECK(xq.value(1, 40) == -std::ldexp(1.5f, 50));  // 1.5·2^50 = 96·2^(51−7): exact
  // Other blocks are unaffected by the outlier.
  const auto x_clean = [&] {
    auto c = x;
    c[20] = 1.0f;
    c[static_cast<std::size_t>(K + 40)] = 1.0f;
    return c;
  }();
  const auto xq_clean = quantized_matrix<Act8>::quantize(matrix_view<const float>(x_clean.data(), M, K), block_axis::cols);
  for (index_t m = 0; m < M; ++m)
    for (index_t k = 0; k < K; ++k)
      if (k / 16 != (m == 0 ? 1 : 2)) CHECK(xq.code(m, k) == xq_clean.code(m, k));
  // And through the kernels, correction included (u is ~2^60·|A|: finite).
  const auto layer = random_layer<W4, Lr8>(N, K, 16, true, 731);
  check_paths<Act8>(layer, x, M, "outlier");
  // A huge outlier in a weight block as well.
  auto w = random_matrix(N, K, 0.05f, 732);
  w[static_cast<std::size_t>(3 * K + 7)] = std::ldexp(1.0f, 50);
  const auto lw = layer_of<W4, Lr8>(w, N, K);
  CHECK(lw.wq.code(3, 7) == 7);
  for (index_t k = 0; k < 16; ++k)
    if (k != 7) CHECK(lw.wq.code(3, k) == 0);
  check_paths<Act8>(lw, x_clean, M, "weight outlier");
}

TEST_CASE("E8M0 saturation at both ends through quantized_matrix, the reference and the kernels (OCP rule too)") {
  using WO = mxint<4, 32, mx_rule::ocp>;
  using LrO = mxint<8, 32, mx_rule::ocp>;
  using ActO = mxint<8, 32, mx_rule::ocp>;
  constexpr index_t K = 96, N = 16, M = 2;
  // Blocks of amax 2^-140 (exponent would be −140 → saturates at −127) and of
  // amax just below FLT_MAX (OCP: floor(log2) = 127, in range; the code 1.99·2^6
  // rounds to 128 and clamps to 127).
  std::vector<float> x(static_cast<std::size_t>(M * K));
  for (index_t k = 0; k < K; ++k) {
    x[static_cast<std::size_t>(k)] = (k < 32 ? std::ldexp(1.0f, -140) : 1.0f) * float(1 + k % 4);
    x[static_cast<std::size_t>(K + k)] = k >= 64 ? std::numeric_limits<float>::max() * (k % 2 ? -1.0f : 1.0f) : 0.5f;
  }
  const auto xq = quantized_matrix<ActO>::quantize(matrix_view<const float>(x.data(), M, K), block_axis::cols);
  CHECK(xq.scale(0, 0).exponent() == -127);
  CHECK(xq.scale(1, 64).exponent() == 127);
  CHECK(xq.code(1, 64) == 127);
  CHECK(xq.code(1, 65) == -127);
  for (float v : xq.dequantize()) CHECK(std::isfinite(v));
  // The kernels: tiny weights keep the FLT_MAX row's products finite.
  lqer_layer<WO, LrO> layer;
  const auto w = random_matrix(N, K, std::ldexp(1.0f, -60), 740);
  layer.wq = quantized_matrix<WO>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
  const auto y = check_paths<ActO>(layer, x, M, "OCP saturation");
  for (float v : y) CHECK(std::isfinite(v));
}
