// lqer — what every quantization format type provides (the concept), and the
// per-row group sentinel.
//
// A format is a stateless type that owns one encoding rule. Every format maps a
// block of reals along the reduction axis to small signed integer codes and one
// per-block scale record, and back:
//
//     value = (code_value(code) − zero_point(scale)) · scale_value(scale) + min_value(scale)
//
// (min_value is 0 except for formats with a block minimum, kHasMin: llama.cpp's
// Q4_1 stores d and m per block and decodes u·d + m.)
//
// Codes are held in int8 in [kQmin, kQmax] whatever the format; packing two
// 4-bit codes into a byte is the container's business, not the format's.
//
// How a block_scale is written to a file is the format's business too
// (storable_format): each record is one `stored_scale` value — e8m0 for the
// MX formats, float or half_bits for the scaled integers — plus, when
// kHasZeroPoint, one int8 zero point. io/checkpoint.hpp maps these element
// types to safetensors dtypes (F8_E8M0, F32, F16, I8) and asks nothing else.
//
// What a kernel needs beyond that, so that formats which are not uniform
// integers (a lookup table such as llama.cpp's IQ4_NL) or whose scale is not a
// power of two can join without the kernels guessing:
//   * kScaleKind — what one block's scale is: a power of two held as E8M0 (a
//     kernel may apply it as an exponent add), or a real fp32 / fp16 number (a
//     multiply);
//   * code_value(code) — the integer a code stands for before the scale and
//     zero point are applied: value = (code_value(q) − zero_point) · scale.
//     The identity for the linear integer formats; a non-uniform format maps
//     its codes (indices) to the integer grid of its table, and a format with a
//     block minimum its signed nibble q to the unsigned code u = q + 2^(b−1);
//   * kHasMin / min_value(scale) — a real offset added after the scale (a
//     second real record per block).
#pragma once

#include <concepts>
#include <cstdint>
#include <string>

#include "lqer/config.hpp"

namespace lqer {

/// What one block's scale is (see the file comment).
enum class scale_kind {
  e8m0_pow2,  ///< 2^e, stored as one E8M0 byte: applied as an exponent, exactly
  f32,        ///< a real scale stored as float
  f16,        ///< a real scale stored as IEEE half
};

inline const char* to_string(scale_kind k) noexcept {
  switch (k) {
    case scale_kind::e8m0_pow2: return "e8m0";
    case scale_kind::f32: return "f32";
    case scale_kind::f16: return "f16";
  }
  return "?";
}

/// Block / group length meaning "the whole reduction axis is one group"
/// (per-channel weights, per-token activations).
inline constexpr int kPerRow = 0;

// clang-format off
/// A quantization format: see the file comment for the contract.
template <class F>
concept quantization_format = requires(const float* x, index_t n, index_t stride, std::int8_t* q,
                                       const typename F::block_scale& s, std::int8_t code) {
  typename F::block_scale;
  { F::kBits } -> std::convertible_to<int>;
  { F::kBlock } -> std::convertible_to<int>;   // elements per block, or kPerRow
  { F::kQmin } -> std::convertible_to<int>;
  { F::kQmax } -> std::convertible_to<int>;
  { F::kHasZeroPoint } -> std::convertible_to<bool>;
  { F::kHasMin } -> std::convertible_to<bool>;    // min_value is not always 0
  { F::kScaleBits } -> std::convertible_to<int>;  // storage bits of one block_scale record
  { F::kScaleKind } -> std::convertible_to<scale_kind>;
  /// The integer code q stands for (identity for linear integer formats).
  { F::code_value(code) } -> std::same_as<int>;
  /// Encodes n ≤ block elements x[0], x[stride], …; writes n codes; returns the block's scale.
  { F::quantize_block(x, n, stride, q) } -> std::same_as<typename F::block_scale>;
  { F::scale_value(s) } -> std::same_as<float>;
  { F::zero_point(s) } -> std::same_as<int>;
  { F::min_value(s) } -> std::same_as<float>;
  { F::decode(code, s) } -> std::same_as<float>;
  { F::name() } -> std::convertible_to<std::string>;
};
// clang-format on

/// A format whose block_scale records can be stored in files: store_scale()
/// and store_zero() split a record into its stored scale and its zero point
/// (0 when the format has none), load_scale() puts them back together — the
/// identity round trip, bit for bit. Every format lqer defines is one.
template <class F>
concept storable_format = quantization_format<F> &&
    requires(const typename F::block_scale& s, const typename F::stored_scale& d, std::int8_t z) {
  typename F::stored_scale;
  { F::store_scale(s) } -> std::same_as<typename F::stored_scale>;
  { F::store_zero(s) } -> std::same_as<std::int8_t>;
} && (F::kHasMin ?
    requires(const typename F::block_scale& s, const typename F::stored_scale& d, std::int8_t z) {
  // A block minimum is a third plane, stored like the scale.
  { F::store_min(s) } -> std::same_as<typename F::stored_scale>;
  { F::load_scale(d, z, d) } -> std::same_as<typename F::block_scale>;
} : requires(const typename F::stored_scale& d, std::int8_t z) {
  { F::load_scale(d, z) } -> std::same_as<typename F::block_scale>;
});

/// A format whose codes are the integers they stand for (code_value is the
/// identity on [kQmin, kQmax]): what the integer kernels' dot products assume.
/// Checked at compile time over every code.
template <quantization_format F>
consteval bool has_linear_codes() {
  for (int q = F::kQmin; q <= F::kQmax; ++q)
    if (F::code_value(static_cast<std::int8_t>(q)) != q) return false;
  return true;
}

/// Storage bits per code when packed: formats of 4 bits or fewer pack two codes
/// per byte (nibbles, element 2j in the low nibble); wider ones take a byte.
template <quantization_format F>
inline constexpr int kStorageBitsPerCode = F::kBits <= 4 ? 4 : 8;

}  // namespace lqer
