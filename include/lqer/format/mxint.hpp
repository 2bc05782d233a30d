// lqer — MX block integers: `mxint<Bits, Block, Rule>`, one shared E8M0
// exponent per block of `Block` elements along the reduction axis.
//
// Two rules exist in the literature and both are implemented exactly as
// written in DESIGN.md §2 (they give different results on the same data):
//
//  * mx_rule::ocp — OCP MX v1.0 / microsoft/microxcaling:
//        e     = floor(log2(amax))                   (emax_elem = 0 for ints)
//        q     = clamp(round_half_away(x / 2^e · 2^(Bits−2)), −(2^(Bits−1)−1), 2^(Bits−1)−1)
//        value = q · 2^(e − (Bits−2))
//    The element is a two's-complement fixed-point number with Bits−2
//    fraction bits, so the block's largest element lands in [1, 2) · 2^e and
//    values up to (2^(Bits−1)−1)/2^(Bits−2) ≈ 2 − 2^(2−Bits) are representable;
//    the top of that range saturates.
//
//  * mx_rule::lqer — the LQER authors' `block_fp` quantizer:
//        e     = ceil(log2(amax))
//        m     = clamp(round_half_even(|x| / 2^e · 2^(Bits−1)), 0, 2^(Bits−1)−1)
//        value = sign(x) · m · 2^(e − (Bits−1))
//    Sign-magnitude with Bits−1 magnitude bits; |x| / 2^e ≤ 1, so only a value
//    rounding to exactly 2^(Bits−1) saturates. When amax is an exact power of
//    two the two rules pick exponents one apart: OCP keeps full precision for
//    amax, LQER saturates it to (2^(Bits−1)−1)/2^(Bits−1) · amax.
//
// Both are stored the same way — a signed code q and value = q · 2^(e − F) with
// F = kFractionBits — so kernels treat them identically.
//
// Exponent range: E8M0 holds 2^-127 … 2^127 and e is clamped to it. For a
// block whose amax is below 2^-127 (subnormal floats) the elements are scaled
// by at most 2^(127+F) and round to small codes or zero; for amax > 2^127 the
// LQER rule's ceil would need 2^128 — the reference allows that (its
// exponent range is [−127, 128]) but E8M0 cannot hold it, so the code
// saturates instead: the only place the two may differ, and only above 2^127.
// An all-zero block (also all −0.0) encodes to codes 0 with exponent −127 and
// decodes to +0.0. The LQER reference adds 1e-9 to |x| before rounding and
// passes |x| ≲ 1e-8 through unquantized (torch.isclose quirks); lqer does
// neither.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <xsimd/xsimd.hpp>

#include "lqer/config.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/format.hpp"
#include "lqer/format/rounding.hpp"

namespace lqer {

/// Which MX exponent/rounding rule (see the file comment).
enum class mx_rule {
  ocp,   ///< OCP MX v1.0 (microxcaling): floor exponent, round half away from zero
  lqer,  ///< LQER reference block_fp: ceil exponent, sign-magnitude, round half to even
};

inline const char* to_string(mx_rule r) noexcept { return r == mx_rule::ocp ? "ocp" : "lqer"; }

template <int Bits, int Block, mx_rule Rule = mx_rule::ocp>
struct mxint {
  static_assert(Bits >= 2 && Bits <= 8, "mxint: Bits must be in [2, 8]: codes are held in int8 and need a sign bit");
  static_assert(Block >= 2 && Block <= 1024 && Block % 2 == 0,
                "mxint: Block must be an even length in [2, 1024] (two 4-bit codes share a byte, so a block "
                "must start on a byte boundary); MX blocks are per-block, not per-row: use intq for kPerRow");

  using block_scale = e8m0;
  static constexpr int kBits = Bits;
  static constexpr int kBlock = Block;
  static constexpr mx_rule kRule = Rule;
  static constexpr int kQmax = (1 << (Bits - 1)) - 1;
  static constexpr int kQmin = -kQmax;  // symmetric: −2^(Bits−1) is never produced
  static constexpr bool kHasZeroPoint = false;
  static constexpr bool kHasMin = false;
  static constexpr int kScaleBits = 8;
  static constexpr scale_kind kScaleKind = scale_kind::e8m0_pow2;
  /// Linear codes: q stands for q (value = q · 2^(e − kFractionBits)).
  static constexpr int code_value(std::int8_t q) noexcept { return q; }
  /// value = q · 2^(e − kFractionBits)
  static constexpr int kFractionBits = Rule == mx_rule::ocp ? Bits - 2 : Bits - 1;
  static constexpr rounding kRounding = Rule == mx_rule::ocp ? rounding::half_away_from_zero : rounding::half_to_even;

  static std::string name() {
    // Appended piece by piece: see intq::name() (GCC 12's false -Wrestrict).
    std::string s = "mxint";
    s += std::to_string(Bits);
    s += "_b";
    s += std::to_string(Block);
    s += '_';
    s += to_string(Rule);
    return s;
  }

  // Storage in files (io/checkpoint.hpp, docs/checkpoint.md): a block's record
  // is its E8M0 byte, written as safetensors' F8_E8M0; there is no zero point.
  using stored_scale = e8m0;
  static constexpr e8m0 store_scale(e8m0 s) noexcept { return s; }
  static constexpr std::int8_t store_zero(e8m0) noexcept { return 0; }
  static constexpr e8m0 load_scale(e8m0 d, std::int8_t /*zero: none*/) noexcept { return d; }

