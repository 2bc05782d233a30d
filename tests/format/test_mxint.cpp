// MX block integers: hand-computed cases of both rules exactly as DESIGN.md §2
// writes them, E8M0 saturation, subnormal and huge inputs, and the round-trip
// bound that follows from the format (half a step of the block, or saturation).
#include <doctest/doctest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "lqer/format/mxint.hpp"

using namespace lqer;

namespace {
template <class F>
std::vector<float> fake(const std::vector<float>& x, e8m0* scale_out = nullptr) {
  std::vector<std::int8_t> q(x.size());
  const e8m0 s = F::quantize_block(x.data(), static_cast<index_t>(x.size()), 1, q.data());
  if (scale_out) *scale_out = s;
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = F::decode(q[i], s);
  return y;
}
}  // namespace

TEST_CASE("e8m0: exponent range and saturation") {
  CHECK(e8m0::from_exponent(0).bits == 127);
  CHECK(e8m0::from_exponent(-127).bits == 0);
  CHECK(e8m0::from_exponent(127).bits == 254);
  CHECK(e8m0::from_exponent(128).bits == 254);  // saturates below the NaN encoding
  CHECK(e8m0::from_exponent(-500).bits == 0);
  CHECK(e8m0::from_exponent(3).value() == 8.0f);
  CHECK(e8m0::from_exponent(-127).value() == std::ldexp(1.0f, -127));
  CHECK(std::isnan(e8m0{255}.value()));
}

TEST_CASE("mxint OCP rule: floor exponent, round half away, symmetric clamp") {
  using F8 = mxint<8, 32, mx_rule::ocp>;
  using F4 = mxint<4, 32, mx_rule::ocp>;
  static_assert(F8::kFractionBits == 6 && F4::kFractionBits == 2);
  // amax = 1 -> e = floor(log2 1) = 0; code = x·2^6.
  CHECK(F8::shared_scale(1.0f).exponent() == 0);
  CHECK(F8::encode(1.0f, e8m0::from_exponent(0)) == 64);
  CHECK(F8::encode(2.5f / 64, e8m0::from_exponent(0)) == 3);    // tie 2.5 -> 3 (away)
  CHECK(F8::encode(-2.5f / 64, e8m0::from_exponent(0)) == -3);  // tie -2.5 -> -3
  CHECK(F8::encode(0.5f / 64, e8m0::from_exponent(0)) == 1);    // tie 0.5 -> 1
  CHECK(F8::encode(0.49f / 64, e8m0::from_exponent(0)) == 0);
  // amax = 1.99 -> e = 0; 1.99·64 = 127.36 -> 127. amax = 3 -> e = 1.
  CHECK(F8::shared_scale(1.99f).exponent() == 0);
  CHECK(F8::shared_scale(3.0f).exponent() == 1);
  CHECK(F8::shared_scale(0.75f).exponent() == -1);
  // Saturation: 1.999·64 = 127.94 -> round 128 -> clamp 127.
  CHECK(F8::encode(1.999f, e8m0::from_exponent(0)) == 127);
  CHECK(F8::encode(-1.999f, e8m0::from_exponent(0)) == -127);  // symmetric: never -128
  // 4-bit: amax = 7.5 -> e = 2, 7.5/4·4 = 7.5 -> 8 -> clamp 7: value 7.
  CHECK(fake<F4>({7.5f, 1.0f}) == std::vector<float>{7.0f, 1.0f});
  // Power-of-two amax: e = 2, 4 is represented exactly (code 4).
  CHECK(fake<F4>({4.0f, 1.0f, -3.0f}) == std::vector<float>{4.0f, 1.0f, -3.0f});
  // Value = q·2^(e−2): 5 -> e = 2, code 5, value 5; 0.6 -> 0.6·1 = 0.6 -> 1 -> 1.
  CHECK(fake<F4>({5.0f, 0.6f, -0.4f}) == std::vector<float>{5.0f, 1.0f, -0.0f});
}

