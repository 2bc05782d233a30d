// use_lite — the command-line program:
//   use_lite tokenize --model DIR|FILE --sentences FILE
//   use_lite embed    --model DIR --sentences FILE --out EMB.npy
//                     [--quant plain|lqer|l2qer|rms|whiten --rank K --calib FILE]
//   use_lite embed    --model MODEL.lqer.safetensors --sentences FILE --out EMB.npy
//   use_lite quantize --model DIR --quant METHOD (--rank K | --bits-per-weight B [--max-rank R])
//                     [--calib FILE] --out MODEL.lqer.safetensors
//   use_lite eval     --model DIR --calib FILE --sentences FILE
// --model is the TF.js model directory, or for tokenize and embed a model file
// `use_lite quantize` wrote (checkpoint.hpp: no TF.js files, no calibration).
// --model, --calib and eval's --sentences default to what
// scripts/fetch_use_lite.sh put in the cache, so `use_lite eval` alone works.
// embed --against REF.npy also prints how close the embeddings are to REF's
// (e.g. fp32's of the same sentences): mean and min cosine, Spearman.
// Exit codes: 0 success; 2 a usage error or an lqer::error (one sentence on
// stderr); 130 quantize interrupted (SIGINT / SIGTERM; nothing written);
// 1 anything unexpected.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <lqer/io/npy.hpp>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "common/cli.hpp"
#include "eval.hpp"
#include "metrics.hpp"
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
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct common_options {
  std::string model = default_model_dir().string();
  std::string sentences;
  int threads = 1;
};

