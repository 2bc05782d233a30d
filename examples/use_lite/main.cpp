// use_lite — the command-line program:
//   use_lite tokenize --model DIR --sentences FILE
//   use_lite embed    --model DIR --sentences FILE --out EMB.npy
//                     [--quant plain|lqer|l2qer|rms|whiten --rank K --calib FILE]
//   use_lite eval     --model DIR --calib FILE --sentences FILE
// --model, --calib and eval's --sentences default to what
// scripts/fetch_use_lite.sh put in the cache, so `use_lite eval` alone works.
// Exit codes: 0 success; 2 a usage error or an lqer::error (one sentence on
// stderr); 1 anything unexpected.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <lqer/io/npy.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "eval.hpp"
#include "model.hpp"
#include "quantize.hpp"
#include "text.hpp"
#include "tokenizer.hpp"

namespace {

using namespace use_lite;
using engine::add_format_options;
using engine::format_options;
using engine::parse_int_list;
using engine::usage_error;

struct common_options {
  std::string model = default_model_dir().string();
  std::string sentences;
  int threads = 1;
};

void add_common(CLI::App* cmd, common_options& o, std::optional<std::string> default_sentences,
                bool threads_option = true) {
  cmd->add_option("--model", o.model, "Model directory (model.json, shards, vocab.json)")->capture_default_str();
  auto* s = cmd->add_option("--sentences", o.sentences, "Text file, one sentence per line, taken verbatim");
  if (default_sentences) {
    o.sentences = *default_sentences;
    s->capture_default_str();
  } else {
    s->required();
  }
  if (!threads_option) return;  // eval times the thread counts of --threads-list instead
  cmd->add_option("--threads", o.threads, "Threads of the engine's pool")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
}

std::vector<std::vector<std::int32_t>> tokenize_all(const tokenizer& tok, const std::vector<std::string>& lines) {
  std::vector<std::vector<std::int32_t>> ids;
  ids.reserve(lines.size());
  for (const auto& l : lines) ids.push_back(tok.encode(l));
  return ids;
}

std::vector<std::string> read_nonempty(const std::string& path, const char* what) {
  auto lines = read_lines(path);
  if (lines.empty()) throw lqer::value_error(path + ": no sentences (" + what + ")");
  return lines;
}

// ---------------------------------------------------------------------------

int run_tokenize(const common_options& o) {
  const tokenizer tok = tokenizer::load(std::filesystem::path(o.model) / "vocab.json");
  for (const auto& line : read_lines(o.sentences)) {
    const auto ids = tok.encode(line);
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ' ';
      out += std::to_string(ids[i]);
    }
    std::cout << out << '\n';
  }
  return 0;
}

struct embed_options {
  std::string out, quant, calib;
  int rank = 32;
};

/// An --out that cannot be written (a directory, or in a directory that does
/// not exist) is refused before the model is loaded and the sentences are
/// embedded, with the writer's own words; the writer checks again at the end.
void check_output_path(const std::string& out) {
  namespace fs = std::filesystem;
  if (out.empty()) throw usage_error("--out is empty");
  std::error_code ec;
  const fs::path target(out);
  if (!target.has_filename() || fs::is_directory(target, ec))
    throw lqer::io_error(out + ": cannot write: it is a directory");
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  if (!fs::is_directory(dir, ec))
    throw lqer::io_error(out + ": cannot write: " + dir.string() + " is not an existing directory");
}

int run_embed(const common_options& o, const embed_options& e, const format_options& f) {
  check_output_path(e.out);
  std::optional<quant_config> cfg;
  // The format options are checked even without --quant (which alone uses
  // them): a misspelt value is an error, not silently ignored.
  (void)f.config<quant_config>();
  if (!e.quant.empty()) {
    cfg = f.config<quant_config>();
    const engine::method m = engine::parse_method(e.quant);
    cfg->policy = m.policy;
    cfg->set_rank(m.plain ? 0 : e.rank);
    if (m.needs_calibration() && e.calib.empty())
      throw usage_error("--quant " + e.quant + " needs calibration sentences (--calib FILE)");
  } else if (!e.calib.empty()) {
    throw usage_error("--calib is only used with --quant");
  }

  const auto lines = read_nonempty(o.sentences, "--sentences");
  const tokenizer tok = tokenizer::load(std::filesystem::path(o.model) / "vocab.json");
  auto weights = std::make_shared<const model_weights>(model_weights::load(o.model));
  check_vocabulary_fits(tok.size(), std::filesystem::path(o.model));
  if (cfg) check_ranks(*weights, cfg->ranks, "--rank");
  thread_pool pool(o.threads);
  const encoder fp32(weights, make_fp32_linears(weights));
  std::vector<float> emb;
  if (!cfg) {
    emb = fp32.embed(tokenize_all(tok, lines), pool);
  } else {
    calibration calib;
    if (!e.calib.empty()) {
      const auto calib_ids = tokenize_all(tok, read_nonempty(e.calib, "--calib"));
      calib = calibrate(fp32, calib_ids, pool,
                        cfg->policy == scale_policy_kind::whiten ? lqer::gram_mode::on : lqer::gram_mode::off);
    }
    quantized_model qm = quantize_model(weights, calib, *cfg);
    const encoder q(weights, std::move(qm.linears));
    emb = q.embed(tokenize_all(tok, lines), pool);
  }
  lqer::io::write_npy_matrix(e.out, emb.data(), static_cast<lqer::index_t>(lines.size()), encoder::kOutDim);
  std::fprintf(stderr, "use_lite embed: %zu sentences -> %s (%s)\n", lines.size(), e.out.c_str(),
               cfg ? cfg->describe().c_str() : "fp32");
  return 0;
}

