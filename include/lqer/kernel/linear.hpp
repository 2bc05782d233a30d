// lqer — linear(): the one call an inference engine makes per token batch.
//
//     y = Q(x)·Wqᵀ + Q(Q(x)·A)·B (+ bias)        fused: DESIGN.md §1
//
// Phases (each a parallel_for on the caller's executor when it is worth it):
//   0. prologue: quantize x [M, in] to the activation format (codes + block
//      records for Wq and A); any NaN/Inf → value_error, y untouched.
//   1. correction input: u = Q(x)·A [M, rank] with the same micro-kernels (A is
//      an 8-bit "weight" with rank outputs), then t = Q(u) by the prologue
//      (a non-finite u → value_error, y untouched).
//   2. main: per tile of 16·NV outputs, the Wq blocks and then B's blocks in
//      the same accumulators, + bias, stored to y (GEMV: one pass over y;
//      GEMM: the reduction is blocked in K and partial sums wait in y, floats
//      stored and reloaded unchanged). Tasks are output tiles, so every output
//      is computed by one thread in one fixed order: results are bit-identical
//      for any executor and thread count.
//
// Exactness. Every micro-kernel adds, per output, the block terms dot·2^E
// (dot an exact integer, E = ex + ew − Fx − Fw) block after block into one
// float accumulator, exactly as reference_forward(fused) does. The reference
// computes each term as float(dot)·s with s = 2^(ex−Fx)·2^(ew−Fw) rounded to
// float, then acc + term rounded. Two scale modes reproduce that:
//   * magic (the SIMD paths' fast mode): the block's int32 accumulator starts
//     at 2^22 − off·Σx plus the exponent field of 2^(23+E) (ew·2^23 from the
//     weight, the rest from the activation record), so after the integer dot
//     products its bits ARE the float X = 2^(23+E) + (2^22 + dot)·2^E. With
//     C = 1.5·2^(23+E), X − C = dot·2^E is exact (Sterbenz: C/2 ≤ X ≤ 2C,
//     since |dot| < 2^22), and acc + (X − C) is the reference's single
//     rounding. A variant for some rows of a tile leaves ew out of X and C and
//     then computes fma(X − C, 2^ew, acc): the product is exact, so the FMA
//     rounds once, the same way. Valid when E and E − ew lie in [−149, 104]
//     (X, C normal and finite; s exact in the reference; no term overflows),
//     ew ≥ −126 (2^ew normal) and |dot| < 2^22, i.e. Block ≤ 256. No int→float
//     conversion and at most one multiply-class op per term: the two pipes that
//     run vpdpbusd on Zen 4 are left to vpdpbusd.
//   * exact: s = 2^(ew−Fw)·2^(ex−Fx) by IEEE multiplies, the term by a
//     multiply and the accumulation by a separate add: the reference's own
//     operations, bit-identical for every finite input. Used outside the
//     window (and for blocks > 256).
//   * real: a layer with a real (fp16 / fp32) scale in any of its formats —
//     Q4_0 or INT4 group-128 weights, Q8_0-style activations (params.hpp's
//     kernel_supports_formats) — runs exact mode's operations with sw read
//     from the stream as the format stores it (fp16 converted exactly) and sx
//     from the activation record: float(dot)·(sx·sw), then the add, which is
//     the reference's term for every input (the reference forms the same
//     exact dot and multiplies the same two floats). Zero points (INT4
//     GPTQ/AWQ weights, intq asymmetric, on Wq, A or B) are integer work:
//     the block's int32 accumulator starts at −zero·Σqx per output
//     (params.hpp, kMaxGroup), so dot is Σ (q − zero)·qx exactly, as in the
//     reference.
// The driver checks the window from the packed layer's exponent ranges and the
// prologue's; realistic data (|E| ≲ 40 for LLM layers) always takes the magic
// mode. So linear() reproduces reference_forward(..., correction_mode::fused)
// bit for bit on every path (the tests check exact equality), given the
// default floating-point environment (round to nearest, no flush-to-zero).
//
// Thread-safety: a packed_layer is immutable; any number of threads may call
// linear() on the same one concurrently. A linear_workspace is scratch for one
// call at a time: a second call on a workspace in use (a re-entrant executor
// that runs foreign work on the waiting thread, as work-stealing pools do)
// throws usage_error instead of resizing the buffers under the first call.
// The overloads without one use a thread_local stack of workspaces of the
// calling thread, one per nesting level, so they are re-entrant. The executor is the caller's (exec/executor.hpp); the
// call returns when all its tasks are done.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/exec/executor.hpp"
#include "lqer/kernel/arch/generic.hpp"
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/layout.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/kernel/params.hpp"
#include "lqer/kernel/prologue.hpp"
#include "lqer/tensor/view.hpp"

