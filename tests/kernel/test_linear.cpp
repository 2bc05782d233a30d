// linear(): every usable path against reference_forward(..., fused), bit for
// bit. Why exact equality is the right test: every block term float(dot)·2^E
// is exact and the kernels keep the reference's summation order per output
// (kernel/linear.hpp explains the two scale modes and why each is exact), so
// any difference at all is a bug, not rounding.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/exec/thread_pool.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/layer/reference_forward.hpp"

using namespace lqer;
using namespace lqer_test;

namespace {

/// Runs every usable path (1 thread, and 2 threads on a pool) on x and compares
/// with the reference; returns the number of mismatching configurations.
template <class Act, class W, class Lr, class E>
void check_all_paths(const lqer_layer<W, Lr>& layer, const std::vector<float>& x, index_t M, const std::string& what,
                     E& pool) {
  const index_t K = layer.in_features(), N = layer.out_features();
  std::vector<float> want(static_cast<std::size_t>(M * N));
  reference_forward<Act>(layer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(want.data(), M, N),
                         correction_mode::fused);
  const auto packed = pack<Act>(layer);
  for (kernel_path path : paths_to_test()) {
    for (int threads : {1, 2}) {
      std::vector<float> got(want.size(), -12345.0f);
      if (threads == 1)
        linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(got.data(), M, N),
               serial_executor{}, path);
      else
        linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(got.data(), M, N), pool, path);
      std::string first;
      const index_t bad = count_mismatches(got, want, N, &first);
      INFO(what << " path=" << std::string(to_string(path)) << " threads=" << threads << " first mismatch " << first);
      CHECK(bad == 0);
    }
  }
}

/// Reports `threads` as its concurrency but runs the tasks one at a time on
/// the calling thread, last first: the kernels cut GEMVs into equal shares
/// per reported thread (ranges that start and end inside tiles), and each
/// task must compute its outputs whatever ran before it.
struct reversed_executor {
  int threads;
  int concurrency() const noexcept { return threads; }
  template <class F>
  void parallel_for(index_t n, F&& fn) const {
    for (index_t i = n; i-- > 0;) fn(i, i + 1);
  }
};

}  // namespace

TEST_CASE("linear == reference_forward(fused), W4A8 MXINT block 16 (LQER rule), every shape of the issue") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  thread_pool_executor pool(2);
  std::uint32_t seed = 1;
  for (index_t rank : {0, 32})
    for (index_t K : {16, 100, 4096})
      for (index_t N : {1, 13, 64, 300}) {
        const auto layer = random_layer<W, Lr>(N, K, rank, /*bias=*/(N % 2) == 1 || rank == 0, seed++);
        for (index_t M : {1, 2, 3, 5, 8, 17}) {
          const auto x = random_matrix(M, K, 1.0f, seed++, /*outliers=*/true);
          check_all_paths<Act>(layer, x, M,
                               "rank=" + std::to_string(rank) + " M=" + std::to_string(M) + " K=" + std::to_string(K) +
                                   " N=" + std::to_string(N),
                               pool);
        }
      }
}

TEST_CASE("linear == reference: GEMV tasks of several tiles, with and without the next-tile prefetch") {
  // A wide GEMV becomes tasks of `run` contiguous tiles (linear.hpp,
  // run_tiles): 41 tiles of 4 groups at N = 2573 give runs of 2 and a last run
  // of one partial tile. At K = 576 a tile is small enough that each tile
  // prefetches the next one inside its run (a hint whose last slice ends at the
  // stream's end); at K = 4096 it is not. Either way every output is the
  // reference's, on one thread (one range) and on two (claimed runs).
  // Executors that report their concurrency c get a multiple of c equal
  // ranges of groups instead (161 groups: 2 → 4 ranges of 40–41 groups at
  // K = 576, 3 → 6 ranges of 26–27), whose tiles start and end mid-tile.
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  thread_pool_executor pool(2);
  std::uint32_t seed = 900;
  for (index_t K : {576, 4096})
    for (index_t rank : {0, 32}) {
      const index_t N = 64 * 40 + 13;
      const auto layer = random_layer<W, Lr>(N, K, rank, /*bias=*/true, seed++);
      for (index_t M : {1, 2}) {
        const auto x = random_matrix(M, K, 1.0f, seed++, /*outliers=*/true);
        const std::string what = "rank=" + std::to_string(rank) + " M=" + std::to_string(M) + " K=" + std::to_string(K);
        check_all_paths<Act>(layer, x, M, what, pool);
        for (int c : {2, 3}) {
          reversed_executor rev{c};
          check_all_paths<Act>(layer, x, M, what + " reversed tasks, concurrency " + std::to_string(c), rev);
        }
      }
    }
}

