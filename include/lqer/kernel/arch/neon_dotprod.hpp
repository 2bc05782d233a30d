// lqer — the AArch64 dot-product path: Advanced SIMD + SDOT (Armv8.2-A
// dotprod, e.g. Cortex-A76/A78/X1, Neoverse N1/V1, Apple M1). Compiled into
// every AArch64 build through a function target attribute; runs only where
// dispatch.hpp finds HWCAP_ASIMDDP.
//
// neondot::gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S> (tile.inl): a quad of 4
// int32 lanes holds 4 outputs, so a 16-output group of layout_n16c4 is 4 quads
// (bytes 16q … 16q+15 of each 64-byte lane group). vdotq_laneq_s32(d, w, x, l)
// adds, per output lane, the 4-element dot product of that output's 4 codes
// with the 4 activation bytes of 32-bit lane l of x: one 16-byte load of
// activations serves 4 lane groups.
//
// SDOT is signed × signed: nibble codes u = q + 8 ∈ [0, 15] are already valid
// int8 and keep their offset (init = −8·Σx, as on x86); byte codes
// u = q + 128 do not fit int8 and are turned back into q = u ^ 0x80 (off = 0).
// int32 bounds as in params.hpp. Scale arithmetic as on x86 (params.hpp,
// linear.hpp): magic = integer adds + FSUB + FADD, exact = FMUL, FMUL, FADD.
//
// 32 quad registers: the GEMM tile is 2 rows × 1 group: 8 float + 8 int32
// accumulators + 8 unpacked weight quads + activations and constants.
#pragma once

#if defined(__aarch64__)

#include <arm_neon.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "lqer/config.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/arch/common.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/kernel/prologue.hpp"

#if defined(__clang__)
#define LQER_NEON_TARGET __attribute__((target("dotprod")))
#else
// GCC declares the dot-product intrinsics under "arch=armv8.2-a+dotprod": a plain
// "+dotprod" on an Armv8.0 baseline would not be a superset of it.
#define LQER_NEON_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
#define LQER_NEON_INLINE LQER_NEON_TARGET inline __attribute__((always_inline))

