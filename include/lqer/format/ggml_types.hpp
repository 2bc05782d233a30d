// lqer — ggml's tensor types: their ids (as GGUF files store them), block sizes,
// and decoders to float that reproduce ggml's dequantize_row_* bit for bit.
//
// A ggml tensor row is a run of whole blocks; a block holds `block_elems`
// elements in `block_bytes` bytes (1 and sizeof(T) for the plain types). The
// layouts, all little-endian, with ggml's names (ggml-common.h) — "fp16" is
// IEEE binary16, value formulas as ggml-quants.c computes them in float:
//
//   Q4_0  (32, 18)  fp16 d, qs[16]: element j low nibble of qs[j], j+16 high;  (u − 8)·d
//   Q4_1  (32, 20)  fp16 d, fp16 m, qs[16] as Q4_0;                             u·d + m
//   Q5_0  (32, 22)  fp16 d, u32 qh (bit j = 5th bit of element j), qs[16];      (u − 16)·d
//   Q5_1  (32, 24)  fp16 d, fp16 m, u32 qh, qs[16];                             u·d + m
//   Q8_0  (32, 34)  fp16 d, int8 qs[32];                                        q·d
//   IQ4_NL(32, 18)  fp16 d, qs[16] as Q4_0, codes index a fixed table kIq4nl;   d·kIq4nl[u]
//   Super-blocks of 256 (QK_K), cut into sub-blocks with 4–8-bit scales:
//   Q2_K  (256, 84)  scales[16] (low nibble scale, high nibble min), qs[64] (2-bit), fp16 d, fp16 dmin
//   Q3_K  (256, 110) hmask[32] (3rd bit, set = no −4 offset), qs[64] (2-bit), scales[12] (16 × 6-bit), fp16 d
//   Q4_K  (256, 144) fp16 d, fp16 dmin, scales[12] (8 scales + 8 mins, 6-bit), qs[128]
//   Q5_K  (256, 176) fp16 d, fp16 dmin, scales[12] as Q4_K, qh[32], qs[128]
//   Q6_K  (256, 210) ql[128], qh[64], int8 scales[16], fp16 d
//   Q8_K  (256, 292) f32 d, int8 qs[256], int16 bsums[16] (sums for dot products; not needed to decode)
//
// Bit-exactness. Every decoder evaluates ggml's expression in the same order and
// in float: `x0*d + m` is round(round(x0·d) + m), `d*sc*q` is round(round(d·sc)·q).
// A compiler allowed to contract `a*b + c` into an FMA (GCC does by default in
// GNU mode when the target has FMA) cannot change a result here: in every
// multiply-add below the product is exact in binary32 — an fp16 scale (11
// significant bits) times integer sub-scales and codes of at most 11 bits
// together stays within float's 24 — so fma(a, b, c) and round(a·b) + c agree.
// The one product that can round (Q8_K's f32 d times its code) has no add.
//
// Types ggml defines but lqer does not decode (the IQ2/IQ3/IQ1 grids, TQ, MXFP4,
// NVFP4, Q1_0, Q8_1) still have their sizes here, so that a file holding them can
// be opened and its other tensors read; decoding them is an unsupported_error.
// Ids ggml removed (4, 5, 31–33, 36–38) or never assigned are unknown.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "lqer/error.hpp"
#include "lqer/format/fp16.hpp"
#include "lqer/format/ggml_blocks.hpp"

namespace lqer {

/// ggml's tensor type ids (enum ggml_type), as GGUF tensor infos store them.
enum class ggml_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
  nvfp4 = 40,
  q1_0 = 41,
};

/// What lqer knows about one ggml type.
struct ggml_type_traits {
  const char* name = nullptr;     ///< ggml's name ("Q4_K", "F32"); nullptr for an unknown id
  std::uint32_t block_elems = 0;  ///< elements per block (1 for the plain types)
  std::uint32_t block_bytes = 0;  ///< bytes per block
  bool decodable = false;         ///< ggml_dequantize handles it
};

