// The bad-input matrix of the `lqer` program (issue 7): every input file of
// every subcommand × every way a file can be bad, and every subcommand × every
// way its output path can be bad. Each cell runs the program as a process on a
// fresh copy of a directory of good inputs with one thing broken, and expects
//
//   exit status 2, nothing on stdout, exactly one line on stderr naming the
//   file and the problem, and the directory byte-for-byte as it was before the
//   run: no output created or modified, no input touched, no temporary left.
//
// The last check is one snapshot comparison of the whole directory tree (every
// path and its bytes), so "no stray temp file" and "output untouched" cannot
// be forgotten for a single cell. The outputs exist before the run with known
// bytes ("old content"), so a run that rewrote them would be caught.
//
// Inputs the program converts on purpose (lqer quantize IN, factorize --weight,
// --calib and --bias, forward --x: float16/float64/int8/uint8 → float32, see
// their --help) get a float64 file as a cell that must SUCCEED; the layer
// directory's files are written by `lqer factorize` as float32 and must be
// float32, so there a float64 file is a cell that must fail. int32 is not a
// dtype lqer reads anywhere.
//
// lqer's own files (a layer's checkpoint DIR/layer.safetensors, statistics
// files from `lqer stats collect`) get a matrix of their own: every entry point
// that reads one (forward --layer FILE, inspect, stats merge, factorize
// --stats) × every way such a file can be bad — missing, empty, truncated, a
// checksum mismatch, an unknown schema version, a missing tensor, the other
// lqer schema or none, a shape or format that disagrees with the metadata, a
// statistics file of the wrong width or Gram mode.
//
// Root cannot be stopped by a read-only directory: when mode 0500 turns out
// not to stop this user, the read-only cell says so in a MESSAGE and writes
// into /proc instead, where no user can create a file or a directory.
//
// POSIX only (support/process.hpp runs the program through /bin/sh), like
// test_cli.cpp.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <tuple>
#include <string>
#include <vector>

#include "lqer/config.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/safetensors_edit.hpp"

namespace fs = std::filesystem;
using lqer::index_t;

