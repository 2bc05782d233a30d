// Scaled integers: hand-computed cases of each scheme, llama.cpp Q4_0 / Q8_0
// byte layouts, per-row groups, and the round-trip bound of each scheme.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "lqer/format/ggml_blocks.hpp"
#include "lqer/format/intq.hpp"

using namespace lqer;

TEST_CASE("intq symmetric: d = amax/qmax, codes round(x·(1/d)) half away") {
  using F = intq<8, 4, int_scheme::symmetric, scale_dtype::f32>;
  const float x[4] = {127.0f, 2.5f, -2.5f, -0.49f};
  std::int8_t q[4];
  const auto s = F::quantize_block(x, 4, 1, q);
  CHECK(F::scale_value(s) == 1.0f);
  CHECK(q[0] == 127);
  CHECK(q[1] == 3);
  CHECK(q[2] == -3);
  CHECK(q[3] == 0);
  CHECK(F::decode(q[1], s) == 3.0f);
  // all-zero group: scale 0, codes 0, decodes to 0.
  const float z[4] = {0, 0, 0, 0};
  const auto sz = F::quantize_block(z, 4, 1, q);
  CHECK(F::scale_value(sz) == 0.0f);
  CHECK(F::decode(q[0], sz) == 0.0f);
}

TEST_CASE("intq signed_extreme (Q4_0 rule): d = m/-8, u = min(15, trunc(x/d + 8.5))") {
  // extreme element -16 (first of the largest magnitude): d = 2, 1/d = 0.5.
  const float x[6] = {-16.0f, 16.0f, 1.0f, 0.9f, -1.1f, 3.0f};
  std::int8_t q[6];
  const auto s = q4_0::quantize_block(x, 6, 1, q);
  CHECK(q4_0::scale_value(s) == 2.0f);
  CHECK(q[0] == -8);  // -8 + 8.5 = 0.5 -> 0 -> -8
  CHECK(q[1] == 7);   // 8 + 8.5 = 16.5 -> 16 -> min 15 -> 7
  CHECK(q[2] == 1);   // 0.5 + 8.5 = 9 -> 1
  CHECK(q[3] == 0);   // 0.45 + 8.5 = 8.95 -> trunc 8 -> 0
  CHECK(q[4] == -1);  // -0.55 + 8.5 = 7.95 -> trunc 7 -> -1
  CHECK(q[5] == 2);   // 1.5 + 8.5 = 10 -> 2 (the +0.5 makes ties round up)
  CHECK(q4_0::decode(q[0], s) == -16.0f);
  CHECK(q4_0::decode(q[1], s) == 14.0f);
  // Ties of magnitude: the first one fixes the sign of d.
  const float t[2] = {4.0f, -4.0f};
  const auto st = q4_0::quantize_block(t, 2, 1, q);
  CHECK(q4_0::scale_value(st) == -0.5f);
  CHECK(q[0] == -8);
  CHECK(q[1] == 7);  // 8 + 8.5 -> 16 -> 15 -> 7: value -3.5
}

TEST_CASE("intq asymmetric: zero point in range, 0 exact") {
  using F = intq<4, 8, int_scheme::asymmetric, scale_dtype::f32>;
  // lo = -1, hi = 14 -> d = 1, z = 1; u = round(x) + 1.
  const float x[5] = {-1.0f, 14.0f, 0.0f, 2.4f, 7.5f};
  std::int8_t q[5];
  const auto s = F::quantize_block(x, 5, 1, q);
  CHECK(F::scale_value(s) == 1.0f);
  CHECK(F::zero_point(s) == 1 - 8);
  CHECK(F::decode(q[0], s) == -1.0f);
  CHECK(F::decode(q[1], s) == 14.0f);
  CHECK(F::decode(q[2], s) == 0.0f);
  CHECK(F::decode(q[3], s) == 2.0f);
  CHECK(F::decode(q[4], s) == 8.0f);  // 7.5 -> 8 (half away)
  // all-positive data: lo is clamped to 0, so z = 0 and 0 stays exact.
  const float p[3] = {1.0f, 2.0f, 15.0f};
  const auto sp = F::quantize_block(p, 3, 1, q);
  CHECK(F::zero_point(sp) == -8);
  CHECK(F::decode(q[2], sp) == 15.0f);
}

