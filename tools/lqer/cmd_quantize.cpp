// `lqer quantize`: fake-quantize a 2-D .npy array (quantize, then dequantize)
// in one of lqer's formats and write the result as float32, so that a
// format's effect on a real tensor can be checked from numpy.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <lqer/format/table.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/lqer.hpp>
#include <lqer/tensor/check.hpp>

#include "commands.hpp"

namespace lqer::cli {
namespace {

struct quantize_options {
  std::string input, output;
  std::string format;
  std::string block;  // parsed by parse_block: "row" is not an integer
  std::string rule = "ocp";
  std::string scheme = "sym";
  std::string scale = "f32";
  int axis = 1;
  bool quiet = false;
  // Set after parsing: which of the format options the user actually typed.
  CLI::Option *rule_opt = nullptr, *scheme_opt = nullptr, *scale_opt = nullptr, *block_opt = nullptr;
};

struct quantize_result {
  std::string format_name;
  double bits_per_weight = 0;
};

int run_quantize(const quantize_options& o) {
  format_spec spec;
  spec.name = o.format;
  if (o.block_opt->count() > 0) spec.block = parse_block(o.block);
  spec.rule = o.rule == "lqer" ? mx_rule::lqer : mx_rule::ocp;
  spec.scheme = o.scheme == "asym" ? int_scheme::asymmetric : int_scheme::symmetric;
  spec.scale = o.scale == "f16" ? scale_dtype::f16 : scale_dtype::f32;
  // Option errors are reported before any file is touched.
  spec = resolve(spec, o.rule_opt->count() > 0, o.scheme_opt->count() > 0, o.scale_opt->count() > 0);
  const block_axis axis = o.axis == 1 ? block_axis::cols : block_axis::rows;

  // float16, float64 and the integer dtypes are converted to float32 (float64
  // rounds to nearest; a value beyond float32's range becomes ±Inf and is
  // then rejected by require_finite, naming the element).
  const io::npy_matrix in = io::read_npy_matrix(o.input, io::npy_convert::any_to_float32);
  if (in.rows == 0 || in.cols == 0)
    throw shape_error(o.input + ": the array has shape (" + std::to_string(in.rows) + ", " + std::to_string(in.cols) +
                      "): nothing to quantize");
  require_finite(in.data, in.cols, o.input);

  std::vector<float> out(in.data.size());
  const matrix_view<const float> src(in.data.data(), in.rows, in.cols);
  const matrix_view<float> dst(out.data(), in.rows, in.cols);
  quantize_result res;
  try {
    res = with_format(spec, [&]<class F>(std::type_identity<F>) {
      const auto q = quantized_matrix<F>::quantize(src, axis);
      q.dequantize(dst);
      // q4_0 / q4_1 / q8_0 are aliases of intq types: show both names.
      std::string label = F::name();
      if (spec.name.starts_with('q')) label = spec.name + " (" + label + ")";
      // The format's bits per weight: code bits plus the scale's share of its
      // block (or of the whole lane for per-row formats). quantized_matrix's
      // bits_per_element() is the in-memory size instead, which stores 2- and
      // 3-bit codes in a nibble and counts tail padding.
      const index_t group = F::kBlock == kPerRow ? q.depth() : F::kBlock;
      return quantize_result{label, F::kBits + double(F::kScaleBits) / double(group)};
    });
  } catch (const format_error&) {
    throw;  // an option error (main.cpp reports it as one), not the file's
  } catch (const lqer::error& e) {
    // e.g. an fp16 scale that would overflow: say which file it came from.
    throw value_error(o.input + ": " + e.what());
  }

  // Errors in double: a float sum of 10^8 squares would lose the small terms.
  double err2 = 0, ref2 = 0, max_abs = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double d = double(out[i]) - double(in.data[i]);
    err2 += d * d;
    ref2 += double(in.data[i]) * double(in.data[i]);
    max_abs = std::max(max_abs, std::fabs(d));
  }
  const double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0;

  const std::array<index_t, 2> shape{in.rows, in.cols};
  io::write_npy(o.output, out.data(), std::span<const index_t>(shape));

  if (!o.quiet)
    fmt::print("{}: {}x{}, blocks along {}: {:.3f} bits/weight, relative Frobenius error {:.4e}, max abs error "
               "{:.4e} -> {}\n",
               res.format_name, in.rows, in.cols, axis == block_axis::cols ? "rows (axis 1)" : "columns (axis 0)",
               res.bits_per_weight, rel, max_abs, o.output);
  return 0;
}

}  // namespace

command add_quantize_command(CLI::App& parent) {
  auto o = std::make_shared<quantize_options>();
  CLI::App* sub = parent.add_subcommand(
      "quantize",
      "Fake-quantize a 2-D array: quantize IN.npy in a format, dequantize, and write the result to OUT.npy (float32).");
  sub->add_option("IN.npy", o->input,
                  "Input: a 2-D .npy array, float32 (float16, float64, int8 and uint8 are converted to float32; "
                  "NaN and Inf are rejected)")
      ->required();
  sub->add_option("OUT.npy", o->output,
                  "Output: float32 .npy of the same shape, written atomically (never partially; left untouched on "
                  "any error)")
      ->required();
  sub->add_option("-f,--format", o->format, "Format: " + format_names_text())
      ->required();
  o->block_opt = sub->add_option("-b,--block", o->block,
                                 "Elements per block/group along the blocking axis: " + list_text(mx_blocks{}, {}, ", ") +
                                     ", or 'row' "
                                 "(= 0, int formats only). Default: 32 for OCP MX and q4_0/q4_1/q8_0, 16 for --rule "
                                 "lqer, row for int4/int8");
  o->rule_opt = sub->add_option("-r,--rule", o->rule, "MX exponent/rounding rule: ocp (OCP MX v1.0) or lqer (LQER block_fp)")
                    ->check(CLI::IsMember({"ocp", "lqer"}))
                    ->default_str("ocp");
  o->scheme_opt = sub->add_option("--scheme", o->scheme, "int4/int8: sym (symmetric) or asym (zero point)")
                      ->check(CLI::IsMember({"sym", "asym"}))
                      ->default_str("sym");
  o->scale_opt = sub->add_option("--scale", o->scale, "int4/int8: scale stored as f32 or f16")
                     ->check(CLI::IsMember({"f32", "f16"}))
                     ->default_str("f32");
  sub->add_option("-a,--axis", o->axis,
                  "1: blocks run along each row (reduction over columns, an [out, in] weight); 0: down each column")
      ->check(CLI::IsMember({0, 1}))
      ->default_str("1");
  sub->add_flag("-q,--quiet", o->quiet, "Do not print the one-line summary");
  sub->footer(format_help() +
              "\nPrints one line: the format, bits per weight (code bits + the scale's share of a block),\n"
              "the relative Frobenius error ||W - Q(W)|| / ||W|| and the max abs error (--quiet: nothing).\n"
              "Exit status: 0 success, 2 bad option, bad file or bad data (then nothing is written).\n"
              "Example: lqer quantize --format mxint4 --rule lqer W.npy Wq.npy");
  return command{sub, [o] { return run_quantize(*o); }};
}

}  // namespace lqer::cli
