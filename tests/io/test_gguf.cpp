// GGUF reading: the committed vectors file written by ggml's own Python writer
// (every metadata type, nested arrays, every decodable ggml type with its
// gguf.quants dequantization, compared bit for bit), hand-built files for
// versions 2 and 3, alignments and the plain types, the Q4_0 / Q8_0 moves into
// lqer's quantized_matrix, and every class of hostile file — each checked to
// fail with the right error type, a message naming the file and a byte offset,
// and without a large allocation.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <span>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "io/gguf_builder.hpp"
#include "kernel/kernel_test_util.hpp"
#include "lqer/io/gguf.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "support/allocation_tracking.hpp"

namespace fs = std::filesystem;
using namespace lqer;
using namespace lqer::io;
using lqer::test::gguf_builder;

// ---------------------------------------------------------------------------
// Allocation tracking (tests/support/allocation_tracking.hpp): a test asserts
// that rejecting a file which declares 2^60 entries allocated nothing large.
using lqer::test::largest_allocation;
using lqer::test::reset_largest_allocation;

namespace {

constexpr std::size_t kSmallAllocation = 64 * 1024;
const fs::path kVectors = fs::path(LQER_TEST_DATA_DIR) / "gguf" / "vectors.gguf";
const fs::path kCorpus = fs::path(LQER_TEST_DATA_DIR) / ".." / "fuzz" / "corpus" / "gguf";

gguf_file parse(const std::vector<std::byte>& b, const gguf_limits& limits = {}) {
  return gguf_file::from_bytes(b, "t.gguf", limits);
}

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }

/// Equal bit patterns, except that any NaN equals any NaN: which payload and
/// sign a NaN result carries depends on the hardware and the operand order
/// (x86 returns the first NaN operand, or the negative "indefinite" for Inf·0;
/// AArch64 the positive default), and ggml does not define it either.
bool same_float(float a, float b) { return std::isnan(a) ? std::isnan(b) : bits(a) == bits(b); }

template <class Error>
std::string refused_message(const std::vector<std::byte>& b, const gguf_limits& limits = {}) {
  std::string msg;
  std::vector<std::byte> copy = b;  // before the count starts: from_bytes takes it over, no copy
  reset_largest_allocation();
  try {
    (void)gguf_file::from_bytes(std::move(copy), "t.gguf", limits);
    FAIL("the file was accepted");
  } catch (const Error& e) {
    msg = e.what();
  } catch (const lqer::error& e) {
    FAIL("wrong error type: " << e.what());
  }
  CHECK(largest_allocation() < kSmallAllocation);
  CHECK_MESSAGE(msg.rfind("t.gguf: byte ", 0) == 0, msg);
  return msg;
}

/// The message of a parse_error, which must contain `needle`.
void check_parse_error(const std::vector<std::byte>& b, std::string_view needle, const gguf_limits& limits = {}) {
  const std::string msg = refused_message<parse_error>(b, limits);
  CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
}

std::vector<std::byte> tiny_f32_file() {
  return gguf_builder().kv_u32("a.b", 7).tensor("w", 0, {2, 3}, test::f32_bytes({1, 2, 3, 4, 5, 6})).build();
}

void patch_u64(std::vector<std::byte>& b, std::size_t at, std::uint64_t v) { std::memcpy(b.data() + at, &v, 8); }
void patch_u32(std::vector<std::byte>& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }

}  // namespace

// ---------------------------------------------------------------------------
// The reference file

TEST_CASE("gguf vectors file (written by gguf.GGUFWriter): header and every metadata value type") {
  const gguf_file f = gguf_file::open(kVectors);
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.data_offset() % 32 == 0);
  const gguf_metadata& m = f.metadata();
  CHECK(m.get<std::string_view>("general.architecture") == "lqer-test");
  CHECK(m.get<std::uint8_t>("test.u8") == 200);
  CHECK(m.get<std::int8_t>("test.i8") == -100);
  CHECK(m.get<std::uint16_t>("test.u16") == 60000);
  CHECK(m.get<std::int16_t>("test.i16") == -30000);
  CHECK(m.get<std::uint32_t>("test.u32") == 4000000000u);
  CHECK(m.get<std::int32_t>("test.i32") == -2000000000);
  CHECK(m.get<std::uint64_t>("test.u64") == 18000000000000000000ull);
  CHECK(m.get<std::int64_t>("test.i64") == -9000000000000000000ll);
  CHECK(bits(m.get<float>("test.f32")) == bits(0.1f));
  CHECK(m.get<double>("test.f64") == 0.1);
  CHECK(m.get<double>("test.f32") == static_cast<double>(0.1f));
  CHECK(m.get<bool>("test.bool_true"));
  CHECK(!m.get<bool>("test.bool_false"));
  CHECK(m.get<std::string>("test.string") == "h\xc3\xa9llo, \xe4\xb8\x96\xe7\x95\x8c");
  CHECK(m.get<std::string_view>("test.empty_string").empty());
  CHECK(m.at("test.u8").type() == gguf_type::uint8);
  CHECK(m.at("test.string").type_phrase() == "string");

  CHECK(m.get<std::vector<std::int32_t>>("test.array_i32") ==
        std::vector<std::int32_t>{1, -2, 3, 2147483647, -2147483647 - 1});
  const auto fa = m.get<std::vector<float>>("test.array_f32");
  REQUIRE(fa.size() == 3);
  CHECK(bits(fa[2]) == bits(3e38f));
  CHECK(m.get<std::vector<bool>>("test.array_bool") == std::vector<bool>{true, false, true});
  const auto strs = m.at("test.array_string").strings();
  REQUIRE(strs.size() == 4);
  CHECK(strs[0] == "a");
  CHECK(strs[1].empty());
  CHECK(strs[2] ==
        "\xc3\xbc"
        "ber");
  CHECK(strs[3] == "tab\tand\nnewline");
  CHECK(m.get<std::vector<std::string>>("test.array_string")[3] == "tab\tand\nnewline");

  const gguf_value& nested = m.at("test.array_nested");
  CHECK(nested.type_phrase() == "array of array");
  REQUIRE(nested.elements().size() == 3);
  CHECK(nested.elements()[0].as_vector<std::int64_t>() == std::vector<std::int64_t>{1, 2, 3});
  CHECK(nested.elements()[1].as_vector<std::int32_t>() == std::vector<std::int32_t>{4});
  CHECK(nested.elements()[2].as_vector<std::uint8_t>() == std::vector<std::uint8_t>{5, 6});
  const gguf_value& nested2 = m.at("test.array_nested2");
  REQUIRE(nested2.elements().size() == 2);
  REQUIRE(nested2.elements()[0].elements().size() == 1);
  CHECK(nested2.elements()[0].elements()[0].strings()[1] == "y");
  CHECK(nested2.elements()[1].elements()[0].strings()[0] == "z");

  // Entries come in file order; lookups find each.
  CHECK(m.entries()[0].key == "general.architecture");
  for (const gguf_kv& e : m.entries()) CHECK(m.find(e.key) == &e.value);
  CHECK(m.find("no.such.key") == nullptr);
  CHECK(m.get_or<std::uint32_t>("no.such.key", 5u) == 5u);
  CHECK(m.get_or<std::uint32_t>("test.u8", 5u) == 200u);
}