  /// The block's shared scale for its largest magnitude `amax` (finite, ≥ 0).
  static e8m0 shared_scale(float amax) noexcept {
    if (!(amax > 0.0f)) return e8m0::from_exponent(e8m0::kMinExponent);
    const int e = Rule == mx_rule::ocp ? detail::floor_log2(amax) : detail::ceil_log2(amax);
    return e8m0::from_exponent(e);
  }

  /// One element's code under block scale `s`. Scaling by a power of two is
  /// exact (it can only lose bits that underflow below 2^-149, i.e. codes that
  /// round to 0 anyway).
  static std::int8_t encode(float x, e8m0 s) noexcept {
    const int shift = kFractionBits - s.exponent();
    if constexpr (Rule == mx_rule::ocp) {
      const float q = round_half_away(detail::mul_pow2(x, shift));
      return static_cast<std::int8_t>(std::clamp(q, float(kQmin), float(kQmax)));
    } else {
      const float m = std::min(round_half_even(detail::mul_pow2(std::fabs(x), shift)), float(kQmax));
      return static_cast<std::int8_t>(std::signbit(x) ? -m : m);
    }
  }

  /// 2^(e − kFractionBits); NaN for the E8M0 NaN encoding (bits 255), which no
  /// encoder produces, so that quantized_matrix::from_codes refuses it from a file.
  static float scale_value(e8m0 s) noexcept {
    return s.is_nan() ? NAN : detail::mul_pow2(1.0f, s.exponent() - kFractionBits);
  }
  static int zero_point(e8m0) noexcept { return 0; }
  static float min_value(e8m0) noexcept { return 0.0f; }
  /// Exact: |q| < 2^7 times a power of two ≥ 2^-134 is representable in float.
  static float decode(std::int8_t q, e8m0 s) noexcept {
    return detail::mul_pow2(static_cast<float>(q), s.exponent() - kFractionBits);
  }

  static e8m0 quantize_block(const float* x, index_t n, index_t stride, std::int8_t* q) noexcept {
    float amax = 0.0f;
    for (index_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i * stride]));
    const e8m0 s = shared_scale(amax);
    for (index_t i = 0; i < n; ++i) q[i] = encode(x[i * stride], s);
    return s;
  }

  /// quantize_block for one whole contiguous block (n = Block, stride 1), in
  /// SIMD where the block is whole vectors of the compile target. Bit-identical
  /// to quantize_block: the same shared_scale, the same multiply by 2^shift
  /// (mul_pow2's one-multiply range; a block outside it, amax ≲ 2^-118 or
  /// ≳ 2^126, takes the scalar path), the same rounding (rounding.hpp's batch
  /// forms), the same clamp. tests/format/test_mxint.cpp checks every class of input.
  static e8m0 quantize_whole_block(const float* x, std::int8_t* q) noexcept {
    using batch = xsimd::batch<float>;
    constexpr index_t kLanes = static_cast<index_t>(batch::size);
    if constexpr (Block % kLanes != 0) {
      return quantize_block(x, Block, 1, q);
    } else {
      constexpr index_t kVectors = Block / kLanes;
      batch m = xsimd::abs(batch::load_unaligned(x));
      for (index_t v = 1; v < kVectors; ++v) m = xsimd::max(m, xsimd::abs(batch::load_unaligned(x + v * kLanes)));
      alignas(64) float lanes[kLanes];
      m.store_aligned(lanes);
      float amax = lanes[0];
      for (index_t i = 1; i < kLanes; ++i) amax = std::max(amax, lanes[i]);
      const e8m0 s = shared_scale(amax);
      const int shift = kFractionBits - s.exponent();
      if (shift < -126 || shift > 127) return quantize_block(x, Block, 1, q);
      const batch factor(detail::mul_pow2(1.0f, shift));  // what mul_pow2(x, shift) multiplies by
      alignas(64) float codes[Block];
      for (index_t v = 0; v < kVectors; ++v) {
        const batch y = batch::load_unaligned(x + v * kLanes) * factor;
        batch c;
        if constexpr (Rule == mx_rule::ocp) {
          c = xsimd::clip(round_half_away(y), batch(float(kQmin)), batch(float(kQmax)));
        } else {
          const batch mag = xsimd::min(round_half_even(xsimd::abs(y)), batch(float(kQmax)));
          c = xsimd::copysign(mag, y);  // signbit(x) ? −m : m (m ≥ 0; y has x's sign)
        }
        c.store_aligned(codes + v * kLanes);
      }
      for (index_t i = 0; i < Block; ++i) q[i] = static_cast<std::int8_t>(codes[i]);  // integral, in range
      return s;
    }
  }
};

/// The paper's formats, by name.
template <int Block = 32>
using mxint4_ocp = mxint<4, Block, mx_rule::ocp>;
template <int Block = 32>
using mxint8_ocp = mxint<8, Block, mx_rule::ocp>;
template <int Block = 16>
using mxint4_lqer = mxint<4, Block, mx_rule::lqer>;
template <int Block = 16>
using mxint8_lqer = mxint<8, Block, mx_rule::lqer>;

}  // namespace lqer