#if defined(__x86_64__)
#include "lqer/kernel/arch/avx2.hpp"
#include "lqer/kernel/arch/avx512_vnni.hpp"
#include "lqer/kernel/arch/avx_vnni.hpp"
#endif
#if defined(__aarch64__)
#include "lqer/kernel/arch/neon_dotprod.hpp"
#endif

namespace lqer {

namespace detail {
struct linear_driver;
class workspace_claim;
}  // namespace detail

/// Scratch of one linear() call: the quantized activations (codes and block
/// records), the correction's u and t. Grows to the largest call it served;
/// reuse one per thread to avoid allocations in the hot path.
class linear_workspace {
 public:
  linear_workspace() = default;
  /// Bytes currently held.
  std::size_t bytes() const noexcept {
    return xq_.size() + tq_.size() + u_.size() * sizeof(float) + status_.size() * sizeof(detail::row_status);
  }

 private:
  friend struct detail::linear_driver;
  friend class detail::workspace_claim;
  template <class T>
  static T* sized(std::vector<T>& v, index_t n) {
    if (v.size() < static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
    return v.data();
  }
  static std::uint8_t* sized(detail::aligned_bytes& b, index_t n) {
    if (b.size() < static_cast<std::size_t>(n)) b = detail::aligned_bytes(static_cast<std::size_t>(n));
    return b.data();
  }
  detail::aligned_bytes xq_, tq_;  // activation panels of x and t (act_panel_layout)
  std::vector<float> u_;
  std::vector<detail::row_status> status_;
  // Set for the duration of a call. Atomic so that two threads misusing one
  // workspace at once are caught too (not only re-entry on one thread).
  std::atomic<bool> in_use_{false};
};

namespace detail {
/// Marks a workspace in use for one call (RAII); throws usage_error when it
/// already is.
class workspace_claim {
 public:
  explicit workspace_claim(linear_workspace& ws) : ws_(ws) {
    if (ws_.in_use_.exchange(true, std::memory_order_acquire))
      throw usage_error(
          "linear: this linear_workspace is already in use by another linear() call (an executor that runs other "
          "work while it waits, or two threads sharing one workspace); give each concurrent call its own");
  }
  workspace_claim(const workspace_claim&) = delete;
  workspace_claim& operator=(const workspace_claim&) = delete;
  ~workspace_claim() { ws_.in_use_.store(false, std::memory_order_release); }

 private:
  linear_workspace& ws_;
};
}  // namespace detail

namespace detail {

/// True when the magic scale mode is exact for every pair of exponents drawn
/// from the two ranges (see the file comment): E = ew + ex − Fw − Fx and
/// E' = ex − Fx − Fw in [−149, 104], and 2^ew a normal float (ew ≥ −126) for
/// the rows that apply it by FMA.
template <int Block>
inline bool in_magic_window(exponent_range w, exponent_range x, int wfrac, int xfrac) noexcept {
  const int f = wfrac + xfrac;
  return Block <= kMagicMaxBlock && w.lo + x.lo - f >= -149 && w.hi + x.hi - f <= 104 && x.lo - f >= -149 &&
         x.hi - f <= 104 && w.lo >= -126;
}

/// Runs tiles of Isa's micro-kernel — at most MRmax rows × NVmax groups —
/// over rows [0, M) × a range of groups.
template <class Isa, int Block, code_kind K0, bool Corr, scale_mode S, int MRmax, int NVmax,
          record_kind WR0 = record_kind{}, record_kind WR1 = record_kind{}>
struct gemm_runner {
  using tile_fn = void (*)(const tile_args&);
  static constexpr int kGroup = Isa::layout::kGroup;  ///< outputs per group of the path's layout

  template <int I>
  static constexpr tile_fn entry() {
    return &Isa::template tile<I % MRmax + 1, I / MRmax + 1, Block, K0, Corr, S, WR0, WR1>;
  }
  template <int... I>
  static constexpr std::array<tile_fn, sizeof...(I)> make_table(std::integer_sequence<int, I...>) {
    return {entry<I>()...};
  }
  // table[(nv − 1)·MRmax + (mr − 1)]
  static constexpr std::array<tile_fn, (MRmax * NVmax)> kTable =
      make_table(std::make_integer_sequence<int, MRmax * NVmax>{});

