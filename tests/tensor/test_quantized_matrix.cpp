// quantized_matrix<Format>: layout (tails, nibble order, byte codes, per-row
// groups), the two blocking axes, strided views, storage accounting, Eigen
// interop and every bad input the container rejects.
//
// The reference for "what a block should hold" is always the format's own
// quantize_block on that block's elements: the container's job is only to cut
// lanes into blocks, pack the codes and keep the scales, so each check below
// compares it against the format applied by hand.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "lqer/exec/executor.hpp"
#include "lqer/exec/thread_pool.hpp"
#include "lqer/format/ggml_blocks.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/tensor/eigen.hpp"
#include "lqer/tensor/quantized_matrix.hpp"
#include "lqer/tensor/view.hpp"

using namespace lqer;

namespace {

// Format types with commas in their template arguments, named for the test
// case lists below.
using mx4_ocp_b16 = mxint<4, 16, mx_rule::ocp>;
using mx4_ocp_b32 = mxint<4, 32, mx_rule::ocp>;
using mx4_lqer_b16 = mxint<4, 16, mx_rule::lqer>;
using mx8_ocp_b32 = mxint<8, 32, mx_rule::ocp>;
using mx8_lqer_b16 = mxint<8, 16, mx_rule::lqer>;
using mx8_lqer_b32 = mxint<8, 32, mx_rule::lqer>;
using int4_g32_asym_f32 = intq<4, 32, int_scheme::asymmetric, scale_dtype::f32>;
using int4_row_sym_f32 = intq<4, kPerRow, int_scheme::symmetric, scale_dtype::f32>;
using int4_row_asym_f16 = intq<4, kPerRow, int_scheme::asymmetric, scale_dtype::f16>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_matrix(index_t rows, index_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = n(rng);
  return v;
}

std::vector<float> transpose(const std::vector<float>& a, index_t rows, index_t cols) {
  std::vector<float> t(a.size());
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) t[static_cast<std::size_t>(c * rows + r)] = a[static_cast<std::size_t>(r * cols + c)];
  return t;
}

/// Checks every block of a block_axis::cols matrix against Format::quantize_block
/// applied by hand to that block's elements: codes, scale and decoded values.
template <class F>
void check_blocks_by_hand(const quantized_matrix<F>& q, const std::vector<float>& a, index_t rows, index_t cols) {
  const index_t bl = q.block_len();
  std::vector<std::int8_t> codes(static_cast<std::size_t>(bl));
  for (index_t r = 0; r < rows; ++r)
    for (index_t b = 0; b < q.blocks_per_lane(); ++b) {
      const index_t start = b * bl;
      const index_t n = std::min(bl, cols - start);
      const auto s = F::quantize_block(a.data() + r * cols + start, n, 1, codes.data());
      CHECK(q.lane_scales(r)[static_cast<std::size_t>(b)] == s);
      for (index_t i = 0; i < n; ++i) {
        CHECK(q.lane_code(r, start + i) == codes[static_cast<std::size_t>(i)]);
        CHECK(q.value(r, start + i) == F::decode(codes[static_cast<std::size_t>(i)], s));
      }
    }
}

}  // namespace

// ---------------------------------------------------------------------------
// Layout

TEST_CASE("tails: the last block holds only the logical elements, padding codes are zero and never decoded") {
  using F = mxint<4, 32, mx_rule::ocp>;
  constexpr index_t rows = 3, cols = 45;  // 32 + 13: the second block is a tail
  const auto a = random_matrix(rows, cols, 1);
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), rows, cols));
  CHECK(q.blocks_per_lane() == 2);
  CHECK(q.block_len() == 32);
  CHECK(q.lane_code_bytes() == 32);  // 64 nibble slots
  // The tail block's scale comes from its 13 elements only (padding is not
  // zeros pulling amax down, nor data from the next row).
  check_blocks_by_hand(q, a, rows, cols);
  for (index_t r = 0; r < rows; ++r)
    for (index_t i = cols; i < 64; ++i) CHECK(q.lane_code(r, i) == 0);

  // Dequantizing into a strided destination writes the 45 logical columns of
  // each row and nothing in the gap after them.
  constexpr index_t stride = 50;
  constexpr float kSentinel = -12345.0f;
  std::vector<float> dst(static_cast<std::size_t>(rows * stride), kSentinel);
  q.dequantize(matrix_view<float>(dst.data(), rows, cols, stride));
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) CHECK(dst[static_cast<std::size_t>(r * stride + c)] == q.value(r, c));
    for (index_t c = cols; c < stride; ++c) CHECK(dst[static_cast<std::size_t>(r * stride + c)] == kSentinel);
  }
}

