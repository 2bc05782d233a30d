// llama — the command-line program:
//   llama tokenize   [--model F.gguf] (--text FILE | --prompt S) [--special]
//   llama perplexity [--model F.gguf] [--text FILE] [--ctx N] [--chunks N]
//                    [--quant plain|lqer|l2qer|rms|whiten --rank K --calib FILE ...]
//   llama generate   [--model F.gguf] --prompt S [-n N] [--chat] [--quant ...]
//   llama quantize   [--model F.gguf] --quant METHOD (--rank K | --bits-per-weight B) --out M.lqer.safetensors
//   llama eval       the paper's perplexity table (methods × ranks × blocks)
//   llama bench      prefill / decode tokens/s, float and quantized
// --model, --text and --calib default to what scripts/fetch_smollm2.sh put in
// the cache (LQER_SMOLLM2_GGUF overrides the model), so `llama eval` alone works.
// perplexity, generate and tokenize also take a model file `llama quantize`
// wrote (checkpoint.hpp) as --model: no float weights, no calibration.
// The float model is the file's tensors decoded to float32 and run in float32.
// Exit codes: 0 success; 2 a usage error or an lqer::error (one sentence on
// stderr); 1 anything unexpected.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <lqer/error.hpp>
#include <lqer/io/gguf.hpp>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint.hpp"
#include "common/cli.hpp"
#include "eval.hpp"
#include "model.hpp"
#include "quantize.hpp"
#include "tokenizer.hpp"

