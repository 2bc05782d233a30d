// lqer — the ymm micro-kernels and prologue, one body for three instruction
// choices (no include guard: included once per choice, each time inside its own
// namespace, Highway-style). The includer defines:
//
//   LQER_YMM_TARGET   the target attribute string, e.g. "avx2,fma"
//   LQER_YMM_PATH     the kernel_path it implements
//   LQER_YMM_DOT      0: vpmaddubsw + vpmaddwd (AVX2)
//                     1: VEX vpdpbusd ymm (AVX-VNNI)
//                     2: EVEX vpdpbusd ymm (AVX-512 VL + VNNI; used by the tests to
//                        run the AVX-VNNI code on CPUs that have only the EVEX form)
//
// A ymm holds 8 int32 lanes: one 16-output group of layout_n16c4 is two
// halves (bytes 0–31 and 32–63 of each 64-byte lane group). Arithmetic per
// block is the one of params.hpp; what differs is the 4-element dot product:
//
//   VNNI:     d = vpdpbusd(d, u, x) for nibbles (u = q + 8) and bytes (u = q + 128);
//             init = −off·Σx cancels the offset.
//   maddubs:  nibbles: d += madd(maddubs(u, x), 1): u ≤ 15, |x| ≤ 127, so each
//             pair sum is ≤ 2·15·127 = 3810 and vpmaddubsw's int16 saturation
//             never triggers (init = −8·Σx). Bytes: u + 128 would saturate
//             (2·255·127 > 32767), so the signed code q = u ^ 0x80 is used with
//             the sign trick d += madd(maddubs(|x|, sign(q, x)), 1): |x|·(±q) =
//             x·q, pair sums ≤ 2·127·127 = 32258 < 32767, exact (off = 0).
//             Byte weights with a zero point (8-bit asymmetric codes reach
//             q = −128, whose sign(q, x) = +128 does not fit int8) swap the
//             roles: maddubs(|q|, sign(x, q)), |q| ≤ 128 unsigned, |x| ≤ 127,
//             pair sums ≤ 2·128·127 = 32512 < 32767, exact too.
//             (XNNPACK's `<< 4` nibble trick would overflow int16 here.)
//
// 16 ymm registers (AVX2 / AVX-VNNI machines have no more): the GEMM tile is
// 2 rows × 1 group (= 2 halves): 4 float + 4 int32 accumulators + 4 weights.

#if !defined(LQER_YMM_TARGET) || !defined(LQER_YMM_DOT) || !defined(LQER_YMM_PATH)
#error "x86_ymm.inl: define LQER_YMM_TARGET, LQER_YMM_DOT and LQER_YMM_PATH before including it"
#endif

#define LQER_YMM_ATTR __attribute__((target(LQER_YMM_TARGET)))
#define LQER_YMM_INLINE LQER_YMM_ATTR inline __attribute__((always_inline))

inline constexpr bool kVnni = LQER_YMM_DOT != 0;

/// Offset of the codes as the dot products see them (see the comment above).
constexpr int ymm_code_offset(code_kind k) noexcept {
  return kVnni ? stored_offset(k) : (k == code_kind::nibble ? 8 : 0);
}

LQER_YMM_INLINE __m256i broadcast4(const std::int8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

LQER_YMM_INLINE __m256 opaque(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

/// d + Σ_{4 lanes} u·x for unsigned nibble weights u ≤ 15 and signed x.
LQER_YMM_INLINE __m256i dot_nibble(__m256i d, __m256i u, __m256i x) {
#if LQER_YMM_DOT == 0
  return _mm256_add_epi32(d, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)));
#elif LQER_YMM_DOT == 1
  return _mm256_dpbusd_avx_epi32(d, u, x);
#else
  return _mm256_dpbusd_epi32(d, u, x);
#endif
}