  /// Tiles along N: ceil(groups / NVmax).
  static index_t tiles(index_t groups) noexcept { return (groups + NVmax - 1) / NVmax; }
  /// Weight bytes of one full tile (segment 0 and, interleaved, segment 1).
  static index_t tile_bytes(index_t group_stride) noexcept { return NVmax * group_stride; }

  /// Bytes of activation panel (both segments) a chunk of rows may take: the
  /// chunk stays in the caches near the core (L2, and the L3 behind it) while
  /// every output tile of the task streams past it, and the weights are
  /// streamed once per chunk. Measured on Zen 4 (1 MiB L2) at M = 128,
  /// K = 11008: 256 KiB → 290, 1 MiB → 321–333, 2 MiB → 343 GOPS/core
  /// (Block 16); K = 4096 and M = 512 are flat from 256 KiB to 4 MiB.
  static constexpr index_t kPanelChunkBytes = index_t{2} << 20;
  /// Bytes of a tile's weights per K chunk: they stay in L1 while the row
  /// groups of the row chunk stream past them.
  static constexpr index_t kWeightChunkBytes = index_t{16} << 10;
  /// GEMM's software-prefetch distance along each group's stream (see run).
  static constexpr index_t kWeightPrefetchBytes = 2048;
  /// GEMV's largest tile whose successor is prefetched (see run).
  static constexpr index_t kNextTilePrefetchBytes = index_t{96} << 10;

