// lqer — packing an LQER layer for the fused kernels, once, offline.
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
//        scales: 16 E8M0 bytes, one per output
//     for each block b of B along `k`:         (nblk_b = ceil(rank / Block), bytes, u = q + 128)
//        codes (16·Block bytes) and 16 scale bytes, as above
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
// Scales of all-zero blocks are rewritten to 2^0: such a block's dot product
// is exactly 0 whatever its scale, and a neutral exponent keeps every scale in
// the stream inside the exponent window of the fast scale mode (linear.hpp).
// `*_exponent_range` record the range of stream exponents of each operand
// (0 always included) for that window test.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer {

/// The one packed layout: groups of 16 outputs, 4 consecutive k per 32-bit lane.
struct layout_n16c4 {
  static constexpr int kGroup = 16;  ///< outputs per group
  static constexpr int kLaneK = 4;   ///< consecutive reduction elements per 32-bit lane
  static constexpr const char* name() noexcept { return "n16c4"; }
};

/// Inclusive range of block exponents.
struct exponent_range {
  int lo = 0, hi = 0;
  void add(int e) noexcept {
    lo = std::min(lo, e);
    hi = std::max(hi, e);
  }
};

namespace detail {

/// 64-byte aligned, zero-initialized, deep-copyable byte buffer.
class aligned_bytes {
 public:
  aligned_bytes() = default;
  explicit aligned_bytes(std::size_t n) : size_(n) {
    if (n == 0) return;
    void* p = ::operator new (round_up(n), std::align_val_t{64});
    std::memset(p, 0, round_up(n));
    data_.reset(static_cast<std::uint8_t*>(p));
  }
  aligned_bytes(const aligned_bytes& o) : aligned_bytes(o.size_) {
    if (size_) std::memcpy(data_.get(), o.data_.get(), size_);
  }
  aligned_bytes(aligned_bytes&&) noexcept = default;
  aligned_bytes& operator=(const aligned_bytes& o) {
    if (this != &o) *this = aligned_bytes(o);
    return *this;
  }
  aligned_bytes& operator=(aligned_bytes&&) noexcept = default;

  std::uint8_t* data() noexcept { return data_.get(); }
  const std::uint8_t* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  static std::size_t round_up(std::size_t n) noexcept { return (n + 63) / 64 * 64; }
  struct deleter {
    void operator()(std::uint8_t* p) const noexcept { ::operator delete (p, std::align_val_t{64}); }
  };
  std::unique_ptr<std::uint8_t, deleter> data_;
  std::size_t size_ = 0;
};

constexpr index_t round_up_64(index_t n) noexcept { return (n + 63) / 64 * 64; }

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

/// Packs lanes [lane0, lane0 + 16) (missing lanes: zero codes) of `q`, blocks
/// [0, nblk), into `out` as described in the file comment. Returns the bytes
/// written and widens `range` with the stream exponents.
///
/// Lane by lane: a lane's stored codes are contiguous, so its stream words are
/// made in one loop the compiler vectorizes, then stored 4 bytes at a time at
/// their place in the group (a group's stream, a few KiB, stays in cache).
/// Loading a model file packs every layer; code by code, this was a third of
/// SmolLM2's load time.
template <code_kind Kind, class F>
index_t pack_group_blocks(const quantized_matrix<F>& q, index_t lane0, index_t nblk, std::uint8_t* out,
                          exponent_range& range) {
  using words = stream_words<Kind, quantized_matrix<F>::kNibblePacked>;
  constexpr int B = F::kBlock;
  // Stream words per lane and block: one per lane-group pair (nibbles) or lane-group (bytes).
  constexpr index_t kWords = Kind == code_kind::nibble ? B / 8 : B / 4;
  constexpr index_t kBlockBytes = group_block_bytes(Kind, B);
  static_assert(kBlockBytes == kWords * 64 + 16, "pack: a block is its lane-groups of 64 bytes and 16 scale bytes");
  constexpr index_t kSourceBlockBytes = kWords * words::kUnitBytes;  // blocks start on a byte
  constexpr index_t kChunk = 64;  // blocks per pass over a lane (the words live on the stack)
  const std::uint8_t kNeutralScale = e8m0::from_exponent(0).bits;
  for (int j = 0; j < 16; ++j) {
    std::uint8_t* lane_out = out + 4 * j;
    std::uint8_t* scale_out = out + kWords * 64 + j;
    if (lane0 + j >= q.lanes()) {
      for (index_t b = 0; b < nblk; ++b) {
        for (index_t t = 0; t < kWords; ++t) std::memcpy(lane_out + b * kBlockBytes + 64 * t, &words::kZero, 4);
        scale_out[b * kBlockBytes] = kNeutralScale;
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
          std::memcpy(blk + 64 * t, &w[b * kWords + t], 4);
        }
        std::uint8_t bits = kNeutralScale;
        if (any != 0) {
          const e8m0 s = scales[b0 + b];
          if (s.is_nan()) throw value_error("pack: a block scale is the E8M0 NaN encoding (255)");
          range.add(s.exponent());
          bits = s.bits;
        }
        scale_out[(b0 + b) * kBlockBytes] = bits;
      }
    }
  }
  return nblk * kBlockBytes;
}

}  // namespace detail