TEST_CASE("a matrix narrower than one block is one tail block") {
  using F = mxint<8, 32, mx_rule::lqer>;
  const std::vector<float> a = {0.5f, -3.0f, 1.25f};
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), 1, 3));
  CHECK(q.blocks_per_lane() == 1);
  CHECK(q.lane_code_bytes() == 32);
  check_blocks_by_hand(q, a, 1, 3);
  for (index_t i = 3; i < 32; ++i) CHECK(q.lane_code(0, i) == 0);
}

TEST_CASE_TEMPLATE("block_axis::rows equals quantizing the transpose with block_axis::cols", F,
                   mx4_ocp_b16, mx4_lqer_b16, mx8_lqer_b32, q4_0, q8_0, int8_per_row,
                   int4_g128_asym, int4_g32_asym_f32) {
  constexpr index_t rows = 37, cols = 50;  // tails both ways
  const auto a = random_matrix(rows, cols, 2);
  const auto at = transpose(a, rows, cols);
  const auto qr = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), rows, cols), block_axis::rows);
  const auto qt = quantized_matrix<F>::quantize(matrix_view<const float>(at.data(), cols, rows), block_axis::cols);
  CHECK(qr.axis() == block_axis::rows);
  CHECK(qr.lanes() == cols);
  CHECK(qr.depth() == rows);
  CHECK(qr.blocks_per_lane() == qt.blocks_per_lane());
  CHECK(qr.storage_bytes() == qt.storage_bytes());
  for (index_t lane = 0; lane < cols; ++lane) {
    const auto cr = qr.lane_codes(lane), ct = qt.lane_codes(lane);
    CHECK(std::equal(cr.begin(), cr.end(), ct.begin(), ct.end()));
    const auto sr = qr.lane_scales(lane), st = qt.lane_scales(lane);
    CHECK(std::equal(sr.begin(), sr.end(), st.begin(), st.end()));
  }
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      CHECK(qr.code(r, c) == qt.code(c, r));
      CHECK(qr.value(r, c) == qt.value(c, r));
    }
}

TEST_CASE("nibble packing: element 2j in the low nibble, 2j+1 in the high nibble, two's complement") {
  // OCP mxint4: amax 1.5 -> e = 0, two fraction bits, q = round(4x) within ±7.
  using F = mxint<4, 8, mx_rule::ocp>;
  const std::vector<float> a = {1.0f, -1.0f, 0.5f, 1.5f, -0.25f, 0.0f, -1.5f};  // 7: odd, one padding slot
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), 1, 7));
  const auto bytes = q.lane_codes(0);
  REQUIRE(bytes.size() == 4);
  CHECK(bytes[0] == 0xC4);  // q0 = 4 (low), q1 = -4 = 0xC (high)
  CHECK(bytes[1] == 0x62);  // q2 = 2, q3 = 6
  CHECK(bytes[2] == 0x0F);  // q4 = -1 = 0xF, q5 = 0
  CHECK(bytes[3] == 0x0A);  // q6 = -6 = 0xA, padding slot 7 = 0
  CHECK(q.lane_code(0, 1) == -4);
  CHECK(q.lane_code(0, 6) == -6);
  CHECK(q.value(0, 6) == -1.5f);
}