TEST_CASE("mxint LQER rule: ceil exponent, sign-magnitude, round half to even") {
  using F8 = mxint<8, 16, mx_rule::lqer>;
  using F4 = mxint<4, 16, mx_rule::lqer>;
  static_assert(F8::kFractionBits == 7 && F4::kFractionBits == 3);
  CHECK(F8::shared_scale(1.0f).exponent() == 0);  // exact power of two: its own ceiling
  CHECK(F8::shared_scale(1.01f).exponent() == 1);
  CHECK(F8::shared_scale(0.3f).exponent() == -1);
  // e = 0: m = |x|·2^7, ties to even.
  const e8m0 e0 = e8m0::from_exponent(0);
  CHECK(F8::encode(1.5f / 128, e0) == 2);    // 1.5 -> 2
  CHECK(F8::encode(2.5f / 128, e0) == 2);    // 2.5 -> 2
  CHECK(F8::encode(-2.5f / 128, e0) == -2);  // sign-magnitude: -(2.5 -> 2)
  CHECK(F8::encode(3.5f / 128, e0) == 4);
  CHECK(F8::encode(0.5f / 128, e0) == 0);  // 0.5 -> 0 (even)
  // |x| = 2^e saturates: m = 128 -> clamp 127.
  CHECK(F8::encode(1.0f, e0) == 127);
  // Power-of-two amax: the rules differ. LQER: e = 2, 4/4·8 = 8 -> 7, value 7·2^-1 = 3.5.
  CHECK(fake<F4>({4.0f, 1.0f}) == std::vector<float>{3.5f, 1.0f});
  // Same data under OCP keeps 4 exactly (see the OCP case): one bit of headroom apart.
  CHECK(fake<mxint<4, 16, mx_rule::ocp>>({4.0f, 1.0f}) == std::vector<float>{4.0f, 1.0f});
  // amax = 5 -> e = 3: 5/8·8 = 5 -> value 5; 0.6·1 = 0.6 -> 1; 0.5 -> 0 (tie to even).
  CHECK(fake<F4>({5.0f, 0.6f, 0.5f, -1.5f}) == std::vector<float>{5.0f, 1.0f, 0.0f, -2.0f});
}

TEST_CASE("mxint: zero blocks and negative zero") {
  using O = mxint<8, 32, mx_rule::ocp>;
  using L = mxint<4, 16, mx_rule::lqer>;
  e8m0 s{};
  const auto zo = fake<O>({0.0f, -0.0f, 0.0f}, &s);
  CHECK(s.exponent() == e8m0::kMinExponent);
  for (float v : zo) CHECK((v == 0.0f && !std::signbit(v)));
  const auto zl = fake<L>({-0.0f, -0.0f});
  for (float v : zl) CHECK((v == 0.0f && !std::signbit(v)));
  // -0.0 next to non-zero values is code 0.
  std::int8_t q[2];
  L::quantize_block(std::vector<float>{-0.0f, 1.0f}.data(), 2, 1, q);
  CHECK(q[0] == 0);
}

TEST_CASE("mxint: subnormal and huge blocks stay finite and within the rule") {
  using O = mxint<8, 32, mx_rule::ocp>;
  using L = mxint<8, 16, mx_rule::lqer>;
  // amax = 1e-40 (subnormal, ≈ 2^-132.9): floor gives -133, clamped to E8M0's -127.
  e8m0 s{};
  const auto y = fake<O>({1e-40f, -3e-41f}, &s);
  CHECK(s.exponent() == -127);
  const float step = std::ldexp(1.0f, -127 - 6);
  CHECK(std::fabs(y[0] - 1e-40f) <= step / 2);
  CHECK(std::fabs(y[1] + 3e-41f) <= step / 2);
  // FLT_MAX: OCP e = 127, 1.99999988·2^6 rounds to 128 -> saturates at 127.
  const auto h = fake<O>({FLT_MAX, -FLT_MAX / 2}, &s);
  CHECK(s.exponent() == 127);
  CHECK(h[0] == std::ldexp(127.0f, 127 - 6));
  CHECK(h[1] == -std::ldexp(64.0f, 127 - 6));  // (2−2^-23)·2^5 = 63.99999 rounds to 64
  // LQER: ceil(log2 FLT_MAX) = 128 does not fit E8M0: clamps to 127 and the code saturates.
  const auto hl = fake<L>({FLT_MAX, 1.0f}, &s);
  CHECK(s.exponent() == 127);
  CHECK(hl[0] == std::ldexp(127.0f, 127 - 7));
  CHECK(std::isfinite(hl[0]));
}

TEST_CASE("mxint: round-trip error is at most half a step unless the element saturates") {
  std::mt19937 rng(7);
  std::student_t_distribution<float> heavy(3.0f);  // heavy tails, like trained weights
  auto check = [&]<class F>(F) {
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<float> x(F::kBlock);
      const float mag = std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30);
      for (auto& v : x) v = heavy(rng) * mag;
      std::vector<std::int8_t> q(x.size());
      const e8m0 s = F::quantize_block(x.data(), F::kBlock, 1, q.data());
      const float step = F::scale_value(s);
      for (int i = 0; i < F::kBlock; ++i) {
        const float y = F::decode(q[i], s);
        REQUIRE(q[i] >= F::kQmin);
        REQUIRE(q[i] <= F::kQmax);
        if (std::fabs(x[i]) <= F::kQmax * step) {
          REQUIRE(std::fabs(y - x[i]) <= step / 2);
        } else {  // saturated: the code is the extreme of the element's sign
          REQUIRE(y == std::copysign(F::kQmax * step, x[i]));
        }
      }
    }
  };
  check(mxint<8, 32, mx_rule::ocp>{});
  check(mxint<4, 32, mx_rule::ocp>{});
  check(mxint<4, 16, mx_rule::lqer>{});
  check(mxint<8, 16, mx_rule::lqer>{});
  check(mxint<3, 16, mx_rule::lqer>{});
  check(mxint<2, 8, mx_rule::ocp>{});
  check(mxint<6, 64, mx_rule::ocp>{});
}

