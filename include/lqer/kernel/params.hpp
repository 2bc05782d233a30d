// lqer — what the fused kernels' pieces (pack, prologue, micro-kernels,
// driver) agree on: the supported formats, the code storage kinds, the
// per-block activation record and the argument block of a micro-tile.
// Internal (lqer::detail) except for the format trait.
//
// The arithmetic every path implements, for one output n, one row m and one
// block b of the reduction (codes q, E8M0 exponents e, fraction bits F):
//
//     dot  = Σ_i qx[i]·qw[i]                    exact int32 (see the bound below)
//     s    = 2^(ex − Fx) · 2^(ew − Fw)          one float product, as the reference forms it
//     acc  = acc + float(dot)·s                 blocks in ascending order, one float acc
//
// and then the correction's blocks continue in the same `acc`, then `+ bias`.
// That is reference_forward's order exactly, so the result is bit-identical to
// it whenever each step rounds the same way (see linear.hpp for the two scale
// modes and when each is exact).
//
// u8 × s8 (vpdpbusd, vpmaddubsw): the weights are stored unsigned, u = q + off
// (off = 8 for ≤ 4-bit codes, 128 for bytes), the activations stay signed,
// and the block's int32 accumulator starts at init = −off·Σqx (computed once
// per activation block by the prologue), so no per-block correction op is
// left in the inner loop. Paths that multiply signed × signed use off = 0.
//
// int32 bounds. Exact mode: with Block ≤ 1024, |qx| ≤ 127 and u ≤ 255, every
// partial sum of init + Σ u·qx lies within (128 + 255)·127·1024 < 2^26: no
// wrap, and |dot| ≤ 1024·127·127 < 2^24, so float(dot) is exact. Magic mode
// (linear.hpp): the accumulator also carries 2^22 and exponent bits; the
// integer adds (vpdpbusd, vpaddd, sdot) wrap modulo 2^32, so the partial sums
// may pass through anything — only the final value matters, and its low 23
// bits 2^22 + dot stay in [0, 2^23) because |dot| ≤ 256·127·127 < 2^22 for
// Block ≤ 256 (larger blocks always take the exact mode).
//
// Nothing integer grows with K. Every int32 above lives for one block and is
// converted to float before the next block starts; the prologue's Σqx is per
// block too (|Σqx| ≤ 127·Block, and −off·Σqx ≥ −128·127·1024 > −2^24). Across
// blocks the sum is a float, as in the reference (which forms each block's dot
// in int64 and adds float(dot)·s in the same order). K, M, N and every offset
// into the packed streams and panels are index_t (std::ptrdiff_t, 64-bit), so
// the only limit on K is memory; K = 2^20 with every code at its extreme
// (|qx| = 127, |qw| = 7 and 127) is tested bit-exact against the reference in
// tests/kernel/test_numeric_extremes.cpp. What K does change is the float
// sum: like any float dot product its error is ≤ γ_(K/Block−1)·Σ|terms|
// (Higham §4.2), and terms near FLT_MAX overflow to ±Inf (NaN where +Inf and
// −Inf meet) exactly as the reference's do — linear() checks x and Q(x)·A for
// NaN/Inf (value_error), not y.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <type_traits>
#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>  // _mm_prefetch (SSE: every x86-64)
#endif

#include "lqer/config.hpp"
#include "lqer/format/format.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/kernel/layout.hpp"

namespace lqer {

namespace detail {

template <class F>
struct is_mxint : std::false_type {};
template <int Bits, int Block, mx_rule Rule>
struct is_mxint<mxint<Bits, Block, Rule>> : std::true_type {};

/// The cache line the prefetch hints step by (64 bytes on every x86 and on
/// most AArch64 cores; where lines are 128 bytes every other prefetch repeats one).
inline constexpr index_t kPrefetchLine = 64;

/// The 2^22 offset of the magic scale mode (see linear.hpp).
inline constexpr std::int32_t kMagicOffset = std::int32_t{1} << 22;

/// Per (row, block) record of a quantized activation, for one consumer
/// (one weight operand: its code offset `off` and fraction bits Fw). With
/// E' = ex − Fx − Fw (the block exponent E without the weight's ew) and
/// Hx = (150 + E')·2^23, the exponent field of 2^(23+E'), all mod 2^32:
struct act_block_meta {
  std::int32_t magic_init;  ///< −off·Σx + 2^22 + Hx: the start of the block's int32 accumulator (magic mode)
  std::int32_t magic_c;     ///< 2^22 + Hx: the bits of 1.5·2^(23+E')