/// Weights of byte kind as the dot product wants them: u itself for VNNI, the
/// signed code q = u ^ 0x80 for maddubs.
LQER_YMM_INLINE __m256i prepare_byte(__m256i u) {
#if LQER_YMM_DOT == 0
  return _mm256_xor_si256(u, _mm256_set1_epi8(static_cast<char>(0x80)));
#else
  return u;
#endif
}

/// d + Σ_{4 lanes} w·x for byte weights prepared by prepare_byte; ax = |x|
/// (used by the maddubs form only).
LQER_YMM_INLINE __m256i dot_byte(__m256i d, __m256i w, __m256i x, [[maybe_unused]] __m256i ax) {
#if LQER_YMM_DOT == 0
  return _mm256_add_epi32(d, _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, x)), _mm256_set1_epi16(1)));
#elif LQER_YMM_DOT == 1
  return _mm256_dpbusd_avx_epi32(d, w, x);
#else
  return _mm256_dpbusd_epi32(d, w, x);
#endif
}

/// d + Σ_{4 lanes} q·x for byte weights q that may be −128 (prepared by
/// prepare_byte; aq = |q|, where abs_epi8(−128) is the unsigned byte 128):
/// the sign trick with the roles swapped (maddubs form only; see the top).
LQER_YMM_INLINE __m256i dot_byte_wide(__m256i d, __m256i q, __m256i aq, __m256i x) {
  return _mm256_add_epi32(d, _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(x, q)), _mm256_set1_epi16(1)));
}