namespace {

using namespace llama;
using engine::usage_error;
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

fs::path cache_dir() {
  if (const char* c = std::getenv("LQER_CACHE"); c && *c) return fs::path(c) / "smollm2";
  if (const char* h = std::getenv("HOME"); h && *h) return fs::path(h) / ".cache" / "lqer" / "smollm2";
  return fs::path(".cache") / "lqer" / "smollm2";
}
std::string default_model() {
  if (const char* m = std::getenv("LQER_SMOLLM2_GGUF"); m && *m) return m;
  return (cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}
std::string default_eval_text() { return (cache_dir() / "text" / "eval.txt").string(); }
std::string default_calib_text() { return (cache_dir() / "text" / "calib.txt").string(); }

constexpr const char* kBlocks = "16 or 32";

/// --output-format: the output projection (the tied token table) float or W8A8.
void add_output_format(CLI::App* cmd, engine::format_options& f) {
  cmd->add_option("--output-format", f.output_format,
                  "Output projection: float, or mxint8 (W8A8 through the fused kernel, block --block; with --quant)")
      ->check(CLI::IsMember({"float", "mxint8"}))
      ->capture_default_str();
}

/// --quant and what goes with it (perplexity, generate).
struct quant_cli {
  std::string method, calib = default_calib_text();
  int rank = 32, calib_chunks = 16;
  engine::format_options formats;
  bool calib_given = false, rank_given = false;
  bool no_verify = false;      ///< a model file's checksums are not checked
  engine::rank_budget budget;  ///< quantize's --bits-per-weight / --max-rank

  void add(CLI::App* cmd) {
    cmd->add_option("--quant", method, engine::kMethodHelp)->check(CLI::IsMember(engine::method_names()));
    cmd->add_option_function<int>(
           "--rank",
           [this](int v) {
             rank = v;
             rank_given = true;
           },
           "Rank of the correction (not for plain); default 32")
        ->check(CLI::Range(0, 4096));
    cmd->add_option_function<std::string>(
           "--calib",
           [this](const std::string& v) {
             calib = v;
             calib_given = true;
           },
           "Calibration text (l2qer, rms, whiten); default: the cached Genesis text")
        ->default_str(calib);
    cmd->add_option("--calib-chunks", calib_chunks, "Calibration windows of --ctx tokens")
        ->check(CLI::Range(1, 1 << 16))
        ->capture_default_str();
    engine::add_format_options(cmd, formats, kBlocks);
    add_output_format(cmd, formats);
    cmd->add_flag("--no-verify", no_verify,
                  "With a model file as --model: skip its per-tensor sha256 checks (its structure is still checked)");
  }

  /// --bits-per-weight and --max-rank (quantize).
  void add_budget(CLI::App* cmd) {
    cmd->add_option("--bits-per-weight", budget.bits_per_weight,
                    "Choose each layer's rank so that weights, scales, A and B take at most this many bits per "
                    "weight, spending bits where they remove the most calibrated error (instead of --rank)")
        ->check(CLI::Range(0.5, 32.0));
    cmd->add_option("--max-rank", budget.max_rank, "With --bits-per-weight: the largest rank a layer may get")
        ->check(CLI::Range(1, 4096))
        ->capture_default_str();
    cmd->add_option_function<std::string>(
           "--rank-criterion", [this](const std::string& v) { budget.relative = v == "relative"; },
           "With --bits-per-weight: what a rank step is worth, relative (its σ² over the layer's whole weighted "
           "error; default) or absolute (σ² as it is)")
        ->check(CLI::IsMember({"relative", "absolute"}));
  }

  /// The configuration, or nullopt for the float model (checked before anything is loaded).
  std::optional<std::pair<quant_config, engine::method>> config() const {
    // The format options are checked even without --quant: a misspelt value
    // is an error, not silently ignored.
    const auto base = formats.config<quant_config>();
    if (method.empty()) {
      if (calib_given) throw usage_error("--calib is only used with --quant");
      if (formats.output_format != "float") throw usage_error("--output-format is only used with --quant");
      return std::nullopt;
    }
    // CLI11's range check lets "nan" through; a NaN budget would silently mean "none".
    if (!(budget.bits_per_weight >= 0)) throw usage_error("--bits-per-weight must be a number");
    if (budget.enabled() && rank_given) throw usage_error("give --rank or --bits-per-weight, not both");
    auto meth = engine::parse_method(method);
    if (budget.enabled() && meth.plain) throw usage_error("--bits-per-weight needs a correction: plain has none");
    auto cfg = base;
    cfg.budget = budget;
    return std::pair{cfg, meth};
  }

  /// Replaces m's linears by their quantized form (calibrating first when the
  /// method needs it); returns "<method>: <configuration>", or "" for none.
  std::string apply(model& m, const model_weights& w, const tokenizer& tok, index_t ctx, thread_pool& pool) const {
    auto c = config();
    if (!c) return {};
    auto& [cfg, meth] = *c;
    cfg.policy = meth.policy;
    cfg.set_rank(meth.plain ? 0 : rank, m.num_linears());
    calibration calib_stats;
    if (meth.needs_calibration()) {
      const auto ids = tok.encode(read_text(calib), false, false);
      const std::vector<std::int32_t> all(ids.begin(), ids.end());
      const auto n =
          std::min<std::size_t>(all.size() / static_cast<std::size_t>(ctx), static_cast<std::size_t>(calib_chunks));
      if (n == 0)
        throw lqer::value_error(calib + ": " + std::to_string(all.size()) + " tokens, fewer than one window of " +
                                std::to_string(ctx));
      const auto t0 = clock_type::now();
      calib_stats = calibrate(m, std::span<const std::int32_t>(all).first(n * static_cast<std::size_t>(ctx)), ctx, pool,
                              cfg.policy == scale_policy_kind::whiten ? lqer::gram_mode::on : lqer::gram_mode::off);
      std::fprintf(stderr, "llama: calibrated on %zu tokens of %s in %.1f s\n", calib_stats.tokens, calib.c_str(),
                   std::chrono::duration<double>(clock_type::now() - t0).count());
    }
    const auto t0 = clock_type::now();
    const engine::progress_meter meter("llama: quantize");
    auto q = quantize_linears(
        w, calib_stats, cfg,
        [&](int d, int n) {
          engine::interrupt_guard::check("quantizing");
          meter(d, n);
        },
        &pool);
    std::fprintf(stderr, "llama: %s: %d linears quantized in %.1f s, %.3f bits/weight\n", cfg.describe().c_str(),
                 m.num_linears(), std::chrono::duration<double>(clock_type::now() - t0).count(), q.bits_per_weight());
    install(m, q);
    return method + ": " + cfg.describe();
  }
};

/// A model from --model: a GGUF (the float model, quantized by --quant if
/// given) or a model file `llama quantize` wrote (run as it is).
struct loaded {
  std::shared_ptr<const model_weights> weights;
  std::optional<tokenizer> tok;
  std::unique_ptr<model> net;
  std::string quant;  ///< what the model file says it is; empty for a GGUF
  bool is_file() const noexcept { return !quant.empty(); }
};

loaded load_model(const std::string& path, thread_pool& pool, const quant_cli* q = nullptr) {
  loaded l;
  if (!is_gguf(path)) {
    if (q && !q->method.empty())
      throw usage_error("--quant: " + path + " is a quantized model file already (give the GGUF to quantize)");
    const auto cfg = q ? q->formats.config<quant_config>() : quant_config{};
    auto f = load_quantized_model(path, pool, !q || !q->no_verify, cfg.mode, cfg.reference_forward);
    l.weights = std::move(f.weights);
    l.tok = std::move(f.tok);
    l.net = std::move(f.net);
    l.quant = f.quant;
    return l;
  }
  const auto file = lqer::io::gguf_file::open(path);
  l.tok.emplace(tokenizer::from_gguf(file));
  l.weights = std::make_shared<const model_weights>(model_weights::from_gguf(file, pool));
  l.net = std::make_unique<model>(l.weights);
  return l;
}

std::string join_ids(const std::vector<tokenizer::id>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  return out;
}

// ---------------------------------------------------------------------------

struct tokenize_options {
  std::string model = default_model(), text, prompt;
  bool special = false;
};

int run_tokenize(const tokenize_options& o) {
  if (o.text.empty() == o.prompt.empty()) throw usage_error("give exactly one of --text and --prompt");
  // The tokenizer only: no weights decoded (a model file is read whole).
  thread_pool pool(1);
  const auto tok = is_gguf(o.model) ? tokenizer::from_gguf(lqer::io::gguf_file::open(o.model))
                                    : std::move(*load_model(o.model, pool).tok);
  if (!o.prompt.empty()) {
    std::cout << join_ids(tok.encode(o.prompt, o.special, o.special)) << '\n';
    return 0;
  }
  // One line of ids per line of the file (the newline itself is not encoded).
  const std::string text = read_text(o.text);
  std::size_t at = 0;
  while (at < text.size()) {
    const auto nl = text.find('\n', at);
    const auto end = nl == std::string::npos ? text.size() : nl;
    std::cout << join_ids(tok.encode(std::string_view(text).substr(at, end - at), o.special, o.special)) << '\n';
    at = end + 1;
  }
  return 0;
}

struct perplexity_options {
  std::string model = default_model(), text = default_eval_text();
  int ctx = 512, chunks = 0, threads = 1;
  quant_cli quant;
};

int run_perplexity(const perplexity_options& o) {
  (void)o.quant.config();
  thread_pool pool(o.threads);
  const auto t0 = clock_type::now();
  auto l = load_model(o.model, pool, &o.quant);
  model& m = *l.net;
  const double load_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  const auto ids = l.tok->encode(read_text(o.text), /*add_special=*/false, /*parse_special=*/false);
  std::vector<std::int32_t> tokens(ids.begin(), ids.end());
  if (static_cast<index_t>(tokens.size()) < o.ctx)
    throw lqer::value_error(o.text + ": " + std::to_string(tokens.size()) + " tokens, fewer than one window of " +
                            std::to_string(o.ctx));
  std::size_t windows = tokens.size() / static_cast<std::size_t>(o.ctx);
  if (o.chunks > 0) windows = std::min(windows, static_cast<std::size_t>(o.chunks));
  tokens.resize(windows * static_cast<std::size_t>(o.ctx));
  if (!l.is_file()) o.quant.apply(m, *l.weights, *l.tok, o.ctx, pool);
  const auto t1 = clock_type::now();
  log_likelihood ll;
  for (std::size_t wi = 0; wi < windows; ++wi) {
    const auto r = m.evaluate(std::span<const std::int32_t>(tokens).subspan(wi * static_cast<std::size_t>(o.ctx),
                                                                            static_cast<std::size_t>(o.ctx)),
                              o.ctx, pool);
    ll.nll_sum += r.nll_sum;
    ll.predicted += r.predicted;
    progress_line("llama perplexity: window", static_cast<int>(wi + 1), static_cast<int>(windows));
  }
  const double secs = std::chrono::duration<double>(clock_type::now() - t1).count();
  std::printf("model %s (%s), %zu tokens, %zu windows of %d\n", o.model.c_str(),
              l.is_file()              ? l.quant.c_str()
              : o.quant.method.empty() ? "float: the file's tensors decoded to float32"
                                       : o.quant.method.c_str(),
              tokens.size(), windows, o.ctx);
  std::printf("perplexity %.4f over %zu scored tokens (load %.2f s, eval %.2f s, %.0f tokens/s, %d threads)\n",
              ll.perplexity(), ll.predicted, load_s, secs, double(tokens.size()) / secs, o.threads);
  return 0;
}

struct generate_options {
  std::string model = default_model(), prompt;
  int n = 64, threads = 1;
  bool chat = false;
  quant_cli quant;
};

int run_generate(const generate_options& o) {
  (void)o.quant.config();
  thread_pool pool(o.threads);
  const auto t_start = clock_type::now();
  auto l = load_model(o.model, pool, &o.quant);
  model& m = *l.net;
  if (!l.is_file()) o.quant.apply(m, *l.weights, *l.tok, 512, pool);
  const double load_s = std::chrono::duration<double>(clock_type::now() - t_start).count();
  // --chat: the model's ChatML template (SmolLM2-Instruct's), user turn then
  // the assistant's opening; generation stops at <|im_end|>.
  std::string text = o.prompt;
  std::optional<std::int32_t> stop = l.tok->eos();
  if (o.chat) text = "<|im_start|>user\n" + o.prompt + "<|im_end|>\n<|im_start|>assistant\n";
  const auto ids = l.tok->encode(text, /*add_special=*/true, /*parse_special=*/o.chat);
  if (ids.empty()) throw usage_error("--prompt encodes to no tokens");
  const std::vector<std::int32_t> prompt(ids.begin(), ids.end());
  if (o.chat)
    if (const auto end = l.tok->encode("<|im_end|>", false, true); end.size() == 1) stop = end[0];

  // Prefill and decode timed apart (generate() would time them together).
  kv_cache cache(m.cfg(), static_cast<index_t>(prompt.size()) + o.n);
  auto t0 = clock_type::now();
  std::vector<float> logits = m.forward(prompt, cache, pool, true);
  const double prefill_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  const double first_token_s = std::chrono::duration<double>(clock_type::now() - t_start).count();
  std::vector<std::int32_t> out;
  t0 = clock_type::now();
  for (int i = 0; i < o.n; ++i) {
    const auto next = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    if (stop && next == *stop) break;
    // Raw bytes, token by token: a character split over two tokens is whole once both are out.
    std::cout << l.tok->token_bytes(next) << std::flush;
    if (i + 1 < o.n) logits = m.forward(std::span<const std::int32_t>(&next, 1), cache, pool, true);
  }
  const double decode_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::cout << '\n';
  std::fprintf(stderr,
               "llama generate: load %.3f s, first token at %.3f s; prompt %zu tokens, prefill %.1f tokens/s; %zu "
               "tokens generated, %.1f tokens/s (%d threads, %s)\n",
               load_s, first_token_s, prompt.size(), double(prompt.size()) / prefill_s, out.size(),
               double(out.size()) / decode_s, o.threads,
               l.is_file()              ? l.quant.c_str()
               : o.quant.method.empty() ? "float"
                                        : o.quant.method.c_str());
  return 0;
}

struct quantize_options {
  std::string model = default_model(), out;
  int ctx = 512, threads = 2;
  quant_cli quant;
};

int run_quantize(const quantize_options& o) {
  if (o.quant.method.empty()) throw usage_error("--quant is required");
  if (!is_gguf(o.model))
    throw usage_error("--model: " + o.model + " is not a GGUF file (quantize reads the float model)");
  (void)o.quant.config();
  // Where the file goes is checked before the minutes of work, not after.
  if (const auto dir = fs::absolute(o.out).parent_path(); !fs::is_directory(dir))
    throw lqer::value_error("--out " + o.out + ": " + dir.string() + " is not an existing directory");
  const engine::interrupt_guard guard;
  thread_pool pool(o.threads);
  const auto t0 = clock_type::now();
  const auto file = lqer::io::gguf_file::open(o.model);
  const auto tok = tokenizer::from_gguf(file);
  const auto weights = std::make_shared<const model_weights>(model_weights::from_gguf(file, pool));
  model m(weights);
  const std::string desc = o.quant.apply(m, *weights, tok, o.ctx, pool);
  engine::interrupt_guard::check("quantizing");
  save_quantized_model(o.out, m, file, desc);
  double n_weights = 0;
  for (int i = 0; i < m.num_linears(); ++i) n_weights += double(m.linear(i).in_features()) * m.linear(i).out_features();
  std::printf("wrote %s: %s, %.1f MB, %.3f bits per weight in the linears (%.1f s)\n", o.out.c_str(), desc.c_str(),
              double(std::filesystem::file_size(o.out)) / 1e6, 8.0 * double(m.linear_bytes()) / n_weights,
              std::chrono::duration<double>(clock_type::now() - t0).count());
  return 0;
}

struct eval_cli {
  std::string model = default_model(), text = default_eval_text(), calib = default_calib_text();
  std::string ranks = "8,16,32,64", methods = "lqer,l2qer,rms,whiten", blocks = "16,32", json, peers;
  int ctx = 512, chunks = 16, calib_chunks = 16, layer_rows = 128, threads = 2;
  engine::format_options formats;
};

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream in(s);
  for (std::string w; std::getline(in, w, ',');) v.push_back(w);
  return v;
}

int run_eval(const eval_cli& e) {
  eval_options opt;
  opt.base = e.formats.config<quant_config>();
  opt.ranks = engine::parse_int_list(e.ranks, "--ranks");
  for (const int r : opt.ranks)
    if (r < 1) throw usage_error("--ranks must be >= 1 (plain W4A8, rank 0, is always in the table)");
  opt.methods = split_words(e.methods);
  if (opt.methods.empty()) throw usage_error("--methods is empty");
  for (const auto& m : opt.methods) {
    if (m == "plain") throw usage_error("--methods: plain is always in the table");
    try {
      (void)engine::parse_method(m);
    } catch (const lqer::value_error& err) {
      throw usage_error(std::string("--methods: ") + err.what());
    }
  }
  opt.blocks = engine::parse_int_list(e.blocks, "--blocks");
  opt.ctx = e.ctx;
  opt.chunks = e.chunks;
  opt.calib_chunks = e.calib_chunks;
  opt.layer_rows = e.layer_rows;
  opt.threads = e.threads;
  opt.model_file = e.model;
  opt.eval_file = e.text;
  opt.calib_file = e.calib;
  opt.json_out = e.json;
  opt.peers_file = e.peers;
  run_quality_table(opt, std::cout);
  return 0;
}

struct bench_cli {
  std::string model = default_model(), text = default_eval_text(), ranks = "0,8,32", threads = "1,2";
  std::string llama_bench, peer_models;
  int prompt_tokens = 512, decode_tokens = 128, runs = 3;
  engine::format_options formats;
};

int run_bench(const bench_cli& b) {
  speed_options opt;
  opt.base = b.formats.config<quant_config>();
  opt.ranks = engine::parse_int_list(b.ranks, "--ranks");
  for (const int r : opt.ranks)
    if (r < 0) throw usage_error("--ranks must be >= 0");
  opt.thread_counts = engine::parse_int_list(b.threads, "--threads-list");
  for (const int t : opt.thread_counts)
    if (t < 1 || t > 256) throw usage_error("--threads-list entries must be in [1, 256]");
  opt.prompt_tokens = b.prompt_tokens;
  opt.decode_tokens = b.decode_tokens;
  opt.runs = b.runs;
  opt.model_file = b.model;
  opt.text_file = b.text;
  opt.llama_bench = b.llama_bench;
  if (!b.peer_models.empty()) {
    std::stringstream ss(b.peer_models);
    for (std::string f; std::getline(ss, f, ',');) {
      if (f.empty()) throw usage_error("--peer-models has an empty entry: '" + b.peer_models + "'");
      opt.peer_models.push_back(f);
    }
  }
  run_speed_table(opt, std::cout);
  return 0;
}

void add_model(CLI::App* cmd, std::string& model) {
  cmd->add_option("--model", model,
                  "The GGUF file, or a model file llama quantize wrote (default: the cached SmolLM2; "
                  "LQER_SMOLLM2_GGUF overrides)")
      ->capture_default_str();
}
void add_threads(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads", threads, "Threads of the engine's pool")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "llama — a Llama-architecture decoder (SmolLM2) from its GGUF file, every linear layer through lqer "
      "(W4A8 + low-rank error correction)",
      "llama"};
  app.require_subcommand(1, 1);
  app.footer(
      "The model and the KJV texts come from scripts/fetch_smollm2.sh (cache: $LQER_CACHE/smollm2, default "
      "~/.cache/lqer/smollm2).");

