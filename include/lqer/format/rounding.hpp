// lqer — the rounding rules the formats are defined with, as plain scalar
// functions. They do not depend on the floating-point environment (no rint /
// nearbyint), so a result never changes with the caller's MXCSR / fenv state.
// Vectorized kernels that round must agree with these bit for bit; the kernel
// tests check that.
#pragma once

#include <cmath>

namespace lqer {

/// The rounding a format uses to turn a scaled real into an integer code.
enum class rounding {
  half_away_from_zero,  ///< 2.5 -> 3, -2.5 -> -3 (C `round`; OCP MX, ggml Q8_0)
  half_to_even,         ///< 2.5 -> 2, 3.5 -> 4 (IEEE default; torch.round; LQER block_fp)
};

/// Round half away from zero. `std::round` is exact for every float (unlike
/// `floor(|x| + 0.5)`, which rounds 0.49999997f up because the sum is inexact).
inline float round_half_away(float x) noexcept { return std::round(x); }

/// Round half to even, independent of the current rounding mode.
inline float round_half_even(float x) noexcept {
  const float r = std::round(x);  // ties go away from zero here ...
  // ... so on an exact tie whose away-rounded result is odd, step back toward zero.
  if (std::fabs(x - std::trunc(x)) == 0.5f && std::fmod(r, 2.0f) != 0.0f) return r - std::copysign(1.0f, x);
  return r;
}

template <rounding R>
inline float round_with(float x) noexcept {
  if constexpr (R == rounding::half_away_from_zero)
    return round_half_away(x);
  else
    return round_half_even(x);
}

}  // namespace lqer