namespace {

using lqer::test::check_refused;
using lqer::test::npy_bytes;
using lqer::test::raw;
using lqer::test::run_lqer;
using lqer::test::run_result;
using lqer::test::slurp;
using lqer::test::write_bytes;

// ---------------------------------------------------------------------------
// Files

/// numpy's shape tuple: (n,) or (r, c). Appended piece by piece: GCC 12 warns
/// falsely (-Wrestrict, bug 105651) on `"literal" + std::string&&` at -O2.
std::string shape_text(const std::vector<index_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  if (dims.size() == 1) s += ',';
  s += ')';
  return s;
}

/// Deterministic values of a few magnitudes, none zero.
std::vector<float> values(std::size_t n, double scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(scale * std::sin(0.37 * double(i) + 0.2) + 0.01 * scale);
  return v;
}

// ---------------------------------------------------------------------------
// The good inputs, shared by every cell
//
//   W.npy      [8, 32]   weight (out = 8, in = 32: two blocks of 16)
//   X.npy      [6, 32]   calibration activations
//   b.npy      [8]       bias
//   Xf.npy     [5, 32]   activations for forward
//   layer/               written by `lqer factorize` from the above, rank 4
//                        (its .npy files and layer.safetensors)
//   S.safetensors        `lqer stats collect` of X.npy; S2 of Xf.npy; Sg of X.npy
//                        with --gram; Sw of Xw.npy [6, 48], another width
//   out.npy              "old content" (the output of quantize / forward)
//   out.safetensors      "old content" (the output of stats collect / merge)
//   outdir/report.json   "old content" (the output directory of factorize)

constexpr index_t kOut = 8, kIn = 32, kCalib = 6, kTokens = 5, kRank = 4;
const std::string kOld = "old content";

/// A directory holding the good inputs; each cell copies it.
struct fixture : lqer::test::cell_directories {
  explicit fixture(const std::string& name)
      : cell_directories(fs::path(LQER_CLI_TEST_DIR) / ("matrix_" + name + "." + std::to_string(::getpid()))) {
    write_bytes(tmpl / "W.npy", npy_bytes("<f4", shape_text({kOut, kIn}), raw(values(kOut * kIn, 1.0))));
    write_bytes(tmpl / "X.npy", npy_bytes("<f4", shape_text({kCalib, kIn}), raw(values(kCalib * kIn, 3.0))));
    write_bytes(tmpl / "b.npy", npy_bytes("<f4", shape_text({kOut}), raw(values(kOut, 0.5))));
    write_bytes(tmpl / "Xf.npy", npy_bytes("<f4", shape_text({kTokens, kIn}), raw(values(kTokens * kIn, 2.0))));
    const run_result f = run_lqer(root, {"factorize", "-q", "--weight", (tmpl / "W.npy").string(), "--calib",
                                         (tmpl / "X.npy").string(), "--bias", (tmpl / "b.npy").string(), "--rank",
                                         std::to_string(kRank), "--out", (tmpl / "layer").string()});
    INFO(f.err);
    REQUIRE(f.exit_code == 0);
    for (const char* file : {"Wq.npy", "A.npy", "B.npy", "bias.npy", "report.json", "layer.safetensors"})
      REQUIRE(fs::exists(tmpl / "layer" / file));
    write_bytes(tmpl / "Xw.npy", npy_bytes("<f4", shape_text({kCalib, kIn + 16}), raw(values(kCalib * (kIn + 16), 3.0))));
    for (const auto& [x, stats, gram] : {std::tuple{"X.npy", "S.safetensors", false},
                                         std::tuple{"Xf.npy", "S2.safetensors", false},
                                         std::tuple{"X.npy", "Sg.safetensors", true},
                                         std::tuple{"Xw.npy", "Sw.safetensors", false}}) {
      std::vector<std::string> args = {"stats", "collect", "-q", "--calib", (tmpl / x).string(), "--out",
                                       (tmpl / stats).string()};
      if (gram) args.push_back("--gram");
      const run_result c = run_lqer(root, args);
      INFO(c.err);
      REQUIRE(c.exit_code == 0);
    }
    write_bytes(tmpl / "out.npy", kOld);
    write_bytes(tmpl / "out.safetensors", kOld);
    fs::create_directory(tmpl / "outdir");
    write_bytes(tmpl / "outdir" / "report.json", kOld);
  }
};

/// The command line of a subcommand on the inputs in `d`, writing to `out`
/// (out.npy or outdir by default).
std::vector<std::string> command_line(const std::string& cmd, const fs::path& d, const fs::path& out) {
  if (cmd == "quantize") return {"quantize", "-q", "-f", "mxint4", (d / "W.npy").string(), out.string()};
  if (cmd == "factorize")
    return {"factorize", "-q",     "--weight", (d / "W.npy").string(), "--calib",          (d / "X.npy").string(),
            "--bias",    (d / "b.npy").string(), "--rank", std::to_string(kRank), "--out", out.string()};
  if (cmd == "collect") return {"stats", "collect", "-q", "--calib", (d / "X.npy").string(), "--out", out.string()};
  if (cmd == "merge")
    return {"stats", "merge", "-q", (d / "S.safetensors").string(), (d / "S2.safetensors").string(), "--out",
            out.string()};
  if (cmd == "inspect") return {"inspect", (d / "layer" / "layer.safetensors").string()};
  if (cmd == "forward-checkpoint")
    return {"forward", "-q", "--layer", (d / "layer" / "layer.safetensors").string(), "--x", (d / "Xf.npy").string(),
            "--out", out.string()};
  if (cmd == "factorize-stats")
    return {"factorize", "-q", "--weight", (d / "W.npy").string(), "--stats", (d / "S.safetensors").string(),
            "--rank", std::to_string(kRank), "--out", out.string()};
  return {"forward", "-q", "--layer", (d / "layer").string(), "--x", (d / "Xf.npy").string(), "--out", out.string()};
}

fs::path default_out(const std::string& cmd, const fs::path& d) {
  if (cmd.starts_with("factorize")) return d / "outdir";
  return cmd == "collect" || cmd == "merge" ? d / "out.safetensors" : d / "out.npy";
}

// ---------------------------------------------------------------------------
// The table: input roles × corruptions

/// One input file of one subcommand.
struct role {
  const char* command;     // quantize / factorize / forward
  const char* file;        // relative to the cell directory
  std::vector<index_t> shape;  // its good shape (1-D for vectors)
  bool converts;           // read with npy_convert::any_to_float32
  bool optional;           // the program runs without it (then "missing" must succeed)
  std::vector<index_t> mismatch;  // a shape fine alone but not with the other inputs; empty: no other input
};

const std::vector<role>& roles() {
  static const std::vector<role> r = {
      {"quantize", "W.npy", {kOut, kIn}, true, false, {}},
      {"factorize", "W.npy", {kOut, kIn}, true, false, {kOut, kIn + 16}},
      {"factorize", "X.npy", {kCalib, kIn}, true, false, {kCalib, kIn + 16}},
      {"factorize", "b.npy", {kOut}, true, false, {kOut - 1}},
      {"forward", "Xf.npy", {kTokens, kIn}, true, false, {kTokens, kIn + 16}},
      {"forward", "layer/Wq.npy", {kOut, kIn}, false, false, {kOut, kIn + 16}},
      {"forward", "layer/A.npy", {kIn, kRank}, false, false, {kIn + 16, kRank}},
      {"forward", "layer/B.npy", {kRank, kOut}, false, false, {kRank, kOut + 1}},
      {"forward", "layer/bias.npy", {kOut}, false, true, {kOut + 1}},
      {"collect", "X.npy", {kCalib, kIn}, true, false, {}},
  };
  return r;
}

index_t count(const std::vector<index_t>& shape) {
  index_t n = 1;
  for (const index_t d : shape) n *= d;
  return n;
}

/// One way of breaking a file: writes it (or removes it) and says what stderr must mention.
struct corruption {
  const char* name;
  /// Makes the file bad; returns the words the message must contain besides
  /// the file name, or sets `expect_ok` when the program must accept it.
  std::function<std::vector<std::string>(const fs::path& file, const role& r, bool& expect_ok)> apply;
};

std::string good_npy(const role& r) {
  return npy_bytes("<f4", shape_text(r.shape), raw(values(static_cast<std::size_t>(count(r.shape)), 1.0)));
}

/// The file with element `i` (row-major) replaced by `v`; the message names the value.
std::string with_value(const role& r, std::size_t i, float v) {
  auto data = values(static_cast<std::size_t>(count(r.shape)), 1.0);
  data[i] = v;
  return npy_bytes("<f4", shape_text(r.shape), raw(data));
}

const std::vector<corruption>& corruptions() {
  static const std::vector<corruption> c = {
      {"missing file",
       [](const fs::path& f, const role& r, bool& ok) -> std::vector<std::string> {
         fs::remove(f);
         ok = r.optional;
         // A.npy without B.npy (or the reverse) is reported as the broken pair.
         const std::string name = f.filename().string();
         if (name == "A.npy" || name == "B.npy") return {"the factors come in pairs"};
         return {"no such file"};
       }},
      {"empty file",
       [](const fs::path& f, const role&, bool&) -> std::vector<std::string> {
         write_bytes(f, "");
         return {"truncated"};
       }},
      {"truncated header",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         write_bytes(f, good_npy(r).substr(0, 40));
         return {"truncated"};
       }},
      {"truncated data",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         const std::string g = good_npy(r);
         write_bytes(f, g.substr(0, g.size() - 5));
         return {"truncated"};
       }},
      {"dtype int32 (read nowhere)",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         write_bytes(f, npy_bytes("<i4", shape_text(r.shape),
                                  raw(std::vector<std::int32_t>(static_cast<std::size_t>(count(r.shape)), 3))));
         return {"dtype"};
       }},
      {"dtype float64 (converted, or refused where float32 is required)",
       [](const fs::path& f, const role& r, bool& ok) -> std::vector<std::string> {
         std::vector<double> d(static_cast<std::size_t>(count(r.shape)));
         const auto v = values(d.size(), 1.0);
         for (std::size_t i = 0; i < d.size(); ++i) d[i] = v[i];
         write_bytes(f, npy_bytes("<f8", shape_text(r.shape), raw(d)));
         ok = r.converts;
         return {"float32", "float64"};
       }},
      {"wrong number of dimensions (3-D)",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         const index_t n = count(r.shape);
         write_bytes(f, npy_bytes("<f4", shape_text({1, 1, n}), raw(values(static_cast<std::size_t>(n), 1.0))));
         return {"3-D"};
       }},
      {"wrong number of dimensions (vector <-> matrix)",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         const index_t n = count(r.shape);
         const std::vector<index_t> other = r.shape.size() == 1 ? std::vector<index_t>{1, n} : std::vector<index_t>{n};
         write_bytes(f, npy_bytes("<f4", shape_text(other), raw(values(static_cast<std::size_t>(n), 1.0))));
         return {r.shape.size() == 1 ? "1-D" : "2-D"};
       }},
      {"shape mismatch with the other inputs",
       [](const fs::path& f, const role& r, bool& ok) -> std::vector<std::string> {
         if (r.mismatch.empty()) {  // a single input: nothing to mismatch, the cell is the good file
           ok = true;
           return {};
         }
         write_bytes(f, npy_bytes("<f4", shape_text(r.mismatch),
                                  raw(values(static_cast<std::size_t>(count(r.mismatch)), 1.0))));
         return {};
       }},
      {"empty array (a dimension of 0)",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         std::vector<index_t> empty = r.shape;
         empty[0] = 0;
         write_bytes(f, npy_bytes("<f4", shape_text(empty), ""));
         return {};
       }},
      {"NaN",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         write_bytes(f, with_value(r, 2, std::numeric_limits<float>::quiet_NaN()));
         return {"NaN"};
       }},
      {"+Inf",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         write_bytes(f, with_value(r, 3, std::numeric_limits<float>::infinity()));
         return {"+Inf"};
       }},
      {"-Inf",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         write_bytes(f, with_value(r, 4, -std::numeric_limits<float>::infinity()));
         return {"-Inf"};
       }},
      {"header declaring 2^40 elements",
       [](const fs::path& f, const role& r, bool&) -> std::vector<std::string> {
         const std::vector<index_t> huge =
             r.shape.size() == 1 ? std::vector<index_t>{index_t{1} << 40} : std::vector<index_t>{index_t{1} << 20, index_t{1} << 20};
         write_bytes(f, npy_bytes("<f4", shape_text(huge), raw(values(16, 1.0))));
         return {"elements"};
       }},
  };
  return c;
}

