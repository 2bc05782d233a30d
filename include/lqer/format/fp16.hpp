// lqer — IEEE 754 binary16 <-> binary32 conversion in portable code.
//
// Rounding is round-to-nearest-even, the same as the x86 F16C instruction
// `vcvtps2ph` with imm 0 (what ggml's GGML_FP32_TO_FP16 uses on x86) and as
// numpy's float16 cast; overflow goes to ±Inf, NaN stays NaN (quiet), and
// subnormal halves are produced and read exactly.
#pragma once

#include <bit>
#include <cstdint>

namespace lqer {

/// Raw binary16 bits. A distinct type (not uint16_t) so that overloads and
/// format traits can tell "a half" from "a small integer".
struct half_bits {
  std::uint16_t bits = 0;
  friend constexpr bool operator==(half_bits, half_bits) = default;
};

/// binary32 -> binary16, round to nearest even.
constexpr half_bits float_to_half(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    const std::uint32_t mant = abs & 0x007fffffu;
    return half_bits{static_cast<std::uint16_t>(sign | 0x7c00u | (mant ? (0x0200u | (mant >> 13)) : 0u))};
  }
  if (abs >= 0x477ff000u) {  // >= 65520 rounds to Inf (65504 is the largest half)
    return half_bits{static_cast<std::uint16_t>(sign | 0x7c00u)};
  }
  if (abs >= 0x38800000u) {  // normal half: exponent >= -14
    // Re-bias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even.
    const std::uint32_t rebased = abs - (112u << 23);
    const std::uint32_t round_bit = 1u << 12;
    const std::uint32_t lsb = (rebased >> 13) & 1u;
    return half_bits{static_cast<std::uint16_t>(sign | ((rebased + (round_bit - 1u) + lsb) >> 13))};
  }
  if (abs < 0x33000000u) {  // < 2^-25: rounds to (signed) zero; exactly 2^-25 is a tie to 0
    return half_bits{static_cast<std::uint16_t>(sign)};
  }
  // Subnormal half: value = m * 2^-24 with m in [1, 1023]. Shift the full 24-bit
  // significand so that its units are 2^-24, rounding to nearest even.
  const std::uint32_t exp = abs >> 23;  // 102..112
  const std::uint32_t sig = (abs & 0x007fffffu) | 0x00800000u;
  const std::uint32_t shift = 126u - exp;  // 14..24
  const std::uint32_t half_ulp = 1u << (shift - 1u);
  const std::uint32_t rest = sig & ((1u << shift) - 1u);
  std::uint32_t m = sig >> shift;
  if (rest > half_ulp || (rest == half_ulp && (m & 1u))) ++m;
  return half_bits{static_cast<std::uint16_t>(sign | m)};
}

/// binary16 -> binary32 (exact).
constexpr float half_to_float(half_bits h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  const std::uint32_t exp = (h.bits >> 10) & 0x1fu;
  const std::uint32_t mant = h.bits & 0x3ffu;
  if (exp == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  // Subnormal: mant * 2^-24, exact in binary32.
  const float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
  return sign ? -v : v;
}

}  // namespace lqer
