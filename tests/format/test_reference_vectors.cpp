// Agreement, bit for bit, with the original implementations: the LQER authors'
// block_fp quantizer and Microsoft's microxcaling OCP-MX emulator. The vectors
// (tests/data, copied from shared/testdata/reference; see its README.md) are
// fake-quantized float32 arrays made by those programs in PyTorch. Elements with
// |x| < 1e-7 are excluded: the LQER reference passes |x| ≲ 1e-8 through
// unquantized (a torch.isclose quirk), which no real format does.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <string>

#include "lqer/format/mxint.hpp"
#include "lqer/io/npy.hpp"
#include "lqer/tensor/quantized_matrix.hpp"

using namespace lqer;

namespace {
template <class F>
void check_vector(const std::string& name, block_axis axis) {
  const auto in = io::read_npy_matrix(std::string(LQER_TEST_DATA_DIR) + "/" + name + "_in.npy");
  const auto want = io::read_npy_matrix(std::string(LQER_TEST_DATA_DIR) + "/" + name + "_out.npy");
  REQUIRE(in.rows == want.rows);
  REQUIRE(in.cols == want.cols);
  std::vector<float> got(in.data.size());
  fake_quantize<F>(matrix_view<const float>(in.data.data(), in.rows, in.cols),
                   matrix_view<float>(got.data(), in.rows, in.cols), axis);
  index_t compared = 0, mismatched = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(in.data[i]) < 1e-7f) continue;
    ++compared;
    if (std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(want.data[i]) &&
        !(got[i] == 0.0f && want.data[i] == 0.0f)) {  // ±0 are the same value
      if (mismatched++ < 5)
        MESSAGE(name << "[" << i / in.cols << "," << i % in.cols << "]: in " << in.data[i] << " want "
                     << want.data[i] << " got " << got[i]);
    }
  }
  INFO(name << ": " << mismatched << " of " << compared << " elements differ");
  CHECK(mismatched == 0);
  CHECK(compared > in.rows * in.cols / 2);
}
}  // namespace

TEST_CASE("LQER block_fp reference: weights, blocks along rows") {
  check_vector<mxint<4, 16, mx_rule::lqer>>("lqer_w4_rows_b16", block_axis::cols);
  check_vector<mxint<4, 16, mx_rule::lqer>>("lqer_w4_rows_b16_tail", block_axis::cols);
  check_vector<mxint<3, 16, mx_rule::lqer>>("lqer_w3_rows_b16", block_axis::cols);
  check_vector<mxint<2, 16, mx_rule::lqer>>("lqer_w2_rows_b16", block_axis::cols);
}

TEST_CASE("LQER block_fp reference: A, blocks down columns") {
  check_vector<mxint<8, 16, mx_rule::lqer>>("lqer_a8_cols_b16", block_axis::rows);
  check_vector<mxint<8, 16, mx_rule::lqer>>("lqer_a8_cols_b16_tail", block_axis::rows);
}

TEST_CASE("LQER block_fp reference: activations with outlier channels") {
  check_vector<mxint<8, 16, mx_rule::lqer>>("lqer_x8_b16", block_axis::cols);
  check_vector<mxint<8, 16, mx_rule::lqer>>("lqer_x8_b16_tail", block_axis::cols);
}

TEST_CASE("microxcaling OCP MX reference") {
  check_vector<mxint<8, 32, mx_rule::ocp>>("ocp_mxint8_b32", block_axis::cols);
  check_vector<mxint<8, 32, mx_rule::ocp>>("ocp_mxint8_b32_tail", block_axis::cols);
  check_vector<mxint<4, 32, mx_rule::ocp>>("ocp_mxint4_b32", block_axis::cols);
  check_vector<mxint<4, 32, mx_rule::ocp>>("ocp_mxint4_b32_tail", block_axis::cols);
  check_vector<mxint<8, 16, mx_rule::ocp>>("ocp_mxint8_b16", block_axis::cols);
  check_vector<mxint<8, 16, mx_rule::ocp>>("ocp_mxint8_b16_tail", block_axis::cols);
  check_vector<mxint<4, 16, mx_rule::ocp>>("ocp_mxint4_b16", block_axis::cols);
  check_vector<mxint<4, 16, mx_rule::ocp>>("ocp_mxint4_b16_tail", block_axis::cols);
}