/// A layer packed for the fused kernels (see the file comment for the stream).
/// Immutable once built: one packed layer may be shared by any number of
/// threads calling linear() on it at the same time.
template <quantization_format WFormat, quantization_format LrFormat = default_lowrank_format,
          quantization_format ActFormat = default_activation_format, class Layout = layout_n16c4>
class packed_layer {
  static_assert(detail::is_mxint<WFormat>::value && detail::is_mxint<LrFormat>::value &&
                    detail::is_mxint<ActFormat>::value,
                "packed_layer: the fused kernels support MX integer formats only (mxint: a power-of-two E8M0 "
                "scale per block, symmetric codes); scaled-integer formats with real scales or zero points "
                "(intq, ggml Q4_0/Q8_0) have no fused kernel: run them with reference_forward");
  static_assert(WFormat::kBlock == ActFormat::kBlock && LrFormat::kBlock == ActFormat::kBlock,
                "packed_layer: the weight, low-rank and activation formats must share one block length: the "
                "kernels multiply block by block");
  static_assert(ActFormat::kBlock % 8 == 0,
                "packed_layer: the block length must be a multiple of 8 (four consecutive k per 32-bit lane, and "
                "4-bit codes pair two such lane groups in one byte)");
  static_assert(std::is_same_v<Layout, layout_n16c4>, "packed_layer: layout_n16c4 is the only layout");

 public:
  using weight_format = WFormat;
  using lowrank_format = LrFormat;
  using activation_format = ActFormat;
  using layout = Layout;
  static constexpr int kBlock = ActFormat::kBlock;
  static constexpr detail::code_kind kWeightKind = detail::kCodeKindFor<WFormat::kBits>;

  packed_layer() = default;

  index_t in_features() const noexcept { return in_; }
  index_t out_features() const noexcept { return out_; }
  index_t rank() const noexcept { return rank_; }
  bool has_bias() const noexcept { return has_bias_; }
  bool empty() const noexcept { return out_ == 0; }

  /// Number of 16-output groups of the main stream (ceil(out / 16)).
  index_t groups() const noexcept { return (out_ + 15) / 16; }
  /// Blocks of the reduction over `in` (Wq and A) and over `rank` (B).
  index_t weight_blocks() const noexcept { return (in_ + kBlock - 1) / kBlock; }
  index_t lowrank_blocks() const noexcept { return (rank_ + kBlock - 1) / kBlock; }
  /// Bytes between consecutive groups, and offsets inside a group.
  index_t group_stride() const noexcept { return group_stride_; }
  index_t correction_offset() const noexcept {
    return weight_blocks() * detail::group_block_bytes(kWeightKind, kBlock);
  }
  index_t bias_offset() const noexcept {
    return correction_offset() + lowrank_blocks() * detail::group_block_bytes(detail::code_kind::byte, kBlock);
  }
  const std::uint8_t* stream() const noexcept { return main_.data(); }

