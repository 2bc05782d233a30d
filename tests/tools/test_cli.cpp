// The `lqer` program, run as a user runs it: `lqer quantize` on small .npy
// files written byte by byte here, checked against the library's fake_quantize
// on success, and against "exit 2, one line on stderr naming the problem, the
// output file untouched" on every kind of bad input. Then the checkpoint and
// statistics commands: factorize's layer.safetensors against its .npy files,
// forward from either form (the same bytes), inspect, and stats collect /
// merge against one collect over every batch (the same statistics, bit for
// bit) and factorize --stats against factorize --calib (the same layer file).
//
// Input dtype policy (documented in `lqer quantize --help`): float32 is used as
// is; float16, float64, int8 and uint8 are converted to float32 first (float64
// rounds to nearest, and a value beyond float32's range becomes ±Inf, which is
// then rejected naming its element); any other dtype is rejected.
//
// POSIX only (support/process.hpp runs the program through /bin/sh), like the
// program's other users. Each test case works in its own directory, because
// ctest runs the cases of this file as separate processes, in parallel.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "lqer/calib/activation_stats.hpp"
#include "lqer/io/checkpoint.hpp"
#include "lqer/io/npy.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/lqer.hpp"
#include "support/files.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;
using namespace lqer;

namespace {

using lqer::test::contains;
using lqer::test::npy_bytes;
using lqer::test::one_line;
using lqer::test::raw;
using lqer::test::run_lqer;
using lqer::test::run_result;
using lqer::test::slurp;
using lqer::test::write_bytes;

// ---------------------------------------------------------------------------
// Files

// std::string("(") + ...: GCC 12 warns falsely (-Wrestrict, GCC bug 105651) on
// `"literal" + std::string&&` once inlined at -O2/-O3; appending does not.
std::string shape2(index_t r, index_t c) {
  return std::string("(") + std::to_string(r) + ", " + std::to_string(c) + ")";
}

/// A deterministic, LLM-ish test matrix: a smooth pattern with varying row
/// scales and one larger column, so that blocks get different exponents.
std::vector<float> test_matrix(index_t rows, index_t cols) {
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      v[static_cast<std::size_t>(r * cols + c)] =
          static_cast<float>((0.5 + r) * std::sin(0.37 * double(c) + 1.3 * double(r)) * (c == 5 ? 8.0 : 1.0));
  return v;
}

// ---------------------------------------------------------------------------
// Running the program

/// A scratch directory for one test case; removed afterwards.
struct scratch {
  fs::path dir;
  explicit scratch(const std::string& name) {
    dir = fs::path(LQER_CLI_TEST_DIR) / (name + "." + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  fs::path operator/(const std::string& f) const { return dir / f; }

  run_result run(const std::vector<std::string>& args) const { return run_lqer(dir, args); }

  /// Files in the directory other than `keep`: an atomic writer leaves no temporaries.
  std::vector<std::string> stray_files(const std::vector<std::string>& keep) const {
    std::vector<std::string> stray;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string n = e.path().filename().string();
      if (std::find(keep.begin(), keep.end(), n) == keep.end()) stray.push_back(n);
    }
    return stray;
  }
};

template <class F>
std::vector<float> library_fake_quantize(const std::vector<float>& a, index_t rows, index_t cols, block_axis axis) {
  std::vector<float> out(a.size());
  fake_quantize<F>(matrix_view<const float>(a.data(), rows, cols), matrix_view<float>(out.data(), rows, cols), axis);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// Success

TEST_CASE("lqer quantize writes exactly what the library's fake_quantize gives") {
  scratch s("roundtrip");
  constexpr index_t rows = 7, cols = 150;  // tails for every block length
  const auto a = test_matrix(rows, cols);
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(rows, cols), raw(a)));

