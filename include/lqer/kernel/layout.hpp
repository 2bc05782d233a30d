// lqer — the packed layout of the fused kernels, as a type: layout_n16c4
// owns every byte offset of the stream and the packing of one group of
// outputs (ruy's FixedKernelLayout, ggml's tensor_traits: the layout is part
// of the packed operand's type, and each kernel path declares the layout it
// consumes — its tag's `layout`, kernel/dispatch.hpp; linear() checks that
// they agree at compile time).
//
// Layout `layout_n16c4` (the layout is part of packed_layer's type). Outputs
// are taken in groups of 16 — one int32 lane each in a zmm register, two ymm
// halves, four NEON quads — and every group owns one contiguous stream, read
// front to back by the micro-kernel that computes those outputs:
//
//   group g (outputs 16g … 16g+15), every group starting on a 64-byte line:
//     for each block b of Wq along `in`:       (nblk_w = ceil(in / Block))
//        codes: Block/4 lane-groups of 64 bytes: byte 4j+i = u(output 16g+j, k = 4c+i)
//               (c4: four consecutive k of one output per 32-bit lane, so one
//               vpdpbusd yields one int32 per output, no horizontal sums);
//               ≤ 4-bit codes pair lane-groups 2p and 2p+1 in the low and high
//               nibbles of one 64-byte vector (8·Block bytes per block)
//        scales: one per output, 16 records of the format's scale kind:
//               E8M0 bytes (MX), fp16 (Q4_0, Q8_0, intq f16) or fp32 (intq f32),
//               stored as the format stores them (fp16 stays fp16: a Q4_0
//               block record is 16·18 bytes, ggml's bytes per weight)
//        zero points (formats with one only: intq asymmetric): 16 bytes,
//               zk = zero + offset (see record_kind)
//     for each block b of B along `k`:         (nblk_b = ceil(rank / Block), bytes, u = q + 128)
//        codes (16·Block bytes) and 16 scales of B's format, as above
//     bias: 16 floats (only if the layer has a bias)
//
// A is packed alone the same way with its k columns as the "outputs" (groups
// over k, blocks along `in`, byte codes): u = xq·A is the same kind of GEMM.
//
// Codes are stored unsigned, u = q + 8 (nibbles) or q + 128 (bytes), for the
// u8 × s8 dot products (see params.hpp). Tails are zero codes (u = offset):
// outputs past N in the last group, k past the end of the last block. Their
// products are exactly 0 and their results are never stored.
//
// E8M0 scales of all-zero blocks are rewritten to 2^0: such a block's dot product
// is exactly 0 whatever its scale, and a neutral exponent keeps every scale in
// the stream inside the exponent window of the fast scale mode (linear.hpp).
// Real scales are stored unchanged (their mode multiplies as the reference
// does, so 0·s is whatever the reference's 0·s is, NaN for s = ±Inf included).
// `*_exponent_range` record the range of stream exponents of each operand
// (0 always included) for that window test.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/format.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer {

/// Inclusive range of block exponents.
struct exponent_range {
  int lo = 0, hi = 0;
  void add(int e) noexcept {
    lo = std::min(lo, e);
    hi = std::max(hi, e);
  }
};