TEST_CASE("linear == reference: M large enough for several row chunks (M-blocking)") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  thread_pool_executor pool(2);
  // K = 4096: a row of the panel is 256 blocks · (16 + 2·8) bytes = 8 KiB, so
  // the 2 MiB row chunks of the GEMM loop nest hold 256 rows and M = 300 takes
  // two chunks, the last one partial in its last row group.
  const auto layer = random_layer<W, Lr>(24, 4096, 32, true, 800);
  const auto x = random_matrix(300, 4096, 1.0f, 801, true);
  check_all_paths<mxint<8, 16, mx_rule::lqer>>(layer, x, 300, "M=300 K=4096", pool);
}

TEST_CASE("linear == reference: W8A8 (8-bit weights), both ranks") {
  using W = mxint<8, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  thread_pool_executor pool(2);
  std::uint32_t seed = 100;
  for (index_t rank : {0, 32})
    for (auto [M, K, N] :
         {std::tuple<index_t, index_t, index_t>{1, 100, 13}, {3, 4096, 64}, {17, 272, 300}, {8, 48, 33}}) {
      const auto layer = random_layer<W, Lr>(N, K, rank, true, seed++);
      const auto x = random_matrix(M, K, 1.0f, seed++, true);
      check_all_paths<Act>(layer, x, M, "W8A8 rank=" + std::to_string(rank) + " M=" + std::to_string(M), pool);
    }
}

TEST_CASE("linear == reference: OCP rule, block 32 (4.25-bit weights), odd ranks and 3-bit weights") {
  thread_pool_executor pool(2);
  {
    using W = mxint4_ocp<32>;
    using Lr = mxint8_ocp<32>;
    using Act = mxint8_ocp<32>;
    std::uint32_t seed = 200;
    for (index_t rank : {0, 7, 32, 40})
      for (auto [M, K, N] : {std::tuple<index_t, index_t, index_t>{1, 4096, 64}, {5, 100, 300}, {17, 32, 17}}) {
        const auto layer = random_layer<W, Lr>(N, K, rank, rank % 2 == 0, seed++);
        const auto x = random_matrix(M, K, 1.0f, seed++, true);
        check_all_paths<Act>(layer, x, M,
                             "OCP b32 rank=" + std::to_string(rank) + " M=" + std::to_string(M) +
                                 " K=" + std::to_string(K) + " N=" + std::to_string(N),
                             pool);
      }
  }
  {
    // 3-bit LQER weights (stored as nibbles), OCP activations: rules may differ per operand.
    using W = mxint<3, 16, mx_rule::lqer>;
    using Lr = mxint<8, 16, mx_rule::ocp>;
    using Act = mxint<8, 16, mx_rule::ocp>;
    const auto layer = random_layer<W, Lr>(45, 200, 16, true, 300);
    const auto x = random_matrix(9, 200, 1.0f, 301, true);
    check_all_paths<Act>(layer, x, 9, "W3 mixed rules", pool);
  }
}

namespace {
/// check_all_paths over ranks 0 and 32 and the GEMV, small-GEMM, K-blocked
/// GEMM and tail shapes, for one combination of formats.
template <class W, class Lr, class Act>
void check_family(const std::string& name, std::uint32_t seed, thread_pool_executor& pool) {
  static_assert(kernel_supports_formats<W, Lr, Act>);
  constexpr index_t B = Act::kBlock;
  for (index_t rank : {0, 32})
    for (auto [M, K, N] : {std::tuple<index_t, index_t, index_t>{1, 576, 300},
                           {2, 4 * B + 8, 13},
                           {3, 100, 64},
                           {5, 2 * B, 1},
                           {9, 4096, 40},
                           {17, B, 33}}) {
      const auto layer = random_layer<W, Lr>(N, K, rank, /*bias=*/rank == 0 || N % 2 == 1, seed++);
      const auto x = random_matrix(M, K, 1.0f, seed++, /*outliers=*/true);
      check_all_paths<Act>(layer, x, M,
                           name + " rank=" + std::to_string(rank) + " M=" + std::to_string(M) +
                               " K=" + std::to_string(K) + " N=" + std::to_string(N),
                           pool);
    }
}
}  // namespace