  tokenize_options tk;
  auto* tok_cmd = app.add_subcommand("tokenize", "Print token ids: of --prompt, or of each line of --text");
  add_model(tok_cmd, tk.model);
  tok_cmd->add_option("--text", tk.text, "Text file: one line of ids per line");
  tok_cmd->add_option("--prompt", tk.prompt, "A string");
  tok_cmd->add_flag("--special", tk.special,
                    "Add BOS/EOS as the file says and parse special tokens such as <|im_start|>");

  perplexity_options pp;
  auto* ppl_cmd = app.add_subcommand("perplexity", "Perplexity of the float or a quantized model on a text file");
  add_model(ppl_cmd, pp.model);
  ppl_cmd->add_option("--text", pp.text, "The text (UTF-8)")->capture_default_str();
  ppl_cmd->add_option("--ctx", pp.ctx, "Tokens per window")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  ppl_cmd->add_option("--chunks", pp.chunks, "Windows to evaluate (0 = all), as llama-perplexity's --chunks")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  add_threads(ppl_cmd, pp.threads);
  pp.quant.add(ppl_cmd);

  generate_options gen;
  auto* gen_cmd = app.add_subcommand("generate", "Greedy generation; prints the text, and prefill/decode tokens/s");
  add_model(gen_cmd, gen.model);
  gen_cmd->add_option("--prompt", gen.prompt, "The prompt")->required();
  gen_cmd->add_option("-n", gen.n, "Tokens to generate")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  gen_cmd->add_flag("--chat", gen.chat, "Wrap the prompt in the model's ChatML turn (SmolLM2-Instruct)");
  add_threads(gen_cmd, gen.threads);
  gen.quant.add(gen_cmd);