namespace detail {
inline constexpr std::size_t kGgmlTypeIds = 42;
inline constexpr std::array<ggml_type_traits, kGgmlTypeIds> kGgmlTypes = [] {
  std::array<ggml_type_traits, kGgmlTypeIds> t{};
  const auto set = [&](ggml_type id, const char* name, std::uint32_t elems, std::uint32_t bytes, bool decodable) {
    t[static_cast<std::size_t>(id)] = {name, elems, bytes, decodable};
  };
  set(ggml_type::f32, "F32", 1, 4, true);
  set(ggml_type::f16, "F16", 1, 2, true);
  set(ggml_type::q4_0, "Q4_0", 32, 18, true);
  set(ggml_type::q4_1, "Q4_1", 32, 20, true);
  set(ggml_type::q5_0, "Q5_0", 32, 22, true);
  set(ggml_type::q5_1, "Q5_1", 32, 24, true);
  set(ggml_type::q8_0, "Q8_0", 32, 34, true);
  set(ggml_type::q8_1, "Q8_1", 32, 40, false);
  set(ggml_type::q2_k, "Q2_K", 256, 84, true);
  set(ggml_type::q3_k, "Q3_K", 256, 110, true);
  set(ggml_type::q4_k, "Q4_K", 256, 144, true);
  set(ggml_type::q5_k, "Q5_K", 256, 176, true);
  set(ggml_type::q6_k, "Q6_K", 256, 210, true);
  set(ggml_type::q8_k, "Q8_K", 256, 292, true);
  set(ggml_type::iq2_xxs, "IQ2_XXS", 256, 66, false);
  set(ggml_type::iq2_xs, "IQ2_XS", 256, 74, false);
  set(ggml_type::iq3_xxs, "IQ3_XXS", 256, 98, false);
  set(ggml_type::iq1_s, "IQ1_S", 256, 50, false);
  set(ggml_type::iq4_nl, "IQ4_NL", 32, 18, true);
  set(ggml_type::iq3_s, "IQ3_S", 256, 110, false);
  set(ggml_type::iq2_s, "IQ2_S", 256, 82, false);
  set(ggml_type::iq4_xs, "IQ4_XS", 256, 136, false);
  set(ggml_type::i8, "I8", 1, 1, true);
  set(ggml_type::i16, "I16", 1, 2, true);
  set(ggml_type::i32, "I32", 1, 4, true);
  set(ggml_type::i64, "I64", 1, 8, true);
  set(ggml_type::f64, "F64", 1, 8, true);
  set(ggml_type::iq1_m, "IQ1_M", 256, 56, false);
  set(ggml_type::bf16, "BF16", 1, 2, true);
  set(ggml_type::tq1_0, "TQ1_0", 256, 54, false);
  set(ggml_type::tq2_0, "TQ2_0", 256, 66, false);
  set(ggml_type::mxfp4, "MXFP4", 32, 17, false);
  set(ggml_type::nvfp4, "NVFP4", 64, 36, false);
  set(ggml_type::q1_0, "Q1_0", 128, 18, false);
  return t;
}();
}  // namespace detail

/// The traits of a type id as stored in a file; name == nullptr when the id is
/// not a ggml type this library knows (removed, or newer than this table).
constexpr ggml_type_traits ggml_traits(std::uint32_t id) noexcept {
  return id < detail::kGgmlTypeIds ? detail::kGgmlTypes[id] : ggml_type_traits{};
}
constexpr ggml_type_traits ggml_traits(ggml_type t) noexcept { return ggml_traits(static_cast<std::uint32_t>(t)); }

/// ggml's name of the type ("Q4_K"), or "unknown".
constexpr const char* to_string(ggml_type t) noexcept {
  const char* n = ggml_traits(t).name;
  return n != nullptr ? n : "unknown";
}

// ---------------------------------------------------------------------------
// Block decoders (internals): one block at `p`, its elements to y[0, block_elems).

namespace detail {

inline float ggml_half_at(const std::uint8_t* p) noexcept { return half_to_float(get_half(p)); }
inline std::uint32_t ggml_u32_at(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) | (std::uint32_t{p[3]} << 24);
}

/// IQ4_NL's 16 non-uniform levels (ggml's kvalues_iq4nl): denser near zero,
/// where trained weights are.
inline constexpr std::array<std::int8_t, 16> kIq4nl{-127, -104, -83, -65, -49, -35, -22, -10,
                                                    1,    13,   25,  38,  53,  69,  89,  113};