TEST_CASE("linear == reference: scaled-integer families with real scales (Q4_0, Q8_0, INT4/INT8 groups)") {
  // Real fp16 / fp32 block scales in any operand run scale_mode::real
  // (linear.hpp): the reference's own float(dot)·(sx·sw) and add, so the
  // result is bit-identical on every path, as for the MX formats.
  thread_pool_executor pool(2);
  SUBCASE("llama.cpp's pair: Q4_0 weights (codes -8 … 7), Q8_0 activations, Q8_0 correction") {
    check_family<q4_0, q8_0, q8_0>("q4_0/q8_0", 1000, pool);
  }
  SUBCASE("Q8_0 weights (W8A8 with fp16 scales)") { check_family<q8_0, q8_0, q8_0>("q8_0/q8_0", 1100, pool); }
  SUBCASE("INT4 group 128, fp16 scales (GPTQ's symmetric layout), fp32 INT8 activations, MXINT8 correction") {
    check_family<intq<4, 128, int_scheme::symmetric, scale_dtype::f16>, mxint<8, 128, mx_rule::lqer>,
                 intq<8, 128, int_scheme::symmetric, scale_dtype::f32>>("int4_g128", 1200, pool);
  }
  SUBCASE("INT8 group 64, fp32 scales, under MXINT8 activations (real weights, power-of-two activations)") {
    using I8 = intq<8, 64, int_scheme::symmetric, scale_dtype::f32>;
    check_family<I8, I8, mxint<8, 64, mx_rule::lqer>>("int8_g64/mxint8", 1300, pool);
  }
  SUBCASE("MXINT4 weights and correction under Q8_0 activations (power-of-two weights, real activations)") {
    check_family<mxint4_ocp<32>, mxint8_ocp<32>, q8_0>("mxint4/q8_0", 1400, pool);
  }
  SUBCASE("3-bit signed-extreme codes, block 16 (nibbles of -4 … 3)") {
    using W3 = intq<3, 16, int_scheme::signed_extreme, scale_dtype::f16>;
    using A8 = intq<8, 16, int_scheme::symmetric, scale_dtype::f16>;
    check_family<W3, A8, A8>("int3_sext_g16", 1500, pool);
  }
  SUBCASE("INT4 group 128 asymmetric, fp16 scales and zero points (GPTQ/AWQ), Q8_0-style g128 activations") {
    using A8 = intq<8, 128, int_scheme::symmetric, scale_dtype::f16>;
    check_family<int4_g128_asym, A8, A8>("int4_g128_asym", 1700, pool);
  }
  SUBCASE("INT4 group 32 asymmetric weights and asymmetric 4-bit factors (zero points on A and B, bytes)") {
    using A4 = intq<4, 32, int_scheme::asymmetric, scale_dtype::f32>;
    check_family<A4, A4, q8_0>("int4_g32_asym/asym factors", 1800, pool);
  }
  SUBCASE("2- and 3-bit asymmetric weights under MXINT8 activations") {
    check_family<intq<2, 16, int_scheme::asymmetric, scale_dtype::f16>, mxint<8, 16, mx_rule::lqer>,
                 mxint<8, 16, mx_rule::lqer>>("int2_g16_asym/mxint8", 1900, pool);
    check_family<intq<3, 32, int_scheme::asymmetric, scale_dtype::f32>, q8_0, mxint8_ocp<32>>("int3_g32_asym/mxint8",
                                                                                              2000, pool);
  }
  SUBCASE("INT8 asymmetric (codes -128 … 127) on the weights and on A and B") {
    using W8 = intq<8, 32, int_scheme::asymmetric, scale_dtype::f16>;
    check_family<W8, W8, q8_0>("int8_g32_asym", 2500, pool);
    // Code -128 (u = 0) is what AVX2's swapped sign trick exists for: check that it occurs.
    using W8r = intq<8, 128, int_scheme::asymmetric, scale_dtype::f32>;
    const auto layer = random_layer<W8r, W8r>(33, 512, 8, true, 2600);
    int lowest = 0;
    for (index_t n = 0; n < 33; ++n)
      for (index_t k = 0; k < 512; ++k) lowest += layer.wq.code(n, k) == -128 ? 1 : 0;
    CHECK(lowest > 0);
    using A8 = intq<8, 128, int_scheme::symmetric, scale_dtype::f16>;
    check_all_paths<A8>(layer, random_matrix(6, 512, 1.0f, 2601, true), 6, "int8_g128_asym f32", pool);
    check_all_paths<A8>(layer, random_matrix(1, 512, 1.0f, 2602, true), 1, "int8_g128_asym f32 M=1", pool);
  }
  SUBCASE("llama.cpp's Q4_1 (a block minimum: u·d + m) under Q8_0 activations, with a Q8_0 correction") {
    check_family<q4_1, q8_0, q8_0>("q4_1/q8_0", 2200, pool);
  }
  SUBCASE("block minima on A and B (Q4_1 factors, widened to bytes) and fp32 minima on the weights") {
    check_family<q4_0, q4_1, q8_0>("q4_0/q4_1 factors", 2300, pool);
    using M4 = intq<4, 16, int_scheme::with_min, scale_dtype::f32>;
    check_family<M4, mxint<8, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>>("int4_g16_min_f32/mxint8", 2400, pool);
  }
  SUBCASE("zero points at both ends of the code range: one-signed weight rows (z = 0 and z = 15)") {
    using W = intq<4, 32, int_scheme::asymmetric, scale_dtype::f16>;
    auto layer = random_layer<W, q8_0>(40, 200, 16, true, 2100);
    auto w = random_matrix(40, 200, 0.05f, 2101);
    for (index_t n = 0; n < 40; ++n)
      for (index_t k = 0; k < 200; ++k) {
        float& v = w[static_cast<std::size_t>(n * 200 + k)];
        v = n % 3 == 0 ? std::fabs(v) : n % 3 == 1 ? -std::fabs(v) : v;
      }
    layer.wq = quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), 40, 200), block_axis::cols);
    bool lowest = false, highest = false;
    for (index_t n = 0; n < 40; ++n)
      for (const auto& s : layer.wq.lane_scales(n)) {
        lowest |= W::zero_point(s) == W::kQmin;  // z = 0 (stored shifted by −8)
        highest |= W::zero_point(s) == W::kQmax;
      }
    CHECK(lowest);
    CHECK(highest);
    check_all_paths<q8_0>(layer, random_matrix(5, 200, 1.0f, 2102, true), 5, "asym extreme zero points", pool);
    check_all_paths<q8_0>(layer, random_matrix(1, 200, 1.0f, 2103, true), 1, "asym extreme zero points M=1", pool);
  }
  SUBCASE("fp16 scales near their limits (activations up to ~8e6, and subnormal fp16 scales)") {
    const auto layer = random_layer<q4_0, q8_0>(40, 200, 16, true, 1600, /*w_sigma=*/3.0e3f);
    const auto big = random_matrix(5, 200, 5.0e4f, 1601, true);  // outliers ×20: amax/127 up to ~3e4
    check_all_paths<q8_0>(layer, big, 5, "q4_0 big activations", pool);
    const auto small = random_matrix(5, 200, 1.0e-4f, 1602, true);  // d ~ 1e-5: subnormal halves
    check_all_paths<q8_0>(layer, small, 5, "q4_0 subnormal fp16 activation scales", pool);
  }
  SUBCASE("fp32 scales: terms overflowing to ±Inf and products underflowing, as in the reference") {
    using W = intq<4, 32, int_scheme::symmetric, scale_dtype::f32>;
    using A = intq<8, 32, int_scheme::symmetric, scale_dtype::f32>;
    const auto huge = random_layer<W, A>(40, 200, 16, true, 1603, /*w_sigma=*/1.0e15f, /*a_sigma=*/1.0e-30f);
    check_all_paths<A>(huge, random_matrix(5, 200, 1.0e25f, 1604, true), 5, "huge (Inf outputs)", pool);
    const auto tiny = random_layer<W, A>(40, 200, 16, true, 1605, /*w_sigma=*/1.0e-12f);
    check_all_paths<A>(tiny, random_matrix(5, 200, 1.0e-30f, 1606, true), 5, "tiny (subnormal scale products)", pool);
  }
}

