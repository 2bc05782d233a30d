// binary16 conversion: hand-computed bit patterns of the IEEE rules, and (where
// the CPU has F16C) agreement with the hardware conversion on every half and on
// a sweep of floats.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "lqer/format/fp16.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
__attribute__((target("f16c"))) static std::uint16_t hw_to_half(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) static float hw_to_float(std::uint16_t h) { return _cvtsh_ss(h); }
// cpuid leaf 1 ECX bit 29 (clang 14 rejects "f16c" in __builtin_cpu_supports);
// F16C instructions are VEX-encoded, so AVX (which implies the OS saves ymm) too.
static bool have_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#else
static bool have_f16c() { return false; }
static std::uint16_t hw_to_half(float) { return 0; }
static float hw_to_float(std::uint16_t) { return 0; }
#endif

using lqer::float_to_half;
using lqer::half_bits;
using lqer::half_to_float;

TEST_CASE("fp16: hand-computed encodings") {
  CHECK(float_to_half(0.0f).bits == 0x0000);
  CHECK(float_to_half(-0.0f).bits == 0x8000);
  CHECK(float_to_half(1.0f).bits == 0x3c00);
  CHECK(float_to_half(-2.0f).bits == 0xc000);
  CHECK(float_to_half(65504.0f).bits == 0x7bff);            // largest finite half
  CHECK(float_to_half(65519.99f).bits == 0x7bff);           // below the rounding midpoint
  CHECK(float_to_half(65520.0f).bits == 0x7c00);            // the midpoint rounds to even = Inf
  CHECK(float_to_half(std::ldexp(1.0f, -24)).bits == 0x0001);  // smallest subnormal
  CHECK(float_to_half(std::ldexp(1.0f, -25)).bits == 0x0000);  // tie between 0 and 2^-24 -> even (0)
  CHECK(float_to_half(std::ldexp(1.5f, -25)).bits == 0x0001);
  CHECK(float_to_half(std::ldexp(3.0f, -25)).bits == 0x0002);  // 1.5 ulp tie -> even (2)
  CHECK(float_to_half(std::ldexp(1.0f, -14)).bits == 0x0400);  // smallest normal
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: to even (1); 1 + 3·2^-11 -> 1 + 2^-9.
  CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)).bits == 0x3c00);
  CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)).bits == 0x3c02);
  CHECK(float_to_half(std::numeric_limits<float>::infinity()).bits == 0x7c00);
  CHECK((float_to_half(std::numeric_limits<float>::quiet_NaN()).bits & 0x7fff) > 0x7c00);
  CHECK(half_to_float(half_bits{0x3555}) == 0.333251953125f);  // 2^-2 · (1 + 341/1024)
  CHECK(half_to_float(half_bits{0x0001}) == std::ldexp(1.0f, -24));
  CHECK(std::signbit(half_to_float(half_bits{0x8000})));
}

TEST_CASE("fp16: every half round-trips, and matches F16C where available") {
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const half_bits h{static_cast<std::uint16_t>(b)};
    const float f = half_to_float(h);
    if (std::isnan(f)) continue;
    REQUIRE(float_to_half(f).bits == h.bits);
    if (have_f16c()) REQUIRE(std::bit_cast<std::uint32_t>(hw_to_float(h.bits)) == std::bit_cast<std::uint32_t>(f));
  }
  if (!have_f16c()) {
    MESSAGE("no F16C on this CPU: the hardware comparison of float->half is skipped");
    return;
  }
  // A sweep of floats across every exponent, including the rounding midpoints.
  for (std::uint32_t x = 0; x < 0x7f800000u; x += 0x1f3u) {
    const float f = std::bit_cast<float>(x);
    REQUIRE(float_to_half(f).bits == hw_to_half(f));
    REQUIRE(float_to_half(-f).bits == hw_to_half(-f));
  }
}