  struct invocation {
    std::vector<std::string> args;
    std::vector<float> expected;
    std::string name;  // what the summary line must name
  };
  const auto ax = block_axis::cols;
  const std::vector<invocation> cases = {
      {{"-f", "mxint4"}, library_fake_quantize<mxint<4, 32, mx_rule::ocp>>(a, rows, cols, ax), "mxint4_b32_ocp"},
      {{"-f", "mxint4", "--rule", "lqer"}, library_fake_quantize<mxint<4, 16, mx_rule::lqer>>(a, rows, cols, ax),
       "mxint4_b16_lqer"},
      {{"-f", "mxint8", "-b", "64", "--axis", "0"},
       library_fake_quantize<mxint<8, 64, mx_rule::ocp>>(a, rows, cols, block_axis::rows), "mxint8_b64_ocp"},
      {{"-f", "mxint2", "-r", "lqer"}, library_fake_quantize<mxint<2, 16, mx_rule::lqer>>(a, rows, cols, ax),
       "mxint2_b16_lqer"},
      {{"-f", "mxint3", "--block", "8"}, library_fake_quantize<mxint<3, 8, mx_rule::ocp>>(a, rows, cols, ax),
       "mxint3_b8_ocp"},
      {{"-f", "int8"}, library_fake_quantize<int8_per_row>(a, rows, cols, ax), "int8_row_sym_f32"},
      {{"-f", "int8", "--block", "0", "-a", "0"}, library_fake_quantize<int8_per_row>(a, rows, cols, block_axis::rows),
       "int8_row_sym_f32"},
      {{"-f", "int4", "--scheme", "asym", "--block", "128", "--scale", "f16"},
       library_fake_quantize<int4_g128_asym>(a, rows, cols, ax), "int4_g128_asym_f16"},
      {{"-f", "q4_0"}, library_fake_quantize<q4_0>(a, rows, cols, ax), "q4_0"},
      {{"-f", "q8_0", "-b", "32"}, library_fake_quantize<q8_0>(a, rows, cols, ax), "q8_0"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    std::vector<std::string> args = {"quantize"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    args.push_back((s / "W.npy").string());
    args.push_back((s / "Q.npy").string());
    const auto r = s.run(args);
    CHECK(r.exit_code == 0);
    CHECK(r.err.empty());
    CHECK(one_line(r.out));
    CHECK(contains(r.out, c.name));
    CHECK(contains(r.out, "bits/weight"));
    CHECK(contains(r.out, "relative Frobenius error"));
    CHECK(contains(r.out, "max abs error"));
    const auto q = io::read_npy_matrix(s / "Q.npy");  // float32 only: the program writes float32
    CHECK(q.rows == rows);
    CHECK(q.cols == cols);
    CHECK(q.data == c.expected);  // bit for bit: the same library code ran
  }
  CHECK(s.stray_files({"W.npy", "Q.npy"}).empty());
}

TEST_CASE("--quiet prints nothing — the summary reports the format's bits per weight") {
  scratch s("quiet");
  const auto a = test_matrix(4, 64);
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(4, 64), raw(a)));
  auto r = s.run({"quantize", "-q", "-f", "mxint4", (s / "W.npy").string(), (s / "Q.npy").string()});
  CHECK(r.exit_code == 0);
  CHECK(r.out.empty());
  CHECK(r.err.empty());
  CHECK(fs::exists(s / "Q.npy"));
  r = s.run({"quantize", "-f", "mxint4", (s / "W.npy").string(), (s / "Q.npy").string()});
  CHECK(contains(r.out, "4.250 bits/weight"));  // 4 + 8/32
  r = s.run({"quantize", "-f", "q4_0", (s / "W.npy").string(), (s / "Q.npy").string()});
  CHECK(contains(r.out, "4.500 bits/weight"));  // 4 + 16/32
}

TEST_CASE("float64 and float16 inputs are converted to float32 — the output is float32") {
  scratch s("convert");
  constexpr index_t rows = 3, cols = 40;
  const auto a = test_matrix(rows, cols);
  std::vector<double> d(a.begin(), a.end());
  for (auto& x : d) x += 1e-12;  // not representable in float32: the conversion must round
  std::vector<float> rounded(d.begin(), d.end());
  write_bytes(s / "W64.npy", npy_bytes("<f8", shape2(rows, cols), raw(d)));
  auto r = s.run({"quantize", "-f", "mxint8", (s / "W64.npy").string(), (s / "Q.npy").string()});
  CHECK(r.exit_code == 0);
  CHECK(io::read_npy_matrix(s / "Q.npy").data ==
        library_fake_quantize<mxint<8, 32, mx_rule::ocp>>(rounded, rows, cols, block_axis::cols));

  std::vector<half_bits> h;
  std::vector<float> from_half;
  for (float x : a) {
    h.push_back(float_to_half(x));
    from_half.push_back(half_to_float(h.back()));
  }
  write_bytes(s / "W16.npy", npy_bytes("<f2", shape2(rows, cols), raw(h)));
  r = s.run({"quantize", "-f", "q8_0", (s / "W16.npy").string(), (s / "Q.npy").string()});
  CHECK(r.exit_code == 0);
  CHECK(io::read_npy_matrix(s / "Q.npy").data == library_fake_quantize<q8_0>(from_half, rows, cols, block_axis::cols));
}

TEST_CASE("lqer --help, lqer quantize --help and lqer --version") {
  scratch s("help");
  auto r = s.run({"--help"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, "quantize"));
  r = s.run({"quantize", "--help"});
  CHECK(r.exit_code == 0);
  for (const char* word : {"--format", "--block", "--rule", "--axis", "--scheme", "--scale", "--quiet", "mxint2",
                           "mxint3", "mxint4", "mxint8", "int4", "int8", "q4_0", "q8_0", "ocp", "lqer"})
    CHECK_MESSAGE(contains(r.out, word), word);
  r = s.run({"--version"});
  CHECK(r.exit_code == 0);
  CHECK(contains(r.out, std::string("lqer ") + std::to_string(LQER_VERSION_MAJOR) + "." +
                            std::to_string(LQER_VERSION_MINOR)));
}

// ---------------------------------------------------------------------------
// Errors: exit 2, one line on stderr, the output file never created or changed

namespace {

/// Runs `lqer quantize <opts> IN OUT` where OUT already holds "old content"
/// (or, with `out` given, any path), and checks the error contract.
void check_rejected(const scratch& s, const std::vector<std::string>& opts, const fs::path& in,
                    const std::vector<std::string>& message_parts, const fs::path& out = {}) {
  const bool default_out = out.empty();
  const fs::path target = default_out ? s / "OUT.npy" : out;
  if (default_out) write_bytes(target, "old content");
  std::vector<std::string> args = {"quantize"};
  args.insert(args.end(), opts.begin(), opts.end());
  args.push_back(in.string());
  args.push_back(target.string());
  const auto r = s.run(args);
  CAPTURE(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  CHECK(one_line(r.err));
  for (const auto& part : message_parts) CHECK_MESSAGE(contains(r.err, part), part);
  if (default_out) CHECK(slurp(target) == "old content");
}

}  // namespace

TEST_CASE("bad input files: exit 2 with a message naming the file, output untouched") {
  scratch s("badfiles");
  const auto a = test_matrix(4, 32);
  const std::string good = npy_bytes("<f4", shape2(4, 32), raw(a));
  const std::vector<std::string> opts = {"-f", "mxint4"};

  SUBCASE("missing input file") { check_rejected(s, opts, s / "missing.npy", {"missing.npy"}); }
  SUBCASE("empty file") {
    write_bytes(s / "empty.npy", "");
    check_rejected(s, opts, s / "empty.npy", {"empty.npy"});
  }
  SUBCASE("not a .npy file") {
    write_bytes(s / "text.npy", "hello, this is not numpy\n");
    check_rejected(s, opts, s / "text.npy", {"text.npy"});
  }
  SUBCASE("truncated header") {
    write_bytes(s / "trunc_header.npy", good.substr(0, 40));
    check_rejected(s, opts, s / "trunc_header.npy", {"trunc_header.npy"});
  }
  SUBCASE("truncated data") {
    write_bytes(s / "trunc_data.npy", good.substr(0, good.size() - 5));
    check_rejected(s, opts, s / "trunc_data.npy", {"trunc_data.npy"});
  }
  SUBCASE("unsupported dtype (int32)") {
    std::vector<std::int32_t> ints(4 * 32, 7);
    write_bytes(s / "int32.npy", npy_bytes("<i4", shape2(4, 32), raw(ints)));
    check_rejected(s, opts, s / "int32.npy", {"int32.npy"});
  }
  SUBCASE("big-endian float32") {
    write_bytes(s / "be.npy", npy_bytes(">f4", shape2(4, 32), raw(a)));
    check_rejected(s, opts, s / "be.npy", {"be.npy"});
  }
  SUBCASE("1-D input") {
    write_bytes(s / "vec.npy", npy_bytes("<f4", "(128,)", raw(a)));
    check_rejected(s, opts, s / "vec.npy", {"vec.npy", "2-D"});
  }
  SUBCASE("3-D input") {
    write_bytes(s / "cube.npy", npy_bytes("<f4", "(2, 2, 32)", raw(a)));
    check_rejected(s, opts, s / "cube.npy", {"cube.npy"});
  }
  SUBCASE("empty matrix") {
    write_bytes(s / "zero.npy", npy_bytes("<f4", "(0, 32)", ""));
    check_rejected(s, opts, s / "zero.npy", {"zero.npy", "nothing to quantize"});
  }
}

TEST_CASE("non-finite data: exit 2 naming the file, row and column") {
  scratch s("nonfinite");
  const std::vector<std::string> opts = {"-f", "mxint4", "--rule", "lqer"};
  struct bad_value {
    float v;
    const char* name;
  };
  // (No structured binding here: Clang 14 cannot capture one in CAPTURE's lambda.)
  for (const bad_value& b : {bad_value{std::numeric_limits<float>::quiet_NaN(), "NaN"},
                             bad_value{std::numeric_limits<float>::infinity(), "+Inf"},
                             bad_value{-std::numeric_limits<float>::infinity(), "-Inf"}}) {
    const std::string name = b.name;
    CAPTURE(name);
    auto a = test_matrix(4, 32);
    a[1 * 32 + 2] = b.v;
    write_bytes(s / "bad.npy", npy_bytes("<f4", shape2(4, 32), raw(a)));
    check_rejected(s, opts, s / "bad.npy", {"bad.npy", "(1, 2)", name});
  }
  // float64 beyond float32's range becomes +Inf in the conversion and is reported as such.
  std::vector<double> d(4 * 32, 0.5);
  d[3 * 32 + 31] = 1e300;
  write_bytes(s / "huge64.npy", npy_bytes("<f8", shape2(4, 32), raw(d)));
  check_rejected(s, opts, s / "huge64.npy", {"huge64.npy", "(3, 31)", "+Inf"});
}

TEST_CASE("bad options: exit 2 with a sentence, nothing written") {
  scratch s("badopts");
  const auto a = test_matrix(4, 32);
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(4, 32), raw(a)));
  const fs::path in = s / "W.npy";
  check_rejected(s, {"-f", "mxint5"}, in, {"unknown format", "mxint5"});
  check_rejected(s, {"-f", "fp8"}, in, {"unknown format", "fp8"});
  check_rejected(s, {"-f", "mxint4", "-b", "24"}, in, {"mxint4", "--block", "24"});
  check_rejected(s, {"-f", "mxint4", "-b", "row"}, in, {"mxint4", "row"});
  check_rejected(s, {"-f", "mxint4", "-b", "abc"}, in, {"--block", "abc"});
  check_rejected(s, {"-f", "int8", "-b", "12"}, in, {"int8", "12"});
  check_rejected(s, {"-f", "q4_0", "-b", "16"}, in, {"q4_0", "32"});
  check_rejected(s, {"-f", "q8_0", "--rule", "lqer"}, in, {"--rule"});
  check_rejected(s, {"-f", "mxint4", "--scheme", "asym"}, in, {"--scheme"});
  check_rejected(s, {"-f", "int4", "--scheme", "nf4"}, in, {"--scheme"});
  check_rejected(s, {"-f", "int4", "--scale", "bf16"}, in, {"--scale"});
  check_rejected(s, {"-f", "mxint4", "--rule", "microsoft"}, in, {"--rule"});
  check_rejected(s, {"-f", "mxint4", "--axis", "2"}, in, {"--axis"});
  check_rejected(s, {"-f", "mxint4", "--no-such-option"}, in, {"--no-such-option"});
  check_rejected(s, {}, in, {"--format"});