/// Q5_0 and Q5_1 share the code layout: the low 4 bits as Q4_0's nibbles, the
/// 5th bit of element j in bit j of the little-endian u32 qh.
inline int ggml_q5_code(const std::uint8_t* qs, std::uint32_t qh, int i) noexcept {
  const int lo = i < 16 ? (qs[i] & 0x0f) : (qs[i - 16] >> 4);
  return lo | static_cast<int>(((qh >> i) & 1u) << 4);
}
inline void ggml_decode_q5_0(const std::uint8_t* p, float* y) noexcept {
  const float d = ggml_half_at(p);
  const std::uint32_t qh = ggml_u32_at(p + 2);
  for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(ggml_q5_code(p + 6, qh, i) - 16) * d;
}
inline void ggml_decode_q5_1(const std::uint8_t* p, float* y) noexcept {
  const float d = ggml_half_at(p), m = ggml_half_at(p + 2);
  const std::uint32_t qh = ggml_u32_at(p + 4);
  for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(ggml_q5_code(p + 8, qh, i)) * d + m;
}

inline void ggml_decode_iq4_nl(const std::uint8_t* p, float* y) noexcept {
  const float d = ggml_half_at(p);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kIq4nl[p[2 + j] & 0x0f]);
    y[j + 16] = d * static_cast<float>(kIq4nl[p[2 + j] >> 4]);
  }
}

inline void ggml_decode_q2_k(const std::uint8_t* p, float* y) noexcept {
  const std::uint8_t* scales = p;
  const std::uint8_t* q = p + 16;
  const float d = ggml_half_at(p + 80), dmin = ggml_half_at(p + 82);
  // 16 sub-blocks of 16: sub-block s takes 2-bit field (s / 2) % 4 of the 32
  // bytes q[32·(s / 8) + 16·(s % 2) + l].
  for (int s = 0; s < 16; ++s) {
    const float dl = d * static_cast<float>(scales[s] & 0x0f);
    const float ml = dmin * static_cast<float>(scales[s] >> 4);
    const std::uint8_t* qq = q + 32 * (s / 8) + 16 * (s % 2);
    const int shift = 2 * ((s / 2) % 4);
    for (int l = 0; l < 16; ++l) y[16 * s + l] = dl * static_cast<float>((qq[l] >> shift) & 3) - ml;
  }
}

inline void ggml_decode_q3_k(const std::uint8_t* p, float* y) noexcept {
  const std::uint8_t* hmask = p;
  const std::uint8_t* q = p + 32;
  const std::uint8_t* sc = p + 96;
  const float d = ggml_half_at(p + 108);
  // 16 six-bit scales: low 4 bits from sc[0..7] (low nibbles are scales 0–7,
  // high nibbles 8–15), high 2 bits from sc[8..11] (2-bit field s / 4 of sc[8 + s % 4]).
  for (int s = 0; s < 16; ++s) {
    const int lo = (sc[s % 8] >> (4 * (s / 8))) & 0x0f;
    const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
    const float dl = d * static_cast<float>((lo | (hi << 4)) - 32);
    // Codes as Q2_K's; hmask bit (s / 2) of byte 16·(s % 2) + l clear subtracts 4.
    const std::uint8_t* qq = q + 32 * (s / 8) + 16 * (s % 2);
    const std::uint8_t* hm = hmask + 16 * (s % 2);
    const int shift = 2 * ((s / 2) % 4);
    const int bit = s / 2;
    for (int l = 0; l < 16; ++l) {
      const int code = ((qq[l] >> shift) & 3) - (((hm[l] >> bit) & 1) != 0 ? 0 : 4);
      y[16 * s + l] = dl * static_cast<float>(code);
    }
  }
}