  /// The same eight bytes in a panel written for scale_mode::real (every
  /// consumer of a layer with a real scale anywhere, act_consumer::real):
  /// word 0 is −off·Σx, word 1 the block's activation scale as a float —
  /// ActFormat::scale_value of its record, exactly (2^(ex − Fx) for MX).
  static act_block_meta real(std::int32_t init, float sx) noexcept { return {init, std::bit_cast<std::int32_t>(sx)}; }
  std::int32_t real_init() const noexcept { return magic_init; }
  float real_scale() const noexcept { return std::bit_cast<float>(magic_c); }

  /// −off·Σx: the start of the accumulator in exact mode.
  std::int32_t init() const noexcept {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(magic_init) - static_cast<std::uint32_t>(magic_c));
  }
  /// 2^(ex − Fx), exactly (exact mode), given the consumer's Fw.
  float scale(int wfrac) const noexcept {
    const int e_prime = static_cast<int>((static_cast<std::uint32_t>(magic_c) - (1u << 22)) >> 23) - 150;
    const int n = e_prime + wfrac;  // ex − Fx ∈ [−134, 127]
    return n >= -126 ? std::bit_cast<float>(static_cast<std::uint32_t>(n + 127) << 23)
                     : std::bit_cast<float>(std::uint32_t{1} << (n + 149));
  }
};
static_assert(sizeof(act_block_meta) == 8);

/// Where a micro-tile finds its activation rows: the row group's start, the
/// bytes from one block to the next, and the offset of its consumer's records
/// inside a block (see act_panel_layout). Row m's codes of block b are at
/// base + b·block_stride + m·Block, its record at … + meta_offset + 8·m.
struct act_operand {
  const std::uint8_t* base = nullptr;
  index_t block_stride = 0;
  index_t meta_offset = 0;
};

/// The prologue's output layout, a packed LHS panel in the manner of Eigen's
/// gemm_pack_lhs. Rows are taken in groups of G = the micro-tile's row count;
/// a group of rg rows (G, or fewer for the last) stores, block after block,
///
///     [codes: rg × Block bytes, row-major] [records of consumer 0: rg × 8 B] [consumer 1 …]
///
/// so that a micro-tile reads one sequential stream and finds every row's codes
/// and records at fixed offsets from one pointer (no per-row pointers to keep
/// in registers, one hardware-prefetch stream instead of 2·MR).
struct act_panel_layout {
  index_t rows = 0;        ///< M
  index_t group_rows = 1;  ///< G
  index_t block = 0;       ///< Block
  index_t nblk = 0;        ///< blocks per row
  index_t consumers = 1;

  index_t row_block_bytes() const noexcept { return block + index_t{sizeof(act_block_meta)} * consumers; }
  index_t group_stride() const noexcept { return group_rows * nblk * row_block_bytes(); }
  index_t groups() const noexcept { return (rows + group_rows - 1) / group_rows; }
  index_t bytes() const noexcept { return groups() * group_stride(); }
  index_t rows_in_group(index_t g) const noexcept {
    return rows - g * group_rows < group_rows ? rows - g * group_rows : group_rows;
  }
  index_t block_stride(index_t g) const noexcept { return rows_in_group(g) * row_block_bytes(); }