TEST_CASE("gguf metadata typed access widens integers and floats without loss") {
  const gguf_file f = gguf_file::open(kVectors);
  const gguf_metadata& m = f.metadata();
  CHECK(m.get<std::int64_t>("test.u32") == 4000000000ll);
  CHECK(m.get<std::int32_t>("test.u16") == 60000);
  CHECK(m.get<std::int16_t>("test.i8") == -100);
  CHECK(m.at("test.array_i32").as_vector<std::int64_t>()[4] == -2147483648ll);
}

TEST_CASE("gguf metadata typed access refuses lossy conversions with value_error") {
  const gguf_file f = gguf_file::open(kVectors);
  const gguf_metadata& m = f.metadata();
  const auto msg = [&](auto&& get) -> std::string {
    try {
      get();
    } catch (const value_error& e) {
      return e.what();
    }
    return "(accepted)";
  };
  CHECK(msg([&] { (void)m.get<std::uint8_t>("test.u16"); }).find("does not fit") != std::string::npos);
  CHECK(msg([&] { (void)m.get<std::uint32_t>("test.i8"); }).find("-100") != std::string::npos);
  CHECK(msg([&] { (void)m.get<std::int32_t>("test.u32"); }).find("test.u32") != std::string::npos);
  CHECK(msg([&] { (void)m.get<float>("test.f64"); }).find("is float64, not float32") != std::string::npos);
  CHECK(msg([&] { (void)m.get<std::uint32_t>("test.string"); }).find("is string") != std::string::npos);
  CHECK(msg([&] { (void)m.get<std::string_view>("test.u8"); }).find("is uint8, not string") != std::string::npos);
  CHECK(msg([&] { (void)m.get<bool>("test.u8"); }).find("not bool") != std::string::npos);
  CHECK(msg([&] { (void)m.get<std::uint32_t>("test.array_i32"); }).find("is array of int32") != std::string::npos);
  CHECK(msg([&] { (void)m.at("test.array_i32").strings(); }).find("not array of string") != std::string::npos);
  CHECK(msg([&] { (void)m.get<std::vector<std::uint32_t>>("test.array_i32"); }).find("element 1") != std::string::npos);
  CHECK(msg([&] { (void)m.at("no.such.key"); }) == kVectors.string() + ": has no metadata key 'no.such.key'");
  CHECK(msg([&] { (void)f.tensor("nope"); }) == kVectors.string() + ": has no tensor 'nope'");
  // Every message names the file and the key.
  CHECK(msg([&] { (void)m.get<std::int8_t>("test.i16"); }).rfind(kVectors.string() + ": metadata key 'test.i16'", 0) ==
        0);
}

TEST_CASE("gguf decoders equal gguf.quants (ggml's dequantization) bit for bit on the committed vectors") {
  const gguf_file f = gguf_file::open(kVectors);
  std::vector<std::string> covered;
  for (const gguf_tensor& t : f.tensors()) {
    if (t.name.ends_with(".expected")) continue;
    CAPTURE(t.describe());
    const gguf_tensor& e = f.tensor(std::string(t.name) + ".expected");
    CHECK(e.type == ggml_type::f32);
    REQUIRE(e.n_elements == t.n_elements);
    CHECK(std::vector<std::int64_t>(t.dims().begin(), t.dims().end()) ==
          std::vector<std::int64_t>(e.dims().begin(), e.dims().end()));
    const std::vector<float> got = dequantize(t);
    const std::vector<float> want = dequantize(e);
    std::size_t mismatches = 0, nans = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      nans += std::isnan(want[i]) ? 1 : 0;
      if (!same_float(got[i], want[i]) && mismatches++ < 4)
        MESSAGE("element " << i << ": lqer " << got[i] << " (0x" << std::hex << bits(got[i]) << "), gguf.quants "
                           << want[i] << " (0x" << bits(want[i]) << std::dec << ")");
    }
    CHECK(mismatches == 0);
    if (t.type != ggml_type::f16 && t.type != ggml_type::bf16 && t.type != ggml_type::q8_k)
      CHECK_MESSAGE(nans > 0, "the planted Inf/NaN scales should give NaN somewhere");
    covered.emplace_back(to_string(t.type));
  }
  std::sort(covered.begin(), covered.end());
  CHECK(covered == std::vector<std::string>{"BF16", "F16", "IQ4_NL", "Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0",
                                            "Q5_1", "Q5_K", "Q6_K", "Q8_0", "Q8_K"});
}