TEST_CASE_TEMPLATE("quantize on an executor is bit-identical to the serial encoder", F, mx4_lqer_b16, mx8_ocp_b32, q4_0,
                   int8_per_row, int4_g32_asym_f32) {
  // Each lane is one task's and owns its codes and scales: any split of the
  // lanes over threads must give the same bytes. 2 threads, tails both ways,
  // both axes; also a serial executor and a pool wider than the work.
  constexpr index_t rows = 67, cols = 83;
  const auto a = random_matrix(rows, cols, 11);
  const matrix_view<const float> v(a.data(), rows, cols);
  thread_pool_executor pool2(2), pool8(8);
  for (const block_axis axis : {block_axis::cols, block_axis::rows}) {
    const auto serial = quantized_matrix<F>::quantize(v, axis);
    const auto check_same = [&](const quantized_matrix<F>& q) {
      REQUIRE(q.lanes() == serial.lanes());
      for (index_t lane = 0; lane < q.lanes(); ++lane) {
        const auto c = q.lane_codes(lane), cs = serial.lane_codes(lane);
        CHECK(std::equal(c.begin(), c.end(), cs.begin(), cs.end()));
        const auto s = q.lane_scales(lane), ss = serial.lane_scales(lane);
        CHECK(std::equal(s.begin(), s.end(), ss.begin(), ss.end()));
      }
    };
    check_same(quantized_matrix<F>::quantize(v, axis, pool2));
    check_same(quantized_matrix<F>::quantize(v, axis, pool8));
    check_same(quantized_matrix<F>::quantize(v, axis, serial_executor{}));
  }
  // Bad input is refused before any task runs.
  auto bad = a;
  bad[static_cast<std::size_t>(5 * cols + 7)] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS((void)quantized_matrix<F>::quantize(matrix_view<const float>(bad.data(), rows, cols),
                                                      block_axis::cols, pool2),
                  value_error);
}

TEST_CASE("2- and 3-bit codes also take a nibble each") {
  const auto a = random_matrix(2, 32, 3);
  const auto q2 = quantized_matrix<mxint<2, 16, mx_rule::lqer>>::quantize(matrix_view<const float>(a.data(), 2, 32));
  const auto q3 = quantized_matrix<mxint<3, 16, mx_rule::lqer>>::quantize(matrix_view<const float>(a.data(), 2, 32));
  CHECK(q2.lane_code_bytes() == 16);
  CHECK(q3.lane_code_bytes() == 16);
  check_blocks_by_hand(q2, a, 2, 32);
  check_blocks_by_hand(q3, a, 2, 32);
}

TEST_CASE_TEMPLATE("8-bit formats store one byte per code", F, mx8_ocp_b32, q8_0, int8_per_row) {
  constexpr index_t rows = 2, cols = 40;
  const auto a = random_matrix(rows, cols, 4);
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), rows, cols));
  CHECK(q.lane_code_bytes() == q.blocks_per_lane() * q.block_len());
  for (index_t r = 0; r < rows; ++r) {
    const auto bytes = q.lane_codes(r);
    for (index_t i = 0; i < q.blocks_per_lane() * q.block_len(); ++i)
      CHECK(static_cast<std::int8_t>(bytes[static_cast<std::size_t>(i)]) == q.lane_code(r, i));
  }
  check_blocks_by_hand(q, a, rows, cols);
}

TEST_CASE_TEMPLATE("kPerRow formats: one group per lane, odd lengths padded to an even slot count", F, int8_per_row,
                   int4_row_sym_f32, int4_row_asym_f16) {
  constexpr index_t rows = 3, cols = 7;
  const auto a = random_matrix(rows, cols, 5);
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), rows, cols));
  CHECK(q.blocks_per_lane() == 1);
  CHECK(q.block_len() == 8);  // 7 rounded up to even, so nibble pairs never straddle lanes
  CHECK(q.lane_code_bytes() == (F::kBits <= 4 ? 4 : 8));
  check_blocks_by_hand(q, a, rows, cols);
  for (index_t r = 0; r < rows; ++r) CHECK(q.lane_code(r, 7) == 0);

  // Down the columns: lanes are the 3 columns of a 7 × 3 matrix, depth 7.
  const auto at = transpose(a, rows, cols);
  const auto qc = quantized_matrix<F>::quantize(matrix_view<const float>(at.data(), cols, rows), block_axis::rows);
  CHECK(qc.lanes() == 3);
  CHECK(qc.block_len() == 8);
  for (index_t r = 0; r < cols; ++r)
    for (index_t c = 0; c < rows; ++c) CHECK(qc.value(r, c) == q.value(c, r));
}