namespace lqer::detail::neondot {

LQER_NEON_INLINE float32x4_t opaque(float32x4_t v) {
  __asm__("" : "+w"(v));
  return v;
}

/// 16 activation bytes starting at p, of which only `valid` (8 or 16) exist.
LQER_NEON_INLINE int8x16_t load_x(const std::int8_t* p, int valid) {
  return valid >= 16 ? vld1q_s8(p) : vcombine_s8(vld1_s8(p), vdup_n_s8(0));
}

/// d + the dot products of weight quad w with 32-bit lane L of x.
template <int L>
LQER_NEON_INLINE int32x4_t dot_lane(int32x4_t d, int8x16_t w, int8x16_t x) {
  return vdotq_laneq_s32(d, w, x, L);
}

/// The offset the dot products leave in the codes: nibbles keep u = q + 8,
/// bytes are made q again (see the file comment).
constexpr int code_offset_of(code_kind k) noexcept { return k == code_kind::nibble ? 8 : 0; }

template <int MR, int NV, int Block, code_kind K, record_kind WR, scale_mode S>
LQER_NEON_INLINE void segment(float32x4_t (&acc)[MR][4 * NV], const act_operand& x, const std::uint8_t* w, index_t nblk,
                              index_t gstride, int wfrac, const prefetch_hint& /*not followed: unmeasured here*/) {
  static_assert(!WR.real() || S == scale_mode::real, "segment: real scales take scale_mode::real");
  static_assert(!WR.min || WR.real(), "segment: block minima come with real scales");
  constexpr int Q = 4 * NV;  // quads: quad q is outputs 4(q%4) … of group q/4
  constexpr index_t kBlockBytes = group_block_bytes(K, Block, WR);
  constexpr index_t kCodeBytes = group_code_bytes(K, Block);
  // Block minima: start at (this path's code offset − code_shift)·(−Σqx) (avx512_vnni.hpp).
  constexpr int kMinInit = code_offset_of(K) - WR.code_shift;
  for (index_t b = 0; b < nblk; ++b) {
    const std::uint8_t* wb = w + b * kBlockBytes;
    const auto* xblk = reinterpret_cast<const std::int8_t*>(x.base + b * x.block_stride);
    const auto* meta = reinterpret_cast<const act_block_meta*>(x.base + b * x.block_stride + x.meta_offset);
    uint32x4_t sbits[Q];
    float32x4_t sreal[Q];  // real scales (scale_mode::real): fp16 (converted exactly) or fp32 records
    float32x4_t smin[Q];   // block minima, stored as the scales
    int32x4_t zk[Q];       // zero points: zk − (stored offset − this path's code offset)
    LQER_UNROLL(4)
    for (int v = 0; v < NV; ++v) {
      const std::uint8_t* sp = wb + v * gstride + kCodeBytes;
      if constexpr (WR.zero_point) {
        const std::uint8_t* zp = layout_n16c4::zero_records<K, WR.scale>(wb + v * gstride, Block);
        const uint8x16_t z = vld1q_u8(zp);  // (clang's vld1q_u8 is a macro: no template commas inside)
        const uint16x8_t z0 = vmovl_u8(vget_low_u8(z)), z1 = vmovl_u8(vget_high_u8(z));
        const int32x4_t r = vdupq_n_s32(zero_record_bias(K, code_offset_of(K)));
        zk[4 * v + 0] = vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(z0))), r);
        zk[4 * v + 1] = vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(z0))), r);
        zk[4 * v + 2] = vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(z1))), r);
        zk[4 * v + 3] = vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(z1))), r);
      }
      if constexpr (WR.scale == scale_kind::e8m0_pow2) {
        const uint8x16_t e = vld1q_u8(sp);
        const uint16x8_t e0 = vmovl_u8(vget_low_u8(e)), e1 = vmovl_u8(vget_high_u8(e));
        sbits[4 * v + 0] = vshlq_n_u32(vmovl_u16(vget_low_u16(e0)), 23);
        sbits[4 * v + 1] = vshlq_n_u32(vmovl_u16(vget_high_u16(e0)), 23);
        sbits[4 * v + 2] = vshlq_n_u32(vmovl_u16(vget_low_u16(e1)), 23);
        sbits[4 * v + 3] = vshlq_n_u32(vmovl_u16(vget_high_u16(e1)), 23);
      } else {
        LQER_UNROLL(4)
        for (int i = 0; i < 4; ++i) {
          if constexpr (WR.scale == scale_kind::f16)
            sreal[4 * v + i] =
                vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(sp) + 4 * i)));
          else
            sreal[4 * v + i] = vld1q_f32(reinterpret_cast<const float*>(sp) + 4 * i);
        }
      }
      if constexpr (WR.min) {
        const std::uint8_t* mp = layout_n16c4::min_records<K, WR>(wb + v * gstride, Block);
        LQER_UNROLL(4)
        for (int i = 0; i < 4; ++i) {
          if constexpr (WR.scale == scale_kind::f16)
            smin[4 * v + i] =
                vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(mp) + 4 * i)));
          else
            smin[4 * v + i] = vld1q_f32(reinterpret_cast<const float*>(mp) + 4 * i);
        }
      }
    }
    uint32x4_t wbits[Q];  // ew·2^23: the weight's share of the exponent field (magic mode)
    if constexpr (WR.scale == scale_kind::e8m0_pow2) {
      LQER_UNROLL(16)
      for (int q = 0; q < Q; ++q) wbits[q] = vsubq_u32(sbits[q], vdupq_n_u32(127u << 23));
    }
    int32x4_t d[MR][Q];
    LQER_UNROLL(8)
    for (int m = 0; m < MR; ++m) {
      if constexpr (S == scale_mode::magic) {
        const uint32x4_t init = vdupq_n_u32(static_cast<std::uint32_t>(meta[m].magic_init));
        LQER_UNROLL(16)
        for (int q = 0; q < Q; ++q) d[m][q] = vreinterpretq_s32_u32(vaddq_u32(init, wbits[q]));
      } else if constexpr (S == scale_mode::real) {
        const int32x4_t init = vdupq_n_s32(WR.min ? kMinInit * meta[m].real_init() : meta[m].real_init());
        LQER_UNROLL(16)
        for (int q = 0; q < Q; ++q) d[m][q] = WR.zero_point ? vmulq_s32(zk[q], init) : init;
      } else {
        const int32x4_t init = vdupq_n_s32(meta[m].init());
        LQER_UNROLL(16)
        for (int q = 0; q < Q; ++q) d[m][q] = init;
      }
    }
    // 16 k (4 lane groups) per step; a block of 8·odd ends with a half step.
    LQER_UNROLL(16)
    for (int c = 0; c < (Block + 15) / 16; ++c) {
      const int valid = Block - 16 * c >= 16 ? 16 : 8;
      int8x16_t xv[MR];
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) xv[m] = load_x(xblk + m * Block + 16 * c, valid);
      if constexpr (K == code_kind::nibble) {
        // Lane-group pair p = 2c (x lanes 0, 1) and p = 2c + 1 (x lanes 2, 3).
        LQER_UNROLL(2)
        for (int half = 0; half < valid / 8; ++half) {
          const int p = 2 * c + half;
          LQER_UNROLL(16)
          for (int q = 0; q < Q; ++q) {
            const uint8x16_t raw = vld1q_u8(wb + (q / 4) * gstride + p * 64 + (q % 4) * 16);
            const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0f)));
            const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
            LQER_UNROLL(8)
            for (int m = 0; m < MR; ++m) {
              if (half == 0) {
                d[m][q] = dot_lane<0>(d[m][q], lo, xv[m]);
                d[m][q] = dot_lane<1>(d[m][q], hi, xv[m]);
              } else {
                d[m][q] = dot_lane<2>(d[m][q], lo, xv[m]);
                d[m][q] = dot_lane<3>(d[m][q], hi, xv[m]);
              }
            }
          }
        }
      } else {
        LQER_UNROLL(4)
        for (int l = 0; l < valid / 4; ++l) {
          LQER_UNROLL(16)
          for (int q = 0; q < Q; ++q) {
            const uint8x16_t u = vld1q_u8(wb + (q / 4) * gstride + (4 * c + l) * 64 + (q % 4) * 16);
            const int8x16_t sq = vreinterpretq_s8_u8(veorq_u8(u, vdupq_n_u8(0x80)));
            LQER_UNROLL(8)
            for (int m = 0; m < MR; ++m) {
              switch (l) {
                case 0: d[m][q] = dot_lane<0>(d[m][q], sq, xv[m]); break;
                case 1: d[m][q] = dot_lane<1>(d[m][q], sq, xv[m]); break;
                case 2: d[m][q] = dot_lane<2>(d[m][q], sq, xv[m]); break;
                default: d[m][q] = dot_lane<3>(d[m][q], sq, xv[m]); break;
              }
            }
          }
        }
      }
    }
    if constexpr (S == scale_mode::magic) {  // see avx512_vnni.hpp
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) {
        const uint32x4_t c = vdupq_n_u32(static_cast<std::uint32_t>(meta[m].magic_c));
        LQER_UNROLL(16)
        for (int q = 0; q < Q; ++q) {
          const float32x4_t term =
              vsubq_f32(vreinterpretq_f32_s32(d[m][q]), vreinterpretq_f32_u32(vaddq_u32(wbits[q], c)));
          acc[m][q] = vaddq_f32(acc[m][q], term);
        }
      }
    } else {
      const float32x4_t inv_wfrac = vdupq_n_f32(exp2_exact(-wfrac));
      float32x4_t sw[Q];
      LQER_UNROLL(16)
      for (int q = 0; q < Q; ++q) {
        if constexpr (WR.scale == scale_kind::e8m0_pow2)
          sw[q] = opaque(vmulq_f32(vreinterpretq_f32_u32(vmaxq_u32(sbits[q], vdupq_n_u32(0x00400000))), inv_wfrac));
        else
          sw[q] = sreal[q];
      }
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) {
        const float32x4_t sx = vdupq_n_f32(S == scale_mode::real ? meta[m].real_scale() : meta[m].scale(wfrac));
        LQER_UNROLL(16)
        for (int q = 0; q < Q; ++q) {
          const float32x4_t s = opaque(vmulq_f32(sx, sw[q]));
          const float32x4_t term = opaque(vmulq_f32(vcvtq_f32_s32(d[m][q]), s));
          acc[m][q] = vaddq_f32(acc[m][q], term);
        }
        if constexpr (WR.min) {  // then float(Σqx)·(sx·m), the reference's second term
          const float32x4_t sum_x = vdupq_n_f32(static_cast<float>(-meta[m].real_init()));
          LQER_UNROLL(16)
          for (int q = 0; q < Q; ++q) {
            const float32x4_t sm = opaque(vmulq_f32(sx, smin[q]));
            acc[m][q] = vaddq_f32(acc[m][q], opaque(vmulq_f32(sum_x, sm)));
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The tile: tile.inl's composition of segment() with the epilogue, on quads
// (four per 16-output group); NEON has no masked loads, so a partial quad of
// the last group goes through a small buffer (only the outputs that exist are
// read from y and written to it).

struct vec {
  using reg = float32x4_t;
  using mask = int;  ///< outputs of the quad that exist, 0 … 4
  static constexpr int kLanes = 4;
  LQER_NEON_INLINE static mask tail(int left) { return left <= 0 ? 0 : left >= 4 ? 4 : left; }
  LQER_NEON_INLINE static reg zero() { return vdupq_n_f32(0.0f); }
  LQER_NEON_INLINE static reg add(reg a, reg b) { return vaddq_f32(a, b); }
  LQER_NEON_INLINE static reg load(const float* p, mask n) {
    if (n == 4) return vld1q_f32(p);
    float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (n > 0) std::memcpy(tmp, p, sizeof(float) * static_cast<std::size_t>(n));
    return vld1q_f32(tmp);
  }
  LQER_NEON_INLINE static reg load_full(const float* p) { return vld1q_f32(p); }
  LQER_NEON_INLINE static void store(float* p, mask n, reg v) {
    if (n == 4) {
      vst1q_f32(p, v);
    } else if (n > 0) {
      float tmp[4];
      vst1q_f32(tmp, v);
      std::memcpy(p, tmp, sizeof(float) * static_cast<std::size_t>(n));
    }
  }
};

#define LQER_TILE_ATTR LQER_NEON_TARGET
#include "lqer/kernel/arch/tile.inl"
#undef LQER_TILE_ATTR

// ---------------------------------------------------------------------------
// Prologue: 4 floats per step, bit-identical to ActFormat::quantize_block
// (FRINTN = round half to even, FRINTA = round half away: both explicit
// modes, independent of FPCR; the rest as in avx512_vnni.hpp).

template <class ActFormat>
LQER_NEON_INLINE int32x4_t encode4(float32x4_t v, int shift) {
  constexpr float qmax = float(ActFormat::kQmax);
  float32x4_t y;
  if (shift > 127)
    y = vmulq_n_f32(vmulq_n_f32(v, exp2_exact(127)), exp2_exact(shift - 127));
  else
    y = vmulq_n_f32(v, exp2_exact(shift));
  float32x4_t r = ActFormat::kRule == mx_rule::lqer ? vrndnq_f32(y) : vrndaq_f32(y);
  r = vminq_f32(vmaxq_f32(r, vdupq_n_f32(-qmax)), vdupq_n_f32(qmax));
  return vcvtq_s32_f32(r);
}

/// Elements [start, start + n) of row xr into v (zeros past n; nothing past
/// the row is read) and their largest magnitude into amax_out; false, with
/// st.bad_col the first non-finite column, when the block has NaN or ±Inf.
/// |x| with its exponent all ones (NaN, ±Inf) has bits above the largest
/// finite float's: an integer compare, which -ffast-math cannot fold away.
template <int Chunks>
LQER_NEON_INLINE bool load_block(const float* xr, index_t start, index_t n, float32x4_t (&v)[Chunks], float& amax_out,
                                 row_status& st) {
  const uint32x4_t max_finite = vdupq_n_u32(0x7f7fffffu);
  float32x4_t amax = vdupq_n_f32(0.0f);
  uint32x4_t finite = vdupq_n_u32(~0u);
  LQER_UNROLL(64)
  for (int c = 0; c < Chunks; ++c) {
    const index_t left = n - 4 * c;
    if (left >= 4) {
      v[c] = vld1q_f32(xr + start + 4 * c);
    } else {
      float tmp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (index_t i = 0; i < left; ++i) tmp[i] = xr[start + 4 * c + i];
      v[c] = vld1q_f32(tmp);
    }
    const float32x4_t av = vabsq_f32(v[c]);
    finite = vandq_u32(finite, vcleq_u32(vreinterpretq_u32_f32(av), max_finite));
    amax = vmaxq_f32(amax, av);
  }
  if (vminvq_u32(finite) == 0) {
    for (index_t i = start; i < start + n; ++i)
      if (is_non_finite(xr[i])) {
        st.bad_col = i;
        break;
      }
    return false;
  }
  amax_out = vmaxvq_f32(amax);
  return true;
}

template <class ActFormat>
LQER_NEON_TARGET void quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                                    const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                                    row_status* status) {
  constexpr int B = ActFormat::kBlock;
  constexpr int kChunks = B / 4;
  constexpr int F = ActFormat::kFractionBits;
  const index_t nblk = lay.nblk;
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    for (index_t b = 0; b < nblk && st.bad_col < 0; ++b) {
      const index_t start = b * B;
      const index_t n = cols - start < B ? cols - start : B;
      float32x4_t v[kChunks];
      float amax;
      if (!load_block<kChunks>(xr, start, n, v, amax, st)) break;
      const int e = block_exponent<ActFormat>(amax);
      const int shift = F - e;
      int32x4_t sum = vdupq_n_s32(0);
      uint32x4_t nonzero = vdupq_n_u32(0);
      LQER_UNROLL(32)
      for (int c = 0; c < kChunks; c += 2) {  // B % 8 == 0: chunks come in pairs
        const int32x4_t q0 = encode4<ActFormat>(v[c], shift), q1 = encode4<ActFormat>(v[c + 1], shift);
        sum = vaddq_s32(sum, vaddq_s32(q0, q1));
        nonzero = vorrq_u32(nonzero, vorrq_u32(vtstq_s32(q0, q0), vtstq_s32(q1, q1)));
        const int16x8_t w16 = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));  // |q| ≤ 127: exact
        vst1_s8(lay.codes(panel, r, b) + 4 * c, vqmovn_s16(w16));
      }
      const int code_sum = vaddvq_s32(sum);
      const int ex = vmaxvq_u32(nonzero) ? e : 0;
      st.ex.add(ex);
      for (index_t k = 0; k < lay.consumers; ++k) *lay.meta(panel, r, b, k) = make_block_meta(code_sum, ex, F, cons[k]);
    }
    status[r] = st;
  }
}