namespace detail {

/// How a packed operand stores its codes.
enum class code_kind {
  nibble,  ///< u = q + 8 in 4 bits (|q| ≤ 7): weights of ≤ 4 bits
  byte,    ///< u = q + 128 in a byte (|q| ≤ 127)
};

template <int Bits>
inline constexpr code_kind kCodeKindFor = Bits <= 4 ? code_kind::nibble : code_kind::byte;

/// Offset of the stored unsigned code: u = q + kStoredOffset.
constexpr int stored_offset(code_kind k) noexcept { return k == code_kind::nibble ? 8 : 128; }

/// What a path subtracts from a stored zero-point record zk (= zero + stored
/// offset, layout_n16c4) to get the zero point in its own code space: a path
/// whose dot products see a code as q + `path_code_offset` (its tag's
/// code_offset) needs (q + path_code_offset) − (zk − this) = q − zero.
constexpr int zero_record_bias(code_kind k, int path_code_offset) noexcept {
  return stored_offset(k) - path_code_offset;
}

/// Stream words from stored code bytes (little-endian words: byte i of a word
/// is byte i of memory). `source_unit(src, i)` loads the stored bytes of stream
/// word i of a lane — 4 bytes, or 2 when 4-bit codes widen to bytes — and
/// `stream_word(unit)` turns them into the stream's word:
///  - nibble codes to the nibble stream: the unit holds codes c0…c7 (c_{2i} in
///    the low nibble of byte i); the stream wants byte i = c_i | c_{4+i} << 4
///    (lane-groups 2p and 2p+1 in the two halves of each byte), so the low and
///    high nibbles L, H are interleaved as [L0 H0 L1 H1] | [L2 H2 L3 H3] << 4;
///  - byte codes to the byte stream: the unit as it is;
///  - nibble codes to the byte stream (4-bit A/B): the unit's four nibbles
///    spread to one byte each.
/// The offset u = q + 8 (nibble) or q + 128 (byte) is an XOR of each code's
/// sign bit, since q + 2^(b-1) mod 2^b flips bit b-1 of a b-bit two's-complement
/// code; 4-bit codes widened to bytes are (q ^ 8) + 120 = q + 128, which stays
/// within its byte (≤ 135), so no carry crosses bytes.
template <code_kind Kind, bool NibbleSource>
struct stream_words {
  static_assert(std::endian::native == std::endian::little,
                "pack: the n16c4 stream is defined on little-endian words (x86-64, AArch64)");
  static_assert(Kind == code_kind::byte || NibbleSource,
                "pack: codes of more than 4 bits do not fit the nibble stream");
  static constexpr bool kWiden = Kind == code_kind::byte && NibbleSource;
  static constexpr int kUnitBytes = kWiden ? 2 : 4;
  /// The stream word of all-zero codes.
  static constexpr std::uint32_t kZero = Kind == code_kind::nibble ? 0x88888888u : 0x80808080u;

  static std::uint32_t source_unit(const std::uint8_t* src, index_t i) noexcept {
    if constexpr (kWiden) {
      std::uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      return h;
    } else {
      std::uint32_t w;
      std::memcpy(&w, src + 4 * i, 4);
      return w;
    }
  }
  static std::uint32_t stream_word(std::uint32_t x) noexcept {
    if constexpr (Kind == code_kind::nibble) {
      const std::uint32_t lo = x & 0x0F0F0F0Fu, hi = (x >> 4) & 0x0F0F0F0Fu;
      const std::uint32_t low_half = (lo & 0xFFu) | (hi & 0xFFu) << 8 | (lo & 0xFF00u) << 8 | (hi & 0xFF00u) << 16;
      const std::uint32_t high_half =
          (lo >> 16 & 0xFFu) | (hi >> 8 & 0xFF00u) | (lo >> 8 & 0xFF0000u) | (hi & 0xFF000000u);
      return (low_half | high_half << 4) ^ 0x88888888u;
    } else if constexpr (kWiden) {
      const std::uint32_t spread = (x & 0x0Fu) | (x & 0xF0u) << 4 | (x & 0xF00u) << 8 | (x & 0xF000u) << 12;
      return (spread ^ 0x08080808u) + 0x78787878u;
    } else {
      return x ^ 0x80808080u;
    }
  }
};

}  // namespace detail

/// What a packed operand stores per output after one block's codes: its
/// scale record, of the format's scale_kind; for a format with a zero point
/// (intq asymmetric) one unsigned byte zk = zero + the stored code offset, so
/// that u − zk = q − zero for the stored code u = q + offset (params.hpp); for
/// a format with a block minimum (llama.cpp's Q4_1: value u·d + m) the minima,
/// a second record of the scale kind. `code_shift` is the format's
/// code_value(0): its codes q stand for q + code_shift (Q4_1: u = q + 8). The
/// kernels take it as a template argument per operand.
struct record_kind {
  scale_kind scale;
  bool zero_point;
  bool min = false;
  int code_shift = 0;
  constexpr record_kind() noexcept : scale(scale_kind::e8m0_pow2), zero_point(false) {}
  constexpr record_kind(scale_kind s, bool z = false, bool m = false, int shift = 0) noexcept  // NOLINT: implicit
      : scale(s), zero_point(z), min(m), code_shift(shift) {}
  constexpr bool real() const noexcept { return scale != scale_kind::e8m0_pow2; }
  friend constexpr bool operator==(const record_kind&, const record_kind&) = default;
  // `record == scale_kind::f16` would be false for an fp16 record with a zero
  // point: compare `.scale` instead.
  friend bool operator==(const record_kind&, scale_kind) = delete;
};