struct eval_cli {
  std::string calib = default_calib_file().string();
  std::string ranks = "0,8,16,32", policies = "identity,mean_abs,rms,whiten", threads = "1,2", layer_ranks;
  int layer_rows = 1024;
  int timing_runs = 5;
};

int run_eval(const common_options& o, const eval_cli& e, const format_options& f) {
  eval_options opt;
  opt.base = f.config<quant_config>();
  opt.ranks.clear();
  opt.policies.clear();
  opt.thread_counts.clear();
  for (int r : parse_int_list(e.ranks, "--ranks")) {
    if (r < 0) throw usage_error("--ranks must be >= 0");
    opt.ranks.push_back(r);
  }
  std::stringstream ps(e.policies);
  for (std::string p; std::getline(ps, p, ',');) {
    try {
      opt.policies.push_back(parse_scale_policy(p));
    } catch (const lqer::value_error& err) {
      throw usage_error(std::string("--policies: ") + err.what());
    }
  }
  // An empty list would print a table of fp32 alone, which nobody asked for.
  if (opt.policies.empty()) throw usage_error("--policies is empty");
  for (int t : parse_int_list(e.threads, "--threads-list")) {
    if (t < 1 || t > 256) throw usage_error("--threads-list entries must be in [1, 256]");
    opt.thread_counts.push_back(t);
  }
  if (!e.layer_ranks.empty()) {
    const auto lr = parse_int_list(e.layer_ranks, "--layer-ranks");
    if (lr.size() != kNumLinears) throw usage_error("--layer-ranks needs " + std::to_string(kNumLinears) + " ranks");
    // As --ranks: a negative rank would otherwise reach factorize only after
    // calibration, with the table's header already on stdout.
    for (int r : lr)
      if (r < 0) throw usage_error("--layer-ranks must be >= 0");
    std::copy(lr.begin(), lr.end(), opt.layer_ranks.emplace().begin());
  }
  opt.layer_rows = e.layer_rows;
  opt.timing_runs = e.timing_runs;
  opt.model_dir = o.model;
  opt.calib_file = e.calib;
  opt.eval_file = o.sentences;
  run_quality_table(opt, std::cout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "use_lite — Universal Sentence Encoder lite, with every linear layer through lqer (W4A8 + low-rank "
      "error correction)",
      "use_lite"};
  app.require_subcommand(1, 1);
  app.footer(
      "The model and the KJV text come from scripts/fetch_use_lite.sh (cache: $LQER_CACHE/use_lite, "
      "default ~/.cache/lqer/use_lite).");

  common_options tok_opts, emb_opts, eval_opts;
  embed_options emb;
  format_options emb_fmt, eval_fmt;
  eval_cli ev;

  auto* tok_cmd = app.add_subcommand("tokenize", "Print the token ids of each sentence, one line per sentence");
  add_common(tok_cmd, tok_opts, std::nullopt);

  auto* emb_cmd = app.add_subcommand("embed", "Embed sentences into a float32 [n, 512] .npy (fp32 or quantized)");
  add_common(emb_cmd, emb_opts, std::nullopt);
  emb_cmd->add_option("--out", emb.out, "Output .npy")->required();
  emb_cmd
      ->add_option("--quant", emb.quant, engine::kMethodHelp)
      ->check(CLI::IsMember(engine::method_names()));
  emb_cmd->add_option("--rank", emb.rank, "Rank of the correction (not for plain)")
      ->check(CLI::Range(0, 512))
      ->capture_default_str();
  emb_cmd->add_option("--calib", emb.calib, "Calibration sentences, one per line (l2qer, rms, whiten)");
  add_format_options(emb_cmd, emb_fmt, "16, 32 or 64");

  auto* eval_cmd = app.add_subcommand("eval", "The quality/speed table: ranks x scale policies against fp32");
  add_common(eval_cmd, eval_opts, default_eval_file().string(), /*threads_option=*/false);
  eval_cmd->add_option("--calib", ev.calib, "Calibration sentences, one per line")->capture_default_str();
  eval_cmd->add_option("--ranks", ev.ranks, "Ranks to tabulate")->capture_default_str();
  eval_cmd->add_option("--policies", ev.policies, "Scale policies to tabulate")->capture_default_str();
  eval_cmd->add_option("--threads-list", ev.threads, "Thread counts to time")->capture_default_str();
  eval_cmd->add_option("--layer-ranks", ev.layer_ranks,
                       "Per-layer ranks (10, in the order l0.qkv l0.attn_out l0.dense l0.ffn1 l0.ffn2 l1.qkv "
                       "l1.attn_out l1.ffn1 l1.ffn2 tanh) instead of --ranks");
  eval_cmd->add_option("--layer-rows", ev.layer_rows, "Token rows per layer for the per-layer errors")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  eval_cmd->add_option("--timing-runs", ev.timing_runs, "Runs per thread count; the fastest is reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  add_format_options(eval_cmd, eval_fmt, "16, 32 or 64");

  return engine::run_program(app, argc, argv, {tok_cmd, emb_cmd, eval_cmd}, [&] {
    if (tok_cmd->parsed()) return run_tokenize(tok_opts);
    if (emb_cmd->parsed()) return run_embed(emb_opts, emb, emb_fmt);
    return run_eval(eval_opts, ev, eval_fmt);
  });
}