  /// Codes of row r, block b.
  std::int8_t* codes(std::uint8_t* base, index_t r, index_t b) const noexcept {
    const index_t g = r / group_rows, m = r - g * group_rows;
    return reinterpret_cast<std::int8_t*>(base + g * group_stride() + b * block_stride(g) + m * block);
  }
  /// Record of row r, block b, for consumer c.
  act_block_meta* meta(std::uint8_t* base, index_t r, index_t b, index_t c) const noexcept {
    const index_t g = r / group_rows, m = r - g * group_rows, rg = rows_in_group(g);
    return reinterpret_cast<act_block_meta*>(base + g * group_stride() + b * block_stride(g) + rg * block +
                                             (c * rg + m) * index_t{sizeof(act_block_meta)});
  }
  /// The operand of row group g for consumer c.
  act_operand operand(const std::uint8_t* base, index_t g, index_t c) const noexcept {
    const index_t rg = rows_in_group(g);
    return {base + g * group_stride(), block_stride(g), rg * block + c * rg * index_t{sizeof(act_block_meta)}};
  }
};

/// A panel and the consumer whose records a product reads.
struct act_panel_ref {
  act_panel_layout layout;
  const std::uint8_t* base = nullptr;
  index_t consumer = 0;
  act_operand operand(index_t g) const noexcept { return layout.operand(base, g, consumer); }
};

/// Software-prefetch hints of a micro-tile call: hints only (a path may
/// ignore them), and a prefetch past the end of a buffer neither faults nor
/// feeds anything that is read.
struct prefetch_hint {
  /// Bytes ahead along each group's stream of the segment being read, into
  /// L1 (GEMM: the first row group of a K chunk streams it while the rest
  /// reuse it from L1).
  index_t ahead = 0;
  /// The weights the driver reads after this tile (GEMV: the next tile's
  /// groups, one contiguous region of `bytes`), brought into L2 in slices of
  /// `step` bytes, one slice per block of segment 0, so the region arrives
  /// spread over the tile instead of in one burst. A GEMV tile's group streams are
  /// short at small K (576: 5 KiB each), too short for `ahead` or the
  /// hardware prefetcher to get going before the tile moves on to four new
  /// streams; a whole tile ahead keeps DRAM busy across tiles.
  const std::uint8_t* next = nullptr;
  index_t bytes = 0;
  index_t step = 0;
};

/// Block b's slice of h.next into L2 (nothing when h.next is null):
/// prefetcht1 on x86 (SSE, every x86-64; GCC 12 turns __builtin_prefetch's
/// locality 2 into prefetcht0, into L1, checked in the object code), PRFM
/// PLDL2KEEP elsewhere.
// always_inline: compiled inside each path's segment, under its target attribute.
inline __attribute__((always_inline)) void prefetch_next_slice(const prefetch_hint& h, index_t b) noexcept {
  if (h.next == nullptr) return;
  const index_t end = std::min(h.bytes, (b + 1) * h.step);  // never a pointer past the region
  for (index_t o = b * h.step; o < end; o += kPrefetchLine) {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_prefetch(reinterpret_cast<const char*>(h.next + o), _MM_HINT_T1);
#else
    __builtin_prefetch(h.next + o, 0, 2);
#endif
  }
}

/// Everything a micro-tile (MR rows × NV groups of 16 outputs) needs.
/// Segment 0 is the main product (x0 against w0, nblk0 blocks); segment 1,
/// when the kernel is instantiated with one, is the correction (x1 = t against
/// B). Group v of the tile starts at w0 + v·group_stride (and w1, bias alike);
/// the MR rows are one row group of the activation panels.
struct tile_args {
  act_operand x0;
  const std::uint8_t* w0 = nullptr;
  index_t nblk0 = 0;
  act_operand x1;
  const std::uint8_t* w1 = nullptr;
  index_t nblk1 = 0;
  index_t group_stride = 0;
  const float* bias = nullptr;  ///< 16 floats per group, or null for no bias
  float* y = nullptr;           ///< row m at y + m·ldy, columns [0, n_valid)
  index_t ldy = 0;
  int n_valid = 0;  ///< outputs of the tile that exist (1 … NV·16); the rest are padding
  int wfrac0 = 0;   ///< fraction bits Fw of w0's format (exact scale mode)
  int wfrac1 = 0;   ///< fraction bits of w1's format
  /// K-blocking: the accumulators start from y's partial sums (else from 0),
  /// and only the last chunk of w0's blocks (`finish`) runs segment 1 and adds
  /// the bias. A float stored to y and loaded back is unchanged, so the
  /// per-output order of additions — and the result — is the same.
  bool load_acc = false;
  bool finish = true;
  /// Software prefetch during segment 0 (segment 1, the correction's B, lies
  /// inside the tile's groups and comes with them).
  prefetch_hint prefetch;
};

/// Scale arithmetic of a micro-kernel call (see linear.hpp).
enum class scale_mode {
  magic,  ///< term built from the int dot's bits, one exact subtract: exact inside the exponent window
  exact,  ///< s and the term by IEEE multiplies, acc by a separate add: exact for every input
  /// A layer with a real (fp16 / fp32) scale in any operand: sw read from the
  /// stream in its operand's scale_kind (fp16 converted exactly), sx from the
  /// record (act_block_meta::real), then exact mode's s = sx·sw, term and
  /// add — the reference's operations, so bit-identical for every input.
  real,
};

/// Largest block the magic mode takes: |dot| ≤ 127·127·Block must stay below 2^22.
inline constexpr int kMagicMaxBlock = 256;

// The int32 bounds of the file comment, checked for the largest block mxint
// allows (Block ≤ 1024, a static_assert in format/mxint.hpp): the exact mode's
// partial sums, |dot| < 2^24 (float(dot) exact), and the magic mode's window.
static_assert(std::int64_t{128 + 255} * 127 * 1024 < (std::int64_t{1} << 26));
static_assert(std::int64_t{127} * 127 * 1024 < (std::int64_t{1} << 24));
static_assert(std::int64_t{127} * 127 * kMagicMaxBlock < kMagicOffset);

}  // namespace detail