/// The record kind of format F's packed operand.
template <class F>
inline constexpr record_kind kRecordKindOf{F::kScaleKind, F::kHasZeroPoint, F::kHasMin, F::code_value(0)};

/// The one packed layout: groups of 16 outputs, 4 consecutive k per 32-bit
/// lane (see the file comment for the stream).
struct layout_n16c4 {
  static constexpr int kGroup = 16;                                     ///< outputs per group
  static constexpr int kLaneK = 4;                                      ///< consecutive k per 32-bit lane
  static constexpr index_t kLaneGroupBytes = index_t{kGroup} * kLaneK;  ///< one 4-k step of a group: 64 bytes
  static constexpr index_t kBiasBytes = index_t{kGroup} * sizeof(float);
  static constexpr index_t kAlign = 64;  ///< every group starts on a cache line
  static constexpr const char* name() noexcept { return "n16c4"; }

  /// Groups of `n` outputs.
  static constexpr index_t groups(index_t n) noexcept { return (n + kGroup - 1) / kGroup; }
  static constexpr index_t align(index_t bytes) noexcept { return (bytes + kAlign - 1) / kAlign * kAlign; }

  /// Bytes of the codes of one block of one group (nibbles pair two lane
  /// groups in one 64-byte vector), and of the block record: codes, then
  /// scale_bytes(scale kind) of scales.
  static constexpr index_t code_bytes(detail::code_kind k, int block) noexcept {
    return k == detail::code_kind::nibble ? index_t{kGroup} * block / 2 : index_t{kGroup} * block;
  }
  /// Bytes of one block's kGroup scales: one record of the scale kind per output.
  static constexpr index_t scale_bytes(scale_kind s) noexcept {
    return index_t{kGroup} * (s == scale_kind::e8m0_pow2 ? 1 : s == scale_kind::f16 ? 2 : 4);
  }
  /// Bytes of one block's kGroup records: the scales, then the zero points (one byte each) if
  /// any, then the minima (one record of the scale kind each) if any.
  static constexpr index_t record_bytes(record_kind r) noexcept {
    return scale_bytes(r.scale) + (r.zero_point ? index_t{kGroup} : 0) + (r.min ? scale_bytes(r.scale) : 0);
  }
  static constexpr index_t block_bytes(detail::code_kind k, int block, record_kind r = {}) noexcept {
    return code_bytes(k, block) + record_bytes(r);
  }

  /// The signed code of output j, element kk of one block record of kind K.
  template <detail::code_kind K>
  static int code_at(const std::uint8_t* blk, int j, int kk) noexcept {
    if constexpr (K == detail::code_kind::nibble) {
      const std::uint8_t byte = blk[(kk / (2 * kLaneK)) * kLaneGroupBytes + j * kLaneK + (kk % kLaneK)];
      return static_cast<int>((kk % (2 * kLaneK)) < kLaneK ? (byte & 0x0f) : (byte >> 4)) - detail::stored_offset(K);
    } else {
      return static_cast<int>(blk[(kk / kLaneK) * kLaneGroupBytes + j * kLaneK + (kk % kLaneK)]) -
             detail::stored_offset(K);
    }
  }

  /// Output j's scale record in a block record of code kind K and scale kind S
  /// (one E8M0 byte, fp16 bits or a float, as the format stores it).
  template <detail::code_kind K, scale_kind S>
  static const std::uint8_t* scale_record(const std::uint8_t* blk, int block, int j) noexcept {
    return blk + code_bytes(K, block) + j * (scale_bytes(S) / kGroup);
  }

  /// The kGroup zero-point bytes zk of a block record of code kind K and
  /// scale kind S with zero points: output j's is at [j].
  template <detail::code_kind K, scale_kind S>
  static const std::uint8_t* zero_records(const std::uint8_t* blk, int block) noexcept {
    return blk + zero_offset(K, block, S);
  }
  /// Where a block record's zero points start: after its codes and its kGroup scales.
  static constexpr index_t zero_offset(detail::code_kind k, int block, scale_kind s) noexcept {
    return code_bytes(k, block) + scale_bytes(s);
  }
  /// Where a block record's minima start: after its codes, scales and zero points (if any).
  static constexpr index_t min_offset(detail::code_kind k, int block, record_kind r) noexcept {
    return zero_offset(k, block, r.scale) + (r.zero_point ? index_t{kGroup} : 0);
  }
  /// The kGroup minima of a block record of code kind K and record kind R (R.min):
  /// output j's at [j · scale record size], stored as the scales are.
  template <detail::code_kind K, record_kind R>
  static const std::uint8_t* min_records(const std::uint8_t* blk, int block) noexcept {
    static_assert(R.min, "min_records: this record kind has no minima");
    return blk + min_offset(K, block, R);
  }