  /// Output groups [g_begin, g_end), every row group, as tiles of NVmax
  /// groups from g_begin (the last one of the range may be narrower: a range
  /// need not start or end on a multiple of NVmax, and every output is the
  /// same whatever tile computes it). `base` describes group 0 (its x operands
  /// are filled in here from the panels, whose row groups must be MRmax rows);
  /// n_total is the number of real outputs.
  ///
  /// Loop nest (GEMM blocking in the manner of Goto/BLIS): rows in chunks of
  /// kPanelChunkBytes of panel (M-blocking: with N outer and all of M inner, a
  /// large M would stream the whole panel from L3 once per output tile); for
  /// each chunk, every tile of the task; for each tile, the reduction in K
  /// chunks of kWeightChunkBytes of weights (K-blocking: partial sums wait in
  /// y, see tile_args), each swept over the chunk's row groups. One row group
  /// (GEMV) takes the whole reduction at once.
  static void run(const tile_args& base, const act_panel_ref& x0, const act_panel_ref* x1, index_t M, index_t n_total,
                  index_t g_begin, index_t g_end) {
    const index_t row_groups = (M + MRmax - 1) / MRmax;
    const index_t group_bytes = x0.layout.group_stride() + (Corr ? x1->layout.group_stride() : 0);
    const index_t chunk = std::max<index_t>(1, kPanelChunkBytes / std::max<index_t>(1, group_bytes));
    const index_t nblk = base.nblk0;
    const index_t kc =
        row_groups == 1 ? nblk : std::max<index_t>(1, kWeightChunkBytes / (NVmax * group_block_bytes(K0, Block, WR0)));
    const index_t full_tile_bytes = tile_bytes(base.group_stride);
    // GEMV's next-tile prefetch: one slice per block of this tile, whole lines.
    const index_t per_block = (full_tile_bytes + std::max<index_t>(1, nblk) - 1) / std::max<index_t>(1, nblk);
    const index_t next_tile_step = (per_block + kPrefetchLine - 1) / kPrefetchLine * kPrefetchLine;
    for (index_t rg0 = 0; rg0 < row_groups; rg0 += chunk) {
      const index_t rg1 = std::min(row_groups, rg0 + chunk);
      for (index_t g0 = g_begin; g0 < g_end; g0 += NVmax) {
        const int nv = static_cast<int>(std::min<index_t>(NVmax, g_end - g0));
        tile_args a = base;
        a.w1 = base.w1 ? base.w1 + g0 * base.group_stride : nullptr;
        if (a.bias)
          a.bias =
              reinterpret_cast<const float*>(reinterpret_cast<const std::uint8_t*>(a.bias) + g0 * base.group_stride);
        a.n_valid = static_cast<int>(std::min<index_t>(index_t{kGroup} * nv, n_total - kGroup * g0));
        // Software prefetch (params.hpp's prefetch_hint).
        // GEMV (one row group) reads each weight once. Up to
        // kNextTilePrefetchBytes of tile, the next tile of the task's range
        // (its groups are contiguous after this tile's) comes into L2 spread
        // over this tile's blocks; larger tiles' streams are long enough for
        // the hardware prefetcher alone. Measured on Zen 5 (avx512_vnni), M = 1,
        // one thread, weights from DRAM, GB/s (b16, rank 0), no prefetch /
        // next tile / 2 KiB ahead in each group's stream (the rule before):
        // K = 576 (N 1536, 49152) 13–14 / 22–23 / 13–14; K = 1536 16–17 /
        // 18–21.5 / –; K = 3072 20–21 / 20–21 / –; K = 4096 (N 1536, 4096)
        // 23–24 / 22 / 20–21.
        // GEMM: 2 KiB ahead in each stream. The first row group of a K chunk
        // brings the chunk in from DRAM or L3 and the rest reuse it from L1;
        // without the prefetch memory idles while they do (M = 8, Zen 5,
        // 2 threads, b32 rank 32: cold 1337 → 1214 µs at 4096 × 11008, 525 →
        // 460 at 4096²; from L3 1108 → 978). For the later row groups the
        // prefetches hit L1: M = 32 −2%, M = 128 ±1%.
        if (row_groups == 1) {
          a.prefetch.ahead = 0;
          const bool next = g0 + NVmax < g_end && full_tile_bytes <= kNextTilePrefetchBytes;
          a.prefetch.next = next ? base.w0 + (g0 + NVmax) * base.group_stride : nullptr;
          a.prefetch.bytes = next ? std::min<index_t>(NVmax, g_end - g0 - NVmax) * base.group_stride : 0;
          a.prefetch.step = next_tile_step;
        } else {
          a.prefetch.ahead = kWeightPrefetchBytes;
        }
        const tile_fn full = kTable[static_cast<std::size_t>((nv - 1) * MRmax + (MRmax - 1))];
        for (index_t k0 = 0; k0 < nblk; k0 += kc) {
          a.w0 = base.w0 + g0 * base.group_stride + k0 * group_block_bytes(K0, Block, WR0);
          a.nblk0 = std::min(kc, nblk - k0);
          a.load_acc = k0 > 0;
          a.finish = k0 + kc >= nblk;
          for (index_t rg = rg0; rg < rg1; ++rg) {
            const index_t m0 = rg * MRmax;
            const int mr = static_cast<int>(std::min<index_t>(MRmax, M - m0));
            a.x0 = x0.operand(rg);
            a.x0.base += k0 * a.x0.block_stride;
            if (Corr) a.x1 = x1->operand(rg);
            a.y = base.y + m0 * base.ldy + kGroup * g0;
            (mr == MRmax ? full : kTable[static_cast<std::size_t>((nv - 1) * MRmax + (mr - 1))])(a);
          }
        }
      }
    }
  }
};

struct linear_driver {
  template <class Isa, class P, class E>
  static void run(const P& p, matrix_view<const float> x, matrix_view<float> y, linear_workspace& ws, E& exec) {
    static_assert(std::is_same_v<typename Isa::layout, typename P::layout>,
                  "linear: this kernel path consumes another packed layout than the layer's (its tag's layout, "
                  "kernel/dispatch.hpp)");
    using Act = typename P::activation_format;
    using W = typename P::weight_format;
    using Lr = typename P::lowrank_format;
    constexpr int B = P::kBlock;
    constexpr code_kind KW = P::kWeightKind;
    constexpr record_kind RW = P::kWeightRecord, RLr = P::kLowrankRecord;
    constexpr bool kReal = P::kRealScales;
    // Fraction bits of E8M0 formats (the magic and exact modes'); real-scale
    // formats carry theirs in the scale itself.
    constexpr int Fx = fraction_bits<Act>(), Fw = fraction_bits<W>(), Flr = fraction_bits<Lr>();
    const index_t M = x.rows, K = p.in_features(), N = p.out_features(), R = p.rank();
    const index_t nbw = p.weight_blocks(), nbb = p.lowrank_blocks();

    // Activation panels come in row groups of the micro-tile's height.
    const index_t G = M <= Isa::kGemvRows ? Isa::kGemvRows : Isa::kGemmRows;

    // ---- phase 0: the prologue -------------------------------------------
    const act_panel_layout xlay{M, G, B, nbw, R > 0 ? 2 : 1};
    std::uint8_t* xpanel = linear_workspace::sized(ws.xq_, xlay.bytes());
    row_status* status = linear_workspace::sized(ws.status_, M);
    const act_consumer cons_x[2] = {{consumer_offset<Isa, W>(KW), Fw, kReal},
                                    {consumer_offset<Isa, Lr>(code_kind::byte), Flr, kReal}};
    auto prologue = [&](index_t r0, index_t r1) {
      Isa::template quantize_rows<Act>(x.data, x.row_stride, K, r0, r1, xlay, xpanel, cons_x, status);
    };
    if (M >= 2 && M * K >= (index_t{1} << 15))
      exec.parallel_for(M, prologue);
    else
      prologue(0, M);
    const exponent_range ex_x = merge_status(status, M, [&](index_t r, index_t c) {
      if (status[r].bad_scale) throw value_error(scale_overflow_message<Act>("x", r, c, K));
      throw value_error("linear: x element (" + std::to_string(r) + ", " + std::to_string(c) + ") is " +
                        non_finite_name(x(r, c)));
    });

    // ---- phase 1: the correction's input t = Q(Q(x)·A) -----------------------
    const act_panel_layout tlay{M, G, B, nbb, 1};
    std::uint8_t* tpanel = nullptr;
    exponent_range ex_t;
    if (R > 0) {
      float* u = linear_workspace::sized(ws.u_, M * R);
      tile_args a;
      a.w0 = p.a_stream();
      a.nblk0 = nbw;
      a.group_stride = p.a_group_stride();
      a.y = u;
      a.ldy = R;
      a.wfrac0 = Flr;
      const act_panel_ref xa{xlay, xpanel, 1};
      if constexpr (kReal) {
        run_lowrank_tiles<Isa, B, scale_mode::real, RLr>(a, xa, M, p.a_groups(), R, exec);
      } else {
        if (in_magic_window<B>(p.a_exponent_range(), ex_x, Flr, Fx))
          run_lowrank_tiles<Isa, B, scale_mode::magic, RLr>(a, xa, M, p.a_groups(), R, exec);
        else
          run_lowrank_tiles<Isa, B, scale_mode::exact, RLr>(a, xa, M, p.a_groups(), R, exec);
      }

      tpanel = linear_workspace::sized(ws.tq_, tlay.bytes());
      const act_consumer cons_t[1] = {{consumer_offset<Isa, Lr>(code_kind::byte), Flr, kReal}};
      Isa::template quantize_rows<Act>(u, R, R, 0, M, tlay, tpanel, cons_t, status);
      ex_t = merge_status(status, M, [&](index_t r, index_t c) {
        if (status[r].bad_scale)
          throw value_error(scale_overflow_message<Act>("the correction's intermediate Q(x)·A", r, c, R));
        throw value_error("linear: the correction's intermediate Q(x)·A has a non-finite element (" +
                          std::to_string(r) + ", " + std::to_string(c) + ") = " + non_finite_name(u[r * R + c]) +
                          ": x is too large for this layer's low-rank factors");
      });
    }

    // ---- phase 2: main product + correction + bias → y ----------------------
    tile_args a;
    a.w0 = p.stream();
    a.nblk0 = nbw;
    a.group_stride = p.group_stride();
    a.wfrac0 = Fw;
    if (R > 0) {
      a.w1 = p.stream() + p.correction_offset();
      a.nblk1 = nbb;
      a.wfrac1 = Flr;
    }
    if (p.has_bias()) a.bias = reinterpret_cast<const float*>(p.stream() + p.bias_offset());
    a.y = y.data;
    a.ldy = y.row_stride;
    const act_panel_ref x0{xlay, xpanel, 0}, x1{tlay, tpanel, 0};
    const index_t work = M * N * (K + R);
    const auto run_main = [&]<scale_mode S>() {
      if (R > 0)
        run_tiles<Isa, B, KW, true, S, RW, RLr>(a, x0, &x1, M, p.groups(), N, work, exec);
      else
        run_tiles<Isa, B, KW, false, S, RW, RLr>(a, x0, nullptr, M, p.groups(), N, work, exec);
    };
    if constexpr (kReal) {
      run_main.template operator()<scale_mode::real>();
    } else {
      const bool magic = in_magic_window<B>(p.weight_exponent_range(), ex_x, Fw, Fx) &&
                         (R == 0 || in_magic_window<B>(p.b_exponent_range(), ex_t, Flr, Fx));
      if (magic)
        run_main.template operator()<scale_mode::magic>();
      else
        run_main.template operator()<scale_mode::exact>();
    }
  }