/// The prefetch hints are not followed: on Zen 5 the avx2 path streams a GEMV
/// at 18–23 GB/s without them (K = 576 … 4096), and the next-tile hint made it
/// 5–9% slower (linear.hpp, run).
template <int MR, int NV, int Block, code_kind K, record_kind WR, scale_mode S>
LQER_YMM_INLINE void segment(__m256 (&acc)[MR][2 * NV], const act_operand& x, const std::uint8_t* w, index_t nblk,
                             index_t gstride, int wfrac, const prefetch_hint& /*not followed, see above*/) {
  static_assert(!WR.real() || S == scale_mode::real, "segment: real scales take scale_mode::real");
  static_assert(!WR.min || WR.real(), "segment: block minima come with real scales");
  constexpr int H = 2 * NV;  // ymm columns: half h of group h / 2
  constexpr index_t kBlockBytes = group_block_bytes(K, Block, WR);
  constexpr index_t kCodeBytes = group_code_bytes(K, Block);
  // Block minima: the dots see q + this path's code offset; start at
  // (offset − code_shift)·(−Σqx) to end at Σ (q + code_shift)·qx (avx512_vnni.hpp).
  constexpr int kMinInit = ymm_code_offset(K) - WR.code_shift;
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  for (index_t b = 0; b < nblk; ++b) {
    const std::uint8_t* wb = w + b * kBlockBytes;
    const auto* xblk = reinterpret_cast<const std::int8_t*>(x.base + b * x.block_stride);
    const auto* meta = reinterpret_cast<const act_block_meta*>(x.base + b * x.block_stride + x.meta_offset);
    // sbits = bw·2^23 (the float 2^ew), wbits = ew·2^23 (see avx512_vnni.hpp for the magic mode)
    // Real scales (scale_mode::real): 8 fp16 (F16C, exact) or fp32 records per half.
    // Zero points: zk − (stored offset − this path's code offset), 8 per half.
    __m256i sbits[H], wbits[H], zk[H];
    __m256 sreal[H], smin[H];
    LQER_UNROLL(8)
    for (int h = 0; h < H; ++h) {
      const std::uint8_t* sp = wb + (h / 2) * gstride + kCodeBytes;
      if constexpr (WR.zero_point)
        zk[h] = _mm256_sub_epi32(
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(
                layout_n16c4::zero_records<K, WR.scale>(wb + (h / 2) * gstride, Block) + (h % 2) * 8))),
            _mm256_set1_epi32(zero_record_bias(K, ymm_code_offset(K))));
      if constexpr (WR.scale == scale_kind::e8m0_pow2) {
        const __m128i e = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(sp + (h % 2) * 8));
        sbits[h] = _mm256_slli_epi32(_mm256_cvtepu8_epi32(e), 23);
        wbits[h] = _mm256_sub_epi32(sbits[h], _mm256_set1_epi32(127 << 23));
      } else if constexpr (WR.scale == scale_kind::f16) {
        sreal[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sp + (h % 2) * 16)));
      } else {
        sreal[h] = _mm256_loadu_ps(reinterpret_cast<const float*>(sp + (h % 2) * 32));
      }
      if constexpr (WR.min) {
        const std::uint8_t* mp = layout_n16c4::min_records<K, WR>(wb + (h / 2) * gstride, Block);
        if constexpr (WR.scale == scale_kind::f16)
          smin[h] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mp + (h % 2) * 16)));
        else
          smin[h] = _mm256_loadu_ps(reinterpret_cast<const float*>(mp + (h % 2) * 32));
      }
    }
    __m256i d[MR][H];
    LQER_UNROLL(8)
    for (int m = 0; m < MR; ++m) {
      if constexpr (S == scale_mode::magic) {
        const __m256i init = _mm256_set1_epi32(meta[m].magic_init);
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) d[m][h] = _mm256_add_epi32(init, wbits[h]);
      } else if constexpr (S == scale_mode::real) {
        const __m256i init = _mm256_set1_epi32(WR.min ? kMinInit * meta[m].real_init() : meta[m].real_init());
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) d[m][h] = WR.zero_point ? _mm256_mullo_epi32(zk[h], init) : init;
      } else {
        const __m256i init = _mm256_set1_epi32(meta[m].init());
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) d[m][h] = init;
      }
    }
    if constexpr (K == code_kind::nibble) {
      LQER_UNROLL(16)
      for (int p = 0; p < Block / 8; ++p) {
        __m256i lo[H], hi[H];
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) {
          const __m256i raw =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + (h / 2) * gstride + p * 64 + (h % 2) * 32));
          lo[h] = _mm256_and_si256(raw, low_nibbles);
          hi[h] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low_nibbles);
        }
        LQER_UNROLL(8)
        for (int m = 0; m < MR; ++m) {
          const __m256i xl = broadcast4(xblk + m * Block + 8 * p), xh = broadcast4(xblk + m * Block + 8 * p + 4);
          LQER_UNROLL(8)
          for (int h = 0; h < H; ++h) {
            d[m][h] = dot_nibble(d[m][h], lo[h], xl);
            d[m][h] = dot_nibble(d[m][h], hi[h], xh);
          }
        }
      }
    } else {
      // Zero-point codes may be −128 (8-bit asymmetric): the swapped sign trick.
      constexpr bool kWide = !kVnni && WR.zero_point;
      LQER_UNROLL(32)
      for (int c = 0; c < Block / 4; ++c) {
        __m256i u[H], au[H];
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) {
          u[h] = prepare_byte(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + (h / 2) * gstride + c * 64 + (h % 2) * 32)));
          if constexpr (kWide) au[h] = _mm256_abs_epi8(u[h]);
        }
        LQER_UNROLL(8)
        for (int m = 0; m < MR; ++m) {
          const __m256i xc = broadcast4(xblk + m * Block + 4 * c);
          if constexpr (kWide) {
            LQER_UNROLL(8)
            for (int h = 0; h < H; ++h) d[m][h] = dot_byte_wide(d[m][h], u[h], au[h], xc);
          } else {
            const __m256i ax = kVnni ? xc : _mm256_abs_epi8(xc);
            LQER_UNROLL(8)
            for (int h = 0; h < H; ++h) d[m][h] = dot_byte(d[m][h], u[h], xc, ax);
          }
        }
      }
    }
    if constexpr (S == scale_mode::magic) {
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) {
        const __m256i c = _mm256_set1_epi32(meta[m].magic_c);
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) {
          const __m256 term =
              _mm256_sub_ps(_mm256_castsi256_ps(d[m][h]), _mm256_castsi256_ps(_mm256_add_epi32(wbits[h], c)));
          acc[m][h] = _mm256_add_ps(acc[m][h], term);
        }
      }
    } else {
      const __m256i min_scale_bits = _mm256_set1_epi32(0x00400000);  // the float 2^-127
      const __m256 inv_wfrac = _mm256_set1_ps(exp2_exact(-wfrac));
      __m256 sw[H];
      LQER_UNROLL(8)
      for (int h = 0; h < H; ++h) {
        if constexpr (WR.scale == scale_kind::e8m0_pow2)
          sw[h] = opaque(_mm256_mul_ps(_mm256_castsi256_ps(_mm256_max_epu32(sbits[h], min_scale_bits)), inv_wfrac));
        else
          sw[h] = sreal[h];
      }
      LQER_UNROLL(8)
      for (int m = 0; m < MR; ++m) {
        const __m256 sx = _mm256_set1_ps(S == scale_mode::real ? meta[m].real_scale() : meta[m].scale(wfrac));
        LQER_UNROLL(8)
        for (int h = 0; h < H; ++h) {
          const __m256 s = opaque(_mm256_mul_ps(sx, sw[h]));
          const __m256 term = opaque(_mm256_mul_ps(_mm256_cvtepi32_ps(d[m][h]), s));
          acc[m][h] = _mm256_add_ps(acc[m][h], term);
        }
        if constexpr (WR.min) {  // then float(Σqx)·(sx·m), the reference's second term
          const __m256 sum_x = _mm256_set1_ps(static_cast<float>(-meta[m].real_init()));
          LQER_UNROLL(8)
          for (int h = 0; h < H; ++h) {
            const __m256 sm = opaque(_mm256_mul_ps(sx, smin[h]));
            acc[m][h] = _mm256_add_ps(acc[m][h], opaque(_mm256_mul_ps(sum_x, sm)));
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// The tile: tile.inl's composition of segment() with the epilogue, on ymm
// registers (two per 16-output group) with vmaskmov for the tail.

struct vec {
  using reg = __m256;
  using mask = __m256i;
  static constexpr int kLanes = 8;
  LQER_YMM_INLINE static mask tail(int left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  LQER_YMM_INLINE static reg zero() { return _mm256_setzero_ps(); }
  LQER_YMM_INLINE static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  LQER_YMM_INLINE static reg load(const float* p, mask k) { return _mm256_maskload_ps(p, k); }
  LQER_YMM_INLINE static reg load_full(const float* p) { return _mm256_loadu_ps(p); }
  LQER_YMM_INLINE static void store(float* p, mask k, reg v) { _mm256_maskstore_ps(p, k, v); }
};

#define LQER_TILE_ATTR LQER_YMM_ATTR
#include "lqer/kernel/arch/tile.inl"
#undef LQER_TILE_ATTR

// ---------------------------------------------------------------------------
// Prologue: 8 floats per step (blocks are multiples of 8), bit-identical to
// ActFormat::quantize_block; see avx512_vnni.hpp's for the reasoning.

LQER_YMM_INLINE __m256 abs_ps(__m256 v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

LQER_YMM_INLINE float reduce_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

LQER_YMM_INLINE int reduce_add(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

template <class ActFormat>
LQER_YMM_INLINE __m256i encode8(__m256 v, int shift) {
  constexpr float qmax = float(ActFormat::kQmax);
  __m256 y;
  if (shift > 127)
    y = _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(exp2_exact(127))), _mm256_set1_ps(exp2_exact(shift - 127)));
  else
    y = _mm256_mul_ps(v, _mm256_set1_ps(exp2_exact(shift)));
  __m256 r;
  if constexpr (ActFormat::kRule == mx_rule::lqer) {
    r = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  } else {
    const __m256 t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 away = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(y, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one =
        _mm256_or_ps(_mm256_and_ps(y, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))), _mm256_set1_ps(1.0f));
    r = _mm256_add_ps(t, _mm256_and_ps(away, one));
  }
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-qmax)), _mm256_set1_ps(qmax));
  return _mm256_cvtps_epi32(r);
}

/// Loads elements [start, start + n) of row xr (n ≤ 8·Chunks; the rest of v
/// zero, not read) and their largest magnitude. False, with st.bad_col the
/// first non-finite column, when there is one: |x| with its exponent all ones
/// (NaN, ±Inf) has bits above the largest finite float's, an integer compare
/// that -ffast-math cannot fold away.
template <int Chunks>
LQER_YMM_INLINE bool load_block(const float* xr, index_t start, index_t n, __m256 (&v)[Chunks], float& amax_out,
                                row_status& st) {
  const __m256i max_finite = _mm256_set1_epi32(0x7f7fffff);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 amax = _mm256_setzero_ps();
  int bad = 0;
  LQER_UNROLL(64)
  for (int c = 0; c < Chunks; ++c) {
    const index_t left = n - 8 * c;
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left < 0 ? 0 : left > 8 ? 8 : left)), lane);
    v[c] = _mm256_maskload_ps(xr + start + 8 * c, m);  // masked lanes: not read, zero
    const __m256 av = abs_ps(v[c]);
    // Masked-off lanes hold 0 and pass.
    bad |= _mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_castps_si256(av), max_finite));
    amax = _mm256_max_ps(amax, av);
  }
  if (bad) {
    for (index_t i = start; i < start + n; ++i)
      if (is_non_finite(xr[i])) {
        st.bad_col = i;
        return false;
      }
  }
  amax_out = reduce_max(amax);
  return true;
}