// ---------------------------------------------------------------------------
// Strided views

TEST_CASE_TEMPLATE("strided source views read only the logical shape (NaN in the row gaps is never touched)", F,
                   mx4_lqer_b16, q4_0, int8_per_row) {
  constexpr index_t rows = 5, cols = 37, stride = 48;
  const auto a = random_matrix(rows, cols, 6);
  // A buffer whose gaps after each row hold NaN, and which ends right after
  // the last logical element: any read outside the shape shows up as a NaN
  // error (or, at the end, as an out-of-bounds read under the sanitizers).
  std::vector<float> buf(static_cast<std::size_t>((rows - 1) * stride + cols), kNaN);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) buf[static_cast<std::size_t>(r * stride + c)] = a[static_cast<std::size_t>(r * cols + c)];
  const auto view = make_matrix_view<const float>(buf.data(), buf.size(), rows, cols, stride);

  for (const auto axis : {block_axis::cols, block_axis::rows}) {
    CAPTURE(static_cast<int>(axis));
    const auto qs = quantized_matrix<F>::quantize(view, axis);
    const auto qd = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), rows, cols), axis);
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) {
        CHECK(qs.code(r, c) == qd.code(r, c));
        CHECK(qs.value(r, c) == qd.value(r, c));
      }
  }
}

TEST_CASE("a view of a sub-matrix quantizes like a copy of it") {
  constexpr index_t R = 10, C = 64;
  const auto big = random_matrix(R, C, 7);
  // rows 2..7, cols 5..44 of the big matrix, through its row stride
  constexpr index_t r0 = 2, c0 = 5, rows = 6, cols = 40;
  std::vector<float> copy;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) copy.push_back(big[static_cast<std::size_t>((r0 + r) * C + c0 + c)]);
  using F = mxint<4, 32, mx_rule::ocp>;
  const auto qv = quantized_matrix<F>::quantize(matrix_view<const float>(big.data() + r0 * C + c0, rows, cols, C));
  const auto qc = quantized_matrix<F>::quantize(matrix_view<const float>(copy.data(), rows, cols));
  CHECK(qv.dequantize() == qc.dequantize());
}

// ---------------------------------------------------------------------------
// Bad input

TEST_CASE("NaN and ±Inf are rejected with the row and column named") {
  using F = mxint<4, 32, mx_rule::ocp>;
  for (const float bad : {kNaN, kInf, -kInf}) {
    auto a = random_matrix(4, 9, 8);
    a[2 * 9 + 5] = bad;
    const char* name = std::isnan(bad) ? "NaN" : (bad > 0 ? "+Inf" : "-Inf");
    CAPTURE(name);
    for (const auto axis : {block_axis::cols, block_axis::rows}) {
      try {
        (void)quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), 4, 9), axis);
        FAIL("quantize accepted ", name);
      } catch (const value_error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("(2, 5)") != std::string::npos);
        CHECK(msg.find(name) != std::string::npos);
      }
    }
  }
}

TEST_CASE("zero, negative and inconsistent shapes are shape_errors") {
  using F = q8_0;
  float x[8] = {};
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(x, 0, 4)), shape_error);
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(x, 2, 0)), shape_error);
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(x, -1, 4)), shape_error);
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(x, 2, -4)), shape_error);
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(x, 2, 4, 3)), shape_error);  // stride < cols
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(nullptr, 2, 4)), shape_error);
  try {
    (void)quantized_matrix<F>::quantize(matrix_view<const float>(x, 2, 4, 3));
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("stride 3") != std::string::npos);
  }
}