TEST_CASE("linear == reference: zero rows, zero weight rows, strided views, in place") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  thread_pool_executor pool(2);
  const index_t K = 96, N = 96, M = 6;
  auto w = random_matrix(N, K, 0.05f, 400);
  for (index_t k = 0; k < K; ++k) w[static_cast<std::size_t>(5 * K + k)] = 0.0f;    // an all-zero output row
  for (index_t k = 16; k < 32; ++k) w[static_cast<std::size_t>(9 * K + k)] = 0.0f;  // one all-zero block
  lqer_layer<W, Lr> layer = random_layer<W, Lr>(N, K, 32, true, 401);
  layer.wq = quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
  auto x = random_matrix(M, K, 1.0f, 402, true);
  for (index_t k = 0; k < K; ++k) x[static_cast<std::size_t>(2 * K + k)] = 0.0f;     // an all-zero input row
  for (index_t k = 32; k < 48; ++k) x[static_cast<std::size_t>(4 * K + k)] = -0.0f;  // one (negative) zero block
  check_all_paths<Act>(layer, x, M, "zeros", pool);

  std::vector<float> want(static_cast<std::size_t>(M * N));
  reference_forward<Act>(layer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(want.data(), M, N));
  const auto packed = pack<Act>(layer);
  for (kernel_path path : paths_to_test()) {
    INFO("path=" << std::string(to_string(path)));
    // Strided x and y: the gaps must stay untouched.
    const index_t ldx = K + 5, ldy = N + 3;
    std::vector<float> xs(static_cast<std::size_t>(M * ldx), 777.0f), ys(static_cast<std::size_t>(M * ldy), -1.0f);
    for (index_t m = 0; m < M; ++m)
      for (index_t k = 0; k < K; ++k)
        xs[static_cast<std::size_t>(m * ldx + k)] = x[static_cast<std::size_t>(m * K + k)];
    linear(packed, matrix_view<const float>(xs.data(), M, K, ldx), matrix_view<float>(ys.data(), M, N, ldy), pool,
           path);
    index_t bad = 0, gap = 0;
    for (index_t m = 0; m < M; ++m) {
      for (index_t n = 0; n < N; ++n)
        bad += !same_float(ys[static_cast<std::size_t>(m * ldy + n)], want[static_cast<std::size_t>(m * N + n)]);
      for (index_t n = N; n < ldy; ++n) gap += ys[static_cast<std::size_t>(m * ldy + n)] != -1.0f;
    }
    CHECK(bad == 0);
    CHECK(gap == 0);
    // In place: y aliases x exactly (in == out here).
    std::vector<float> io = x;
    linear(packed, matrix_view<const float>(io.data(), M, K), matrix_view<float>(io.data(), M, N), serial_executor{},
           path);
    CHECK(count_mismatches(io, want, N) == 0);
  }
}