/// Q4_K / Q5_K's 6-bit scale and min of sub-block j (ggml's get_scale_min_k4):
/// j < 4 in the low 6 bits of bytes j and j + 4; j ≥ 4 split over byte j + 4's
/// nibbles and the top 2 bits of bytes j − 4 and j.
inline void ggml_scale_min_k4(int j, const std::uint8_t* q, int& sc, int& m) noexcept {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

inline void ggml_decode_q4_k(const std::uint8_t* p, float* y) noexcept {
  const float d = ggml_half_at(p), dmin = ggml_half_at(p + 2);
  const std::uint8_t* scales = p + 4;
  const std::uint8_t* q = p + 16;
  // 8 sub-blocks of 32: sub-blocks 2k and 2k+1 are the low and high nibbles of q[32k, 32k+32).
  for (int s = 0; s < 8; ++s) {
    int sc = 0, m = 0;
    ggml_scale_min_k4(s, scales, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    const std::uint8_t* qq = q + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) y[32 * s + l] = d1 * static_cast<float>((qq[l] >> shift) & 0x0f) - m1;
  }
}

inline void ggml_decode_q5_k(const std::uint8_t* p, float* y) noexcept {
  const float d = ggml_half_at(p), dmin = ggml_half_at(p + 2);
  const std::uint8_t* scales = p + 4;
  const std::uint8_t* qh = p + 16;
  const std::uint8_t* q = p + 48;
  // As Q4_K, plus the 5th bit of element l of sub-block s in bit s of qh[l].
  for (int s = 0; s < 8; ++s) {
    int sc = 0, m = 0;
    ggml_scale_min_k4(s, scales, sc, m);
    const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
    const std::uint8_t* qq = q + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int l = 0; l < 32; ++l) {
      const int code = ((qq[l] >> shift) & 0x0f) + (((qh[l] >> s) & 1) != 0 ? 16 : 0);
      y[32 * s + l] = d1 * static_cast<float>(code) - m1;
    }
  }
}