  /// The value_error of activations (`what`, `cols` columns) whose block at
  /// row r starting at column c needs a scale beyond the range of the
  /// activation format's scale type (the last block may be partial).
  template <class Act>
  static std::string scale_overflow_message(const char* what, index_t r, index_t c, index_t cols) {
    return std::string("linear: ") + what + ": the block at row " + std::to_string(r) + ", columns " +
           std::to_string(c) + "…" + std::to_string(std::min<index_t>(c + Act::kBlock, cols) - 1) +
           " needs a scale beyond the range of " + Act::name() + "'s scale type";
  }

  /// The multiple of −Σqx in the activation records of a consumer of format
  /// F stored as codes of kind K: the path's code offset, which the records
  /// cancel; 1 for a format with a zero point, whose kernels multiply it by
  /// each output's own offset and zero point, or with a block minimum, whose
  /// kernels need Σqx itself (params.hpp, kMaxGroup).
  template <class Isa, class F>
  static constexpr int consumer_offset(code_kind k) noexcept {
    return F::kHasZeroPoint || F::kHasMin ? 1 : Isa::code_offset(k);
  }

  /// Fraction bits F of an MX format (value = q·2^(e − F)); 0 for a real-scale format.
  template <class F>
  static constexpr int fraction_bits() noexcept {
    if constexpr (is_mxint<F>::value)
      return F::kFractionBits;
    else
      return 0;
  }