void run_input_matrix(const std::string& command) {
  fixture fx(command + "_inputs");
  int cells = 0, refused = 0;
  for (const role& r : roles()) {
    if (command != r.command) continue;
    for (const corruption& c : corruptions()) {
      const std::string role_name = std::string(r.command) + " " + r.file, corruption_name = c.name;
      CAPTURE(role_name);
      CAPTURE(corruption_name);
      const fs::path d = fx.cell("cell" + std::to_string(cells++));
      const fs::path file = d / r.file;
      bool expect_ok = false;
      std::vector<std::string> needles = c.apply(file, r, expect_ok);
      const auto args = command_line(r.command, d, default_out(r.command, d));
      if (expect_ok) {
        const run_result res = run_lqer(fx.root, args);
        CAPTURE(res.err);
        CHECK(res.exit_code == 0);
      } else {
        needles.push_back(file.filename().string());
        check_refused(fx.root, d, args, needles);
        ++refused;
      }
      fs::remove_all(d);
    }
  }
  MESSAGE(command, ": ", cells, " input cells, ", refused, " must be refused");
  CHECK(cells > 0);
}

}  // namespace

TEST_CASE("bad-input matrix: lqer quantize IN.npy") { run_input_matrix("quantize"); }
TEST_CASE("bad-input matrix: lqer factorize --weight, --calib, --bias") { run_input_matrix("factorize"); }
TEST_CASE("bad-input matrix: lqer forward --x and the layer directory's .npy files") { run_input_matrix("forward"); }

