// `lqer factorize` and `lqer forward`, run as a user runs them, on the LQER
// reference layer tests/data/layer_small_*: the directory's files against the
// library (bit for bit) and against the reference (Wq, scale, outputs), and
// "exit 2, one sentence on stderr, DIR untouched" on bad input.
//
// POSIX only (support/process.hpp runs the program through /bin/sh). Each case
// works in its own directory: ctest runs the cases of this file as separate
// processes, in parallel.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "factorize/synthetic.hpp"
#include "lqer/factorize/factorize.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/io/npy.hpp"
#include "support/files.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;
using namespace lqer;

namespace {

using lqer::test::run_lqer;
using lqer::test::run_result;
using lqer::test::slurp;

/// A fresh directory for one test case.
fs::path scratch(const std::string& name) {
  const fs::path d = fs::path(LQER_CLI_TEST_DIR) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

/// Concatenates by appending. ("literal" + std::string&& makes GCC 12 warn
/// falsely, -Wrestrict, GCC bug 105651, once inlined; appending does not.)
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  (s += ... += parts);
  return s;
}

/// The path of tests/data/<name>.npy.
std::string data(const std::string& name) { return test::data_path(name); }

matrix_rm load(const fs::path& p) {
  const io::npy_matrix m = io::read_npy_matrix(p);
  return Eigen::Map<const matrix_rm>(m.data.data(), m.rows, m.cols);
}

/// Exit status 2, exactly one line on stderr containing `needle`.
void check_refused(const run_result& r, const std::string& needle) {
  CHECK(r.exit_code == 2);
  CHECK(r.err.find(needle) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

}  // namespace

TEST_CASE("factorize + forward reproduce the library and the LQER reference") {
  const fs::path d = scratch("roundtrip");
  const fs::path layer = d / "layer";
  const run_result f = run_lqer(d, {"factorize", "--weight", data("layer_small_W"), "--calib", data("layer_small_Xcal"),
                                    "--rank", "16", "--solver", "exact", "--out", layer.string()});
  INFO(f.err);
  REQUIRE(f.exit_code == 0);
  for (const char* file : {"Wq.npy", "A.npy", "B.npy", "scale.npy", "report.json"}) CHECK(fs::exists(layer / file));
  // Nothing left behind next to DIR.
  index_t entries = 0;
  for (const auto& e : fs::directory_iterator(d)) entries += e.path().filename().string().starts_with(".layer");
  CHECK(entries == 0);

  // The library, in memory, with the same choices.
  const matrix_rm w = test::load_matrix("layer_small_W");
  const matrix_rm xcal = test::load_matrix("layer_small_Xcal"), xtest = test::load_matrix("layer_small_Xtest");
  activation_stats st(w.cols());
  st.add_batch(xcal);
  const auto lib = factorize<policy::mean_abs, exact_svd>(w, st, 16);
  CHECK(load(layer / "Wq.npy") == dequantize(lib.layer.wq));
  CHECK(load(layer / "Wq.npy") == test::load_matrix("layer_small_Wq"));
  CHECK(load(layer / "A.npy") == dequantize(lib.layer.a));
  CHECK(load(layer / "B.npy") == dequantize(lib.layer.b));
  CHECK(io::read_npy_vector(layer / "scale.npy") == lib.scale);

  const nlohmann::json rep = nlohmann::json::parse(slurp(layer / "report.json"));
  CHECK(rep.at("policy") == "mean_abs");
  CHECK(rep.at("solver") == "exact");
  CHECK(rep.at("rank") == 16);
  CHECK(rep.at("formats").at("weight").at("name") == default_weight_format::name());
  CHECK(rep.at("formats").at("lowrank").at("rule") == "lqer");
  CHECK(rep.at("calibration").at("tokens") == 512);
  CHECK(rep.at("residual_norm").get<double>() == lib.report.residual_norm);
  CHECK(rep.at("activation").at("basis") == "diagonal");
  CHECK(rep.at("singular_values").size() == 16);
  for (const char* s : {"read", "stats", "quantize", "svd", "lowrank_quantize", "report", "write", "total"})
    CHECK(rep.at("seconds").at(s).get<double>() >= 0);

  // forward: bit for bit the library's reference forward of the same layer,
  // i.e. the dequantized files were quantized back exactly.
  for (const char* mode : {"paper", "fused"}) {
    CAPTURE(mode);
    const fs::path y = d / cat("Y_", mode, ".npy");
    const run_result fw = run_lqer(d, {"forward", "--layer", layer.string(), "--x", data("layer_small_Xtest"), "--mode",
                                       mode, "--out", y.string()});
    INFO(fw.err);
    REQUIRE(fw.exit_code == 0);
    CHECK(fw.err.empty());  // no re-quantization warning
    matrix_rm want(xtest.rows(), w.rows());
    reference_forward(lib.layer, view_of(xtest), view_of(want),
                      std::string(mode) == "paper" ? correction_mode::paper : correction_mode::fused);
    CHECK(load(y) == want);
  }
}

TEST_CASE("rank 0 and identity: no factors, no calibration needed, and a rerun replaces stale factors") {
  const fs::path d = scratch("rank0");
  const fs::path layer = d / "layer";
  REQUIRE(run_lqer(d, {"factorize", "-q", "--weight", data("layer_small_W"), "--calib", data("layer_small_Xcal"),
                       "--rank", "8", "--out", layer.string()})
              .exit_code == 0);
  REQUIRE(fs::exists(layer / "A.npy"));
  fs::create_directories(layer);
  { std::ofstream(layer / "notes.txt") << "mine"; }
  const run_result r = run_lqer(d, {"factorize", "-q", "--weight", data("layer_small_W"), "--policy", "identity",
                                    "--rank", "0", "--out", layer.string()});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(!fs::exists(layer / "A.npy"));
  CHECK(!fs::exists(layer / "B.npy"));
  CHECK(fs::exists(layer / "scale.npy"));       // identity: all ones
  CHECK(slurp(layer / "notes.txt") == "mine");  // files that are not the layer's stay
  const run_result fw = run_lqer(d, {"forward", "-q", "--layer", layer.string(), "--x", data("layer_small_Xtest"),
                                     "--out", (d / "Y.npy").string()});
  REQUIRE(fw.exit_code == 0);
  // Plain W4A8 in the paper's semantics: the reference's Y_plain. Same exact
  // products, different summation order: within (γ_in + γ_{in/16})·Σ|xq||wq|
  // (see test_reference_layers), and here in practice identical.
  const matrix_rm y = load(d / "Y.npy"), yref = test::load_matrix("layer_small_Y_plain");
  const matrix_rm xq = fake_quantize<default_activation_format>(test::load_matrix("layer_small_Xtest"));
  const matrix_rm wq = load(layer / "Wq.npy");
  const double in = double(wq.cols());
  const Eigen::MatrixXd bound = (test::gamma_n(in, test::kUnitFloat) + test::gamma_n(in / 16, test::kUnitFloat)) *
                                (xq.cast<double>().cwiseAbs() * wq.cast<double>().cwiseAbs().transpose());
  CHECK(((y.cast<double>() - yref.cast<double>()).cwiseAbs().array() <= bound.array()).all());
}

TEST_CASE("factorize takes any legal DIR name, up to NAME_MAX (255 bytes), and leaves no staging directory") {
  // The staging directory was once ".<DIR>.lqer-tmp-<8 hex>": past 237 bytes
  // its name was too long, and a legal DIR could not be written.
  const fs::path d = scratch("long_name");
  const fs::path layer = d / std::string(255, 'L');
  for (int run = 0; run < 2; ++run) {  // created, then replaced file by file
    const run_result r = run_lqer(d, {"factorize", "-q", "--weight", data("layer_small_W"), "--policy", "identity",
                                      "--rank", "0", "--out", layer.string()});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(fs::exists(layer / "Wq.npy"));
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(d)) names.push_back(e.path().filename().string());
    CHECK(names == std::vector<std::string>{layer.filename().string()});
  }
}

TEST_CASE("bad input: exit 2, one sentence, DIR untouched") {
  const fs::path d = scratch("bad");
  const fs::path layer = d / "layer";
  const std::string w = data("layer_small_W"), xcal = data("layer_small_Xcal");
  // `lqer factorize --weight W <middle...> --out DIR`.
  const auto factorize = [&](const std::vector<std::string>& middle) {
    std::vector<std::string> args = {"factorize", "--weight", w};
    args.insert(args.end(), middle.begin(), middle.end());
    args.insert(args.end(), {"--out", layer.string()});
    return run_lqer(d, args);
  };
  // Shape mismatch between W [96, 256] and X [.., 512].
  check_refused(factorize({"--calib", data("layer_mid_Xcal")}), "512 columns");
  check_refused(factorize({"--calib", xcal, "--rank", "97"}), "--rank 97");
  check_refused(factorize({"--calib", xcal, "--policy", "magic"}), "magic");
  check_refused(factorize({"--calib", xcal, "--lr-block", "32"}), "--lr-block");
  check_refused(factorize({"--calib", xcal, "--w-format", "mxint5"}), "mxint5");
  check_refused(factorize({}), "--calib");  // mean_abs without calibration
  // Solver settings that would run for hours (or are meaningless) are refused up front.
  check_refused(factorize({"--calib", xcal, "--power-iterations", "1000000000"}), "--power-iterations");
  check_refused(factorize({"--calib", xcal, "--power-iterations", "-1"}), "--power-iterations");
  check_refused(factorize({"--calib", xcal, "--oversampling", "100000"}), "--oversampling");
  check_refused(factorize({"--calib", xcal, "--policy", "whiten", "--damping", "-1"}), "--damping");
  // Non-finite calibration values, named by file and element.
  matrix_rm x = test::load_matrix("layer_small_Xcal");
  x(7, 9) = std::nanf("");
  io::write_npy_matrix(d / "Xnan.npy", x.data(), x.rows(), x.cols());
  const std::string xnan = (d / "Xnan.npy").string();
  check_refused(factorize({"--calib", xnan}), "element (7, 9) is NaN");
  CHECK(!fs::exists(layer));
  // Nothing half-written next to DIR either.
  for (const auto& e : fs::directory_iterator(d)) CHECK(!e.path().filename().string().starts_with(".layer"));

  // An existing layer is left as it was by a failing run.
  REQUIRE(run_lqer(d, {"factorize", "-q", "--weight", w, "--calib", xcal, "--rank", "4", "--out", layer.string()})
              .exit_code == 0);
  const std::string before = slurp(layer / "report.json");
  check_refused(factorize({"--calib", xnan, "--rank", "8"}), "NaN");
  CHECK(slurp(layer / "report.json") == before);

  // forward: wrong width, not a layer directory.
  check_refused(run_lqer(d, {"forward", "--layer", layer.string(), "--x", data("layer_mid_Xtest"), "--out",
                             (d / "Y.npy").string()}),
                "512 columns");
  check_refused(run_lqer(d, {"forward", "--layer", d.string(), "--x", data("layer_small_Xtest"), "--out",
                             (d / "Y.npy").string()}),
                "report.json");
  CHECK(!fs::exists(d / "Y.npy"));
}