TEST_CASE("intq with_min (Q4_1 rule): d = (max − min)/15, u = min(15, trunc((x − min)·(1/d) + 0.5)), value u·d + m") {
  using F = intq<4, 8, int_scheme::with_min, scale_dtype::f32>;
  static_assert(F::kHasMin && !F::kHasZeroPoint && F::kQmin == -8 && F::kQmax == 7);
  static_assert(F::code_value(-8) == 0 && F::code_value(7) == 15, "codes stand for u = q + 8");
  static_assert(q4_1::kScaleBits == 32, "Q4_1: fp16 d and fp16 m per block of 32 (5 bits per weight)");
  // lo = -1, hi = 14 -> d = 1, m = -1; u = trunc(x + 1 + 0.5).
  const float x[5] = {-1.0f, 14.0f, 0.0f, 2.4f, 7.5f};
  std::int8_t q[5];
  const auto s = F::quantize_block(x, 5, 1, q);
  CHECK(F::scale_value(s) == 1.0f);
  CHECK(F::min_value(s) == -1.0f);
  CHECK(F::zero_point(s) == 0);
  CHECK(F::code_value(q[0]) == 0);
  CHECK(F::code_value(q[1]) == 15);
  CHECK(F::decode(q[2], s) == 0.0f);
  CHECK(F::decode(q[3], s) == 2.0f);  // 3.9 -> 3: u·1 − 1
  CHECK(F::decode(q[4], s) == 8.0f);  // 9.0 -> 9 (ties go up: + 0.5 then trunc)
  // All-positive data: the minimum is not widened to 0 (unlike asymmetric), so
  // the whole 4-bit range covers [1, 16].
  const float p[3] = {1.0f, 2.0f, 16.0f};
  const auto sp = F::quantize_block(p, 3, 1, q);
  CHECK(F::min_value(sp) == 1.0f);
  CHECK(F::decode(q[0], sp) == 1.0f);
  CHECK(F::decode(q[1], sp) == 2.0f);
  CHECK(F::decode(q[2], sp) == 16.0f);
  // A constant group: d = 0, every code 0, value m exactly.
  const float c[4] = {-3.25f, -3.25f, -3.25f, -3.25f};
  const auto sc = F::quantize_block(c, 4, 1, q);
  CHECK(F::scale_value(sc) == 0.0f);
  CHECK(F::decode(q[3], sc) == -3.25f);
}

TEST_CASE("intq: round-trip bound of each scheme") {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto run = [&]<class F>(F, int n) {
    for (int trial = 0; trial < 500; ++trial) {
      std::vector<float> x(n);
      const float mag = std::ldexp(1.0f, static_cast<int>(rng() % 20) - 10);
      for (auto& v : x) v = nd(rng) * mag + (F::kHasZeroPoint ? mag : 0.0f);
      std::vector<std::int8_t> q(n);
      const auto s = F::quantize_block(x.data(), n, 1, q.data());
      const float d = std::fabs(F::scale_value(s));
      for (int i = 0; i < n; ++i) {
        REQUIRE(q[i] >= F::kQmin);
        REQUIRE(q[i] <= F::kQmax);
        // Half a step from rounding, plus — with an fp16 scale — the stored scale's own
        // rounding error (half an fp16 ulp: ≤ d·2^-11 for a normal half, ≤ 2^-25 for a
        // subnormal one) times the largest |code − zero| there can be (< 2^Bits).
        const float half_ulp = std::max(std::ldexp(d, -11), std::ldexp(1.0f, -25));
        const float fp16_err = F::kScaleDtype == scale_dtype::f16 ? half_ulp * float(1 << F::kBits) : 0.0f;
        float bound = d / 2 + fp16_err;
        if constexpr (F::kScheme == int_scheme::signed_extreme)
          bound = d + fp16_err;  // the top code saturates one step early (7 of 8)
        if constexpr (F::kHasMin)  // + the stored minimum's own rounding (half an fp16 ulp of m)
          bound += F::kScaleDtype == scale_dtype::f16
                       ? std::max(std::ldexp(std::fabs(F::min_value(s)), -11), std::ldexp(1.0f, -25))
                       : 0.0f;
        // Float arithmetic: 1/d and x·(1/d) each round by ≤ 2^-24 relative with
        // |x/d| < 2^Bits (so ≤ d·2^(Bits−23) after scaling back), and the decode's
        // product and this subtraction by ≤ |x|·2^-23 together.
        // With a minimum, x − m and u·d + m round too (by ≤ |x − m|·2^-24 and |u·d|, |value|·2^-24).
        const float arith = d * std::ldexp(1.0f, F::kBits - 23) + std::fabs(x[i]) * std::ldexp(1.0f, -22) +
                            (F::kHasMin ? (std::fabs(x[i]) + std::fabs(F::min_value(s))) * std::ldexp(1.0f, -21)
                                        : 0.0f);
        REQUIRE(std::fabs(F::decode(q[i], s) - x[i]) <= bound + arith);
      }
    }
  };
  run(q8_0{}, 32);
  run(q4_0{}, 32);
  run(intq<4, 128, int_scheme::symmetric>{}, 128);
  run(int4_g128_asym{}, 128);
  run(intq<8, kPerRow>{}, 77);
  run(intq<3, 16, int_scheme::asymmetric>{}, 16);
  run(q4_1{}, 32);
  run(intq<4, 64, int_scheme::with_min>{}, 64);
}