TEST_CASE("bad-input matrix: lqer stats collect --calib") { run_input_matrix("collect"); }

TEST_CASE("bad-input matrix: lqer forward DIR/report.json") {
  fixture fx("report");
  const std::string good = slurp(fx.tmpl / "layer" / "report.json");
  struct bad_report {
    const char* name;
    std::string bytes;  // "" with missing = true: removed
    bool missing;
    const char* needle;
  };
  // report.json with its first occurrence of `from` replaced by `to`.
  const auto edited = [&](const std::string& from, const std::string& to) {
    std::string r = good;
    const auto pos = r.find(from);
    REQUIRE(pos != std::string::npos);
    return r.replace(pos, from.size(), to);
  };
  const std::string unknown_format = edited("\"mxint4\"", "\"mxint9\"");
  const std::vector<bad_report> cases = {
      {"missing", "", true, "report.json"},
      {"empty", "", false, "report.json"},
      {"truncated", good.substr(0, good.size() / 2), false, "report.json"},
      {"not an object", "[1, 2, 3]", false, "report.json"},
      {"no formats", "{\"rank\": 4}", false, "formats"},
      {"unknown weight format", unknown_format, false, "mxint9"},
      // Formats a layer file may name but forward does not take, and block
      // lengths that are not shared or not supported: the file's fault, said so.
      {"4-bit low-rank format", edited("\"mxint8\"", "\"mxint4\""), false, "report.json: the low-rank format must be mxint8"},
      {"llama.cpp weights with MX factors", edited("\"mxint4\"", "\"q4_0\""), false,
       "report.json: llama.cpp's formats are built as"},
      {"unsupported block length in both", edited("\"block\": 16", "\"block\": 24").replace(
           good.rfind("\"block\": 16"), std::string("\"block\": 16").size(), "\"block\": 24"), false, "report.json: the block length must be"},
      {"low-rank and weight blocks differ", edited("\"block\": 16", "\"block\": 32"), false,
       "formats.lowrank.block 32 differs"},
      {"block is not a number", edited("\"block\": 16", "\"block\": \"x\""), false, "report.json"},
  };
  int n = 0;
  for (const bad_report& b : cases) {
    const std::string name = b.name;
    CAPTURE(name);
    const fs::path d = fx.cell("r" + std::to_string(n++));
    if (b.missing)
      fs::remove(d / "layer" / "report.json");
    else
      write_bytes(d / "layer" / "report.json", b.bytes);
    check_refused(fx.root, d, command_line("forward", d, d / "out.npy"), {b.needle});
  }
}