namespace detail {
/// Zero points (scale_mode::real only: every zero-point format has a real
/// scale). A weight operand with a zero point stores zk = zero + off per
/// output and block (layout.hpp's record_kind); its consumer's activation
/// record holds −Σqx (act_consumer offset 1), and the block's int32
/// accumulator starts at (zk − r)·(−Σqx) per output, r = the offset the
/// path's dot products leave out (its own code offset), so that it ends at
/// Σ (q − zero)·qx, the reference's exact integer. Bounds for the largest
/// group intq allows (4096), zk ≤ 255, u ≤ 255, |qx| ≤ 127: |zk·Σqx| and
/// |Σ u·qx| are each < 255·127·4096 < 2^28, so no partial sum wraps, and
/// float(dot) rounds the same exact integer the reference converts.
///
/// Block minima (llama.cpp's Q4_1: value u·d + m, u = q + code_shift) take the
/// same records: the consumer's record holds −Σqx, the accumulator starts at
/// (r − code_shift)·(−Σqx) (it ends at Σ u·qx, the same bound), and after the
/// block's scale term the kernel adds float(Σqx)·(sx·m) per output: the
/// reference's second term, rounded the same way (Σqx is exact in float).
inline constexpr int kMaxGroup = 4096;
static_assert(std::int64_t{2} * 255 * 127 * kMaxGroup < (std::int64_t{1} << 31));

/// One operand format the kernels take: linear integer codes, |q| ≤ 127 in a
/// byte (the u8 × s8 and sign-trick bounds above; a 4-bit code's nibble
/// u = q + 8 ≤ 15 covers q = −8 too; 8-bit codes with a zero point reach
/// −128, which every path's byte dot takes: u = q + 128 ≤ 255 for vpdpbusd,
/// s8 × s8 for SDOT, and AVX2's sign trick with swapped roles, x86_ymm.inl),
/// blocks along the reduction (not one scale per row), and a scale that is a
/// power of two (E8M0: MX integers) or a real fp16 / fp32 number (intq's
/// schemes, llama.cpp's Q4_0, Q4_1 and Q8_0). Weight-side operands (Wq, A, B)
/// may have a zero point (intq asymmetric, GPTQ/AWQ): see kMaxGroup.
/// Codes that stand for q + c with one constant c (linear codes: c = 0; a block
/// minimum's unsigned u = q + 2^(bits−1)): the dot products see q (plus the
/// path's offset) and the shift is a multiple of Σqx, like a zero point.
template <class F>
consteval bool has_shifted_codes() {
  for (int q = F::kQmin; q <= F::kQmax; ++q)
    if (F::code_value(static_cast<std::int8_t>(q)) != q + F::code_value(0)) return false;
  return true;
}
template <class F>
consteval bool is_kernel_operand_format() {
  if constexpr (is_mxint<F>::value) {
    return true;
  } else {
    // Shifted codes only with a block minimum (Q4_1), never with a zero point as well.
    return (has_linear_codes<F>() || (F::kHasMin && has_shifted_codes<F>() && !F::kHasZeroPoint)) && F::kBlock > 0 &&
           F::kBlock <= kMaxGroup && (F::kBits <= 4 ? F::kQmin >= -8 : F::kQmin >= (F::kHasZeroPoint ? -128 : -127)) &&
           F::kQmax <= 127 && (F::kScaleKind == scale_kind::f16 || F::kScaleKind == scale_kind::f32);
  }
}
/// True when any of the formats has a real scale: the layer then runs scale_mode::real.
template <class... F>
inline constexpr bool kAnyRealScale = ((F::kScaleKind != scale_kind::e8m0_pow2) || ...);
/// Activations must be bytes of |q| ≤ 127 (the dot products' signed operand)
/// without a zero point (the kernels subtract the weights' zero points from
/// the activation block's Σqx; an activation zero point would need Σqw).
template <class F>
inline constexpr bool kActivationCodesFit =
    F::kBits <= 8 && F::kQmin >= -127 && !F::kHasZeroPoint && !F::kHasMin && has_linear_codes<F>();
}  // namespace detail

/// True when the fused kernels support this combination of formats: MX
/// integers (a power-of-two E8M0 scale per block) or scaled integers (a
/// real fp16 / fp32 scale per block: intq symmetric,
/// signed-extreme and — for the weight, A and B — asymmetric with a zero
/// point, Q4_0, Q8_0), with one block length, a multiple of 8 (4-byte lanes,
/// nibble pairs of lanes).
template <class WFormat, class LrFormat, class ActFormat>
inline constexpr bool kernel_supports_formats =
    detail::is_kernel_operand_format<WFormat>() && detail::is_kernel_operand_format<LrFormat>() &&
    detail::is_kernel_operand_format<ActFormat>() && detail::kActivationCodesFit<ActFormat> &&
    (WFormat::kBlock == ActFormat::kBlock) && (LrFormat::kBlock == ActFormat::kBlock) && (ActFormat::kBlock % 8 == 0);

}  // namespace lqer