  quantize_options qz;
  auto* qz_cmd = app.add_subcommand(
      "quantize", "Quantize every linear layer and write the model to one file (perplexity/generate --model read it)");
  add_model(qz_cmd, qz.model);
  qz_cmd->add_option("--out", qz.out, "The model file to write (safetensors; written atomically)")->required();
  qz_cmd->add_option("--ctx", qz.ctx, "Tokens per calibration window")
      ->check(CLI::Range(2, 1 << 16))
      ->capture_default_str();
  add_threads(qz_cmd, qz.threads);
  qz.quant.add(qz_cmd);
  qz.quant.add_budget(qz_cmd);

  eval_cli ev;
  auto* eval_cmd = app.add_subcommand("eval", "The perplexity table: plain, LQER, L²QER, rms, whiten × ranks × blocks");
  add_model(eval_cmd, ev.model);
  eval_cmd->add_option("--text", ev.text, "Held-out evaluation text")->capture_default_str();
  eval_cmd->add_option("--calib", ev.calib, "Calibration text")->capture_default_str();
  eval_cmd->add_option("--ranks", ev.ranks, "Ranks to tabulate")->capture_default_str();
  eval_cmd->add_option("--methods", ev.methods, "Methods to tabulate (plain is always there)")->capture_default_str();
  eval_cmd->add_option("--blocks", ev.blocks, std::string("Block lengths to tabulate: ") + kBlocks)
      ->capture_default_str();
  eval_cmd->add_option("--ctx", ev.ctx, "Tokens per window")->check(CLI::Range(2, 1 << 16))->capture_default_str();
  eval_cmd->add_option("--chunks", ev.chunks, "Evaluation windows")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  eval_cmd->add_option("--calib-chunks", ev.calib_chunks, "Calibration windows")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  eval_cmd->add_option("--layer-rows", ev.layer_rows, "Tokens per layer for the per-layer errors")
      ->capture_default_str();
  eval_cmd->add_option("--json", ev.json, "Also write every number (per-layer errors included) to this JSON file");
  eval_cmd->add_option(
      "--peers", ev.peers,
      "llama.cpp's results on the same file and text to print beside, as JSON: {commit, ctx, chunks, files: [{name, "
      "bits_per_weight_linears, bits_per_weight_file, perplexity}]}");
  add_threads(eval_cmd, ev.threads);
  engine::add_format_options(eval_cmd, ev.formats, kBlocks);
  add_output_format(eval_cmd, ev.formats);