TEST_CASE("ggml block layouts: Q4_0 nibble order and Q8_0 bytes") {
  // Element j in the low nibble of byte j, element j+16 in the high nibble, u = q + 8.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = float(i - 16);  // extreme -16 first: d = 2
  const auto b = to_ggml_q4_0(x);
  REQUIRE(b.size() == kGgmlQ4_0BlockBytes);
  CHECK(b[0] == 0x00);
  CHECK(b[1] == 0x40);  // d = 2.0 in fp16 = 0x4000, little endian
  for (int j = 0; j < 16; ++j) {
    std::int8_t lo[32];
    const auto s = q4_0::quantize_block(x.data(), 32, 1, lo);
    (void)s;
    CHECK((b[2 + j] & 0x0f) == lo[j] + 8);
    CHECK((b[2 + j] >> 4) == lo[j + 16] + 8);
  }
  const auto back = from_ggml_q4_0(b);
  for (int i = 0; i < 32; ++i) CHECK(std::fabs(back[i] - x[i]) <= 2.0f);
  CHECK(back[0] == -16.0f);
  const auto b8 = to_ggml_q8_0(x);
  REQUIRE(b8.size() == kGgmlQ8_0BlockBytes);
  const auto back8 = from_ggml_q8_0(b8);
  for (int i = 0; i < 32; ++i) CHECK(std::fabs(back8[i] - x[i]) <= 16.0f / 127 / 2 * 1.001f + 16.0f * std::ldexp(1.0f, -11));
  CHECK_THROWS_AS(to_ggml_q4_0(std::vector<float>(31)), shape_error);
  CHECK_THROWS_AS(from_ggml_q8_0(std::vector<std::uint8_t>(35)), shape_error);
}

// Regression (fuzz_quantize, crash-7ab77c40…): a group of subnormals has d < 2^-128,
// so 1/d overflowed to +Inf and the zeros of the group encoded as 0·Inf = NaN, whose
// conversion to int is undefined behaviour (UBSan: "-nan is outside the range of
// representable values of type 'int'"); nonzero elements all saturated. Now such a
// group divides by d instead: codes in range, values within one step (f32 scales keep
// the subnormal d; fp16 scales flush it to 0, so everything decodes to 0).
TEST_CASE_TEMPLATE("intq: a group of subnormals with zeros among them (fuzz regression)", F,
                   intq<8, 4, int_scheme::symmetric, scale_dtype::f32>,
                   intq<4, 4, int_scheme::signed_extreme, scale_dtype::f32>,
                   intq<4, 4, int_scheme::asymmetric, scale_dtype::f32>, int4_g128_asym, q4_0, q8_0,
                   intq<4, 4, int_scheme::with_min, scale_dtype::f32>, q4_1) {
  constexpr int n = F::kBlock == kPerRow ? 4 : F::kBlock;
  std::vector<float> x(n, 0.0f);
  x[1] = std::ldexp(1.0f, -140);
  x[2] = -std::ldexp(3.0f, -142);
  x[n - 1] = std::ldexp(5.0f, -143);
  std::vector<std::int8_t> q(n);
  const auto s = F::quantize_block(x.data(), n, 1, q.data());
  const float step = std::fabs(F::scale_value(s));
  for (int i = 0; i < n; ++i) {
    INFO("i = " << i << " code " << int(q[i]));
    CHECK(int(q[i]) >= F::kQmin);
    CHECK(int(q[i]) <= F::kQmax);
    const float y = F::decode(q[i], s);
    CHECK(std::isfinite(y));
    // One step, or the whole subnormal when the fp16 scale flushed d to 0.
    CHECK(std::fabs(y - x[i]) <= std::fmax(step, std::ldexp(1.0f, -139)));
  }
}