TEST_CASE("linear == reference at the edges of the magic exponent window and beyond: tiny and huge data") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  thread_pool_executor pool(2);
  const index_t K = 200, N = 40, M = 5;
  {
    // Activations ~2^-115 and weights ~2^-20: E ≈ −145, still inside the magic
    // window, with subnormal terms; the correction's u underflows as well.
    const auto layer = random_layer<W, Lr>(N, K, 16, true, 500, std::ldexp(0.05f, -20));
    auto x = random_matrix(M, K, std::ldexp(1.0f, -115), 501, true);
    x[3] = std::ldexp(1.0f, -149);  // the smallest subnormal in a block of its own scale
    check_all_paths<Act>(layer, x, M, "tiny (magic mode)", pool);
  }
  {
    // Activations ~2^-120 and weights ~2^-27: E ≈ −155 < −149: the reference's
    // scale product underflows to 0 for some blocks; exact mode.
    const auto layer = random_layer<W, Lr>(N, K, 16, true, 504, std::ldexp(0.05f, -27));
    const auto x = random_matrix(M, K, std::ldexp(1.0f, -120), 505, true);
    check_all_paths<Act>(layer, x, M, "tinier (exact mode)", pool);
  }
  {
    // The same beyond the window with a long reduction and several row groups:
    // exact mode inside the K-blocked loop nest.
    const auto layer = random_layer<W, Lr>(N, 4096, 16, true, 506, std::ldexp(0.05f, -27));
    const auto x = random_matrix(9, 4096, std::ldexp(1.0f, -120), 507, true);
    check_all_paths<Act>(layer, x, 9, "tinier, K=4096 M=9 (exact mode, K-blocked)", pool);
  }
  {
    // Activations ~2^100, weights ~2^15: E ≈ 105 > 104, terms up to ~2^140:
    // some outputs overflow to ±Inf (or NaN), in the reference too. A is tiny
    // so that u stays finite.
    const auto layer = random_layer<W, Lr>(N, K, 16, true, 502, std::ldexp(0.05f, 15), std::ldexp(1.0f, -110));
    const auto x = random_matrix(M, K, std::ldexp(1.0f, 100), 503, true);
    check_all_paths<Act>(layer, x, M, "huge", pool);
  }
}