  /// Merges the rows' statuses: calls on_bad(row, col) for the first row with
  /// a non-finite element, else returns the union of the exponent ranges.
  template <class OnBad>
  static exponent_range merge_status(const row_status* st, index_t M, OnBad&& on_bad) {
    exponent_range r;
    for (index_t m = 0; m < M; ++m) {
      if (st[m].bad_col >= 0) on_bad(m, st[m].bad_col);
      r.add(st[m].ex.lo);
      r.add(st[m].ex.hi);
    }
    return r;
  }

  /// Most weight bytes of one GEMV task (see run_tiles).
  static constexpr index_t kGemvRunBytes = index_t{256} << 10;

  /// Output tiles as tasks on the executor — GEMV tiles (all M ≤ kGemvRows
  /// rows at once) or GEMM tiles; small problems (< 2^20 MACs, a few µs) run
  /// on the calling thread, where waking workers would cost more.
  template <class Isa, int B, code_kind K0, bool Corr, scale_mode S, record_kind WR0, record_kind WR1, class E>
  static void run_tiles(const tile_args& a, const act_panel_ref& x0, const act_panel_ref* x1, index_t M, index_t groups,
                        index_t n_total, index_t macs, E& exec) {
    const bool parallel = macs >= (index_t{1} << 20);
    if (M <= Isa::kGemvRows) {
      using G = gemm_runner<Isa, B, K0, Corr, S, Isa::kGemvRows, Isa::kGemvGroups, WR0, WR1>;
      // GEMV tasks are contiguous ranges of groups with up to kGemvRunBytes
      // of weights each, so that a task holds several tiles and the
      // next-tile prefetch (G::run) has a next tile to fetch.
      // * The executor's concurrency c known (> 1): a multiple of c tasks
      //   whose sizes differ by one group at most (a task's last tile may be
      //   narrower). A
      //   decode step's layers are a few tiles each (SmolLM2's o and down: 9
      //   tiles of 4 groups), which whole tiles split 5 : 4 on two threads;
      //   equal ranges split them 18 : 18 groups.
      // * Unknown: runs of whole tiles, and at least 16 of them where there
      //   are enough tiles (balance, for executors that hand out one task at
      //   a time).
      const index_t c = concurrency_of(exec);
      if (c > 1) {
        const index_t bytes = std::max<index_t>(1, groups * a.group_stride);
        index_t n = (bytes + kGemvRunBytes - 1) / kGemvRunBytes;
        n = std::min(groups, (n + c - 1) / c * c);
        run_group_ranges<G>(a, x0, x1, M, groups, n_total, parallel, exec, n,
                            [=](index_t i) { return split_begin(groups, n, i); });
      } else {
        const index_t tiles = G::tiles(groups);
        const index_t run = std::clamp<index_t>(
            std::min(tiles / 16, kGemvRunBytes / std::max<index_t>(1, G::tile_bytes(a.group_stride))), 1, tiles);
        run_group_ranges<G>(a, x0, x1, M, groups, n_total, parallel, exec, (tiles + run - 1) / run,
                            [=](index_t i) { return std::min(groups, i * run * Isa::kGemvGroups); });
      }
    } else {
      using G = gemm_runner<Isa, B, K0, Corr, S, Isa::kGemmRows, Isa::kGemmGroups, WR0, WR1>;
      run_group_ranges<G>(a, x0, x1, M, groups, n_total, parallel, exec, G::tiles(groups),
                          [=](index_t i) { return std::min(groups, i * Isa::kGemmGroups); });
    }
  }
  /// u = Q(x)·A: only rank/16 groups (2 for rank 32), so one group per task,
  /// and worth splitting from 2^16 MACs on: at M = 1 it is mostly reading A
  /// (≈ 140 KB for in = 4096), which two threads do in half the time.
  template <class Isa, int B, scale_mode S, record_kind WR, class E>
  static void run_lowrank_tiles(const tile_args& a, const act_panel_ref& x, index_t M, index_t groups, index_t R,
                                E& exec) {
    const bool parallel = M * a.nblk0 * B * R >= (index_t{1} << 16);
    const auto one_group = [](index_t i) { return i; };
    if (M <= Isa::kGemvRows)
      run_group_ranges<gemm_runner<Isa, B, code_kind::byte, false, S, Isa::kGemvRows, 1, WR>>(
          a, x, nullptr, M, groups, R, parallel, exec, groups, one_group);
    else
      run_group_ranges<gemm_runner<Isa, B, code_kind::byte, false, S, Isa::kGemmRows, 1, WR>>(
          a, x, nullptr, M, groups, R, parallel, exec, groups, one_group);
  }