/// Eight int32 codes (|q| ≤ 127: the saturating packs are exact) to 8 bytes
/// at out: lanes 0–3 and 4–7 land in bytes 0–3 of each 128-bit half, gathered
/// into the low 8 bytes.
LQER_YMM_INLINE void store_codes8(std::int8_t* out, __m256i q) {
  const __m256i w16 = _mm256_packs_epi32(q, q);
  const __m256i w8 = _mm256_packs_epi16(w16, w16);
  const __m256i g = _mm256_permutevar8x32_epi32(w8, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(g));
}

template <class ActFormat>
LQER_YMM_ATTR void ymm_quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                                     const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                                     row_status* status) {
  constexpr int B = ActFormat::kBlock;
  static_assert(B % 8 == 0, "the ymm prologue takes blocks of whole 8-float steps");
  constexpr int kChunks = B / 8;
  constexpr int F = ActFormat::kFractionBits;
  const index_t nblk = lay.nblk;
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    for (index_t b = 0; b < nblk && st.bad_col < 0; ++b) {
      const index_t start = b * B;
      const index_t n = cols - start < B ? cols - start : B;
      __m256 v[kChunks];
      float amax;
      if (!load_block<kChunks>(xr, start, n, v, amax, st)) break;
      const int e = block_exponent<ActFormat>(amax);
      const int shift = F - e;
      __m256i sum = _mm256_setzero_si256();
      int nonzero = 0;
      LQER_UNROLL(64)
      for (int c = 0; c < kChunks; ++c) {
        const __m256i q = encode8<ActFormat>(v[c], shift);
        sum = _mm256_add_epi32(sum, q);
        nonzero |= ~_mm256_movemask_epi8(_mm256_cmpeq_epi32(q, _mm256_setzero_si256()));
        store_codes8(lay.codes(panel, r, b) + 8 * c, q);
      }
      const int code_sum = reduce_add(sum);
      const int ex = nonzero ? e : 0;
      st.ex.add(ex);
      for (index_t k = 0; k < lay.consumers; ++k) *lay.meta(panel, r, b, k) = make_block_meta(code_sum, ex, F, cons[k]);
    }
    status[r] = st;
  }
}

