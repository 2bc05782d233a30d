// lqer — the AVX-512 VNNI path: vpdpbusd on zmm (16 int32 lanes = one
// 16-output group of layout_n16c4). Compiled into every x86-64 build through
// function target attributes (no -m flags); runs only where dispatch.hpp finds
// AVX-512 F/BW/VL/VNNI.
//
// Micro-kernel avx512::gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S>
// (composed by tile.inl from this path's segment() and the shared epilogue):
// MR activation rows × NV groups of 16 outputs; activations MX int8 codes
// (signed, broadcast 4 bytes at a time), weights u = q + off unsigned (nibbles
// for ≤ 4-bit codes, bytes otherwise; the correction's B always bytes), f32 out.
// Per block of the reduction, per row and group (scale_mode::magic):
//
//     d   = magic_init + ew·2^23                       (2^22 − off·Σx) under the exponent bits of 2^(23+E)
//     d   = vpdpbusd(d, u[c], x[c])   c < Block/4      + the u8×s8 products: d's bits = 2^(23+E) + (2^22 + dot)·2^E
//     acc = acc + (float(d) − 1.5·2^(23+E))            the subtraction is exact (Sterbenz): acc += dot·2^E
//
// (linear.hpp: why this is the reference's rounding exactly; scale_mode::exact
// converts d and multiplies instead). Per (row, group, block) that is two
// integer adds, one subtract and one add; on Zen 4 vpdpbusd and FMA/multiply
// share one pair of pipes, adds and conversions use the other pair, integer
// ops go to either — measured 88–93% of the vpdpbusd-only rate at Block 16,
// against 74–82% for cvt + FMA. The first kFmaRows rows of a tile instead
// leave ew out of d and finish with fma(float(d) − C', 2^ew, acc): one op on
// the vpdpbusd pipes instead of two integer adds, which evens out the load of
// the two pairs. Unpacking nibbles costs 3 ops per 64 bytes (and, shift, and)
// and the scales 3 per group and block, shared by the MR rows.
//
// Measured on Zen 5 (2026-11, 1 core, 3.66 G vpdpbusd/s, latency 4 cycles):
// 8 vpdpbusd chains with one independent FMA each run at 0.53× the
// vpdpbusd-only rate (they share the pipe), with one or two integer adds or
// logic ops each at 0.99×, with one float add at 0.99× (two dependent ones: 0.57×).
// Replacing the high-nibble shift + and by one gf2p8affineqb was 4% slower
// (it takes the vpdpbusd pipe too); skipping the unpack altogether (a wrong
// result, for measuring only) 6% faster. The 4 × 2 tile at M = 128 runs at
// 82–86% of the vpdpbusd peak, and the prologue (quantizing x) adds ~3% of
// the time at N = 4096; oneDNN's int8 GEMM, with neither nibbles nor block
// scales, runs at 90–98% (M ≥ 32, several runs).
//
// Register budget (32 zmm): MR·NV float accumulators + MR·NV int32 block
// accumulators + 2·NV unpacked weights + 2·NV scale vectors + constants: the
// 4 × 2-group tile takes 29. GEMV (M ≤ 2) runs one M × 4-group tile over the
// whole reduction; M = 3, 4 one 4 × 2 tile likewise; larger M the 4 × 2 tile
// in the blocked loop nest of linear.hpp (M-chunks in L2, K-chunks in L1).
#pragma once

#if defined(__x86_64__)

#include <immintrin.h>

#include <array>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "lqer/config.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/arch/common.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/kernel/prologue.hpp"

#define LQER_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define LQER_AVX512_INLINE LQER_AVX512_TARGET inline __attribute__((always_inline))

namespace lqer::detail::avx512 {

LQER_AVX512_INLINE __m512i broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

/// |v| and sign(v)·1 with integer logic (the _ps logic ops are AVX512DQ).
LQER_AVX512_INLINE __m512 abs_ps(__m512 v) {
  return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
}
LQER_AVX512_INLINE __m512 sign_one_ps(__m512 v) {  // ±1.0 with v's sign bit
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN)),
                                             _mm512_set1_epi32(0x3f800000)));
}

