// lqer — the generic path: portable C++ micro-kernels, the fallback on every
// architecture and the plainest statement of what the SIMD paths compute.
//
// gemm_qmx8_f32_qmxw_n16_generic<MR, NV, Block, K0, Corr>: MR rows × NV
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
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/kernel/prologue.hpp"

namespace lqer::detail {

/// Keeps a compiler from contracting `a + b·c` into an FMA across this value
/// (GCC contracts by default in GNU mode): the reference rounds the product.
inline float no_contract(float v) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

/// Signed code of output j, element kk of one block record of kind K.
template <code_kind K>
inline int unpack_code(const std::uint8_t* blk, int j, int kk) noexcept {
  if constexpr (K == code_kind::nibble) {
    const std::uint8_t byte = blk[(kk / 8) * 64 + j * 4 + (kk % 4)];
    return static_cast<int>((kk % 8) < 4 ? (byte & 0x0f) : (byte >> 4)) - 8;
  } else {
    return static_cast<int>(blk[(kk / 4) * 64 + j * 4 + (kk % 4)]) - 128;
  }
}

template <int MR, int Block, code_kind K>
void generic_segment(float (&acc)[MR][16], const act_operand& x, const std::uint8_t* w, index_t nblk, int wfrac) {
  constexpr index_t kBlockBytes = group_block_bytes(K, Block);
  constexpr index_t kCodeBytes = group_code_bytes(K, Block);
  for (index_t b = 0; b < nblk; ++b, w += kBlockBytes) {
    std::int32_t wq[Block][16];
    for (int kk = 0; kk < Block; ++kk)
      for (int j = 0; j < 16; ++j) wq[kk][j] = unpack_code<K>(w, j, kk);
    float sw[16];
    for (int j = 0; j < 16; ++j) sw[j] = mul_pow2(1.0f, static_cast<int>(w[kCodeBytes + j]) - e8m0::kBias - wfrac);
    const std::uint8_t* xblk = x.base + b * x.block_stride;
    const auto* meta = reinterpret_cast<const act_block_meta*>(xblk + x.meta_offset);
    for (int m = 0; m < MR; ++m) {
      const auto* xq = reinterpret_cast<const std::int8_t*>(xblk) + m * Block;
      std::int32_t dot[16] = {};
      for (int kk = 0; kk < Block; ++kk)
        for (int j = 0; j < 16; ++j) dot[j] += static_cast<std::int32_t>(xq[kk]) * wq[kk][j];
      const float sx = meta[m].scale(wfrac);
      for (int j = 0; j < 16; ++j) acc[m][j] += no_contract(static_cast<float>(dot[j]) * (sx * sw[j]));
    }
  }
}

struct generic_isa {
  static constexpr kernel_path kPath = kernel_path::generic;
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

  /// gemm_qmx8_f32_qmxw_n16_generic: see the file comment.
  template <int MR, int NV, int Block, code_kind K0, bool Corr, scale_mode>
  static void tile(const tile_args& a) {
    for (int v = 0; v < NV; ++v) {
      const int n0 = 16 * v;
      if (n0 >= a.n_valid) break;
      const int nv = a.n_valid - n0 < 16 ? a.n_valid - n0 : 16;
      float acc[MR][16] = {};
      if (a.load_acc)
        for (int m = 0; m < MR; ++m)
          for (int j = 0; j < nv; ++j) acc[m][j] = a.y[m * a.ldy + n0 + j];
      generic_segment<MR, Block, K0>(acc, a.x0, a.w0 + v * a.group_stride, a.nblk0, a.wfrac0);
      const bool bias = a.finish && a.bias;
      if (a.finish) {
        if constexpr (Corr)
          generic_segment<MR, Block, code_kind::byte>(acc, a.x1, a.w1 + v * a.group_stride, a.nblk1, a.wfrac1);
      }
      float b[16] = {};
      if (bias) std::memcpy(b, reinterpret_cast<const std::uint8_t*>(a.bias) + v * a.group_stride, sizeof b);
      for (int m = 0; m < MR; ++m) {
        float* yr = a.y + m * a.ldy + n0;
        for (int j = 0; j < nv; ++j) yr[j] = bias ? acc[m][j] + b[j] : acc[m][j];
      }
    }
  }
};

}  // namespace lqer::detail