/// The prologue of intq's symmetric scheme (Q8_0-style activations, blocks a
/// multiple of 8), 4 floats per step, bit-identical to
/// ActFormat::quantize_block: the steps of avx512_vnni.hpp's
/// quantize_rows_symmetric, with FRINTA (round to nearest, ties away from
/// zero, an explicit mode independent of FPCR) as round_half_away.
template <class ActFormat>
LQER_NEON_TARGET void quantize_rows_symmetric(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                                              const act_panel_layout& lay, std::uint8_t* panel,
                                              const act_consumer* cons, row_status* status) {
  static_assert(is_vector_symmetric<ActFormat, 8>());
  constexpr int B = ActFormat::kBlock;
  const float32x4_t qmax = vdupq_n_f32(float(ActFormat::kQmax));
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    for (index_t b = 0; b < lay.nblk && st.bad_col < 0; ++b) {
      const index_t start = b * B, n = cols - start < B ? cols - start : B;
      float32x4_t v[B / 4];
      float amax;
      if (!load_block<B / 4>(xr, start, n, v, amax, st)) break;
      const symmetric_step step = symmetric_scale<ActFormat>(amax);
      const float32x4_t vid = vdupq_n_f32(step.id), vd = vdupq_n_f32(step.d);
      std::int8_t* q = lay.codes(panel, r, b);
      int32x4_t sum = vdupq_n_s32(0);
      int32x4_t code[2];
      LQER_UNROLL(32)
      for (int c = 0; c < B / 4; ++c) {
        const float32x4_t t = step.by_inverse ? vmulq_f32(v[c], vid) : vdivq_f32(v[c], vd);
        code[c % 2] = vcvtq_s32_f32(vminq_f32(vmaxq_f32(vrndaq_f32(t), vnegq_f32(qmax)), qmax));  // integral: exact
        sum = vaddq_s32(sum, code[c % 2]);
        if (c % 2 == 1) {
          const int16x8_t w16 = vcombine_s16(vqmovn_s32(code[0]), vqmovn_s32(code[1]));  // |q| ≤ 127: exact
          vst1_s8(q + 4 * (c - 1), vqmovn_s16(w16));
        }
      }
      typename ActFormat::block_scale s{};
      s.d = detail::scale_storage<ActFormat::kScaleDtype>::store(step.d);
      if (!put_real_records<ActFormat>(s, vaddvq_s32(sum), xr, start, cols, lay, panel, r, b, cons, st)) break;
    }
    status[r] = st;
  }
}

}  // namespace lqer::detail::neondot