  /// n_tasks tasks; task i computes groups [cut(i), cut(i + 1)), with
  /// cut(0) = 0 and cut(n_tasks) = groups (cut increasing). A range of tasks
  /// that one call receives is one range of groups.
  template <class G, class E, class Cut>
  static void run_group_ranges(const tile_args& a, const act_panel_ref& x0, const act_panel_ref* x1, index_t M,
                               index_t groups, index_t n_total, bool parallel, E& exec, index_t n_tasks, Cut cut) {
    if (!parallel || n_tasks == 1) {
      G::run(a, x0, x1, M, n_total, 0, groups);
    } else {
      exec.parallel_for(n_tasks, [&](index_t r0, index_t r1) { G::run(a, x0, x1, M, n_total, cut(r0), cut(r1)); });
    }
  }
};

/// f(the kernel struct of `path`), for the built paths of the chain; the
/// chain's last entry (generic) takes whatever is left (require_usable has
/// rejected a path this build lacks before).
template <class F, class Tag, class... Tags>
decltype(auto) with_isa(kernel_path path, F& f, path_list<Tag, Tags...>) {
  if constexpr (sizeof...(Tags) == 0) {
    return f(typename path_kernels<Tag>::type{});
  } else if constexpr (!Tag::kBuilt) {
    return with_isa(path, f, path_list<Tags...>{});
  } else {
    if (path == Tag::kPath) return f(typename path_kernels<Tag>::type{});
    return with_isa(path, f, path_list<Tags...>{});
  }
}
template <class F>
decltype(auto) with_isa(kernel_path path, F&& f) {
  return with_isa(path, f, kernel_paths{});
}

/// Everything linear() does, for any executor (behind executor_ref): one
/// instantiation per packed layer type, which lqer::kernels holds compiled for
/// the types in LQER_KERNELS_LAYERS (below).
template <class P>
void linear_dispatch(const P& p, matrix_view<const float> x, matrix_view<float> y, linear_workspace& ws,
                     executor_ref exec, kernel_path path) {
  require_usable(path);
  if (p.empty()) throw shape_error("linear: the packed layer is empty");
  x.validate("linear: x");
  y.validate("linear: y");
  if (x.cols != p.in_features())
    throw shape_error("linear: x has " + std::to_string(x.cols) + " columns but the layer has " +
                      std::to_string(p.in_features()) + " inputs");
  if (y.rows != x.rows || y.cols != p.out_features())
    throw shape_error("linear: y is " + std::to_string(y.rows) + "x" + std::to_string(y.cols) + ", expected " +
                      std::to_string(x.rows) + "x" + std::to_string(p.out_features()));
  const workspace_claim claim(ws);
  with_isa(path, [&](auto isa) { linear_driver::run<decltype(isa)>(p, x, y, ws, exec); });
}

/// This thread's workspaces, one per nesting depth of linear() calls on the
/// thread: depth 0 serves the ordinary call; a call that starts while an
/// outer one waits in its executor (a helping executor) takes the next one.
/// Workspaces are heap objects that never move, so growing the stack does not
/// disturb the outer calls' buffers.
class thread_workspaces {
 public:
  /// The workspace for the current depth; the depth grows until release.
  class lease {
   public:
    explicit lease(thread_workspaces& t) : t_(t) {
      if (t_.depth_ == t_.stack_.size()) t_.stack_.push_back(std::make_unique<linear_workspace>());
      ws_ = t_.stack_[t_.depth_++].get();
    }
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() { --t_.depth_; }
    linear_workspace& get() const noexcept { return *ws_; }

