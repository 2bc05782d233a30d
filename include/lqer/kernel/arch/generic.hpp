// lqer — the generic path: portable C++ micro-kernels, the fallback on every
// architecture and the plainest statement of what the SIMD paths compute.
//
// gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S> (tile.inl): MR rows × NV
// groups of 16 outputs; activations MX int8 codes, weights MX codes of kind K0
// (nibble or byte) with the correction's byte codes as a second segment;
// float32 out. Codes are made signed again (u − offset), so the activation
// records' `init` is not used (offset 0 for this path), and every term is
// float(dot)·(2^(ex−Fx)·2^(ew−Fw)) added to its accumulator — the reference's
// very expressions, so the result is bit-identical for every input; the scale
// mode template argument is accepted and ignored.
//
// The inner loops run over the 16 outputs of a group with int32 lanes so that
// a compiler can vectorize them for whatever baseline ISA it targets.
#pragma once

#include <cstdint>
#include <cstring>

#include "lqer/config.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/fp16.hpp"
#include "lqer/format/rounding.hpp"
#include "lqer/kernel/arch/common.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/layout.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/kernel/prologue.hpp"

namespace lqer::detail {

namespace portable {  // the path's own namespace, as every path has (tile.inl defines the same names in each)

/// The float of one stored real scale record (fp16 or fp32), exactly.
template <scale_kind Kind>
float real_scale_at(const std::uint8_t* p) noexcept {
  if constexpr (Kind == scale_kind::f16) {
    half_bits h;
    std::memcpy(&h.bits, p, 2);
    return half_to_float(h);
  } else {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
}

/// One operand's blocks of an MR × NV-group tile, accumulated into
/// acc[m][16·v + j] (see the file comment). Magic and exact modes are the
/// same here (the reference's arithmetic in every case); real mode reads the
/// activation records as act_block_meta::real.
template <int MR, int NV, int Block, code_kind K, record_kind WR, scale_mode S>
void segment(float (&acc)[MR][16 * NV], const act_operand& x, const std::uint8_t* w, index_t nblk, index_t gstride,
             int wfrac, const prefetch_hint& /*compute-bound: not followed*/) {
  static_assert(!WR.real() || S == scale_mode::real, "segment: real scales take scale_mode::real");
  constexpr index_t kBlockBytes = group_block_bytes(K, Block, WR);
  constexpr index_t kCodeBytes = group_code_bytes(K, Block);
  for (int v = 0; v < NV; ++v) {
    const std::uint8_t* wv = w + v * gstride;
    for (index_t b = 0; b < nblk; ++b, wv += kBlockBytes) {
      using L = path_tag::generic::layout;
      // q − zero, with zero = zk − offset (layout.hpp's record_kind), or q; code_at gives q (code offset 0).
      // A block minimum's codes stand for q + code_shift: zero = −code_shift.
      std::int32_t zero[16] = {};
      if constexpr (WR.zero_point)
        for (int j = 0; j < 16; ++j) zero[j] = L::zero_records<K, WR.scale>(wv, Block)[j] - zero_record_bias(K, 0);
      if constexpr (WR.min)
        for (int j = 0; j < 16; ++j) zero[j] = -WR.code_shift;
      std::int32_t wq[Block][16];
      for (int kk = 0; kk < Block; ++kk)
        for (int j = 0; j < 16; ++j) wq[kk][j] = L::code_at<K>(wv, j, kk) - zero[j];
      float sw[16];
      for (int j = 0; j < 16; ++j) {
        if constexpr (WR.scale == scale_kind::e8m0_pow2)
          sw[j] = mul_pow2(1.0f, static_cast<int>(wv[kCodeBytes + j]) - e8m0::kBias - wfrac);
        else
          sw[j] = real_scale_at<WR.scale>(L::scale_record<K, WR.scale>(wv, Block, j));
      }
      float mins[16] = {};
      if constexpr (WR.min)
        for (int j = 0; j < 16; ++j)
          mins[j] = real_scale_at<WR.scale>(L::min_records<K, WR>(wv, Block) + j * (L::scale_bytes(WR.scale) / 16));
      const std::uint8_t* xblk = x.base + b * x.block_stride;
      const auto* meta = reinterpret_cast<const act_block_meta*>(xblk + x.meta_offset);
      for (int m = 0; m < MR; ++m) {
        const auto* xq = reinterpret_cast<const std::int8_t*>(xblk) + m * Block;
        std::int32_t dot[16] = {};
        for (int kk = 0; kk < Block; ++kk)
          for (int j = 0; j < 16; ++j) dot[j] += static_cast<std::int32_t>(xq[kk]) * wq[kk][j];
        const float sx = S == scale_mode::real ? meta[m].real_scale() : meta[m].scale(wfrac);
        for (int j = 0; j < 16; ++j) acc[m][16 * v + j] += no_contract(static_cast<float>(dot[j]) * (sx * sw[j]));
        if constexpr (WR.min) {  // then the minimum's term, float(Σqx)·(sx·m), as the reference
          std::int32_t sum_x = 0;
          for (int kk = 0; kk < Block; ++kk) sum_x += xq[kk];
          for (int j = 0; j < 16; ++j) acc[m][16 * v + j] += no_contract(static_cast<float>(sum_x) * (sx * mins[j]));
        }
      }
    }
  }
}

/// The tile's epilogue on single floats (tile.inl).
struct vec {
  using reg = float;
  using mask = bool;  ///< the output exists
  static constexpr int kLanes = 1;
  static mask tail(int left) noexcept { return left > 0; }
  static reg zero() noexcept { return 0.0f; }
  static reg add(reg a, reg b) noexcept { return a + b; }
  static reg load(const float* p, mask k) noexcept { return k ? *p : 0.0f; }
  static reg load_full(const float* p) noexcept { return *p; }
  static void store(float* p, mask k, reg v) noexcept {
    if (k) *p = v;
  }
};

#define LQER_TILE_ATTR
#include "lqer/kernel/arch/tile.inl"
#undef LQER_TILE_ATTR

}  // namespace portable

struct generic_isa : path_tag::generic {
  /// Signed × signed: no code offset to cancel.
  static constexpr int code_offset(code_kind) noexcept { return 0; }
  static constexpr int kGemvRows = 4;
  static constexpr int kGemvGroups = 1;
  static constexpr int kGemmRows = 4;
  static constexpr int kGemmGroups = 1;

  template <class ActFormat>
  static void quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                            const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                            row_status* status) {
    quantize_rows_scalar<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
  }

  /// gemm_qmx8_f32_qmxw_n16c4 of this namespace (tile.inl).
  template <int MR, int NV, int Block, code_kind K0, bool Corr, scale_mode S, record_kind WR0 = record_kind{},
            record_kind WR1 = record_kind{}>
  static void tile(const tile_args& a) {
    portable::gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S, WR0, WR1>(a);
  }
};

template <>
struct path_kernels<path_tag::generic> {
  using type = generic_isa;
};

}  // namespace lqer::detail
