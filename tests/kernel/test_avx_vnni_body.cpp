// The AVX-VNNI path's code on a CPU without AVX-VNNI: x86_ymm.inl compiled
// with LQER_YMM_DOT = 2 uses the EVEX encoding of the same ymm vpdpbusd
// (AVX-512 VL + VNNI), so everything but the instruction encoding of the
// avx_vnni path — tiles, offsets, scales, prologue — runs and is checked
// against the reference here whenever the CPU has AVX-512 VNNI.
#include <doctest/doctest.h>

#include <string>
#include <tuple>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/exec/thread_pool.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/layer/reference_forward.hpp"

#if defined(__x86_64__)
namespace lqer::detail::test_evex_ymm {
#define LQER_YMM_TARGET "avx2,fma,f16c,avx512f,avx512vl,avx512vnni"
#define LQER_YMM_DOT 2
#define LQER_YMM_PATH kernel_path::avx_vnni
#include "lqer/kernel/arch/x86_ymm.inl"
#undef LQER_YMM_TARGET
#undef LQER_YMM_DOT
#undef LQER_YMM_PATH
}  // namespace lqer::detail::test_evex_ymm

using namespace lqer;
using namespace lqer_test;
using lqer::detail::act_panel_layout;

namespace {
template <class Act, class W, class Lr>
void check(const lqer_layer<W, Lr>& layer, index_t M, std::uint32_t seed, thread_pool_executor& pool,
           float x_sigma = 1.0f) {
  using Isa = detail::test_evex_ymm::isa;
  const index_t K = layer.in_features(), N = layer.out_features();
  const auto x = random_matrix(M, K, x_sigma, seed, true);
  std::vector<float> want(static_cast<std::size_t>(M * N)), got(want.size()), got2(want.size());
  reference_forward<Act>(layer, matrix_view<const float>(x.data(), M, K), matrix_view<float>(want.data(), M, N));
  const auto packed = pack<Act>(layer);
  linear_workspace ws;
  serial_executor serial;
  detail::linear_driver::run<Isa>(packed, matrix_view<const float>(x.data(), M, K),
                                  matrix_view<float>(got.data(), M, N), ws, serial);
  detail::linear_driver::run<Isa>(packed, matrix_view<const float>(x.data(), M, K),
                                  matrix_view<float>(got2.data(), M, N), ws, pool);
  std::string first;
  INFO("M=" << M << " K=" << K << " N=" << N << " rank=" << layer.rank());
  CHECK(count_mismatches(got, want, N, &first) == 0);
  INFO(first);
  CHECK(count_mismatches(got2, want, N) == 0);
}
}  // namespace

TEST_CASE("avx_vnni body (EVEX ymm encoding) == reference_forward(fused)") {
  if (!is_usable(kernel_path::avx512_vnni)) {
    MESSAGE("SKIPPED: this CPU has neither AVX-VNNI nor AVX-512 VNNI to run the avx_vnni body on");
    return;
  }
  thread_pool_executor pool(2);
  std::uint32_t seed = 9000;
  using W4 = mxint<4, 16, mx_rule::lqer>;
  using W8 = mxint<8, 16, mx_rule::lqer>;
  using Act = mxint<8, 16, mx_rule::lqer>;
  for (index_t rank : {0, 32})
    for (index_t K : {16, 100, 4096})
      for (index_t N : {1, 13, 64, 300}) {
        const auto layer = random_layer<W4, W8>(N, K, rank, N % 2 == 1, seed++);
        for (index_t M : {1, 2, 3, 5, 8, 17}) check<Act>(layer, M, seed++, pool);
      }
  for (index_t rank : {0, 32}) check<Act>(random_layer<W8, W8>(70, 300, rank, true, 9500 + rank), 5, 9600 + rank, pool);
  using Wo = mxint4_ocp<32>;
  using Lo = mxint8_ocp<32>;
  check<Lo>(random_layer<Wo, Lo>(50, 200, 40, true, 9700), 6, 9701, pool);
  // Real scales (scale_mode::real): Q4_0 × Q8_0 with a Q8_0 correction, INT8
  // group-32 fp32 weights under MXINT8 activations, MXINT4 under Q8_0.
  for (index_t rank : {0, 32})
    for (index_t M : {1, 2, 5}) {
      check<q8_0>(random_layer<q4_0, q8_0>(45, 300, rank, true, 9900 + rank + M), M, 9910 + M, pool);
      using I8 = intq<8, 32, int_scheme::symmetric, scale_dtype::f32>;
      check<mxint8_ocp<32>>(random_layer<I8, I8>(33, 100, rank, false, 9920 + rank + M), M, 9930 + M, pool);
      check<q8_0>(random_layer<Wo, Lo>(20, 4096, rank, true, 9940 + rank + M), M, 9950 + M, pool);
    }
  // Outside the fast exponent window (exact scale mode).
  check<Act>(random_layer<W4, W8>(40, 200, 16, true, 9800, std::ldexp(0.05f, -20)), 3, 9801, pool,
             std::ldexp(1.0f, -115));
}

TEST_CASE("avx_vnni body prologue == scalar prologue") {
  if (!is_usable(kernel_path::avx512_vnni)) return;
  using Act = mxint<8, 16, mx_rule::ocp>;
  const index_t rows = 3, cols = 1000;
  auto x = random_matrix(rows, cols, 1.0f, 77, true);
  for (index_t i = 0; i < 200; ++i) x[static_cast<std::size_t>(i)] = std::ldexp(x[static_cast<std::size_t>(i)], -135);
  const act_panel_layout lay{rows, 2, 16, (cols + 15) / 16, 1};
  std::vector<std::uint8_t> p1(static_cast<std::size_t>(lay.bytes())), p2 = p1;
  std::vector<detail::row_status> s1(rows), s2(rows);
  const detail::act_consumer k[1] = {{128, 7}};
  detail::quantize_rows_scalar<Act>(x.data(), cols, cols, 0, rows, lay, p1.data(), k, s1.data());
  detail::test_evex_ymm::isa::quantize_rows<Act>(x.data(), cols, cols, 0, rows, lay, p2.data(), k, s2.data());
  CHECK(p1 == p2);  // codes and records, byte for byte
}
#endif
