// layout_n16c4: the byte sizes and offsets it owns, against numbers worked out
// by hand from the stream's description (kernel/layout.hpp), and one group
// packed and read back through code_at, tails included.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/layout.hpp"

using namespace lqer;
using namespace lqer::detail;
using L = layout_n16c4;

TEST_CASE("layout: block records and group offsets") {
  // Block 16: nibbles 16 outputs × 16 k / 2 = 128 code bytes, bytes 256; + 16 scale bytes.
  CHECK(L::code_bytes(code_kind::nibble, 16) == 128);
  CHECK(L::block_bytes(code_kind::nibble, 16) == 144);
  CHECK(L::block_bytes(code_kind::byte, 16) == 272);
  CHECK(L::block_bytes(code_kind::byte, 32) == 528);
  CHECK(L::groups(1) == 1);
  CHECK(L::groups(16) == 1);
  CHECK(L::groups(17) == 2);
  // in = 70 (5 blocks of 16), rank 20 (2 blocks), bias: 5·144 = 720, + 2·272 =
  // 1264, + 64 bias bytes = 1328 → 1344 (next multiple of 64).
  constexpr auto kE8 = scale_kind::e8m0_pow2;
  const auto o = L::main_group(code_kind::nibble, kE8, kE8, 16, 5, 2, true);
  CHECK(o.correction == 720);
  CHECK(o.bias == 1264);
  CHECK(o.stride == 1344);
  CHECK(L::main_group(code_kind::nibble, kE8, kE8, 16, 5, 2, false).stride == 1280);
  CHECK(L::a_group_stride(16, 5) == 1408);  // 5·272 = 1360 → 1408
  // Real scales: 16 fp16 records (32 bytes) or fp32 (64) per block. Q4_0,
  // block 32: 256 code bytes + 32 = 288 = 16 outputs × ggml's 18-byte block.
  CHECK(L::block_bytes(code_kind::nibble, 32, scale_kind::f16) == 288);
  CHECK(L::block_bytes(code_kind::byte, 32, scale_kind::f16) == 544);
  CHECK(L::block_bytes(code_kind::nibble, 128, scale_kind::f32) == 1088);
  // in = 100 (4 blocks of 32) Q4_0, rank 40 (2 blocks) Q8_0, no bias:
  // 4·288 = 1152, + 2·544 = 2240 → 2240 (a multiple of 64).
  const auto q = L::main_group(code_kind::nibble, scale_kind::f16, scale_kind::f16, 32, 4, 2, false);
  CHECK(q.correction == 1152);
  CHECK(q.bias == 2240);
  CHECK(q.stride == 2240);
  CHECK(L::a_group_stride(32, 4, scale_kind::f32) == 4 * (512 + 64));
}

TEST_CASE("layout: Q4_0 codes (-8 … 7) and fp16 scales read back — padding lanes have zero codes and +0 scales") {
  const index_t lanes = 13, K = 70;  // 13 of 16 lanes, 3 blocks of 32 with a tail of 6
  auto w = lqer_test::random_matrix(lanes, K, 1.0f, 4);
  const auto q = quantized_matrix<q4_0>::quantize(matrix_view<const float>(w.data(), lanes, K), block_axis::cols);
  const index_t nblk = 3;
  constexpr index_t kBlk = L::block_bytes(code_kind::nibble, 32, scale_kind::f16);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(nblk * kBlk));
  exponent_range range;
  CHECK(L::pack_group<code_kind::nibble>(q, 0, nblk, out.data(), range) == static_cast<index_t>(out.size()));
  index_t bad = 0, minus8 = 0;
  for (index_t b = 0; b < nblk; ++b) {
    const std::uint8_t* blk = out.data() + b * kBlk;
    for (int j = 0; j < L::kGroup; ++j) {
      for (int kk = 0; kk < 32; ++kk) {
        const index_t k = b * 32 + kk;
        const int want = j < lanes && k < K ? q.lane_code(j, k) : 0;
        bad += L::code_at<code_kind::nibble>(blk, j, kk) != want;
        minus8 += want == -8;
      }
      half_bits h;
      std::memcpy(&h.bits, L::scale_record<code_kind::nibble, scale_kind::f16>(blk, 32, j), 2);
      const half_bits want = j < lanes ? q4_0::store_scale(q.lane_scales(j)[b]) : half_bits{0};
      bad += h.bits != want.bits;
    }
  }
  CHECK(bad == 0);
  CHECK(minus8 > 0);  // Q4_0's extreme element maps to -8: the nibble offset 8 covers it
}

TEST_CASE("layout: pack_group then code_at reads every code back — missing lanes are zero codes") {
  using F = mxint<4, 16, mx_rule::lqer>;
  const index_t lanes = 11, K = 40;  // 11 of 16 lanes, 3 blocks with a tail of 8
  const auto w = lqer_test::random_matrix(lanes, K, 1.0f, 3);
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(w.data(), lanes, K), block_axis::cols);
  const index_t nblk = 3;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(nblk * L::block_bytes(code_kind::nibble, 16)));
  exponent_range range;
  CHECK(L::pack_group<code_kind::nibble>(q, 0, nblk, out.data(), range) == static_cast<index_t>(out.size()));
  index_t bad = 0;
  for (index_t b = 0; b < nblk; ++b) {
    const std::uint8_t* blk = out.data() + b * L::block_bytes(code_kind::nibble, 16);
    for (int j = 0; j < L::kGroup; ++j)
      for (int kk = 0; kk < 16; ++kk) {
        const index_t k = b * 16 + kk;
        const int want = j < lanes && k < K ? q.lane_code(j, k) : 0;
        bad += L::code_at<code_kind::nibble>(blk, j, kk) != want;
      }
  }
  CHECK(bad == 0);
  CHECK(range.lo <= 0);
  CHECK(range.hi >= 0);
}
