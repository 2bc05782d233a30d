// Bit compatibility with llama.cpp's Q4_0, Q4_1 and Q8_0. How it was checked:
// the expected bytes in tests/data/ggml were produced by ggml's own reference
// quantizers (quantize_row_q4_0_ref / _q4_1_ref / _q8_0_ref, ggml 0.21.0; see
// tests/data/ggml/README.md) on a fixed input that includes ties, an all-zero
// block, an fp16-subnormal scale and values near the fp16 maximum. lqer's
// q4_0 / q4_1 / q8_0 formats must produce the same bytes, and decode ggml's bytes to
// the same floats as ggml's dequantizers.
#include <doctest/doctest.h>

#include <bit>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "lqer/format/ggml_blocks.hpp"

using namespace lqer;

namespace {
std::vector<std::uint8_t> slurp(const std::string& name) {
  std::ifstream f(std::string(LQER_TEST_DATA_DIR) + "/ggml/" + name, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "missing test data file ", name);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
std::vector<float> floats(const std::vector<std::uint8_t>& b) {
  std::vector<float> v(b.size() / 4);
  for (std::size_t i = 0; i < v.size(); ++i)
    v[i] = std::bit_cast<float>(static_cast<std::uint32_t>(b[4 * i] | (b[4 * i + 1] << 8) | (b[4 * i + 2] << 16) |
                                                           (static_cast<std::uint32_t>(b[4 * i + 3]) << 24)));
  return v;
}
void check_same_bytes(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want, std::size_t block) {
  REQUIRE(got.size() == want.size());
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 5) MESSAGE("block " << i / block << " byte " << i % block << ": want " << int(want[i]) << " got " << int(got[i]));
  CHECK(bad == 0);
}
void check_same_floats(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::bit_cast<std::uint32_t>(got[i]) != std::bit_cast<std::uint32_t>(want[i]) && !(got[i] == 0 && want[i] == 0))
      if (bad++ < 5) MESSAGE("element " << i << ": want " << want[i] << " got " << got[i]);
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("q4_0: same bytes as ggml's quantize_row_q4_0_ref, same floats as its dequantizer") {
  const auto x = floats(slurp("ggml_ref_in.f32"));
  REQUIRE(x.size() == 2048);
  check_same_bytes(to_ggml_q4_0(x), slurp("ggml_ref_q4_0.bin"), kGgmlQ4_0BlockBytes);
  check_same_floats(from_ggml_q4_0(slurp("ggml_ref_q4_0.bin")), floats(slurp("ggml_ref_q4_0_deq.f32")));
}

TEST_CASE("q8_0: same bytes as ggml's quantize_row_q8_0_ref, same floats as its dequantizer") {
  const auto x = floats(slurp("ggml_ref_in.f32"));
  check_same_bytes(to_ggml_q8_0(x), slurp("ggml_ref_q8_0.bin"), kGgmlQ8_0BlockBytes);
  check_same_floats(from_ggml_q8_0(slurp("ggml_ref_q8_0.bin")), floats(slurp("ggml_ref_q8_0_deq.f32")));
}

TEST_CASE("q4_1: same bytes as ggml's quantize_row_q4_1_ref, same floats as its dequantizer") {
  const auto x = floats(slurp("ggml_ref_in.f32"));
  check_same_bytes(to_ggml_q4_1(x), slurp("ggml_ref_q4_1.bin"), kGgmlQ4_1BlockBytes);
  check_same_floats(from_ggml_q4_1(slurp("ggml_ref_q4_1.bin")), floats(slurp("ggml_ref_q4_1_deq.f32")));
}