TEST_CASE("linear: bad input throws and leaves y untouched") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  const index_t K = 64, N = 32, M = 3;
  const auto layer = random_layer<W, Lr>(N, K, 16, true, 600);
  const auto packed = pack<Act>(layer);
  auto x = random_matrix(M, K, 1.0f, 601);
  std::vector<float> y(static_cast<std::size_t>(M * N), 42.0f);
  const auto untouched = [&] {
    for (float v : y)
      if (v != 42.0f) return false;
    return true;
  };
  for (kernel_path path : paths_to_test()) {
    INFO("path=" << std::string(to_string(path)));
    CHECK_THROWS_AS(linear(packed, matrix_view<const float>(x.data(), M, K - 1), matrix_view<float>(y.data(), M, N),
                           serial_executor{}, path),
                    shape_error);
    CHECK_THROWS_AS(linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M - 1, N),
                           serial_executor{}, path),
                    shape_error);
    CHECK_THROWS_AS(linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M, N + 1),
                           serial_executor{}, path),
                    shape_error);
    CHECK_THROWS_AS(linear(packed, matrix_view<const float>(nullptr, M, K), matrix_view<float>(y.data(), M, N),
                           serial_executor{}, path),
                    shape_error);
    CHECK(untouched());
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      auto xb = x;
      xb[static_cast<std::size_t>(2 * K + 37)] = bad;
      try {
        linear(packed, matrix_view<const float>(xb.data(), M, K), matrix_view<float>(y.data(), M, N), serial_executor{},
               path);
        FAIL("no exception for a non-finite x");
      } catch (const value_error& e) {
        CHECK(std::string(e.what()).find("(2, 37)") != std::string::npos);
      }
      CHECK(untouched());
    }
  }
  // A finite x whose Q(x)·A overflows: value_error from the correction, y untouched.
  const auto big = random_layer<W, Lr>(N, K, 16, true, 602, 0.05f, std::ldexp(1.0f, 100));
  const auto packed_big = pack<Act>(big);
  const auto xbig = random_matrix(M, K, std::ldexp(1.0f, 60), 603);
  for (kernel_path path : paths_to_test()) {
    CHECK_THROWS_AS(linear(packed_big, matrix_view<const float>(xbig.data(), M, K), matrix_view<float>(y.data(), M, N),
                           serial_executor{}, path),
                    value_error);
    CHECK(untouched());
  }
  CHECK_THROWS_AS(
      linear(packed_layer<W, Lr, Act>{}, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M, N)),
      shape_error);
}