/// Activations with real scales, intq's symmetric scheme (Q8_0 and its kin):
/// 8 floats per step, bit-identical to ActFormat::quantize_block (see
/// avx512_vnni.hpp's quantize_rows_symmetric for the steps).
template <class ActFormat>
LQER_YMM_ATTR void ymm_quantize_rows_symmetric(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                                               const act_panel_layout& lay, std::uint8_t* panel,
                                               const act_consumer* cons, row_status* status) {
  static_assert(is_vector_symmetric<ActFormat, 8>());
  constexpr int B = ActFormat::kBlock;
  for (index_t r = r0; r < r1; ++r) {
    const float* xr = x + r * ldx;
    row_status st;
    for (index_t b = 0; b < lay.nblk && st.bad_col < 0; ++b) {
      const index_t start = b * B, n = std::min<index_t>(B, cols - start);
      __m256 v[B / 8];
      float amax;
      if (!load_block<B / 8>(xr, start, n, v, amax, st)) break;
      const symmetric_step step = symmetric_scale<ActFormat>(amax);
      const bool by_inverse = step.by_inverse;
      const __m256 vid = _mm256_set1_ps(step.id), vd = _mm256_set1_ps(step.d);
      __m256i sum = _mm256_setzero_si256();
      LQER_UNROLL(16)
      for (int c = 0; c < B / 8; ++c) {
        const __m256 t = by_inverse ? _mm256_mul_ps(v[c], vid) : _mm256_div_ps(v[c], vd);
        const __m256 a = abs_ps(t);  // ≤ qmax·(1 + 2^-23): trunc fits an int
        __m256i m = _mm256_cvttps_epi32(a);
        const __m256 frac = _mm256_sub_ps(a, _mm256_cvtepi32_ps(m));
        // + (frac ≥ 0.5): the compare's all-ones lanes are −1
        m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ)));
        m = _mm256_min_epi32(m, _mm256_set1_epi32(ActFormat::kQmax));
        // t's sign: negative bits (−0 included) negate, +0 zeroes (m is 0 there anyway).
        m = _mm256_sign_epi32(m, _mm256_castps_si256(t));
        sum = _mm256_add_epi32(sum, m);
        store_codes8(lay.codes(panel, r, b) + 8 * c, m);
      }
      typename ActFormat::block_scale s{};
      s.d = detail::scale_storage<ActFormat::kScaleDtype>::store(step.d);
      if (!put_real_records<ActFormat>(s, reduce_add(sum), xr, start, cols, lay, panel, r, b, cons, st)) break;
    }
    status[r] = st;
  }
}