  // No subcommand, an unknown one, a missing positional.
  auto r = s.run({});
  CHECK(r.exit_code == 2);
  CHECK(one_line(r.err));
  r = s.run({"quantise", "-f", "mxint4", in.string(), (s / "X.npy").string()});
  CHECK(r.exit_code == 2);
  CHECK(contains(r.err, "quantise"));
  r = s.run({"quantize", "-f", "mxint4", in.string()});
  CHECK(r.exit_code == 2);
  CHECK(one_line(r.err));
  CHECK(s.stray_files({"W.npy", "OUT.npy"}).empty());
}

TEST_CASE("bad output paths: exit 2 naming the path, nothing created") {
  scratch s("badout");
  const auto a = test_matrix(4, 32);
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(4, 32), raw(a)));
  const fs::path in = s / "W.npy";
  SUBCASE("output in a directory that does not exist") {
    check_rejected(s, {"-f", "mxint4"}, in, {"no_such_dir"}, s / "no_such_dir" / "Q.npy");
    CHECK(!fs::exists(s / "no_such_dir"));
  }
  SUBCASE("output path is a directory") {
    fs::create_directory(s / "outdir");
    check_rejected(s, {"-f", "mxint4"}, in, {"outdir"}, s / "outdir");
    CHECK(fs::is_directory(s / "outdir"));
    CHECK(fs::is_empty(s / "outdir"));
  }
  CHECK(s.stray_files({"W.npy", "outdir"}).empty());
}