/// Keeps the compiler from fusing a multiply into a following add (exact mode).
LQER_AVX512_INLINE __m512 opaque(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

// ---------------------------------------------------------------------------
// One segment (Wq's or B's blocks) of a tile, accumulated into acc.

/// Rows of a tile whose magic-mode terms apply the weight's 2^ew by FMA rather
/// than by integer adds (see the file comment): balances the two pipe pairs.
/// Measured on Zen 4 at M = 4 and 128, K = N = 4096: Block 16 gains 8–12%
/// with half the rows (none: 297–307 GOPS/core, half: 315–359, all: slower),
/// Block 32 (twice the vpdpbusd per term) nothing, so it keeps integer adds.
template <int MR, int Block>
inline constexpr int kFmaRows = Block <= 16 ? MR / 2 : 0;

template <int MR, int NV, int Block, code_kind K, record_kind WR, scale_mode S>
LQER_AVX512_INLINE void segment(__m512 (&acc)[MR][NV], const act_operand& x, const std::uint8_t* w, index_t nblk,
                                index_t gstride, int wfrac, const prefetch_hint& prefetch) {
  static_assert(!WR.real() || S == scale_mode::real, "segment: real scales take scale_mode::real");
  static_assert(!WR.min || WR.real(), "segment: block minima come with real scales");
  constexpr index_t kBlockBytes = group_block_bytes(K, Block, WR);
  constexpr index_t kCodeBytes = group_code_bytes(K, Block);
  // Block minima: the dots see u' = q + stored offset; the accumulator starts
  // at (stored offset − code_shift)·(−Σqx) so that it ends at Σ (q + code_shift)·qx.
  constexpr int kMinInit = stored_offset(K) - WR.code_shift;
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  const __m512i min_scale_bits = _mm512_set1_epi32(0x00400000);  // the float 2^-127 (exact mode)
  const __m512 inv_wfrac = _mm512_set1_ps(exp2_exact(-wfrac));
  for (index_t b = 0; b < nblk; ++b) {
    const std::uint8_t* wb = w + b * kBlockBytes;
    if (prefetch.ahead > 0) {
      LQER_UNROLL(4)
      for (int v = 0; v < NV; ++v) {
        LQER_UNROLL(8)
        for (index_t o = 0; o < kBlockBytes; o += kPrefetchLine)
          _mm_prefetch(reinterpret_cast<const char*>(wb + v * gstride + prefetch.ahead + o), _MM_HINT_T0);
      }
    }
    prefetch_next_slice(prefetch, b);
    // This block of the MR rows: codes of row m at xblk + m·Block, records at meta[m].
    const auto* xblk = reinterpret_cast<const std::int8_t*>(x.base + b * x.block_stride);
    const auto* meta = reinterpret_cast<const act_block_meta*>(x.base + b * x.block_stride + x.meta_offset);
    // Block scales (16 E8M0 bytes per group after the codes): sbits = bw·2^23,
    // the float 2^ew; wbits = (bw − 127)·2^23 = ew·2^23, the weight's share of
    // the exponent field of 2^(23+E).
    // Real scales (scale_mode::real): 16 fp16 or fp32 records, made floats exactly;
    // zero points: 16 bytes zk after them (this path's dot leaves the whole stored
    // offset out, so the accumulator starts at zk·(−Σqx)).
    __m512i sbits[NV], wbits[NV], zk[NV];
    __m512 sreal[NV], smin[NV];
    LQER_UNROLL(4)
    for (int v = 0; v < NV; ++v) {
      const std::uint8_t* sp = wb + v * gstride + kCodeBytes;
      if constexpr (WR.scale == scale_kind::e8m0_pow2) {
        const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sp));
        sbits[v] = _mm512_slli_epi32(_mm512_cvtepu8_epi32(e), 23);
        wbits[v] = _mm512_sub_epi32(sbits[v], _mm512_set1_epi32(127 << 23));
      } else if constexpr (WR.scale == scale_kind::f16) {
        sreal[v] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp)));
      } else {
        sreal[v] = _mm512_loadu_ps(reinterpret_cast<const float*>(sp));
      }
      // This path's dots see the stored codes (code_offset = stored offset): zk as stored.
      static_assert(zero_record_bias(K, stored_offset(K)) == 0);
      if constexpr (WR.zero_point)
        zk[v] = _mm512_cvtepu8_epi32(_mm_loadu_si128(
            reinterpret_cast<const __m128i*>(layout_n16c4::zero_records<K, WR.scale>(wb + v * gstride, Block))));
      if constexpr (WR.min) {
        const std::uint8_t* mp = layout_n16c4::min_records<K, WR>(wb + v * gstride, Block);
        if constexpr (WR.scale == scale_kind::f16)
          smin[v] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mp)));
        else
          smin[v] = _mm512_loadu_ps(reinterpret_cast<const float*>(mp));
      }
    }
    __m512i d[MR][NV];
    LQER_UNROLL(8)
    for (int m = 0; m < MR; ++m) {
      if constexpr (S == scale_mode::magic) {
        const __m512i init = _mm512_set1_epi32(meta[m].magic_init);
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) d[m][v] = m < kFmaRows<MR, Block> ? init : _mm512_add_epi32(init, wbits[v]);
      } else if constexpr (S == scale_mode::real) {
        const __m512i init = _mm512_set1_epi32(WR.min ? kMinInit * meta[m].real_init() : meta[m].real_init());
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) d[m][v] = WR.zero_point ? _mm512_mullo_epi32(zk[v], init) : init;
      } else {
        const __m512i init = _mm512_set1_epi32(meta[m].init());
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) d[m][v] = init;
      }
    }
    if constexpr (K == code_kind::nibble) {
      LQER_UNROLL(16)
      for (int p = 0; p < Block / 8; ++p) {
        __m512i lo[NV], hi[NV];
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) {
          const __m512i raw = _mm512_loadu_si512(wb + v * gstride + p * 64);
          lo[v] = _mm512_and_si512(raw, low_nibbles);
          hi[v] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low_nibbles);
        }
        LQER_UNROLL(8)
        for (int m = 0; m < MR; ++m) {
          const __m512i xl = broadcast4(xblk + m * Block + 8 * p), xh = broadcast4(xblk + m * Block + 8 * p + 4);
          LQER_UNROLL(4)
          for (int v = 0; v < NV; ++v) {
            d[m][v] = _mm512_dpbusd_epi32(d[m][v], lo[v], xl);
            d[m][v] = _mm512_dpbusd_epi32(d[m][v], hi[v], xh);
          }
        }
      }
    } else {
      LQER_UNROLL(32)
      for (int c = 0; c < Block / 4; ++c) {
        __m512i u[NV];
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) u[v] = _mm512_loadu_si512(wb + v * gstride + c * 64);
        LQER_UNROLL(8)
        for (int m = 0; m < MR; ++m) {
          const __m512i xc = broadcast4(xblk + m * Block + 4 * c);
          LQER_UNROLL(4)
          for (int v = 0; v < NV; ++v) d[m][v] = _mm512_dpbusd_epi32(d[m][v], u[v], xc);
        }
      }
    }
    if constexpr (S == scale_mode::magic) {
      // Integer-add rows: d's bits are the float X = 2^(23+E) + (2^22 + dot)·2^E;
      // minus C = 1.5·2^(23+E) (exact: Sterbenz) leaves dot·2^E, then one
      // rounding into acc. FMA rows: d holds the same without ew,
      // X' − C' = dot·2^(E−ew) exactly, and fma(·, 2^ew, acc) rounds once.
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) {
        const __m512i c = _mm512_set1_epi32(meta[m].magic_c);
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) {
          if (m < kFmaRows<MR, Block>) {
            const __m512 t = _mm512_sub_ps(_mm512_castsi512_ps(d[m][v]), _mm512_castsi512_ps(c));
            acc[m][v] = _mm512_fmadd_ps(t, _mm512_castsi512_ps(sbits[v]), acc[m][v]);
          } else {
            const __m512 term =
                _mm512_sub_ps(_mm512_castsi512_ps(d[m][v]), _mm512_castsi512_ps(_mm512_add_epi32(wbits[v], c)));
            acc[m][v] = _mm512_add_ps(acc[m][v], term);
          }
        }
      }
    } else {
      __m512 sw[NV];  // 2^(ew − Fw), exact: 2^ew (2^-127 for bw = 0) times 2^-Fw; or the real scale
      LQER_UNROLL(4)
      for (int v = 0; v < NV; ++v) {
        if constexpr (WR.scale == scale_kind::e8m0_pow2)
          sw[v] = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_max_epu32(sbits[v], min_scale_bits)), inv_wfrac);
        else
          sw[v] = sreal[v];
      }
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) {
        const __m512 sx = _mm512_set1_ps(S == scale_mode::real ? meta[m].real_scale() : meta[m].scale(wfrac));
        LQER_UNROLL(4)
        for (int v = 0; v < NV; ++v) {
          const __m512 s = opaque(_mm512_mul_ps(sx, sw[v]));
          const __m512 term = opaque(_mm512_mul_ps(_mm512_cvtepi32_ps(d[m][v]), s));
          acc[m][v] = _mm512_add_ps(acc[m][v], term);
        }
        if constexpr (WR.min) {  // then float(Σqx)·(sx·m), the reference's second term (exact Σqx)
          const __m512 sum_x = _mm512_set1_ps(static_cast<float>(-meta[m].real_init()));
          LQER_UNROLL(4)
          for (int v = 0; v < NV; ++v) {
            const __m512 sm = opaque(_mm512_mul_ps(sx, smin[v]));
            acc[m][v] = _mm512_add_ps(acc[m][v], opaque(_mm512_mul_ps(sum_x, sm)));
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The tile: tile.inl's composition of segment() with the epilogue, on zmm
// registers (one 16-output group each) with AVX-512 masks for the tail.

struct vec {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int kLanes = 16;
  LQER_AVX512_INLINE static mask tail(int left) {
    return left >= 16 ? mask(0xffff) : left <= 0 ? mask(0) : mask((1u << left) - 1);
  }
  LQER_AVX512_INLINE static reg zero() { return _mm512_setzero_ps(); }
  LQER_AVX512_INLINE static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  LQER_AVX512_INLINE static reg load(const float* p, mask k) { return _mm512_maskz_loadu_ps(k, p); }
  LQER_AVX512_INLINE static reg load_full(const float* p) { return _mm512_loadu_ps(p); }
  LQER_AVX512_INLINE static void store(float* p, mask k, reg v) { _mm512_mask_storeu_ps(p, k, v); }
};

#define LQER_TILE_ATTR LQER_AVX512_TARGET
#include "lqer/kernel/arch/tile.inl"
#undef LQER_TILE_ATTR

// ---------------------------------------------------------------------------
// Prologue: 16 floats per step, bit-identical to ActFormat::quantize_block.

/// Codes of one chunk of ≤ 16 elements scaled by s1·s2 (s2 only when
/// two_step), rounded by ActFormat's rule and clamped; zero lanes stay zero.
/// The scale is 2^shift with shift = F − e: one correctly rounded product
/// (= ldexp) when shift ≤ 127, else two exact steps 2^127 · 2^(shift − 127)
/// (a block whose amax is below 2^(F−127)); a lane with s2 = 1 is unchanged
/// by the second step, so blocks of both kinds can share it.
template <class ActFormat>
LQER_AVX512_INLINE __m512i encode16(__m512 v, __m512 s1, __m512 s2, bool two_step) {
  constexpr float qmax = float(ActFormat::kQmax);
  __m512 y = _mm512_mul_ps(v, s1);
  if (two_step) y = _mm512_mul_ps(y, s2);
  __m512 r;
  if constexpr (ActFormat::kRule == mx_rule::lqer) {
    // round(|y|) half to even, with y's sign = round_half_even(y): the rounding is symmetric.
    r = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  } else {
    // Round half away from zero: trunc, then step away when the dropped part is ≥ 1/2
    // (y − trunc(y) is exact for |y| < 2^23; here |y| < 2^(F+1) ≤ 2^8).
    const __m512 t = _mm512_roundscale_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 frac = _mm512_sub_ps(y, t);
    const __mmask16 away = _mm512_cmp_ps_mask(abs_ps(frac), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    r = _mm512_mask_add_ps(t, away, t, sign_one_ps(y));
  }
  r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-qmax)), _mm512_set1_ps(qmax));
  return _mm512_cvtps_epi32(r);  // integral already: exact
}

/// Lane j of the result = op over the 16 lanes of v[j] (v is clobbered): a
/// transposed reduction in four levels. Level c (8, 4, 2, 1 lanes) pairs
/// v[i] with v[i + n/2] and combines the even c-lane chunks of both with the
/// odd ones, which halves the vectors and doubles the blocks each one holds;
/// the pairing keeps block j in lane j. 15 steps of two permutes and one op
/// for 16 blocks, where 16 horizontal reductions take ~8 dependent ops each.
/// permutex2var indices of reduce16: [2·level] picks the even chunks, [2·level + 1] the odd.
inline constexpr std::array<std::array<std::int32_t, 16>, 8> kReduce16Index = [] {
  std::array<std::array<std::int32_t, 16>, 8> t{};
  for (int level = 0; level < 4; ++level) {
    const int c = 8 >> level;  // lanes per chunk
    for (int l = 0; l < 16; ++l) {
      const int in = l % (2 * c), gs = l - in;  // position in, and start of, its 2c-lane group
      t[2 * level][l] = in < c ? gs + in : 16 + gs + in - c;
      t[2 * level + 1][l] = t[2 * level][l] + c;
    }
  }
  return t;
}();

struct max_u32 {
  LQER_AVX512_INLINE __m512i operator()(__m512i a, __m512i b) const { return _mm512_max_epu32(a, b); }
};
struct add_i32 {
  LQER_AVX512_INLINE __m512i operator()(__m512i a, __m512i b) const { return _mm512_add_epi32(a, b); }
};

template <class Op>
LQER_AVX512_INLINE __m512i reduce16(__m512i (&v)[16], Op op) {
  LQER_UNROLL(4)
  for (int level = 0; level < 4; ++level) {
    const int half = 8 >> level;  // pairs at this level
    const __m512i px = _mm512_loadu_si512(kReduce16Index[2 * level].data());
    const __m512i py = _mm512_loadu_si512(kReduce16Index[2 * level + 1].data());
    LQER_UNROLL(8)
    for (int i = 0; i < half; ++i) {
      const __m512i x = _mm512_permutex2var_epi32(v[i], px, v[i + half]);
      const __m512i y = _mm512_permutex2var_epi32(v[i], py, v[i + half]);
      v[i] = op(x, y);
    }
  }
  return v[0];
}

LQER_AVX512_INLINE void put_meta(std::uint8_t* at, const act_block_meta& m) { std::memcpy(at, &m, sizeof m); }

/// The scales encode16 takes for a block of exponent e (shift = F − e); returns two_step.
template <class ActFormat>
LQER_AVX512_INLINE bool block_scales(int e, float& s1, float& s2) {
  const int shift = ActFormat::kFractionBits - e;
  const bool two_step = shift > 127;
  s1 = exp2_exact(two_step ? 127 : shift);
  s2 = exp2_exact(two_step ? shift - 127 : 0);
  return two_step;
}

/// Lanes of chunk c that belong to a whole block (all but a short last chunk).
template <int B>
LQER_AVX512_INLINE __mmask16 block_lanes(int c) {
  constexpr int kTail = B % 16;  // elements in a short last chunk (0: none)
  if (kTail != 0 && c == B / 16) return static_cast<__mmask16>((1u << kTail) - 1);
  return static_cast<__mmask16>(0xffff);
}

/// \cond LQER_INTERNAL (doxygen 1.9 misreads the body below as a declaration)
/// The codes of one block: its chunks v encoded (encode16) and stored at q8, the
/// lanes of a whole block only. Returns their sum; `nonzero` = any code ≠ 0.
template <class ActFormat>
LQER_AVX512_INLINE __m512i encode_block(const __m512* v, __m512 s1, __m512 s2, bool two_step, std::int8_t* q8,
                                        bool* nonzero) {
  constexpr int B = ActFormat::kBlock;
  constexpr int kChunks = (B + 15) / 16;
  __m512i sum = _mm512_setzero_si512();
  __mmask16 nz = 0;
  LQER_UNROLL(64)
  for (int c = 0; c < kChunks; ++c) {
    const __m512i q = encode16<ActFormat>(v[c], s1, s2, two_step);
    sum = _mm512_add_epi32(sum, q);
    nz |= _mm512_test_epi32_mask(q, q);
    _mm_mask_storeu_epi8(q8 + 16 * c, block_lanes<B>(c), _mm512_cvtepi32_epi8(q));
  }
  *nonzero = nz != 0;
  return sum;
}
/// \endcond

/// Blocks [b0, b1) of one row, one block at a time; stops at a non-finite
/// element (st.bad_col). The codes go to `codes` + b·block_bytes, the record
/// of consumer k to `meta` + b·block_bytes + k·consumer_bytes. Returns false
/// when it stopped.
/// Loads elements [start, start + n) of row xr (n ≤ 16·Chunks; the rest of
/// v zero, not read) and their largest magnitude. False, with st.bad_col the
/// first non-finite column, when there is one (found by a bit test of |x|
/// against FLT_MAX's bits, which -ffast-math cannot fold away).
template <int Chunks>
LQER_AVX512_INLINE bool load_block(const float* xr, index_t start, index_t n, __m512 (&v)[Chunks], float& amax_out,
                                   row_status& st) {
  const __m512i max_finite = _mm512_set1_epi32(0x7f7fffff);
  __m512 amax = _mm512_setzero_ps();
  bool finite = true;
  LQER_UNROLL(64)
  for (int c = 0; c < Chunks; ++c) {
    const index_t left = n - 16 * c;
    const __mmask16 lanes = left >= 16 ? __mmask16(0xffff) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
    v[c] = _mm512_maskz_loadu_ps(lanes, xr + start + 16 * c);  // masked lanes are not read
    const __m512 av = abs_ps(v[c]);
    finite &= _mm512_mask_cmpgt_epi32_mask(lanes, _mm512_castps_si512(av), max_finite) == 0;
    amax = _mm512_max_ps(amax, av);
  }
  if (!finite) {
    for (index_t i = start; i < start + n; ++i)
      if (is_non_finite(xr[i])) {
        st.bad_col = i;
        return false;
      }
  }
  amax_out = _mm512_reduce_max_ps(amax);
  return true;
}

template <class ActFormat>
LQER_AVX512_INLINE bool quantize_blocks_one_by_one(const float* xr, index_t cols, index_t b0, index_t b1,
                                                   std::int8_t* codes, std::uint8_t* meta, index_t block_bytes,
                                                   index_t consumer_bytes, index_t consumers, const act_consumer* cons,
                                                   row_status& st) {
  constexpr int B = ActFormat::kBlock;
  constexpr int kChunks = (B + 15) / 16;
  constexpr int F = ActFormat::kFractionBits;
  for (index_t b = b0; b < b1; ++b) {
    const index_t start = b * B;
    const index_t n = cols - start < B ? cols - start : B;
    __m512 v[kChunks];
    float amax;
    if (!load_block<kChunks>(xr, start, n, v, amax, st)) return false;
    const int e = block_exponent<ActFormat>(amax);
    float s1, s2;
    const bool two_step = block_scales<ActFormat>(e, s1, s2);
    bool nonzero;
    const __m512i sum =
        encode_block<ActFormat>(v, _mm512_set1_ps(s1), _mm512_set1_ps(s2), two_step, codes + b * block_bytes, &nonzero);
    const int ex = nonzero ? e : 0;
    st.ex.add(ex);
    const int code_sum = _mm512_reduce_add_epi32(sum);
    for (index_t k = 0; k < consumers; ++k)
      put_meta(meta + b * block_bytes + k * consumer_bytes, make_block_meta(code_sum, ex, F, cons[k]));
  }
  return true;
}

/// Rows [r0, r1) into the panel, 16 blocks at a time: the 16 blocks' amax and
/// code sums come out of one transposed reduction each (reduce16), and the
/// scalar steps — exponent (block_exponent, the format's rule from the float's
/// bits), scale, record (make_block_meta) — run per block beside the vector
/// work. The codes, records and ranges are those of quantize_blocks_one_by_one,
/// which also takes any 16 blocks that hold a NaN or Inf (to find it) and the
/// blocks after the last whole 16.
template <class ActFormat>
LQER_AVX512_TARGET void quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                                      const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                                      row_status* status) {
  constexpr int B = ActFormat::kBlock;
  constexpr int kChunks = (B + 15) / 16;
  constexpr int F = ActFormat::kFractionBits;
  static_assert(F >= 1, "2^(F − e) ≥ 2^-126 for every e ≤ 127: one normal scale per block");
  const index_t nblk = lay.nblk;
  const index_t consumers = lay.consumers;
  // |x| with its exponent all ones (NaN, ±Inf) has bits above the largest
  // finite float's: an integer compare, which -ffast-math cannot fold away.
  const __m512i max_finite = _mm512_set1_epi32(0x7f7fffff);
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    // Blocks of a row are block_stride(g) bytes apart, for codes and records
    // alike; consumer k's record is k·(rows of the group)·8 bytes after 0's.
    const index_t g = r / lay.group_rows;
    const index_t block_bytes = lay.block_stride(g);
    const index_t consumer_bytes = lay.rows_in_group(g) * index_t{sizeof(act_block_meta)};
    std::int8_t* codes = lay.codes(panel, r, 0);
    auto* meta = reinterpret_cast<std::uint8_t*>(lay.meta(panel, r, 0, 0));
    // Whole groups of 16 blocks that lie inside the row (the last, partial block goes one by one).
    const index_t whole = cols / B;
    index_t b0 = 0;
    bool ok = true;
    for (; ok && b0 + 16 <= whole; b0 += 16) {
      const float* xg = xr + b0 * B;
      __m512i amax[16];
      __mmask16 bad = 0;
      LQER_UNROLL(16)
      for (int j = 0; j < 16; ++j) {
        __m512 m = _mm512_setzero_ps();
        LQER_UNROLL(64)
        for (int c = 0; c < kChunks; ++c) {
          const __m512 av = abs_ps(_mm512_maskz_loadu_ps(block_lanes<B>(c), xg + j * B + 16 * c));
          bad |= _mm512_mask_cmpgt_epi32_mask(block_lanes<B>(c), _mm512_castps_si512(av), max_finite);
          m = _mm512_max_ps(m, av);
        }
        amax[j] = _mm512_castps_si512(m);
      }
      if (bad) {  // find the element, and quantize the blocks before it, one by one
        ok = quantize_blocks_one_by_one<ActFormat>(xr, cols, b0, b0 + 16, codes, meta, block_bytes, consumer_bytes,
                                                   consumers, cons, st);
        break;
      }
      // |x| is a non-negative float: its bits order like its values.
      alignas(64) std::uint32_t amax_bits[16];
      _mm512_store_si512(amax_bits, reduce16(amax, max_u32{}));
      alignas(64) int e[16];
      alignas(64) float s1[16], s2[16];
      bool two_step = false;
      for (int j = 0; j < 16; ++j) {
        e[j] = block_exponent<ActFormat>(std::bit_cast<float>(amax_bits[j]));
        two_step |= block_scales<ActFormat>(e[j], s1[j], s2[j]);
      }
      __m512i sums[16];
      bool nonzero[16];
      LQER_UNROLL(16)
      for (int j = 0; j < 16; ++j) {
        __m512 v[kChunks];
        LQER_UNROLL(64)
        for (int c = 0; c < kChunks; ++c) v[c] = _mm512_maskz_loadu_ps(block_lanes<B>(c), xg + j * B + 16 * c);
        sums[j] = encode_block<ActFormat>(v, _mm512_set1_ps(s1[j]), _mm512_set1_ps(s2[j]), two_step,
                                          codes + (b0 + j) * block_bytes, &nonzero[j]);
      }
      alignas(64) int code_sum[16];
      _mm512_store_si512(code_sum, reduce16(sums, add_i32{}));
      for (int j = 0; j < 16; ++j) {
        const int ex = nonzero[j] ? e[j] : 0;
        st.ex.add(ex);
        for (index_t k = 0; k < consumers; ++k)
          put_meta(meta + (b0 + j) * block_bytes + k * consumer_bytes, make_block_meta(code_sum[j], ex, F, cons[k]));
      }
    }
    if (ok)
      quantize_blocks_one_by_one<ActFormat>(xr, cols, b0, nblk, codes, meta, block_bytes, consumer_bytes, consumers,
                                            cons, st);
    status[r] = st;
  }
}

