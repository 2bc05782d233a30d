// pack(): the n16c4 stream holds exactly the layer's codes (plus offset),
// scales (neutral for all-zero blocks), bias and zero padding, at the offsets
// the packed_layer reports; copies are deep.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "kernel_test_util.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/kernel/arch/generic.hpp"
#include "lqer/kernel/pack.hpp"

using namespace lqer;
using namespace lqer::detail;
using namespace lqer_test;

namespace {

template <code_kind K, class F>
void check_operand(const quantized_matrix<F>& q, const std::uint8_t* base, index_t gstride, index_t groups,
                   index_t nblk) {
  constexpr int B = F::kBlock;
  index_t bad_codes = 0, bad_scales = 0, bad_zeros = 0;
  for (index_t g = 0; g < groups; ++g)
    for (index_t b = 0; b < nblk; ++b) {
      const std::uint8_t* blk = base + g * gstride + b * group_block_bytes(K, B, kRecordKindOf<F>);
      for (int j = 0; j < 16; ++j) {
        const index_t lane = 16 * g + j;
        bool any = false;
        for (int kk = 0; kk < B; ++kk) {
          const int want = lane < q.lanes() ? q.lane_code(lane, b * B + kk) : 0;
          any |= want != 0;
          bad_codes += unpack_code<K>(blk, j, kk) != want;
        }
        const std::uint8_t* rec = layout_n16c4::scale_record<K, F::kScaleKind>(blk, B, j);
        if constexpr (F::kScaleKind == scale_kind::e8m0_pow2) {
          const std::uint8_t want_scale = any ? q.lane_scales(lane)[static_cast<std::size_t>(b)].bits : 127;
          bad_scales += *rec != want_scale;
        } else {
          // Real scales as the format stores them, unchanged (+0 for padding outputs).
          typename F::stored_scale want{}, got{};
          if (lane < q.lanes()) want = F::store_scale(q.lane_scales(lane)[static_cast<std::size_t>(b)]);
          std::memcpy(&got, rec, sizeof got);
          bad_scales += std::memcmp(&got, &want, sizeof got) != 0;
        }
        if constexpr (F::kHasZeroPoint) {
          // zk = zero + the stored offset; padding outputs: the offset (zero point 0).
          const int zero = lane < q.lanes() ? F::store_zero(q.lane_scales(lane)[static_cast<std::size_t>(b)]) : 0;
          bad_zeros += layout_n16c4::zero_records<K, F::kScaleKind>(blk, B)[j] != zero + stored_offset(K);
        }
      }
    }
  CHECK(bad_codes == 0);
  CHECK(bad_scales == 0);
  CHECK(bad_zeros == 0);
}

/// The bias record of every group: the layer's bias, then zeros for padding outputs.
template <class P>
void check_bias(const P& p, const std::vector<float>& bias) {
  const index_t n_out = static_cast<index_t>(bias.size());
  index_t bad = 0;
  for (index_t n = 0; n < 16 * p.groups(); ++n) {
    float b;
    std::memcpy(&b, p.stream() + (n / 16) * p.group_stride() + p.bias_offset() + (n % 16) * 4, 4);
    bad += b != (n < n_out ? bias[static_cast<std::size_t>(n)] : 0.0f);
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("pack: n16c4 stream contents, padding and offsets") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  const index_t N = 37, K = 70, R = 20;  // tails in every dimension
  auto layer = random_layer<W, Lr>(N, K, R, true, 11);
  // An all-zero block (row 3, block 1) must get the neutral scale byte 127.
  auto w = random_matrix(N, K, 0.05f, 12);
  for (index_t k = 16; k < 32; ++k) w[static_cast<std::size_t>(3 * K + k)] = 0.0f;
  layer.wq = quantized_matrix<W>::quantize(matrix_view<const float>(w.data(), N, K), block_axis::cols);
  const auto p = pack(layer);
  CHECK(p.in_features() == K);
  CHECK(p.out_features() == N);
  CHECK(p.rank() == R);
  CHECK(p.groups() == 3);
  CHECK(p.weight_blocks() == 5);
  CHECK(p.lowrank_blocks() == 2);
  CHECK(p.group_stride() % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(p.stream()) % 64 == 0);
  check_operand<code_kind::nibble>(layer.wq, p.stream(), p.group_stride(), p.groups(), p.weight_blocks());
  check_operand<code_kind::byte>(layer.b, p.stream() + p.correction_offset(), p.group_stride(), p.groups(),
                                 p.lowrank_blocks());
  check_operand<code_kind::byte>(layer.a, p.a_stream(), p.a_group_stride(), p.a_groups(), p.weight_blocks());
  check_bias(p, layer.bias);
  // Exponent ranges hold the non-zero blocks' exponents and 0.
  CHECK(p.weight_exponent_range().lo <= 0);
  CHECK(p.weight_exponent_range().hi >= 0);
  CHECK(p.weight_exponent_range().lo == [&] {
    int lo = 0;
    for (index_t r = 0; r < N; ++r)
      for (auto s : layer.wq.lane_scales(r)) lo = std::min(lo, s.exponent() == -127 ? 0 : s.exponent());
    return lo;
  }());
  // Deep copy.
  auto c = p;
  CHECK(c.stream() != p.stream());
  CHECK(std::memcmp(c.stream(), p.stream(), static_cast<std::size_t>(p.groups() * p.group_stride())) == 0);
  CHECK(c.stream_bytes() == p.stream_bytes());
}

TEST_CASE("pack: 8-bit weights, no correction, no bias") {
  using W = mxint<8, 32, mx_rule::ocp>;
  using Lr = mxint<8, 32, mx_rule::ocp>;
  const auto layer = random_layer<W, Lr>(16, 64, 0, false, 21);
  const auto p = pack<mxint8_ocp<32>>(layer);
  CHECK(p.rank() == 0);
  CHECK(!p.has_bias());
  CHECK(p.a_stream() == nullptr);
  CHECK(p.group_stride() == (2 * (16 * 32 + 16) + 63) / 64 * 64);  // rounded up to a 64-byte line
  check_operand<code_kind::byte>(layer.wq, p.stream(), p.group_stride(), p.groups(), p.weight_blocks());
}

TEST_CASE("pack: every code width the stream takes, block 16 and 32") {
  // Nibble weights (4- and 3-bit codes), 4-bit A/B widened to the byte
  // stream, byte weights; every code value appears (random codes cover the
  // range), tails in every dimension.
  const auto check = []<class W, class Lr>() {
    const auto layer = random_layer<W, Lr>(35, 3 * W::kBlock + 5, 19, false, 31);
    const auto p = pack<mxint<8, W::kBlock, W::kRule>>(layer);
    check_operand<std::remove_cvref_t<decltype(p)>::kWeightKind>(layer.wq, p.stream(), p.group_stride(), p.groups(),
                                                                 p.weight_blocks());
    check_operand<code_kind::byte>(layer.b, p.stream() + p.correction_offset(), p.group_stride(), p.groups(),
                                   p.lowrank_blocks());
    check_operand<code_kind::byte>(layer.a, p.a_stream(), p.a_group_stride(), p.a_groups(), p.weight_blocks());
  };
  SUBCASE("mxint4 / mxint4 b16") { check.operator()<mxint<4, 16, mx_rule::lqer>, mxint<4, 16, mx_rule::lqer>>(); }
  SUBCASE("mxint3 / mxint8 b16") { check.operator()<mxint<3, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>>(); }
  SUBCASE("mxint4 / mxint4 b32") { check.operator()<mxint<4, 32, mx_rule::ocp>, mxint<4, 32, mx_rule::ocp>>(); }
  SUBCASE("mxint8 / mxint4 b32") { check.operator()<mxint<8, 32, mx_rule::lqer>, mxint<4, 32, mx_rule::lqer>>(); }
}

TEST_CASE("pack: real-scale formats (Q4_0, Q8_0, INT4 fp32) keep their codes and stored scales") {
  const auto check = []<class W, class Lr, class Act>() {
    const auto layer = random_layer<W, Lr>(35, 3 * W::kBlock + 5, 19, true, 41);
    const auto p = pack<Act>(layer);
    using P = std::remove_cvref_t<decltype(p)>;
    CHECK(P::kRealScales);
    CHECK(p.group_stride() % 64 == 0);
    check_operand<P::kWeightKind>(layer.wq, p.stream(), p.group_stride(), p.groups(), p.weight_blocks());
    check_operand<code_kind::byte>(layer.b, p.stream() + p.correction_offset(), p.group_stride(), p.groups(),
                                   p.lowrank_blocks());
    check_operand<code_kind::byte>(layer.a, p.a_stream(), p.a_group_stride(), p.a_groups(), p.weight_blocks());
    check_bias(p, layer.bias);
  };
  SUBCASE("q4_0 / q8_0") { check.operator()<q4_0, q8_0, q8_0>(); }
  SUBCASE("int4 g64 fp32 / mxint8") {
    check.operator()<intq<4, 64, int_scheme::symmetric, scale_dtype::f32>, mxint<8, 64, mx_rule::lqer>,
                     mxint<8, 64, mx_rule::lqer>>();
  }
  SUBCASE("mxint4 / q8_0 factors (4-bit codes widened under real-scale factors)") {
    check.operator()<mxint4_ocp<32>, q8_0, mxint8_ocp<32>>();
  }
  SUBCASE("int4 g128 asymmetric (GPTQ/AWQ) / int4 g128 asymmetric factors (zero points, widened to bytes)") {
    using A4 = intq<4, 128, int_scheme::asymmetric, scale_dtype::f32>;
    check.operator()<int4_g128_asym, A4, intq<8, 128>>();
  }
  SUBCASE("int2 g16 asymmetric / q8_0-style factors") {
    using A8 = intq<8, 16, int_scheme::symmetric, scale_dtype::f16>;
    check.operator()<intq<2, 16, int_scheme::asymmetric, scale_dtype::f16>, A8, A8>();
  }
  // Not every MX layer is real: only a real scale somewhere makes it so.
  CHECK_FALSE(packed_layer<mxint4_ocp<32>, mxint8_ocp<32>, mxint8_ocp<32>>::kRealScales);
  // Formats without a fused kernel are a compile-time error (pack.hpp's
  // static_assert); kernel_supports_formats says which, in a constant.
  CHECK(kernel_supports_formats<int4_g128_asym, intq<8, 128>, intq<8, 128>>);       // weight zero points
  CHECK(kernel_supports_formats<intq<8, 32, int_scheme::asymmetric>, q8_0, q8_0>);  // 8-bit zero points: −128 too
  CHECK(kernel_supports_formats<q4_0, intq<8, 32, int_scheme::asymmetric>, q8_0>);  // … on A and B as well
  CHECK_FALSE(kernel_supports_formats<intq<8, 32, int_scheme::signed_extreme>, q8_0, q8_0>);  // −128 without a zero
  CHECK_FALSE(kernel_supports_formats<intq<4, 32>, q8_0, intq<4, 32, int_scheme::asymmetric>>);      // act zero
  CHECK_FALSE(kernel_supports_formats<intq<4, 32>, q8_0, intq<8, 32, int_scheme::signed_extreme>>);  // act −128
  CHECK_FALSE(kernel_supports_formats<intq<8, kPerRow>, q8_0, q8_0>);  // one scale per row
  CHECK(kernel_supports_formats<q4_1, q8_0, q8_0>);                    // a block minimum (Q4_1) on the weights
  CHECK(kernel_supports_formats<q4_0, q4_1, q8_0>);                    // … and on A and B (4-bit, widened to bytes)
  CHECK_FALSE(kernel_supports_formats<q4_0, q8_0, q4_1>);              // but not on the activations
}

TEST_CASE("pack: invalid layers are rejected") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  auto layer = random_layer<W, Lr>(16, 32, 8, true, 31);
  layer.bias.pop_back();
  CHECK_THROWS_AS(pack(layer), shape_error);
  lqer_layer<W, Lr> empty;
  CHECK_THROWS_AS(pack(empty), shape_error);
}