// Regression (fuzz_quantize, crash-8289ddf9…): a per-row int8 group holding FLT_MAX
// decoded its largest element to +Inf (d = amax/127 rounded up, 127·d overflows), and
// an asymmetric group spanning ±FLT_MAX had hi − lo = Inf, d = Inf and NaN values.
// Every element of finite data now decodes finite, within one step of its input.
TEST_CASE_TEMPLATE("intq: data near FLT_MAX decodes finite (fuzz regression)", F,
                   intq<8, kPerRow, int_scheme::symmetric, scale_dtype::f32>,
                   intq<4, 8, int_scheme::symmetric, scale_dtype::f32>,
                   intq<4, 8, int_scheme::signed_extreme, scale_dtype::f32>,
                   intq<8, 8, int_scheme::asymmetric, scale_dtype::f32>,
                   intq<4, 8, int_scheme::asymmetric, scale_dtype::f32>) {
  const float big = std::numeric_limits<float>::max();
  for (const auto& x : {std::vector<float>{big, -big / 3, 1.0f, 0.0f, big / 2, -1e30f, 7.0f, big},
                        std::vector<float>{-big, big, 0.0f, -big, 3.0f, big / 7, -big / 5, 1e-30f},
                        std::vector<float>{0.0f, 0.0f, 0.0f, big, 0.0f, 0.0f, 0.0f, 0.0f}}) {
    std::vector<std::int8_t> q(x.size());
    const auto s = F::quantize_block(x.data(), index_t(x.size()), 1, q.data());
    const float step = std::fabs(F::scale_value(s));
    CHECK(std::isfinite(step));
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float y = F::decode(q[i], s);
      INFO("i = " << i << " x = " << x[i] << " y = " << y << " step = " << step);
      CHECK(std::isfinite(y));
      CHECK(std::fabs(double(y) - double(x[i])) <= 1.0001 * double(step));
    }
  }
}

// A block minimum decodes u·d + m (ggml's formula): a group whose span
// max − min exceeds FLT_MAX cannot be represented (u·d would overflow before m
// is added), so such a group clamps its codes where u·d stays finite — every
// value finite, though the top elements lose more than a step. Spans that fit
// stay within one step.
TEST_CASE("intq with_min: data near FLT_MAX decodes finite") {
  using F = intq<4, 8, int_scheme::with_min, scale_dtype::f32>;
  const float big = std::numeric_limits<float>::max();
  for (const auto& x : {std::vector<float>{big, -big / 3, 1.0f, 0.0f, big / 2, -1e30f, 7.0f, big},
                        std::vector<float>{-big, big, 0.0f, -big, 3.0f, big / 7, -big / 5, 1e-30f},
                        std::vector<float>{0.0f, 0.0f, 0.0f, big, 0.0f, 0.0f, 0.0f, 0.0f},
                        std::vector<float>{-big, -big, -big / 2, 0.0f, -1e30f, -big / 3, -big, -big}}) {
    std::vector<std::int8_t> q(x.size());
    const auto s = F::quantize_block(x.data(), index_t(x.size()), 1, q.data());
    const double span = double(*std::max_element(x.begin(), x.end())) - double(*std::min_element(x.begin(), x.end()));
    const float step = F::scale_value(s);
    CHECK(std::isfinite(step));
    for (std::size_t i = 0; i < x.size(); ++i) {
      const float y = F::decode(q[i], s);
      INFO("i = " << i << " x = " << x[i] << " y = " << y << " step = " << step);
      CHECK(std::isfinite(y));
      if (span <= double(big)) CHECK(std::fabs(double(y) - double(x[i])) <= 1.0001 * double(step));
    }
  }
}