   private:
    thread_workspaces& t_;
    linear_workspace* ws_ = nullptr;
  };
  static thread_workspaces& of_this_thread() {
    thread_local thread_workspaces t;
    return t;
  }

 private:
  std::vector<std::unique_ptr<linear_workspace>> stack_;
  std::size_t depth_ = 0;
};

}  // namespace detail

/// y [M, out] = the packed layer applied to x [M, in] (see the file comment),
/// with the caller's scratch `ws`, on `exec`, with micro-kernel path `path`
/// (default: the best this CPU runs; forcing one it cannot run throws
/// unsupported_error). Shapes are checked (shape_error) and x must be finite
/// (value_error); on any error y is not written. x may alias y exactly (x is
/// fully read before y is written).
template <class W, class Lr, class Act, class L, class E = serial_executor>
requires executor<std::remove_cvref_t<E>>
void linear(const packed_layer<W, Lr, Act, L>& p, matrix_view<const float> x, matrix_view<float> y,
            linear_workspace& ws, E&& exec = E{}, kernel_path path = best_path()) {
  detail::linear_dispatch(p, x, y, ws, executor_ref(exec), path);
}

/// The same with a workspace of this thread's own (re-entrant: see the file comment).
template <class W, class Lr, class Act, class L, class E = serial_executor>
requires executor<std::remove_cvref_t<E>>
void linear(const packed_layer<W, Lr, Act, L>& p, matrix_view<const float> x, matrix_view<float> y, E&& exec = E{},
            kernel_path path = best_path()) {
  const detail::thread_workspaces::lease ws(detail::thread_workspaces::of_this_thread());
  detail::linear_dispatch(p, x, y, ws.get(), executor_ref(exec), path);
}

namespace kernels_library {
/// The packed layer types lqer::kernels holds linear() compiled for: the
/// paper's MXINT4 W4A8 at blocks 16 and 32 (LQER reference rule), the OCP MX
/// rule at block 32, and W8A8 (MXINT8 weights, the example engines' output
/// projection) for each. The correction's A and B are MXINT8 of the same rule.
template <int Bits, int Block, mx_rule Rule>
using layer = packed_layer<mxint<Bits, Block, Rule>, mxint<8, Block, Rule>, mxint<8, Block, Rule>>;
using w4_b16_lqer = layer<4, 16, mx_rule::lqer>;
using w4_b32_lqer = layer<4, 32, mx_rule::lqer>;
using w4_b32_ocp = layer<4, 32, mx_rule::ocp>;
using w8_b16_lqer = layer<8, 16, mx_rule::lqer>;
using w8_b32_lqer = layer<8, 32, mx_rule::lqer>;
using w8_b32_ocp = layer<8, 32, mx_rule::ocp>;
}  // namespace kernels_library

}  // namespace lqer

// ---------------------------------------------------------------------------
// The companion library lqer::kernels
//
// A call of linear() compiles the driver and every path's micro-tile tables
// for its layer type (issue #18: 9 s and 0.4 GB per translation unit).
// lqer::kernels (src/kernels_*.cpp) holds detail::linear_dispatch compiled for
// the layer types listed here; linking it defines LQER_KERNELS_LIBRARY, and
// the declarations below then stop every includer from compiling them again.
// Every other layer type compiles header-only, as everything does without the
// target. The list is the only place that names them (names relative to
// namespace lqer, where it is expanded).
// Two halves, so that two cores compile the library in parallel.
#define LQER_KERNELS_LAYERS_W4(X) \
  X(kernels_library::w4_b16_lqer) X(kernels_library::w4_b32_lqer) X(kernels_library::w4_b32_ocp)
#define LQER_KERNELS_LAYERS_W8(X) \
  X(kernels_library::w8_b16_lqer) X(kernels_library::w8_b32_lqer) X(kernels_library::w8_b32_ocp)
#define LQER_KERNELS_LAYERS(X) LQER_KERNELS_LAYERS_W4(X) LQER_KERNELS_LAYERS_W8(X)

#define LQER_KERNELS_LINEAR(P)                                                                                        \
  template void detail::linear_dispatch<P>(const P&, matrix_view<const float>, matrix_view<float>, linear_workspace&, \
                                           executor_ref, kernel_path);

#if defined(LQER_KERNELS_LIBRARY)
namespace lqer {
#define LQER_KERNELS_EXTERN_LINEAR(P) extern LQER_KERNELS_LINEAR(P)
LQER_KERNELS_LAYERS(LQER_KERNELS_EXTERN_LINEAR)
#undef LQER_KERNELS_EXTERN_LINEAR
}  // namespace lqer
#endif