TEST_CASE("linear: activations whose fp16 block scale would overflow are refused, as quantize refuses them") {
  // Q8_0 activations: d = amax/127 must fit fp16 (≤ 65504), so |x| ≲ 8.3e6.
  // The reference (quantized_matrix::quantize) throws value_error; so must
  // linear(), for x and for the correction's intermediate Q(x)·A, on every
  // path, leaving y untouched.
  const index_t K = 100, N = 20, M = 3;
  const auto layer = random_layer<q4_0, q8_0>(N, K, 16, true, 650);
  const auto packed = pack<q8_0>(layer);
  auto x = random_matrix(M, K, 1.0f, 651);
  x[static_cast<std::size_t>(1 * K + 70)] = 1.0e7f;  // row 1, the block of columns 64…95
  std::vector<float> y(static_cast<std::size_t>(M * N), 42.0f), ref = y;
  CHECK_THROWS_AS(
      reference_forward<q8_0>(layer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(ref.data(), M, N)),
      value_error);
  for (kernel_path path : paths_to_test()) {
    INFO("path=" << std::string(to_string(path)));
    CHECK_THROWS_WITH_AS(
        linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M, N), serial_executor{},
               path),
        doctest::Contains("x: the block at row 1, columns 64…95 needs a scale beyond the range of int8_g32_sym_f16"),
        value_error);
    for (float v : y) CHECK(v == 42.0f);
  }
  // The last block is partial (columns 96…99): the message names the columns that exist.
  auto x_tail = random_matrix(M, K, 1.0f, 654);
  x_tail[static_cast<std::size_t>(2 * K + 98)] = -1.0e7f;
  for (kernel_path path : paths_to_test()) {
    INFO("path=" << std::string(to_string(path)));
    CHECK_THROWS_WITH_AS(linear(packed, matrix_view<const float>(x_tail.data(), M, K),
                                matrix_view<float>(y.data(), M, N), serial_executor{}, path),
                         doctest::Contains("x: the block at row 2, columns 96…99 needs a scale"), value_error);
    for (float v : y) CHECK(v == 42.0f);
  }
  // Q(x)·A beyond fp16's range with a finite, quantizable x: A's entries ~1e4.
  const auto big_a = random_layer<q4_0, q8_0>(N, K, 16, true, 652, 0.05f, /*a_sigma=*/3.0e4f);
  const auto packed_a = pack<q8_0>(big_a);
  auto xa = random_matrix(M, K, 1.0e3f, 653);
  CHECK_THROWS_AS(
      reference_forward<q8_0>(big_a, matrix_view<const float>(xa.data(), M, K), matrix_view<float>(ref.data(), M, N)),
      value_error);
  for (kernel_path path : paths_to_test()) {
    INFO("path=" << std::string(to_string(path)));
    CHECK_THROWS_WITH_AS(linear(packed_a, matrix_view<const float>(xa.data(), M, K), matrix_view<float>(y.data(), M, N),
                                serial_executor{}, path),
                         doctest::Contains("the correction's intermediate Q(x)·A: the block at row"), value_error);
    for (float v : y) CHECK(v == 42.0f);
  }
}

TEST_CASE("linear: forcing a path") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  const auto layer = random_layer<W, Lr>(20, 48, 0, false, 700);
  const auto packed = pack(layer);
  const auto x = random_matrix(2, 48, 1.0f, 701);
  std::vector<float> y(40, 0.0f);
  for (kernel_path p : {kernel_path::generic, kernel_path::avx2, kernel_path::avx_vnni, kernel_path::avx512_vnni,
                        kernel_path::neon_dotprod}) {
    INFO("path=" << std::string(to_string(p)));
    if (is_usable(p))
      CHECK_NOTHROW(linear(packed, matrix_view<const float>(x.data(), 2, 48), matrix_view<float>(y.data(), 2, 20),
                           serial_executor{}, p));
    else
      CHECK_THROWS_AS(linear(packed, matrix_view<const float>(x.data(), 2, 48), matrix_view<float>(y.data(), 2, 20),
                             serial_executor{}, p),
                      unsupported_error);
  }
  // The workspace overload gives the same bits as the thread-local one.
  linear_workspace ws;
  std::vector<float> y2(40, 0.0f);
  linear(packed, matrix_view<const float>(x.data(), 2, 48), matrix_view<float>(y.data(), 2, 20));
  linear(packed, matrix_view<const float>(x.data(), 2, 48), matrix_view<float>(y2.data(), 2, 20), ws);
  CHECK(count_mismatches(y2, y, 20) == 0);
  CHECK(ws.bytes() > 0);
}