inline void ggml_decode_q6_k(const std::uint8_t* p, float* y) noexcept {
  const std::uint8_t* ql = p;
  const std::uint8_t* qh = p + 128;
  const auto* sc = p + 192;  // int8
  const float d = ggml_half_at(p + 208);
  // Two halves of 128 elements. In each, element l + 32·k (l < 32, k = 0..3)
  // takes its low 4 bits from ql[l] (k = 0, 2) or ql[l + 32] (k = 1, 3) — the low
  // nibble for k < 2, the high one for k ≥ 2 — its high 2 bits from qh[l] at
  // bit 2k, and the scale sc[l / 16 + 2k]; codes are offset by 32.
  for (int half = 0; half < 2; ++half) {
    const std::uint8_t* l4 = ql + 64 * half;
    const std::uint8_t* h2 = qh + 32 * half;
    const std::uint8_t* s8 = sc + 8 * half;
    float* yy = y + 128 * half;
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((l4[l] & 0x0f) | (((h2[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((l4[l + 32] & 0x0f) | (((h2[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((l4[l] >> 4) | (((h2[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((l4[l + 32] >> 4) | (((h2[l] >> 6) & 3) << 4)) - 32;
      const auto scale = [&](int k) { return static_cast<float>(static_cast<std::int8_t>(s8[is + 2 * k])); };
      yy[l] = d * scale(0) * static_cast<float>(q1);
      yy[l + 32] = d * scale(1) * static_cast<float>(q2);
      yy[l + 64] = d * scale(2) * static_cast<float>(q3);
      yy[l + 96] = d * scale(3) * static_cast<float>(q4);
    }
  }
}

inline void ggml_decode_q8_k(const std::uint8_t* p, float* y) noexcept {
  float d;
  std::memcpy(&d, p, 4);  // the host is little-endian (checked where files are read)
  for (int i = 0; i < 256; ++i) y[i] = d * static_cast<float>(static_cast<std::int8_t>(p[4 + i]));
}

/// Element i of a plain little-endian type, as float: exact for F16, BF16, I8
/// and I16; F64, I32 and I64 rounded to nearest as a C++ conversion does.
template <class T>
inline float ggml_plain_at(const std::uint8_t* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return static_cast<float>(v);
}

}  // namespace detail

/// Decodes whole blocks of type `t` from `src` into `dst`, as ggml's
/// dequantize_row_* (or, for the plain types, its conversions) does, bit for bit.
/// `dst.size()` must be a multiple of the block and `src.size()` exactly the
/// bytes of that many blocks (shape_error otherwise); a type without a decoder
/// here is an unsupported_error. Expects a little-endian host (as GGUF data is).
inline void ggml_dequantize(ggml_type t, std::span<const std::byte> src, std::span<float> dst) {
  const ggml_type_traits tr = ggml_traits(t);
  if (tr.name == nullptr)
    throw unsupported_error("ggml_dequantize: type id " + std::to_string(static_cast<std::uint32_t>(t)) +
                            " is not a ggml type known to lqer");
  if (!tr.decodable)
    throw unsupported_error(std::string("ggml_dequantize: decoding ggml type ") + tr.name +
                            " to float is not implemented");
  if (dst.size() % tr.block_elems != 0 || src.size() / tr.block_bytes != dst.size() / tr.block_elems ||
      src.size() % tr.block_bytes != 0)
    throw shape_error(std::string("ggml_dequantize: ") + std::to_string(src.size()) + " bytes of " + tr.name +
                      " (blocks of " + std::to_string(tr.block_elems) + " elements in " +
                      std::to_string(tr.block_bytes) + " bytes) do not decode to " + std::to_string(dst.size()) +
                      " floats");
  const auto* p = reinterpret_cast<const std::uint8_t*>(src.data());
  float* y = dst.data();
  const std::size_t blocks = dst.size() / tr.block_elems;
  const auto each_block = [&](auto&& decode) {
    for (std::size_t b = 0; b < blocks; ++b) decode(p + b * tr.block_bytes, y + b * tr.block_elems);
  };
  switch (t) {
    case ggml_type::f32:
      if (!dst.empty()) std::memcpy(y, p, 4 * dst.size());
      break;
    case ggml_type::f16: each_block([](const std::uint8_t* b, float* o) { *o = detail::ggml_half_at(b); }); break;
    case ggml_type::bf16:
      // bfloat16 is the top half of a binary32: ggml's GGML_BF16_TO_FP32 is a shift.
      each_block([](const std::uint8_t* b, float* o) {
        const std::uint32_t bits = (std::uint32_t{b[0]} | (std::uint32_t{b[1]} << 8)) << 16;
        std::memcpy(o, &bits, 4);
      });
      break;
    case ggml_type::f64:
      each_block([](const std::uint8_t* b, float* o) { *o = detail::ggml_plain_at<double>(b); });
      break;
    case ggml_type::i8:
      each_block([](const std::uint8_t* b, float* o) { *o = detail::ggml_plain_at<std::int8_t>(b); });
      break;
    case ggml_type::i16:
      each_block([](const std::uint8_t* b, float* o) { *o = detail::ggml_plain_at<std::int16_t>(b); });
      break;
    case ggml_type::i32:
      each_block([](const std::uint8_t* b, float* o) { *o = detail::ggml_plain_at<std::int32_t>(b); });
      break;
    case ggml_type::i64:
      each_block([](const std::uint8_t* b, float* o) { *o = detail::ggml_plain_at<std::int64_t>(b); });
      break;
    case ggml_type::q4_0: each_block(ggml_decode_q4_0_block); break;
    case ggml_type::q8_0: each_block(ggml_decode_q8_0_block); break;
    case ggml_type::q4_1: each_block(ggml_decode_q4_1_block); break;
    case ggml_type::q5_0: each_block(detail::ggml_decode_q5_0); break;
    case ggml_type::q5_1: each_block(detail::ggml_decode_q5_1); break;
    case ggml_type::iq4_nl: each_block(detail::ggml_decode_iq4_nl); break;
    case ggml_type::q2_k: each_block(detail::ggml_decode_q2_k); break;
    case ggml_type::q3_k: each_block(detail::ggml_decode_q3_k); break;
    case ggml_type::q4_k: each_block(detail::ggml_decode_q4_k); break;
    case ggml_type::q5_k: each_block(detail::ggml_decode_q5_k); break;
    case ggml_type::q6_k: each_block(detail::ggml_decode_q6_k); break;
    case ggml_type::q8_k: each_block(detail::ggml_decode_q8_k); break;
    default: break;  // not decodable: refused above
  }
}

}  // namespace lqer
