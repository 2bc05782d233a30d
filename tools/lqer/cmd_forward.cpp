// `lqer forward`: the reference forward of a layer written by `lqer factorize`
// on activations X.npy → Y.npy [tokens, out], float32.
//
//   y = Q(x)·Wqᵀ + Q(Q(x)·A)·B (+ bias)
//
// in the paper's semantics by default (the correction's output and the bias
// rounded to the activation format, as the LQER reference simulates it), or
// fused (--mode fused: what the kernels compute). The layer comes in either
// form factorize writes:
//   * a layer directory: the formats from DIR/report.json, the dequantized
//     .npy files quantized back into them exactly (layer_dir.hpp explains the
//     one case that needs care);
//   * a checkpoint (DIR/layer.safetensors, or any lqer checkpoint, with --name
//     when it holds several layers): the stored codes and scales as they are,
//     checksums verified (io/checkpoint.hpp).
// Both give the same layer, bit for bit, hence the same Y.
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

#include <lqer/layer/layer.hpp>
#include <lqer/layer/reference_forward.hpp>
#include <lqer/io/checkpoint.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/tensor/check.hpp>

#include "commands.hpp"
#include "layer_dir.hpp"

namespace lqer::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct forward_cli {
  std::string layer, name, x, out;
  mx_spec act{"", 0, mx_rule::lqer};  // format "": the layer's (mxint8; q8_0 for llama.cpp's); block 0: the layer's
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

/// The layer to run: where it comes from and what its metadata says.
struct layer_source {
  bool checkpoint = false;
  fs::path dir;               // a layer directory
  io::checkpoint_file file;   // a checkpoint
  std::string name;           // the layer's name in the checkpoint
  std::string where;          // names the layer in messages: DIR or "FILE (layer 'x')"
  std::string formats_where;  // names the format metadata: DIR/report.json or "FILE: layer 'x'"
  mx_spec wspec, lrspec;
};

layer_source open_layer(const forward_cli& o) {
  layer_source src;
  std::error_code ec;
  // A file is a checkpoint; so is a missing path named *.safetensors (opening
  // it says "no such file"); anything else is a layer directory.
  const bool missing = !fs::exists(o.layer, ec);
  if (fs::is_regular_file(o.layer, ec) || (missing && fs::path(o.layer).extension() == ".safetensors")) {
    src.checkpoint = true;
    src.file = io::checkpoint_file::open(o.layer);
    src.name = o.name;
    if (src.name.empty()) {
      if (src.file.layers().size() != 1)
        throw usage_error(o.layer + " holds " + std::to_string(src.file.layers().size()) +
                          " layers: choose one with --name");
      src.name = src.file.layers()[0].name;
    }
    const io::checkpoint_layer& info = src.file.layer(src.name);
    src.where = o.layer + " (layer '" + src.name + "')";
    src.formats_where = o.layer + ": layer '" + src.name + "'";
    src.wspec = mx_spec_from_name(info.weight_format, src.formats_where + ": the weight");
    src.lrspec = mx_spec_from_name(info.lowrank_format, src.formats_where + ": the low-rank factors");
    return src;
  }
  if (!o.name.empty())
    throw usage_error("--name chooses a layer of a .safetensors checkpoint; " + o.layer + " is not a file");
  src.dir = o.layer;
  src.where = src.dir.string();
  const json report = read_report(src.dir);
  src.formats_where = (src.dir / "report.json").string();
  try {
    src.wspec = mx_spec_from_json(report.at("formats").at("weight"), src.formats_where + ": formats.weight");
    src.lrspec = mx_spec_from_json(report.at("formats").at("lowrank"), src.formats_where + ": formats.lowrank");
  } catch (const json::exception& e) {
    throw parse_error(src.formats_where + ": " + e.what());
  }
  return src;
}

int run_forward(forward_cli o) {
  const layer_source src = open_layer(o);
  const std::string& where = src.formats_where;
  const mx_spec& wspec = src.wspec;
  const mx_spec& lrspec = src.lrspec;
  // The layer's formats come from the file: one this command does not take
  // (or a block length the two do not share) is the file's problem, reported
  // naming it — not as an option error pointing at --help.
  if (lrspec.block != wspec.block)
    throw value_error(where + ": formats.lowrank.block " + std::to_string(lrspec.block) +
                      " differs from formats.weight.block " + std::to_string(wspec.block) +
                      " (lqer factorize writes one shared block length)");
  std::string default_act;
  try {
    with_block(wspec.block, [&]<int Block>(std::integral_constant<int, Block>) {
      with_layer_formats<Block>(wspec, lrspec, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
        default_act = default_activation_name<WF, LF>();
      });
    });
  } catch (const usage_error& e) {
    throw value_error(where + ": " + e.what());
  }
  o.act.rule = parse_rule(o.act_rule);
  if (o.act.format.empty()) o.act.format = default_act;
  if (o.act.block == 0) o.act.block = wspec.block;
  if (o.act.block != wspec.block)
    throw usage_error("--act-block " + std::to_string(o.act.block) + " must equal the layer's block length " +
                      std::to_string(wspec.block) + " (products are computed block by block)");
  with_block(wspec.block, [&]<int Block>(std::integral_constant<int, Block>) {
    with_layer_formats<Block>(wspec, lrspec, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
      with_activation_format<Block, WF, LF>(o.act, [](auto) {});
    });
  });
  const correction_mode mode = o.mode == "fused" ? correction_mode::fused : correction_mode::paper;

  // A layer directory's files (a checkpoint's tensors are read by load() below).
  const fs::path& dir = src.dir;
  io::npy_matrix wq, a, b;
  bool has_a = false;
  std::vector<float> bias;
  index_t in = 0, out = 0, rank = 0;
  if (src.checkpoint) {
    const io::checkpoint_layer& info = src.file.layer(src.name);
    in = info.in_features;
    out = info.out_features;
    rank = info.rank;
    has_a = rank > 0;
  } else {
    wq = io::read_npy_matrix(dir / "Wq.npy");
    // Checked here, naming the file: quantize() would refuse an empty matrix
    // too, but with a message that says neither which file nor why.
    if (wq.rows == 0 || wq.cols == 0)
      throw shape_error((dir / "Wq.npy").string() + ": the weight has shape (" + std::to_string(wq.rows) + ", " +
                        std::to_string(wq.cols) + "); expected a non-empty [out, in] matrix");
    has_a = fs::exists(dir / "A.npy");
    const bool has_b = fs::exists(dir / "B.npy");
    if (has_a != has_b)
      throw io_error(dir.string() + ": has " + (has_a ? "A.npy but no B.npy" : "B.npy but no A.npy") +
                     "; the factors come in pairs");
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
    if (fs::exists(dir / "bias.npy")) {
      bias = io::read_npy_vector(dir / "bias.npy");
      if (static_cast<index_t>(bias.size()) != wq.rows)
        throw shape_error((dir / "bias.npy").string() + ": " + std::to_string(bias.size()) +
                          " elements, the layer has " + std::to_string(wq.rows) + " outputs");
      require_finite(bias, (dir / "bias.npy").string());
    }
    in = wq.cols;
    out = wq.rows;
    rank = has_a ? a.cols : 0;
  }

  // The activations.
  const io::npy_matrix x = io::read_npy_matrix(o.x, io::npy_convert::any_to_float32);
  if (x.cols != in)
    throw shape_error(o.x + ": the activations have " + std::to_string(x.cols) + " columns but the layer in " +
                      src.where + " has " + std::to_string(in) + " inputs");
  if (x.rows == 0) throw shape_error(o.x + ": no tokens (0 rows)");
  require_finite(x.data, x.cols, o.x);

  std::vector<float> y(static_cast<std::size_t>(x.rows * out));
  index_t changed = 0;
  with_block(wspec.block, [&]<int Block>(std::integral_constant<int, Block>) {
    with_layer_formats<Block>(wspec, lrspec, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
      with_activation_format<Block, WF, LF>(o.act, [&]<class AF>(std::type_identity<AF>) {
        lqer_layer<WF, LF> layer;
        if (src.checkpoint) {
          layer = src.file.load<WF, LF>(src.name);  // the stored codes: nothing to re-quantize
        } else {
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
        }
        try {
          reference_forward<AF>(layer, matrix_view<const float>(x.data.data(), x.rows, x.cols),
                                matrix_view<float>(y.data(), x.rows, out), mode);
        } catch (const value_error& e) {
          // Finite inputs whose correction overflows float: name both files.
          throw value_error(o.x + " through " + src.where + ": " + e.what());
        }
      });
    });
  });
  if (changed > 0)
    fmt::print(stderr,
               "lqer forward: warning: {} values of {} are not representable in the layer's formats; the forward "
               "uses them quantized\n",
               changed, dir.string());

  const std::array<index_t, 2> shape{x.rows, out};
  io::write_npy(o.out, y.data(), std::span<const index_t>(shape));
  if (!o.quiet)
    fmt::print("{} [{}x{}] through {} (rank {}, {} mode, activations {} block {}{}) -> {} [{}x{}]\n", o.x, x.rows,
               x.cols, src.where, rank, to_string(mode), o.act.format, o.act.block,
               is_ggml_name(o.act.format) ? std::string() : std::string(" rule ") + to_string(o.act.rule), o.out,
               x.rows, out);
  return 0;
}

}  // namespace

