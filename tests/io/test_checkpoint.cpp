// LQER checkpoints (io/checkpoint.hpp): every format round-trips its codes and
// scale records bit for bit (odd shapes, padding, rank 0, no bias, per-row
// groups, zero points); the fused kernel's output from a loaded layer equals
// the output from the saved one bit for bit; a file of many layers with the
// application's tensors and metadata lists, inspects and verifies; every way a
// file can be bad is a typed error naming the file, the layer and the tensor;
// and, when LQER_PYTHON names a Python with the PyPI `safetensors` and numpy,
// tests/io/checkpoint_interop.py decodes lqer's file by the documented schema
// alone and gets lqer's dequantized floats exactly.
//
// Layers are built with quantized_matrix<F>::quantize directly (no
// factorization: this file stays a light translation unit); the values are
// what matter, not whether A·B corrects anything.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lqer/calib/activation_stats.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/io/checkpoint.hpp"
#include "lqer/io/npy.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "support/files.hpp"
#include "support/safetensors_edit.hpp"

namespace fs = std::filesystem;
using namespace lqer;
using test::edited;
using edit = test::safetensors_edit;

using lqer::test::contains;
using lqer::test::temp_dir;
using lqer::test::thrown_message;

namespace {

/// Heavy-tailed values (Student-t, like LLM weights), a few exact zeros and a
/// zero block, so that every encoder branch is taken.
std::vector<float> values(index_t n, std::uint64_t seed, float scale) {
  std::mt19937_64 gen(seed);
  std::student_t_distribution<float> t(4.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = scale * t(gen);
  for (index_t i = 0; i < n; i += 37) v[static_cast<std::size_t>(i)] = 0.0f;
  return v;
}

// Not inlined: with the shapes as constants GCC 12 -O3 propagates them into
// quantize_lane and warns falsely that its nibble loop overruns the 32-code
// block buffer (-Waggressive-loop-optimizations, "iteration 64 invokes
// undefined behavior"); the loop is bounded by the block length.
template <class F>
[[gnu::noinline]] quantized_matrix<F> quantized(index_t rows, index_t cols, block_axis axis, std::uint64_t seed,
                                                float scale) {
  const std::vector<float> v = values(rows * cols, seed, scale);
  return quantized_matrix<F>::quantize(matrix_view<const float>(v.data(), rows, cols), axis);
}

template <class W, class Lr>
lqer_layer<W, Lr> make_layer(index_t out, index_t in, index_t rank, bool bias, std::uint64_t seed) {
  lqer_layer<W, Lr> l;
  l.wq = quantized<W>(out, in, block_axis::cols, seed, 0.05f);
  if (rank > 0) {
    l.a = quantized<Lr>(in, rank, block_axis::rows, seed + 1, 0.3f);
    l.b = quantized<Lr>(rank, out, block_axis::rows, seed + 2, 0.01f);
  }
  if (bias) l.bias = values(out, seed + 3, 0.1f);
  return l;
}

template <class F>
void check_same_matrix(const quantized_matrix<F>& got, const quantized_matrix<F>& want) {
  CHECK(got.rows() == want.rows());
  CHECK(got.cols() == want.cols());
  CHECK(got.axis() == want.axis());
  REQUIRE(got.codes().size() == want.codes().size());
  CHECK(std::equal(got.codes().begin(), got.codes().end(), want.codes().begin()));
  REQUIRE(got.scales().size() == want.scales().size());
  CHECK(std::equal(got.scales().begin(), got.scales().end(), want.scales().begin()));
  const std::vector<float> a = got.dequantize(), b = want.dequantize();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

template <class W, class Lr>
void check_same_layer(const lqer_layer<W, Lr>& got, const lqer_layer<W, Lr>& want) {
  check_same_matrix(got.wq, want.wq);
  REQUIRE(got.rank() == want.rank());
  if (want.rank() > 0) {
    check_same_matrix(got.a, want.a);
    check_same_matrix(got.b, want.b);
  }
  CHECK(got.bias == want.bias);
}

template <class W, class Lr>
void round_trip(index_t out, index_t in, index_t rank, bool bias) {
  const std::string what = W::name() + " / " + Lr::name() + " [" + std::to_string(out) + ", " + std::to_string(in) +
                           "] rank " + std::to_string(rank) + (bias ? " with bias" : "");
  CAPTURE(what);
  const auto layer = make_layer<W, Lr>(out, in, rank, bias, static_cast<std::uint64_t>(out * 131 + in + rank));
  io::checkpoint_writer w;
  w.add("blk.0.ffn", layer, {"mean_abs", "randomized"});
  const checkpoint_file f = checkpoint_file::from_bytes(w.encode(), "rt.safetensors");
  check_same_layer(f.load<W, Lr>("blk.0.ffn"), layer);
  const checkpoint_layer& info = f.layer("blk.0.ffn");
  CHECK(info.weight_format == W::name());
  CHECK(info.lowrank_format == Lr::name());
  CHECK(info.out_features == out);
  CHECK(info.in_features == in);
  CHECK(info.rank == rank);
  CHECK(info.has_bias == bias);
  CHECK(info.policy == "mean_abs");
  CHECK(info.solver == "randomized");
  // The file stores each scale record at its format's size, so it holds what
  // storage_bytes() counts.
  CHECK(info.weight_bytes + info.lowrank_bytes + info.bias_bytes == layer.storage_bytes());
  CHECK(info.bits_per_weight() ==
        doctest::Approx(8.0 * double(layer.storage_bytes() - layer.bias.size() * 4) / double(out * in)).epsilon(1e-12));
}

/// Both kinds of matrix (weight along cols, factors along rows) in one format F.
template <class F>
void round_trip_format() {
  round_trip<F, F>(24, 96, 8, true);
  round_trip<F, F>(5, 37, 3, false);  // in and rank not whole blocks: padding codes; odd depths
  round_trip<F, F>(7, 33, 0, true);   // rank 0: no A, B
}

}  // namespace

TEST_CASE("the version string is the CMake project version") {
  CHECK(std::string(kVersionString) == LQER_PROJECT_VERSION);
}

TEST_CASE("every format round-trips its codes and scale records bit for bit") {
  // MX integers: every width, both rules, three block lengths.
  round_trip_format<mxint<2, 16, mx_rule::lqer>>();
  round_trip_format<mxint<3, 32, mx_rule::ocp>>();
  round_trip_format<mxint<4, 16, mx_rule::lqer>>();
  round_trip_format<mxint<4, 32, mx_rule::ocp>>();
  round_trip_format<mxint<8, 16, mx_rule::lqer>>();
  round_trip_format<mxint<8, 64, mx_rule::ocp>>();
  // Scaled integers: both widths, every scheme, both scale types, per-row and grouped.
  round_trip_format<intq<4, kPerRow>>();
  round_trip_format<intq<8, kPerRow, int_scheme::symmetric, scale_dtype::f16>>();
  round_trip_format<intq<4, 32, int_scheme::asymmetric, scale_dtype::f32>>();
  round_trip_format<int4_g128_asym>();
  round_trip_format<intq<8, 16, int_scheme::asymmetric, scale_dtype::f16>>();
  round_trip_format<intq<4, 16, int_scheme::signed_extreme, scale_dtype::f32>>();
  round_trip_format<int8_per_row>();
  // llama.cpp's encodings.
  round_trip_format<q4_0>();
  round_trip_format<q8_0>();
  round_trip_format<q4_1>();  // a block minimum: the "mins" plane
  round_trip_format<intq<8, 16, int_scheme::with_min, scale_dtype::f32>>();
  // Mixed: a 4-bit weight with 8-bit factors of another family.
  round_trip<q4_0, q8_0>(32, 64, 16, true);
  round_trip<q4_1, q8_0>(32, 64, 16, true);
  round_trip<int4_g128_asym, mxint<8, 16, mx_rule::lqer>>(16, 200, 5, false);
}

TEST_CASE("the stored planes are what docs/checkpoint.md says: dtypes, shapes, nibble order") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = intq<8, 16, int_scheme::asymmetric, scale_dtype::f16>;
  const auto layer = make_layer<W, Lr>(3, 20, 2, true, 9);
  io::checkpoint_writer w;
  w.add("l", layer);
  const checkpoint_file f = checkpoint_file::from_bytes(w.encode(), "doc.safetensors");
  const io::safetensors_file& st = f.file();
  CHECK(st.metadata().at("lqer.schema") == "lqer.checkpoint");
  CHECK(st.metadata().at("lqer.schema_version") == "1");
  CHECK(st.metadata().at("lqer.version") == kVersionString);
  CHECK(st.metadata().at("lqer.layer.l.weight_format") == "mxint4_b16_lqer");
  CHECK(st.metadata().at("lqer.layer.l.lowrank_format") == "int8_g16_asym_f16");
  CHECK(st.metadata().at("lqer.layer.l.weight_axis") == "cols");
  CHECK(st.metadata().at("lqer.layer.l.lowrank_axis") == "rows");
  CHECK(st.metadata().count("lqer.layer.l.policy") == 0);  // not recorded when not given
  // Wq [3, 20], block 16: 2 blocks per row, 32 nibbles = 16 bytes per row, one E8M0 per block.
  CHECK(st.tensor("l.wq.codes").dtype == io::safetensors_dtype::u8);
  CHECK(st.tensor("l.wq.codes").shape == std::vector<index_t>{3, 16});
  CHECK(st.tensor("l.wq.scales").dtype == io::safetensors_dtype::f8_e8m0);
  CHECK(st.tensor("l.wq.scales").shape == std::vector<index_t>{3, 2});
  CHECK(!st.contains("l.wq.zeros"));
  // A [20, 2] blocked down its columns: 2 lanes of 2 blocks, a byte per code; F16 scales, I8 zero points.
  CHECK(st.tensor("l.a.codes").shape == std::vector<index_t>{2, 32});
  CHECK(st.tensor("l.a.scales").dtype == io::safetensors_dtype::f16);
  CHECK(st.tensor("l.a.zeros").dtype == io::safetensors_dtype::i8);
  CHECK(st.tensor("l.a.zeros").shape == std::vector<index_t>{2, 2});
  CHECK(st.tensor("l.b.codes").shape == std::vector<index_t>{3, 16});  // B [2, 3]: 3 lanes of one block
  CHECK(st.tensor("l.bias").shape == std::vector<index_t>{3});
  // Element 2j of a lane in the low nibble of byte j, two's complement; codes 0 past the depth.
  const auto codes = st.tensor("l.wq.codes").data;
  for (index_t r = 0; r < 3; ++r)
    for (index_t c = 0; c < 32; ++c) {
      const auto byte = std::to_integer<unsigned>(codes[static_cast<std::size_t>(r * 16 + c / 2)]);
      const int nib = static_cast<int>((c % 2 ? byte >> 4 : byte) & 15u);
      const int q = nib >= 8 ? nib - 16 : nib;
      CHECK(q == (c < 20 ? layer.wq.code(r, c) : 0));
    }
  // Every tensor has its SHA-256 under lqer.sha256.<name>, as sha256sum would print it.
  for (const auto& t : st.tensors()) CHECK(st.metadata().at("lqer.sha256." + t.name) == io::sha256_hex(t.data));
}

TEST_CASE("a block minimum (Q4_1) is a third plane: <part>.mins in the scale dtype") {
  const auto layer = make_layer<q4_1, q8_0>(3, 64, 2, false, 5);
  io::checkpoint_writer w;
  w.add("l", layer);
  const auto bytes = w.encode();
  const checkpoint_file f = checkpoint_file::from_bytes(bytes, "min.safetensors");
  const io::safetensors_file& st = f.file();
  CHECK(st.metadata().at("lqer.layer.l.weight_format") == q4_1::name());
  CHECK(st.tensor("l.wq.scales").dtype == io::safetensors_dtype::f16);
  CHECK(st.tensor("l.wq.mins").dtype == io::safetensors_dtype::f16);
  CHECK(st.tensor("l.wq.mins").shape == std::vector<index_t>{3, 2});
  CHECK(!st.contains("l.wq.zeros"));
  CHECK(!st.contains("l.a.mins"));  // q8_0 A/B: no minimum
  for (index_t r = 0; r < 3; ++r)
    for (index_t b = 0; b < 2; ++b) {
      const auto& rec = layer.wq.lane_scales(r)[b];
      const auto* m = reinterpret_cast<const std::uint8_t*>(st.tensor("l.wq.mins").data.data()) + 2 * (r * 2 + b);
      CHECK((m[0] | (m[1] << 8)) == rec.m.bits);
    }
  // Loading it as a format without a minimum: the formats differ (value_error naming both).
  CHECK_THROWS_AS(((void)f.load<q4_0, q8_0>("l")), value_error);
}

namespace {

/// linear(pack<Act>(layer)) from a layer, and from the same layer saved and loaded: the same bits.
template <class W, class Lr, class Act>
void check_forward_round_trip(const fs::path& dir, index_t rank, bool bias) {
  const std::string what = W::name() + " rank " + std::to_string(rank);
  CAPTURE(what);
  const index_t out = 48, in = 160, m = 7;
  const auto layer = make_layer<W, Lr>(out, in, rank, bias, 77);
  const fs::path path = dir / "layer.safetensors";
  save(layer, path, "proj");
  const auto loaded = load<W, Lr>(path, "proj");
  check_same_layer(loaded, layer);
  const std::vector<float> x = values(m * in, 5, 1.0f);
  std::vector<float> y0(static_cast<std::size_t>(m * out)), y1(y0.size(), -1.0f);
  linear(pack<Act>(layer), matrix_view<const float>(x.data(), m, in), matrix_view<float>(y0.data(), m, out));
  linear(pack<Act>(loaded), matrix_view<const float>(x.data(), m, in), matrix_view<float>(y1.data(), m, out));
  CHECK(std::memcmp(y0.data(), y1.data(), y0.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("a round trip is bit-identical: linear(pack(layer)) before save equals after load") {
  temp_dir dir("checkpoint");
  using lqer16 = mxint<8, 16, mx_rule::lqer>;
  using ocp32 = mxint<8, 32, mx_rule::ocp>;
  check_forward_round_trip<mxint<4, 16, mx_rule::lqer>, lqer16, lqer16>(dir.path, 32, true);
  check_forward_round_trip<mxint<4, 32, mx_rule::ocp>, ocp32, ocp32>(dir.path, 8, false);
  check_forward_round_trip<mxint<4, 16, mx_rule::lqer>, lqer16, lqer16>(dir.path, 0, true);
}

TEST_CASE("a model file: many layers, the application's tensors and metadata, listed without their types") {
  using W = default_weight_format;
  using Lr = default_lowrank_format;
  io::checkpoint_writer w;
  std::vector<lqer_layer<W, Lr>> layers;
  for (int i = 0; i < 12; ++i) layers.push_back(make_layer<W, Lr>(16 + 16 * (i % 3), 32, i % 4 * 2, i % 2 == 0, i));
  // Names with dots, and one that is a prefix of others.
  for (int i = 0; i < 12; ++i) w.add("blk." + std::to_string(i) + ".attn", layers[static_cast<std::size_t>(i)]);
  w.add("blk", make_layer<q4_0, q8_0>(8, 64, 4, true, 99), {"whiten", "exact"});  // moved in
  const std::vector<float> emb = values(10 * 4, 1, 1.0f);
  w.add_tensor("token_embd", std::vector<index_t>{10, 4}, std::span<const float>(emb));
  w.set_metadata("general.architecture", "llama");
  CHECK(w.size() == 13);
  temp_dir dir("checkpoint");
  w.write(dir.path / "model.safetensors");

  const checkpoint_file f = checkpoint_file::open(dir.path / "model.safetensors");
  CHECK(f.layers().size() == 13);
  CHECK(f.writer_version() == kVersionString);
  for (std::size_t i = 1; i < f.layers().size(); ++i) CHECK(f.layers()[i - 1].name < f.layers()[i].name);
  CHECK(f.layers()[0].name == "blk");
  CHECK(f.layer("blk").weight_format == "int4_g32_sext_f16");
  CHECK(f.layer("blk").policy == "whiten");
  for (int i = 0; i < 12; ++i) {
    const std::string name = "blk." + std::to_string(i) + ".attn";
    CAPTURE(name);
    check_same_layer(f.load<W, Lr>(name), layers[static_cast<std::size_t>(i)]);
    CHECK(f.layer(name).rank == i % 4 * 2);
  }
  CHECK(f.find_layer("blk.12.attn") == nullptr);
  CHECK(f.tensor("token_embd").to_vector<float>() == emb);
  CHECK(f.file().metadata().at("general.architecture") == "llama");
  for (const auto& c : f.checksums()) CHECK(c.ok());
  CHECK_NOTHROW(f.verify_all());
  CHECK_THROWS_WITH_AS(f.layer("nope"), doctest::Contains("has no layer \"nope\" (it holds 13 layers: \"blk\""),
                       value_error);
}

TEST_CASE("the writer refuses what it could not write or a reader could not tell apart") {
  using W = default_weight_format;
  using Lr = default_lowrank_format;
  const auto layer = make_layer<W, Lr>(16, 32, 4, true, 1);
  io::checkpoint_writer w;
  w.add("a", layer);
  CHECK_THROWS_WITH_AS(w.add("a", layer), doctest::Contains("already added"), value_error);
  CHECK_THROWS_AS(w.add("", layer), value_error);
  CHECK_THROWS_AS(w.add("bad\xff", layer), value_error);
  const std::vector<float> v(4);
  CHECK_THROWS_WITH_AS(w.add_tensor("a.wq.codes", std::vector<index_t>{4}, std::span<const float>(v)),
                       doctest::Contains("already added"), value_error);
  CHECK_THROWS_AS(w.add_tensor("x", std::vector<index_t>{5}, std::span<const float>(v)), shape_error);
  w.add_tensor("b.wq.codes", std::vector<index_t>{4}, std::span<const float>(v));
  CHECK_THROWS_WITH_AS(w.add("b", layer), doctest::Contains("is taken"), value_error);
  CHECK_THROWS_WITH_AS(w.set_metadata("lqer.mine", "x"), doctest::Contains("\"lqer.\" namespace"), value_error);
  auto broken = layer;
  broken.bias.pop_back();
  CHECK_THROWS_WITH_AS(w.add("c", broken), doctest::Contains("bias"), shape_error);
  CHECK(w.size() == 1);
  // A failed write leaves no file.
  temp_dir dir("checkpoint");
  CHECK_THROWS_AS(w.write(dir.path / "missing" / "x.safetensors"), io_error);
  CHECK(fs::is_empty(dir.path));
}

TEST_CASE("every way a checkpoint can be bad is a typed error naming the file, the layer and the tensor") {
  using W = mxint<4, 16, mx_rule::lqer>;
  using Lr = mxint<8, 16, mx_rule::lqer>;
  using A = intq<4, 32, int_scheme::asymmetric, scale_dtype::f16>;
  io::checkpoint_writer w;
  w.add("l", make_layer<W, Lr>(8, 40, 4, true, 3));
  w.add("z", make_layer<A, Lr>(4, 64, 2, false, 4));
  w.add("m", make_layer<q4_1, q8_0>(4, 64, 2, false, 6));  // a block minimum: m.wq.mins
  const std::vector<std::byte> good = w.encode();
  const std::string file = "ck.safetensors";
  const auto open = [&](const std::vector<std::byte>& b, bool verify = true) {
    io::load_options o;
    o.verify_checksums = verify;
    return checkpoint_file::from_bytes(b, file, o);
  };
  CHECK_NOTHROW(open(good).load<W, Lr>("l"));

  {  // format mismatch: a typed error naming both formats
    const checkpoint_file f = open(good);
    CHECK_THROWS_WITH_AS((f.load<mxint<4, 32, mx_rule::lqer>, Lr>("l")),
                         doctest::Contains("format mismatch: its weight format is mxint4_b16_lqer, but it was asked "
                                           "for as mxint4_b32_lqer"),
                         value_error);
    CHECK_THROWS_WITH_AS((f.load<W, mxint<8, 16, mx_rule::ocp>>("l")),
                         doctest::Contains("its low-rank format is mxint8_b16_lqer, but it was asked for as "
                                           "mxint8_b16_ocp"),
                         value_error);
  }

  const auto poke_byte = [](const std::string& tensor, std::size_t i, std::uint8_t v) {
    edit e;
    e.data[tensor] = test::put<std::uint8_t>(i, v);
    return e;
  };
  struct bad {
    const char* name;
    edit e;
    std::vector<std::string> needles;
    int kind;      // 0 parse_error, 1 unsupported_error
    bool at_open;  // refused by open(); otherwise by load of the layer named in the needles
    const char* layer;
  };
  edit checksum = poke_byte("l.wq.codes", 5, 0x77);
  checksum.keep_checksums = true;
  edit drop_codes, drop_zeros, drop_bias, drop_a, drop_mins;
  drop_mins.drop = {"m.wq.mins"};
  edit nan_min = poke_byte("m.wq.mins", 3, 0x7e);  // fp16 0x7e.. : NaN
  drop_codes.drop = {"l.b.codes"};
  drop_zeros.drop = {"z.wq.zeros"};
  drop_bias.drop = {"l.bias"};
  drop_a.drop = {"l.a.scales"};
  edit reshape;
  reshape.shape["l.wq.scales"] = {24};
  edit reshape2;
  reshape2.shape["l.wq.codes"] = {4, 48};  // 2-D, wrong number of lanes
  edit wrong_lanes_ok_bytes;
  wrong_lanes_ok_bytes.shape["l.wq.scales"] = {8, 4};  // lanes right, blocks wrong: a load-time check
  wrong_lanes_ok_bytes.data["l.wq.scales"] = [](std::vector<std::byte>& d) { d.resize(32, std::byte{127}); };
  edit retype;
  retype.dtype["l.a.scales"] = io::safetensors_dtype::u8;
  edit nan_scale = poke_byte("l.wq.scales", 3, 0xff);  // E8M0 NaN
  edit bad_code;
  bad_code.data["l.a.codes"] = test::put<std::int8_t>(0, -128);  // outside MXINT8's [−127, 127]
  edit padding = poke_byte("l.wq.codes", 23, 0x10);              // row 0, element 47 > in = 40: padding must be 0
  edit zero_point = poke_byte("z.wq.zeros", 1, 0x40);            // zero point 64 for a 4-bit format
  edit nan_bias;
  nan_bias.data["l.bias"] = test::put<float>(2, std::numeric_limits<float>::quiet_NaN());
  const std::vector<bad> cases = {
      {"checksum mismatch", checksum, {"layer \"l\"", "checksum mismatch in tensor \"l.wq.codes\""}, 0, false, "l"},
      {"unknown schema version",
       edit{}.set("lqer.schema_version", "7"),
       {"schema version 7", "reads version 1"},
       1,
       true,
       ""},
      {"schema version not a number", edit{}.set("lqer.schema_version", "1.0"), {"lqer.schema_version"}, 0, true, ""},
      {"not a checkpoint", edit{}.set("lqer.schema", "lqer.activation_stats"), {"not an lqer checkpoint"}, 0, true, ""},
      {"no schema at all", edit{}.set("lqer.schema", ""), {"not an lqer checkpoint", "lqer.schema"}, 0, true, ""},
      {"no lqer.version", edit{}.set("lqer.version", ""), {"lqer.version"}, 0, true, ""},
      {"missing tensor (B's codes)", drop_codes, {"layer \"l\"", "missing tensor \"l.b.codes\""}, 0, true, ""},
      {"missing tensor (A's scales)", drop_a, {"layer \"l\"", "missing tensor \"l.a.scales\""}, 0, true, ""},
      {"missing tensor (the bias)", drop_bias, {"layer \"l\"", "missing tensor \"l.bias\""}, 0, true, ""},
      {"missing tensor (zero points)", drop_zeros, {"layer \"z\"", "missing tensor \"z.wq.zeros\""}, 0, true, ""},
      {"missing tensor (block minima)", drop_mins, {"layer \"m\"", "missing tensor \"m.wq.mins\""}, 0, true, ""},
      {"a checksum without its tensor",
       edit{}.set("lqer.sha256.l.gone", std::string(64, 'a')),
       {"missing tensor \"l.gone\""},
       0,
       true,
       ""},
      {"a tensor without a checksum", edit{}.set("lqer.sha256.l.bias", ""), {"l.bias", "has no checksum"}, 0, true, ""},
      {"a checksum that is not hex",
       edit{}.set("lqer.sha256.l.bias", std::string(64, 'G')),
       {"64 lowercase hex"},
       0,
       true,
       ""},
      {"shape disagrees with the metadata (1-D scales)", reshape, {"layer \"l\"", "l.wq.scales", "2-D"}, 0, true, ""},
      {"shape disagrees with the metadata (lanes)", reshape2, {"layer \"l\"", "l.wq.codes", "8 lanes"}, 0, true, ""},
      {"shape disagrees with the metadata (blocks)",
       wrong_lanes_ok_bytes,
       {"layer \"l\"", "l.wq.scales\" (F8_E8M0, [8, 4])", "needs F8_E8M0 [8, 3]"},
       0,
       false,
       "l"},
      {"in_features disagrees with the tensors",
       edit{}.set("lqer.layer.l.in_features", "64"),
       {"layer \"l\"", "l.wq.codes", "needs U8 [8, 32]"},
       0,
       false,
       "l"},
      {"dtype disagrees with the format", retype, {"layer \"l\"", "l.a.scales\" (U8", "needs F8_E8M0"}, 0, false, "l"},
      {"rank beyond min(out, in)",
       edit{}.set("lqer.layer.l.rank", "9"),
       {"layer \"l\"", "rank 9 exceeds"},
       0,
       true,
       ""},
      {"rank not a number", edit{}.set("lqer.layer.l.rank", "-4"), {"layer \"l\"", "rank is \"-4\""}, 0, true, ""},
      {"out_features 0", edit{}.set("lqer.layer.l.out_features", "0"), {"layer \"l\"", "out_features"}, 0, true, ""},
      {"bias neither true nor false",
       edit{}.set("lqer.layer.l.bias", "yes"),
       {"layer \"l\"", "bias is \"yes\""},
       0,
       true,
       ""},
      {"bias false with a bias tensor",
       edit{}.set("lqer.layer.l.bias", "false"),
       {"layer \"l\"", "l.bias"},
       0,
       true,
       ""},
      {"another blocking", edit{}.set("lqer.layer.l.weight_axis", "rows"), {"layer \"l\"", "weight_axis"}, 0, true, ""},
      {"a missing metadata field",
       edit{}.set("lqer.layer.l.lowrank_axis", ""),
       {"layer \"l\"", "lowrank_axis"},
       0,
       true,
       ""},
      {"an unknown lqer key",
       edit{}.set("lqer.layer.l.alpha", "1"),
       {"unknown metadata key", "lqer.layer.l.alpha"},
       0,
       true,
       ""},
      {"an unknown lqer key of no layer",
       edit{}.set("lqer.mode", "x"),
       {"unknown metadata key \"lqer.mode\""},
       0,
       true,
       ""},
      {"an E8M0 NaN scale", nan_scale, {"layer \"l\"", "\"l.wq\"", "non-finite scale"}, 0, false, "l"},
      {"a code outside the format",
       bad_code,
       {"layer \"l\"", "\"l.a\"", "not a valid mxint8_b16_lqer code"},
       0,
       false,
       "l"},
      {"a non-zero padding code", padding, {"layer \"l\"", "\"l.wq\"", "padding code"}, 0, false, "l"},
      {"a zero point outside the format", zero_point, {"layer \"z\"", "zero point 64"}, 0, false, "z"},
      {"a NaN block minimum", nan_min, {"layer \"m\"", "\"m.wq\"", "non-finite minimum"}, 0, false, "m"},
      {"a NaN in the bias", nan_bias, {"layer \"l\"", "l.bias", "not finite"}, 0, false, "l"},
  };
  for (const bad& c : cases) {
    const std::string name = c.name;
    CAPTURE(name);
    const std::vector<std::byte> bytes = edited(good, c.e);
    const auto attempt = [&] {
      const checkpoint_file f = open(bytes);
      if (std::string(c.layer) == "z")
        (void)f.load<A, Lr>("z");
      else if (std::string(c.layer) == "m")
        (void)f.load<q4_1, q8_0>("m");
      else
        (void)f.load<W, Lr>("l");
    };
    bool threw = false;
    try {
      if (c.at_open)
        (void)open(bytes);
      else
        attempt();
    } catch (const error& e) {
      threw = true;
      const std::string msg = e.what();
      CAPTURE(msg);
      CHECK(msg.rfind(file, 0) == 0);  // starts with the file's name
      for (const auto& n : c.needles) CHECK_MESSAGE(msg.find(n) != std::string::npos, "should name: ", n);
      CHECK((c.kind == 1 ? dynamic_cast<const unsupported_error*>(&e) != nullptr
                         : dynamic_cast<const parse_error*>(&e) != nullptr));
    }
    CHECK(threw);
    if (!c.at_open) CHECK_NOTHROW(open(bytes));  // the damage is found where the layer is read
  }

  // Checksums may be skipped on request; a damaged layer does not stop the others.
  const std::vector<std::byte> damaged = edited(good, checksum);
  CHECK_NOTHROW(open(damaged, false).load<W, Lr>("l"));
  CHECK_NOTHROW(open(damaged).load<A, Lr>("z"));
  const auto report = open(damaged).checksums();
  CHECK(std::count_if(report.begin(), report.end(), [](const auto& c) { return !c.ok(); }) == 1);
  CHECK_THROWS_WITH_AS(open(damaged).verify_all(), doctest::Contains("l.wq.codes"), parse_error);
  CHECK_THROWS_WITH_AS(open(damaged).tensor("l.wq.codes"), doctest::Contains("checksum mismatch"), parse_error);

  // Truncated, empty, not safetensors at all, missing.
  for (const std::size_t keep : {std::size_t{0}, std::size_t{7}, std::size_t{40}, good.size() - 1}) {
    CAPTURE(keep);
    CHECK_THROWS_WITH_AS(open(std::vector<std::byte>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(keep))),
                         doctest::Contains(file.c_str()), parse_error);
  }
  CHECK_THROWS_AS(checkpoint_file::open("/nonexistent/ck.safetensors"), io_error);
  CHECK_THROWS_AS((load<W, Lr>(fs::path("/nonexistent/ck.safetensors"), "l")), io_error);
}

TEST_CASE("files written by another writer of the schema (the fuzz seeds) load — the bad ones are refused") {
  // tests/fuzz/make_checkpoint_corpus.py writes them from docs/checkpoint.md with Python's standard library.
  const fs::path dir = fs::path(LQER_TEST_DATA_DIR).parent_path() / "fuzz" / "corpus" / "checkpoint";
  using mx4 = mxint<4, 16, mx_rule::lqer>;
  using mx8 = mxint<8, 16, mx_rule::lqer>;
  using asym4 = intq<4, 32, int_scheme::asymmetric, scale_dtype::f16>;
  int valid = 0, bad = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    CAPTURE(name);
    // Everything a reader does with one file: open as what it says it is, load every layer.
    const auto read = [&] {
      const io::safetensors_file f = io::safetensors_file::open(e.path());
      if (f.metadata().at("lqer.schema") == "lqer.activation_stats") {
        (void)activation_stats::load(f);
        return;
      }
      const checkpoint_file ck = checkpoint_file::open(e.path());
      for (const auto& l : ck.layers()) {
        if (l.weight_format == mx4::name())
          (void)ck.load<mx4, mx8>(l.name);
        else if (l.weight_format == q4_0::name())
          (void)ck.load<q4_0, q8_0>(l.name);
        else
          (void)ck.load<asym4, mx8>(l.name);
      }
      ck.verify_all();
    };
    if (name.starts_with("valid_")) {
      CHECK_NOTHROW(read());
      ++valid;
    } else {
      CHECK_THROWS_AS(read(), error);
      ++bad;
    }
  }
  CHECK(valid >= 6);
  CHECK(bad >= 4);
}

TEST_CASE("Hugging Face's safetensors + numpy decode the checkpoint by the documented schema (LQER_PYTHON)") {
  const char* py = std::getenv("LQER_PYTHON");
  if (py == nullptr || *py == '\0') {
    MESSAGE(
        "LQER_PYTHON is not set (a python3 with the safetensors and numpy packages): the interop check "
        "tests/io/checkpoint_interop.py is skipped");
    return;
  }
  temp_dir dir("checkpoint");
  // One layer of each scale kind: E8M0 (both rules), fp32, fp16 with zero points, ggml's fp16 d; odd shapes.
  io::checkpoint_writer w;
  const auto l0 = make_layer<mxint<4, 16, mx_rule::lqer>, mxint<8, 16, mx_rule::lqer>>(24, 100, 8, true, 1);
  const auto l1 = make_layer<mxint<4, 32, mx_rule::ocp>, mxint<8, 32, mx_rule::ocp>>(10, 64, 5, false, 2);
  const auto l2 = make_layer<int4_g128_asym, intq<8, kPerRow>>(12, 130, 3, true, 3);
  const auto l3 = make_layer<q4_0, q8_0>(9, 96, 4, false, 4);
  const auto l4 =
      make_layer<intq<8, 16, int_scheme::symmetric, scale_dtype::f32>, mxint<2, 16, mx_rule::lqer>>(6, 17, 0, true, 5);
  w.add("model.layers.0.mlp", l0).add("l1", l1).add("l2", l2).add("l3", l3).add("l4", l4);
  const fs::path ck = dir.path / "model.safetensors";
  w.write(ck);
  // lqer's own dequantization of each matrix, as .npy beside it.
  const auto dump = [&](const std::string& name, const auto& m) {
    if (m.empty()) return;
    const std::vector<float> v = m.dequantize();
    const std::vector<index_t> shape{m.rows(), m.cols()};
    io::write_npy(dir.path / (name + ".npy"), v.data(), std::span<const index_t>(shape));
  };
  const auto dump_layer = [&](const std::string& name, const auto& l) {
    dump(name + ".wq", l.wq);
    dump(name + ".a", l.a);
    dump(name + ".b", l.b);
  };
  dump_layer("model.layers.0.mlp", l0);
  dump_layer("l1", l1);
  dump_layer("l2", l2);
  dump_layer("l3", l3);
  dump_layer("l4", l4);
  const fs::path script = fs::path(LQER_TEST_DATA_DIR).parent_path() / "io" / "checkpoint_interop.py";
  const fs::path log = dir.path / "interop.log";
  const std::string cmd = "'" + std::string(py) + "' '" + script.string() + "' '" + ck.string() + "' '" +
                          dir.path.string() + "' >'" + log.string() + "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(log);
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  MESSAGE("checkpoint_interop.py: ", out);
  CHECK(status == 0);
  CHECK(out.find("5 layers, 13 matrices decoded, all equal to lqer's") != std::string::npos);
}