// ---------------------------------------------------------------------------
// Checkpoints and statistics files

namespace {

std::vector<float> read_floats(const fs::path& p) { return io::read_npy_matrix(p).data; }

/// `lqer factorize` of W.npy with `middle` options into `out`; REQUIREs success.
void factorize_into(const scratch& s, const std::vector<std::string>& middle, const fs::path& out) {
  std::vector<std::string> args = {"factorize", "-q", "--weight", (s / "W.npy").string()};
  args.insert(args.end(), middle.begin(), middle.end());
  args.insert(args.end(), {"--out", out.string()});
  const run_result r = s.run(args);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}

}  // namespace

TEST_CASE("factorize writes layer.safetensors — forward reads either form to the same bytes — inspect lists it") {
  scratch s("checkpoint");
  constexpr index_t out = 16, in = 64, tokens = 40;
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(out, in), raw(test_matrix(out, in))));
  write_bytes(s / "X.npy", npy_bytes("<f4", shape2(tokens, in), raw(test_matrix(tokens, in))));
  write_bytes(s / "b.npy", npy_bytes("<f4", "(16,)", raw(std::vector<float>(16, 0.25f))));
  factorize_into(s, {"--calib", (s / "X.npy").string(), "--bias", (s / "b.npy").string(), "--rank", "8", "--name",
                     "blk.0.attn_q"},
                 s / "layer");
  const fs::path ck = s / "layer" / "layer.safetensors";
  REQUIRE(fs::exists(ck));

  // The checkpoint holds the layer whose dequantization the .npy files hold.
  using W = default_weight_format;
  using Lr = default_lowrank_format;
  const auto layer = load<W, Lr>(ck, "blk.0.attn_q");
  CHECK(layer.wq.dequantize() == read_floats(s / "layer" / "Wq.npy"));
  CHECK(layer.a.dequantize() == read_floats(s / "layer" / "A.npy"));
  CHECK(layer.b.dequantize() == read_floats(s / "layer" / "B.npy"));
  CHECK(layer.bias == std::vector<float>(16, 0.25f));
  const checkpoint_file f = checkpoint_file::open(ck);
  CHECK(f.layer("blk.0.attn_q").policy == "mean_abs");
  CHECK(f.layer("blk.0.attn_q").solver == "randomized");

  // forward: the directory, the file (its one layer), the file with --name: the same bytes.
  for (const char* mode : {"paper", "fused"}) {
    CAPTURE(mode);
    std::vector<std::string> ys;
    for (const std::vector<std::string>& layer_args :
         {std::vector<std::string>{"--layer", (s / "layer").string()}, std::vector<std::string>{"--layer", ck.string()},
          std::vector<std::string>{"--layer", ck.string(), "--name", "blk.0.attn_q"}}) {
      std::vector<std::string> args = {"forward", "-q", "--x", (s / "X.npy").string(), "--mode", mode, "--out",
                                       (s / "Y.npy").string()};
      args.insert(args.end(), layer_args.begin(), layer_args.end());
      const run_result r = s.run(args);
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      CHECK(r.err.empty());
      ys.push_back(slurp(s / "Y.npy"));
    }
    CHECK(ys[1] == ys[0]);
    CHECK(ys[2] == ys[0]);
  }

  // inspect: the layer, its formats, rank and bits per weight; every checksum.
  const run_result r = s.run({"inspect", ck.string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.empty());
  char bits[32];
  std::snprintf(bits, sizeof bits, "%.3f",
                8.0 * double(layer.storage_bytes() - layer.bias.size() * sizeof(float)) / double(out * in));
  for (const std::string& want :
       {std::string("lqer checkpoint, schema version 1"), std::string("blk.0.attn_q"), std::string("mxint4_b16_lqer"),
        std::string("mxint8_b16_lqer"), std::string("16 x 64"), std::string(bits), std::string("mean_abs, randomized"),
        std::string("blk.0.attn_q.wq.codes"), std::string("F8_E8M0"), std::string("checksums: 7 of 7 tensors verified"),
        std::string("matrices: 3 decoded")})
    CHECK_MESSAGE(contains(r.out, want), "inspect should print: ", want, "\n", r.out);
  const run_result nv = s.run({"inspect", "--no-verify", ck.string()});
  CHECK(nv.exit_code == 0);
  CHECK(contains(nv.out, "not verified"));

  // A file of several layers: forward needs --name, runs a llama.cpp layer
  // (Q4_0 with Q8_0 A/B, rank 0) with its Q8_0 activations, and refuses a
  // layer in a format it does not run, naming it; inspect lists and decodes all.
  io::checkpoint_writer w;
  w.add("blk.0.attn_q", layer);
  lqer_layer<q4_0, q8_0> ggml;
  const auto wv = test_matrix(out, in);
  ggml.wq = quantized_matrix<q4_0>::quantize(matrix_view<const float>(wv.data(), out, in));
  lqer_layer<int4_g128_asym, q8_0> gptq;
  gptq.wq = quantized_matrix<int4_g128_asym>::quantize(matrix_view<const float>(wv.data(), out, in));
  w.add("ggml", ggml);
  w.add("gptq", std::move(gptq));
  w.write(s / "two.safetensors");
  const run_result two = s.run({"inspect", (s / "two.safetensors").string()});
  INFO(two.err);
  CHECK(two.exit_code == 0);
  CHECK(contains(two.out, "int4_g32_sext_f16"));
  CHECK(contains(two.out, "matrices: 5 decoded"));
  CHECK(contains(two.out, "all layers:"));
  run_result fw = s.run({"forward", "-q", "--layer", (s / "two.safetensors").string(), "--x", (s / "X.npy").string(),
                         "--out", (s / "Y2.npy").string()});
  CHECK(fw.exit_code == 2);
  CHECK(contains(fw.err, "holds 3 layers: choose one with --name"));
  fw = s.run({"forward", "-q", "--layer", (s / "two.safetensors").string(), "--name", "ggml", "--x",
              (s / "X.npy").string(), "--mode", "fused", "--out", (s / "Y2.npy").string()});
  INFO(fw.err);
  REQUIRE(fw.exit_code == 0);
  {
    const auto x = test_matrix(tokens, in);
    std::vector<float> want(static_cast<std::size_t>(tokens * out));
    reference_forward<q8_0>(ggml, matrix_view<const float>(x.data(), tokens, in),
                            matrix_view<float>(want.data(), tokens, out), correction_mode::fused);
    CHECK(read_floats(s / "Y2.npy") == want);
  }
  fw = s.run({"forward", "-q", "--layer", (s / "two.safetensors").string(), "--name", "ggml", "--x",
              (s / "X.npy").string(), "--act-format", "mxint8", "--out", (s / "Y2.npy").string()});
  CHECK(fw.exit_code == 2);
  CHECK(contains(fw.err, "q4_0 layers take activations in q8_0"));
  fw = s.run({"forward", "-q", "--layer", (s / "two.safetensors").string(), "--name", "gptq", "--x",
              (s / "X.npy").string(), "--out", (s / "Y2.npy").string()});
  CHECK(fw.exit_code == 2);
  CHECK(contains(fw.err, "int4_g128_asym_f16"));
  CHECK(contains(fw.err, "neither an MX integer format"));
  fw = s.run({"forward", "-q", "--layer", (s / "two.safetensors").string(), "--name", "blk.0.attn_q", "--x",
              (s / "X.npy").string(), "--mode", "fused", "--out", (s / "Y2.npy").string()});
  CHECK(fw.exit_code == 0);
  CHECK(slurp(s / "Y2.npy") == slurp(s / "Y.npy"));  // Y.npy: the last run above, fused
}

