// `lqer forward`: the reference forward of a layer directory written by
// `lqer factorize` on activations X.npy → Y.npy [tokens, out], float32.
//
//   y = Q(x)·Wqᵀ + Q(Q(x)·A)·B (+ bias)
//
// in the paper's semantics by default (the correction's output and the bias
// rounded to the activation format, as the LQER reference simulates it), or
// fused (--mode fused: what the kernels compute). The weight and factor
// formats come from DIR/report.json; the dequantized .npy files are quantized
// back into them exactly (layer_dir.hpp explains the one case that needs care).
#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <lqer/factorize/layer.hpp>
#include <lqer/factorize/reference_forward.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/tensor/check.hpp>

#include "commands.hpp"
#include "layer_dir.hpp"

namespace lqer::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct forward_cli {
  std::string layer, x, out;
  mx_spec act{"mxint8", 0, mx_rule::lqer};  // block 0: the layer's
  std::string act_rule = "lqer";
  std::string mode = "paper";
  bool quiet = false;
};

json read_report(const fs::path& dir) {
  const fs::path p = dir / "report.json";
  std::ifstream f(p, std::ios::binary);
  if (!f) throw io_error(p.string() + ": cannot open (is " + dir.string() + " a directory written by lqer factorize?)");
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw parse_error(p.string() + ": " + e.what());
  }
}

int run_forward(forward_cli o) {
  const fs::path dir = o.layer;
  const json report = read_report(dir);
  const std::string where = (dir / "report.json").string();
  mx_spec wspec, lrspec;
  try {
    wspec = mx_spec_from_json(report.at("formats").at("weight"), where + ": formats.weight");
    lrspec = mx_spec_from_json(report.at("formats").at("lowrank"), where + ": formats.lowrank");
  } catch (const json::exception& e) {
    throw parse_error(where + ": " + e.what());
  }
  // The layer's formats come from the file: one this command does not take
  // (or a block length the two do not share) is the file's problem, reported
  // naming it — not as an option error pointing at --help.
  if (lrspec.block != wspec.block)
    throw value_error(where + ": formats.lowrank.block " + std::to_string(lrspec.block) +
                      " differs from formats.weight.block " + std::to_string(wspec.block) +
                      " (lqer factorize writes one shared block length)");
  try {
    with_block(wspec.block, [&]<int Block>(std::integral_constant<int, Block>) {
      with_mx<Block>(wspec, "the layer's weight", detail::weight_bits{}, [](auto) {});
      with_mx<Block>(lrspec, "the layer's low-rank", detail::lowrank_bits{}, [](auto) {});
    });
  } catch (const usage_error& e) {
    throw value_error(where + ": " + e.what());
  }
  o.act.rule = parse_rule(o.act_rule);
  if (o.act.block == 0) o.act.block = wspec.block;
  if (o.act.block != wspec.block)
    throw usage_error("--act-block " + std::to_string(o.act.block) + " must equal the layer's block length " +
                      std::to_string(wspec.block) + " (products are computed block by block)");
  with_mx<16>(o.act, "the activation", detail::activation_bits{}, [](auto) {});
  const correction_mode mode = o.mode == "fused" ? correction_mode::fused : correction_mode::paper;

  // The layer's files.
  const io::npy_matrix wq = io::read_npy_matrix(dir / "Wq.npy");
  // Checked here, naming the file: quantize() would refuse an empty matrix
  // too, but with a message that says neither which file nor why.
  if (wq.rows == 0 || wq.cols == 0)
    throw shape_error((dir / "Wq.npy").string() + ": the weight has shape (" + std::to_string(wq.rows) + ", " +
                      std::to_string(wq.cols) + "); expected a non-empty [out, in] matrix");
  const bool has_a = fs::exists(dir / "A.npy"), has_b = fs::exists(dir / "B.npy");
  if (has_a != has_b)
    throw io_error(dir.string() + ": has " + (has_a ? "A.npy but no B.npy" : "B.npy but no A.npy") +
                   "; the factors come in pairs");
  io::npy_matrix a, b;
  if (has_a) {
    a = io::read_npy_matrix(dir / "A.npy");
    b = io::read_npy_matrix(dir / "B.npy");
    if (a.rows != wq.cols || b.cols != wq.rows || a.cols != b.rows)
      throw shape_error(dir.string() + ": A.npy [" + std::to_string(a.rows) + ", " + std::to_string(a.cols) +
                        "] and B.npy [" + std::to_string(b.rows) + ", " + std::to_string(b.cols) +
                        "] do not fit Wq.npy [" + std::to_string(wq.rows) + ", " + std::to_string(wq.cols) + "]");
    if (a.cols == 0)
      throw shape_error(dir.string() + ": A.npy [" + std::to_string(a.rows) + ", 0] and B.npy [0, " +
                        std::to_string(b.cols) + "] have rank 0; a rank-0 layer has neither file");
  }
  std::vector<float> bias;
  if (fs::exists(dir / "bias.npy")) {
    bias = io::read_npy_vector(dir / "bias.npy");
    if (static_cast<index_t>(bias.size()) != wq.rows)
      throw shape_error((dir / "bias.npy").string() + ": " + std::to_string(bias.size()) + " elements, the layer has " +
                        std::to_string(wq.rows) + " outputs");
    require_finite(bias, (dir / "bias.npy").string());
  }

  // The activations.
  const io::npy_matrix x = io::read_npy_matrix(o.x, io::npy_convert::any_to_float32);
  if (x.cols != wq.cols)
    throw shape_error(o.x + ": the activations have " + std::to_string(x.cols) + " columns but the layer in " +
                      dir.string() + " has " + std::to_string(wq.cols) + " inputs");
  if (x.rows == 0) throw shape_error(o.x + ": no tokens (0 rows)");
  require_finite(x.data, x.cols, o.x);

  std::vector<float> y(static_cast<std::size_t>(x.rows * wq.rows));
  index_t changed = 0;
  with_block(wspec.block, [&]<int Block>(std::integral_constant<int, Block>) {
    with_mx<Block>(wspec, "the layer's weight", detail::weight_bits{}, [&]<class WF>(std::type_identity<WF>) {
      with_mx<Block>(lrspec, "the layer's low-rank", detail::lowrank_bits{}, [&]<class LF>(std::type_identity<LF>) {
        with_mx<Block>(o.act, "the activation", detail::activation_bits{}, [&]<class AF>(std::type_identity<AF>) {
          lqer_layer<WF, LF> layer;
          index_t n = 0;
          layer.wq = read_quantized<WF>(wq, block_axis::cols, (dir / "Wq.npy").string(), n);
          changed += n;
          if (has_a) {
            layer.a = read_quantized<LF>(a, block_axis::rows, (dir / "A.npy").string(), n);
            changed += n;
            layer.b = read_quantized<LF>(b, block_axis::rows, (dir / "B.npy").string(), n);
            changed += n;
          }
          layer.bias = bias;
          try {
            reference_forward<AF>(layer, matrix_view<const float>(x.data.data(), x.rows, x.cols),
                                  matrix_view<float>(y.data(), x.rows, wq.rows), mode);
          } catch (const value_error& e) {
            // Finite inputs whose correction overflows float: name both files.
            throw value_error(o.x + " through " + dir.string() + ": " + e.what());
          }
        });
      });
    });
  });
  if (changed > 0)
    fmt::print(stderr,
               "lqer forward: warning: {} values of {} are not representable in the layer's formats; the forward "
               "uses them quantized\n",
               changed, dir.string());

  const std::array<index_t, 2> shape{x.rows, wq.rows};
  io::write_npy(o.out, y.data(), std::span<const index_t>(shape));
  if (!o.quiet)
    fmt::print("{} [{}x{}] through {} (rank {}, {} mode, activations {} block {} rule {}) -> {} [{}x{}]\n", o.x,
               x.rows, x.cols, dir.string(), has_a ? a.cols : 0, to_string(mode), o.act.format, o.act.block,
               to_string(o.act.rule), o.out, x.rows, wq.rows);
  return 0;
}

}  // namespace