  /// Where the parts of one group of a packed layer start: Wq's blocks at 0,
  /// then B's, then the bias; `stride` is the distance between groups.
  struct group_offsets {
    index_t correction = 0, bias = 0, stride = 0;
  };
  static constexpr group_offsets main_group(detail::code_kind weight_kind, record_kind weight_record,
                                            record_kind lowrank_record, int block, index_t weight_blocks,
                                            index_t lowrank_blocks, bool has_bias) noexcept {
    group_offsets o;
    o.correction = weight_blocks * block_bytes(weight_kind, block, weight_record);
    o.bias = o.correction + lowrank_blocks * block_bytes(detail::code_kind::byte, block, lowrank_record);
    o.stride = align(o.bias + (has_bias ? kBiasBytes : 0));
    return o;
  }
  /// Distance between the groups of A's stream (byte codes, blocks along `in`).
  static constexpr index_t a_group_stride(int block, index_t weight_blocks, record_kind lowrank_record = {}) noexcept {
    return align(weight_blocks * block_bytes(detail::code_kind::byte, block, lowrank_record));
  }

  /// Packs lanes [lane0, lane0 + 16) (missing lanes: zero codes) of `q`, blocks
  /// [0, nblk), into `out` as described in the file comment. Returns the bytes
  /// written and widens `range` with the stream exponents.
  ///
  /// Lane by lane: a lane's stored codes are contiguous, so its stream words are
  /// made in one loop the compiler vectorizes, then stored 4 bytes at a time at
  /// their place in the group (a group's stream, a few KiB, stays in cache).
  /// Loading a model file packs every layer; code by code, this was a third of
  /// SmolLM2's load time.
  template <detail::code_kind Kind, class F>
  static index_t pack_group(const quantized_matrix<F>& q, index_t lane0, index_t nblk, std::uint8_t* out,
                            exponent_range& range) {
    using words = detail::stream_words<Kind, quantized_matrix<F>::kNibblePacked>;
    constexpr int B = F::kBlock;
    // Stream words per lane and block: one per lane-group pair (nibbles) or lane-group (bytes).
    constexpr index_t kWords = Kind == detail::code_kind::nibble ? B / (2 * kLaneK) : B / kLaneK;
    constexpr scale_kind kScale = F::kScaleKind;
    constexpr bool kPow2 = kScale == scale_kind::e8m0_pow2;
    constexpr index_t kRecordBytes = scale_bytes(kScale) / kGroup;  // one output's scale
    constexpr bool kZero = F::kHasZeroPoint;
    constexpr bool kMin = F::kHasMin;
    constexpr index_t kBlockBytes = block_bytes(Kind, B, kRecordKindOf<F>);
    static_assert(kLaneK == 4 && kBlockBytes == kWords * kLaneGroupBytes + record_bytes(kRecordKindOf<F>),
                  "pack: a block is its lane-groups, its scales, its zero points and its minima; a stream word is "
                  "one 32-bit lane of 4 k");
    static_assert(!kMin || !kPow2, "pack: a block minimum comes with a real scale");
    // zk = zero + the stored offset: the stored codes u = q + offset, so u − zk = q − zero. A
    // format's zero point lies in its code range (intq: [kQmin, kQmax] shifted like the codes),
    // so 0 ≤ zk ≤ 15 (nibbles) or 255 (bytes). Padding outputs get zk = offset: with their zero
    // codes every product is then 0 exactly.
    static_assert(!kZero || (F::kQmin + detail::stored_offset(Kind) >= 0 &&
                             F::kQmax + detail::stored_offset(Kind) <= (Kind == detail::code_kind::nibble ? 15 : 255)),
                  "pack: a zero point must fit the stored code range");
    constexpr auto kOffsetByte = static_cast<std::uint8_t>(detail::stored_offset(Kind));
    static_assert(
        kPow2 || requires { F::store_scale(typename F::block_scale{}); },
        "pack: a real-scale format must say how its scale is stored (storable_format)");
    constexpr index_t kSourceBlockBytes = kWords * words::kUnitBytes;  // blocks start on a byte
    constexpr index_t kChunk = 64;  // blocks per pass over a lane (the words live on the stack)
    const std::uint8_t kNeutralScale = e8m0::from_exponent(0).bits;
    for (int j = 0; j < kGroup; ++j) {
      std::uint8_t* lane_out = out + kLaneK * j;
      std::uint8_t* scale_out = out + kWords * kLaneGroupBytes + kRecordBytes * j;
      std::uint8_t* zero_out = out + zero_offset(Kind, B, kScale) + j;                         // used when kZero
      std::uint8_t* min_out = out + min_offset(Kind, B, kRecordKindOf<F>) + kRecordBytes * j;  // when kMin
      if (lane0 + j >= q.lanes()) {
        for (index_t b = 0; b < nblk; ++b) {
          for (index_t t = 0; t < kWords; ++t)
            std::memcpy(lane_out + b * kBlockBytes + kLaneGroupBytes * t, &words::kZero, 4);
          if constexpr (kPow2)
            scale_out[b * kBlockBytes] = kNeutralScale;
          else
            std::memset(scale_out + b * kBlockBytes, 0, kRecordBytes);  // +0: a padding output's term is 0·0
          if constexpr (kZero) zero_out[b * kBlockBytes] = kOffsetByte;
          if constexpr (kMin) std::memset(min_out + b * kBlockBytes, 0, kRecordBytes);  // +0
        }
        continue;
      }
      const std::uint8_t* src = q.lane_codes(lane0 + j).data();  // padding codes inside the lane are 0
      const auto* scales = q.lane_scales(lane0 + j).data();
      for (index_t b0 = 0; b0 < nblk; b0 += kChunk) {
        const index_t nb = std::min(kChunk, nblk - b0);
        const std::uint8_t* chunk = src + b0 * kSourceBlockBytes;
        std::uint32_t w[kChunk * kWords];
        for (index_t i = 0; i < nb * kWords; ++i) w[i] = words::stream_word(words::source_unit(chunk, i));
        for (index_t b = 0; b < nb; ++b) {
          std::uint8_t* blk = lane_out + (b0 + b) * kBlockBytes;
          std::uint32_t any = 0;  // the stored bits are all zero exactly when the codes are
          for (index_t t = 0; t < kWords; ++t) {
            any |= words::source_unit(chunk, b * kWords + t);
            std::memcpy(blk + kLaneGroupBytes * t, &w[b * kWords + t], 4);
          }
          if constexpr (kPow2) {
            std::uint8_t bits = kNeutralScale;
            if (any != 0) {
              const e8m0 s = scales[b0 + b];
              if (s.is_nan()) throw value_error("pack: a block scale is the E8M0 NaN encoding (255)");
              range.add(s.exponent());
              bits = s.bits;
            }
            scale_out[(b0 + b) * kBlockBytes] = bits;
          } else {
            const auto stored = F::store_scale(scales[b0 + b]);  // float, or half_bits
            static_assert(sizeof stored == kRecordBytes, "pack: a real scale record is 2 or 4 bytes");
            std::memcpy(scale_out + (b0 + b) * kBlockBytes, &stored, kRecordBytes);
            if constexpr (kZero)
              zero_out[(b0 + b) * kBlockBytes] =
                  static_cast<std::uint8_t>(F::store_zero(scales[b0 + b]) + detail::stored_offset(Kind));
            if constexpr (kMin) {
              const auto m = F::store_min(scales[b0 + b]);
              std::memcpy(min_out + (b0 + b) * kBlockBytes, &m, kRecordBytes);
            }
          }
        }
      }
    }
    return nblk * kBlockBytes;
  }
};

namespace detail {
/// layout_n16c4's block sizes and code lookup, by the names the kernels and tests use.
constexpr index_t group_code_bytes(code_kind k, int block) noexcept { return layout_n16c4::code_bytes(k, block); }
constexpr index_t group_block_bytes(code_kind k, int block, record_kind r = {}) noexcept {
  return layout_n16c4::block_bytes(k, block, r);
}
/// layout_n16c4::code_at: the signed code of output j, element kk of a block record.
template <code_kind K>
int unpack_code(const std::uint8_t* blk, int j, int kk) noexcept {
  return layout_n16c4::code_at<K>(blk, j, kk);
}
}  // namespace detail

}  // namespace lqer