command add_forward_command(CLI::App& parent) {
  auto o = std::make_shared<forward_cli>();
  CLI::App* sub = parent.add_subcommand(
      "forward",
      "Run the reference forward of a layer (a directory or a checkpoint from lqer factorize) on activations: X.npy -> "
      "Y.npy.");
  sub->add_option("--layer", o->layer,
                  "DIR or FILE: a layer directory written by lqer factorize, or an lqer checkpoint (.safetensors, "
                  "e.g. DIR/layer.safetensors)")
      ->required();
  sub->add_option("--name", o->name, "The layer's name in a checkpoint FILE (needed when it holds several)");
  sub->add_option("--x", o->x, "X.npy: activations [tokens, in], float32")->required();
  sub->add_option("--act-format", o->act.format,
                  "Activation format: " + list_text(detail::activation_bits{}, "mxint") +
                      "; q8_0 for llama.cpp's q4_0 / q4_1 layers (their only one)")
      ->default_str("mxint8; q8_0 for llama.cpp's layers");
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
      "Rank 0 when DIR has no A.npy/B.npy; DIR/bias.npy is added when present. A checkpoint's checksums are\n"
      "verified; its codes are used as stored. Both forms of one layer give the same Y, bit for bit.\n"
      "Exit status: 0 success, 2 bad option, bad file or bad data (a sentence on stderr; Y.npy untouched).\n"
      "Example: lqer forward --layer layer0 --x X.npy --out Y.npy");
  return command{sub, [o] { return run_forward(*o); }};
}

}  // namespace lqer::cli