command add_forward_command(CLI::App& parent) {
  auto o = std::make_shared<forward_cli>();
  CLI::App* sub = parent.add_subcommand(
      "forward", "Run the reference forward of a layer directory (from lqer factorize) on activations: X.npy -> Y.npy.");
  sub->add_option("--layer", o->layer, "DIR: a layer directory written by lqer factorize")->required();
  sub->add_option("--x", o->x, "X.npy: activations [tokens, in], float32")->required();
  sub->add_option("--act-format", o->act.format, "Activation format: mxint4 or mxint8")->default_str("mxint8");
  sub->add_option("--act-block", o->act.block, "Activation block length (default and only allowed value: the layer's)");
  sub->add_option("--act-rule", o->act_rule, "Activation MX rule: lqer or ocp")
      ->check(CLI::IsMember({"ocp", "lqer"}))
      ->default_str("lqer");
  sub->add_option("--mode", o->mode,
                  "paper: the correction's output and the bias are rounded to the activation format (the LQER "
                  "reference); fused: accumulated with x·Wqᵀ (what the kernels compute)")
      ->check(CLI::IsMember({"paper", "fused"}))
      ->default_str("paper");
  sub->add_option("--out", o->out, "Y.npy: the output [tokens, out], float32, written atomically")->required();
  sub->add_flag("-q,--quiet", o->quiet, "Do not print the one-line summary");
  sub->footer(
      "Rank 0 when DIR has no A.npy/B.npy; DIR/bias.npy is added when present.\n"
      "Exit status: 0 success, 2 bad option, bad file or bad data (a sentence on stderr; Y.npy untouched).\n"
      "Example: lqer forward --layer layer0 --x X.npy --out Y.npy");
  return command{sub, [o] { return run_forward(*o); }};
}

}  // namespace lqer::cli
