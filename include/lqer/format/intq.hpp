// lqer — scaled integers: `intq<Bits, Group, Scheme, Scale>`, one real scale
// (fp32 or fp16) per group of `Group` elements along the reduction axis, or
// one per row with Group = kPerRow (per-channel weights, per-token INT8).
//
// Schemes (q are the integer codes, d the group's scale):
//
//  * symmetric:  amax = max|x|, d = amax / qmax (qmax = 2^(Bits−1) − 1),
//                q = clamp(round_half_away(x · (1/d)), −qmax, qmax), value = q·d.
//                With Bits = 8, Group = 32, fp16 scale this is llama.cpp's Q8_0
//                bit for bit: it too multiplies by the reciprocal (not divides),
//                quantizes with the fp32 d and stores d rounded to fp16.
//  * signed_extreme (llama.cpp's Q4_0 rule, any Bits): m = the element of largest
//                magnitude with its sign (the first one on ties), d = m / −2^(Bits−1),
//                u = min(2^Bits − 1, trunc(x·(1/d) + 2^(Bits−1) + 0.5)), q = u − 2^(Bits−1),
//                value = q·d. The extreme element maps to −2^(Bits−1) exactly, so
//                the full two's-complement range [−2^(Bits−1), 2^(Bits−1)−1] is used.
//  * asymmetric: lo = min(min x, 0), hi = max(max x, 0), d = (hi − lo)/(2^Bits − 1),
//                z = clamp(round_half_away(−lo·(1/d)), 0, 2^Bits − 1),
//                u = clamp(round_half_away(x·(1/d)) + z, 0, 2^Bits − 1), value = (u − z)·d.
//                (GPTQ / AWQ style with the zero in range, so 0 is exact.) Codes and
//                the zero point are held shifted by −2^(Bits−1) to fit int8.
//  * with_min (llama.cpp's Q4_1 rule, any Bits): lo = min x, hi = max x (not
//                widened to include 0), d = (hi − lo)/(2^Bits − 1),
//                u = min(2^Bits − 1, trunc((x − lo)·(1/d) + 0.5)), m = lo,
//                value = u·d + m with d and m as stored. The block keeps a second
//                real record, m (kHasMin); codes are held as q = u − 2^(Bits−1)
//                like the others (so 4-bit codes pack as the same nibbles), and
//                code_value(q) = u gives the integer back. (f32 scales only: a group
//                spanning more than FLT_MAX clamps its top codes where u·d stays finite.)
//
// A group whose scale is 0 (all zeros) encodes to code 0 / zero point and
// decodes to 0. With an fp16 scale, d is rounded to fp16 only when stored, as
// ggml does: the codes are chosen with the fp32 d. A d beyond fp16's range
// becomes ±Inf when stored: use an fp32 scale for such data (the matrix
// quantizer rejects that case with a value_error rather than storing Inf).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "lqer/config.hpp"
#include "lqer/format/format.hpp"
#include "lqer/format/fp16.hpp"
#include "lqer/format/rounding.hpp"