/// The path's entry points, as linear.hpp's driver calls them.
struct isa : path_tag_of<LQER_YMM_PATH> {
  static constexpr int code_offset(code_kind k) noexcept { return ymm_code_offset(k); }
  static constexpr int kGemvRows = 2;    ///< M ≤ kGemvRows: one tile of M rows …
  static constexpr int kGemvGroups = 1;  ///< … × kGemvGroups groups
  static constexpr int kGemmRows = 2;    ///< larger M: tiles of kGemmRows rows …
  static constexpr int kGemmGroups = 1;  ///< … × kGemmGroups groups

  template <class ActFormat>
  static void quantize_rows(const float* x, index_t ldx, index_t cols, index_t r0, index_t r1,
                            const act_panel_layout& lay, std::uint8_t* panel, const act_consumer* cons,
                            row_status* status) {
    if constexpr (is_mxint<ActFormat>::value)
      ymm_quantize_rows<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
    else if constexpr (is_vector_symmetric<ActFormat, 8>())
      ymm_quantize_rows_symmetric<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
    else  // other real-scale activations: the format's own encoder
      quantize_rows_scalar<ActFormat>(x, ldx, cols, r0, r1, lay, panel, cons, status);
  }
  template <int MR, int NV, int Block, code_kind K0, bool Corr, scale_mode S, record_kind WR0 = record_kind{},
            record_kind WR1 = record_kind{}>
  static void tile(const tile_args& a) {
    gemm_qmx8_f32_qmxw_n16c4<MR, NV, Block, K0, Corr, S, WR0, WR1>(a);
  }
};

#undef LQER_YMM_ATTR
#undef LQER_YMM_INLINE