TEST_CASE("bad-input matrix: lqer forward with a rank-0 pair A.npy [in, 0], B.npy [0, out]") {
  // Each file fits the other and Wq; a rank-0 layer is written without them.
  fixture fx("rank0");
  const fs::path d = fx.cell("c");
  write_bytes(d / "layer" / "A.npy", npy_bytes("<f4", shape_text({kIn, 0}), ""));
  write_bytes(d / "layer" / "B.npy", npy_bytes("<f4", shape_text({0, kOut}), ""));
  check_refused(fx.root, d, command_line("forward", d, d / "out.npy"), {"A.npy", "B.npy", "rank 0"});
}

TEST_CASE("bad-input matrix: finite inputs whose arithmetic overflows float") {
  fixture fx("overflow");
  // W near FLT_MAX: its quantization error is too large for the SVD's float
  // products (it used to surface as "the small SVD did not converge").
  {
    const fs::path d = fx.cell("wbig");
    auto w = values(kOut * kIn, 1.0);
    for (float& v : w) v *= 3.0e38f;
    write_bytes(d / "W.npy", npy_bytes("<f4", shape_text({kOut, kIn}), raw(w)));
    check_refused(fx.root, d, command_line("factorize", d, d / "outdir"), {"overflows float"});
  }
  // A layer with subnormal W (hence a correction scaled up) against x near
  // FLT_MAX: Q(x)·A overflows although every input is finite.
  {
    const fs::path d = fx.cell("xbig");
    auto w = values(kOut * kIn, 1.0);
    for (float& v : w) v *= 1e-42f;
    auto x = values(kCalib * kIn, 1.0);
    for (float& v : x) v *= 3.0e38f;
    write_bytes(d / "W.npy", npy_bytes("<f4", shape_text({kOut, kIn}), raw(w)));
    write_bytes(d / "X.npy", npy_bytes("<f4", shape_text({kCalib, kIn}), raw(x)));
    const run_result f = run_lqer(fx.root, {"factorize", "-q", "--weight", (d / "W.npy").string(), "--calib",
                                            (d / "X.npy").string(), "--rank", std::to_string(kRank), "--out",
                                            (d / "big_layer").string()});
    INFO(f.err);
    REQUIRE(f.exit_code == 0);
    const std::vector<std::string> args = {"forward", "-q", "--layer", (d / "big_layer").string(), "--x",
                                           (d / "X.npy").string(), "--out", (d / "out.npy").string()};
    check_refused(fx.root, d, args, {"X.npy through", "big_layer", "Q(x)·A"});
  }
}

// ---------------------------------------------------------------------------
// Output paths × subcommands