namespace lqer {

enum class int_scheme { symmetric, signed_extreme, asymmetric, with_min };
enum class scale_dtype { f32, f16 };

inline const char* to_string(int_scheme s) noexcept {
  switch (s) {
    case int_scheme::symmetric: return "sym";
    case int_scheme::signed_extreme: return "sext";
    case int_scheme::asymmetric: return "asym";
    case int_scheme::with_min: return "min";
  }
  return "?";
}

namespace detail {
template <scale_dtype S>
struct scale_storage;
template <>
struct scale_storage<scale_dtype::f32> {
  using type = float;
  static float store(float d) noexcept { return d; }
  static float load(float d) noexcept { return d; }
};
template <>
struct scale_storage<scale_dtype::f16> {
  using type = half_bits;
  static half_bits store(float d) noexcept { return float_to_half(d); }
  static float load(half_bits d) noexcept { return half_to_float(d); }
};

/// v / d computed as v · id (id = 1/d, the multiply every encoder here uses, as
/// llama.cpp does) — except when 1/d overflowed to +Inf (d < 2^-128: a block of
/// subnormals), where v · id would be ±Inf or, for v = 0, NaN (0 · Inf), whose
/// conversion to int is undefined behaviour. There the division itself is exact
/// enough and finite: every encoder's |v| is at most a few d (|v| ≤ amax = qmax·d).
/// Blocks with a normal d keep the multiply, so their codes are unchanged.
inline float times_inverse(float v, float id, float d) noexcept { return std::isfinite(id) ? v * id : v / d; }

/// The step of a range scheme (asymmetric, with_min): d = (hi − lo)/umax. When
/// |hi|, |lo| are near FLT_MAX, hi − lo overflows (d = Inf, then NaN codes; ggml
/// would store Inf); hi/umax − lo/umax is finite there (an fp16 d may still
/// overflow, and the matrix quantizer refuses that with a sentence).
inline float range_step(float lo, float hi, float umax) noexcept {
  const float d = (hi - lo) / umax;
  return std::isfinite(d) ? d : hi / umax - lo / umax;
}

/// The largest code distance c ≤ umax whose c·d is finite, so that decoding
/// (u − z)·d or u·d never gives Inf from finite data. For every group but one
/// spanning about ±FLT_MAX it is umax; computed in double so that c·d ≤ FLT_MAX
/// holds exactly. d = 0: umax.
inline float finite_code_span(float d, float umax) noexcept {
  return d != 0.0f
             ? static_cast<float>(std::min(double(umax), std::floor(double(std::numeric_limits<float>::max()) / d)))
             : umax;
}

/// intq's per-group record: the stored scale, the zero point (asymmetric
/// scheme; 0 otherwise) and, with a block minimum only, the stored minimum.
template <class T, bool Min>
struct intq_record {
  T d{};
  std::int8_t zero = 0;
  friend bool operator==(const intq_record&, const intq_record&) = default;
};
template <class T>
struct intq_record<T, true> {
  T d{};
  std::int8_t zero = 0;
  T m{};
  friend bool operator==(const intq_record&, const intq_record&) = default;
};

}  // namespace detail

template <int Bits, int Group, int_scheme Scheme = int_scheme::symmetric, scale_dtype Scale = scale_dtype::f32>
struct intq {
  static_assert(Bits >= 2 && Bits <= 8, "intq: Bits must be in [2, 8]: codes are held in int8");
  static_assert(Group == kPerRow || (Group >= 2 && Group <= 4096 && Group % 2 == 0),
                "intq: Group must be kPerRow (whole row) or an even length in [2, 4096] (two 4-bit codes "
                "share a byte, so a group must start on a byte boundary)");

  using scale_type = typename detail::scale_storage<Scale>::type;
  static constexpr bool kHasMin = Scheme == int_scheme::with_min;
  /// Per-group record: the stored scale; for the asymmetric scheme the zero
  /// point (shifted); for with_min the stored minimum m.
  using block_scale = detail::intq_record<scale_type, kHasMin>;

  static constexpr int kBits = Bits;
  static constexpr int kBlock = Group;
  static constexpr int_scheme kScheme = Scheme;
  static constexpr scale_dtype kScaleDtype = Scale;
  static constexpr int kOffset = 1 << (Bits - 1);  // unsigned code u = q + kOffset
  static constexpr int kQmax = kOffset - 1;
  static constexpr int kQmin = Scheme == int_scheme::symmetric ? -(kOffset - 1) : -kOffset;
  static constexpr bool kHasZeroPoint = Scheme == int_scheme::asymmetric;
  static constexpr int kScaleBits = (Scale == scale_dtype::f32 ? 32 : 16) * (kHasMin ? 2 : 1) + (kHasZeroPoint ? 8 : 0);
  static constexpr scale_kind kScaleKind = Scale == scale_dtype::f32 ? scale_kind::f32 : scale_kind::f16;
  /// q stands for q (value = (q − zero) · d), linear codes; with a block
  /// minimum for the unsigned u = q + 2^(Bits−1) (value = u · d + m).
  static constexpr int code_value(std::int8_t q) noexcept { return kHasMin ? q + kOffset : q; }