TEST_CASE("factorize and forward take llama.cpp's layers: Q4_1 or Q4_0 weights with a Q8_0 correction, block 32") {
  scratch s("ggml_layers");
  constexpr index_t out = 24, in = 96, tokens = 30;
  auto wv = test_matrix(out, in);
  for (index_t c = 0; c < in; ++c) wv[static_cast<std::size_t>(c)] = 0.5f + 0.01f * float(c);  // a one-signed row
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(out, in), raw(wv)));
  const auto x = test_matrix(tokens, in);
  write_bytes(s / "X.npy", npy_bytes("<f4", shape2(tokens, in), raw(x)));
  for (const char* wf : {"q4_1", "q4_0"}) {
    CAPTURE(wf);
    const fs::path dir = s / wf;
    // Block 32 by default for llama.cpp's formats (the MX default is 16).
    factorize_into(s, {"--calib", (s / "X.npy").string(), "--rank", "6", "--w-format", wf, "--lr-format", "q8_0"},
                   dir);
    const auto report = slurp(dir / "report.json");
    CHECK(contains(report, std::string("\"format\": \"") + wf + "\""));
    CHECK(contains(report, "\"block\": 32"));
    // Wq.npy is llama.cpp's own encoding of W (the library's q4_0 / q4_1, checked against ggml's vectors).
    const std::vector<float> want_wq =
        std::string(wf) == "q4_1"
            ? quantized_matrix<q4_1>::quantize(matrix_view<const float>(wv.data(), out, in)).dequantize()
            : quantized_matrix<q4_0>::quantize(matrix_view<const float>(wv.data(), out, in)).dequantize();
    CHECK(read_floats(dir / "Wq.npy") == want_wq);
    // forward: the directory (re-encoded from its .npy files) and the checkpoint give the same bytes, the
    // library's reference_forward with Q8_0 activations.
    std::vector<std::string> ys;
    for (const fs::path& layer : {dir, dir / "layer.safetensors"}) {
      const run_result r = s.run({"forward", "--layer", layer.string(), "--x", (s / "X.npy").string(), "--mode",
                                  "fused", "--out", (s / "Y.npy").string()});
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      CHECK(r.err.empty());  // no "not representable" warning: the round trip was exact
      CHECK(contains(r.out, "activations q8_0 block 32)"));
      ys.push_back(slurp(s / "Y.npy"));
    }
    CHECK(ys[0] == ys[1]);
    std::vector<float> want(static_cast<std::size_t>(tokens * out));
    const auto run = [&]<class WF>(std::type_identity<WF>) {
      const auto layer = load<WF, q8_0>(dir / "layer.safetensors", "layer");
      reference_forward<q8_0>(layer, matrix_view<const float>(x.data(), tokens, in),
                              matrix_view<float>(want.data(), tokens, out), correction_mode::fused);
    };
    if (std::string(wf) == "q4_1")
      run(std::type_identity<q4_1>{});
    else
      run(std::type_identity<q4_0>{});
    CHECK(read_floats(s / "Y.npy") == want);
  }
  // The pairing and the block are the table's: anything else is a usage error naming it.
  const auto refused = [&](const std::vector<std::string>& middle, const std::string& needle) {
    std::vector<std::string> args = {"factorize", "-q", "--weight", (s / "W.npy").string(), "--calib",
                                     (s / "X.npy").string()};
    args.insert(args.end(), middle.begin(), middle.end());
    args.insert(args.end(), {"--out", (s / "bad").string()});
    const run_result r = s.run(args);
    CHECK(r.exit_code == 2);
    CHECK_MESSAGE(contains(r.err, needle), r.err);
    CHECK_FALSE(fs::exists(s / "bad"));
  };
  refused({"--w-format", "q4_1"}, "only, not q4_1 weights with mxint8 A/B");
  refused({"--w-format", "mxint4", "--lr-format", "q8_0"}, "only, not mxint4 weights with q8_0 A/B");
  refused({"--w-format", "q4_0", "--lr-format", "q8_0", "--w-block", "16"}, "q4_0 has blocks of 32 only, not 16");
  refused({"--w-format", "q8_0", "--lr-format", "q8_0"}, "only, not q8_0 weights");
}

