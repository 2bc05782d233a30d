// lqer — packing an LQER layer for the fused kernels, once, offline.
//
// The packed stream's layout is a type, kernel/layout.hpp's layout_n16c4:
// it owns every byte offset and the packing of one group; this header
// assembles a layer's streams from it.
//
// A is packed alone the same way with its k columns as the "outputs" (groups
// over k, blocks along `in`, byte codes): u = xq·A is the same kind of GEMM.
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
#include "lqer/kernel/layout.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

namespace lqer {

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

}  // namespace detail

/// A layer packed for the fused kernels (see the file comment for the stream).
/// Immutable once built: one packed layer may be shared by any number of
/// threads calling linear() on it at the same time.
template <quantization_format WFormat, quantization_format LrFormat = default_lowrank_format,
          quantization_format ActFormat = default_activation_format, class Layout = layout_n16c4>
class packed_layer {
  static_assert(detail::is_kernel_operand_format<WFormat>() && detail::is_kernel_operand_format<LrFormat>() &&
                    detail::is_kernel_operand_format<ActFormat>(),
                "packed_layer: the fused kernels take MX integers (mxint) and scaled integers with an fp16 or "
                "fp32 scale per block of a multiple of 8 up to 4096 whose codes fit [-127, 127] (intq symmetric, "
                "signed-extreme and with a block minimum of at most 4 bits; asymmetric, whose 8-bit codes reach "
                "-128; Q4_0, Q4_1, Q8_0); one scale per row has no fused kernel yet: run it with "
                "reference_forward");
  static_assert(detail::kActivationCodesFit<ActFormat>,
                "packed_layer: activation codes must be int8 in [-127, 127] without a zero point or block "
                "minimum (the dot products' signed operand; zero points and minima are taken on the weight side "
                "only)");
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
  /// How each stream stores its block scales and zero points (layout_n16c4).
  static constexpr record_kind kWeightRecord = kRecordKindOf<WFormat>;
  static constexpr record_kind kLowrankRecord = kRecordKindOf<LrFormat>;
  /// A real scale anywhere: every product runs scale_mode::real (params.hpp).
  static constexpr bool kRealScales = detail::kAnyRealScale<WFormat, LrFormat, ActFormat>;

  packed_layer() = default;

  index_t in_features() const noexcept { return in_; }
  index_t out_features() const noexcept { return out_; }
  index_t rank() const noexcept { return rank_; }
  bool has_bias() const noexcept { return has_bias_; }
  bool empty() const noexcept { return out_ == 0; }

  /// Number of output groups of the main stream (ceil(out / Layout::kGroup)).
  index_t groups() const noexcept { return Layout::groups(out_); }
  /// Blocks of the reduction over `in` (Wq and A) and over `rank` (B).
  index_t weight_blocks() const noexcept { return (in_ + kBlock - 1) / kBlock; }
  index_t lowrank_blocks() const noexcept { return (rank_ + kBlock - 1) / kBlock; }
  /// Bytes between consecutive groups, and offsets inside a group.
  index_t group_stride() const noexcept { return offsets().stride; }
  index_t correction_offset() const noexcept { return offsets().correction; }
  index_t bias_offset() const noexcept { return offsets().bias; }
  const std::uint8_t* stream() const noexcept { return main_.data(); }

  /// A's stream: ceil(rank / Layout::kGroup) groups of weight_blocks() byte blocks.
  index_t a_groups() const noexcept { return Layout::groups(rank_); }
  index_t a_group_stride() const noexcept { return Layout::a_group_stride(kBlock, weight_blocks(), kLowrankRecord); }
  const std::uint8_t* a_stream() const noexcept { return a_.data(); }

  /// Exponent ranges of the stream's E8M0 block scales (0 included), per
  /// operand (unused, {0, 0}, for an operand with real scales).
  exponent_range weight_exponent_range() const noexcept { return w_range_; }
  exponent_range a_exponent_range() const noexcept { return a_range_; }
  exponent_range b_exponent_range() const noexcept { return b_range_; }

  /// Bytes a forward pass streams: both streams (padding included).
  std::size_t stream_bytes() const noexcept { return main_.size() + a_.size(); }

  template <class ActF, class L, class W, class Lr>
  friend packed_layer<W, Lr, ActF, L> pack_as(const lqer_layer<W, Lr>& layer);

 private:
  typename Layout::group_offsets offsets() const noexcept {
    return Layout::main_group(kWeightKind, kWeightRecord, kLowrankRecord, kBlock, weight_blocks(), lowrank_blocks(),
                              has_bias_);
  }

  index_t in_ = 0, out_ = 0, rank_ = 0;
  bool has_bias_ = false;
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
    layer.validate();
    p.in_ = layer.in_features();
    p.out_ = layer.out_features();
    p.rank_ = layer.rank();
    p.has_bias_ = layer.has_bias();
    const index_t nbw = p.weight_blocks(), nbb = p.lowrank_blocks();
    const auto off = p.offsets();
    p.main_ = detail::aligned_bytes(static_cast<std::size_t>(p.groups() * off.stride));
    for (index_t g = 0; g < p.groups(); ++g) {
      std::uint8_t* base = p.main_.data() + g * off.stride;
      const index_t lane0 = Layout::kGroup * g;
      Layout::template pack_group<P::kWeightKind>(layer.wq, lane0, nbw, base, p.w_range_);
      if (p.rank_ > 0)
        Layout::template pack_group<detail::code_kind::byte>(layer.b, lane0, nbb, base + off.correction, p.b_range_);
      if (p.has_bias_) {
        float bias[Layout::kGroup] = {};
        for (index_t j = 0; j < Layout::kGroup && lane0 + j < p.out_; ++j)
          bias[j] = layer.bias[static_cast<std::size_t>(lane0 + j)];
        std::memcpy(base + off.bias, bias, sizeof bias);
      }
    }
    if (p.rank_ > 0) {
      const index_t a_stride = p.a_group_stride();
      p.a_ = detail::aligned_bytes(static_cast<std::size_t>(p.a_groups() * a_stride));
      for (index_t g = 0; g < p.a_groups(); ++g)
        Layout::template pack_group<detail::code_kind::byte>(layer.a, Layout::kGroup * g, nbw,
                                                             p.a_.data() + g * a_stride, p.a_range_);
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
