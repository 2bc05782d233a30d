// lqer — llama.cpp / ggml block layouts for Q4_0, Q4_1 and Q8_0, byte for byte.
//
//   block_q4_0 (18 bytes): fp16 d, then 16 bytes; byte j holds element j in its
//                          low nibble and element j+16 in its high nibble, each
//                          as the unsigned code u = q + 8.
//   block_q4_1 (20 bytes): fp16 d, fp16 m, then 16 bytes of nibbles as Q4_0's,
//                          each the unsigned code u (value u·d + m).
//   block_q8_0 (34 bytes): fp16 d, then 32 int8 codes.
// Little-endian fp16, as ggml writes it on every platform it supports.
// The encodings themselves are lqer::q4_0, lqer::q4_1 and lqer::q8_0
// (intq.hpp); this file only moves their codes and scales into ggml's byte
// order and back.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lqer/error.hpp"
#include "lqer/format/intq.hpp"

namespace lqer {

inline constexpr std::size_t kGgmlQ4_0BlockBytes = 18;
inline constexpr std::size_t kGgmlQ4_1BlockBytes = 20;
inline constexpr std::size_t kGgmlQ8_0BlockBytes = 34;

namespace detail {
inline void put_half(std::uint8_t* p, half_bits h) {
  p[0] = static_cast<std::uint8_t>(h.bits & 0xff);
  p[1] = static_cast<std::uint8_t>(h.bits >> 8);
}
inline half_bits get_half(const std::uint8_t* p) { return half_bits{static_cast<std::uint16_t>(p[0] | (p[1] << 8))}; }

/// Q4_0's and Q4_1's 16 nibble bytes: byte j holds element j (low) and j + 16
/// (high), each as u = q + 8 (both formats hold q = u − 8).
inline void put_nibbles(const std::int8_t* q, std::uint8_t* p) noexcept {
  for (int j = 0; j < 16; ++j) p[j] = static_cast<std::uint8_t>((q[j] + 8) | ((q[j + 16] + 8) << 4));
}
template <class F>
void decode_nibbles(const std::uint8_t* p, const typename F::block_scale& s, float* y) noexcept {
  for (int j = 0; j < 16; ++j) {
    y[j] = F::decode(static_cast<std::int8_t>((p[j] & 0x0f) - 8), s);
    y[j + 16] = F::decode(static_cast<std::int8_t>((p[j] >> 4) - 8), s);
  }
}

/// One ggml block of format F: its size, its header (scale, minimum) and codes.
template <class F>
struct ggml_block;
template <>
struct ggml_block<q4_0> {
  static constexpr std::size_t kBytes = kGgmlQ4_0BlockBytes;
  static void encode(const q4_0::block_scale& s, const std::int8_t* q, std::uint8_t* p) noexcept {
    put_half(p, q4_0::store_scale(s));
    put_nibbles(q, p + 2);
  }
  static void decode(const std::uint8_t* p, float* y) noexcept {
    decode_nibbles<q4_0>(p + 2, q4_0::load_scale(get_half(p), 0), y);
  }
};
template <>
struct ggml_block<q4_1> {
  static constexpr std::size_t kBytes = kGgmlQ4_1BlockBytes;
  static void encode(const q4_1::block_scale& s, const std::int8_t* q, std::uint8_t* p) noexcept {
    put_half(p, q4_1::store_scale(s));
    put_half(p + 2, q4_1::store_min(s));
    put_nibbles(q, p + 4);
  }
  static void decode(const std::uint8_t* p, float* y) noexcept {
    decode_nibbles<q4_1>(p + 4, q4_1::load_scale(get_half(p), 0, get_half(p + 2)), y);
  }
};
template <>
struct ggml_block<q8_0> {
  static constexpr std::size_t kBytes = kGgmlQ8_0BlockBytes;
  static void encode(const q8_0::block_scale& s, const std::int8_t* q, std::uint8_t* p) noexcept {
    put_half(p, q8_0::store_scale(s));
    for (int j = 0; j < 32; ++j) p[2 + j] = static_cast<std::uint8_t>(q[j]);
  }
  static void decode(const std::uint8_t* p, float* y) noexcept {
    const q8_0::block_scale s = q8_0::load_scale(get_half(p), 0);
    for (int j = 0; j < 32; ++j) y[j] = q8_0::decode(static_cast<std::int8_t>(p[2 + j]), s);
  }
};

/// A row (a multiple of 32 floats) in F's ggml blocks; `what` names the caller in errors.
template <class F>
std::vector<std::uint8_t> to_ggml(std::span<const float> x, const char* what) {
  if (x.size() % 32 != 0)
    throw shape_error(std::string(what) + ": ggml rows are whole blocks of 32; got " + std::to_string(x.size()) +
                      " elements");
  std::vector<std::uint8_t> out(x.size() / 32 * ggml_block<F>::kBytes);
  std::int8_t q[32];
  for (std::size_t b = 0; b < x.size() / 32; ++b)
    ggml_block<F>::encode(F::quantize_block(x.data() + b * 32, 32, 1, q), q, out.data() + b * ggml_block<F>::kBytes);
  return out;
}

/// F's ggml block bytes decoded into floats; `what` names the caller in errors.
template <class F>
std::vector<float> from_ggml(std::span<const std::uint8_t> bytes, const char* what) {
  constexpr std::size_t n = ggml_block<F>::kBytes;
  if (bytes.size() % n != 0)
    throw shape_error(std::string(what) + ": " + std::to_string(bytes.size()) + " bytes is not a whole number of " +
                      std::to_string(n) + "-byte blocks");
  std::vector<float> out(bytes.size() / n * 32);
  for (std::size_t b = 0; b < bytes.size() / n; ++b) ggml_block<F>::decode(bytes.data() + b * n, out.data() + b * 32);
  return out;
}
}  // namespace detail

/// Encodes a row (a multiple of 32 floats) into ggml's block_q4_0 bytes.
inline std::vector<std::uint8_t> to_ggml_q4_0(std::span<const float> x) {
  return detail::to_ggml<q4_0>(x, "to_ggml_q4_0");
}
/// Decodes one 18-byte block_q4_0 at `p` into y[0, 32): (u − 8) · d, as
/// ggml's dequantize_row_q4_0 (and the GGUF reader's decoder) computes it.
inline void ggml_decode_q4_0_block(const std::uint8_t* p, float* y) noexcept { detail::ggml_block<q4_0>::decode(p, y); }
/// Decodes block_q4_0 bytes into floats ((u − 8) · d, as ggml's dequantize_row_q4_0).
inline std::vector<float> from_ggml_q4_0(std::span<const std::uint8_t> bytes) {
  return detail::from_ggml<q4_0>(bytes, "from_ggml_q4_0");
}

/// Encodes a row (a multiple of 32 floats) into ggml's block_q4_1 bytes.
inline std::vector<std::uint8_t> to_ggml_q4_1(std::span<const float> x) {
  return detail::to_ggml<q4_1>(x, "to_ggml_q4_1");
}
/// Decodes one 20-byte block_q4_1 at `p` into y[0, 32): u · d + m, as ggml's
/// dequantize_row_q4_1 (and the GGUF reader's decoder) computes it.
inline void ggml_decode_q4_1_block(const std::uint8_t* p, float* y) noexcept { detail::ggml_block<q4_1>::decode(p, y); }
/// Decodes block_q4_1 bytes into floats (u · d + m, as ggml's dequantize_row_q4_1).
inline std::vector<float> from_ggml_q4_1(std::span<const std::uint8_t> bytes) {
  return detail::from_ggml<q4_1>(bytes, "from_ggml_q4_1");
}

/// Encodes a row (a multiple of 32 floats) into ggml's block_q8_0 bytes.
inline std::vector<std::uint8_t> to_ggml_q8_0(std::span<const float> x) {
  return detail::to_ggml<q8_0>(x, "to_ggml_q8_0");
}
/// Decodes one 34-byte block_q8_0 at `p` into y[0, 32): q · d.
inline void ggml_decode_q8_0_block(const std::uint8_t* p, float* y) noexcept { detail::ggml_block<q8_0>::decode(p, y); }
/// Decodes block_q8_0 bytes into floats (q · d).
inline std::vector<float> from_ggml_q8_0(std::span<const std::uint8_t> bytes) {
  return detail::from_ggml<q8_0>(bytes, "from_ggml_q8_0");
}

}  // namespace lqer