  static std::string name() {
    // Appended piece by piece rather than `"int" + std::to_string(...) + ...`:
    // GCC 12 warns falsely (-Wrestrict, GCC bug 105651) on `literal + string&&`
    // once it is inlined at -O2/-O3.
    std::string s = "int";
    s += std::to_string(Bits);
    s += Group == kPerRow ? "_row" : "_g";
    if (Group != kPerRow) s += std::to_string(Group);
    s += '_';
    s += to_string(Scheme);
    s += Scale == scale_dtype::f16 ? "_f16" : "_f32";
    return s;
  }

  // Storage in files (io/checkpoint.hpp, docs/checkpoint.md): a group's record
  // is its scale as stored here (F32, or F16 bits), plus — asymmetric scheme
  // only — its zero point as I8 (shifted by −2^(Bits−1), as held in block_scale).
  using stored_scale = scale_type;
  static constexpr scale_type store_scale(const block_scale& s) noexcept { return s.d; }
  static constexpr std::int8_t store_zero(const block_scale& s) noexcept { return s.zero; }
  static constexpr block_scale load_scale(scale_type d, std::int8_t zero) noexcept requires(!kHasMin) {
    return block_scale{d, kHasZeroPoint ? zero : std::int8_t{0}};
  }
  /// The minimum plane (with_min only): stored like the scale.
  static constexpr scale_type store_min(const block_scale& s) noexcept requires kHasMin { return s.m; }
  static constexpr block_scale load_scale(scale_type d, std::int8_t /*zero: none*/,
                                          scale_type m) noexcept requires kHasMin {
    return block_scale{d, 0, m};
  }

  static float scale_value(const block_scale& s) noexcept { return detail::scale_storage<Scale>::load(s.d); }
  static int zero_point(const block_scale& s) noexcept { return s.zero; }
  static float min_value(const block_scale& s) noexcept {
    if constexpr (kHasMin)
      return detail::scale_storage<Scale>::load(s.m);
    else
      return 0.0f;
  }
  static float decode(std::int8_t q, const block_scale& s) noexcept {
    if constexpr (kHasMin)  // u·d rounded on its own, then + m: ggml's dequantize_row_q4_1 (no FMA)
      return detail::no_contract(static_cast<float>(code_value(q)) * scale_value(s)) + min_value(s);
    else
      return static_cast<float>(static_cast<int>(q) - s.zero) * scale_value(s);
  }