// ---------------------------------------------------------------------------
// Re-entrancy (issue #19): an executor whose waiting thread helps with other
// queued work — work stealing, as TBB and many engine pools do — can start a
// second linear() on the same thread in the middle of the first. With one
// thread_local workspace the inner call overwrote (same size) or freed (larger:
// heap-use-after-free under ASan) the outer call's activation panels.

namespace {

/// Runs tasks one at a time on the calling thread and, after the first task of
/// the first parallel_for, runs `foreign` once: work it "stole" while waiting.
struct helping_executor {
  std::function<void()> foreign;
  template <class F>
  void parallel_for(index_t n, F&& fn) {
    for (index_t i = 0; i < n; ++i) {
      fn(i, i + 1);
      if (i == 0 && foreign) std::exchange(foreign, nullptr)();
    }
  }
};

}  // namespace

TEST_CASE("linear: a nested call on the same thread (helping executor) leaves the outer call's result intact") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  const auto outer = random_layer<W, Lr>(64, 256, 32, true, 900);
  const auto packed_outer = pack<Act>(outer);
  const index_t M = 8, K = 256, N = 64;
  const auto x = random_matrix(M, K, 1.0f, 901, true);
  std::vector<float> want(static_cast<std::size_t>(M * N));
  reference_forward<Act>(outer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(want.data(), M, N),
                         correction_mode::fused);
  // Inner calls: the same shape with other data (overwrites the outer panel in
  // place), and a larger one (reallocates it).
  for (index_t inner_k : {K, index_t{4096}}) {
    const auto inner = random_layer<W, Lr>(32, inner_k, 32, false, 902 + static_cast<std::uint32_t>(inner_k));
    const auto packed_inner = pack<Act>(inner);
    const index_t Mi = 16;
    const auto xi = random_matrix(Mi, inner_k, 3.0f, 903, true);
    std::vector<float> want_i(static_cast<std::size_t>(Mi * 32)), got_i(want_i.size());
    reference_forward<Act>(inner, matrix_view<const float>(xi.data(), Mi, inner_k),
                           matrix_view<float>(want_i.data(), Mi, 32), correction_mode::fused);
    for (kernel_path path : paths_to_test()) {
      INFO("inner K=" << inner_k << " path=" << std::string(to_string(path)));
      helping_executor exec;
      exec.foreign = [&] {
        linear(packed_inner, matrix_view<const float>(xi.data(), Mi, inner_k), matrix_view<float>(got_i.data(), Mi, 32),
               serial_executor{}, path);
      };
      std::vector<float> got(want.size(), -1.0f);
      linear(packed_outer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(got.data(), M, N), exec, path);
      CHECK(exec.foreign == nullptr);  // the nested call did run
      CHECK(count_mismatches(got, want, N) == 0);
      CHECK(count_mismatches(got_i, want_i, 32) == 0);
    }
  }
}

TEST_CASE("linear: one explicit workspace in two calls at once is refused with usage_error") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  const auto layer = random_layer<W, Lr>(64, 256, 32, true, 910);
  const auto packed = pack<Act>(layer);
  const index_t M = 8, K = 256, N = 64;
  const auto x = random_matrix(M, K, 1.0f, 911, true);
  std::vector<float> y(static_cast<std::size_t>(M * N)), y2(y.size());
  linear_workspace ws;
  helping_executor exec;
  exec.foreign = [&] {
    linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y2.data(), M, N), ws);
  };
  CHECK_THROWS_AS(
      linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M, N), ws, exec),
      usage_error);
  // The claim is released on the way out: the workspace serves the next call.
  CHECK_NOTHROW(linear(packed, matrix_view<const float>(x.data(), M, K), matrix_view<float>(y.data(), M, N), ws));
}