TEST_CASE("bad-input matrix: output paths of every subcommand") {
  fixture fx("outputs");
  const bool root = ::geteuid() == 0;
  int n = 0;
  for (const std::string cmd : {"quantize", "factorize", "forward", "collect", "merge"}) {
    CAPTURE(cmd);
    {
      const std::string cell = "in a missing directory";
      CAPTURE(cell);
      const fs::path d = fx.cell("o" + std::to_string(n++));
      const fs::path out = d / "no_such_dir" / (cmd == "factorize" ? "layer" : "Y.out");
      check_refused(fx.root, d, command_line(cmd, d, out), {"no_such_dir"});
    }
    {
      const std::string cell = "in a read-only directory";
      CAPTURE(cell);
      const fs::path d = fx.cell("o" + std::to_string(n++));
      fs::create_directory(d / "ro");
      fs::permissions(d / "ro", fs::perms::owner_read | fs::perms::owner_exec);
      // Root (and CAP_DAC_OVERRIDE) writes into it regardless: detect that, say
      // so, and use /proc instead, where nobody can create a file or directory.
      const bool writable = ::access((d / "ro").c_str(), W_OK) == 0;
      fs::path ro = d / "ro";
      if (writable) {
        MESSAGE("mode 0500 does not stop this user (", std::string(root ? "root" : "CAP_DAC_OVERRIDE"),
                "): the read-only directory cell writes into /proc instead");
        ro = "/proc";
      }
      const fs::path out = ro / (cmd == "factorize" ? "lqer_layer" : "lqer_Y.npy");
      check_refused(fx.root, d, command_line(cmd, d, out), {out.string()});
      CHECK(!fs::exists(out));
      fs::permissions(d / "ro", fs::perms::owner_all);
    }
    {
      // quantize / forward write a file: give them a directory. factorize writes a
      // directory: give it a regular file.
      const std::string cell = cmd == "factorize" ? "a regular file where DIR should be" : "a directory";
      CAPTURE(cell);
      const fs::path d = fx.cell("o" + std::to_string(n++));
      fs::path out;
      if (cmd == "factorize") {
        out = d / "out.npy";  // holds "old content"
      } else {
        out = d / "outdir";  // holds outdir/report.json = "old content"
      }
      check_refused(fx.root, d, command_line(cmd, d, out), {out.filename().string()});
    }
  }
}

// ---------------------------------------------------------------------------
// lqer's own files × the entry points that read them