  bench_cli bn;
  auto* bench_cmd = app.add_subcommand("bench", "Prefill and decode tokens/s: float, plain W4A8, W4A8 + rank k");
  add_model(bench_cmd, bn.model);
  bench_cmd->add_option("--text", bn.text, "Where the prompts' tokens come from")->capture_default_str();
  bench_cmd->add_option("--ranks", bn.ranks, "Ranks to time (0 = plain W4A8)")->capture_default_str();
  bench_cmd->add_option("--threads-list", bn.threads, "Thread counts")->capture_default_str();
  bench_cmd->add_option("--prompt-tokens", bn.prompt_tokens, "Prefill prompt length")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  bench_cmd->add_option("--decode-tokens", bn.decode_tokens, "Tokens decoded")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  bench_cmd->add_option("--runs", bn.runs, "Runs; the fastest is reported")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  bench_cmd->add_option("--llama-bench", bn.llama_bench,
                        "llama.cpp's llama-bench: run it on --peer-models with the same lengths, threads and runs, "
                        "and print its rows and the ratios beside lqer's");
  bench_cmd->add_option("--peer-models", bn.peer_models,
                        "Comma-separated GGUF files for --llama-bench (default: --model), e.g. its Q4_0 quantization");
  bn.formats.output_format = "mxint8";  // the deployable configuration: llama.cpp quantizes its output tensor too
  engine::add_format_options(bench_cmd, bn.formats, kBlocks);
  add_output_format(bench_cmd, bn.formats);

  return engine::run_program(app, argc, argv, {tok_cmd, ppl_cmd, gen_cmd, qz_cmd, eval_cmd, bench_cmd}, [&] {
    if (tok_cmd->parsed()) return run_tokenize(tk);
    if (qz_cmd->parsed()) return run_quantize(qz);
    if (ppl_cmd->parsed()) return run_perplexity(pp);
    if (gen_cmd->parsed()) return run_generate(gen);
    if (eval_cmd->parsed()) return run_eval(ev);
    return run_bench(bn);
  });
}