TEST_CASE("gguf decoders: the plain types and the block decoder's own checks") {
  gguf_builder g;
  std::vector<std::byte> f64, i8, i16, i32, i64;
  for (const double d : {1.0, -0.1, 1e300, 5e-324}) gguf_builder::put<double>(f64, d);
  for (const std::int8_t v : {-128, 0, 127, 5}) gguf_builder::put<std::int8_t>(i8, v);
  for (const std::int16_t v : {-32768, 0, 32767, 5}) gguf_builder::put<std::int16_t>(i16, v);
  for (const std::int32_t v : {-2147483647 - 1, 0, 16777217, 5}) gguf_builder::put<std::int32_t>(i32, v);
  for (const std::int64_t v : {std::int64_t{-1} << 62, std::int64_t{0}, std::int64_t{1} << 40, std::int64_t{5}})
    gguf_builder::put<std::int64_t>(i64, v);
  g.tensor("f32", 0, {4}, test::f32_bytes({1.5f, -0.0f, std::numeric_limits<float>::infinity(), 1e-45f}))
      .tensor("f64", 28, {4}, f64)
      .tensor("i8", 24, {4}, i8)
      .tensor("i16", 25, {4}, i16)
      .tensor("i32", 26, {4}, i32)
      .tensor("i64", 27, {2, 2}, i64);
  const gguf_file f = parse(g.build());
  const auto dq = [&](std::string_view n) { return dequantize(f.tensor(n)); };
  CHECK(bits(dq("f32")[1]) == bits(-0.0f));
  CHECK(bits(dq("f32")[3]) == bits(1e-45f));
  CHECK(dq("f64") == std::vector<float>{1.0f, -0.1f, std::numeric_limits<float>::infinity(), 0.0f});
  CHECK(dq("i8") == std::vector<float>{-128, 0, 127, 5});
  CHECK(dq("i16") == std::vector<float>{-32768, 0, 32767, 5});
  CHECK(dq("i32") == std::vector<float>{-2147483648.0f, 0, 16777216.0f, 5});  // 2^24 + 1 rounds to even
  CHECK(dq("i64") == std::vector<float>{-4611686018427387904.0f, 0, 1099511627776.0f, 5});
  CHECK(f.tensor("i64").rows() == 2);
  CHECK(f.tensor("i64").row_length() == 2);

  // The block decoder checks sizes and refuses what it cannot decode.
  std::vector<float> out(32);
  const std::vector<std::byte> block(18);
  CHECK_NOTHROW(ggml_dequantize(ggml_type::q4_0, block, out));
  CHECK_THROWS_AS(ggml_dequantize(ggml_type::q4_0, std::span(block).first(17), out), shape_error);
  CHECK_THROWS_AS(ggml_dequantize(ggml_type::q4_0, block, std::span(out).first(31)), shape_error);
  std::vector<float> out256(256);
  CHECK_THROWS_AS(ggml_dequantize(ggml_type::iq2_xxs, std::vector<std::byte>(66), out256), unsupported_error);
  CHECK_THROWS_AS(ggml_dequantize(static_cast<ggml_type>(4), block, out), unsupported_error);
  CHECK(std::string(to_string(ggml_type::q6_k)) == "Q6_K");
  CHECK(std::string(to_string(static_cast<ggml_type>(31))) == "unknown");
}

TEST_CASE("gguf: a type lqer does not decode opens, and decoding it names file and tensor") {
  const auto b = gguf_builder().tensor("grid", 16, {256}, std::vector<std::byte>(66)).build();  // IQ2_XXS
  const gguf_file f = parse(b);
  CHECK(f.tensor("grid").n_bytes == 66);
  try {
    (void)dequantize(f.tensor("grid"));
    FAIL("decoded");
  } catch (const unsupported_error& e) {
    CHECK(std::string(e.what()) == "t.gguf: tensor grid (IQ2_XXS, 256): decoding IQ2_XXS to float is not implemented");
  }
  // The type is reported before the destination's size.
  std::vector<float> small(10);
  CHECK_THROWS_AS(dequantize(f.tensor("grid"), small), unsupported_error);
  const gguf_file g = parse(tiny_f32_file());
  CHECK_THROWS_WITH_AS(dequantize(g.tensor("w"), small),
                       "t.gguf: tensor w (F32, 2 x 3) has 6 elements; the destination holds 10", shape_error);
}

// ---------------------------------------------------------------------------
// Q4_0 / Q8_0 into lqer's quantized matrices