// quantize_whole_block (the SIMD encoder quantized_matrix uses for contiguous
// blocks) against quantize_block, the rule as written: same codes, same scale
// bits, on every class of block — random data over the whole exponent range
// (including the blocks outside the one-multiply range that fall back), exact
// ties of the rounding rule, amax an exact power of two, zeros and −0, lone
// outliers, subnormals, and values near FLT_MAX. This file is also compiled
// with -march=native (test_mxint_native) for the machine's vector width.
namespace {
template <class F>
void check_whole_block_equals_rule() {
  constexpr int n = F::kBlock;
  std::mt19937_64 gen(0x51d0u + F::kBits * 1000 + n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> code(-F::kQmax, F::kQmax);
  std::vector<float> x(static_cast<std::size_t>(n));
  std::vector<std::int8_t> want(x.size()), got(x.size());
  int blocks = 0, mismatches = 0;
  const auto compare = [&] {
    const e8m0 s_want = F::quantize_block(x.data(), n, 1, want.data());
    const e8m0 s_got = F::quantize_whole_block(x.data(), got.data());
    ++blocks;
    if (s_want.bits != s_got.bits || want != got) ++mismatches;
  };
  for (int e = -149; e <= 127; ++e)  // random blocks scaled over the whole float range
    for (int rep = 0; rep < 4; ++rep) {
      for (float& v : x) v = std::ldexp(normal(gen), e);
      compare();
    }
  for (int rep = 0; rep < 400; ++rep) {  // exact ties k + 0.5 of the rule's step
    const int e = static_cast<int>(gen() % 60) - 30;
    const int step_exp = (F::kRule == mx_rule::ocp ? e : e + 1) - F::kFractionBits;
    for (float& v : x) v = std::ldexp(static_cast<float>(code(gen)) + (gen() % 2 ? 0.5f : -0.5f), step_exp);
    x[gen() % x.size()] = (gen() % 2 ? 1.75f : -1.75f) * std::ldexp(1.0f, e);  // fixes floor/ceil log2 at e, e + 1
    compare();
  }
  for (int e = -130; e <= 127; e += 3) {  // amax an exact power of two (the rules differ by one exponent)
    for (float& v : x) v = std::ldexp(normal(gen), e - 2);
    x[gen() % x.size()] = -std::ldexp(1.0f, e);
    compare();
  }
  std::fill(x.begin(), x.end(), 0.0f);
  compare();
  std::fill(x.begin(), x.end(), -0.0f);
  compare();
  for (float big : {1e-3f, 1e10f, FLT_MAX}) {  // a lone outlier among small values
    for (float& v : x) v = 1e-6f * normal(gen);
    x[gen() % x.size()] = big;
    compare();
  }
  for (float& v : x)
    v = std::numeric_limits<float>::denorm_min() * static_cast<float>(gen() % 64) * (gen() % 2 ? 1 : -1);
  compare();
  for (float& v : x) v = FLT_MAX * (0.5f + 0.5f * std::fabs(std::tanh(normal(gen)))) * (gen() % 2 ? 1 : -1);
  compare();
  CHECK(blocks > 1500);
  CHECK(mismatches == 0);
}
}  // namespace

TEST_CASE("mxint: the SIMD whole-block encoder equals the rule bit for bit") {
  check_whole_block_equals_rule<mxint<4, 16, mx_rule::ocp>>();
  check_whole_block_equals_rule<mxint<4, 16, mx_rule::lqer>>();
  check_whole_block_equals_rule<mxint<8, 16, mx_rule::ocp>>();
  check_whole_block_equals_rule<mxint<8, 16, mx_rule::lqer>>();
  check_whole_block_equals_rule<mxint<4, 32, mx_rule::ocp>>();
  check_whole_block_equals_rule<mxint<8, 32, mx_rule::lqer>>();
  check_whole_block_equals_rule<mxint<6, 64, mx_rule::lqer>>();
  check_whole_block_equals_rule<mxint<4, 2, mx_rule::ocp>>();    // shorter than a vector: the scalar path
  check_whole_block_equals_rule<mxint<8, 18, mx_rule::lqer>>();  // not whole vectors: the scalar path
}
