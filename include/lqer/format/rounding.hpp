// lqer — the rounding rules the formats are defined with, as plain scalar
// functions and their xsimd batch forms (same steps, lane by lane, so the
// same bits). They do not depend on the floating-point environment (no rint /
// nearbyint), so a result never changes with the caller's MXCSR / fenv state.
// Vectorized kernels that round must agree with these bit for bit; the kernel
// tests check that.
#pragma once

#include <cmath>
#include <xsimd/xsimd.hpp>

namespace lqer {

/// The rounding a format uses to turn a scaled real into an integer code.
enum class rounding {
  half_away_from_zero,  ///< 2.5 -> 3, -2.5 -> -3 (C `round`; OCP MX, ggml Q8_0)
  half_to_even,         ///< 2.5 -> 2, 3.5 -> 4 (IEEE default; torch.round; LQER block_fp)
};

namespace detail {
/// Keeps a compiler from contracting `a + b·c` into an FMA across this value
/// (GCC contracts by default in GNU mode wherever the target has FMA, e.g.
/// every AArch64 build): the reference and the kernels round a block term's
/// product on its own, then add it.
inline float no_contract(float v) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}
}  // namespace detail

// Both rules split x = t + f with t = trunc(x) (a float-to-int conversion,
// which truncates whatever the rounding mode) and f = x − t. For |x| < 2^23
// both steps are exact: t fits an int, and f is x with its integer bits
// cleared. From 2^23 up every float is already an integer; NaN and ±Inf pass
// through. No libm call (std::round and fmod are calls at -O2 on x86-64):
// encoders round once per element, and rounding was most of the cost of
// quantizing a weight.

/// Round half away from zero (C `round`, exactly, for every float).
inline float round_half_away(float x) noexcept {
  const float a = std::fabs(x);
  if (!(a < 0x1p23f)) return x;  // integral, ±Inf or NaN
  const int i = static_cast<int>(a);
  const int up = (a - static_cast<float>(i)) >= 0.5f;   // 0 or 1, no branch (random data mispredicts)
  return std::copysign(static_cast<float>(i + up), x);  // −0.3 → −0, as round() does
}

/// Round half to even, independent of the current rounding mode.
inline float round_half_even(float x) noexcept {
  const float a = std::fabs(x);
  if (!(a < 0x1p23f)) return x;  // integral, ±Inf or NaN
  const int i = static_cast<int>(a);
  const float f = a - static_cast<float>(i);
  const int up = static_cast<int>(f > 0.5f) | (static_cast<int>(f == 0.5f) & i);  // i & 1: ties go to even
  return std::copysign(static_cast<float>(i + (up & 1)), x);                      // −0.3 → −0, as rint() does
}

// The batch forms: the same split with t = trunc(|x|) as a float (exact, and
// independent of the rounding mode like the conversion above), t + 1 exact
// below 2^23, and "i odd" as trunc(t/2) ≠ t/2 (t/2 exact).

/// round_half_away, lane by lane.
template <class A>
inline xsimd::batch<float, A> round_half_away(const xsimd::batch<float, A>& x) noexcept {
  using batch = xsimd::batch<float, A>;
  const batch a = xsimd::abs(x), t = xsimd::trunc(a);
  const batch r = t + xsimd::select(a - t >= batch(0.5f), batch(1.0f), batch(0.0f));
  return xsimd::select(a < batch(0x1p23f), xsimd::copysign(r, x), x);
}

/// round_half_even, lane by lane.
template <class A>
inline xsimd::batch<float, A> round_half_even(const xsimd::batch<float, A>& x) noexcept {
  using batch = xsimd::batch<float, A>;
  const batch a = xsimd::abs(x), t = xsimd::trunc(a), f = a - t, half_t = t * batch(0.5f);
  const auto up = (f > batch(0.5f)) | ((f == batch(0.5f)) & (xsimd::trunc(half_t) != half_t));
  const batch r = t + xsimd::select(up, batch(1.0f), batch(0.0f));
  return xsimd::select(a < batch(0x1p23f), xsimd::copysign(r, x), x);
}

template <rounding R>
inline float round_with(float x) noexcept {
  if constexpr (R == rounding::half_away_from_zero)
    return round_half_away(x);
  else
    return round_half_even(x);
}

}  // namespace lqer
