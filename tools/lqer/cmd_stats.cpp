// `lqer stats`: calibration statistics as files, so that calibration can run
// as N independent jobs (processes, machines, any batch scheduler) and be
// combined:
//
//   lqer stats collect --calib X1.npy [--calib X2.npy ...] [--gram] --out S1.safetensors
//   lqer stats merge S1.safetensors S2.safetensors ... --out S.safetensors
//   lqer factorize --weight W.npy --stats S.safetensors --out layer0
//
// collect accumulates lqer::activation_stats over the files (each file one
// batch, or --batch-tokens N per batch, as factorize does) and saves it;
// merge loads and merges. The merged statistics equal those of one collect
// over every batch, bit for bit in practice (calib/activation_stats.hpp says
// exactly when). Files are docs/checkpoint.md's "lqer.activation_stats"
// schema, written atomically, checksums verified when read.
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <lqer/calib/activation_stats.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/tensor/check.hpp>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"

namespace lqer::cli {
namespace {

struct stats_cli {
  CLI::App* collect = nullptr;
  CLI::App* merge = nullptr;
  std::vector<std::string> calib, inputs;
  std::string out;
  index_t batch_tokens = 0;
  bool gram = false;
  bool quiet = false;
};

std::string summary(const std::string& file, const activation_stats& s) {
  return fmt::format("{}: {} channels, {} tokens in {} batch{}, Gram matrix {}", file, s.in_features(), s.tokens(),
                     s.batches(), s.batches() == 1 ? "" : "es", s.has_gram() ? "yes" : "no");
}

int run_collect(const stats_cli& o) {
  if (o.batch_tokens < 0) throw usage_error("--batch-tokens must be >= 0");
  activation_stats stats;
  std::string first;
  for (const std::string& file : o.calib) {
    const io::npy_matrix x = io::read_npy_matrix(file, io::npy_convert::any_to_float32);
    if (x.rows == 0 || x.cols == 0)
      throw shape_error(file + ": the activations have shape (" + std::to_string(x.rows) + ", " +
                        std::to_string(x.cols) + "); expected [tokens, in] with tokens and in > 0");
    if (stats.in_features() == 0) {
      stats = activation_stats(x.cols, o.gram ? gram_mode::on : gram_mode::off);
      first = file;
    } else if (x.cols != stats.in_features()) {
      throw shape_error(file + ": the activations have " + std::to_string(x.cols) + " columns but " + first + " has " +
                        std::to_string(stats.in_features()) + " (one layer's inputs per statistics file)");
    }
    require_finite(x.data, x.cols, file);
    const index_t step = o.batch_tokens > 0 ? o.batch_tokens : x.rows;
    for (index_t r = 0; r < x.rows; r += step)
      stats.add_batch(matrix_view<const float>(x.data.data() + r * x.cols, std::min(step, x.rows - r), x.cols));
  }
  stats.save(o.out);
  if (!o.quiet) fmt::print("{}\n", summary(o.out, stats));
  return 0;
}

int run_merge(const stats_cli& o) {
  activation_stats merged;
  std::string first;
  for (const std::string& file : o.inputs) {
    const activation_stats s = activation_stats::load(file);
    if (merged.in_features() != 0) {
      // merge() would refuse these too; here the sentence names both files.
      if (s.in_features() != merged.in_features())
        throw shape_error(file + ": statistics of " + std::to_string(s.in_features()) + " channels, but " + first +
                          " has " + std::to_string(merged.in_features()) +
                          " (only statistics of one layer's inputs merge)");
      if (s.has_gram() != merged.has_gram())
        throw value_error(file + ": " + (s.has_gram() ? "keeps" : "does not keep") + " the Gram matrix and " + first +
                          (s.has_gram() ? " does not" : " does") + " (collect every part with the same --gram)");
    } else {
      first = file;
    }
    merged.merge(s);
  }
  merged.save(o.out);
  if (!o.quiet) fmt::print("{}\n", summary(o.out, merged));
  return 0;
}

}  // namespace

command add_stats_command(CLI::App& parent) {
  auto o = std::make_shared<stats_cli>();
  CLI::App* sub = parent.add_subcommand(
      "stats", "Calibration statistics as files: collect them from activations, merge the files of N jobs (exactly).");
  sub->require_subcommand(1, 1);

  o->collect = sub->add_subcommand(
      "collect", "Accumulate a layer input's statistics from calibration activations X.npy into S.safetensors.");
  o->collect->add_option("--calib", o->calib, "X.npy: activations [tokens, in]; repeat for more files (each a batch)")
      ->required();
  o->collect
      ->add_option("--batch-tokens", o->batch_tokens,
                   "Cut each file into batches of this many tokens (0: one batch per file), as factorize does")
      ->default_str("0");
  o->collect->add_flag("--gram", o->gram, "Also accumulate the Gram matrix (in x in; the whiten policy needs it)");
  o->collect->add_option("--out", o->out, "S.safetensors: the statistics file to write (atomically)")->required();
  o->collect->add_flag("-q,--quiet", o->quiet, "Do not print the one-line summary");
  o->collect->footer("Example: lqer stats collect --calib X_part3.npy --gram --out stats_part3.safetensors");

  o->merge = sub->add_subcommand(
      "merge", "Merge statistics files of one layer input (from N jobs) into one: the same as collecting them all.");
  o->merge->add_option("FILES", o->inputs, "S1.safetensors S2.safetensors ...: files from lqer stats collect / merge")
      ->required();
  o->merge->add_option("--out", o->out, "S.safetensors: the merged file to write (atomically)")->required();
  o->merge->add_flag("-q,--quiet", o->quiet, "Do not print the one-line summary");
  o->merge->footer(
      "The files must have the same width and --gram mode. The result equals one collect over every batch,\n"
      "bit for bit (see calib/activation_stats.hpp); use it with lqer factorize --stats.\n"
      "Example: lqer stats merge stats_part*.safetensors --out stats.safetensors");

  sub->footer(
      "Exit status: 0 success, 2 bad option, bad file or bad data (a sentence on stderr; nothing written).\n"
      "Run 'lqer stats collect --help' or 'lqer stats merge --help' for their options.");
  return command{sub, [o] { return o->collect->parsed() ? run_collect(*o) : run_merge(*o); }};
}

}  // namespace lqer::cli