void add_common(CLI::App* cmd, common_options& o, std::optional<std::string> default_sentences,
                bool threads_option = true, bool sentences_option = true) {
  cmd->add_option("--model", o.model,
                  "Model directory (model.json, shards, vocab.json), or (tokenize, embed) a model file use_lite "
                  "quantize wrote")
      ->capture_default_str();
  if (!sentences_option) return;  // quantize reads --calib only
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
  const tokenizer tok =
      is_model_file(o.model) ? load_model_file_tokenizer(o.model) : tokenizer::load(fs::path(o.model) / "vocab.json");
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
  std::string out, quant, calib, against;
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

/// --against: a reference .npy [n, 512] for the n sentences (value_error naming it otherwise).
std::vector<float> read_reference(const std::string& path, std::size_t n) {
  const auto m = lqer::io::read_npy_matrix(path);
  if (m.rows != static_cast<lqer::index_t>(n) || m.cols != encoder::kOutDim)
    throw lqer::value_error(path + ": is " + std::to_string(m.rows) + " x " + std::to_string(m.cols) + ", not the " +
                            std::to_string(n) + " x " + std::to_string(encoder::kOutDim) +
                            " embeddings of the sentences");
  return m.data;
}

/// One line on stdout: how close `emb` is to `ref` (both [n, 512]).
void print_against(const std::vector<float>& emb, const std::vector<float>& ref, const std::string& ref_name) {
  const auto cos = row_cosines(emb, ref, encoder::kOutDim);
  const double mean = std::accumulate(cos.begin(), cos.end(), 0.0) / double(cos.size());
  std::printf("against %s: mean cosine %.4f, min cosine %.4f", ref_name.c_str(), mean,
              *std::min_element(cos.begin(), cos.end()));
  if (cos.size() >= 3) std::printf(", Spearman %.4f", similarity_spearman(emb, ref, encoder::kOutDim));
  std::printf(" (%zu sentences)\n", cos.size());
}

int run_embed(const common_options& o, const embed_options& e, const format_options& f) {
  check_output_path(e.out);
  // The format options are checked even without --quant (which alone uses
  // them, but for --mode and --reference): a misspelt value is an error, not
  // silently ignored.
  const auto base = f.config<quant_config>();
  const bool model_file = is_model_file(o.model);
  std::optional<quant_config> cfg;
  if (!e.quant.empty()) {
    if (model_file)
      throw usage_error("--quant: " + o.model +
                        " is a quantized model file already (give the TF.js model directory to quantize)");
    cfg = base;
    const engine::method m = engine::parse_method(e.quant);
    cfg->policy = m.policy;
    cfg->set_rank(m.plain ? 0 : e.rank);
    if (m.needs_calibration() && e.calib.empty())
      throw usage_error("--quant " + e.quant + " needs calibration sentences (--calib FILE)");
  } else if (!e.calib.empty()) {
    throw usage_error("--calib is only used with --quant");
  }

  const auto lines = read_nonempty(o.sentences, "--sentences");
  std::vector<float> reference;
  if (!e.against.empty()) reference = read_reference(e.against, lines.size());
  thread_pool pool(o.threads);
  std::vector<float> emb;
  std::string what;
  if (model_file) {
    const auto t0 = clock_type::now();
    auto file = load_quantized_model(o.model, pool, true, base.mode, base.reference_forward);
    const double load_s = seconds_since(t0);
    const encoder q = file.make_encoder();
    emb = q.embed(tokenize_all(*file.tok, lines), pool);
    char b[64];
    std::snprintf(b, sizeof b, "; loaded in %.3f s", load_s);
    what = o.model + ": " + file.info.quant + b;
  } else {
    const tokenizer tok = tokenizer::load(fs::path(o.model) / "vocab.json");
    auto weights = std::make_shared<const model_weights>(model_weights::load(o.model));
    check_vocabulary_fits(tok.size(), fs::path(o.model));
    if (cfg) check_ranks(*weights, cfg->ranks, "--rank");
    const encoder fp32(weights, make_fp32_linears(weights));
    if (!cfg) {
      emb = fp32.embed(tokenize_all(tok, lines), pool);
    } else {
      calibration calib;
      if (!e.calib.empty()) {
        const auto calib_ids = tokenize_all(tok, read_nonempty(e.calib, "--calib"));
        calib = calibrate(fp32, calib_ids, pool,
                          cfg->policy == scale_policy_kind::whiten ? lqer::gram_mode::on : lqer::gram_mode::off);
      }
      quantized_model qm = quantize_model(weights, calib, *cfg, &pool);
      const encoder q(weights, std::move(qm.linears));
      emb = q.embed(tokenize_all(tok, lines), pool);
    }
    what = cfg ? cfg->describe() : "fp32";
  }
  lqer::io::write_npy_matrix(e.out, emb.data(), static_cast<lqer::index_t>(lines.size()), encoder::kOutDim);
  std::fprintf(stderr, "use_lite embed: %zu sentences -> %s (%s)\n", lines.size(), e.out.c_str(), what.c_str());
  if (!e.against.empty()) print_against(emb, reference, e.against);
  return 0;
}

// ---------------------------------------------------------------------------
// quantize

struct quantize_cli {
  std::string out, method, calib = default_calib_file().string();
  int rank = 32;
  bool rank_given = false;
  engine::rank_budget budget;
};

int run_quantize(const common_options& o, const quantize_cli& qc, const format_options& f) {
  // Every option is checked before anything is read.
  quant_config cfg = f.config<quant_config>();
  const engine::method meth = engine::parse_method(qc.method);
  // CLI11's Range lets NaN through (every comparison with it is false), and
  // rank_budget::enabled() would then quietly fall back to --rank.
  if (std::isnan(qc.budget.bits_per_weight)) throw usage_error("--bits-per-weight must be a number, not nan");
  if (qc.budget.enabled() && qc.rank_given) throw usage_error("give --rank or --bits-per-weight, not both");
  if (qc.budget.enabled() && meth.plain) throw usage_error("--bits-per-weight needs a correction: plain has none");
  if (is_model_file(o.model))
    throw usage_error("--model: " + o.model + " is a model file already (quantize reads the TF.js model directory)");
  check_output_path(qc.out);
  cfg.policy = meth.policy;
  cfg.set_rank(meth.plain ? 0 : qc.rank);
  cfg.budget = qc.budget;

  const engine::interrupt_guard guard;
  const auto t0 = clock_type::now();
  thread_pool pool(o.threads);
  const fs::path dir(o.model);
  const vocabulary vocab = vocabulary::load(dir / "vocab.json");
  const tokenizer tok = tokenizer::from_vocabulary(vocab, (dir / "vocab.json").string());
  auto weights = std::make_shared<const model_weights>(model_weights::load(dir));
  check_vocabulary_fits(tok.size(), dir);
  if (!cfg.budget.enabled()) check_ranks(*weights, cfg.ranks, "--rank");

  calibration calib;
  std::string calib_info = "none";
  if (meth.needs_calibration()) {
    const auto c0 = clock_type::now();
    const auto ids = tokenize_all(tok, read_nonempty(qc.calib, "--calib"));
    const encoder fp32(weights, make_fp32_linears(weights));
    calib = calibrate(fp32, ids, pool,
                      cfg.policy == scale_policy_kind::whiten ? lqer::gram_mode::on : lqer::gram_mode::off);
    calib_info = std::to_string(ids.size()) + " sentences of " + fs::path(qc.calib).filename().string();
    std::fprintf(stderr, "use_lite quantize: calibrated on %s in %.1f s\n", calib_info.c_str(), seconds_since(c0));
    engine::interrupt_guard::check("calibrating");
  }

  const engine::progress_meter meter("use_lite quantize: layers");
  quantized_model qm = quantize_model(weights, calib, cfg, &pool, [&](int done, int total) {
    engine::interrupt_guard::check("quantizing");
    meter(done, total);
  });
  engine::interrupt_guard::check("quantizing");
  std::string desc = qc.method + ": " + cfg.describe();
  if (cfg.budget.enabled()) {
    desc += "; ranks";
    for (const auto& r : qm.reports) desc += " " + std::to_string(r.rank);
  }
  const encoder q(weights, std::move(qm.linears));
  // The directory's name, also when given with a trailing slash.
  const std::string source = (dir.filename().empty() ? dir.parent_path() : dir).filename().string();
  save_quantized_model(qc.out, q, vocab, {desc, source, calib_info});
  std::printf("wrote %s: %s, %.2f MB, %.3f bits per weight in the linears (%.1f s)\n", qc.out.c_str(), desc.c_str(),
              double(fs::file_size(qc.out)) / 1e6, qm.bits_per_weight(), seconds_since(t0));
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
  emb_cmd->add_option("--quant", emb.quant, engine::kMethodHelp)->check(CLI::IsMember(engine::method_names()));
  emb_cmd->add_option("--rank", emb.rank, "Rank of the correction (not for plain)")
      ->check(CLI::Range(0, 512))
      ->capture_default_str();
  emb_cmd->add_option("--calib", emb.calib, "Calibration sentences, one per line (l2qer, rms, whiten)");
  emb_cmd->add_option("--against", emb.against,
                      "Reference embeddings of the same sentences (.npy [n, 512], e.g. fp32's): print the mean and "
                      "min cosine and the Spearman correlation of the similarities");
  add_format_options(emb_cmd, emb_fmt, "16, 32 or 64");

  common_options qz_opts;
  quantize_cli qz;
  format_options qz_fmt;
  auto* qz_cmd = app.add_subcommand(
      "quantize", "Quantize every linear layer and write the whole model to one file (embed --model reads it)");
  add_common(qz_cmd, qz_opts, std::nullopt, /*threads_option=*/false, /*sentences_option=*/false);
  qz_opts.threads = 2;
  qz_cmd->add_option("--threads", qz_opts.threads, "Threads of the engine's pool (layers are factorized in parallel)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  qz_cmd->add_option("--out", qz.out, "The model file to write (safetensors; written atomically)")->required();
  qz_cmd->add_option("--quant", qz.method, engine::kMethodHelp)
      ->check(CLI::IsMember(engine::method_names()))
      ->required();
  qz_cmd
      ->add_option_function<int>(
          "--rank",
          [&qz](int v) {
            qz.rank = v;
            qz.rank_given = true;
          },
          "Rank of the correction, every layer (not for plain); default 32")
      ->check(CLI::Range(0, 512));
  qz_cmd
      ->add_option("--bits-per-weight", qz.budget.bits_per_weight,
                   "Choose each layer's rank so that weights, scales, A and B take at most this many bits per weight, "
                   "spending bits where they remove the most calibrated error (instead of --rank)")
      ->check(CLI::Range(0.5, 32.0));
  qz_cmd->add_option("--max-rank", qz.budget.max_rank, "With --bits-per-weight: the largest rank a layer may get")
      ->check(CLI::Range(1, 512))
      ->capture_default_str();
  qz_cmd
      ->add_option_function<std::string>(
          "--rank-criterion", [&qz](const std::string& v) { qz.budget.relative = v == "relative"; },
          "With --bits-per-weight: what a rank step is worth, relative (its σ² over the layer's whole weighted "
          "output; default) or absolute (σ² as it is)")
      ->check(CLI::IsMember({"relative", "absolute"}));
  qz_cmd->add_option("--calib", qz.calib, "Calibration sentences, one per line (l2qer, rms, whiten)")
      ->capture_default_str();
  add_format_options(qz_cmd, qz_fmt, "16, 32 or 64");

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

  return engine::run_program(app, argc, argv, {tok_cmd, emb_cmd, qz_cmd, eval_cmd}, [&] {
    if (tok_cmd->parsed()) return run_tokenize(tok_opts);
    if (emb_cmd->parsed()) return run_embed(emb_opts, emb, emb_fmt);
    if (qz_cmd->parsed()) return run_quantize(qz_opts, qz, qz_fmt);
    return run_eval(eval_opts, ev, eval_fmt);
  });
}