namespace lqer::detail {

struct neon_dotprod_isa : path_tag::neon_dotprod {
  /// SDOT is signed × signed: nibbles keep their offset (they fit int8), bytes are made signed.
  static constexpr int code_offset(code_kind k) noexcept { return neondot::code_offset_of(k); }
  static constexpr int kGemvRows = 2;
  static constexpr int kGemvGroups = 1;
  static constexpr int kGemmRows = 2;
  static constexpr int kGemmGroups = 1;

  template <class ActFormat>
  static void quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                            const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                            row_status* status) {
    if constexpr (is_mxint<ActFormat>::value)
      neondot::quantize_rows<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
    else if constexpr (is_vector_symmetric<ActFormat, 8>())
      neondot::quantize_rows_symmetric<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
    else  // other real-scale activations: the format's own encoder
      quantize_rows_scalar<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
  }
  template <int MR, int NV, int Block, code_kind K0, bool Corr, scale_mode S, record_kind WR0 = record_kind{},
            record_kind WR1 = record_kind{}>
  static void tile(const tile_args& a) {
    neondot::gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S, WR0, WR1>(a);
  }
};

template <>
struct path_kernels<path_tag::neon_dotprod> {
  using type = neon_dotprod_isa;
};

}  // namespace lqer::detail

#endif  // __aarch64__