namespace {

enum class lqer_file { checkpoint, stats };

/// One entry point reading one lqer file of the cell directory.
struct reader {
  const char* name;     // for CAPTURE
  const char* command;  // command_line()'s name
  const char* file;     // the file it reads, relative to the cell
  lqer_file kind;
  bool reads_any_lqer_file;  // inspect: either schema is fine
};

/// One way of breaking an lqer file. `apply` rewrites (or removes) it and says
/// what stderr must mention (the file's name is always required too), or sets
/// `ok` when the reader must accept the result.
struct lqer_corruption {
  const char* name;
  std::function<std::vector<std::string>(const fixture& fx, const fs::path& f, const reader& r, bool& ok)> apply;
};

std::vector<std::byte> bytes_of(const fs::path& p) {
  const std::string s = slurp(p);
  std::vector<std::byte> b(s.size());
  if (!s.empty()) std::memcpy(b.data(), s.data(), s.size());
  return b;
}
void write_image(const fs::path& p, const std::vector<std::byte>& b) {
  write_bytes(p, std::string(reinterpret_cast<const char*>(b.data()), b.size()));
}
void edit_file(const fs::path& p, const lqer::test::safetensors_edit& e) { write_image(p, lqer::test::edited(bytes_of(p), e)); }

const std::vector<lqer_corruption>& lqer_corruptions() {
  using edit = lqer::test::safetensors_edit;
  static const std::vector<lqer_corruption> c = {
      {"missing file",
       [](const fixture&, const fs::path& f, const reader&, bool&) -> std::vector<std::string> {
         fs::remove(f);
         return {"no such file"};
       }},
      {"empty file",
       [](const fixture&, const fs::path& f, const reader&, bool&) -> std::vector<std::string> {
         write_bytes(f, "");
         return {"truncated"};
       }},
      {"truncated header",
       [](const fixture&, const fs::path& f, const reader&, bool&) -> std::vector<std::string> {
         write_bytes(f, slurp(f).substr(0, 40));
         return {"truncated"};
       }},
      {"truncated data",
       [](const fixture&, const fs::path& f, const reader&, bool&) -> std::vector<std::string> {
         const std::string g = slurp(f);
         write_bytes(f, g.substr(0, g.size() - 9));
         return {"truncated"};
       }},
      {"checksum mismatch",
       [](const fixture&, const fs::path& f, const reader& r, bool&) -> std::vector<std::string> {
         // The lowest bit of a scale or of a sum: still a valid value, but not the recorded bytes.
         const std::string t = r.kind == lqer_file::checkpoint ? "layer.wq.scales" : "sum_abs.hi";
         edit e;
         e.data[t] = [](std::vector<std::byte>& d) { d[0] ^= std::byte{1}; };
         e.keep_checksums = true;
         edit_file(f, e);
         return {"checksum mismatch", t};
       }},
      {"unknown schema version",
       [](const fixture&, const fs::path& f, const reader&, bool&) -> std::vector<std::string> {
         edit_file(f, edit{}.set("lqer.schema_version", "2"));
         return {"schema version 2", "reads version 1"};
       }},
      {"missing tensor",
       [](const fixture&, const fs::path& f, const reader& r, bool&) -> std::vector<std::string> {
         const std::string t = r.kind == lqer_file::checkpoint ? "layer.a.codes" : "sum_sq.lo";
         edit e;
         e.drop.insert(t);
         edit_file(f, e);
         return {"missing tensor", t};
       }},
      {"the other lqer schema",
       [](const fixture& fx, const fs::path& f, const reader& r, bool& ok) -> std::vector<std::string> {
         const bool ck = r.kind == lqer_file::checkpoint;
         fs::copy_file(fx.tmpl / (ck ? "S.safetensors" : "layer/layer.safetensors"), f,
                       fs::copy_options::overwrite_existing);
         ok = r.reads_any_lqer_file;
         return {ck ? "not an lqer checkpoint" : "not an lqer statistics file"};
       }},
      {"no lqer schema (a plain safetensors file)",
       [](const fixture&, const fs::path& f, const reader& r, bool&) -> std::vector<std::string> {
         edit_file(f, edit{}.set("lqer.schema", ""));
         return {r.reads_any_lqer_file ? "not an lqer file" : "lqer.schema"};
       }},
      {"a .npy file",
       [](const fixture& fx, const fs::path& f, const reader&, bool&) -> std::vector<std::string> {
         fs::copy_file(fx.tmpl / "W.npy", f, fs::copy_options::overwrite_existing);
         return {};
       }},
      {"shape disagrees with the metadata",
       [](const fixture&, const fs::path& f, const reader& r, bool&) -> std::vector<std::string> {
         if (r.kind == lqer_file::checkpoint) {
           edit_file(f, edit{}.set("lqer.layer.layer.out_features", std::to_string(kOut + 1)));
           return {"layer.wq.codes", std::to_string(kOut + 1) + " lanes"};
         }
         edit e;
         e.shape["batch_mean_abs_max"] = {kIn / 2, 2};
         edit_file(f, e);
         return {"batch_mean_abs_max", "disagrees with the metadata"};
       }},
      {"format mismatch (the metadata names another block length)",
       [](const fixture&, const fs::path& f, const reader& r, bool& ok) -> std::vector<std::string> {
         if (r.kind != lqer_file::checkpoint) {  // no formats in a statistics file: the good file
           ok = true;
           return {};
         }
         edit_file(f, edit{}.set("lqer.layer.layer.weight_format", "mxint4_b32_lqer")
                          .set("lqer.layer.layer.lowrank_format", "mxint8_b32_lqer"));
         return {"layer.wq.scales", "needs F8_E8M0 [8, 1]"};
       }},
      {"a statistics file of the wrong width",
       [](const fixture& fx, const fs::path& f, const reader& r, bool& ok) -> std::vector<std::string> {
         if (r.kind != lqer_file::stats) {
           ok = true;
           return {};
         }
         fs::copy_file(fx.tmpl / "Sw.safetensors", f, fs::copy_options::overwrite_existing);
         ok = r.reads_any_lqer_file;
         return {std::to_string(kIn + 16)};  // factorize: "of width 48"; merge: "48" channels
       }},
      {"a statistics file with the Gram matrix where the others have none",
       [](const fixture& fx, const fs::path& f, const reader& r, bool& ok) -> std::vector<std::string> {
         if (r.kind != lqer_file::stats) {
           ok = true;
           return {};
         }
         fs::copy_file(fx.tmpl / "Sg.safetensors", f, fs::copy_options::overwrite_existing);
         ok = std::string(r.command) != "merge";  // one file alone is fine, and mean_abs reads it too
         return {"Gram matrix"};
       }},
  };
  return c;
}

}  // namespace