  static block_scale quantize_block(const float* x, index_t n, index_t stride, std::int8_t* q) noexcept {
    block_scale s{};
    if constexpr (Scheme == int_scheme::symmetric) {
      float amax = 0.0f;
      for (index_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i * stride]));
      float d = amax / float(kQmax);
      // Near FLT_MAX, d rounded up can make kQmax·d overflow: decoding the
      // largest element would give Inf from finite data. One ulp down keeps it
      // finite (the element then clamps to kQmax, off by about one ulp of itself).
      if (!std::isfinite(float(kQmax) * d)) d = std::nextafter(d, 0.0f);
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      for (index_t i = 0; i < n; ++i)
        q[i] = static_cast<std::int8_t>(
            std::clamp(round_half_away(detail::times_inverse(x[i * stride], id, d)), float(kQmin), float(kQmax)));
      s.d = detail::scale_storage<Scale>::store(d);
    } else if constexpr (Scheme == int_scheme::signed_extreme) {
      float amax = 0.0f, extreme = 0.0f;
      for (index_t i = 0; i < n; ++i) {
        const float v = x[i * stride];
        if (amax < std::fabs(v)) {  // strict: the first of equal magnitudes wins, as in ggml
          amax = std::fabs(v);
          extreme = v;
        }
      }
      const float d = extreme / -float(kOffset);
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      for (index_t i = 0; i < n; ++i) {
        // Two separately rounded operations, as written in ggml's C: `volatile`
        // keeps a compiler from contracting them into one FMA (GCC does so by
        // default in GNU mode), which would change codes at near-ties.
        volatile float t = detail::times_inverse(x[i * stride], id, d);
        const float u = std::min(float((1 << Bits) - 1), std::trunc(t + (float(kOffset) + 0.5f)));
        q[i] = static_cast<std::int8_t>(static_cast<int>(u) - kOffset);
      }
      s.d = detail::scale_storage<Scale>::store(d);
    } else if constexpr (Scheme == int_scheme::with_min) {
      float lo = x[0], hi = x[0];
      for (index_t i = 1; i < n; ++i) {
        lo = std::min(lo, x[i * stride]);
        hi = std::max(hi, x[i * stride]);
      }
      constexpr float umax = float((1 << Bits) - 1);
      const float d = detail::range_step(lo, hi, umax);
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      // The largest code whose u·d is finite (decode forms u·d, then adds m).
      const float top = detail::finite_code_span(d, umax);
      for (index_t i = 0; i < n; ++i) {
        // (x − lo)·id, then + 0.5, each rounded (volatile: no FMA contraction, as
        // ggml's C). t ≥ 0, so trunc is ggml's (int8_t) cast; the min first keeps
        // the conversion defined where x − lo overflowed (t = +Inf).
        volatile float t = detail::times_inverse(x[i * stride] - lo, id, d);
        const float u = std::min(top, std::trunc(t + 0.5f));
        q[i] = static_cast<std::int8_t>(static_cast<int>(u) - kOffset);
      }
      s.d = detail::scale_storage<Scale>::store(d);
      s.m = detail::scale_storage<Scale>::store(lo);
    } else {
      float lo = 0.0f, hi = 0.0f;
      for (index_t i = 0; i < n; ++i) {
        lo = std::min(lo, x[i * stride]);
        hi = std::max(hi, x[i * stride]);
      }
      constexpr float umax = float((1 << Bits) - 1);
      const float d = detail::range_step(lo, hi, umax);
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const float z = std::clamp(round_half_away(detail::times_inverse(-lo, id, d)), 0.0f, umax);
      // Codes whose decode (u − z)·d would exceed FLT_MAX (a group spanning about
      // ±FLT_MAX, z rounded to the middle; or umax·d rounded up) are clamped to the
      // last finite one: such an element is off by at most one step. For every
      // other group span = umax and the clamp is the plain [0, umax].
      const float span = detail::finite_code_span(d, umax);
      const float ulo = std::max(0.0f, z - span), uhi = std::min(umax, z + span);
      for (index_t i = 0; i < n; ++i) {
        const float u = std::clamp(round_half_away(detail::times_inverse(x[i * stride], id, d)) + z, ulo, uhi);
        q[i] = static_cast<std::int8_t>(static_cast<int>(u) - kOffset);
      }
      s.d = detail::scale_storage<Scale>::store(d);
      s.zero = static_cast<std::int8_t>(static_cast<int>(z) - kOffset);
    }
    return s;
  }
};

/// llama.cpp's Q4_0 encoding (block 32, fp16 scale, signed-extreme rule).
/// For its exact 18-byte block layout (nibble order: element j in the low
/// nibble of byte j, element j+16 in the high nibble) see ggml_blocks.hpp.
using q4_0 = intq<4, 32, int_scheme::signed_extreme, scale_dtype::f16>;
/// llama.cpp's Q8_0 encoding (block 32, fp16 scale, symmetric, round half away).
using q8_0 = intq<8, 32, int_scheme::symmetric, scale_dtype::f16>;
/// llama.cpp's Q4_1 encoding (block 32, fp16 scale and fp16 minimum; value = u·d + m).
using q4_1 = intq<4, 32, int_scheme::with_min, scale_dtype::f16>;
/// Per-channel / per-token symmetric INT8 with an fp32 scale.
using int8_per_row = intq<8, kPerRow>;
/// GPTQ/AWQ-style INT4, group 128, asymmetric, fp16 scale.
using int4_g128_asym = intq<4, 128, int_scheme::asymmetric, scale_dtype::f16>;

}  // namespace lqer