TEST_CASE("make_matrix_view checks that the buffer holds the whole matrix") {
  std::vector<float> buf(2 * 10 + 7);
  // (rows − 1)·stride + cols elements are needed: the last row needs no gap after it.
  CHECK_NOTHROW(make_matrix_view<float>(buf.data(), buf.size(), 3, 7, 10));
  CHECK_THROWS_AS(make_matrix_view<float>(buf.data(), buf.size() - 1, 3, 7, 10), shape_error);
  CHECK_THROWS_AS(make_matrix_view<float>(buf.data(), buf.size(), 4, 7, 10), shape_error);
  CHECK_THROWS_AS(make_matrix_view<float>(buf.data(), 6, 1, 7, 7), shape_error);
  CHECK_THROWS_AS(make_matrix_view<float>(buf.data(), buf.size(), 3, 7, 6), shape_error);  // stride < cols
  CHECK_THROWS_AS(make_matrix_view<float>(buf.data(), buf.size(), 0, 7, 7), shape_error);
  // A stride so large that (rows − 1)·stride overflows is refused, not wrapped around.
  CHECK_THROWS_AS(make_matrix_view<float>(buf.data(), buf.size(), 3, 7, std::numeric_limits<index_t>::max() / 2 + 1),
                  shape_error);
}

TEST_CASE("dequantize and fake_quantize into a wrong shape throw and write nothing") {
  using F = mxint<4, 16, mx_rule::lqer>;
  const auto a = random_matrix(4, 20, 9);
  const auto q = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), 4, 20));
  constexpr float kSentinel = 777.0f;
  std::vector<float> dst(100, kSentinel);
  const auto untouched = [&] {
    for (float v : dst)
      if (v != kSentinel) return false;
    return true;
  };
  CHECK_THROWS_AS(q.dequantize(matrix_view<float>(dst.data(), 5, 20)), shape_error);
  CHECK_THROWS_AS(q.dequantize(matrix_view<float>(dst.data(), 4, 21)), shape_error);
  CHECK_THROWS_AS(q.dequantize(matrix_view<float>(dst.data(), 20, 4)), shape_error);  // the transpose is not the same
  CHECK_THROWS_AS(q.dequantize(matrix_view<float>(dst.data(), 4, 20, 19)), shape_error);
  CHECK(untouched());
  CHECK_THROWS_AS(fake_quantize<F>(matrix_view<const float>(a.data(), 4, 20), matrix_view<float>(dst.data(), 5, 20)),
                  shape_error);
  CHECK(untouched());
  // A NaN in the source: the error comes before any element is written.
  auto bad = a;
  bad[79] = kNaN;
  CHECK_THROWS_AS(fake_quantize<F>(matrix_view<const float>(bad.data(), 4, 20), matrix_view<float>(dst.data(), 4, 20)),
                  value_error);
  CHECK(untouched());
}

TEST_CASE("an fp16 scale that would overflow is refused, not stored as Inf") {
  using F = intq<8, 32, int_scheme::symmetric, scale_dtype::f16>;
  // d = amax / 127 > 65504 needs amax > 8.3e6.
  std::vector<float> a(32, 1.0f);
  a[3] = 1e8f;
  CHECK_THROWS_AS(quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), 1, 32)), value_error);
}

TEST_CASE("fake_quantize may write over its source") {
  using F = mxint<4, 32, mx_rule::ocp>;
  auto a = random_matrix(3, 33, 10);
  const auto expected = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), 3, 33)).dequantize();
  fake_quantize<F>(matrix_view<const float>(a.data(), 3, 33), matrix_view<float>(a.data(), 3, 33));
  CHECK(a == expected);
}

// ---------------------------------------------------------------------------
// Storage accounting