namespace {
/// Rows of random blocks of `type` (2 = Q4_0, 8 = Q8_0) with finite random fp16 scales.
std::vector<std::byte> random_blocks(std::uint32_t type, std::size_t blocks, std::mt19937& rng) {
  const std::size_t bytes = type == 2 ? 18 : type == 3 ? 20 : 34;
  std::vector<std::byte> b(blocks * bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
  for (std::size_t k = 0; k < blocks; ++k) {
    const half_bits d = float_to_half(k == 3 ? 3e-7f : scale(rng));  // block 3: a subnormal half
    b[k * bytes] = std::byte(d.bits & 0xff);
    b[k * bytes + 1] = std::byte(d.bits >> 8);
    std::size_t j0 = 2;
    if (type == 3) {  // Q4_1's minimum: either sign, a subnormal half in block 4
      const half_bits m = float_to_half(k == 4 ? -2e-7f : scale(rng) * 4);
      b[k * bytes + 2] = std::byte(m.bits & 0xff);
      b[k * bytes + 3] = std::byte(m.bits >> 8);
      j0 = 4;
    }
    for (std::size_t j = j0; j < bytes; ++j) {
      int v = byte(rng);
      if (type == 8 && v == 0x80) v = 0x81;  // -128: not a q8_0 code (see the refusal test)
      b[k * bytes + j] = std::byte(v);
    }
  }
  return b;
}
}  // namespace

TEST_CASE_TEMPLATE("gguf Q4_0 / Q8_0 tensors move into quantized_matrix — its dequantize equals the GGUF decode", F,
                   q4_0, q8_0) {
  constexpr std::uint32_t type = std::is_same_v<F, q4_0> ? 2 : 8;
  std::mt19937 rng(7);
  const auto b = gguf_builder().tensor("w", type, {96, 5}, random_blocks(type, 15, rng)).build();
  const gguf_file f = parse(b);
  const gguf_tensor& t = f.tensor("w");
  const auto q = to_quantized_matrix<F>(t);
  CHECK(q.rows() == 5);
  CHECK(q.cols() == 96);
  const std::vector<float> want = dequantize(t);
  const std::vector<float> got = q.dequantize();
  REQUIRE(got.size() == want.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) mismatches += bits(got[i]) == bits(want[i]) ? 0 : 1;
  CHECK(mismatches == 0);
  // And the block layout's own decoder (format/ggml_blocks.hpp) agrees.
  const std::span<const std::uint8_t> raw(reinterpret_cast<const std::uint8_t*>(t.data.data()), t.data.size());
  CHECK((type == 2 ? from_ggml_q4_0(raw) : from_ggml_q8_0(raw)) == want);
  // Another type is refused.
  using Other = std::conditional_t<type == 2, q8_0, q4_0>;
  CHECK_THROWS_AS(to_quantized_matrix<Other>(t), value_error);

  // The file's blocks run in the fused kernel as they are (issue #15: no float
  // round trip): packed with Q8_0 activations, every path equals
  // reference_forward bit for bit, with and without a Q8_0 correction on top.
  lqer_layer<F, q8_0> layer;
  layer.wq = q;
  const auto x = lqer_test::random_matrix(3, 96, 1.0f, 8);
  for (const index_t rank : {0, 16}) {
    if (rank > 0) {
      const auto a = lqer_test::random_matrix(96, rank, 0.1f, 9), bm = lqer_test::random_matrix(rank, 5, 0.01f, 10);
      layer.a = quantized_matrix<q8_0>::quantize(matrix_view<const float>(a.data(), 96, rank), block_axis::rows);
      layer.b = quantized_matrix<q8_0>::quantize(matrix_view<const float>(bm.data(), rank, 5), block_axis::rows);
    }
    std::vector<float> ref(15), y(15);
    reference_forward<q8_0>(layer, matrix_view<const float>(x.data(), 3, 96), matrix_view<float>(ref.data(), 3, 5));
    const auto packed = pack<q8_0>(layer);
    for (const kernel_path path : lqer_test::paths_to_test()) {
      linear(packed, matrix_view<const float>(x.data(), 3, 96), matrix_view<float>(y.data(), 3, 5), serial_executor{},
             path);
      CAPTURE(rank);
      CHECK(lqer_test::count_mismatches(y, ref, 5) == 0);
    }
  }
}

TEST_CASE("gguf Q4_1 tensors move into lqer's q4_1 — its dequantize equals the GGUF decode, and it runs fused") {
  std::mt19937 rng(11);
  const gguf_file f = parse(gguf_builder()
                                .tensor("w", 3, {96, 5}, random_blocks(3, 15, rng))
                                .tensor("w0", 2, {64}, random_blocks(2, 2, rng))
                                .build());
  const gguf_tensor& t = f.tensor("w");
  const auto q = to_quantized_matrix<q4_1>(t);
  CHECK(q.rows() == 5);
  CHECK(q.cols() == 96);
  const std::vector<float> want = dequantize(t);
  const std::vector<float> got = q.dequantize();
  REQUIRE(got.size() == want.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) mismatches += bits(got[i]) == bits(want[i]) ? 0 : 1;
  CHECK(mismatches == 0);
  const std::span<const std::uint8_t> raw(reinterpret_cast<const std::uint8_t*>(t.data.data()), t.data.size());
  CHECK(from_ggml_q4_1(raw) == want);
  CHECK_THROWS_AS(to_quantized_matrix<q4_0>(t), value_error);
  CHECK_THROWS_AS(to_quantized_matrix<q4_1>(f.tensor("w0")), value_error);

  // Under Q8_0 activations with a Q8_0 correction, reference_forward adds per
  // block float(dot)·(sx·d), then float(Σqx)·(sx·m): against the exact sum of
  // those terms (double, from the codes), each term is off by ≤ 2u relative
  // (two roundings) and the running sum of n terms by ≤ (n − 1)·u·Σ|terms|,
  // u = 2^-24.
  lqer_layer<q4_1, q8_0> layer;
  layer.wq = q;
  const index_t rank = 8;
  const auto a = lqer_test::random_matrix(96, rank, 0.1f, 9), bm = lqer_test::random_matrix(rank, 5, 0.01f, 10);
  layer.a = quantized_matrix<q8_0>::quantize(matrix_view<const float>(a.data(), 96, rank), block_axis::rows);
  layer.b = quantized_matrix<q8_0>::quantize(matrix_view<const float>(bm.data(), rank, 5), block_axis::rows);
  const auto x = lqer_test::random_matrix(3, 96, 1.0f, 8);
  std::vector<float> y(15);
  reference_forward<q8_0>(layer, matrix_view<const float>(x.data(), 3, 96), matrix_view<float>(y.data(), 3, 5));
  const auto xq = quantized_matrix<q8_0>::quantize(matrix_view<const float>(x.data(), 3, 96), block_axis::cols);
  // Σ over blocks of the exact terms of row m of `act` against lane n of `w`: {sum, Σ|term|, terms}.
  const auto exact_terms = [](const auto& act, index_t m, const auto& w, index_t n) {
    using W = typename std::decay_t<decltype(w)>::format;
    double sum = 0, mag = 0;
    int terms = 0;
    for (index_t blk = 0; blk < act.blocks_per_lane(); ++blk) {
      const double sx = q8_0::scale_value(act.lane_scales(m)[blk]);
      const auto sw = w.lane_scales(n)[blk];
      double dot = 0, sum_x = 0;
      for (index_t i = blk * 32; i < std::min((blk + 1) * 32, act.depth()); ++i) {
        dot += double(act.lane_code(m, i)) * (W::code_value(w.lane_code(n, i)) - W::zero_point(sw));
        sum_x += act.lane_code(m, i);
      }
      for (const double term : {dot * sx * W::scale_value(sw), W::kHasMin ? sum_x * sx * W::min_value(sw) : 0.0}) {
        sum += term;
        mag += std::fabs(term);
      }
      terms += W::kHasMin ? 2 : 1;
    }
    return std::tuple{sum, mag, terms};
  };
  const double u = std::ldexp(1.0, -24);
  for (index_t m = 0; m < 3; ++m) {
    // The correction's activations as the reference forms them: t = Q(Q(x)·A).
    std::vector<float> ua(rank);
    for (index_t j = 0; j < rank; ++j) ua[j] = lqer::detail::accumulate_block_dots(0.0f, xq, m, layer.a, j);
    const auto tq = quantized_matrix<q8_0>::quantize(matrix_view<const float>(ua.data(), 1, rank), block_axis::cols);
    for (index_t n = 0; n < 5; ++n) {
      const auto [sw, mw, nw] = exact_terms(xq, m, layer.wq, n);
      const auto [sc, mc, nc] = exact_terms(tq, 0, layer.b, n);
      const double bound = (2 + (nw + nc - 1)) * u * (mw + mc) * (1 + 1e-6);
      CAPTURE(m);
      CAPTURE(n);
      CHECK(nw == 6);  // 3 blocks, two terms each
      CHECK(std::fabs(double(y[m * 5 + n]) - (sw + sc)) <= bound);
    }
  }
  // And the file's blocks run in the fused kernel as they are: every path
  // equals reference_forward bit for bit (the same two terms per block).
  const auto packed = pack<q8_0>(layer);
  for (const kernel_path path : lqer_test::paths_to_test()) {
    std::vector<float> yk(15);
    linear(packed, matrix_view<const float>(x.data(), 3, 96), matrix_view<float>(yk.data(), 3, 5), serial_executor{},
           path);
    CHECK(lqer_test::count_mismatches(yk, y, 5) == 0);
  }
}

TEST_CASE("gguf to_quantized_matrix refuses what lqer's formats cannot hold") {
  std::mt19937 rng(3);
  SUBCASE("a non-finite scale") {
    auto blocks = random_blocks(2, 2, rng);
    blocks[18] = std::byte{0x00};
    blocks[19] = std::byte{0x7c};  // +Inf
    const gguf_file f = parse(gguf_builder().tensor("w", 2, {64}, blocks).build());
    try {
      (void)to_quantized_matrix<q4_0>(f.tensor("w"));
      FAIL("accepted");
    } catch (const value_error& e) {
      CHECK(std::string(e.what()).find("t.gguf: tensor w (Q4_0, 64): ") == 0);
      CHECK(std::string(e.what()).find("non-finite scale") != std::string::npos);
    }
  }
  SUBCASE("a Q8_0 code of -128") {
    auto blocks = random_blocks(8, 1, rng);
    blocks[10] = std::byte{0x80};
    const gguf_file f = parse(gguf_builder().tensor("w", 8, {32}, blocks).build());
    CHECK_THROWS_WITH_AS(to_quantized_matrix<q8_0>(f.tensor("w")), doctest::Contains("code -128"), value_error);
  }
  SUBCASE("an empty tensor") {
    const gguf_file f = parse(gguf_builder().tensor("w", 2, {0, 4}, {}).build());
    CHECK_THROWS_AS(to_quantized_matrix<q4_0>(f.tensor("w")), shape_error);
  }
}

TEST_CASE("quantized_matrix::from_codes checks sizes, codes, padding and scales") {
  using M = quantized_matrix<q4_0>;
  const std::vector<q4_0::block_scale> one_scale{{float_to_half(0.5f), 0}};
  CHECK(M::from_codes(1, 32, block_axis::cols, std::vector<std::uint8_t>(16, 0x21), one_scale).value(0, 1) == 1.0f);
  CHECK_THROWS_AS(M::from_codes(1, 32, block_axis::cols, std::vector<std::uint8_t>(15), one_scale), shape_error);
  CHECK_THROWS_AS(M::from_codes(0, 32, block_axis::cols, {}, {}), shape_error);
  // 30 columns: the last two code slots are padding and must stay 0.
  std::vector<std::uint8_t> codes(16, 0);
  codes[15] = 0x10;
  CHECK_THROWS_WITH_AS(M::from_codes(1, 30, block_axis::cols, codes, one_scale), doctest::Contains("padding"),
                       value_error);
  CHECK_THROWS_AS(M::from_codes(1, 32, block_axis::cols, std::vector<std::uint8_t>(16), {{half_bits{0x7e00}, 0}}),
                  value_error);
}

// ---------------------------------------------------------------------------
// Hand-built valid files

TEST_CASE("gguf versions 2 and 3, alignments, views that survive a move") {
  for (const std::uint32_t version : {2u, 3u}) {
    for (const std::uint32_t alignment : {0u, 1u, 8u, 64u, 4096u}) {
      CAPTURE(version);
      CAPTURE(alignment);
      gguf_builder g;
      g.version = version;
      if (alignment != 0) {
        g.alignment = alignment;
        g.kv_u32("general.alignment", alignment);
      }
      g.kv_string("name", "x")
          .tensor("a", 0, {3}, test::f32_bytes({1, 2, 3}))
          .tensor("b", 1, {2}, std::vector<std::byte>(4));
      gguf_file f = parse(g.build());
      CHECK(f.version() == version);
      CHECK(f.alignment() == (alignment != 0 ? alignment : 32));
      CHECK(f.data_offset() % f.alignment() == 0);
      CHECK(f.tensor("b").offset % f.alignment() == 0);
      CHECK(dequantize(f.tensor("a")) == std::vector<float>{1, 2, 3});
      const std::string_view name = f.metadata().get<std::string_view>("name");
      const std::span<const std::byte> data = f.tensor("a").data;
      gguf_file moved = std::move(f);  // the mapping moves, the bytes do not
      CHECK(moved.metadata().get<std::string_view>("name").data() == name.data());
      CHECK(moved.tensor("a").data.data() == data.data());
      CHECK(moved.tensor("a").file == "t.gguf");
      CHECK_THROWS_AS((void)f.metadata(), value_error);  // NOLINT(bugprone-use-after-move): tested on purpose
    }
  }
}

TEST_CASE("gguf: empty files, empty arrays, zero-size tensors, and tensor order kept") {
  CHECK(parse(gguf_builder().build()).tensors().empty());
  std::vector<std::byte> empty_array;
  gguf_builder::put<std::uint32_t>(empty_array, 5);
  gguf_builder::put<std::uint64_t>(empty_array, 0);
  const auto b = gguf_builder()
                     .kv_raw("e", 9, empty_array)
                     .tensor("z", 2, {0, 7}, {})
                     .tensor("y", 0, {1}, test::f32_bytes({4}))
                     .tensor("x", 0, {1, 1, 1, 1}, test::f32_bytes({5}))
                     .build();
  const gguf_file f = parse(b);
  CHECK(f.metadata().get<std::vector<std::int32_t>>("e").empty());
  REQUIRE(f.tensors().size() == 3);
  CHECK(f.tensors()[0].name == "z");
  CHECK(f.tensors()[0].n_bytes == 0);
  CHECK(f.tensors()[0].rows() == 7);
  CHECK(dequantize(f.tensors()[0]).empty());
  CHECK(f.tensors()[2].dims().size() == 4);
  CHECK(f.tensors()[2].describe() == "x (F32, 1 x 1 x 1 x 1)");
}

TEST_CASE("gguf file reader: missing files, directories, empty files") {
  const fs::path dir = fs::temp_directory_path() / ("lqer_gguf_test_" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  CHECK_THROWS_WITH_AS(gguf_file::open(dir / "missing.gguf"), doctest::Contains("missing.gguf: no such file"),
                       io_error);
  CHECK_THROWS_WITH_AS(gguf_file::open(dir), doctest::Contains("is a directory"), io_error);
  { std::ofstream(dir / "empty.gguf"); }
  CHECK_THROWS_WITH_AS(gguf_file::open(dir / "empty.gguf"), doctest::Contains("empty.gguf: byte 0: truncated"),
                       parse_error);
  {
    const auto b = tiny_f32_file();
    std::ofstream out(dir / "ok.gguf", std::ios::binary);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  const gguf_file f = gguf_file::open(dir / "ok.gguf");
  CHECK(dequantize(f.tensor("w")) == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(f.bytes().size() == tiny_f32_file().size());
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------
// Hostile files

TEST_CASE("gguf refuses every truncation of a valid file with parse_error") {
  const auto full = gguf_builder()
                        .kv_u32("a", 1)
                        .kv_string("s", "hello")
                        .tensor("w", 2, {32, 2}, std::vector<std::byte>(36))
                        .tensor("v", 0, {3}, test::f32_bytes({1, 2, 3}))
                        .build();
  CHECK_NOTHROW(parse(full));
  for (std::size_t n = 0; n < full.size(); ++n) {
    CAPTURE(n);
    const std::vector<std::byte> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string msg = refused_message<parse_error>(cut);
    // "truncated", "past the end", or a count or length that "remain"s cannot hold.
    CHECK_MESSAGE((msg.find("truncated") != std::string::npos || msg.find("past the end") != std::string::npos ||
                   msg.find(" remain") != std::string::npos),
                  msg);
  }
}

TEST_CASE("gguf refuses a wrong magic and unsupported versions") {
  auto b = tiny_f32_file();
  b[3] = std::byte{'X'};
  check_parse_error(b, "byte 0: not a GGUF file");
  check_parse_error(test::as_bytes("GGU"), "fewer than the 4-byte magic");
  check_parse_error(test::as_bytes("PK\x03\x04zip"), "not a GGUF file");
  for (const std::uint32_t v : {0u, 1u, 4u, 0x02000000u, 0x03000000u, 0xffffffffu}) {
    CAPTURE(v);
    auto c = tiny_f32_file();
    patch_u32(c, 4, v);
    const std::string msg = refused_message<unsupported_error>(c);
    CHECK(msg.find("byte 4") != std::string::npos);
    if (v == 0x03000000u) CHECK(msg.find("big-endian") != std::string::npos);
    if (v == 1u) CHECK(msg.find("version 1") != std::string::npos);
  }
}

TEST_CASE("gguf refuses absurd counts and lengths before allocating for them") {
  SUBCASE("metadata and tensor counts") {
    for (const std::uint64_t n : {std::uint64_t{3}, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
      gguf_builder g;
      g.kv_u32("a", 1);
      g.kv_count_override =
          static_cast<std::int64_t>(n == ~std::uint64_t{0} ? std::numeric_limits<std::int64_t>::max() : n);
      check_parse_error(g.build(), "metadata entries but only");
      gguf_builder h;
      h.tensor("w", 0, {1}, test::f32_bytes({1}));
      h.tensor_count_override =
          static_cast<std::int64_t>(n == ~std::uint64_t{0} ? std::numeric_limits<std::int64_t>::max() : n);
      check_parse_error(h.build(), n == 3 ? "byte " : "tensors but only");
    }
  }
  SUBCASE("string lengths: a key, a value, a tensor name, an array element") {
    auto b = gguf_builder().kv_string("key", "value").build();
    auto c = b;
    patch_u64(c, 24, ~std::uint64_t{0});
    check_parse_error(c, "byte 24: the key of metadata entry 0 declares 18446744073709551615 bytes");
    c = b;
    patch_u64(c, 24 + 8 + 3 + 4, std::uint64_t{1} << 50);
    check_parse_error(c, "the value of metadata 'key' declares 1125899906842624 bytes");
    auto t = gguf_builder().tensor("name", 0, {1}, test::f32_bytes({1})).build();
    patch_u64(t, 24, 1000);
    check_parse_error(t, "byte 24: the name of tensor 0 declares 1000 bytes");
    std::vector<std::byte> arr;
    gguf_builder::put<std::uint32_t>(arr, 8);
    gguf_builder::put<std::uint64_t>(arr, 2);
    gguf_builder::put_string(arr, "ok");
    gguf_builder::put<std::uint64_t>(arr, std::uint64_t{1} << 62);
    check_parse_error(gguf_builder().kv_raw("arr", 9, arr).build(),
                      "element 1 of the value of metadata 'arr' declares");
  }
  SUBCASE("array counts") {
    for (const std::uint32_t elem : {0u, 6u, 12u, 8u, 9u}) {
      CAPTURE(elem);
      std::vector<std::byte> arr;
      gguf_builder::put<std::uint32_t>(arr, elem);
      gguf_builder::put<std::uint64_t>(arr, std::uint64_t{1} << 61);
      check_parse_error(gguf_builder().kv_raw("arr", 9, arr).build(), "declares 2305843009213693952 elements but only");
    }
  }
}

TEST_CASE("gguf refuses unknown value types, bad bools and too deep nesting") {
  check_parse_error(gguf_builder().kv<std::uint8_t>("k", 13, 0).build(), "value type 13, which is not a GGUF type");
  check_parse_error(gguf_builder().kv<std::uint8_t>("k", 0xffffffffu, 0).build(), "not a GGUF type");
  check_parse_error(gguf_builder().kv<std::uint8_t>("k", 7, 2).build(), "bool of byte value 2");
  std::vector<std::byte> bools;
  gguf_builder::put<std::uint32_t>(bools, 7);
  gguf_builder::put<std::uint64_t>(bools, 3);
  for (const std::uint8_t v : {1, 0, 9}) gguf_builder::put<std::uint8_t>(bools, v);
  check_parse_error(gguf_builder().kv_raw("k", 9, bools).build(), "element 2 of the value of metadata 'k' is a bool");
  std::vector<std::byte> bad_elem;
  gguf_builder::put<std::uint32_t>(bad_elem, 77);
  gguf_builder::put<std::uint64_t>(bad_elem, 0);
  check_parse_error(gguf_builder().kv_raw("k", 9, bad_elem).build(), "value type 77");

  // depth levels of arrays, the innermost an empty array of uint8.
  const auto nested = [](int depth) {
    std::vector<std::byte> v;
    for (int i = 0; i < depth - 1; ++i) {
      gguf_builder::put<std::uint32_t>(v, 9);
      gguf_builder::put<std::uint64_t>(v, 1);
    }
    gguf_builder::put<std::uint32_t>(v, 0);
    gguf_builder::put<std::uint64_t>(v, 0);
    return gguf_builder().kv_raw("deep", 9, v).build();
  };
  CHECK_NOTHROW(parse(nested(4)));
  check_parse_error(nested(5), "nests arrays deeper than 4 levels");
  gguf_limits flat;
  flat.max_array_depth = 1;
  CHECK_NOTHROW(parse(nested(1), flat));
  check_parse_error(nested(2), "deeper than 1 levels", flat);
  // Far deeper than any stack could take if the parser recursed without a bound.
  check_parse_error(nested(100000), "nests arrays deeper");
}

TEST_CASE("gguf refuses duplicate keys and tensor names") {
  check_parse_error(gguf_builder().kv_u32("k", 1).kv_u32("j", 2).kv_u32("k", 3).build(),
                    "duplicate metadata key 'k' (first at byte 24)");
  check_parse_error(
      gguf_builder().tensor("w", 0, {1}, test::f32_bytes({1})).tensor("w", 0, {1}, test::f32_bytes({2})).build(),
      "duplicate tensor name 'w'");
}

TEST_CASE("gguf refuses bad alignment metadata") {
  check_parse_error(gguf_builder().kv_u32("general.alignment", 0).build(),
                    "general.alignment is 0, not a power of two");
  check_parse_error(gguf_builder().kv_u32("general.alignment", 48).build(), "48, not a power of two");
  check_parse_error(gguf_builder().kv<std::uint64_t>("general.alignment", 10, 32).build(),
                    "general.alignment is uint64; GGUF requires uint32");
}

TEST_CASE("gguf refuses bad tensor infos: dimensions, types, offsets, overlaps") {
  SUBCASE("too many dimensions") {
    check_parse_error(gguf_builder().tensor("w", 0, {1, 1, 1, 1, 1}, test::f32_bytes({1})).build(),
                      "tensor 'w' has 5 dimensions");
  }
  SUBCASE("absurd dimensions and element counts (every product overflow-checked)") {
    check_parse_error(gguf_builder().tensor_info("w", 0, {~std::uint64_t{0}}, 0).build(),
                      "dimension 0 of 18446744073709551615");
    check_parse_error(gguf_builder().tensor_info("w", 0, {std::uint64_t{1} << 41}, 0).build(), "beyond the limit");
    check_parse_error(gguf_builder().tensor_info("w", 0, {std::uint64_t{1} << 30, std::uint64_t{1} << 30}, 0).build(),
                      "more than 1099511627776 elements");
    check_parse_error(
        gguf_builder()
            .tensor_info("w", 0, {std::uint64_t{1} << 40, std::uint64_t{1} << 40, std::uint64_t{1} << 40}, 0)
            .build(),
        "more than");
    // A zero dimension makes the count 0, but the other dimensions are still bounded.
    check_parse_error(
        gguf_builder().tensor_info("w", 0, {0, std::uint64_t{1} << 40, std::uint64_t{1} << 40}, 0).build(),
        "more than");
    gguf_limits small;
    small.max_elements = 100;
    check_parse_error(gguf_builder().tensor("w", 0, {101}, std::vector<std::byte>(404)).build(),
                      "beyond the limit of 100", small);
  }
  SUBCASE("unknown and removed ggml types are unsupported_error") {
    for (const std::uint32_t type : {4u, 5u, 31u, 42u, 1000u, 0xffffffffu}) {
      CAPTURE(type);
      const std::string msg = refused_message<unsupported_error>(
          gguf_builder().tensor("w", type, {32}, std::vector<std::byte>(64)).build());
      CHECK(msg.find("ggml type id " + std::to_string(type)) != std::string::npos);
    }
  }
  SUBCASE("a row that is not whole blocks") {
    check_parse_error(gguf_builder().tensor("w", 2, {33}, std::vector<std::byte>(36)).build(),
                      "rows of 33 elements, not a whole number of Q4_0 blocks of 32");
    check_parse_error(gguf_builder().tensor("w", 12, {128, 2}, std::vector<std::byte>(144)).build(),
                      "Q4_K blocks of 256");
  }
  SUBCASE("misaligned data offsets") {
    check_parse_error(gguf_builder().tensor_info("w", 0, {1}, 4).data_bytes(64).build(),
                      "data offset 4, not a multiple of the alignment 32");
    gguf_builder g;
    g.alignment = 64;
    g.kv_u32("general.alignment", 64).tensor_info("w", 0, {1}, 32).data_bytes(128);
    check_parse_error(g.build(), "not a multiple of the alignment 64");
  }
  SUBCASE("data past the end of the file, offsets that would wrap") {
    check_parse_error(gguf_builder().tensor_info("w", 0, {8}, 0).data_bytes(31).build(), "past the end of the file");
    check_parse_error(gguf_builder().tensor_info("w", 0, {1}, 64).data_bytes(64).build(), "past the end");
    check_parse_error(gguf_builder().tensor_info("w", 0, {8}, ~std::uint64_t{0} - 31).data_bytes(32).build(),
                      "past the end");
    check_parse_error(gguf_builder().tensor_info("w", 0, {std::uint64_t{1} << 39}, 0).data_bytes(32).build(),
                      "past the end");
  }
  SUBCASE("overlapping tensors") {
    const auto b = gguf_builder().tensor_info("a", 0, {16}, 0).tensor_info("b", 0, {8}, 32).data_bytes(64).build();
    check_parse_error(b, "tensor b (F32, 8) at byte ");
    check_parse_error(b, "overlaps tensor a (F32, 16)");
    // Listed out of order, still found; touching is fine, and an empty tensor overlaps nothing.
    check_parse_error(gguf_builder().tensor_info("b", 0, {8}, 32).tensor_info("a", 0, {16}, 0).data_bytes(64).build(),
                      "overlaps");
    CHECK_NOTHROW(parse(gguf_builder()
                            .tensor_info("b", 0, {8}, 32)
                            .tensor_info("a", 0, {8}, 0)
                            .tensor_info("e", 0, {0}, 32)
                            .data_bytes(64)
                            .build()));
    // The same offset twice (two views of one block of data).
    check_parse_error(gguf_builder().tensor_info("a", 0, {8}, 0).tensor_info("b", 0, {8}, 0).data_bytes(32).build(),
                      "overlaps");
  }
}

TEST_CASE("gguf seed corpus of the fuzzer: valid seeds parse and decode, broken ones are refused") {
  REQUIRE(fs::is_directory(kCorpus));
  int valid = 0, broken = 0;
  for (const auto& e : fs::directory_iterator(kCorpus)) {
    const std::string name = e.path().filename().string();
    CAPTURE(name);
    if (name.rfind("valid_", 0) == 0) {
      const gguf_file f = gguf_file::open(e.path());
      for (const gguf_tensor& t : f.tensors())
        if (ggml_traits(t.type).decodable) CHECK(dequantize(t).size() == static_cast<std::size_t>(t.n_elements));
      ++valid;
    } else if (name.rfind("bad_", 0) == 0) {
      CHECK_THROWS_AS(gguf_file::open(e.path()), lqer::error);
      ++broken;
    }
  }
  CHECK(valid >= 4);
  CHECK(broken >= 3);
}
