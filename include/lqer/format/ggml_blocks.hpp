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
template <class F>
inline void check_ggml_row(std::span<const float> x, const char* what) {
  if (x.size() % 32 != 0)
    throw shape_error(std::string(what) + ": ggml rows are whole blocks of 32; got " + std::to_string(x.size()) +
                      " elements");
}
inline void put_half(std::uint8_t* p, half_bits h) {
  p[0] = static_cast<std::uint8_t>(h.bits & 0xff);
  p[1] = static_cast<std::uint8_t>(h.bits >> 8);
}
inline half_bits get_half(const std::uint8_t* p) { return half_bits{static_cast<std::uint16_t>(p[0] | (p[1] << 8))}; }
}  // namespace detail

/// Encodes a row (a multiple of 32 floats) into ggml's block_q4_0 bytes.
inline std::vector<std::uint8_t> to_ggml_q4_0(std::span<const float> x) {
  detail::check_ggml_row<q4_0>(x, "to_ggml_q4_0");
  std::vector<std::uint8_t> out(x.size() / 32 * kGgmlQ4_0BlockBytes);
  std::int8_t q[32];
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const auto s = q4_0::quantize_block(x.data() + b * 32, 32, 1, q);
    std::uint8_t* p = out.data() + b * kGgmlQ4_0BlockBytes;
    detail::put_half(p, s.d);
    for (int j = 0; j < 16; ++j) p[2 + j] = static_cast<std::uint8_t>((q[j] + 8) | ((q[j + 16] + 8) << 4));
  }
  return out;
}

/// Decodes one 18-byte block_q4_0 at `p` into y[0, 32): (u − 8) · d, as
/// ggml's dequantize_row_q4_0 (and the GGUF reader's decoder) computes it.
inline void ggml_decode_q4_0_block(const std::uint8_t* p, float* y) noexcept {
  const q4_0::block_scale s{detail::get_half(p), 0};
  for (int j = 0; j < 16; ++j) {
    y[j] = q4_0::decode(static_cast<std::int8_t>((p[2 + j] & 0x0f) - 8), s);
    y[j + 16] = q4_0::decode(static_cast<std::int8_t>((p[2 + j] >> 4) - 8), s);
  }
}

/// Decodes block_q4_0 bytes into floats ((u − 8) · d, as ggml's dequantize_row_q4_0).
inline std::vector<float> from_ggml_q4_0(std::span<const std::uint8_t> bytes) {
  if (bytes.size() % kGgmlQ4_0BlockBytes != 0)
    throw shape_error("from_ggml_q4_0: " + std::to_string(bytes.size()) +
                      " bytes is not a whole number of 18-byte blocks");
  std::vector<float> out(bytes.size() / kGgmlQ4_0BlockBytes * 32);
  for (std::size_t b = 0; b < bytes.size() / kGgmlQ4_0BlockBytes; ++b)
    ggml_decode_q4_0_block(bytes.data() + b * kGgmlQ4_0BlockBytes, out.data() + b * 32);
  return out;
}

/// Encodes a row (a multiple of 32 floats) into ggml's block_q4_1 bytes.
inline std::vector<std::uint8_t> to_ggml_q4_1(std::span<const float> x) {
  detail::check_ggml_row<q4_1>(x, "to_ggml_q4_1");
  std::vector<std::uint8_t> out(x.size() / 32 * kGgmlQ4_1BlockBytes);
  std::int8_t q[32];
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const auto s = q4_1::quantize_block(x.data() + b * 32, 32, 1, q);
    std::uint8_t* p = out.data() + b * kGgmlQ4_1BlockBytes;
    detail::put_half(p, q4_1::store_scale(s));
    detail::put_half(p + 2, q4_1::store_min(s));
    for (int j = 0; j < 16; ++j)
      p[4 + j] = static_cast<std::uint8_t>(q4_1::code_value(q[j]) | (q4_1::code_value(q[j + 16]) << 4));
  }
  return out;
}

/// Decodes one 20-byte block_q4_1 at `p` into y[0, 32): u · d + m, as ggml's
/// dequantize_row_q4_1 (and the GGUF reader's decoder) computes it.
inline void ggml_decode_q4_1_block(const std::uint8_t* p, float* y) noexcept {
  const q4_1::block_scale s = q4_1::load_scale(detail::get_half(p), 0, detail::get_half(p + 2));
  for (int j = 0; j < 16; ++j) {
    y[j] = q4_1::decode(static_cast<std::int8_t>((p[4 + j] & 0x0f) - 8), s);
    y[j + 16] = q4_1::decode(static_cast<std::int8_t>((p[4 + j] >> 4) - 8), s);
  }
}

/// Decodes block_q4_1 bytes into floats (u · d + m, as ggml's dequantize_row_q4_1).
inline std::vector<float> from_ggml_q4_1(std::span<const std::uint8_t> bytes) {
  if (bytes.size() % kGgmlQ4_1BlockBytes != 0)
    throw shape_error("from_ggml_q4_1: " + std::to_string(bytes.size()) +
                      " bytes is not a whole number of 20-byte blocks");
  std::vector<float> out(bytes.size() / kGgmlQ4_1BlockBytes * 32);
  for (std::size_t b = 0; b < bytes.size() / kGgmlQ4_1BlockBytes; ++b)
    ggml_decode_q4_1_block(bytes.data() + b * kGgmlQ4_1BlockBytes, out.data() + b * 32);
  return out;
}

/// Encodes a row (a multiple of 32 floats) into ggml's block_q8_0 bytes.
inline std::vector<std::uint8_t> to_ggml_q8_0(std::span<const float> x) {
  detail::check_ggml_row<q8_0>(x, "to_ggml_q8_0");
  std::vector<std::uint8_t> out(x.size() / 32 * kGgmlQ8_0BlockBytes);
  std::int8_t q[32];
  for (std::size_t b = 0; b < x.size() / 32; ++b) {
    const auto s = q8_0::quantize_block(x.data() + b * 32, 32, 1, q);
    std::uint8_t* p = out.data() + b * kGgmlQ8_0BlockBytes;
    detail::put_half(p, s.d);
    for (int j = 0; j < 32; ++j) p[2 + j] = static_cast<std::uint8_t>(q[j]);
  }
  return out;
}

/// Decodes one 34-byte block_q8_0 at `p` into y[0, 32): q · d.
inline void ggml_decode_q8_0_block(const std::uint8_t* p, float* y) noexcept {
  const q8_0::block_scale s{detail::get_half(p), 0};
  for (int j = 0; j < 32; ++j) y[j] = q8_0::decode(static_cast<std::int8_t>(p[2 + j]), s);
}

/// Decodes block_q8_0 bytes into floats (q · d).
inline std::vector<float> from_ggml_q8_0(std::span<const std::uint8_t> bytes) {
  if (bytes.size() % kGgmlQ8_0BlockBytes != 0)
    throw shape_error("from_ggml_q8_0: " + std::to_string(bytes.size()) +
                      " bytes is not a whole number of 34-byte blocks");
  std::vector<float> out(bytes.size() / kGgmlQ8_0BlockBytes * 32);
  for (std::size_t b = 0; b < bytes.size() / kGgmlQ8_0BlockBytes; ++b)
    ggml_decode_q8_0_block(bytes.data() + b * kGgmlQ8_0BlockBytes, out.data() + b * 32);
  return out;
}

}  // namespace lqer