TEST_CASE("stats collect + merge equal one collect — factorize --stats equals factorize --calib") {
  scratch s("stats");
  constexpr index_t out = 16, in = 48;
  write_bytes(s / "W.npy", npy_bytes("<f4", shape2(out, in), raw(test_matrix(out, in))));
  // Three parts of a calibration set, of uneven sizes, with an outlier channel.
  const index_t rows[] = {37, 5, 90};
  std::vector<std::string> parts;
  for (int p = 0; p < 3; ++p) {
    std::vector<float> x = test_matrix(rows[p] + 3 * p, in);
    x.erase(x.begin(), x.begin() + 3 * p * in);  // different rows for each part
    for (index_t t = 0; t < rows[p]; ++t) x[static_cast<std::size_t>(t * in + 7)] *= 40.0f;
    const std::string name = "X" + std::to_string(p) + ".npy";
    write_bytes(s / name, npy_bytes("<f4", shape2(rows[p], in), raw(x)));
    parts.push_back((s / name).string());
  }
  const auto collect = [&](const std::vector<std::string>& files, const std::string& outfile) {
    std::vector<std::string> args = {"stats", "collect", "--gram", "--batch-tokens", "16", "--out",
                                     (s / outfile).string()};
    for (const auto& f : files) args.insert(args.end(), {"--calib", f});
    const run_result r = s.run(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r.out;
  };
  CHECK(contains(collect(parts, "all.safetensors"), "48 channels, 132 tokens in 10 batches, Gram matrix yes"));
  collect({parts[0]}, "s0.safetensors");
  collect({parts[1], parts[2]}, "s12.safetensors");
  collect({parts[2]}, "s2.safetensors");
  collect({parts[1]}, "s1.safetensors");
  // Merged in two groupings: (s0 + s12) and (s2 + s1) + s0 — other orders, the same statistics.
  const run_result m = s.run({"stats", "merge", (s / "s0.safetensors").string(), (s / "s12.safetensors").string(),
                              "--out", (s / "m.safetensors").string()});
  INFO(m.err);
  REQUIRE(m.exit_code == 0);
  CHECK(contains(m.out, "132 tokens in 10 batches"));
  REQUIRE(s.run({"stats", "merge", "-q", (s / "s2.safetensors").string(), (s / "s1.safetensors").string(),
                 (s / "s0.safetensors").string(), "--out", (s / "m2.safetensors").string()})
              .exit_code == 0);
  const activation_stats all = activation_stats::load(s / "all.safetensors");
  for (const char* merged : {"m.safetensors", "m2.safetensors"}) {
    CAPTURE(merged);
    const activation_stats got = activation_stats::load(s / merged);
    CHECK(got.tokens() == all.tokens());
    CHECK(got.batches() == all.batches());
    CHECK(got.mean_abs() == all.mean_abs());
    CHECK(got.mean_square() == all.mean_square());
    CHECK(got.batch_mean_abs_max() == all.batch_mean_abs_max());
    CHECK(got.gram() == all.gram());
  }
  const run_result in_ = s.run({"inspect", (s / "m.safetensors").string()});
  INFO(in_.err);
  CHECK(in_.exit_code == 0);
  CHECK(contains(in_.out, "lqer calibration statistics"));
  CHECK(contains(in_.out, "in_features 48, 132 tokens in 10 batches, Gram matrix yes"));
  CHECK(contains(in_.out, "checksums: 7 of 7 tensors verified"));

  // The same layer from the activations and from the merged statistics: the same files.
  for (const char* policy : {"mean_abs", "whiten"}) {
    CAPTURE(policy);
    std::vector<std::string> calib = {"--policy", policy, "--rank", "4", "--batch-tokens", "16"};
    for (const auto& p : parts) calib.insert(calib.end(), {"--calib", p});
    factorize_into(s, calib, s / "from_calib");
    factorize_into(s, {"--policy", policy, "--rank", "4", "--stats", (s / "m2.safetensors").string()},
                   s / "from_stats");
    for (const char* file : {"layer.safetensors", "Wq.npy", "A.npy", "B.npy"})
      CHECK_MESSAGE(slurp(s / "from_calib" / file) == slurp(s / "from_stats" / file), file);
  }
}
