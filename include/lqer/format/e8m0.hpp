// lqer — E8M0, the OCP MX shared scale: an 8-bit biased power-of-two exponent.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace lqer {

/// An E8M0 scale 2^(bits − 127). Bits 0..254 encode 2^-127 .. 2^127; 255 is NaN
/// in the OCP MX v1.0 spec and is never produced by lqer's encoders (they clamp).
struct e8m0 {
  std::uint8_t bits = 0;

  static constexpr int kBias = 127;
  static constexpr int kMinExponent = -127;  ///< bits = 0
  static constexpr int kMaxExponent = 127;   ///< bits = 254
  static constexpr std::uint8_t kNaNBits = 255;

  /// The scale for unbiased exponent `e`, saturated to [kMinExponent, kMaxExponent].
  static constexpr e8m0 from_exponent(int e) noexcept {
    return e8m0{static_cast<std::uint8_t>(std::clamp(e, kMinExponent, kMaxExponent) + kBias)};
  }
  constexpr int exponent() const noexcept { return static_cast<int>(bits) - kBias; }
  constexpr bool is_nan() const noexcept { return bits == kNaNBits; }
  /// 2^exponent as a float (2^-127 is a float subnormal, still exact).
  float value() const noexcept { return is_nan() ? NAN : std::ldexp(1.0f, exponent()); }

  friend constexpr bool operator==(e8m0, e8m0) = default;
};

namespace detail {
/// x · 2^n, exactly as std::ldexp(x, n) (one correctly rounded operation), but
/// a single multiply when 2^n is a normal float — ldexp is a slow library call
/// and encoders call this once per element.
inline float mul_pow2(float x, int n) noexcept {
  if (n >= -126 && n <= 127) return x * std::bit_cast<float>(static_cast<std::uint32_t>(n + 127) << 23);
  return std::ldexp(x, n);
}

/// floor(log2(a)) and ceil(log2(a)) for finite a > 0, exactly (frexp is exact,
/// also for subnormals; a float log2 can round across an integer).
inline int floor_log2(float a) noexcept {
  int e = 0;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  return e - 1;
}
inline int ceil_log2(float a) noexcept {
  int e = 0;
  const float f = std::frexp(a, &e);
  return f == 0.5f ? e - 1 : e;  // an exact power of two is its own ceiling
}
}  // namespace detail

}  // namespace lqer