TEST_CASE("storage_bytes and bits_per_element count codes and scales at their stored size") {
  constexpr index_t rows = 4, cols = 64;
  const auto a = random_matrix(rows, cols, 11);
  const matrix_view<const float> v(a.data(), rows, cols);
  // MXINT4 block 32: 32 nibbles (16 bytes) + one 8-bit exponent = 17 bytes per 32 -> 4.25 bits.
  const auto m4 = quantized_matrix<mxint<4, 32, mx_rule::ocp>>::quantize(v);
  CHECK(m4.storage_bytes() == 4 * 2 * 17);
  CHECK(m4.bits_per_element() == 4.25);
  // Q4_0: 16 bytes + fp16 scale = 18 bytes per 32 (ggml's block_q4_0) -> 4.5 bits.
  const auto q4 = quantized_matrix<q4_0>::quantize(v);
  CHECK(q4.storage_bytes() == 4 * 2 * kGgmlQ4_0BlockBytes);
  CHECK(q4.bits_per_element() == 4.5);
  // Q8_0: 32 + 2 = 34 bytes per 32 -> 8.5 bits.
  const auto q8 = quantized_matrix<q8_0>::quantize(v);
  CHECK(q8.storage_bytes() == 4 * 2 * kGgmlQ8_0BlockBytes);
  CHECK(q8.bits_per_element() == 8.5);
  // Per-row INT8 with an fp32 scale: 64 + 4 bytes per row -> 8.5 bits.
  const auto i8 = quantized_matrix<int8_per_row>::quantize(v);
  CHECK(i8.storage_bytes() == 4 * (64 + 4));
  CHECK(i8.bits_per_element() == 8.5);
  // Padding counts: 4 × 40 in MXINT4 b32 still stores two whole blocks per row.
  const auto tail = quantized_matrix<mxint<4, 32, mx_rule::ocp>>::quantize(matrix_view<const float>(a.data(), 4, 40));
  CHECK(tail.storage_bytes() == 4 * 2 * 17);
}

// ---------------------------------------------------------------------------
// Eigen interop

TEST_CASE_TEMPLATE("quantize from a column-major Eigen matrix equals quantize from the row-major view", F,
                   mx4_ocp_b32, mx8_lqer_b16, q4_0, int4_g128_asym) {
  constexpr index_t rows = 9, cols = 150;
  const auto a = random_matrix(rows, cols, 12);
  Eigen::MatrixXf colmajor(rows, cols);  // Eigen's default storage is column-major
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) colmajor(r, c) = a[static_cast<std::size_t>(r * cols + c)];

  for (const auto axis : {block_axis::cols, block_axis::rows}) {
    const auto from_eigen = quantize<F>(colmajor, axis);
    const auto from_view = quantized_matrix<F>::quantize(matrix_view<const float>(a.data(), rows, cols), axis);
    REQUIRE(from_eigen.rows() == rows);
    REQUIRE(from_eigen.cols() == cols);
    for (index_t lane = 0; lane < from_view.lanes(); ++lane) {
      const auto ce = from_eigen.lane_codes(lane), cv = from_view.lane_codes(lane);
      CHECK(std::equal(ce.begin(), ce.end(), cv.begin(), cv.end()));
      const auto se = from_eigen.lane_scales(lane), sv = from_view.lane_scales(lane);
      CHECK(std::equal(se.begin(), se.end(), sv.begin(), sv.end()));
    }
    const matrix_rm deq = dequantize(from_eigen);
    const matrix_rm fq = fake_quantize<F>(colmajor, axis);
    const auto ref = from_view.dequantize();
    for (index_t r = 0; r < rows; ++r)
      for (index_t c = 0; c < cols; ++c) {
        CHECK(deq(r, c) == ref[static_cast<std::size_t>(r * cols + c)]);
        CHECK(fq(r, c) == ref[static_cast<std::size_t>(r * cols + c)]);
      }
  }
}

TEST_CASE("quantize accepts an Eigen expression (a block of a larger matrix)") {
  const Eigen::MatrixXf big = Eigen::MatrixXf::Random(20, 70);
  using F = mxint<4, 16, mx_rule::lqer>;
  const auto q = quantize<F>(big.block(3, 4, 10, 50));
  const matrix_rm copy = big.block(3, 4, 10, 50);
  const auto ref = quantized_matrix<F>::quantize(view_of(copy));
  CHECK(q.dequantize() == ref.dequantize());
}
