// The rounding rules of format/rounding.hpp against the C library's own:
// round_half_away ≡ roundf and round_half_even ≡ nearbyintf in the default
// round-to-nearest-even mode, bit for bit (sign of zero included), over a sweep
// of every float bit pattern and every tie k + 0.5 that a float can hold.
// rounding.hpp computes both without libm; this is the independent oracle.
#include <doctest/doctest.h>

#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>

#include "lqer/format/rounding.hpp"

namespace {

std::uint32_t bits(float x) { return std::bit_cast<std::uint32_t>(x); }

/// Zeros, ties either side of zero, the last ties below 2^23, the first
/// integers above it, the smallest and largest magnitudes, ±Inf and NaN.
const float kSpecials[] = {0.0f,
                           -0.0f,
                           0.5f,
                           -0.5f,
                           1.5f,
                           -1.5f,
                           2.5f,
                           -2.5f,
                           3.5f,
                           -3.5f,
                           0.49999997f,
                           -0.49999997f,
                           8388607.5f,
                           -8388607.5f,
                           8388608.0f,
                           16777217.0f,
                           std::numeric_limits<float>::denorm_min(),
                           -std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN()};

/// Same float, or both NaN.
bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || bits(a) == bits(b); }

}  // namespace

TEST_CASE("round_half_away equals roundf and round_half_even equals nearbyintf (FE_TONEAREST)") {
  REQUIRE(std::fegetround() == FE_TONEAREST);
  std::uint64_t checked = 0, bad_away = 0, bad_even = 0;
  const auto check = [&](float x) {
    ++checked;
    if (!same(lqer::round_half_away(x), std::round(x))) ++bad_away;
    if (!same(lqer::round_half_even(x), std::nearbyint(x))) ++bad_even;
  };
  // Every 61st bit pattern (61 is prime: the sweep hits every exponent and
  // mantissa residue), both signs, NaN and ±Inf included.
  for (std::uint64_t u = 0; u <= 0xffffffffull; u += 61) check(std::bit_cast<float>(static_cast<std::uint32_t>(u)));
  // Every tie k + 0.5 with |k + 0.5| < 2^23 (above that no float is a tie),
  // and its two neighbours.
  for (std::int32_t k = -(1 << 23); k < (1 << 23); ++k) {
    const float tie = static_cast<float>(k) + 0.5f;
    check(tie);
    check(std::nextafter(tie, -INFINITY));
    check(std::nextafter(tie, INFINITY));
  }
  for (float x : kSpecials) check(x);
  CHECK(checked > 90'000'000);
  CHECK(bad_away == 0);
  CHECK(bad_even == 0);
}

TEST_CASE("the batch forms equal roundf / nearbyintf lane by lane (every lane position)") {
  // The SIMD encoders use these; this file is also compiled with -march=native
  // (test_rounding_native), so both the baseline and the machine's vector width
  // are checked. Inputs are shifted through the lanes so that each value is
  // seen in every lane position.
  REQUIRE(std::fegetround() == FE_TONEAREST);
  using batch = xsimd::batch<float>;
  constexpr std::size_t kLanes = batch::size;
  alignas(64) float in[kLanes] = {}, away[kLanes], even[kLanes];
  std::uint64_t checked = 0, bad_away = 0, bad_even = 0;
  std::size_t slot = 0;
  const auto flush = [&] {
    const batch x = batch::load_aligned(in);
    lqer::round_half_away(x).store_aligned(away);
    lqer::round_half_even(x).store_aligned(even);
    for (std::size_t i = 0; i < kLanes; ++i) {
      ++checked;
      if (!same(away[i], std::round(in[i]))) ++bad_away;
      if (!same(even[i], std::nearbyint(in[i]))) ++bad_even;
    }
  };
  const auto check = [&](float x) {
    in[slot] = x;
    slot = (slot + 1) % kLanes;
    if (slot == 0) flush();
  };
  for (std::uint64_t u = 0; u <= 0xffffffffull; u += 613) check(std::bit_cast<float>(static_cast<std::uint32_t>(u)));
  for (std::int32_t k = -(1 << 23); k < (1 << 23); k += 7) {
    const float tie = static_cast<float>(k) + 0.5f;
    check(tie);
    check(std::nextafter(tie, -INFINITY));
    check(std::nextafter(tie, INFINITY));
  }
  for (int pass = 0; pass < static_cast<int>(kLanes) + 1; ++pass)  // each special in every lane
    for (float x : kSpecials) check(x);
  CHECK(checked > 10'000'000);
  CHECK(bad_away == 0);
  CHECK(bad_even == 0);
}

TEST_CASE("the hand cases of DESIGN.md §2") {
  CHECK(lqer::round_half_even(2.5f) == 2.0f);
  CHECK(lqer::round_half_even(3.5f) == 4.0f);
  CHECK(lqer::round_half_even(-2.5f) == -2.0f);
  CHECK(lqer::round_half_away(2.5f) == 3.0f);
  CHECK(lqer::round_half_away(-2.5f) == -3.0f);
  CHECK(lqer::round_half_away(0.49999997f) == 0.0f);  // floor(x + 0.5) would give 1
  CHECK(std::signbit(lqer::round_half_away(-0.3f)));  // −0, as roundf
}