  /// A's stream: ceil(rank / 16) groups of weight_blocks() byte blocks.
  index_t a_groups() const noexcept { return (rank_ + 15) / 16; }
  index_t a_group_stride() const noexcept { return a_group_stride_; }
  const std::uint8_t* a_stream() const noexcept { return a_.data(); }

  /// Exponent ranges of the stream's block scales (0 included), per operand.
  exponent_range weight_exponent_range() const noexcept { return w_range_; }
  exponent_range a_exponent_range() const noexcept { return a_range_; }
  exponent_range b_exponent_range() const noexcept { return b_range_; }

  /// Bytes a forward pass streams: both streams (padding included).
  std::size_t stream_bytes() const noexcept { return main_.size() + a_.size(); }

  template <class ActF, class L, class W, class Lr>
  friend packed_layer<W, Lr, ActF, L> pack_as(const lqer_layer<W, Lr>& layer);

 private:
  index_t in_ = 0, out_ = 0, rank_ = 0;
  bool has_bias_ = false;
  index_t group_stride_ = 0, a_group_stride_ = 0;
  detail::aligned_bytes main_, a_;
  exponent_range w_range_, a_range_, b_range_;
};

/// Packs `layer` for activations of format ActFormat (the one its outputs were
/// validated with: reference_forward<ActFormat>). Validates the layer first.
template <class ActFormat, class Layout, class W, class Lr>
packed_layer<W, Lr, ActFormat, Layout> pack_as(const lqer_layer<W, Lr>& layer) {
  using P = packed_layer<W, Lr, ActFormat, Layout>;  // its static_asserts name an unsupported combination
  P p;
  if constexpr (kernel_supports_formats<W, Lr, ActFormat>) {  // (no cascade of errors after them)
    constexpr int B = P::kBlock;
    layer.validate();
    p.in_ = layer.in_features();
    p.out_ = layer.out_features();
    p.rank_ = layer.rank();
    p.has_bias_ = layer.has_bias();
    const index_t nbw = p.weight_blocks(), nbb = p.lowrank_blocks();
    p.group_stride_ = detail::round_up_64(p.bias_offset() + (p.has_bias_ ? 64 : 0));
    p.main_ = detail::aligned_bytes(static_cast<std::size_t>(p.groups() * p.group_stride_));
    for (index_t g = 0; g < p.groups(); ++g) {
      std::uint8_t* base = p.main_.data() + g * p.group_stride_;
      detail::pack_group_blocks<P::kWeightKind>(layer.wq, 16 * g, nbw, base, p.w_range_);
      if (p.rank_ > 0)
        detail::pack_group_blocks<detail::code_kind::byte>(layer.b, 16 * g, nbb, base + p.correction_offset(),
                                                           p.b_range_);
      if (p.has_bias_) {
        float bias[16] = {};
        for (index_t j = 0; j < 16 && 16 * g + j < p.out_; ++j)
          bias[j] = layer.bias[static_cast<std::size_t>(16 * g + j)];
        std::memcpy(base + p.bias_offset(), bias, sizeof bias);
      }
    }
    if (p.rank_ > 0) {
      p.a_group_stride_ = detail::round_up_64(nbw * detail::group_block_bytes(detail::code_kind::byte, B));
      p.a_ = detail::aligned_bytes(static_cast<std::size_t>(p.a_groups() * p.a_group_stride_));
      for (index_t g = 0; g < p.a_groups(); ++g)
        detail::pack_group_blocks<detail::code_kind::byte>(layer.a, 16 * g, nbw, p.a_.data() + g * p.a_group_stride_,
                                                           p.a_range_);
    }
  }
  return p;
}

/// pack(layer): the same with the default activation format (MXINT8 block 16,
/// LQER rule) or the one named, e.g. `pack<mxint8_ocp<32>>(layer)`.
template <class ActFormat = default_activation_format, class W, class Lr>
packed_layer<W, Lr, ActFormat, layout_n16c4> pack(const lqer_layer<W, Lr>& layer) {
  return pack_as<ActFormat, layout_n16c4>(layer);
}

}  // namespace lqer