TEST_CASE("bad-input matrix: lqer's own files (checkpoint, statistics) x every entry point that reads them") {
  fixture fx("lqer_files");
  const std::vector<reader> readers = {
      {"forward --layer FILE", "forward-checkpoint", "layer/layer.safetensors", lqer_file::checkpoint, false},
      {"inspect FILE (a checkpoint)", "inspect", "layer/layer.safetensors", lqer_file::checkpoint, true},
      {"stats merge", "merge", "S.safetensors", lqer_file::stats, false},
      {"factorize --stats", "factorize-stats", "S.safetensors", lqer_file::stats, false},
  };
  int cells = 0, refused = 0;
  for (const reader& r : readers) {
    for (const lqer_corruption& c : lqer_corruptions()) {
      const std::string reader_name = r.name, corruption_name = c.name;
      CAPTURE(reader_name);
      CAPTURE(corruption_name);
      const fs::path d = fx.cell("f" + std::to_string(cells++));
      const fs::path file = d / r.file;
      bool expect_ok = false;
      std::vector<std::string> needles = c.apply(fx, file, r, expect_ok);
      const auto args = command_line(r.command, d, default_out(r.command, d));
      if (expect_ok) {
        const run_result res = run_lqer(fx.root, args);
        CAPTURE(res.err);
        CHECK(res.exit_code == 0);
      } else {
        needles.push_back(file.filename().string());
        check_refused(fx.root, d, args, needles);
        ++refused;
      }
      fs::remove_all(d);
    }
  }
  // inspect reads a statistics file too: the corruptions that apply to any lqer file.
  for (const lqer_corruption& c : lqer_corruptions()) {
    const std::string corruption_name = c.name;
    CAPTURE(corruption_name);
    const reader r{"inspect FILE (statistics)", "inspect", "S.safetensors", lqer_file::stats, true};
    const fs::path d = fx.cell("f" + std::to_string(cells++));
    const fs::path file = d / r.file;
    bool expect_ok = false;
    std::vector<std::string> needles = c.apply(fx, file, r, expect_ok);
    const std::vector<std::string> args = {"inspect", file.string()};
    if (expect_ok) {
      CHECK(run_lqer(fx.root, args).exit_code == 0);
    } else {
      needles.push_back(file.filename().string());
      check_refused(fx.root, d, args, needles);
      ++refused;
    }
    fs::remove_all(d);
  }
  MESSAGE(cells, " lqer-file cells, ", refused, " must be refused");

  // The options around them.
  {
    const fs::path d = fx.cell("whiten_without_gram");
    check_refused(fx.root, d,
                  {"factorize", "-q", "--weight", (d / "W.npy").string(), "--stats", (d / "S.safetensors").string(),
                   "--policy", "whiten", "--rank", std::to_string(kRank), "--out", (d / "outdir").string()},
                  {"S.safetensors", "no Gram matrix", "--gram"});
  }
  {
    const fs::path d = fx.cell("no_such_layer");
    check_refused(fx.root, d,
                  {"forward", "-q", "--layer", (d / "layer" / "layer.safetensors").string(), "--name", "blk.9", "--x",
                   (d / "Xf.npy").string(), "--out", (d / "out.npy").string()},
                  {"layer.safetensors", "has no layer \"blk.9\"", "\"layer\""});
  }
  {
    const fs::path d = fx.cell("name_with_a_directory");
    check_refused(fx.root, d,
                  {"forward", "-q", "--layer", (d / "layer").string(), "--name", "layer", "--x",
                   (d / "Xf.npy").string(), "--out", (d / "out.npy").string()},
                  {"--name", "not a file"});
  }
  {
    const fs::path d = fx.cell("merge_mixed_gram");
    check_refused(fx.root, d,
                  {"stats", "merge", (d / "S.safetensors").string(), (d / "Sg.safetensors").string(), "--out",
                   (d / "out.safetensors").string()},
                  {"Sg.safetensors", "keeps the Gram matrix", "S.safetensors does not"});
  }
  {
    const fs::path d = fx.cell("merge_widths");
    check_refused(fx.root, d,
                  {"stats", "merge", (d / "S.safetensors").string(), (d / "Sw.safetensors").string(), "--out",
                   (d / "out.safetensors").string()},
                  {"Sw.safetensors", "48 channels", "S.safetensors has 32"});
  }
}