/// Activations with real scales: intq's symmetric scheme (Q8_0 and its kin,
/// blocks a multiple of 16), 16 floats per step, bit-identical to
/// ActFormat::quantize_block: the same amax, the same scalar d = amax/qmax
/// (one ulp down where qmax·d would overflow) and 1/d, then per element the
/// same IEEE multiply (or divide, where 1/d overflowed) and round half away
/// from zero as trunc + (fraction ≥ 0.5), clamped to ±qmax. The scale stored
/// and read back (fp16 rounds it) is the record's sx. The scalar prologue
/// was a quarter of a Q4_0 × Q8_0 GEMM's time at M = 128.
template <class ActFormat>
LQER_AVX512_TARGET void quantize_rows_symmetric(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                                                const act_panel_layout& lay, std::uint8_t* panel,
                                                const act_consumer* cons, row_status* status) {
  static_assert(is_vector_symmetric<ActFormat, 16>());
  constexpr int B = ActFormat::kBlock;
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    for (index_t b = 0; b < lay.nblk && st.bad_col < 0; ++b) {
      const index_t start = b * B, n = std::min<index_t>(B, cols - start);
      __m512 v[B / 16];
      float amax;
      if (!load_block<B / 16>(xr, start, n, v, amax, st)) break;
      const symmetric_step step = symmetric_scale<ActFormat>(amax);
      const bool by_inverse = step.by_inverse;
      const __m512 vid = _mm512_set1_ps(step.id), vd = _mm512_set1_ps(step.d);
      std::int8_t* q = lay.codes(panel, r, b);
      __m512i sum = _mm512_setzero_si512();
      LQER_UNROLL(8)
      for (int c = 0; c < B / 16; ++c) {
        const __m512 t = by_inverse ? _mm512_mul_ps(v[c], vid) : _mm512_div_ps(v[c], vd);
        const __m512 a = abs_ps(t);  // ≤ qmax·(1 + 2^-23): trunc fits an int
        __m512i m = _mm512_cvttps_epi32(a);
        const __mmask16 up =
            _mm512_cmp_ps_mask(_mm512_sub_ps(a, _mm512_cvtepi32_ps(m)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
        m = _mm512_min_epi32(_mm512_mask_add_epi32(m, up, m, _mm512_set1_epi32(1)),
                             _mm512_set1_epi32(ActFormat::kQmax));
        const __mmask16 neg =  // the sign bit (as int32 < 0): −0.3 → −0 → code 0
            _mm512_cmplt_epi32_mask(_mm512_castps_si512(t), _mm512_setzero_si512());
        m = _mm512_mask_sub_epi32(m, neg, _mm512_setzero_si512(), m);
        sum = _mm512_add_epi32(sum, m);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * c), _mm512_cvtepi32_epi8(m));
      }
      typename ActFormat::block_scale s{};
      s.d = detail::scale_storage<ActFormat::kScaleDtype>::store(step.d);
      if (!put_real_records<ActFormat>(s, _mm512_reduce_add_epi32(sum), xr, start, cols, lay, panel, r, b, cons, st))
        break;
    }
    status[r] = st;
  }
}

}  // namespace lqer::detail::avx512

namespace lqer::detail {

struct avx512_vnni_isa : path_tag::avx512_vnni {
  /// vpdpbusd multiplies unsigned weights by signed activations: both kinds keep their offset.
  static constexpr int code_offset(code_kind k) noexcept { return stored_offset(k); }
  // M = 1 and 2 take 4 groups: four weight streams and independent chains
  // per row. Measured on Zen 5, 1 core, K = 4096, N = 11008 from L3: against
  // 2 groups M = 1 +16% (160 → 186 GOPS), M = 2 +5%, but M = 3 −4% and M = 4
  // −7.5% (4 rows × 4 groups spill), so those keep the 4 × 2 tile; 2 threads,
  // M = 1: +7–20% from L3 and from DRAM. (On Zen 4, 2 groups were 13% faster
  // than 1 at M = 1.)
  static constexpr int kGemvRows = 2;    ///< M ≤ kGemvRows: one tile of M rows …
  static constexpr int kGemvGroups = 4;  ///< … × kGemvGroups groups
  // 4 × 2 and 8 × 1 measured alike for M = 128/512 (within the machine's
  // noise, ±5%); 4 × 2 halves the broadcast loads. With one row group (M ≤ 4)
  // it runs the whole reduction at once, as a GEMV tile.
  static constexpr int kGemmRows = 4;    ///< larger M: tiles of kGemmRows rows …
  static constexpr int kGemmGroups = 2;  ///< … × kGemmGroups groups, blocked in M and K (linear.hpp)

  template <class ActFormat>
  static void quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                            const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                            row_status* status) {
    if constexpr (is_mxint<ActFormat>::value)
      avx512::quantize_rows<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
    else if constexpr (is_vector_symmetric<ActFormat, 16>())
      avx512::quantize_rows_symmetric<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
    else
      quantize_rows_scalar<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
  }

  template <int MR, int NV, int Block, code_kind K0, bool Corr, scale_mode S, record_kind WR0 = record_kind{},
            record_kind WR1 = record_kind{}>
  static void tile(const tile_args& a) {
    avx512::gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S, WR0, WR1>(a);
  }
};

template <>
struct path_kernels<path_tag::avx512_vnni> {
  using type = avx512_vnni_isa;
};

}  // namespace lqer::detail

#endif  // __x86_64__
